"""scikit-learn conventions: the guarded model is an estimator like any other."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import aimsec_core
from tests.cases import digits


@pytest.fixture(scope="module")
def data():
    x, y = digits()
    return x[:600], y[:600]


def test_get_params_and_clone_rebuild_an_equivalent_guard(data, sink):
    x, y = data
    guarded = aimsec_core.guard(LogisticRegression(max_iter=500), name="lr", sinks=[sink],
                                constraints={"max_value": 1.0})
    params = guarded.get_params()
    assert params["name"] == "lr" and params["constraints"].max_value == 1.0
    twin = clone(guarded).fit(x, y)
    assert twin.estimator is not guarded.estimator
    with pytest.raises(aimsec_core.ValueRangeError):
        twin.predict(x[:2] * 3)
    assert sink.outcomes == ["rejected"]  # the clone shares the original's sinks


def test_cross_val_score_and_pipeline_work_unchanged(data, sink):
    x, y = data
    guarded = aimsec_core.guard(LogisticRegression(max_iter=500), sinks=[sink])
    assert is_classifier(guarded)
    scores = cross_val_score(guarded, x, y, cv=3)
    plain = cross_val_score(LogisticRegression(max_iter=500), x, y, cv=3)
    np.testing.assert_allclose(scores, plain)
    pipeline = make_pipeline(StandardScaler(), guarded).fit(x, y)
    assert pipeline.score(x, y) > 0.9
    assert sink.outcomes.count("allowed") >= 4  # every scoring call went through the guard


def test_methods_exist_only_where_the_estimator_has_them(data, sink):
    x, y = data
    regressor = aimsec_core.guard(LinearRegression().fit(x, y.astype(float)), sinks=[sink])
    assert is_regressor(regressor)
    assert not hasattr(regressor, "predict_proba")
    classifier = aimsec_core.guard(LogisticRegression(max_iter=500).fit(x, y), sinks=[sink])
    np.testing.assert_array_equal(classifier.predict_proba(x[:3]),
                                  classifier.estimator.predict_proba(x[:3]))
    np.testing.assert_array_equal(classifier.classes_, np.arange(10))  # fitted attributes
    assert classifier.score(x, y) == classifier.estimator.score(x, y)


def test_fit_refreshes_the_declared_feature_count(sink):
    guarded = aimsec_core.guard(LogisticRegression(max_iter=200), sinks=[sink])
    guarded.fit(np.random.default_rng(0).random((20, 3)), np.arange(20) % 2)
    with pytest.raises(aimsec_core.InputFormatError, match=r"\(N, 3\)"):
        guarded.predict(np.zeros((1, 4)))


def test_python_lists_are_accepted_like_arrays(data, sink):
    x, y = data
    guarded = aimsec_core.guard(LogisticRegression(max_iter=500).fit(x, y), sinks=[sink])
    np.testing.assert_array_equal(guarded.predict(x[:4].tolist()), guarded.estimator.predict(x[:4]))


def test_pickling_keeps_the_calibration_and_refitting_warns(data, sink):
    import pickle

    x, y = data
    guarded = aimsec_core.guard(LogisticRegression(max_iter=500).fit(x, y), sinks=[sink],
                                mode="monitor", constraints={"min_value": 0.0, "max_value": 1.0})
    guarded.calibrate(x[:400])
    twin = pickle.loads(pickle.dumps(guarded))
    assert twin.__aimsec_guard__.calibration is not None
    twin.predict(x[400:410])
    assert "suspicion" in twin.last_verdict.scores
    with pytest.warns(UserWarning, match="discards its detector calibration"):
        guarded.fit(x, y)
    assert guarded.__aimsec_guard__.calibration is None
