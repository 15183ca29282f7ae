"""Thousands of malformed inputs per adapter: each one is a typed AimsecError or a correct
prediction; none crashes and, in enforce mode, none reaches the model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import aimsec_core
from aimsec_core import AimsecError
from tests.cases import AdapterCase, all_cases
from tests.conftest import ListSink

CASES = all_cases()
EXAMPLES = {"keras": 800}  # Keras' predict costs ~10 ms a call; the others run 2,000
DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_,
          np.complex64, np.complex128]

floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
any_array = hnp.arrays(
    dtype=st.sampled_from(DTYPES),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=70),
    elements=None, fill=None)
junk = st.one_of(
    st.none(), st.text(max_size=5), st.binary(max_size=5), st.integers(), floats,
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.lists(st.lists(floats, max_size=5), max_size=5),  # often ragged
    st.lists(st.one_of(st.text(max_size=2), floats), max_size=5),
    st.builds(lambda n: [[0.0] * 64] * n, st.integers(10 ** 4, 10 ** 6)),  # huge declared
)


def _digits_shaped(case: AdapterCase):
    """Right shape, arbitrary float content: exercises the checks behind the format ones."""
    rows = st.integers(1, 8)
    return rows.flatmap(lambda n: hnp.arrays(np.float32, (n, 64), elements=floats)).map(
        case.to_native)


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request) -> AdapterCase:
    return request.param


def test_every_malformed_input_is_a_typed_error_or_a_correct_prediction(case):
    sink = ListSink()
    constraints = {"min_value": 0.0, "max_value": 1.0, "max_size": 100_000}
    if not case.declares_shape:
        constraints["sample_shape"] = case.sample_shape
    guarded = aimsec_core.guard(case.model(), name=f"fuzz-{case.id}", sinks=[sink],
                                constraints=constraints)
    model = case.model()
    values = st.one_of(any_array.map(case.from_numpy_any), junk, _digits_shaped(case))

    @settings(max_examples=EXAMPLES.get(case.id, 2000), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(value=values)
    def check(value):
        before = len(sink.events)
        try:
            out = case.call_guarded(guarded, value)
        except AimsecError as exc:
            assert sink.events[before].outcome == "rejected", exc  # never reached the model
            assert str(exc)
            return
        assert sink.events[before].outcome == "allowed"
        np.testing.assert_array_equal(out, case.call_plain(model, value))

    check()
    assert len(sink.events) > 0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the models' own overflow warnings
def test_monitor_mode_turns_model_failures_on_flagged_input_into_typed_errors(case):
    """Monitor mode lets flagged input through; where the model then fails, the caller
    still gets a typed error saying why, never the framework's own traceback."""
    sink = ListSink()
    constraints = {"min_value": 0.0, "max_value": 1.0, "max_size": 100_000}
    if not case.declares_shape:
        constraints["sample_shape"] = case.sample_shape
    guarded = aimsec_core.guard(case.model(), name=f"fuzz-monitor-{case.id}", sinks=[sink],
                                mode="monitor", constraints=constraints)
    values = st.one_of(any_array.map(case.from_numpy_any), junk, _digits_shaped(case))

    @settings(max_examples=EXAMPLES.get(case.id, 2000) // 4, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(value=values)
    def check(value):
        before = len(sink.events)
        try:
            case.call_guarded(guarded, value)
        except AimsecError:
            return
        assert sink.events[before].outcome in ("allowed", "flagged")

    check()


def _with_valid_inputs(cases: list[AdapterCase]) -> list:
    """Cases without a strategy are expected failures naming what is missing, never skips."""
    return [pytest.param(c, id=c.id, marks=() if c.valid_inputs is not None else
                         pytest.mark.xfail(strict=True, reason=(
                             f"the {c.id} case has no AdapterCase.valid_inputs strategy "
                             "(inputs its plain model accepts) yet")))
            for c in cases]


@pytest.mark.parametrize("mode", ["monitor", "enforce"])
@pytest.mark.parametrize("valid_case", _with_valid_inputs(CASES))
def test_every_input_the_plain_model_accepts_gives_the_same_result_through_the_guard(
        valid_case, mode):
    """Valid for the framework: whatever container, dtype or layout the plain model takes
    runs through the guard (no content constraints) clean, with the plain model's result."""
    assert valid_case.valid_inputs is not None, f"{valid_case.id}: no valid_inputs strategy"
    sink = ListSink()
    model = valid_case.model()
    constraints = {} if valid_case.declares_shape else {"sample_shape": valid_case.sample_shape}
    guarded = aimsec_core.guard(model, name=f"valid-{valid_case.id}", sinks=[sink], mode=mode,
                                constraints=constraints)

    @settings(max_examples=EXAMPLES.get(valid_case.id, 2000) // 8, deadline=None,
              database=None, suppress_health_check=list(HealthCheck))
    @given(value=valid_case.valid_inputs())
    def check(value):
        expected = valid_case.call_plain(model, value)
        before = len(sink.events)
        out = valid_case.call_guarded(guarded, value)
        assert sink.events[before].outcome == "allowed", sink.events[before].verdict.findings
        np.testing.assert_array_equal(out, expected)

    check()
