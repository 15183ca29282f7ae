"""Distance from the clean data: class-conditional Gaussians with one shared covariance
(the Mahalanobis detector of Lee et al. 2018, here on the input itself, so it works for
any model). Perturbations spread over the input move it off the clean data's manifold,
into directions where clean inputs hardly vary. Score: the smallest Mahalanobis distance
to any class mean, classes taken from the model's own predictions on clean data."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Detector, Probe

#: Inputs wider than this are projected (fixed random Gaussian projection) before fitting.
MAX_DIM = 1024
PROJECTED_DIM = 256


class DensityDetector(Detector):
    name = "density"
    learns = True

    def __init__(self, shrinkage: float = 0.01, seed: int = 0) -> None:
        self.shrinkage = shrinkage
        self.seed = seed
        self.means: np.ndarray | None = None
        self.precision: np.ndarray | None = None
        self.projection: np.ndarray | None = None

    def _features(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float64)
        return flat if self.projection is None else flat @ self.projection

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        d = int(np.prod(probe.x.shape[1:]))
        if d > MAX_DIM:
            rng = np.random.default_rng(self.seed)
            self.projection = rng.normal(0, 1 / np.sqrt(PROJECTED_DIM), (d, PROJECTED_DIM))
        features = self._features(probe.x)
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
        z = self._features(probe.x) @ whitener
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
        state = {"means": self.means, "precision": self.precision}
        if self.projection is not None:
            state["projection"] = self.projection
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.means = np.asarray(state["means"])
        self.precision = np.asarray(state["precision"])
        self.projection = np.asarray(state["projection"]) if "projection" in state else None

    def config(self) -> dict[str, Any]:
        return {"shrinkage": self.shrinkage, "seed": self.seed}
