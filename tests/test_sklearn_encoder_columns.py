"""Columns an encoder fitted on strings reads: the guard refuses one handed numbers,
booleans, complex numbers, dates or durations (the encoder compares them with its fitted
strings and raises its own TypeError or ValueError), naming the column, what it expected
and the dtype received; strings, categories of strings and other objects (missing values
among them) reach the estimator, which answers as it does unguarded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (OneHotEncoder, OrdinalEncoder, StandardScaler,
                                   TargetEncoder)

import aimsec_core
from aimsec_core import InputFormatError
from aimsec_sklearn._spec import input_spec
from tests.test_fuzz_exotic_inputs import _outcome

N = 40
Y = np.arange(N) % 2


def mixed_frame(seed: int) -> pd.DataFrame:
    """N rows: numbers in 'a' and 'c', strings in 'b' (3 values) and 'd' (2)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.random(N), "b": rng.choice(["u", "v", "w"], N),
                         "c": rng.random(N), "d": rng.choice(["x", "y"], N)})


@pytest.fixture(scope="module")
def frame():
    return mixed_frame(3)


def _fit(frame, encoder, columns=("b", "d"), model=None):
    transformer = make_column_transformer((encoder, list(columns)),
                                          (StandardScaler(), ["a", "c"]))
    return make_pipeline(transformer, model or LogisticRegression()).fit(frame, Y)


#: Columns an encoder fitted on strings fails on, by the dtype each is handed as.
WRONG = {
    "int64": lambda n: np.arange(n),
    "float64": lambda n: np.linspace(0, 1, n),
    "float64 NaN": lambda n: np.full(n, np.nan),
    "float16": lambda n: np.arange(n, dtype=np.float16),
    "bool": lambda n: np.arange(n) % 2 == 0,
    "Int64": lambda n: pd.array(range(n), dtype="Int64"),
    "Float64 with NA": lambda n: pd.array([1.5, None] + [2.0] * (n - 2), dtype="Float64"),
    "boolean": lambda n: pd.array([True, False] * (n // 2) + [True] * (n % 2),
                                  dtype="boolean"),
    "category of numbers": lambda n: pd.Categorical(np.arange(n) % 3),
    "Sparse": lambda n: pd.arrays.SparseArray([0.0, 1.0] + [0.0] * (n - 2)),
    "complex": lambda n: np.arange(n) + 1j,
    "datetime": lambda n: pd.date_range("2020", periods=n),
    "timedelta": lambda n: pd.to_timedelta(np.arange(n), "s"),
}
#: Columns it reads (objects of any kind: strings, missing values, other objects).
RIGHT = {
    "str": lambda n: np.array(["u", "v"] * (n // 2) + ["u"] * (n % 2), dtype=object),
    "unseen str": lambda n: np.array(["zz"] * n, dtype=object),
    "string": lambda n: pd.array(["u", "v"] * (n // 2) + ["u"] * (n % 2), dtype="string"),
    "category": lambda n: pd.Categorical(["u", "w"] * (n // 2) + ["u"] * (n % 2)),
    "numbers as objects": lambda n: pd.Series(list(range(n)), dtype=object).to_numpy(),
    "booleans as objects": lambda n: np.array([True] * n, dtype=object),
    "tz datetime": lambda n: pd.date_range("2020", periods=n, tz="UTC"),
    "period": lambda n: pd.period_range("2020", periods=n, freq="D"),
}


@pytest.mark.parametrize("kind", sorted(WRONG))
def test_a_column_an_encoder_fitted_on_strings_reads_holding_another_kind_is_refused(
        frame, sink, kind):
    model = _fit(frame, OneHotEncoder(handle_unknown="ignore"))
    bad = frame.iloc[:6].assign(b=WRONG[kind](6))
    assert _outcome(model.predict, bad)[0] == "raised"  # TypeError or ValueError
    with pytest.raises(InputFormatError, match=r"column 'b' \(.*strings.*expected strings") as e:
        aimsec_core.guard(model, sinks=[sink]).predict(bad)
    finding = e.value.verdict.findings[0]
    assert finding.expected == "strings, as fitted"
    assert finding.received == {"b": str(bad["b"].dtype)}
    assert sink.outcomes == ["rejected"]


@pytest.mark.parametrize("kind", sorted(RIGHT))
@pytest.mark.parametrize("encoder", [
    OneHotEncoder(handle_unknown="ignore"),
    OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), TargetEncoder()],
    ids=["OneHotEncoder", "OrdinalEncoder", "TargetEncoder"])
def test_objects_in_a_column_an_encoder_fitted_on_strings_reads_give_the_plain_answer(
        frame, sink, kind, encoder):
    model = _fit(frame, encoder)
    good = frame.iloc[:6].assign(b=RIGHT[kind](6))
    expected = model.predict_proba(good)
    np.testing.assert_array_equal(
        aimsec_core.guard(model, sinks=[sink]).predict_proba(good), expected)
    assert sink.outcomes == ["allowed"]


@pytest.mark.parametrize("encoder", [OrdinalEncoder(), TargetEncoder(),
                                     OneHotEncoder(handle_unknown="error")],
                         ids=["OrdinalEncoder", "TargetEncoder", "OneHotEncoder"])
def test_every_encoder_fitted_on_strings_has_its_columns_checked(frame, sink, encoder):
    model = _fit(frame, encoder)
    bad = frame.iloc[:4].assign(d=np.arange(4.0))
    assert _outcome(model.predict, bad)[0] == "raised"
    with pytest.raises(InputFormatError, match=r"column 'd' \(numbers, float64\)"):
        aimsec_core.guard(model, sinks=[sink]).predict(bad)


def test_strings_and_missing_values_pass_where_the_model_takes_missing_values(frame, sink):
    model = _fit(frame, OneHotEncoder(handle_unknown="ignore"),
                 model=HistGradientBoostingClassifier(max_iter=5))
    guarded = aimsec_core.guard(model, sinks=[sink])
    for column in (np.array(["u", None, np.nan, "v"], dtype=object),
                   pd.array(["u", None, "v", "w"], dtype="string"),
                   pd.Categorical(["u", None, "v", "w"]), np.array([None] * 4, dtype=object)):
        good = frame.iloc[:4].assign(b=column)
        np.testing.assert_array_equal(guarded.predict_proba(good), model.predict_proba(good))
    with pytest.raises(InputFormatError, match="column 'b'"):
        guarded.predict(frame.iloc[:4].assign(b=np.full(4, np.nan)))  # NaN as numbers
    assert sink.outcomes == ["allowed"] * 4 + ["rejected"]


def test_an_encoder_fitted_on_numbers_takes_strings_as_it_does_unguarded(frame, sink):
    # the encoder fitted on numbers marks strings unknown and ignores them: not a kind
    # it fails on, so they pass
    numbers = frame.assign(b=np.arange(N) % 3)
    model = _fit(numbers, OneHotEncoder(handle_unknown="ignore"))
    guarded = aimsec_core.guard(model, sinks=[sink])
    assert input_spec(model).string_columns == frozenset({"d"})
    for column in (np.array(["u"] * 4, dtype=object), pd.Categorical(["u", "v"] * 2)):
        good = numbers.iloc[:4].assign(b=column)
        np.testing.assert_array_equal(guarded.predict_proba(good), model.predict_proba(good))


def test_a_nested_pipeline_reads_with_its_first_step(frame, sink):
    # an encoder first: numbers fail in it; an imputer first casts them to objects, which
    # the encoder then takes, so they are not the encoder's to refuse
    first = _fit(frame, make_pipeline(OneHotEncoder(handle_unknown="ignore"),
                                      StandardScaler(with_mean=False)))
    bad = frame.iloc[:4].assign(b=np.arange(4))
    with pytest.raises(InputFormatError, match="column 'b'"):
        aimsec_core.guard(first, sinks=[sink]).predict(bad)
    imputed = _fit(frame, make_pipeline(SimpleImputer(strategy="most_frequent"),
                                        OneHotEncoder(handle_unknown="ignore")))
    assert _outcome(imputed.predict, bad)[0] == "ok"
    assert input_spec(imputed).string_columns == frozenset()


@pytest.mark.parametrize("columns", [
    ["b", "d"], [1, 3], np.array([False, True, False, True]),
    make_column_selector(dtype_exclude="number"), slice(1, 4, 2)],
    ids=["names", "indices", "mask", "selector", "slice"])
def test_each_way_of_selecting_the_columns_names_them(frame, columns):
    transformer = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), columns),
                                          remainder=StandardScaler())
    model = make_pipeline(transformer, LogisticRegression()).fit(frame, Y)
    assert input_spec(model).string_columns == frozenset({"b", "d"})


def test_a_pipeline_encoding_every_column_of_an_array_refuses_an_array_of_numbers(sink):
    x = np.array([["u", 1], ["v", 2], ["u", 3], ["w", 1]] * 5, dtype=object)
    model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(
        x, np.arange(20) % 2)
    guarded = aimsec_core.guard(model, sinks=[sink])
    assert input_spec(model).string_columns == frozenset({"0"})  # column 1 held numbers
    np.testing.assert_array_equal(guarded.predict(x[:4]), model.predict(x[:4]))
    numbers = np.array([[1.0, 1.0], [2.0, 2.0]])
    assert _outcome(model.predict, numbers)[0] == "raised"
    with pytest.raises(InputFormatError, match=r"column '0' \(numbers, float64\)"):
        guarded.predict(numbers)
    assert sink.outcomes == ["allowed", "rejected"]


_KINDS = st.sampled_from(sorted(WRONG) + sorted(RIGHT))


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(b=_KINDS, d=_KINDS, rows=st.integers(2, 6))
def test_the_guard_refuses_exactly_the_columns_the_encoder_fails_on(frame, b, d, rows):
    model = _encoded(frame)
    value = frame.iloc[:rows].assign(b=(WRONG | RIGHT)[b](rows), d=(WRONG | RIGHT)[d](rows))
    plain, expected = _outcome(model.predict_proba, value)
    guarded, got = _outcome(aimsec_core.guard(model).predict_proba, value)
    wrong = [column for column, kind in (("b", b), ("d", d)) if kind in WRONG]
    assert plain == ("raised" if wrong else "ok"), expected
    if wrong:
        assert isinstance(got, InputFormatError), got
        assert got.verdict.findings[0].received == {c: str(value[c].dtype) for c in wrong}
    else:
        assert guarded == "ok", got
        np.testing.assert_array_equal(got, expected)


_ENCODED: dict[int, object] = {}


def _encoded(frame):
    """The pipeline the property test reads (fitted once: hypothesis calls it often)."""
    if id(frame) not in _ENCODED:
        _ENCODED[id(frame)] = _fit(frame, OneHotEncoder(handle_unknown="ignore"))
    return _ENCODED[id(frame)]


@pytest.mark.parametrize("categorical", ["from_dtype", ["b"]])
def test_a_gradient_boosting_model_on_categories_takes_them_as_it_does_unguarded(
        frame, categorical):
    # HistGradientBoosting* fitted with categorical features reads X through its own
    # OrdinalEncoder: strings and categories pass there (they were refused as
    # 'dtype mixed (object)'), numbers in that column are refused by name
    data = frame[["a", "b"]].astype({"b": "category"})
    model = HistGradientBoostingClassifier(categorical_features=categorical,
                                           max_iter=5).fit(data, Y)
    guarded = aimsec_core.guard(model)
    for value in (data.iloc[:6], data.iloc[:6].astype({"b": object})):
        np.testing.assert_array_equal(guarded.predict_proba(value), model.predict_proba(value))
    assert input_spec(model).string_columns == frozenset({"b"})
    wrong = data.iloc[:6].assign(b=np.arange(6))
    assert _outcome(model.predict_proba, wrong)[0] == "raised"
    with pytest.raises(InputFormatError, match="column 'b'"):
        guarded.predict_proba(wrong)


@pytest.mark.parametrize("categorical", ["from_dtype", ["b"]])
def test_a_gradient_boosting_model_on_categories_reads_its_other_columns_as_numbers(
        frame, categorical):
    # its other columns go through check_array with a float dtype (its own numerical
    # branch): strings there raised the model's own ValueError out of the guard; they are
    # refused by name, while NaN, None, numeric strings and ints still pass as unguarded
    data = frame[["a", "b", "c"]].astype({"b": "category"})
    model = HistGradientBoostingClassifier(categorical_features=categorical,
                                           max_iter=5).fit(data, Y)
    guarded = aimsec_core.guard(model)
    assert input_spec(model).numeric_columns == frozenset({"a", "c"})
    rows = data.iloc[:4]
    for value in (rows, rows.assign(a=[np.nan, 0.5, np.nan, 0.1]),
                  rows.assign(c=pd.Series([None, "0.5", 1, 2.5], dtype=object)),
                  rows.assign(a=pd.array([1, None, 2, 3], dtype="Int64")),
                  rows.assign(b=["zz", None, "u", "v"])):
        np.testing.assert_array_equal(guarded.predict_proba(value), model.predict_proba(value))
    for wrong in (rows.assign(a=["x", "y", "z", "w"]),
                  rows.assign(c=pd.Series(["x", 1.0, 2.0, 3.0], dtype=object))):
        assert _outcome(model.predict_proba, wrong)[0] == "raised"
        with pytest.raises(InputFormatError, match=r"column '[ac]' \(object\).*numbers"):
            guarded.predict_proba(wrong)
