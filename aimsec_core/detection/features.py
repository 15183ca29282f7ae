"""Distance from clean data inside the model: class-conditional Gaussians with a shared
covariance on the model's internal features (Lee et al., NeurIPS 2018), all hooked layers
at once.

An adversarial example must look like its new class where the model decides (the last
layers, the logits) while its input, and so the early layers, still look like the class
it came from. One Gaussian per predicted class over the concatenated features of every
layer (the adapter's ``features``: early blocks averaged per channel, the penultimate
layer, the logits) sees that disagreement: the score is the Mahalanobis distance to the
mean of the class the model *predicts* (not the nearest class), so features that jump
classes between layers are far from every Gaussian that explains the prediction. An
attacker who pulls the late layers to the target class must pull the early ones too, which
a bounded perturbation can hardly do. Needs an adapter with ``capabilities.features``
(torch, Keras); the input-space ``density`` detector is the fallback elsewhere.

Each feature is standardised by its clean mean and spread first; the covariance is shrunk
by ``shrinkage + width / samples`` (more where there is little data for many features).
A class the calibration data never predicted is scored against the nearest class.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CalibrationError
from . import arguments
from .base import Detector, Probe
from .gaussian import TiedGaussians


class FeatureDensityDetector(Detector):
    name = "features"
    needs_features = True
    learns = True
    multiplies_matrices = True
    state_keys = ("classes", "means", "precision", "centre", "scale")

    def __init__(self, shrinkage: float = 0.01) -> None:
        self.shrinkage = arguments.real("shrinkage", shrinkage, 0.0, 1.0, open_low=True)
        self.gaussians: TiedGaussians | None = None
        self.centre: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    @staticmethod
    def joint(probe: Probe) -> np.ndarray:
        return np.concatenate([np.asarray(f, dtype=np.float64).reshape(len(probe.x), -1)
                               for f in probe.features], axis=1)

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        raw = self.joint(probe)
        self.centre = raw.mean(axis=0)
        spread = raw.std(axis=0)
        self.scale = np.where(spread > 1e-6 * max(spread.max(), 1e-12), spread, 1.0)
        shrinkage = min(1.0, self.shrinkage + raw.shape[1] / len(raw))
        self.gaussians = TiedGaussians.fit((raw - self.centre) / self.scale, probe.predicted,
                                           shrinkage)

    def standardised(self, probe: Probe) -> np.ndarray:
        if self.gaussians is None or self.centre is None or self.scale is None:
            raise ValueError("the features detector is not fitted")
        raw = self.joint(probe)
        if raw.shape[1] != len(self.centre):
            raise CalibrationError(
                f"the model gives {raw.shape[1]} internal features; the calibration's "
                f"features detector was made for {len(self.centre)}: it was made for another "
                "model (or the model's layers changed); recalibrate on this model")
        return (raw - self.centre) / self.scale

    def score(self, probe: Probe) -> np.ndarray:
        z = self.standardised(probe)
        assert self.gaussians is not None
        squared = self.gaussians.squared_distances(z)
        classes = self.gaussians.classes
        predicted = probe.predicted
        column = np.searchsorted(classes, predicted).clip(0, len(classes) - 1)
        known = classes[column] == predicted
        chosen = np.where(known, squared[np.arange(len(z)), column], squared.min(axis=1))
        return 0.5 * np.log(chosen + 1e-12)

    def state(self) -> dict[str, Any]:
        assert self.gaussians is not None
        return {"classes": self.gaussians.classes, "means": self.gaussians.means,
                "precision": self.gaussians.precision, "centre": self.centre,
                "scale": self.scale}

    def load_state(self, state: dict[str, Any]) -> None:
        classes = arguments.array(state, "classes", 1)
        means = arguments.array(state, "means", 2, rows=len(classes))
        self.gaussians = TiedGaussians(classes.astype(np.int64), means,
                                       arguments.array(state, "precision", 2))
        self.centre = arguments.array(state, "centre", 1, columns=means.shape[1])
        self.scale = arguments.array(state, "scale", 1, columns=means.shape[1])
        if classes.dtype.kind not in "iu" or (np.diff(classes) <= 0).any() or (
                self.scale <= 0).any():
            raise ValueError("features: class labels must be sorted distinct integers and "
                             "scales positive")

    def check_state(self, width: int) -> None:
        assert self.gaussians is not None
        self.gaussians.check(None, "features")

    def config(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage}
