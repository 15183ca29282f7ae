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


class DensityDetector(InputSpaceDetector):
    name = "density"

    state_keys = ("projection", "means", "precision")

    def __init__(self, shrinkage: float = 0.01, seed: int = 0) -> None:
        super().__init__(seed)
        self.shrinkage = arguments.real("shrinkage", shrinkage, 0.0, 1.0, open_low=True)
        self.means: np.ndarray | None = None
        self.precision: np.ndarray | None = None

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        features = self.fit_features(probe.x)
        labels = probe.predicted
        classes = np.unique(labels)
        self.means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - self.means[np.searchsorted(classes, labels)]
        covariance = centred.T @ centred / max(len(features) - len(classes), 1)
        # Shrink towards a scaled identity so directions clean data never uses stay finite.
        ridge = self.shrinkage * np.trace(covariance) / len(covariance)
        self.precision = np.linalg.inv(covariance + ridge * np.eye(len(covariance)))

    def score(self, probe: Probe) -> np.ndarray:
        if self.means is None or self.precision is None:
            raise ValueError("the density detector is not fitted")
        whitener, white_means = self._whitened()
        z = self.features(probe.x) @ whitener
        # |z - m|^2 expanded: two matrix products instead of an (n, classes, d) tensor
        distances = ((z ** 2).sum(axis=1)[:, None] + (white_means ** 2).sum(axis=1)[None]
                     - 2 * z @ white_means.T)
        return np.log(np.maximum(distances.min(axis=1), 0.0) + 1e-12)

    def _whitened(self) -> tuple[np.ndarray, np.ndarray]:
        """``W`` with ``W W^T = precision``, so Mahalanobis distance is Euclidean after
        ``x @ W``; and the class means mapped the same way (computed once)."""
        cached = self.__dict__.get("_white")
        if cached is None or cached[0] is not self.precision:
            whitener = np.linalg.cholesky(self.precision)
            cached = self._white = (self.precision, whitener, self.means @ whitener)
        return cached[1], cached[2]

    def state(self) -> dict[str, Any]:
        return {**super().state(), "means": self.means, "precision": self.precision}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.means = arguments.array(state, "means", 2)
        self.precision = arguments.array(state, "precision", 2)

    def check_state(self, width: int) -> None:
        features = self.feature_width(width)
        assert self.means is not None and self.precision is not None
        if self.means.shape[1] != features or self.precision.shape != (features, features):
            raise ValueError(f"density: means {self.means.shape} and precision "
                             f"{self.precision.shape} do not fit {features} features")
        if not np.allclose(self.precision, self.precision.T):
            raise ValueError("density: the precision matrix is not symmetric")
        try:
            np.linalg.cholesky(self.precision)
        except np.linalg.LinAlgError:
            raise ValueError("density: the precision matrix is not positive definite") from None

    def config(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage, "seed": self.seed}
