"""What one audit line holds: bounded whatever the client sent, traceable when refused,
no raw input values unless opted in, correlated by request id, version and calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aimsec_core
from aimsec_core import AuditLog, InputTooLargeError
from aimsec_core.adapter import HostArrays
from aimsec_core.audit import MAX_LINE_BYTES

RAW = 987654.0


def _guard(audit, **constraints):
    return aimsec_core.Guard(None, HostArrays(None), name="lines", sinks=[audit],
                             constraints=constraints or None)


def _last(audit: AuditLog) -> dict:
    lines = audit.file.read_bytes().splitlines(keepends=True)
    assert all(len(line) <= MAX_LINE_BYTES for line in lines)
    return json.loads(lines[-1])


def _refused(guard, value, name="x"):
    try:
        guard.call({name: value} if name is not None else value, lambda: None)
    except aimsec_core.AimsecError as exc:
        return exc
    raise AssertionError("the call was not refused")


# -- bounded ---------------------------------------------------------------------------

hostile = st.one_of(
    st.text(min_size=1, max_size=300),
    st.text(st.characters(max_codepoint=0x1F), min_size=1, max_size=50),  # control chars
    st.sampled_from(["\ud800", "a\udfffb", "\n{\"decision\":\"allowed\"}\n", "\"}\\"]),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(10_000, 1_100_000)),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(client=hostile, request=hostile, name=hostile)
def test_hostile_identities_and_names_leave_one_valid_bounded_line(tmp_path_factory, client,
                                                                   request, name):
    audit = AuditLog(tmp_path_factory.mktemp("hostile"))
    guard = _guard(audit, max_value=1.0)
    with aimsec_core.client(client), aimsec_core.request_id(request):
        guard.call({name: np.zeros((1, 2))}, lambda: None)
        _refused(guard, np.full((1, 2), 5.0), name)
        _refused(guard, {"a": np.zeros((1, 2)), name + "b": np.zeros((2, 2))}, None)
    raw = audit.file.read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4  # three lines, each ended by its newline
    for line in lines[:3]:
        assert len(line) + 1 <= MAX_LINE_BYTES and line.isascii()
        parsed = json.loads(line)
        assert parsed["client"][:20] == client.encode("utf-8", "replace").decode()[:20]
    assert aimsec_core.audit.verify_trail(audit.file).intact


def test_a_refused_huge_batch_writes_counts_and_first_indices(tmp_path):
    audit = AuditLog(tmp_path)
    guard = _guard(audit, max_value=1.0)
    x = np.zeros((300_000, 2))
    x[::2] = 5.0
    _refused(guard, x)
    line = _last(audit)
    assert line["flagged"]["count"] == 150_000 and line["flagged"]["first"][:3] == [0, 2, 4]
    assert line["findings"][0]["samples"]["count"] == 150_000
    assert guard.last_verdict.flagged[-1] == 299_998  # every flag stays on the verdict


def test_many_findings_and_long_errors_still_fit(tmp_path):
    audit = AuditLog(tmp_path)
    guard = _guard(audit, max_value=1.0)
    inputs = {f"{'n' * 5000}{i}": np.full((1, 1), 5.0) for i in range(40)}
    with pytest.raises(aimsec_core.ValueRangeError):
        guard.call(inputs, lambda: None)
    line = _last(audit)
    assert line["findings_omitted"] > 0 or line.get("truncated")

    def broken():
        raise RuntimeError("x" * 100_000)

    with pytest.raises(RuntimeError):
        guard.call({"x": np.zeros((1, 1))}, broken)
    line = _last(audit)
    assert line["decision"] == "error" and len(line["error"]) < 1000


def test_an_oversized_broadcast_view_is_refused_from_its_shape(tmp_path):
    audit = AuditLog(tmp_path)
    guard = _guard(audit, max_size=100_000_000)
    # 256 bytes of storage, 6.4e9 logical elements: scanning it takes seconds, copying it
    # fails; the refusal reads neither
    view = np.broadcast_to(np.zeros(32), (200_000_000, 32))
    error = _refused(guard, view)
    assert isinstance(error, InputTooLargeError)
    line = _last(audit)
    assert line["shape"] == [200_000_000, 32] and line["dtype"] == "float64"
    assert line["input_hash"] == "" and line["input_type"] == "ndarray"
    assert line["findings"][0]["check"] == "size"


def test_monitor_mode_passes_an_oversized_input_on_unread(tmp_path):
    audit = AuditLog(tmp_path)
    guard = aimsec_core.Guard(None, HostArrays(None), sinks=[audit], mode="monitor",
                              constraints={"max_size": 10})
    x = np.full((4, 4), np.nan)
    assert guard.call({"x": x}, lambda: "ran") == "ran"
    assert guard.last_verdict.checks == ("size",)  # NaN unread: the content was not scanned
    assert _last(audit)["decision"] == "flagged"


# -- traceable -------------------------------------------------------------------------

@pytest.mark.parametrize("value, check, shape, dtype, hashed", [
    (np.zeros((2, 3), dtype=complex), "dtype", [2, 3], "complex128", True),
    (np.array([["a", "b"]]), "dtype", [1, 2], "str32", True),
    (np.array([[None]], dtype=object), "dtype", [1, 1], "object", False),
    (np.zeros((0, 3)), "empty", [0, 3], "float64", True),
    ({"k": 1}, "format", None, None, False),
])
def test_refused_lines_say_what_was_received(tmp_path, value, check, shape, dtype, hashed):
    audit = AuditLog(tmp_path)
    error = _refused(_guard(audit), value)
    line = _last(audit)
    assert line["findings"][0]["check"] == check and line["decision"] == "rejected"
    assert line["input_type"] == type(value).__name__
    assert line["shape"] == shape and (dtype is None or line["dtype"] == dtype)
    assert bool(line["input_hash"]) == hashed
    assert error.verdict.input_hash == line["input_hash"]


def test_a_shape_refusal_is_hashed_like_the_same_input_allowed(tmp_path):
    from aimsec_core.signature import InputSpec

    class Declared(HostArrays):
        def signature(self):
            return [InputSpec("x", None, (None, 3))]

    audit = AuditLog(tmp_path)
    guard = aimsec_core.Guard(None, Declared(None), sinks=[audit])
    _refused(guard, np.ones((2, 4)))
    refused = _last(audit)
    loose = aimsec_core.Guard(None, HostArrays(None), sinks=[audit])
    loose.call({"x": np.ones((2, 4))}, lambda: None)
    assert refused["input_hash"] == _last(audit)["input_hash"] != ""
    assert refused["shape"] == [2, 4]


# -- no raw input unless opted in --------------------------------------------------------

def test_reasons_in_the_line_carry_no_input_values(tmp_path):
    audit = AuditLog(tmp_path, include_inputs=False)
    guard = _guard(audit, min_value=0.0, max_value=100.0, max_gradient=10.0,
                   min_sparsity=0.9)
    error = _refused(guard, np.array([[34.0, RAW], [0.0, 0.0]]))
    assert "987654" in str(error)  # the caller is told what was received
    raw_line = audit.file.read_text()
    findings = json.dumps(_last(audit)["findings"])  # hashes elsewhere may hold "34"
    assert "987654" not in raw_line and "34" not in findings
    checks = {f["check"] for f in _last(audit)["findings"]}
    assert {"range", "max_gradient", "min_sparsity"} <= checks
    _refused(guard, [["secret-token", 1.0]])
    assert "secret-token" not in audit.file.read_text()


def test_opting_in_writes_values_and_details(tmp_path):
    audit = AuditLog(tmp_path, include_inputs=True)
    _refused(_guard(audit, max_value=100.0), np.array([[34.0, RAW]]))
    line = _last(audit)
    assert line["inputs"] == {"x": [[34.0, RAW]]}
    assert '"inputs":{"x":[[34.0,987654.0]]}' in audit.file.read_text()  # compact, as all
    assert "987654" in line["findings"][0]["detail"]
    huge = np.zeros((1, 100_000))
    _guard(audit).call({"x": huge}, lambda: None)
    assert _last(audit)["inputs"].startswith("omitted")


# -- correlation -------------------------------------------------------------------------

def test_lines_carry_request_id_version_and_calibration(tmp_path):
    audit = AuditLog(tmp_path)
    guard = _guard(audit)
    with aimsec_core.request_id("req-7"):
        guard.call({"x": np.zeros((1, 2))}, lambda: None)
        assert guard.last_verdict.request_id == "req-7"
    line = _last(audit)
    assert line["request_id"] == "req-7" and line["version"] == aimsec_core.__version__
    assert line["calibration"] is None
    guard.call({"x": np.zeros((1, 2))}, lambda: None)
    guard.call({"x": np.zeros((1, 2))}, lambda: None)
    ids = [json.loads(x)["request_id"] for x in audit.file.read_text().splitlines()[1:]]
    assert len(set(ids)) == 2 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_the_calibration_id_names_the_calibration_in_use(tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    model = LogisticRegression(max_iter=200).fit(x[:300], y[:300])
    audit = AuditLog(tmp_path)
    guarded = aimsec_core.guard(model, sinks=[audit], constraints={"min_value": 0.0,
                                                                    "max_value": 1.0})
    guard = aimsec_core.guard_of(guarded)
    guarded.predict(x[300:301])
    assert _last(audit)["calibration"] is None
    guard.calibrate(x[300:500], fpr=0.1, detectors=["margin"])
    first = guard.calibration_id
    guarded.predict(x[600:601])
    assert _last(audit)["calibration"] == first and len(first) == 32
    written = audit.file.read_text().splitlines()[-1]
    assert '"detection":{"suspicion_max":' in written and ", " not in written.split(
        '"detection":')[1].split("}")[0]  # compact JSON, as the rest of the line
    saved = guard.calibration.save(tmp_path / "cal.npz")
    guard.use_calibration(saved)
    assert guard.calibration_id == first  # the same calibration, reloaded
    guard.calibrate(x[300:500], fpr=0.2, detectors=["margin"])
    assert guard.calibration_id != first
