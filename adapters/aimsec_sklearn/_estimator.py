"""The guarded scikit-learn meta-estimator (imports scikit-learn, so loaded on demand)."""

from __future__ import annotations

import copy
import inspect
import sys
import threading
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if

from aimsec_core.call_arguments import unfit_finding
from aimsec_core.forks import renew_after_fork
from aimsec_core.guard import SETTINGS, Guard
from aimsec_core.guarded import GuardedMixin


def _inner_has(method: str) -> Any:
    def check(self: GuardedEstimator) -> bool:
        state = self.__dict__
        return hasattr(state["estimator_"] if "estimator_" in state else state.get("estimator"),
                       method)
    return check


def _screened_method(method: str, doc: str) -> Any:
    """A method that screens ``X`` and runs the fitted estimator's method of that name."""

    def call(self: GuardedEstimator, X: Any, *args: Any, **kwargs: Any) -> Any:
        return self._screened(method, X, *args, **kwargs)

    call.__name__ = call.__qualname__ = method
    call.__doc__ = doc
    return available_if(_inner_has(method))(call)


#: Pipeline methods that, with metadata routing off, hand their ``**params`` to the last
#: step's method as they are; the others (``decision_function``, ``transform``…) then
#: raise scikit-learn's ValueError for any, and ``score`` hands on ``y`` and
#: ``sample_weight`` (:func:`_forwarded`)
_HANDED_ON = frozenset({"predict", "predict_proba", "predict_log_proba"})
_REFUSED = "refused"  #: :func:`_forwarded`: the meta-estimator raises for the keywords


def _unfit(method: str, run: Any, X: Any, args: tuple[Any, ...],
           kwargs: dict[str, Any], label: str | None = None) -> tuple[Any, ...]:
    """The finding refusing a call whose arguments do not fit the estimator's method
    (``predict(X, 5)``, an unknown keyword), checked with ``X`` so the call's one audit
    line holds both; none where they fit or the method has no signature to read. A
    meta-estimator's arguments are checked again as it hands them on (a Pipeline to its
    last step, nested pipelines down to the last estimator; :func:`_forwarded`);
    ``label`` names the method in the finding (``method`` itself by default)."""
    shown = label or method
    try:
        signature = inspect.signature(run)
    except (TypeError, ValueError):
        return ()
    try:
        bound = signature.bind(X, *args, **kwargs)
    except TypeError as exc:
        return (unfit_finding(shown, str(exc)),)
    forwarded = _forwarded(run, method, bound)
    if forwarded is None:
        return ()
    owner = type(run.__self__).__name__
    if forwarded == _REFUSED:
        return (unfit_finding(shown, f"{owner} takes keyword arguments of {method} only "
                              "with scikit-learn's metadata routing on "
                              "(sklearn.set_config(enable_metadata_routing=True))"),)
    inner, role, inner_args, inner_kwargs = forwarded
    step = getattr(inner, method, None)
    if not inner_args and not inner_kwargs or getattr(step, "__self__", None) is not inner:
        return ()
    return _unfit(method, step, X, inner_args, inner_kwargs,
                  label=f"{label or f'{method} of {owner}'}'s {role} {type(inner).__name__}")


def _forwarded(run: Any, method: str, bound: inspect.BoundArguments) -> Any:
    """What the meta-estimator the bound method ``run`` belongs to does with the call's
    arguments (``bound``) while scikit-learn's metadata routing is off: ``None`` when
    nothing is known to check (not such a meta-estimator, or routing on: scikit-learn
    then checks them itself), :data:`_REFUSED` when it raises scikit-learn's ValueError
    for the keywords given, else the estimator it hands them to, how to name it, and the
    positional arguments after ``X`` and the keywords it hands on."""
    from sklearn import get_config
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.model_selection._search import BaseSearchCV  # every search
    from sklearn.pipeline import Pipeline

    owner = getattr(run, "__self__", None)
    if owner is None or get_config().get("enable_metadata_routing", False):
        return None
    params: dict[str, Any] = {}
    for name, parameter in bound.signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            params = dict(bound.arguments.get(name, {}))
    if isinstance(owner, Pipeline):
        last = owner.steps[-1][1] if owner.steps else None
        if last is None or isinstance(last, str):  # 'passthrough'
            return None
        if method == "score":  # y, and sample_weight when given; the rest it drops
            weight = bound.arguments.get("sample_weight")
            if weight is not None:
                params["sample_weight"] = weight
            return last, "last step", (bound.arguments.get("y"),), params
        if method in _HANDED_ON:
            return last, "last step", (), params
    elif isinstance(owner, TransformedTargetRegressor) and method == "predict":
        regressor = getattr(owner, "regressor_", None)
        return None if regressor is None else (regressor, "regressor", (), params)
    elif not isinstance(owner, BaseSearchCV):  # its score raises for any keyword
        return None
    return _REFUSED if params else None


class GuardedEstimator(GuardedMixin, BaseEstimator):
    """Wraps a scikit-learn estimator so its predict-like calls are screened and recorded.

    The guard lives in a slot, outside ``__dict__`` (scikit-learn checks that predicting
    leaves ``__dict__`` unchanged), and screens the fitted estimator: ``estimator_`` after
    ``fit``, else ``estimator`` (a model guarded already trained). Copies keep the whole
    guard (:meth:`aimsec_core.guard.Guard.__getstate__`): a pickle or ``deepcopy`` carries
    its calibration, monitoring policy, ``on_flagged``, clock and sinks; ``clone`` and
    ``fit`` keep all of it but the calibration, which described the model before it.
    """

    __slots__ = ("_aimsec_guard",)

    def __init__(self, estimator: Any, *, name: str | None = None, mode: str | None = None,
                 constraints: Any = None, sinks: list[Any] | None = None) -> None:
        self.estimator = estimator
        self.name = name
        self.mode = mode
        self.constraints = constraints
        self.sinks = sinks

    @property
    def _fitted(self) -> Any:
        return self.__dict__.get("estimator_", self.__dict__.get("estimator"))

    @property
    def __aimsec_guard__(self) -> Guard:
        guard = getattr(self, "_aimsec_guard", None)
        model = self._fitted
        if guard is not None and guard.model is model:
            return guard
        with _BUILDING:  # first calls racing in several threads build one guard
            guard = getattr(self, "_aimsec_guard", None)
            if guard is None:  # built from the parameters (the constructor, set_params)
                from . import SklearnAdapter

                guard = Guard(model, SklearnAdapter(model), name=self.name, mode=self.mode,
                              constraints=self.constraints, sinks=self.sinks)
            elif guard.model is not model:  # refitted: same guard, no calibration
                guard = guard.refitted(model)
            self._aimsec_guard = guard
        return guard

    def __setattr__(self, name: str, value: Any) -> None:
        """A guard setting (``name``, ``mode``, ``constraints``, ``sinks``) changed once the
        guard exists (``set_params``, a grid search over them) is the guard's from the next
        call on: the guard is built again with it, keeping its calibration, monitoring
        policy and store, ``on_flagged`` and clock. An invalid setting raises the guard's
        ``ConfigurationError`` and changes nothing."""
        if name not in SETTINGS:
            super().__setattr__(name, value)
            return
        # two settings changed at once in two threads, or one changed while the first
        # call builds the guard: each sees the other's
        with _BUILDING:
            guard = getattr(self, "_aimsec_guard", None)
            if guard is not None:
                settings = {key: self.__dict__.get(key) for key in SETTINGS}
                settings[name] = value
                self._aimsec_guard = guard.with_settings(**settings)
            super().__setattr__(name, value)

    def _screened(self, method: str, X: Any, *args: Any, **kwargs: Any) -> Any:
        guard = self.__aimsec_guard__
        if type(X) is not np.ndarray or X.dtype.kind == "O":  # plain numeric arrays as they are
            X = guard.adapter.model_input(X)  # type: ignore[attr-defined]
        model_method = getattr(guard.model, method)
        refusals = _unfit(method, model_method, X, args, kwargs) if args or kwargs else ()

        def run(rebuilt: dict[str, Any]) -> Any:
            # a numpy X as the copy the core checked; anything else as given (a nested
            # list too: an estimator fitted on float32 reads a list as float32, where the
            # array the core reads from it is float64)
            checked = rebuilt.get("X", X) if isinstance(X, np.ndarray) else X
            return model_method(checked, *args, **kwargs)

        return guard.call({"X": X}, run, rebuilt=True, refusals=refusals)

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> GuardedEstimator:
        """Fit a clone of ``estimator`` into ``estimator_`` (training data is not screened).

        Where ``estimator`` has ``warm_start=True``, a copy of the fitted model (``estimator_``,
        else ``estimator`` itself) takes the estimator's current parameters and goes on
        training, as the plain estimator's own refit would (``n_estimators`` raised between
        fits adds trees); ``estimator`` is never fitted either way.
        """
        fitted = self._warm_started()
        fitted = (clone(self.estimator) if fitted is None else fitted).fit(X, y, **fit_params)
        previous = getattr(self, "_aimsec_guard", None)
        if previous is not None and previous.calibration is not None:
            warnings.warn("refitting the model discards its detector calibration (it described "
                          "the old model); call calibrate(x_clean) again", stacklevel=2)
        self.estimator_ = fitted  # the guard is rebuilt for it on the next call
        return self

    def _warm_started(self) -> Any:
        """A copy of the fitted model carrying ``estimator``'s parameters, or ``None`` where
        ``estimator`` does not warm start. The copy keeps its own random state objects:
        the plain model's refit draws on from where its last fit left them."""
        if not self.estimator.get_params(deep=False).get("warm_start"):
            return None
        model = copy.deepcopy(self._fitted)
        current = clone(self.estimator).get_params(deep=False)
        model.set_params(**{name: value for name, value in current.items()
                            if not isinstance(value, np.random.RandomState)})
        return model

    @available_if(_inner_has("partial_fit"))
    def partial_fit(self, X: Any, y: Any = None, *args: Any, **fit_params: Any
                    ) -> GuardedEstimator:
        """Train ``estimator_`` on one more batch (training data is not screened).

        The first call starts from a copy of ``estimator`` as it is, trained or not (the
        parameter is never changed); the next ones continue ``estimator_``. A detector
        calibration is dropped with a warning: it described the model before the update.
        """
        fitted = self.__dict__.get("estimator_")
        if fitted is None:
            fitted = copy.deepcopy(self.estimator)
        fitted.partial_fit(X, y, *args, **fit_params)
        guard = getattr(self, "_aimsec_guard", None)
        if (guard is not None and guard.calibration is not None
                and guard.model is self._fitted):  # after fit(), fit has warned already
            warnings.warn("training the model further discards its detector calibration "
                          "(it described the model before); call calibrate(x_clean) again",
                          stacklevel=2)
            self._aimsec_guard = guard.refitted(fitted)
        self.estimator_ = fitted  # a new model: the guard is rebuilt for it on the next call
        return self

    predict = _screened_method("predict", "Screened ``estimator.predict(X)``.")
    predict_proba = _screened_method("predict_proba", "Screened ``predict_proba(X)``.")
    predict_log_proba = _screened_method("predict_log_proba",
                                         "Screened ``predict_log_proba(X)``.")
    predict_joint_log_proba = _screened_method("predict_joint_log_proba",
                                               "Screened ``predict_joint_log_proba(X)``.")
    decision_function = _screened_method("decision_function",
                                         "Screened ``decision_function(X)``.")

    @available_if(_inner_has("score"))
    def score(self, X: Any, y: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Screened ``estimator.score(X, y, ...)`` (``X`` is screened; ``y`` and the rest,
        ``sample_weight`` by position or keyword, are the caller's)."""
        return self._screened("score", X, y, *args, **kwargs)

    score_samples = _screened_method("score_samples", "Screened ``score_samples(X)``.")
    transform = _screened_method("transform", "Screened ``transform(X)``.")
    staged_predict = _screened_method(
        "staged_predict", "Screened once for all stages; returns the estimator's generator.")
    staged_predict_proba = _screened_method(
        "staged_predict_proba", "Screened once for all stages; returns the generator.")
    staged_decision_function = _screened_method(
        "staged_decision_function", "Screened once for all stages; returns the generator.")

    @available_if(_inner_has("set_output"))
    def set_output(self, *, transform: str | None = None) -> GuardedEstimator:
        """scikit-learn's ``set_output``: the container ``transform`` returns ("default",
        "pandas", "polars"), set on ``estimator`` and on ``estimator_`` (clones keep it)."""
        for model in {id(m): m for m in (self.__dict__.get("estimator"),
                                         self.__dict__.get("estimator_")) if m is not None
                      }.values():
            model.set_output(transform=transform)
        return self

    @available_if(_inner_has("get_feature_names_out"))
    def get_feature_names_out(self, input_features: Any = None) -> Any:
        """The fitted model's output feature names (no data runs through it)."""
        return self._fitted.get_feature_names_out(input_features)

    def get_metadata_routing(self) -> Any:
        """The metadata ``estimator`` requests (``set_fit_request`` and the like): the guard
        hands every argument to the model as it receives it, so callers routing metadata
        (``cross_validate(..., params=...)``, a ``Pipeline``) see the model's requests."""
        return self.estimator.get_metadata_routing()

    def __sklearn_tags__(self) -> Any:
        return copy.deepcopy(get_tags(self._fitted))

    def __sklearn_is_fitted__(self) -> bool:
        model = self._fitted
        return hasattr(model, "n_features_in_") or hasattr(model, "classes_")

    def __getattr__(self, name: str) -> Any:
        # Fitted attributes (classes_, n_features_in_, coef_ ...) read through to the model.
        if name.endswith("_") and not name.startswith("__") and "estimator" in self.__dict__:
            return getattr(self._fitted, name)
        if name.startswith("set_") and name.endswith("_request") and "estimator" in self.__dict__:
            return self._request_setter(getattr(self.__dict__["estimator"], name))
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def _request_setter(self, setter: Any) -> Any:
        """``estimator``'s ``set_<method>_request``, returning the guarded estimator."""
        def request(**requests: Any) -> GuardedEstimator:
            setter(**requests)
            return self
        request.__name__ = request.__qualname__ = setter.__name__
        request.__doc__ = setter.__doc__
        return request

    def __sklearn_clone__(self) -> GuardedEstimator:
        """scikit-learn's clone (an unfitted copy with the same parameters) keeping the
        guard's policy, monitoring store, ``on_flagged``, clock and sinks."""
        twin = super().__sklearn_clone__()
        twin._aimsec_guard = self.__aimsec_guard__.rebound(twin._fitted)
        return twin

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_aimsec_guard"] = self.__aimsec_guard__  # the whole guard travels
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        guard = state.pop("_aimsec_guard", None)
        self.__dict__.update(state)
        self._aimsec_guard = guard  # restored with the estimator: nothing built lazily



#: Serialises building a guard on first use (cheap: taken only when one must be built).
_BUILDING = threading.Lock()
renew_after_fork(sys.modules[__name__], "_BUILDING")  # a child forked while it was held
