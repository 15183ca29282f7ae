"""Every way to run a scikit-learn model through its guarded object, and what happens.

Screened (one record and a verdict per call; invalid input refused with a typed error
before the model runs):

- ``predict``, ``predict_proba``, ``predict_log_proba``, ``decision_function``, ``score``
  (a linear classifier);
- ``predict_joint_log_proba`` (naive Bayes);
- ``score_samples`` and ``decision_function`` (an isolation forest);
- ``transform`` (k-means);
- ``staged_predict``, ``staged_predict_proba``, ``staged_decision_function`` (gradient
  boosting: screened once when called, the estimator's generator returned);
- the guarded model as a ``Pipeline`` step, in ``cross_val_score`` (clone, fit, score),
  after ``clone``/``fit`` and after a pickle round trip.

Unavailable (``AttributeError``, as scikit-learn's ``available_if`` answers): a method
the wrapped estimator lacks, and ``fit_predict``/``fit_transform``, ``apply``,
``decision_path`` (call ``fit`` and then a screened method).

The plain model's own parts, by design and documented: ``guarded.estimator``,
``guarded.estimator_`` and fitted attributes (``tree_``, ``estimators_``); a call made on
them directly is not screened.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.ensemble import GradientBoostingClassifier, IsolationForest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import aimsec_core
from tests.cases import digits

X, Y = digits()
X, Y = X[:240].astype(np.float64), Y[:240]
BAD = X[:3].copy()
BAD[1, 7] = np.inf  # refused for every model, NaN-tolerant ones included

MODELS = {
    "linear": lambda: LogisticRegression(max_iter=200).fit(X, Y),
    "bayes": lambda: GaussianNB().fit(X, Y),
    "iforest": lambda: IsolationForest(n_estimators=5, random_state=0).fit(X),
    "kmeans": lambda: KMeans(n_clusters=3, n_init=1, random_state=0).fit(X),
    "boosting": lambda: GradientBoostingClassifier(n_estimators=3, random_state=0).fit(X, Y),
}
PATHS = [
    ("linear", "predict"), ("linear", "predict_proba"), ("linear", "predict_log_proba"),
    ("linear", "decision_function"), ("linear", "score"),
    ("bayes", "predict_joint_log_proba"),
    ("iforest", "score_samples"), ("iforest", "decision_function"), ("iforest", "predict"),
    ("kmeans", "transform"), ("kmeans", "predict"),
    ("boosting", "staged_predict"), ("boosting", "staged_predict_proba"),
    ("boosting", "staged_decision_function"),
]


@pytest.fixture(scope="module")
def models():
    return {name: build() for name, build in MODELS.items()}


def _run(target, method, x):
    args = (Y[: len(x)],) if method == "score" else ()
    out = getattr(target, method)(x, *args)
    return list(out) if method.startswith("staged_") else out


@pytest.mark.parametrize(("model", "method"), PATHS, ids=[f"{m}.{p}" for m, p in PATHS])
def test_every_method_is_screened_once_and_refuses_invalid_input(model, method, models, sink):
    plain = models[model]
    guarded = aimsec_core.guard(plain, sinks=[sink])
    out = _run(guarded, method, X[:5])
    np.testing.assert_array_equal(np.asarray(out), np.asarray(_run(plain, method, X[:5])))
    assert sink.outcomes == ["allowed"]
    assert guarded.last_verdict.shape == (5, 64)
    with pytest.raises(aimsec_core.NonFiniteInputError, match="sample 1"):
        _run(guarded, method, BAD)
    assert sink.outcomes == ["allowed", "rejected"]


def test_a_pipeline_step_cross_validation_clone_and_pickle_all_go_through_the_guard(sink):
    guarded = aimsec_core.guard(LogisticRegression(max_iter=200), sinks=[sink])
    cross_val_score(guarded, X, Y, cv=3)
    assert sink.outcomes == ["allowed"] * 3  # one screened score per fold
    pipeline = make_pipeline(StandardScaler(), guarded).fit(X, Y)
    pipeline.predict(X[:4])
    assert sink.outcomes[-1] == "allowed" and len(sink.events) == 4
    with pytest.raises(aimsec_core.NonFiniteInputError, match="NaN"):
        pipeline.predict(np.where(np.isinf(BAD), np.nan, BAD))  # the scaler keeps NaN
    twin = clone(guarded).fit(X, Y)
    twin.predict(X[:2])
    restored = pickle.loads(pickle.dumps(twin))
    restored.sinks = None  # a pickled guard keeps its parameters; sinks are rebuilt
    restored.predict(X[:2])
    assert restored.last_verdict is not None and restored.last_verdict.allowed
    assert sink.outcomes[-1] == "allowed" and len(sink.events) == 6


@pytest.mark.parametrize("method", ["fit_predict", "fit_transform", "apply", "decision_path",
                                    "predict_proba"])
def test_other_ways_to_run_the_model_are_unavailable(method, models, sink):
    guarded = aimsec_core.guard(models["iforest"], sinks=[sink])  # has no predict_proba
    assert not hasattr(guarded, method)
    with pytest.raises(AttributeError):
        getattr(guarded, method)(X[:2])
    assert sink.events == []


def test_fit_changes_no_parameter_and_predict_no_attribute(sink):
    inner = LogisticRegression(max_iter=200)
    guarded = aimsec_core.guard(inner, sinks=[sink]).fit(X, Y)
    assert guarded.estimator is inner and not hasattr(inner, "coef_")  # fitted: a clone
    before = dict(guarded.__dict__)
    guarded.predict(X[:2])
    assert guarded.__dict__.keys() == before.keys()
    assert all(guarded.__dict__[k] is v for k, v in before.items())


#: A method's arguments after X given by position, as the plain estimator takes them.
POSITIONAL = [("linear", "score", (Y, np.linspace(0.1, 1, len(Y)))),
              ("kmeans", "score", (None, np.linspace(0.1, 1, len(Y)))),
              ("linear", "score", (Y,))]


@pytest.mark.parametrize(("model", "method", "args"), POSITIONAL,
                         ids=[f"{m}.{p}-{len(a)}" for m, p, a in POSITIONAL])
def test_arguments_after_x_given_by_position_run_as_on_the_plain_estimator(
        model, method, args, models, sink):
    """``score(X, y, sample_weight)`` by position is a call the plain estimator takes."""
    plain = models[model]
    guarded = aimsec_core.guard(plain, name="positional", sinks=[sink])
    assert getattr(guarded, method)(X, *args) == getattr(plain, method)(X, *args)
    assert sink.outcomes == ["allowed"]


def test_a_broadcast_x_is_copied_without_materializing_it(tmp_path, monkeypatch):
    """A numpy X broadcast from one row (np.broadcast_to, stride 0) was copied at its
    full size for the estimator; the copy is now the row, broadcast again, and the
    estimator answers as on the caller's array."""
    import numpy as np
    from sklearn.linear_model import LinearRegression

    import aimsec_core

    monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path))
    seen = []

    class Recording(LinearRegression):
        def predict(self, X):
            seen.append(X.strides)
            return super().predict(X)

    rng = np.random.default_rng(0)
    model = Recording().fit(rng.random((20, 3)), rng.random(20))
    X = np.broadcast_to(rng.random((1, 3)), (1000, 3))
    out = aimsec_core.guard(model, policy=False).predict(X)
    assert seen == [X.strides]  # (0, 8): the row broadcast, not 1000 rows
    np.testing.assert_array_equal(out, LinearRegression.predict(model, X))
