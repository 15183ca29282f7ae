"""Regressions from an adversarial review: each test is one reported defect."""

from __future__ import annotations

import json

import numpy as np
import pytest

import aimsec_core
from aimsec_core import AuditLog
from aimsec_core.cli import main
from tests.cases import audit_lines, digits, digits_logistic

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def model():
    return digits_logistic()


@pytest.mark.parametrize("dtype", ["datetime64[s]", "timedelta64[ms]"])
def test_datetime_input_is_a_typed_refusal_with_one_audit_line(model, tmp_path, dtype):
    audit = AuditLog(tmp_path)
    guarded = aimsec_core.guard(model, sinks=[audit])
    with pytest.raises(aimsec_core.InputFormatError):
        guarded.predict(np.zeros((2, 64), dtype))
    [line] = audit_lines(audit)
    assert line["decision"] == "rejected" and line["input_hash"] == ""


def test_a_wrong_shaped_view_over_max_size_is_never_read(model, tmp_path):
    audit = AuditLog(tmp_path)
    guarded = aimsec_core.guard(model, sinks=[audit], constraints={"max_size": 1000})
    huge = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(10 ** 6, 10 ** 4),
                                           strides=(0, 0))  # 10^10 elements, 8 bytes
    with pytest.raises(aimsec_core.InvalidInputError):
        guarded.predict(huge)
    with pytest.raises(aimsec_core.InvalidInputError):
        guarded.predict(np.ones((100, 100)))  # wrong width and over max_size
    assert [line["input_hash"] for line in audit_lines(audit)] == ["", ""]


def test_audit_verify_reads_the_trail_beside_the_incident_database(model, tmp_path,
                                                                    monkeypatch, capsys):
    monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path))
    guarded = aimsec_core.guard(model, constraints={"max_value": 1.0})  # default sinks
    with pytest.raises(aimsec_core.ValueRangeError):
        guarded.predict(np.full((1, 64), 5.0))
    assert guarded.close(10)
    assert (tmp_path / "incidents.sqlite3").exists()
    assert main(["audit", "verify", str(tmp_path)]) == 0
    assert "intact" in capsys.readouterr().out.lower()


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00"])
def test_a_report_counts_an_absurd_timestamp_as_malformed(tmp_path, when):
    pytest.importorskip("jinja2")
    from aimsec_core.reporting import report
    from rich.console import Console

    good = {"time": "2026-11-26T04:12:20+00:00", "model": "m", "client": "c",
            "decision": "allowed", "findings": [], "latency_ms": 0.2}
    (tmp_path / "audit.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(
        {"time": when, "model": "m", "decision": "allowed"}) + "\n")
    files = report(tmp_path, out=tmp_path / "out", console=Console(quiet=True))
    data = json.loads(files.json_path.read_text())
    assert data["totals"]["allowed"] == 1
    assert (data["sources"]["used"], data["sources"]["malformed"]) == (1, 1)
    assert files.html_path.exists()


def test_the_report_finds_the_incident_store_beside_the_trail(model, tmp_path, monkeypatch):
    pytest.importorskip("jinja2")
    from aimsec_core.reporting import report
    from rich.console import Console

    monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path / "elsewhere"))
    logs = tmp_path / "logs"
    guarded = aimsec_core.guard(model, incidents=logs / "incidents.sqlite3", alerts=False,
                                constraints={"max_value": 1.0})
    aimsec_core.guard_of(guarded).sinks.insert(0, AuditLog(logs))
    with aimsec_core.client("203.0.113.9"), pytest.raises(aimsec_core.ValueRangeError):
        guarded.predict(np.full((1, 64), 5.0))
    assert guarded.close(10)
    files = report(logs, out=tmp_path / "out", console=Console(quiet=True))
    assert files.report.incidents.available and files.report.incidents.total == 1


def _calibration_file_with(model, tmp_path, member, edit):  # type: ignore[no-untyped-def]
    """A calibration file of ``model`` whose ``member`` array went through ``edit``."""
    import io
    import zipfile

    x, _ = digits()
    guarded = aimsec_core.guard(model, sinks=[])
    guarded.calibrate(x[600:1000])
    path = guarded.save_calibration(tmp_path / "c.npz")
    with zipfile.ZipFile(path) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    buffer = io.BytesIO()
    np.save(buffer, edit(np.load(io.BytesIO(members[member]))))
    members[member] = buffer.getvalue()
    # with a digest that matches, as anyone without AIMSEC_CALIBRATION_KEY can write one:
    # the file's contents must be refused on their own
    from aimsec_core.detection.calibration_integrity import seal

    arrays = {name[:-4]: np.load(io.BytesIO(raw)) for name, raw in members.items()}
    meta = json.loads(arrays.pop("__meta__").tobytes())
    meta.pop("integrity", None)
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(seal(meta, arrays)).encode(), np.uint8))
    members["__meta__.npy"] = buffer.getvalue()
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as archive:
        for name, raw in members.items():
            archive.writestr(name, raw)
    return tmp_path / "bad.npz"


def test_a_calibration_threshold_far_outside_the_suspicion_scale_is_refused(model, tmp_path):
    def edit(raw: np.ndarray) -> np.ndarray:
        meta = json.loads(raw.tobytes())
        meta["threshold"] = -1e308
        return np.frombuffer(json.dumps(meta).encode(), np.uint8)

    bad = _calibration_file_with(model, tmp_path, "__meta__.npy", edit)
    with pytest.raises(aimsec_core.CalibrationError, match="threshold"):
        aimsec_core.guard(model, sinks=[]).load_calibration(bad)


def test_incidents_on_a_file_that_is_no_database_is_a_one_line_error(tmp_path, capsys):
    bogus = tmp_path / "passwd"
    bogus.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert main(["incidents", "--db", str(bogus)]) == 2
    err = capsys.readouterr().err  # errors are one line on standard error
    assert "aimsec incidents:" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_incidents_says_when_the_list_is_cut(tmp_path, capsys):
    from aimsec_core.incidents import IncidentStore
    from aimsec_core.incidents.model import Occurrence

    store = IncidentStore(tmp_path / "i.sqlite3")
    store.record([Occurrence("m", "range", f"c{i}", "medium", 1e9, 1e9 + i)
                  for i in range(5)])
    store.close()
    assert main(["incidents", "--db", str(tmp_path / "i.sqlite3"), "--limit", "3",
                 "--since", "2000-01-01"]) == 0
    assert "--limit shows more" in capsys.readouterr().out


class _Treacherous(list):
    """A list whose length cannot be read."""

    def __len__(self):
        raise RuntimeError("no length for you")


def test_a_sequence_that_fails_to_read_is_a_typed_refusal_with_one_line(model, tmp_path):
    audit = AuditLog(tmp_path)
    guarded = aimsec_core.guard(model, sinks=[audit])
    with pytest.raises(aimsec_core.InputFormatError, match="could not be read"):
        guarded.predict(_Treacherous([[0.0] * 64]))
    [line] = audit_lines(audit)
    assert line["decision"] == "rejected"


@pytest.mark.parametrize("member", ["neighbours.points.npy", "density.means.npy",
                                    "suite.neighbours.clean_scores.npy"])
def test_a_calibration_file_with_values_whose_squares_overflow_is_refused(model, tmp_path,
                                                                          member):
    # finite but huge: distances and variances computed from them become inf, which made
    # every later call look adversarial
    def edit(values: np.ndarray) -> np.ndarray:
        values = values.astype(np.float64)
        values.reshape(-1)[-1] = 1e308
        return values

    bad = _calibration_file_with(model, tmp_path, member, edit)
    with pytest.raises(aimsec_core.CalibrationError, match="magnitude"):
        aimsec_core.guard(model, sinks=[]).load_calibration(bad)


@pytest.mark.parametrize("value", [1e20, 1e39, 1e300])
def test_huge_input_values_are_flagged_without_numpy_warnings(model, value):
    # the detectors' float32 squares and float64 Mahalanobis sums overflowed on them:
    # the verdict was right, with a RuntimeWarning (an exception where warnings are errors)
    import warnings

    x, _ = digits()
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor")
    guarded.calibrate(x[600:1000])
    hostile = x[1000:1003].astype(np.float64)
    hostile[:, 5] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guarded.predict(hostile)
    assert guarded.last_verdict.checks == ("adversarial",)
    assert all(guarded.last_verdict.flags)
