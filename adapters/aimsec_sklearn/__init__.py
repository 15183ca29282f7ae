"""scikit-learn adapter: a guarded model is a meta-estimator.

    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> import aimsec_core
    >>> X, y = load_digits(return_X_y=True)
    >>> model = LogisticRegression(max_iter=2000).fit(X / 16, y)
    >>> guarded = aimsec_core.guard(model, name="digits-logreg",
    ...                             constraints={"min_value": 0, "max_value": 1})
    >>> bool((guarded.predict(X[:5] / 16) == model.predict(X[:5] / 16)).all())
    True

``predict``, ``predict_proba``, ``predict_log_proba``, ``decision_function`` and ``score``
are guarded where the wrapped estimator has them; ``fit`` fits the wrapped estimator in
place (as ``Pipeline`` does with its steps). ``get_params``/``clone`` work, so the guarded
model goes into a ``Pipeline`` or ``cross_val_score`` unchanged.
"""

from __future__ import annotations

import sys
from typing import Any

from aimsec_core.adapter import Adapter, Capabilities
from aimsec_core.guard import Guard
from aimsec_core.signature import InputSpec

__all__ = ["SklearnAdapter"]


class SklearnAdapter(Adapter):
    framework = "sklearn"
    input_types = "an array-like of shape (n_samples, n_features)"
    capabilities = Capabilities(probabilities=True, signature=True, host_sequences=True)

    @classmethod
    def accepts(cls, model: Any) -> bool:
        base = sys.modules.get("sklearn.base")
        return (base is not None and isinstance(model, base.BaseEstimator)
                and hasattr(model, "predict"))

    def signature(self) -> list[InputSpec] | None:
        n_features = getattr(self.model, "n_features_in_", None)
        if n_features is None:
            return None
        return [InputSpec("X", None, (None, int(n_features)))]

    def native(self, value: Any) -> Any | None:
        import numpy as np

        if isinstance(value, np.ndarray):
            return value
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series)):
            return value.to_numpy()
        return None

    def parameters_digest(self) -> str | None:
        """SHA-256 over the estimator's parameters and fitted arrays (attributes ending in
        ``_``), nested estimators (Pipeline steps) included."""
        import hashlib

        digest = hashlib.sha256()
        _digest_estimator(self.model, digest, depth=0)
        return digest.hexdigest()[:32]

    def scores(self, x: Any) -> Any:
        if hasattr(self.model, "predict_proba"):
            return self.model.predict_proba(x)
        return self.model.decision_function(x)

    def wrap(self, guard: Guard) -> Any:
        from ._estimator import GuardedEstimator

        guarded = GuardedEstimator(guard.model, name=guard.name, mode=guard.mode,
                                   constraints=guard.constraints, sinks=guard.sinks)
        guarded._aimsec_guard = guard
        return guarded


def _digest_estimator(estimator: Any, digest: Any, depth: int) -> None:
    import numpy as np

    base = sys.modules["sklearn.base"]
    if depth > 8:  # nested meta-estimators deeper than this are not worth walking
        return
    digest.update(type(estimator).__qualname__.encode())
    for name in sorted(vars(estimator)):
        value = vars(estimator)[name]
        if isinstance(value, base.BaseEstimator):
            digest.update(name.encode())
            _digest_estimator(value, digest, depth + 1)
        elif isinstance(value, (list, tuple)) and any(
                isinstance(v, base.BaseEstimator) for v in _flat(value)):
            for item in _flat(value):
                if isinstance(item, base.BaseEstimator):
                    _digest_estimator(item, digest, depth + 1)
        elif name.endswith("_") and not name.startswith("_"):
            digest.update(name.encode())
            if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
                digest.update(np.ascontiguousarray(value).tobytes())
            elif isinstance(value, (list, tuple)) and all(
                    isinstance(v, np.ndarray) and v.dtype.kind in "biufc" for v in value):
                for v in value:  # MLP coefs_ / intercepts_
                    digest.update(np.ascontiguousarray(v).tobytes())
            else:
                digest.update(repr(value)[:10_000].encode())


def _flat(items: Any) -> list[Any]:
    out = []
    for item in items:
        out.extend(_flat(item) if isinstance(item, (list, tuple)) else [item])
    return out
