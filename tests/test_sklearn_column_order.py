"""A DataFrame's column order, as scikit-learn reads it: a ColumnTransformer fitted on a
DataFrame (a pipeline's first step, a HistGradientBoosting model's categorical encoder)
picks each column by name, in any order, ignoring others and the absence of those only
dropped transformers read; a bare estimator fitted on a DataFrame wants the fitted names
in their order. The guard accepts exactly what the plain model accepts, and its
per-column checks follow the columns by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import aimsec_core
from aimsec_core import InputFormatError
from tests.test_fuzz_exotic_inputs import _outcome


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40),
                         "c": rng.choice(["x", "y"], 40), "d": rng.normal(size=40)})


@pytest.fixture(scope="module")
def target(frame):
    return (frame["a"] > 0).astype(int).to_numpy()


def _pipeline(frame, target, remainder="drop", imputer=False):
    numbers = (Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())])
               if imputer else StandardScaler())
    columns = ColumnTransformer([("num", numbers, ["a", "b"]),
                                 ("cat", OneHotEncoder(handle_unknown="ignore"), ["c"])],
                                remainder=remainder)
    return Pipeline([("columns", columns), ("model", LogisticRegression())]).fit(
        frame, target)


@pytest.mark.parametrize("remainder", ["drop", "passthrough"])
@pytest.mark.parametrize("columns", [["c", "a", "b", "d"], ["d", "b", "c", "a"]])
def test_a_reordered_frame_gives_the_plain_pipelines_predictions(frame, target, sink,
                                                                 remainder, columns):
    # was: "the DataFrame's columns [...] are not the feature names the estimator was
    # fitted with (the same names in another order)", where the pipeline predicts
    pipeline = _pipeline(frame, target, remainder)
    guarded = aimsec_core.guard(pipeline, sinks=[sink])
    np.testing.assert_array_equal(guarded.predict_proba(frame[columns]),
                                  pipeline.predict_proba(frame[columns]))
    assert sink.outcomes == ["allowed"]


def test_extra_columns_and_a_missing_dropped_one_pass_as_the_pipeline_ignores_them(
        frame, target, sink):
    pipeline = _pipeline(frame, target, "drop")
    guarded = aimsec_core.guard(pipeline, sinks=[sink])
    # "z" holds strings a scaler would refuse; "d" (dropped) is missing
    given = frame.assign(z="text", w=1j)[["z", "c", "w", "b", "a"]]
    np.testing.assert_array_equal(guarded.predict_proba(given), pipeline.predict_proba(given))
    assert sink.outcomes == ["allowed"]


@pytest.mark.parametrize("remainder,missing", [("drop", "b"), ("passthrough", "d")])
def test_a_missing_column_the_pipeline_reads_is_refused_by_name(frame, target, sink,
                                                                remainder, missing):
    pipeline = _pipeline(frame, target, remainder)
    given = frame.drop(columns=missing)[::-1]
    with pytest.raises(ValueError, match="columns are missing"):
        pipeline.predict(given)
    with pytest.raises(InputFormatError, match=f"lacks columns the model reads: \\['{missing}'\\]"):
        aimsec_core.guard(pipeline, sinks=[sink]).predict(given)
    assert sink.outcomes == ["rejected"]


@pytest.mark.parametrize("column", ["a", "b"])
def test_a_string_in_a_scaled_column_of_a_reordered_frame_is_refused_naming_it(
        frame, target, sink, column):
    pipeline = _pipeline(frame, target)
    bad = frame[["c", "d", "b", "a"]].assign(**{column: "text"})
    with pytest.raises(ValueError):
        pipeline.predict(bad)
    with pytest.raises(InputFormatError, match=f"column '{column}' .*not numbers") as caught:
        aimsec_core.guard(pipeline, sinks=[sink]).predict(bad)
    assert caught.value.verdict.findings[0].received == {column: "object"}


def test_missing_values_pass_in_imputed_columns_of_a_reordered_frame_only(frame, target):
    pipeline = _pipeline(frame, target, imputer=True)
    guarded = aimsec_core.guard(pipeline)
    holes = frame[["c", "b", "a"]].assign(a=[np.nan] + [0.5] * 39)  # imputed column
    np.testing.assert_array_equal(guarded.predict_proba(holes), pipeline.predict_proba(holes))


def test_a_column_transformer_picking_by_position_reads_a_frame_by_name(frame, target):
    columns = ColumnTransformer([("num", StandardScaler(), [0, 1]),
                                 ("cat", OneHotEncoder(handle_unknown="ignore"), [2])])
    pipeline = Pipeline([("columns", columns), ("model", LogisticRegression())]).fit(
        frame, target)
    given = frame[["c", "b", "a", "d"]]
    np.testing.assert_array_equal(aimsec_core.guard(pipeline).predict_proba(given),
                                  pipeline.predict_proba(given))


def test_a_bare_estimator_fitted_on_a_frame_is_order_strict_as_scikit_learn_is(
        frame, target, sink):
    model = LogisticRegression().fit(frame[["a", "b"]], target)
    with pytest.raises(ValueError, match="same order"):
        model.predict(frame[["b", "a"]])
    with pytest.raises(InputFormatError, match="another order"):
        aimsec_core.guard(model, sinks=[sink]).predict(frame[["b", "a"]])


def test_a_hist_gradient_boosting_model_with_categories_reads_a_frame_by_name(frame, target):
    # its own ColumnTransformer (an OrdinalEncoder on the categorical columns) reads X
    # first, unchecked by the model: by name, as a pipeline's
    given = frame.assign(c=frame["c"].astype("category"))
    model = HistGradientBoostingClassifier(max_iter=5, categorical_features="from_dtype").fit(
        given, target)
    guarded = aimsec_core.guard(model)
    for columns in (["c", "a", "b", "d"], ["d", "c", "b", "a"]):
        value = given[columns].assign(z="text")
        np.testing.assert_array_equal(guarded.predict_proba(value), model.predict_proba(value))
    with pytest.raises(ValueError, match="columns are missing"):
        model.predict(given[["a", "b", "c"]])
    with pytest.raises(InputFormatError, match=r"lacks columns the model reads: \['d'\]"):
        guarded.predict(given[["a", "b", "c"]])
    # a model without one checks the names in order
    plain = HistGradientBoostingClassifier(max_iter=5).fit(frame[["a", "b", "d"]], target)
    with pytest.raises(ValueError, match="same order"):
        plain.predict(frame[["d", "a", "b"]])
    with pytest.raises(InputFormatError, match="another order"):
        aimsec_core.guard(plain).predict(frame[["d", "a", "b"]])


@pytest.mark.parametrize("remainder", ["drop", "passthrough"])
def test_the_guard_refuses_exactly_when_the_plain_pipeline_raises(frame, target, remainder):
    pipeline = _pipeline(frame, target, remainder)
    guarded = aimsec_core.guard(pipeline)
    extras = {"z": np.arange(len(frame)), "s": ["t"] * len(frame), "k": [1j] * len(frame)}

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(kept=st.lists(st.sampled_from(list(frame.columns) + sorted(extras)),
                         unique=True, min_size=1).flatmap(st.permutations))
    def check(kept):
        value = frame.assign(**extras)[kept]
        plain_kind, plain = _outcome(pipeline.predict_proba, value)
        kind, got = _outcome(guarded.predict_proba, value)
        assert kind != "raised", got
        assert (kind == "refused") == (plain_kind == "raised"), (kept, got, plain)
        if kind == "ok":
            np.testing.assert_array_equal(got, plain)

    check()
