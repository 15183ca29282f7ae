"""A guarded scikit-learn meta-estimator's keyword arguments, with metadata routing off,
are checked as it hands them on: a Pipeline's to its last step's method (down nested
pipelines to the last estimator), ``score``'s ``y`` and ``sample_weight`` included, a
TransformedTargetRegressor's to its regressor; keywords one refuses without routing (a
Pipeline's ``decision_function`` or ``transform``, a search's ``score``) are refused by
the guard before anything runs, whatever the estimator inside would take."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import aimsec_core
from aimsec_core import InputFormatError

RNG = np.random.default_rng(0)
X = RNG.random((20, 3))
Y = (X[:, 0] > 0.5).astype(int)


class Lenient(ClassifierMixin, BaseEstimator):
    """A last step whose decision_function and transform take any keyword."""

    def fit(self, X, y):  # type: ignore[no-untyped-def]
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, X):  # type: ignore[no-untyped-def]
        return np.zeros(len(X), dtype=int)

    def decision_function(self, X, **options):  # type: ignore[no-untyped-def]
        return np.zeros(len(X))

    def transform(self, X, **options):  # type: ignore[no-untyped-def]
        return X


@pytest.mark.parametrize("call", [
    lambda g: g.score(X, Y, sample_weight=np.ones(20)),
    lambda g: g.score(X, y=Y, sample_weight=np.ones(20)),
    lambda g: g.score(X, Y, np.ones(20)),
], ids=["keyword", "y-by-keyword", "by-position"])
def test_score_with_sample_weight_runs_as_in_scikit_learn(sink, call):
    """score(X, y, sample_weight=w) of a pipeline was refused ('missing a required
    argument: y': the last step's score was checked without y)."""
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)
    guarded = aimsec_core.guard(model, name="sk-score", sinks=[sink], policy=False)
    assert call(guarded) == call(model)
    assert [e.outcome for e in sink.events] == ["allowed"]


def test_score_keywords_the_last_step_does_not_take_are_refused_naming_them(sink):
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y)
    guarded = aimsec_core.guard(model, name="sk-score", sinks=[sink], policy=False)
    with pytest.raises(InputFormatError, match="LogisticRegression: got an unexpected "
                                               "keyword argument 'weights'"):
        guarded.score(X, Y, weights=[1])
    assert [e.outcome for e in sink.events] == ["rejected"]


def test_a_nested_pipeline_checks_its_own_last_step(sink):
    """The inner pipeline's predict takes **params too: the check went no deeper, and
    scikit-learn's TypeError came past the guard."""
    inner = make_pipeline(StandardScaler(), LogisticRegression())
    model = make_pipeline(StandardScaler(), inner).fit(X, Y)
    guarded = aimsec_core.guard(model, name="sk-nested", sinks=[sink], policy=False)
    with pytest.raises(InputFormatError,
                       match="last step Pipeline's last step LogisticRegression"):
        guarded.predict(X, colour="red")
    np.testing.assert_array_equal(guarded.predict(X), model.predict(X))
    assert [e.outcome for e in sink.events] == ["rejected", "allowed"]


@pytest.mark.parametrize("method", ["decision_function", "transform"])
def test_keywords_a_pipeline_refuses_without_routing_are_refused_first(sink, method):
    """The last step takes any keyword, but the pipeline raises ValueError for them
    without metadata routing: that error came past the guard."""
    model = make_pipeline(StandardScaler(), Lenient()).fit(X, Y)
    with pytest.raises(ValueError, match="enable_metadata_routing"):
        getattr(model, method)(X, depth=2)
    guarded = aimsec_core.guard(model, name="sk-lenient", sinks=[sink], policy=False)
    with pytest.raises(InputFormatError, match=f"{method}: Pipeline takes keyword "
                                               f"arguments of {method} only with"):
        getattr(guarded, method)(X, depth=2)
    assert [e.outcome for e in sink.events] == ["rejected"]


def test_a_transformed_target_regressor_checks_its_regressor(sink):
    """TransformedTargetRegressor.predict hands its keywords to its regressor's
    predict, like a Pipeline to its last step: scikit-learn's TypeError came past."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import LinearRegression

    model = TransformedTargetRegressor(LinearRegression(), func=np.log1p,
                                       inverse_func=np.expm1).fit(X, X[:, 0])
    guarded = aimsec_core.guard(model, name="sk-ttr", sinks=[sink], policy=False)
    with pytest.raises(InputFormatError, match="regressor LinearRegression: got an "
                                               "unexpected keyword argument 'colour'"):
        guarded.predict(X, colour="red")
    np.testing.assert_array_equal(guarded.predict(X), model.predict(X))
    assert [e.outcome for e in sink.events] == ["rejected", "allowed"]


def test_a_grid_search_refuses_score_keywords_without_routing(sink):
    """GridSearchCV.score takes **params but raises scikit-learn's ValueError for any
    while metadata routing is off (sample_weight too): that error came past the guard."""
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression()),
                          {"logisticregression__C": [0.5, 1.0]}, cv=2).fit(X, Y)
    with pytest.raises(ValueError, match="enable_metadata_routing"):
        search.score(X, Y, sample_weight=np.ones(20))
    guarded = aimsec_core.guard(search, name="sk-search", sinks=[sink], policy=False)
    with pytest.raises(InputFormatError, match="GridSearchCV takes keyword arguments of "
                                               "score only with .* metadata routing on"):
        guarded.score(X, Y, sample_weight=np.ones(20))
    assert guarded.score(X, Y) == search.score(X, Y)
    assert [e.outcome for e in sink.events] == ["rejected", "allowed"]
