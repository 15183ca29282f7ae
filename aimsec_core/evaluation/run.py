"""The evaluation loop: per data set, train a model per framework, guard and calibrate it
on held-out clean data, attack it, and measure the guard on the test split."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import digits
from ..api import guard, guard_of
from ..errors import ConfigurationError
from . import standard
from .datasets import DATASETS, Dataset, load
from .measure import Row, Screened, measure, predict, screen

#: Test samples attacked with ``quick`` (the full test split otherwise).
QUICK_SAMPLES = 200
#: Data sets ``quick`` measures unless told otherwise.
QUICK_DATASETS = ["digits"]


@dataclass
class Target:
    """One guarded model under evaluation, with what its rows need."""

    framework: str
    model: Any
    guarded: Any
    correct: np.ndarray
    clean: Screened


def evaluate(frameworks: list[str] | None = None, *, datasets: list[str] | None = None,
             fpr: float = 0.05, quick: bool = False, seed: int = 0,
             detectors: list[str] | None = None, only_attacks: list[str] | None = None,
             reference: bool = True, architecture: str = "cnn", adaptive: bool = False,
             progress: Callable[[Row], Any] | None = None) -> list[Row]:
    """Rows for every data set (default: all of :data:`DATASETS`; digits alone with
    ``quick``), framework and attack.

    ``adaptive`` adds the attacks that know the detectors (``adaptive.py``), run against
    the torch model and transferred to the others. ``architecture`` picks the torch and
    Keras models on image data ("cnn" or "mlp"); tabular data always gets the MLP.

    Raises :class:`MissingExtraError` when one of ``frameworks`` is not installed, and
    :class:`ConfigurationError` when one of ``only_attacks`` starts the name of no
    standard attack these data sets run: both before any model is trained.
    """
    missing = sorted(set(frameworks or ()) - set(digits.available()))
    if missing:
        raise digits.not_installed(missing)
    names = dict.fromkeys(datasets or (QUICK_DATASETS if quick else list(DATASETS)))
    loaded = [load(name, seed) for name in names]  # a data set named twice runs once
    _check_attacks(loaded, frameworks, quick, only_attacks)
    rows: list[Row] = []
    for dataset in loaded:
        rows += _evaluate(dataset, frameworks, fpr=fpr, quick=quick, seed=seed,
                          detectors=detectors, only_attacks=only_attacks,
                          reference=reference, architecture=architecture,
                          adaptive=adaptive, progress=progress)
    return rows


def _selected(name: str, only_attacks: list[str] | None) -> bool:
    """Whether the standard attack ``name`` runs: no ``only_attacks``, or it starts with one."""
    return not only_attacks or any(name.startswith(o) for o in only_attacks)


def _black_box(dataset: Dataset, frameworks: list[str] | None, quick: bool) -> str | None:
    """The black-box attack's row name where it runs (tabular data, not ``quick``, a
    scikit-learn or ONNX model among the frameworks), else None."""
    if dataset.image_shape is not None or quick or not {"sklearn", "onnx"} & set(
            _frameworks(frameworks)):
        return None
    return f"HopSkipJump eps={dataset.epsilons[0]}"


def _check_attacks(loaded: list[Dataset], frameworks: list[str] | None, quick: bool,
                   only_attacks: list[str] | None) -> None:
    """Refuse an entry of ``only_attacks`` that selects no standard attack on any of the
    ``loaded`` data sets (the run would train every model and measure nothing)."""
    names = [n for d in loaded for n in (*standard.attacks(quick, None, d.epsilons),
                                         _black_box(d, frameworks, quick)) if n]
    for wanted in only_attacks or ():
        if not any(n.startswith(wanted) for n in names):
            raise ConfigurationError(
                f"attack {wanted!r} starts the name of none of the attacks run here; "
                f"expected the start of one of: {', '.join(dict.fromkeys(names))}")


def _frameworks(frameworks: list[str] | None) -> list[str]:
    """The frameworks evaluated, in order: torch first (its examples are transferred to
    scikit-learn and ONNX, and it is the adaptive attacks' target; it always runs), then
    the other framework ART can attack directly."""
    order = ("torch", "keras", "sklearn", "onnx")
    return [f for f in order if f in (frameworks or digits.available()) or f == "torch"]


def _models(dataset: Dataset, frameworks: list[str] | None, seed: int,
            architecture: str) -> dict[str, Any]:
    chosen = _frameworks(frameworks)
    arch = architecture if dataset.image_shape else "mlp"
    models = {f: digits.build(f, dataset.split, seed, arch) for f in chosen if f != "onnx"}
    if "onnx" in chosen:
        models["onnx"] = digits.onnx_session(dataset.split, seed, models.get("sklearn"))
    return models


def _target(dataset: Dataset, framework: str, model: Any, x: np.ndarray, y: np.ndarray, *,
            fpr: float, seed: int, detectors: list[str] | None, reference: bool) -> Target:
    split = dataset.split
    # detection alone: no request monitoring (it would open AIMSEC_STORE_URL's store)
    guarded = guard(model, name=f"eval-{dataset.name}-{framework}", mode="monitor", sinks=[],
                    policy=False,
                    constraints=digits.constraints(framework,
                                                   sample_shape=dataset.sample_shape)
                    if framework == "torch" else digits.constraints(framework))
    usable = None if detectors is None else _usable(
        detectors, guard_of(guarded).adapter.capabilities.gradients)

    def model_input(values: np.ndarray) -> Any:
        return digits.as_model_input(framework, values, dataset.sample_shape)

    with warnings.catch_warnings():  # small calibration splits: each row shows the interval
        warnings.filterwarnings("ignore", "calibrated on", UserWarning)
        guarded.calibrate(model_input(split.x_calibration), fpr=fpr, detectors=usable,
                          image_shape=dataset.image_shape, seed=seed,
                          reference=model_input(split.x_train) if reference else None)
    return Target(framework, model, guarded, predict(framework, model, dataset, x) == y,
                  screen(guarded, framework, dataset, x))


def _usable(detectors: list[str], gradients: bool) -> list[str]:
    """``detectors`` as a model without autograd can run them: those that need the input
    gradient give way to the margin, once, as in the default set."""
    from ..detection import CONFIDENCE_WITHOUT_GRADIENTS, DETECTORS

    if gradients:
        return list(detectors)
    usable: list[str] = []
    for name in detectors:
        kind = DETECTORS.get(name)
        if kind is not None and kind.needs_gradient:
            name = CONFIDENCE_WITHOUT_GRADIENTS
        if name not in usable:
            usable.append(name)
    return usable


def _evaluate(dataset: Dataset, frameworks: list[str] | None, *, fpr: float, quick: bool,
              seed: int, detectors: list[str] | None, only_attacks: list[str] | None,
              reference: bool, architecture: str, adaptive: bool,
              progress: Callable[[Row], Any] | None) -> list[Row]:
    x, y = dataset.split.x_test, dataset.split.y_test
    if quick and len(x) > QUICK_SAMPLES:
        keep = np.random.default_rng(seed).choice(len(x), QUICK_SAMPLES, replace=False)
        x, y = x[np.sort(keep)], y[np.sort(keep)]
    targets = [_target(dataset, f, m, x, y, fpr=fpr, seed=seed, detectors=detectors,
                       reference=reference)
               for f, m in _models(dataset, frameworks, seed, architecture).items()]
    rows: list[Row] = []

    def add(target: Target, attack: str, kind: str, x_adv: np.ndarray, started: float) -> None:
        rows.append(measure(dataset, target.framework, attack, kind, target.guarded,
                            target.model, x_adv, y, target.correct, target.clean,
                            time.perf_counter() - started))
        if progress is not None:
            progress(rows[-1])

    transferred: dict[str, np.ndarray] = {}
    for name, make in standard.attacks(quick, only_attacks, dataset.epsilons).items():
        for target in targets:
            started = time.perf_counter()
            if target.framework in ("torch", "keras"):
                estimator = standard.art_estimator(target.framework, target.model, dataset)
                x_adv = make(estimator).generate(np.asarray(digits.as_model_input(
                    target.framework, x, dataset.sample_shape))).reshape(len(x), -1)
                x_adv = x_adv.astype(np.float32)
                if target.framework == "torch":
                    transferred[name] = x_adv
            elif name in transferred:
                x_adv = transferred[name]
            else:
                continue
            add(target, name + (" (transfer)" if target.framework in ("sklearn", "onnx")
                                else ""), "standard", x_adv, started)
    black_box = _black_box(dataset, frameworks, quick)
    if black_box is not None and _selected(black_box, only_attacks):
        for target in targets:
            if target.framework not in ("sklearn", "onnx"):
                continue
            started = time.perf_counter()
            subset = np.zeros(len(x), dtype=bool)
            subset[:standard.BLACK_BOX_SAMPLES] = True
            x_adv = x.copy()  # samples outside the subset stay clean: never counted
            x_adv[subset] = standard.black_box(
                _scores_of(target, dataset), dataset, x[subset], dataset.epsilons[0], seed)
            add(target, black_box, "standard", x_adv, started)
            rows[-1].attempted = int((target.correct & subset).sum())
            rows[-1].success_rate = rows[-1].successful / max(rows[-1].attempted, 1)
    if adaptive:
        from . import adaptive as adaptive_attacks

        source = targets[0]
        for name, attack in adaptive_attacks.attacks(dataset, quick, seed).items():
            started = time.perf_counter()
            x_adv = attack(source.model, guard_of(source.guarded).calibration, x, y)
            for target in targets:  # transfers: their own screening time only
                add(target, name + ("" if target is source else " (transfer)"), "adaptive",
                    x_adv, started if target is source else time.perf_counter())
    return rows


def _scores_of(target: Target, dataset: Dataset) -> Callable[[np.ndarray], np.ndarray]:
    """Class probabilities of the plain model, as ART's black-box classifier reads them."""
    def scores(values: np.ndarray) -> np.ndarray:
        values = values.astype(np.float32)
        if target.framework == "onnx":
            return np.asarray(digits.caller("onnx")(target.model, values)[1])
        return np.asarray(target.model.predict_proba(values))
    return scores
