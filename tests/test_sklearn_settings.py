"""The guard's settings are estimator parameters: ``set_params`` (and a grid search over
them) changes what the guard does, not only what ``get_params`` reports."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV

import aimsec_core
from aimsec_core import ConfigurationError, ValueRangeError
from tests.cases import digits
from tests.conftest import ListSink

X, Y = digits()
X = X.reshape(len(X), -1)[:300].astype(np.float64)
Y = Y[:300]


@pytest.fixture(scope="module")
def fitted():
    return LogisticRegression(max_iter=300).fit(X, Y)


def _guard(model, sink, **settings):
    return aimsec_core.guard(model, name="settings", sinks=[sink],
                             constraints={"min_value": 0.0, "max_value": 1.0}, **settings)


def test_set_params_mode_after_calls_changes_the_guards_mode(fitted, sink):
    guarded = _guard(fitted, sink)
    guarded.predict(X[:2])  # the guard is built and in use
    assert guarded.set_params(mode="monitor") is guarded
    assert guarded.__aimsec_guard__.mode == "monitor" == guarded.get_params()["mode"]
    guarded.predict(X[:2] + 5)  # out of range: recorded, not refused, in monitor mode
    assert sink.events[-1].outcome != "rejected"


def test_set_params_constraints_after_calls_are_enforced(fitted, sink):
    guarded = _guard(fitted, sink)
    guarded.predict(X[:2])
    guarded.set_params(constraints={"min_value": 0.0, "max_value": 0.5})
    with pytest.raises(ValueRangeError):
        guarded.predict(X[:2])


def test_set_params_name_and_sinks_reach_the_audit_records(fitted, sink):
    guarded = _guard(fitted, sink)
    guarded.predict(X[:2])
    other = ListSink()
    guarded.set_params(name="renamed", sinks=[other])
    guarded.predict(X[:2])
    assert len(sink.events) == 1 and len(other.events) == 1
    assert other.events[0].verdict.model == "renamed"


def test_set_params_keeps_the_calibration_when_only_settings_change(fitted, sink):
    guarded = _guard(fitted, sink)
    guarded.calibrate(X[:200])
    calibration = guarded.__aimsec_guard__.calibration
    guarded.set_params(mode="monitor")
    assert guarded.__aimsec_guard__.calibration is calibration


def test_an_invalid_setting_is_refused_and_leaves_the_guard_as_it_was(fitted, sink):
    guarded = _guard(fitted, sink)
    guarded.predict(X[:2])
    with pytest.raises(ConfigurationError):
        guarded.set_params(mode="sometimes")
    assert guarded.get_params()["mode"] == "enforce" == guarded.__aimsec_guard__.mode


def test_a_grid_search_over_the_guards_constraints_uses_each_setting(sink):
    base = _guard(LogisticRegression(max_iter=300), sink)
    clone(base).fit(X, Y).predict(X[:2])  # a clone whose guard exists before set_params
    search = GridSearchCV(base, {"constraints": [{"min_value": 0.0, "max_value": 0.5}]},
                          cv=2, error_score="raise")
    with pytest.raises(ValueRangeError):
        search.fit(X, Y)


def test_with_settings_takes_only_the_guard_settings():
    guard = aimsec_core.guard_of(aimsec_core.guard(LogisticRegression(), sinks=[]))
    with pytest.raises(ConfigurationError, match="with_settings takes"):
        guard.with_settings(policy=False)  # not a setting it changes
    assert guard.with_settings(mode="monitor").mode == "monitor"
    assert guard.mode == "enforce"  # the original guard is left as it was


def test_per_input_constraints_for_an_input_the_estimator_does_not_take_are_refused(
        fitted, sink):
    # a misspelt name ("x" for "X") was accepted and never applied: every value passed
    good = _guard(fitted, sink)
    bounded = {"inputs": {"X": {"min_value": 0.0, "max_value": 1.0}}}
    assert aimsec_core.guard(fitted, sinks=[sink], constraints=bounded)
    typo = {"inputs": {"x": {"min_value": 0.0, "max_value": 1.0}}}
    with pytest.raises(ConfigurationError, match=r"names \['x'\], which the model does not "
                                                 r"take; expected names among its inputs \['X'\]"):
        aimsec_core.guard(fitted, sinks=[sink], constraints=typo)
    with pytest.raises(ConfigurationError, match="which the model does not take"):
        good.set_params(constraints=typo)
        good.predict(X[:2])
