"""Distance from the clean data: class-conditional Gaussians with one shared covariance
(the Mahalanobis detector of Lee et al. 2018, here on the input itself, so it works for
any model). Perturbations spread over the input move it off the clean data's manifold,
into directions where clean inputs hardly vary. Score: the smallest Mahalanobis distance
to any class mean, classes taken from the model's own predictions on clean data."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import arguments
from .base import InputSpaceDetector, Probe
from .gaussian import TiedGaussians


class DensityDetector(InputSpaceDetector):
    name = "density"

    state_keys = ("projection", "means", "precision")

    def __init__(self, shrinkage: float = 0.01, seed: int = 0) -> None:
        super().__init__(seed)
        self.shrinkage = arguments.real("shrinkage", shrinkage, 0.0, 1.0, open_low=True)
        self.gaussians: TiedGaussians | None = None

    @property
    def means(self) -> np.ndarray | None:
        return None if self.gaussians is None else self.gaussians.means

    @property
    def precision(self) -> np.ndarray | None:
        return None if self.gaussians is None else self.gaussians.precision

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        self.gaussians = TiedGaussians.fit(self.fit_features(probe.x), probe.predicted,
                                           self.shrinkage)

    def score(self, probe: Probe) -> np.ndarray:
        if self.gaussians is None:
            raise ValueError("the density detector is not fitted")
        return np.log(self.gaussians.nearest_squared_distance(self.features(probe.x))
                      + 1e-12)

    def state(self) -> dict[str, Any]:
        return {**super().state(), "means": self.means, "precision": self.precision}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        means = arguments.array(state, "means", 2)
        # the score is the distance to the nearest class mean: the labels are not needed
        self.gaussians = TiedGaussians(np.arange(len(means)), means,
                                       arguments.array(state, "precision", 2))

    def check_state(self, width: int) -> None:
        assert self.gaussians is not None
        self.gaussians.check(self.feature_width(width), "density")

    def config(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage, "seed": self.seed}
