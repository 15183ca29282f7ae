"""Agreement with the nearest clean inputs (in the spirit of Deep k-Nearest Neighbors,
Papernot & McDaniel 2018, here in input space so it works for any model).

A small perturbation pushes an input across the model's decision boundary but leaves it
close to clean inputs of its true class. So compare how far the input is from the clean
inputs the model labels like it and from those it labels otherwise: clean inputs sit
nearer their own kind; adversarial ones nearer another. Score: ``log(d_same / d_other)``,
the mean distances to the ``k`` nearest clean inputs of each group.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import InputSpaceDetector, Probe


class NeighbourDetector(InputSpaceDetector):
    name = "neighbours"

    def __init__(self, k: int = 5, seed: int = 0) -> None:
        super().__init__(seed)
        self.k = k
        self.points: np.ndarray | None = None
        self.labels: np.ndarray | None = None

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        self.points = self.fit_features(probe.x)
        self.labels = probe.predicted

    def score(self, probe: Probe) -> np.ndarray:
        if self.points is None or self.labels is None:
            raise ValueError("the neighbours detector is not fitted")
        features = self.features(probe.x)
        squared = ((features ** 2).sum(1)[:, None] + (self.points ** 2).sum(1)[None]
                   - 2 * features @ self.points.T)
        distances = np.sqrt(np.maximum(squared, 0.0))
        same = self.labels[None, :] == probe.predicted[:, None]
        return np.log(self._nearest(distances, same) + 1e-9) - np.log(
            self._nearest(distances, ~same) + 1e-9)

    def _nearest(self, distances: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean distance to the ``k`` nearest points allowed by ``mask``, per row."""
        masked = np.where(mask, distances, np.inf)
        k = min(self.k, masked.shape[1])
        nearest = np.partition(masked, k - 1, axis=1)[:, :k]
        finite = np.isfinite(nearest)
        counts = np.maximum(finite.sum(axis=1), 1)
        mean = np.where(finite, nearest, 0.0).sum(axis=1) / counts
        # No clean input of that group at all: as far as the farthest point seen.
        return np.where(finite.any(axis=1), mean, distances.max(axis=1))

    def state(self) -> dict[str, Any]:
        return {**super().state(), "points": self.points, "labels": self.labels}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.points = np.asarray(state["points"])
        self.labels = np.asarray(state["labels"])

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "seed": self.seed}
