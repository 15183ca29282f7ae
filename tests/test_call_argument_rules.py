"""The core's declarative rules for call arguments that are not inputs: each accepts
exactly what it says, and a broken one is a blocking ``format`` finding naming the
argument, what it must be and the type received (the value only in the detail)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aimsec_core import EmptyInputError, InputFormatError
from aimsec_core.call_arguments import (arguments_error, argument_findings, boolean,
                                        first_non_tensor, flag,
                                        callable_value, instance_of, no_batches_error,
                                        positive_int, sequence_of, shown_value)

ANYTHING = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=8), st.binary(max_size=4), st.builds(np.int64, st.integers(-9, 9)),
    st.builds(np.bool_, st.booleans()), st.builds(np.float32, st.floats(width=32)),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(),
                                                         max_size=2),
    st.just(np.zeros(3)), st.just(object()), st.just(print))


def _is_positive_int(value) -> bool:
    return (isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))
            and value > 0)


@given(value=ANYTHING)
def test_each_rule_accepts_exactly_what_it_says(value):
    assert positive_int().accepts(value) == (value is None or _is_positive_int(value))
    assert positive_int(optional=False).accepts(value) == _is_positive_int(value)
    assert boolean().accepts(value) == isinstance(value, (bool, np.bool_))
    assert boolean(optional=True).accepts(value) == (
        value is None or isinstance(value, (bool, np.bool_)))
    assert instance_of(str, "a string").accepts(value) == (value is None
                                                          or isinstance(value, str))
    assert callable_value().accepts(value) == callable(value)


@given(items=st.lists(st.one_of(st.integers(), st.text(max_size=2)), max_size=6),
       kind=st.sampled_from([list, tuple]))
def test_a_sequence_rule_reads_every_item(items, kind):
    rule = sequence_of(int, "a list of ints")
    assert rule.accepts(kind(items)) == all(isinstance(i, int) for i in items)
    assert not rule.accepts(set(items)) and rule.accepts(None)
    assert not rule.accepts([0] * 100_000)  # past MAX_ITEMS: refused unread


@given(value=ANYTHING)
@example(value=[-10 ** 34] * 3)  # four long numbers shown in full ran past the bound
@example(value=type("Long", (), {"__repr__": lambda self: "x" * 10_000})())
def test_a_broken_rule_is_a_blocking_format_finding_naming_the_argument(value):
    findings = argument_findings("predict", {"batch_size": value, "free": value},
                                 {"batch_size": positive_int()})
    if value is None or _is_positive_int(value):
        assert findings == ()
        return
    (finding,) = findings  # "free" has no rule: never checked
    assert finding.check == "format" and finding.blocking
    assert finding.reason == (f"argument 'batch_size' of predict: expected a positive "
                              f"integer or None; received {type(value).__name__}")
    assert finding.expected == "a positive integer or None"
    assert finding.detail == f"value {shown_value(value)}" and len(finding.detail) < 120


def test_refusals_before_any_input_is_read_are_typed():
    findings = argument_findings("predict", {"steps": -1, "verbose": 7},
                                 {"steps": positive_int(), "verbose": boolean()})
    error = arguments_error(findings)
    assert isinstance(error, InputFormatError) and error.check == "format"
    assert "argument 'steps'" in str(error) and "+1 more finding" in str(error)
    empty = no_batches_error("generator")
    assert isinstance(empty, EmptyInputError) and empty.check == "empty"
    assert "generator" in str(empty)


@pytest.mark.parametrize("value", [[0] * 10 ** 6, "x" * 10 ** 6, {i: i for i in range(999)}])
def test_a_huge_value_is_shown_bounded(value):
    assert len(shown_value(value)) < 80


class _Hostile(int):
    """An integer whose comparisons, truth value and repr raise."""

    def _raise(self, *args):
        raise RuntimeError("hostile")

    __eq__ = __ne__ = __gt__ = __lt__ = __ge__ = __le__ = __bool__ = __repr__ = _raise
    __hash__ = int.__hash__


class _Opaque:
    def _raise(self, *args):
        raise RuntimeError("hostile")

    __eq__ = __bool__ = __index__ = __repr__ = _raise
    __hash__ = object.__hash__


@pytest.mark.parametrize("value", [_Hostile(3), _Opaque(), np.array([0, 1])],
                         ids=["int-raising", "object-raising", "array"])
@pytest.mark.parametrize("rule", [
    positive_int(), boolean(),
    __import__("aimsec_core.call_arguments", fromlist=["Rule"]).Rule(
        "'auto'", lambda v: v == "auto" and True)],
    ids=["positive_int", "boolean", "compares"])
def test_a_value_a_rule_cannot_test_is_a_finding_not_an_exception(rule, value):
    """A rule testing a value whose ``__eq__``, ``__gt__`` or truth raises (or a
    many-element array, whose truth is ambiguous) refuses it: the call is refused with
    its typed error, never the value's own exception."""
    findings = argument_findings("predict", {"verbose": value}, {"verbose": rule})
    assert len(findings) == 1 and findings[0].blocking
    assert "argument 'verbose' of predict" in findings[0].message
    assert findings[0].detail.startswith("value ")


@given(value=ANYTHING)
def test_a_flag_is_what_frameworks_read_by_truth_value(value):
    is_flag = isinstance(value, (bool, np.bool_)) or (
        isinstance(value, Integral) and value in (0, 1))
    assert flag().accepts(value) == (value is None or is_flag)
    assert flag(optional=False).accepts(value) == is_flag


@given(value=st.integers())
def test_a_bounded_positive_int_refuses_what_overflows(value):
    assert positive_int(at_most=2 ** 63 - 1).accepts(value) == (0 < value < 2 ** 63)


@pytest.mark.parametrize("values,odd", [
    ((np.zeros(2), None, [np.zeros(1), (None,)]), None),
    ((np.zeros(2), False), False), (([np.zeros(1), 1.5],), 1.5), (({"k": "v"},), "v"),
    (([[[[[["deep"]]]]]],), None),  # past MAX_DEPTH: tensors_in refuses the call
    (([0] * 100_000,), None),  # past MAX_ITEMS: likewise
], ids=["tensors-and-none", "bool", "float-in-list", "str-in-dict", "too-deep", "too-many"])
def test_first_non_tensor_finds_a_value_only_tensors_may_stand_for(values, odd):
    found = first_non_tensor(values, lambda v: isinstance(v, np.ndarray))
    assert found is odd if odd is None or isinstance(odd, bool) else found == odd


def test_a_nested_sequence_rule_reads_lists_inside_within_the_bounds():
    rule = sequence_of(int, "a list of ints", nested=True)
    loop: list = [1]
    loop.append(loop)
    assert rule.accepts(3) and rule.accepts([1, [2, (3,)], ()]) and rule.accepts(None)
    assert not rule.accepts([1, ["2"]]) and not rule.accepts(loop)
    assert not rule.accepts([[[[[1]]]]]) and not rule.accepts([[0] * 5000])
    assert not sequence_of(int, "ints").accepts([1, [2]])  # not nested: items only


def test_a_leaf_the_predicate_cannot_judge_is_reported():
    def judge(value):
        if value == "hostile":
            raise RuntimeError("cannot tell")
        return False

    assert first_non_tensor([None, ["hostile"]], judge) == "hostile"
