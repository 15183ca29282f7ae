"""The guarded scikit-learn meta-estimator (imports scikit-learn, so loaded on demand)."""

from __future__ import annotations

import copy
import warnings
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if

from aimsec_core.guard import Guard
from aimsec_core.guarded import GuardedMixin


def _inner_has(method: str) -> Any:
    return lambda self: hasattr(self.estimator, method)


class GuardedEstimator(GuardedMixin, BaseEstimator):
    """Wraps a scikit-learn estimator so its predict-like calls are screened and recorded."""

    def __init__(self, estimator: Any, *, name: str | None = None, mode: str | None = None,
                 constraints: Any = None, sinks: list[Any] | None = None) -> None:
        self.estimator = estimator
        self.name = name
        self.mode = mode
        self.constraints = constraints
        self.sinks = sinks

    @property
    def __aimsec_guard__(self) -> Guard:
        guard = self.__dict__.get("_aimsec_guard")
        if guard is None or guard.model is not self.estimator:
            from . import SklearnAdapter

            guard = Guard(self.estimator, SklearnAdapter(self.estimator), name=self.name,
                          mode=self.mode, constraints=self.constraints, sinks=self.sinks,
                          calibration=self.__dict__.pop("_aimsec_calibration", None))
            self._aimsec_guard = guard
        return guard

    def _screened(self, method: str, X: Any, *args: Any, **kwargs: Any) -> Any:
        return self.__aimsec_guard__.call(
            {"X": X}, lambda: getattr(self.estimator, method)(X, *args, **kwargs))

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> GuardedEstimator:
        self.estimator.fit(X, y, **fit_params)
        previous = self.__dict__.get("_aimsec_guard")
        if previous is not None and previous.calibration is not None:
            warnings.warn("refitting the model discards its detector calibration (it described "
                          "the old model); call calibrate(x_clean) again", stacklevel=2)
        self._aimsec_guard = None  # the declared input shape may have changed
        return self

    @available_if(_inner_has("predict"))
    def predict(self, X: Any, **kwargs: Any) -> Any:
        return self._screened("predict", X, **kwargs)

    @available_if(_inner_has("predict_proba"))
    def predict_proba(self, X: Any, **kwargs: Any) -> Any:
        return self._screened("predict_proba", X, **kwargs)

    @available_if(_inner_has("predict_log_proba"))
    def predict_log_proba(self, X: Any, **kwargs: Any) -> Any:
        return self._screened("predict_log_proba", X, **kwargs)

    @available_if(_inner_has("decision_function"))
    def decision_function(self, X: Any, **kwargs: Any) -> Any:
        return self._screened("decision_function", X, **kwargs)

    @available_if(_inner_has("score"))
    def score(self, X: Any, y: Any = None, **kwargs: Any) -> Any:
        return self._screened("score", X, y, **kwargs)

    def __sklearn_tags__(self) -> Any:
        return copy.deepcopy(get_tags(self.estimator))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self.estimator, "n_features_in_") or hasattr(self.estimator, "classes_")

    def __getattr__(self, name: str) -> Any:
        # Fitted attributes (classes_, n_features_in_, coef_ ...) read through to the model.
        if name.endswith("_") and not name.startswith("__") and "estimator" in self.__dict__:
            return getattr(self.__dict__["estimator"], name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        guard = state.pop("_aimsec_guard", None)  # rebuilt on first use; its sinks hold files
        if guard is not None and guard.calibration is not None:
            state["_aimsec_calibration"] = guard.calibration  # plain arrays: it travels
        return state
