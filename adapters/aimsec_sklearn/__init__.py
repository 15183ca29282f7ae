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

Every way to run the model through the guarded object is screened (one record, one
verdict per call): ``predict``, ``predict_proba``, ``predict_log_proba``,
``predict_joint_log_proba``, ``decision_function``, ``score``, ``score_samples``,
``transform`` and ``staged_predict``/``staged_predict_proba``/``staged_decision_function``,
each where the wrapped estimator has it. ``fit`` fits a clone of the estimator into
``estimator_`` (scikit-learn's rule for meta-estimators: parameters are never changed) and
the guard then screens calls to that fitted clone (``partial_fit`` trains ``estimator_``
further, starting from a copy of the estimator as guarded); ``fit_predict`` and ``fit_transform``
are not offered (call ``fit``, then the screened method); with ``warm_start=True``, ``fit``
trains a copy of the fitted model on, as the plain estimator's refit would.
``get_params``/``clone``, ``set_output``, ``get_feature_names_out`` and metadata routing
(the model's own requests) work, so the guarded model goes into a ``Pipeline`` or
``cross_val_score`` unchanged. ``estimator``,
``estimator_`` and fitted attributes such as ``tree_`` are the plain model's own parts:
calls made on them directly are not screened.

``X`` may be anything the estimator takes (see ``_inputs`` and ``_spec``): numpy arrays of
numbers or booleans, nested lists, objects with ``__array__``, pandas DataFrames (handed
over unchanged, feature names included), scipy sparse matrices where the estimator's tags
say ``sparse`` (checked on their stored values, never densified), strings and categories
where the estimators reading ``X`` first say ``string`` or ``categorical``, and NaN where
every part of the model says ``allow_nan``. A numpy ``X`` is handed to the estimator as
the copy the guard checked, taken at the check, so another thread writing into the
caller's array meanwhile changes nothing the estimator reads; DataFrames, sparse matrices
and nested lists are handed over as given (an estimator fitted on float32 reads a list as
float32, not as the float64 array the guard reads from it).
"""

from __future__ import annotations

import sys
from typing import Any

from aimsec_core.adapter import Adapter, Capabilities, host_snapshot
from aimsec_core.guard import Guard
from aimsec_core.signature import InputSpec

from . import _inputs
from ._spec import input_spec, label_selection, object_columns, selects_by_name

__all__ = ["SklearnAdapter"]


class SklearnAdapter(Adapter):
    framework = "sklearn"
    requires = ("sklearn",)
    input_types = "an array-like of shape (n_samples, n_features)"
    capabilities = Capabilities(probabilities=True, signature=True, host_sequences=True)
    closed_signature = True  # the estimator takes X and nothing else

    @classmethod
    def accepts(cls, model: Any) -> bool:
        base = sys.modules.get("sklearn.base")
        return (base is not None and isinstance(model, base.BaseEstimator)
                and hasattr(model, "predict"))

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        self.spec = input_spec(model)
        self.by_name = selects_by_name(model)
        self.selection = label_selection(model)
        self.objects = object_columns(model) if self.spec.accepts_strings else frozenset()

    def signature(self) -> list[InputSpec] | None:
        return [self.spec]

    def model_input(self, value: Any) -> Any:
        """What the estimator is handed for ``value`` (see ``_inputs.model_input``)."""
        return _inputs.model_input(value, self.spec.accepts_strings)

    def declared_elements(self, value: Any) -> int | None:
        return _inputs.declared_elements(value)

    def native(self, value: Any) -> Any | None:
        return _inputs.read(value, self.spec.accepts_strings,
                            getattr(self.model, "feature_names_in_", None),
                            self.spec.numeric_columns, self.by_name,
                            self.spec.string_columns, self.objects, self.selection)

    def snapshot(self, value: Any, array: Any) -> Any | None:
        """A numpy ``X`` as a copy (the estimator is handed it, see ``Adapter.snapshot``);
        ``None`` for DataFrames, sparse matrices and the rest, handed over as they are."""
        return host_snapshot(value, array)

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
        if hasattr(self.model, "decision_function"):
            return self.model.decision_function(x)
        raise NotImplementedError(  # a regressor, a clusterer: no classes to score
            f"{type(self.model).__name__} gives no class scores (it has neither "
            "predict_proba nor decision_function), which the detectors read; only "
            "classifiers can be calibrated")

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
