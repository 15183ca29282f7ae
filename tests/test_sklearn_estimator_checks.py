"""scikit-learn's own estimator checks, run on guarded estimators.

``parametrize_with_checks`` is how scikit-learn itself decides whether an object is an
estimator: fitting never changes parameters, predicting never changes ``__dict__``, sparse,
object-dtype, list and NaN input behave as the tags say, and errors for NaN/inf, feature
counts and 1-D input use scikit-learn's wording. Every check passes on the four guarded
models below (a linear model, a tree that handles NaN, a pipeline and an incremental
learner, whose ``partial_fit`` the checks exercise too); none is marked as an expected
failure. The guard is in enforce mode with no constraints, so these are the
checks of what the wrapped estimator accepts.
"""

from __future__ import annotations

from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

import aimsec_core


def _guarded(estimator, name):
    return aimsec_core.guard(estimator, name=name, mode="enforce", sinks=[])


GUARDED = [
    _guarded(LogisticRegression(), "linear"),
    _guarded(DecisionTreeClassifier(random_state=0), "tree"),
    _guarded(make_pipeline(StandardScaler(), LogisticRegression()), "pipeline"),
    _guarded(SGDClassifier(random_state=0), "incremental"),
]


@parametrize_with_checks(GUARDED, expected_failed_checks=lambda estimator: {})
def test_guarded_estimators_pass_scikit_learns_checks(estimator, check):
    check(estimator)
