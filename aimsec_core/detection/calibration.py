"""Calibrating a detector suite on clean data, and keeping the result in a file.

The file is one ``.npz`` (no pickle): the detectors' learned arrays plus a JSON document
with the data hash, sample counts, per-detector thresholds and the false-positive rate
achieved on the held-out clean data.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..adapter import Adapter, read_single_column
from ..arrays import content_hash, to_host
from ..batches import batched, fixed_batch
from ..errors import AimsecError, CalibrationError, ConfigurationError
from . import DETECTORS, build_detector, calibration_file
from .base import Detector, Probe, softmax_if_needed
from .coverage import fpr_interval
from .joined import JoinedInputs, model_passes
from .suite import DetectorSuite

FORMAT = calibration_file.FORMAT
CHUNK = 512


@dataclass
class Calibration:
    suite: DetectorSuite
    value_range: tuple[float, float]
    data_hash: str
    fit_samples: int
    threshold_samples: int
    achieved_fpr: float
    model: str
    framework: str
    created: str
    sample_shape: tuple[int, ...] = ()
    reference_samples: int = 0
    #: Clean samples given. Cross-fitted calibrations fit and threshold on all of them;
    #: files from before kept a fit half and a threshold half.
    samples: int = 0
    #: What the model looked like when calibrated (see ``model_fingerprint``); ``None`` in
    #: files from before fingerprints.
    model_fingerprint: str | None = None
    #: The model's single output column is read as a probability though the adapter saw
    #: no sigmoid: calibration found one applied inside the model (:func:`calibrate`).
    sigmoid_output: bool = False
    #: For a model of several inputs, each one's per-sample shape, in declared order (the
    #: detectors read them joined: ``sample_shape`` is the joined row's); empty for one.
    input_shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def fpr_interval(self) -> tuple[float, float]:
        """The central 95% interval of the false-positive rate on new clean data (like the
        calibration data), given how many of the calibration samples the threshold
        flagged: small calibration sets give wide intervals (``coverage.py``)."""
        n = self.samples or self.threshold_samples
        return fpr_interval(min(n - 1, round(self.achieved_fpr * n)), n)

    def summary(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "model": self.model, "framework": self.framework,
            "created": self.created, "data_hash": self.data_hash,
            "samples": self.samples or self.fit_samples + self.threshold_samples,
            "fit_samples": self.fit_samples, "threshold_samples": self.threshold_samples,
            "reference_samples": self.reference_samples,
            "achieved_fpr": self.achieved_fpr,
            "fpr_interval": [round(v, 6) for v in self.fpr_interval],
            "value_range": list(self.value_range),
            "sample_shape": list(self.sample_shape),
            "model_fingerprint": self.model_fingerprint,
            # only where set: the digests of calibrations that never needed it stay as they were
            **({"sigmoid_output": True} if self.sigmoid_output else {}),
            **({"input_shapes": [list(s) for s in self.input_shapes]}
               if self.input_shapes else {}),
            **self.suite.describe(),
        }

    @property
    def id(self) -> str:
        """A short digest naming this calibration (audit lines carry it)."""
        text = json.dumps({k: v for k, v in self.summary().items()}, sort_keys=True,
                          default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        """Write the calibration file at ``path`` (``.npz`` appended where the name ends
        otherwise: ``digits.v2`` is written as ``digits.v2.npz``, never over a
        ``digits.npz``); returns the path written. Raises :class:`ConfigurationError` for a
        path that is not text or a path object, :class:`CalibrationError` for a folder or
        where it cannot be written."""
        if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
            raise ConfigurationError(f"a calibration file's path must be a str or a path "
                                     f"object; received {type(path).__name__}")
        path = Path(path)
        if path.name and _is_folder(path):  # no name ("/"): refused by the writer
            raise CalibrationError(f"cannot write the calibration file {str(path)!r:.200}: "
                                   "it is a folder; expected a file path such as "
                                   f"{str(path / 'calibration.npz')!r:.200}")
        if path.suffix != ".npz" and path.name:
            path = path.with_name(path.name + ".npz")
        return calibration_file.write(path, self.summary(), self.arrays())

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays a file of this calibration holds, by member name."""
        arrays = {f"{d.name}.{key}": np.asarray(value)
                  for d in self.suite.detectors for key, value in d.state().items()
                  if value is not None}
        arrays.update({f"suite.{k}": v for k, v in self.suite.state().items()})
        return arrays

    def check_loadable(self) -> None:
        """``ValueError`` (or :class:`CalibrationError`) saying what a file of this
        calibration would be refused for when loaded: a calibration that works in memory
        must also survive :meth:`save` and :meth:`load`."""
        meta = self.summary()
        calibration_file.check_meta(meta)
        type(self)._restore(meta, self.arrays())

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a file written by :meth:`save`. The file is untrusted: anything malformed,
        oversized or out of range raises :class:`CalibrationError` (see
        ``calibration_file``)."""
        meta, arrays = calibration_file.read(path, _members)
        try:
            return cls._restore(meta, arrays)
        except CalibrationError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, ConfigurationError,
                np.linalg.LinAlgError) as exc:
            raise CalibrationError(f"calibration file {path} is incomplete or damaged: "
                                   f"{type(exc).__name__}: {exc}") from exc

    @classmethod
    def _restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Calibration:
        width = math.prod(meta["sample_shape"])
        detectors: list[Detector] = []
        for name, info in meta["detectors"].items():
            config = {k: (tuple(v) if isinstance(v, list) else v)
                      for k, v in info["config"].items()}
            detector = build_detector(name, **config)
            prefix = f"{name}."
            detector.load_state({k[len(prefix):]: v for k, v in arrays.items()
                                 if k.startswith(prefix)})
            detector.check_state(width)
            detectors.append(detector)
        suite = DetectorSuite(detectors, threshold=meta["threshold"],
                              fpr_target=meta["fpr_target"],
                              top=meta.get("top"))  # files without it summed every detector
        suite.load_state({k[len("suite."):]: v for k, v in arrays.items()
                          if k.startswith("suite.")},
                         {n: i["tail"] for n, i in meta["detectors"].items()})
        fingerprint = meta.get("model_fingerprint")
        return cls(suite, tuple(meta["value_range"]), meta["data_hash"], meta["fit_samples"],
                   meta["threshold_samples"], meta["achieved_fpr"], meta["model"],
                   meta["framework"], meta["created"], tuple(meta["sample_shape"]),
                   meta.get("reference_samples", 0), meta.get("samples", 0),
                   fingerprint if isinstance(fingerprint, str) else None,
                   meta.get("sigmoid_output", False),
                   tuple(tuple(s) for s in meta.get("input_shapes", ())))


def _members(meta: dict[str, Any]) -> list[str]:
    """The array members the metadata calls for: each known detector's state and its
    clean scores. Members of unknown detectors are never read (building them fails)."""
    names = []
    for name in meta["detectors"]:
        kind = DETECTORS.get(name)
        if kind is not None:
            names += [f"{name}.{key}" for key in kind.state_keys]
            names.append(f"suite.{name}.clean_scores")
    return names


def probe_for(adapter: Adapter, x: np.ndarray, need_gradient: bool,
              need_features: bool = False, layout: JoinedInputs | None = None) -> Probe:
    """Ask the model about ``x`` outside the guard, in chunks (in batches of the model's
    own size where it declares a fixed one: see :func:`~aimsec_core.batches.batched`).
    With ``layout``, ``x`` holds the joined rows of a model of several inputs."""
    batch = fixed_batch(adapter.signature())
    scores, input_gradient, features = model_passes(adapter, layout)
    ask = batched(lambda part: np.asarray(scores(part)), batch, CHUNK)
    ask_features = batched(lambda part: [np.asarray(layer) for layer in features(part)],
                           batch, CHUNK)
    probabilities = softmax_if_needed(ask(x))
    gradient = None
    if need_gradient:
        gradient = np.asarray(to_host(batched(input_gradient, batch, CHUNK)(
            x, probabilities.argmax(axis=1))))
    features = ask_features(x) if need_features else None
    return Probe(x, probabilities, ask, gradient, given_features=features,
                 ask_features=ask_features if adapter.capabilities.features else None)


def _probe_clean(adapter: Adapter, x: np.ndarray, what: str, need_gradient: bool,
                 need_features: bool, layout: JoinedInputs | None) -> Probe:
    """:func:`probe_for` on clean data ``what`` (``x_clean``, ``reference``). The model's
    own error on it (samples of a shape a model declaring none does not take: flat rows
    for a convolutional torch module) is a :class:`CalibrationError` naming the shape, the
    error as its cause; the adapter's ``NotImplementedError`` (what it cannot give the
    detectors) and aimsec's own errors go on as they are."""
    try:
        return probe_for(adapter, x, need_gradient, need_features, layout)
    except (AimsecError, NotImplementedError):
        raise
    except Exception as exc:
        raise CalibrationError(
            f"the model raised {type(exc).__name__} on {what}, samples of shape "
            f"{tuple(x.shape[1:])}: {str(exc)[:300]}; expected data the model takes, "
            "samples shaped as its calls' are") from exc


#: sigmoid(1): a probability read as a logit z gives class 1 the probability
#: sigmoid(z) <= sigmoid(1) (float32 rounding allowed for)
_SIGMOID_OF_ONE = 1.0 / (1.0 + math.exp(-1.0)) + 1e-6


def _hidden_sigmoid(adapter: Adapter, probe: Probe, suite: DetectorSuite,
                    layout: JoinedInputs | None) -> tuple[Probe, bool]:
    """The probe to calibrate on, and whether the model's single output column turned out
    to be a probability the adapter could not see (a sigmoid applied inside a torch
    ``forward``, a custom layer).

    Read as a logit ``z``, a sigmoid's output ``p`` lies in [0, 1]: every calibration
    sample then gets class 1 with ``z`` in [0, 1], which a logit model trained on two
    classes does not give. Where that happens, the column is read again as a probability;
    if that gives both classes the reading stays (with a warning saying so) and the
    calibration records it, so the guard reads every later call the same way."""
    p = probe.probabilities
    if (adapter.sigmoid_output or p.ndim != 2 or p.shape[1] != 2 or not len(p)
            or not np.all((p[:, 1] >= 0.5) & (p[:, 1] <= _SIGMOID_OF_ONE))):
        return probe, False
    read_single_column(adapter, True)
    again = probe_for(adapter, probe.x, suite.needs_gradient, suite.needs_features, layout)
    if len(np.unique(again.predicted)) < 2:
        read_single_column(adapter, False)  # not that either: the warning below says so
        return probe, False
    warnings.warn(
        f"every calibration sample got class 1 with the model's single output column "
        f"read as a logit in [0, 1], as a sigmoid's probability would; read as a "
        f"probability it gives both classes ({int((again.predicted == 0).sum())} of "
        f"{len(p)} samples class 0), so the guard reads it as a probability from now on "
        "(the model applies a sigmoid the adapter cannot see, such as torch.sigmoid in "
        "forward); the calibration records this", UserWarning, stacklevel=4)
    return again, True


def _warn_if_one_class(probe: Probe) -> None:
    """Warn when the model predicts one class for every calibration sample: the detectors
    that compare classes (``boundary``, ``neighbours``, ``robust``) then learn nothing,
    whether the data covers one class only or the model's output is misread (a single
    sigmoid column taken for a logit: see the README on class scores)."""
    predicted = probe.predicted
    if len(predicted) and probe.probabilities.shape[1] > 1 and (
            predicted == predicted[0]).all():
        warnings.warn(
            f"the model predicts class {int(predicted[0])} for all {len(predicted)} "
            "calibration samples: the detectors that compare classes learn nothing from "
            "them. Calibrate on data of every class; for a binary model with one output "
            "column, check that it is read as a probability or a logit as it should be "
            "(a sigmoid applied inside forward is read as a logit)", UserWarning,
            stacklevel=4)


def per_sample_rate(fpr: Any, batch_size: Any = None) -> float:
    """The per-sample false-positive target that gives ``fpr`` per call.

    The calibrated rate is per sample, but one flagged sample refuses a whole call, so a
    call of ``b`` clean samples is refused with probability ``1 - (1 - r) ** b``. Given
    ``batch_size=b``, the per-sample target ``r = 1 - (1 - fpr) ** (1 / b)`` makes ``fpr``
    the rate at which clean calls of that size are refused. Raises
    :class:`ConfigurationError` (a ``ValueError``) for arguments out of range.
    """
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float, np.floating)) or not (
            0 < float(fpr) < 1):
        raise ConfigurationError(f"fpr is the false-positive rate to calibrate for, in "
                                 f"(0, 1), e.g. 0.05; received {fpr!r}")
    if batch_size is None:
        return float(fpr)
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1):
        raise ConfigurationError(f"batch_size is the number of samples per call the rate "
                                 f"should hold for, a positive integer; received "
                                 f"{batch_size!r}")
    # in logs: 1 - (1 - fpr) ** (1 / b) loses a tiny fpr to rounding (1 - 1e-17 == 1.0)
    rate = -math.expm1(math.log1p(-float(fpr)) / int(batch_size))
    if not rate > 0:
        raise ConfigurationError(f"fpr={fpr!r} per call of batch_size={batch_size} samples "
                                 "is a per-sample rate too small to represent; target a "
                                 "larger fpr or a smaller batch_size")
    return rate


def model_fingerprint(adapter: Adapter) -> str:
    """What a calibration was made for: the framework, the declared inputs (their names
    only where the adapter keeps them stable across copies of a model), and the adapter's
    digest of the model's parameters where it has one."""
    declared = adapter.signature()
    if declared is not None and not adapter.stable_input_names:
        declared = [replace(spec, name="") for spec in declared]
    parts = [adapter.framework, repr(declared), adapter.parameters_digest() or ""]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def calibrate(adapter: Adapter, suite: DetectorSuite, x: np.ndarray, *, fpr: float,
              model: str, seed: int = 0, value_range: tuple[float, float] | None = None,
              reference: np.ndarray | None = None, asked: str | None = None,
              layout: JoinedInputs | None = None) -> Calibration:
    """Fit ``suite`` on clean ``x`` and set its threshold on the same data, cross-fitted:
    the samples are split into folds, and each fold is scored by what the others taught
    (see ``DetectorSuite.fit`` and ``set_threshold_cross_fitted``).

    ``reference`` is more clean data for the detectors that learn from data; it is never
    scored, so the clean scores and the threshold come from ``x`` alone. ``asked`` says
    how the caller put the rate, where ``fpr`` was derived from it (a per-call rate).
    ``layout``: ``x`` and ``reference`` hold the joined rows of a model of several inputs
    (``joined.py``), which the model is handed split."""
    if len(x) < 40:
        raise CalibrationError(
            f"calibration needs at least 40 clean samples; received {len(x)}. With n "
            f"samples the threshold resolves false-positive rates down to about 1/n")
    if fpr * len(x) < 1:
        target = f"{asked} is a per-sample target of {fpr:.3g}, which" if asked else (
            f"fpr={fpr}")
        needed = 1 / fpr  # inf for a subnormal fpr
        needed_text = str(math.ceil(needed)) if needed < 1e15 else f"{needed:.3g}"
        raise CalibrationError(
            f"{target} needs at least {needed_text} clean samples to be "
            f"measured; received {len(x)}. Calibrate on more clean data"
            + (", or target a smaller batch_size or a larger fpr" if asked else
               ", or target a larger fpr"))
    for name, data in (("x_clean", x), ("reference", reference)):
        if data is not None and data.dtype.kind in "fc" and not np.isfinite(data).all():
            raise CalibrationError(
                f"{name} holds NaN or infinite values; the detectors learn from finite "
                "values only: calibrate on complete rows (impute or drop the missing ones)")
    shuffled = x[np.random.default_rng(seed).permutation(len(x))]  # folds go by position
    # A copy read the adapter's own way: a hidden sigmoid is looked for afresh (a reading
    # an earlier calibration found would otherwise be kept but recorded as not found), and
    # calls screened meanwhile keep the reading of the calibration in use; the guard
    # applies the new calibration's reading when it installs it.
    adapter = copy.copy(adapter)
    read_single_column(adapter, False)
    if value_range is None:
        value_range = (float(x.min()), float(x.max()))
    try:
        if not any(d.learns for d in suite.detectors):
            reference = None  # nothing would read it
        probe = _probe_clean(adapter, shuffled, "x_clean", suite.needs_gradient,
                             suite.needs_features, layout)
        probe, sigmoid = _hidden_sigmoid(adapter, probe, suite, layout)
        _warn_if_one_class(probe)
        reference_probe = None if reference is None or not len(reference) else _probe_clean(
            adapter, reference, "reference",
            any(d.learns and d.needs_gradient for d in suite.detectors),
            any(d.learns and d.needs_features for d in suite.detectors), layout)
        clean = suite.fit(probe, value_range, reference=reference_probe)
        achieved = suite.set_threshold_cross_fitted(clean, fpr)
    except np.linalg.LinAlgError as exc:
        raise CalibrationError(
            f"the clean data is too uniform to fit the detectors ({exc}); calibrate on "
            "varied, representative inputs") from exc
    for name, scores in clean.items():
        if not np.isfinite(scores).all():
            raise CalibrationError(
                f"detector {name!r} gives {int((~np.isfinite(scores)).sum())} of the "
                f"{len(x)} clean samples a NaN or infinite score: {_magnitude(x, reference)}"
                "; expected values its arithmetic keeps finite. Scale the inputs (as the "
                "model's own preprocessing would) or choose other detectors")
    calibration = Calibration(suite, value_range, content_hash([x]), len(x), len(x),
                              achieved, model, adapter.framework,
                              datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              tuple(int(d) for d in x.shape[1:]),
                              0 if reference is None else len(reference), samples=len(x),
                              model_fingerprint=model_fingerprint(adapter),
                              sigmoid_output=sigmoid,
                              input_shapes=() if layout is None else layout.shapes)
    try:
        calibration.check_loadable()
    except (CalibrationError, ConfigurationError, ValueError) as exc:
        raise CalibrationError(
            f"the calibration these samples give could not be saved and loaded again "
            f"({exc}): {_magnitude(x, reference)}; expected values the detectors can "
            "store. Scale the inputs (as the model's own preprocessing would) or choose "
            "other detectors") from exc
    low, high = calibration.fpr_interval
    if high > 2 * fpr:
        warnings.warn(
            f"calibrated on {len(x)} clean samples for a false-positive rate of {fpr:.3g}: "
            f"on new clean data it may lie anywhere in {low:.2%}-{high:.2%} (95% interval); "
            f"calibrate on more clean data (about {int(np.ceil(10 / fpr))} samples keep it "
            "under twice the target)", UserWarning, stacklevel=4)
    return calibration


def _magnitude(x: np.ndarray, reference: np.ndarray | None) -> str:
    """The largest magnitude in the clean data, in words (what usually breaks a detector)."""
    largest = max(float(np.abs(data, dtype=np.float64).max()) for data in (x, reference)
                  if data is not None and data.size)
    return f"the clean data holds values of magnitude up to {largest:.3g}"


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # unreadable, or a NUL in it: the writer says why
        return False
