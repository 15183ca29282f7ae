"""One suite, every adapter: the same promises hold whatever the framework."""

from __future__ import annotations

import json

import numpy as np
import pytest

import aimsec_core
from aimsec_core import (AuditLog, EmptyInputError, InputFormatError, InputTooLargeError,
                         NonFiniteInputError, StructuralAnomalyError, ValueRangeError)
from tests.cases import AdapterCase, all_cases, digits
from tests.conftest import ListSink

CASES = all_cases()


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request) -> AdapterCase:
    return request.param


def _guard(case: AdapterCase, sink: ListSink, mode: str = "enforce", **constraints):
    if not case.declares_shape:
        constraints.setdefault("sample_shape", case.sample_shape)
    return aimsec_core.guard(case.model(), name=f"digits-{case.id}", mode=mode,
                             constraints=constraints, sinks=[sink])


def _batch(n: int = 8, start: int = 0) -> np.ndarray:
    return digits()[0][start:start + n].copy()


@pytest.mark.parametrize("n", [1, 16])
def test_valid_input_gives_exactly_the_original_output(case, sink, n):
    guarded = _guard(case, sink, min_value=0.0, max_value=1.0)
    x = case.to_native(_batch(n))
    np.testing.assert_array_equal(case.call_guarded(guarded, x), case.call_plain(case.model(), x))
    verdict = guarded.last_verdict
    assert verdict.allowed and verdict.clean and verdict.batch_size == n
    assert sink.outcomes == ["allowed"]


def test_unguard_gives_the_original_back(case, sink):
    assert aimsec_core.unguard(_guard(case, sink)) is case.model()


def test_guarding_twice_is_refused(case, sink):
    with pytest.raises(aimsec_core.ConfigurationError, match="already guarded"):
        aimsec_core.guard(_guard(case, sink))


# (check, constraints, how to spoil sample 2 of a clean batch, error)
CONTENT_CHECKS = [
    ("finite", {}, lambda s: s.__setitem__(5, np.nan), NonFiniteInputError),
    ("finite", {}, lambda s: s.__setitem__(0, np.inf), NonFiniteInputError),
    ("range", {"min_value": 0.0, "max_value": 1.0}, lambda s: s.__setitem__(7, 1.5),
     ValueRangeError),
    ("range", {"min_value": 0.0, "max_value": 1.0}, lambda s: s.__setitem__(7, -0.25),
     ValueRangeError),
    ("max_gradient", {"max_gradient": 0.99}, lambda s: s.__setitem__(slice(None), np.tile(
        [0.0, 1.0], 32)), StructuralAnomalyError),
    ("min_sparsity", {"min_sparsity": 0.05}, lambda s: s.__setitem__(slice(None), 0.0),
     StructuralAnomalyError),
]


@pytest.mark.parametrize("check,constraints,spoil,error", CONTENT_CHECKS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CONTENT_CHECKS)])
def test_content_check_rejects_in_enforce_mode(case, sink, check, constraints, spoil, error):
    x = _batch(4)
    spoil(x[2])
    guarded = _guard(case, sink, **constraints)
    with pytest.raises(error) as caught:
        case.call_guarded(guarded, case.to_native(x))
    assert isinstance(caught.value, ValueError)
    verdict = caught.value.verdict
    assert not verdict.allowed and check in verdict.checks
    assert verdict.flags == (False, False, True, False)
    assert guarded.last_verdict is verdict
    assert sink.outcomes == ["rejected"]  # the model was never called


@pytest.mark.parametrize("check,constraints,spoil,error", CONTENT_CHECKS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CONTENT_CHECKS)])
def test_content_check_passes_with_a_finding_in_monitor_mode(case, sink, check, constraints,
                                                             spoil, error):
    x = _batch(4)
    spoil(x[2])
    guarded = _guard(case, sink, mode="monitor", **constraints)
    native = case.to_native(x)
    try:
        expected = case.call_plain(case.model(), native)
    except Exception:  # the model itself refuses this input (scikit-learn and NaN)
        with pytest.raises(error):
            case.call_guarded(guarded, native)
        assert sink.outcomes == ["error"]
    else:
        np.testing.assert_array_equal(case.call_guarded(guarded, native), expected)
        assert sink.outcomes == ["flagged"]
    verdict = guarded.last_verdict
    assert verdict.allowed and not verdict.clean and check in verdict.checks
    assert verdict.flags == (False, False, True, False)


@pytest.mark.parametrize("mode", ["enforce", "monitor"])
def test_size_limit(case, sink, mode):
    guarded = _guard(case, sink, mode=mode, max_size=64 * 4)
    native = case.to_native(_batch(5))
    if mode == "enforce":
        with pytest.raises(InputTooLargeError, match="at most 256"):
            case.call_guarded(guarded, native)
    else:
        case.call_guarded(guarded, native)
        assert "size" in guarded.last_verdict.checks


def _wrong_shape(case: AdapterCase) -> np.ndarray:
    return np.zeros((3, 63), dtype=np.float32)


@pytest.mark.parametrize("mode", ["enforce", "monitor"])
def test_unusable_input_is_refused_in_both_modes(case, sink, mode):
    """Input the model cannot run at all is refused even in monitor mode."""
    guarded = _guard(case, sink, mode=mode)
    bad = {
        "null": (None, EmptyInputError),
        "empty": (case.from_numpy_any(np.zeros((0,) + case.sample_shape, np.float32)),
                  EmptyInputError),
        "shape": (case.from_numpy_any(_wrong_shape(case)), InputFormatError),
        "dtype": (case.from_numpy_any(np.zeros((2,) + case.sample_shape, np.complex64)),
                  InputFormatError),
        "type": ({"x": 1}, InputFormatError),
    }
    for label, (value, error) in bad.items():
        with pytest.raises(error) as caught:
            case.call_guarded(guarded, value)
        message = str(caught.value)
        assert "expected" in message or "expects" in message, (label, message)
        assert caught.value.verdict is not None and not caught.value.verdict.allowed
    assert sink.outcomes == ["rejected"] * len(bad)


def test_audit_line_is_written(case, tmp_path):
    audit = AuditLog(tmp_path / "logs")
    guarded = aimsec_core.guard(case.model(), name=f"audit-{case.id}",
                                constraints={"max_value": 1.0, **(
                                    {} if case.declares_shape
                                    else {"sample_shape": case.sample_shape})},
                                sinks=[audit])
    x = _batch(3)
    with aimsec_core.client("203.0.113.7"):
        case.call_guarded(guarded, case.to_native(x))
        x[1, 0] = 9.0
        with pytest.raises(ValueRangeError):
            case.call_guarded(guarded, case.to_native(x))
    audit.flush()
    lines = [json.loads(line) for line in audit.file.read_text().splitlines()]
    mine = [line for line in lines if line["model"] == f"audit-{case.id}"]
    assert [line["decision"] for line in mine] == ["allowed", "rejected"]
    assert all(line["client"] == "203.0.113.7" for line in mine)
    assert mine[0]["input_hash"] != mine[1]["input_hash"]
    assert mine[1]["findings"][0]["check"] == "range"
    assert mine[1]["flagged"] == {"count": 1, "first": [1]}
    assert "inputs" not in mine[0]  # raw inputs only when opted in


def test_content_hash_sees_every_value(case, sink):
    """Two large inputs that ``str()`` prints alike must hash differently."""
    guarded = _guard(case, sink, mode="monitor")
    x = np.zeros((600,) + (64,), dtype=np.float32)
    y = x.copy()
    y[300, 30] = 0.5
    assert str(x) == str(y)
    case.call_guarded(guarded, case.to_native(x))
    case.call_guarded(guarded, case.to_native(y))
    first, second = (e.verdict.input_hash for e in sink.events)
    assert first != second


def test_the_101st_call_in_a_minute_is_refused_and_recorded(case, sink):
    """Request monitoring is part of every adapter's call path."""
    from aimsec_core.guard import Guard

    class Clock:
        now = 1_700_000_000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    model = case.model()
    adapter = aimsec_core.registry.adapter_for(model)
    constraints = {} if case.declares_shape else {"sample_shape": case.sample_shape}
    guarded = adapter.wrap(Guard(model, adapter, name=f"digits-{case.id}", sinks=[sink],
                                 clock=clock, constraints=constraints,
                                 policy={"max_requests_per_minute": 100, "max_repeats": 0,
                                         "near_duplicate": False}))
    x = case.to_native(_batch(1))
    with aimsec_core.client("203.0.113.50"):
        for _ in range(100):
            case.call_guarded(guarded, x)
            clock.now += 0.5
        with pytest.raises(aimsec_core.RateLimitedError) as caught:
            case.call_guarded(guarded, x)
    assert caught.value.retry_after == pytest.approx(10.0)
    assert sink.outcomes == ["allowed"] * 100 + ["rejected"]
    last = sink.events[-1].verdict
    assert last.checks == ("rate_limit",) and last.client == "203.0.113.50"
    assert guarded.last_verdict is caught.value.verdict
