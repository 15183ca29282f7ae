"""Adversarial-input detection: detectors, the calibrated suite, calibration files."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from ..adapter import Capabilities
from ..errors import ConfigurationError
from . import arguments
from .base import Detector, Probe, binary_probabilities, softmax_if_needed
from .boundary import BoundaryDetector
from .density import DensityDetector
from .features import FeatureDensityDetector
from .gradient import GradientNormDetector
from .margin import MarginDetector
from .neighbours import NeighbourDetector
from .noise import NoiseDetector
from .robust import RobustDetector
from .shift import ShiftDetector
from .squeeze import SqueezeDetector
from .structure import JumpDetector, SparsityDetector
from .support import SupportDetector
from .suite import DetectorSuite, SuiteScores

DETECTORS: dict[str, type[Detector]] = {d.name: d for d in (
    GradientNormDetector, MarginDetector, DensityDetector, NeighbourDetector, SqueezeDetector,
    NoiseDetector, JumpDetector, SparsityDetector, FeatureDensityDetector, ShiftDetector,
    SupportDetector, RobustDetector, BoundaryDetector)}

#: Used when ``calibrate`` is given no detector list: the distance to the decision boundary
#: (``boundary``: the margin over the input gradient's size) where autograd exists, else the
#: margin (both measure the model's confidence; together they would count it twice), then
#: density, sparsity (which abstains where zeros are rare), neighbours, shift (which
#: abstains, scoring 0, where the clean data has no noise floor to look in) and robust
#: (disagreement with an adversarially trained MLP fitted at calibration: against the
#: strongest adaptive attack on digits, every detector in its loss, it lifted detection from
#: 0.46 to 0.77 in a quick run). ``boundary`` took the plain gradient norm's place: from the
#: same gradient, in the same suite, it caught Carlini-Wagner and DeepFool on wine at 0.75
#: and 0.76 against 0.51 and 0.50 (torch, eight seeds; Keras, five: 0.85 and 0.79 against
#: 0.58 and 0.53), on textured digits at 0.87 and 0.98 against 0.84 and 0.96 (torch, three
#: seeds), DeepFool on tabular at 0.71 against 0.64 (torch, five seeds; Keras 0.74 against
#: 0.64); the other means moved by 0.03 or less. ``support`` (neighbours on the input's
#: support) is not among them: it lifted the zero-keeping adaptive attack's detection on
#: digits (0.62 to 0.75), but an attacker free to change the zero pattern, aiming at it
#: through a relaxed pattern, silences it (0.40 with it, 0.46 without), and it costs +0.4x a
#: torch forward.
DEFAULT_DETECTORS = ("boundary", "density", "sparsity", "neighbours", "shift", "robust")
CONFIDENCE_WITHOUT_GRADIENTS = "margin"


def build_detector(name: str, **config: Any) -> Detector:
    try:
        kind = DETECTORS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable item, such as a dict
        raise ConfigurationError(
            f"unknown detector {name!r:.80}; expected one of {sorted(DETECTORS)}") from None
    return kind(**config)


def select_detectors(names: list[str | Detector] | None, capabilities: Capabilities,
                     image_shape: tuple[int, int] | None = None,
                     integer_input: bool = False, joined: bool = False) -> list[Detector]:
    """Detector objects for ``names`` (default: :data:`DEFAULT_DETECTORS`, the margin in
    the boundary detector's place where the adapter has no autograd, or the input holds
    integers, token ids, which have no gradient); a detector that needs the input
    gradient is refused when asked for without autograd or on integers. A
    :class:`Detector` object given is copied, never fitted in place; it must be of one of
    the kinds in :data:`DETECTORS` (a subclass, saved under its kind's name, would load
    as that kind and score otherwise). ``joined``: the detectors read a model of several
    inputs as the flat concatenation of its inputs (``joined.py``), which is no image, so
    an ``image_shape`` (given, or set on a detector object) is refused. Raises
    :class:`ConfigurationError`."""
    image_shape = arguments.image_shape(image_shape)  # checked even where no detector reads it
    if isinstance(names, (str, bytes)):  # its letters are no detectors
        raise ConfigurationError(f"detectors must be a list of detector names; received the "
                                 f"string {names!r:.80} (write [{names!r:.80}])")
    if names is not None and not isinstance(names, Iterable):
        raise ConfigurationError(f"detectors must be a list of detector names; received "
                                 f"{type(names).__name__}")
    gradients = capabilities.gradients and not integer_input
    chosen = list(names) if names is not None else [
        n if not DETECTORS[n].needs_gradient or gradients
        else CONFIDENCE_WITHOUT_GRADIENTS
        for n in DEFAULT_DETECTORS]
    detectors = []
    for item in chosen:
        if isinstance(item, Detector):
            kind = getattr(item, "name", None)
            if not isinstance(kind, str) or DETECTORS.get(kind) is not type(item):
                # a file names each detector by kind and restores it as that class: any
                # other object would score otherwise (or not at all) once loaded again
                raise ConfigurationError(
                    f"detector objects must be of aimsec's own kinds "
                    f"({', '.join(k.__name__ for k in DETECTORS.values())}), which a "
                    f"calibration file restores as they were; received a "
                    f"{type(item).__name__:.80} named {kind!r:.80}")
            # a copy: calibration fits it, and the object given may already serve another
            # calibration (an earlier one, another guard's), which refitting it in place
            # changed under that calibration's clean scores and threshold
            detectors.append(copy.deepcopy(item))
            continue
        if not isinstance(item, str):
            raise ConfigurationError(f"unknown detector {item!r:.80}; expected one of "
                                     f"{sorted(DETECTORS)}")
        config = {"image_shape": image_shape} if item in ("squeeze", "jump") else {}
        detectors.append(build_detector(item, **config))
    if joined and image_shape is not None:  # even where no chosen detector reads it
        raise ConfigurationError(
            f"image_shape {image_shape} asks for samples read as images; this model takes "
            "several inputs, which the detectors read as one flat row per sample (each "
            "input flattened, concatenated), no image: leave image_shape out")
    for detector in detectors:
        if joined and getattr(detector, "image_shape", None) is not None:
            raise ConfigurationError(
                f"detector {detector.name!r} is set to read samples as images of shape "
                f"{detector.image_shape}; this model takes several inputs, which the "
                "detectors read as one flat row per sample (each input flattened, "
                "concatenated), no image: leave image_shape out (squeeze then reduces the "
                "bit depth only, jump reads the row)")
        if detector.needs_features and not capabilities.features:
            raise ConfigurationError(
                f"detector {detector.name!r} reads the model's internal features, which "
                "this model's adapter cannot give; use 'density' (the same model on the "
                "input itself) instead")
        if detector.needs_gradient and not gradients:
            raise ConfigurationError(
                f"detector {detector.name!r} needs input gradients, which "
                + ("integer inputs (token ids) do not have" if capabilities.gradients
                   else "this model's adapter cannot compute")
                + "; choose model-agnostic detectors "
                f"({', '.join(n for n, d in DETECTORS.items() if not d.needs_gradient)})")
    if not detectors:
        raise ConfigurationError("at least one detector is needed")
    named = [d.name for d in detectors]
    repeated = sorted({n for n in named if named.count(n) > 1})
    if repeated:  # the suspicion would count one detector's evidence twice
        raise ConfigurationError(f"detector(s) {repeated} listed more than once; expected "
                                 "each detector once")
    return detectors


__all__ = ["DETECTORS", "DEFAULT_DETECTORS", "BoundaryDetector", "DensityDetector", "Detector",
           "DetectorSuite",
           "FeatureDensityDetector", "GradientNormDetector", "JumpDetector", "MarginDetector",
           "NeighbourDetector", "NoiseDetector", "Probe", "RobustDetector", "ShiftDetector",
           "SparsityDetector", "SqueezeDetector", "SuiteScores", "SupportDetector",
           "binary_probabilities", "build_detector", "select_detectors", "softmax_if_needed"]
