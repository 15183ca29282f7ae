"""The guard takes every kind of ``X`` scikit-learn takes, checks the values the estimator
will read, and hands the estimator what it would have read without the guard."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
from sklearn.tree import DecisionTreeClassifier

import aimsec_core
from tests.cases import digits


@pytest.fixture(scope="module")
def data():
    x, y = digits()
    return x[:400].astype(np.float64), y[:400]


@pytest.fixture(scope="module")
def logreg(data):
    return LogisticRegression(max_iter=300).fit(*data)


def _guard(model, sink, **constraints):
    return aimsec_core.guard(model, sinks=[sink], constraints=constraints or None)


# -- sparse -------------------------------------------------------------------------------

SPARSE = [sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, sp.lil_matrix, sp.dia_matrix,
          sp.bsr_matrix, sp.csr_array, sp.csc_array, sp.coo_array]


@pytest.mark.parametrize("kind", SPARSE, ids=lambda k: k.__name__)
def test_sparse_input_runs_like_the_plain_model_without_being_densified(kind, data, logreg,
                                                                          sink, monkeypatch):
    x = kind(np.where(data[0][:20] > 0.5, data[0][:20], 0.0))
    expected = logreg.predict_proba(x)
    guarded = _guard(logreg, sink, min_value=0.0, max_value=1.0)
    for method in ("toarray", "todense"):  # neither the guard nor the model densifies
        monkeypatch.setattr(type(x), method, lambda *a, **k: pytest.fail("densified"))
    out = guarded.predict_proba(x)
    monkeypatch.undo()
    np.testing.assert_array_equal(out, expected)
    assert sink.outcomes == ["allowed"]
    assert sink.events[0].verdict.shape == x.shape


def test_sparse_checks_read_stored_values_and_implicit_zeros(logreg, sink):
    guarded = _guard(logreg, sink, min_value=0.0, max_value=1.0)
    bad = sp.csr_matrix(np.eye(3, 64))
    bad.data[1] = np.nan
    with pytest.raises(aimsec_core.NonFiniteInputError, match="sample 1: NaN"):
        guarded.predict(bad)
    too_big = sp.csr_matrix(np.eye(3, 64) * 2.0)
    with pytest.raises(aimsec_core.ValueRangeError, match="samples 0, 1, 2"):
        guarded.predict(too_big)
    positive = _guard(logreg, sink, min_value=0.5)  # implicit zeros are values too
    with pytest.raises(aimsec_core.ValueRangeError, match=r"\[0, 1\]"):
        positive.predict(sp.csr_matrix(np.eye(1, 64)))


def test_duplicate_coo_entries_are_checked_as_the_summed_value_the_model_reads(logreg, sink):
    guarded = _guard(logreg, sink, max_value=1.0)
    twice = sp.coo_matrix(([0.6, 0.6], ([0, 0], [3, 3])), shape=(1, 64))  # reads as 1.2
    assert twice.data.max() <= 1.0
    with pytest.raises(aimsec_core.ValueRangeError, match="1.2"):
        guarded.predict(twice)


@pytest.mark.parametrize("twice", [
    lambda: _with_a_column_twice(sp.lil_matrix((1, 64))),
    lambda: sp.bsr_matrix((np.full((2, 1, 64), 0.6), [0, 0], [0, 2]), shape=(1, 64)),
], ids=["lil", "bsr"])
def test_duplicate_lil_and_bsr_entries_are_checked_as_the_summed_value_the_model_reads(
        twice, logreg, sink):
    """scipy's LIL and BSR conversions to CSR keep an entry stored twice (COO's sums it):
    the guard checked each stored 0.6 against max_value=1 while the estimator read 1.2."""
    guarded = _guard(logreg, sink, max_value=1.0)
    with pytest.raises(aimsec_core.ValueRangeError, match="1.2"):
        guarded.predict(twice())


def _with_a_column_twice(x):
    x.rows[0], x.data[0] = [3, 3], [0.6, 0.6]  # what scipy's own setters never store
    return x


class _NumberWhoseValueRaises:
    def __float__(self):
        raise ZeroDivisionError("no value")


def test_an_object_array_whose_elements_cannot_be_read_as_numbers_is_a_typed_refusal(
        logreg, sink):
    """The estimator is handed an object array of numbers as float64, converted before
    screening: an element whose ``__float__`` raised anything but TypeError, ValueError or
    OverflowError escaped the guarded call raw, with no line; it is now refused for its
    dtype, as an object array of other non-numbers is."""
    guarded = _guard(logreg, sink)
    x = np.array([[_NumberWhoseValueRaises()] * 64], dtype=object)
    with pytest.raises(aimsec_core.InputFormatError, match="dtype object"):
        guarded.predict(x)
    assert sink.outcomes == ["rejected"]


def test_max_size_counts_stored_values_or_rows(logreg, sink):
    guarded = _guard(logreg, sink, max_size=100)
    few = sp.random(50, 64, density=0.02, format="csr", random_state=0)  # 64 stored, 3,200 cells
    guarded.predict(few)
    with pytest.raises(aimsec_core.InputTooLargeError):
        guarded.predict(sp.csr_matrix((1_000, 64)))  # nothing stored, but 1,000 answers


def test_sparse_hash_follows_content_not_identity(logreg, sink):
    guarded = _guard(logreg, sink)
    x = sp.random(4, 64, density=0.1, format="csr", random_state=1)
    guarded.predict(x)
    guarded.predict(x.copy())
    moved = x.copy()
    moved.indices = (moved.indices + 1) % 64
    moved.has_sorted_indices = False
    guarded.predict(moved)
    hashes = [e.verdict.input_hash for e in sink.events]
    assert hashes[0] == hashes[1] != hashes[2]


@pytest.fixture(scope="module")
def boosting(data):
    """A model that handles NaN and takes no sparse input (one OpenMP thread: spinning
    threads make it slow to fit on a busy machine)."""
    with threadpool_limits(1, user_api="openmp"):
        return HistGradientBoostingClassifier(max_iter=3).fit(data[0], data[1] % 2)


def test_sparse_input_is_refused_in_scikit_learns_words_where_the_model_takes_none(
        data, boosting, sink):
    model = boosting
    with pytest.raises(aimsec_core.InputFormatError, match="sparse"):
        _guard(model, sink).predict(sp.csr_matrix(data[0][:2]))



def _sparse_frame(x, fill=0.0):
    return pd.DataFrame(x).astype(pd.SparseDtype(np.float64, fill))


def test_a_frame_of_sparse_columns_is_refused_as_sparse_where_the_model_takes_none(
        data, boosting, sink):
    """scikit-learn reads a DataFrame whose every column is sparse as a sparse matrix:
    the guard refuses it as it refuses one, not the model with its own TypeError."""
    with pytest.raises(aimsec_core.InputFormatError, match=r"sparse columns.*to_dense"):
        _guard(boosting, sink).predict(_sparse_frame(data[0][:4]))
    assert sink.outcomes == ["rejected"]


def test_a_frame_of_sparse_columns_is_checked_on_its_stored_values(data, logreg, sink):
    frame = _sparse_frame(np.where(data[0][:6] > 0.5, data[0][:6], 0.0))
    guarded = _guard(logreg, sink, min_value=0.0, max_value=1.0)
    np.testing.assert_array_equal(guarded.predict_proba(frame), logreg.predict_proba(frame))
    with pytest.raises(aimsec_core.ValueRangeError):
        guarded.predict(frame * 3)
    assert sink.outcomes == ["allowed", "rejected"]


def test_sparse_columns_filled_with_nan_are_a_typed_refusal(data, logreg, sink):
    """pandas makes no sparse matrix of a fill value other than 0 (scikit-learn's
    check_array then fails with pandas' own ValueError)."""
    with pytest.raises(aimsec_core.InputFormatError, match="fill value"):
        _guard(logreg, sink).predict(_sparse_frame(data[0][:4], fill=np.nan))
    assert sink.outcomes == ["rejected"]


# -- array-likes and DataFrames -----------------------------------------------------------

class Lazy:
    """An array-like that counts its conversions."""

    def __init__(self, array):
        self.array, self.conversions = array, 0

    def __array__(self, dtype=None, copy=None):
        self.conversions += 1
        return self.array


def test_array_likes_are_converted_once_and_the_estimator_gets_that_array(data, logreg, sink):
    lazy = Lazy(data[0][:5])
    out = _guard(logreg, sink, max_value=1.0).predict(lazy)
    np.testing.assert_array_equal(out, logreg.predict(data[0][:5]))
    assert lazy.conversions == 1
    with pytest.raises(aimsec_core.ValueRangeError):
        _guard(logreg, sink, max_value=1.0).predict(Lazy(data[0][:5] * 3))


def test_object_arrays_of_numbers_are_numbers(data, logreg, sink):
    x = data[0][:3].astype(object)
    np.testing.assert_array_equal(_guard(logreg, sink).predict(x), logreg.predict(x))
    x[0, 0] = {"not": "a number"}
    with pytest.raises(aimsec_core.InputFormatError, match="object"):
        _guard(logreg, sink).predict(x)


def test_dataframes_reach_the_estimator_unchanged_with_their_feature_names(data, sink):
    x, y = data
    columns = [f"px{i}" for i in range(64)]
    frame = pd.DataFrame(x, columns=columns)
    model = LogisticRegression(max_iter=300).fit(frame, y)
    guarded = _guard(model, sink, max_value=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "X does not have valid feature names" would fail
        np.testing.assert_array_equal(guarded.predict(frame[:5]), model.predict(frame[:5]))
    with pytest.warns(UserWarning, match="feature names"):  # as the plain model warns
        guarded.predict(x[:5])
    mixed = frame[:5].astype({"px0": "int64", "px1": "float32"})
    np.testing.assert_array_equal(guarded.predict(mixed), model.predict(mixed))
    with pytest.raises(aimsec_core.ValueRangeError):
        guarded.predict(frame[:5] * 2)


def test_a_frame_of_numbers_and_strings_is_checked_column_by_kind(sink):
    frame = pd.DataFrame({"colour": ["red", "blue", "red", "green"] * 5,
                          "size": np.linspace(0, 1, 20)})
    y = np.arange(20) % 2
    model = make_pipeline(make_column_transformer((OneHotEncoder(), ["colour"]),
                                                  remainder="passthrough"),
                          LogisticRegression()).fit(frame, y)
    guarded = _guard(model, sink, min_value=0.0, max_value=1.0)
    np.testing.assert_array_equal(guarded.predict(frame), model.predict(frame))
    bad = frame.assign(size=frame["size"] * 5)
    with pytest.raises(aimsec_core.ValueRangeError):  # the numeric column keeps its checks
        guarded.predict(bad)
    assert sink.events[0].verdict.dtype == "mixed"


# -- strings ------------------------------------------------------------------------------

def test_a_pipeline_taking_categories_gets_format_checks_not_numeric_ones(sink):
    x = np.array([["a", 1], ["b", 2], ["a", 3], ["c", 1]] * 5, dtype=object)
    y = np.arange(20) % 2
    model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(x, y)
    guarded = _guard(model, sink, min_value=0.0, max_value=1.0)  # don't apply to strings
    np.testing.assert_array_equal(guarded.predict(x[:4]), model.predict(x[:4]))
    with pytest.raises(aimsec_core.InputFormatError, match="2 features"):
        guarded.predict(x[:4, :1])
    with pytest.raises(aimsec_core.EmptyInputError):
        guarded.predict(x[:0])
    holes = x[:4].copy()
    holes[2, 0] = None
    with pytest.raises(aimsec_core.EmptyInputError, match="sample 2: missing"):
        guarded.predict(holes)


def test_a_text_pipeline_takes_lists_and_arrays_of_strings(sink):
    docs = ["spam spam eggs", "ham and eggs", "spam offer now", "meeting at noon"] * 3
    y = np.array([1, 0, 1, 0] * 3)
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(docs, y)
    guarded = _guard(model, sink, max_size=100)
    np.testing.assert_array_equal(guarded.predict(docs), model.predict(docs))
    np.testing.assert_array_equal(guarded.predict(np.array(docs)), model.predict(docs))
    for bad, error in (([], aimsec_core.EmptyInputError),
                       (["fine", None], aimsec_core.EmptyInputError),
                       ("one string, not a list", aimsec_core.InputFormatError),
                       (["x"] * 101, aimsec_core.InputTooLargeError)):
        with pytest.raises(error):
            guarded.predict(bad)
    assert sink.outcomes == ["allowed", "allowed"] + ["rejected"] * 4


# -- NaN and dtypes -----------------------------------------------------------------------

def test_nan_is_allowed_where_the_model_handles_it_and_inf_never(data, boosting, sink):
    x, model = data[0], boosting
    holes = x[:4].copy()
    holes[1, 3] = np.nan
    guarded = _guard(model, sink, max_value=1.0)
    np.testing.assert_array_equal(guarded.predict(holes), model.predict(holes))
    holes[2, 5] = np.inf
    with pytest.raises(aimsec_core.NonFiniteInputError, match="sample 2: infinite") as caught:
        guarded.predict(holes)
    assert "NaN values" not in str(caught.value)
    with pytest.raises(aimsec_core.NonFiniteInputError, match="sample 1: NaN"):
        _guard(model, sink, allow_nan=False).predict(holes[:2])


def test_a_pipeline_that_imputes_first_takes_nan_and_the_constraint_closes_it(data, sink):
    x, y = data
    model = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=300)).fit(x, y)
    holes = x[:3].copy()
    holes[0, :5] = np.nan
    guarded = _guard(model, sink)  # the imputer reads every column first
    np.testing.assert_array_equal(guarded.predict(holes), model.predict(holes))
    with pytest.raises(aimsec_core.NonFiniteInputError, match="infinite"):
        guarded.predict(np.where(np.isnan(holes), np.inf, holes))
    with pytest.raises(aimsec_core.NonFiniteInputError):
        _guard(model, sink, allow_nan=False).predict(holes)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint8, np.bool_, np.float16,
                                   np.float32, np.float64])
def test_dtypes_scikit_learn_casts_itself_are_accepted(dtype, data, logreg, sink):
    x = (data[0][:6] > 0.5).astype(dtype)
    np.testing.assert_array_equal(_guard(logreg, sink).predict_proba(x),
                                  logreg.predict_proba(x))


@pytest.mark.parametrize("make", [DecisionTreeClassifier, RandomForestClassifier])
def test_float64_values_a_tree_would_turn_into_inf_are_refused(make, data, sink):
    x, y = data
    model = make(random_state=0).fit(x, y) if make is DecisionTreeClassifier else make(
        n_estimators=3, random_state=0).fit(x, y)
    guarded = _guard(model, sink)
    largest = x[:2].copy()
    largest[0, 0] = np.finfo(np.float32).max  # still finite once cast
    np.testing.assert_array_equal(guarded.predict(largest), model.predict(largest))
    largest[1, 0] = 1e39
    with pytest.raises(aimsec_core.NonFiniteInputError, match="sample 1: values beyond float32"):
        guarded.predict(largest)


def test_calibrated_detectors_refuse_what_they_cannot_read(data, logreg, sink):
    guarded = _guard(logreg, sink, min_value=0.0, max_value=1.0)
    guarded.calibrate(digits()[0][400:700])
    guarded.predict(data[0][:3])
    with pytest.raises(aimsec_core.InputFormatError, match="calibrated on dense arrays"):
        guarded.predict(sp.csr_matrix(data[0][:3]))
    assert sink.outcomes == ["allowed", "rejected"]


# -- frames and arrays scikit-learn refuses: typed refusals, one record each ----------------

_ODD = {
    "datetime column": lambda x: x.assign(px0=pd.date_range("2020", periods=len(x))),
    "timedelta column": lambda x: x.assign(px0=pd.to_timedelta(np.arange(len(x)), "s")),
    "tz-aware column": lambda x: x.assign(px0=pd.date_range("2020", periods=len(x), tz="UTC")),
    "complex column": lambda x: x.assign(px0=x["px0"] + 1j),
    "duplicate labels": lambda x: x.set_axis(["px0"] * 2 + list(x.columns[2:]), axis=1),
    "mixed labels": lambda x: x.set_axis([0] + list(x.columns[1:]), axis=1),
}


@pytest.mark.parametrize("odd", list(_ODD), ids=list(_ODD))
def test_frames_scikit_learn_refuses_are_typed_refusals_before_the_model(odd, data, sink):
    # complex and date columns were read as real parts and nanosecond counts (passing the
    # checks), odd labels went through: the estimator then raised its own raw error
    x, y = data
    frame = pd.DataFrame(x[:5], columns=[f"px{i}" for i in range(64)])
    model = LogisticRegression(max_iter=300).fit(x, y)
    bad = _ODD[odd](frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as plain:
            model.predict(bad)  # scikit-learn refuses it too
        assert not isinstance(plain.value, aimsec_core.AimsecError)
        with pytest.raises(aimsec_core.InputFormatError) as refused:
            _guard(model, sink).predict(bad)
    assert not refused.value.verdict.allowed
    [event] = sink.events
    assert event.outcome == "rejected"


def test_np_matrix_is_refused_as_scikit_learn_refuses_it(data, logreg, sink):
    x = np.asmatrix(data[0][:3])
    with pytest.raises(TypeError):
        logreg.predict(x)
    with pytest.raises(aimsec_core.InputFormatError, match="np.matrix"):
        _guard(logreg, sink).predict(x)
    assert [e.outcome for e in sink.events] == ["rejected"]
