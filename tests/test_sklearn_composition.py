"""A guarded estimator inside scikit-learn's own machinery behaves as the plain one:
warm-started refits, ``set_output`` and ``get_feature_names_out`` through a ``Pipeline``,
and metadata routing (``sample_weight`` routed by ``cross_validate``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import aimsec_core
from tests.cases import digits

X, Y = digits()
X, Y = X[:300].astype(np.float64), Y[:300]
WEIGHTS = np.linspace(0.2, 2.0, len(Y))

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _guard(model, sink):
    return aimsec_core.guard(model, sinks=[sink])


# -- warm_start -----------------------------------------------------------------------------

def test_warm_start_refits_continue_from_the_fitted_model_like_the_plain_estimator(sink):
    plain = LogisticRegression(max_iter=3, warm_start=True)
    guarded = _guard(LogisticRegression(max_iter=3, warm_start=True), sink)
    for _ in range(3):
        plain.fit(X, Y)
        guarded.fit(X, Y)
    np.testing.assert_array_equal(guarded.coef_, plain.coef_)
    assert guarded.estimator.get_params() == plain.get_params()
    assert not hasattr(guarded.estimator, "coef_")  # the parameter is still never fitted
    assert sink.events == []  # fitting is not screened


def test_warm_start_takes_the_parameters_set_since_the_last_fit(sink):
    rng = np.random.RandomState(0)
    plain = RandomForestClassifier(n_estimators=3, warm_start=True, random_state=rng)
    guarded = _guard(RandomForestClassifier(n_estimators=3, warm_start=True,
                                            random_state=np.random.RandomState(0)), sink)
    plain.fit(X, Y)
    guarded.fit(X, Y)
    first = guarded.estimator_.estimators_[0]
    plain.set_params(n_estimators=6).fit(X, Y)
    guarded.set_params(estimator__n_estimators=6).fit(X, Y)
    assert len(guarded.estimators_) == 6
    assert guarded.estimators_[0] is not first  # a copy went on training: estimator_ is new
    np.testing.assert_array_equal(guarded.predict_proba(X[:20]), plain.predict_proba(X[:20]))
    assert sink.outcomes == ["allowed"]


def test_without_warm_start_every_fit_starts_afresh(sink):
    guarded = _guard(LogisticRegression(max_iter=3), sink)
    first = guarded.fit(X, Y).coef_.copy()
    np.testing.assert_array_equal(guarded.fit(X, Y).coef_, first)


# -- set_output and feature names -----------------------------------------------------------

def test_set_output_reaches_the_model_and_a_pipeline_can_set_it(sink):
    plain = make_pipeline(StandardScaler(), KMeans(3, n_init=1, random_state=0),
                          LogisticRegression(max_iter=300))
    guarded = make_pipeline(StandardScaler(), _guard(KMeans(3, n_init=1, random_state=0), sink),
                            LogisticRegression(max_iter=300))
    plain.set_output(transform="pandas").fit(X, Y)
    guarded.set_output(transform="pandas").fit(X, Y)
    middle = guarded[:-1].transform(X[:5])
    assert isinstance(middle, pd.DataFrame)
    pd.testing.assert_frame_equal(middle, plain[:-1].transform(X[:5]))
    np.testing.assert_array_equal(guarded[:-1].get_feature_names_out(),
                                  plain[:-1].get_feature_names_out())
    np.testing.assert_array_equal(guarded.predict(X[:5]), plain.predict(X[:5]))
    assert sink.outcomes == ["allowed"] * 3  # transform in fit, transform, transform in predict


def test_set_output_is_offered_only_where_the_estimator_has_it(sink):
    guarded = _guard(LogisticRegression(max_iter=300).fit(X, Y), sink)
    assert not hasattr(guarded, "set_output")
    assert not hasattr(guarded, "get_feature_names_out")


# -- metadata routing -----------------------------------------------------------------------

@pytest.fixture
def routing():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


def _requesting():
    return (LogisticRegression(max_iter=300).set_fit_request(sample_weight=True)
            .set_score_request(sample_weight=True))


def test_cross_validate_routes_sample_weight_through_the_guard(routing, sink):
    params = {"sample_weight": WEIGHTS}
    plain = cross_validate(_requesting(), X, Y, cv=3, params=params)
    guarded = cross_validate(_guard(_requesting(), sink), X, Y, cv=3, params=params)
    np.testing.assert_array_equal(guarded["test_score"], plain["test_score"])
    assert sink.outcomes == ["allowed"] * 3


def test_metadata_requests_are_set_on_the_wrapped_estimator(routing, sink):
    guarded = _guard(LogisticRegression(max_iter=300), sink)
    assert (guarded.set_fit_request(sample_weight=True)
            .set_score_request(sample_weight=False)) is guarded
    params = {"sample_weight": WEIGHTS}
    plain = cross_validate(LogisticRegression(max_iter=300).set_fit_request(sample_weight=True)
                           .set_score_request(sample_weight=False), X, Y, cv=3, params=params)
    np.testing.assert_array_equal(cross_validate(guarded, X, Y, cv=3, params=params)["test_score"],
                                  plain["test_score"])
    with pytest.raises(AttributeError):
        guarded.set_transform_request(copy=True)  # as on the plain estimator: none to set


def test_metadata_nobody_requested_is_refused_as_scikit_learn_refuses_it(routing, sink):
    guarded = _guard(LogisticRegression(max_iter=300), sink)
    with pytest.raises(Exception) as plain_error:
        cross_validate(LogisticRegression(max_iter=300), X, Y, cv=3,
                       params={"sample_weight": WEIGHTS})
    with pytest.raises(type(plain_error.value)):
        cross_validate(guarded, X, Y, cv=3, params={"sample_weight": WEIGHTS})


def test_a_direct_fit_with_sample_weight_works_with_routing_on_as_on_the_plain_model(routing,
                                                                                     sink):
    guarded = _guard(LogisticRegression(max_iter=300), sink).fit(X, Y, sample_weight=WEIGHTS)
    plain = LogisticRegression(max_iter=300).fit(X, Y, sample_weight=WEIGHTS)
    np.testing.assert_array_equal(guarded.coef_, plain.coef_)
