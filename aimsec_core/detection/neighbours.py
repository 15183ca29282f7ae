"""Agreement with the nearest clean inputs (in the spirit of Deep k-Nearest Neighbors,
Papernot & McDaniel 2018, here in input space so it works for any model).

A small perturbation pushes an input across the model's decision boundary but leaves it
close to clean inputs of its true class. So compare how far the input is from the clean
inputs the model labels like it and from those it labels otherwise: clean inputs sit
nearer their own kind; adversarial ones nearer another. Score: ``log(d_same / d_other)``,
the mean distances to the ``k`` nearest clean inputs of each group.

The more clean inputs it keeps, the finer the neighbourhoods it resolves (on digits, the
training set as reference lifted the suite's detection of grid-projected Carlini-Wagner
examples transferred to a scikit-learn MLP from 68% to 82%), so
``calibrate(..., reference=x_train)`` hands it more than the calibration half.
It keeps at most ``max_points`` of them (a seeded random subset), which bounds its cost:
one (batch x points) distance matrix per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import InputSpaceDetector, Probe


class NeighbourDetector(InputSpaceDetector):
    name = "neighbours"

    def __init__(self, k: int = 5, max_points: int = 1000, seed: int = 0) -> None:
        super().__init__(seed)
        self.k = k
        self.max_points = max_points
        self.points: np.ndarray | None = None  #: float32, centred on ``centre``
        self.labels: np.ndarray | None = None
        self.centre: np.ndarray | None = None

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        x, labels = probe.x, probe.predicted
        if len(x) > self.max_points:
            keep = np.random.default_rng(self.seed).choice(len(x), self.max_points,
                                                           replace=False)
            x, labels = x[keep], labels[keep]
        self._keep(self.fit_features(x), labels)

    def _keep(self, points: np.ndarray, labels: np.ndarray,
              centre: np.ndarray | None = None) -> None:
        """Points centred (float32 distances lose the digits a shared offset would take),
        one contiguous block per label."""
        points = np.asarray(points, dtype=np.float64)
        if centre is None:
            centre = points.mean(axis=0)
            points = points - centre
        order = np.argsort(labels, kind="stable")
        self.points, self.labels = points[order].astype(np.float32), labels[order]
        self.centre = np.asarray(centre, dtype=np.float64)

    def score(self, probe: Probe) -> np.ndarray:
        if self.points is None or self.labels is None:
            raise ValueError("the neighbours detector is not fitted")
        points, labels = self.points, self.labels
        x = (self.features(probe.x) - self.centre).astype(np.float32)
        squared = ((x * x).sum(1)[:, None] + (points * points).sum(1)[None]
                   - 2 * (x @ points.T))
        np.maximum(squared, 0.0, out=squared)
        # The k nearest of each label's block (partitions of small blocks, no masking):
        # the same label's are the first group, the k nearest of all the others' the second.
        classes, starts = np.unique(labels, return_index=True)
        stops = np.r_[starts[1:], len(labels)]
        nearest = np.full((len(x), len(classes), self.k), np.inf, dtype=np.float32)
        for c, (start, stop) in enumerate(zip(starts, stops)):
            k = min(self.k, stop - start)
            nearest[:, c, :k] = np.partition(squared[:, start:stop], k - 1, axis=1)[:, :k]
        rows = np.arange(len(x))
        column = np.searchsorted(classes, probe.predicted)
        known = (column < len(classes)) & (classes[np.minimum(column, len(classes) - 1)]
                                           == probe.predicted)
        same = np.full((len(x), self.k), np.inf, dtype=np.float32)
        same[known] = nearest[rows[known], column[known]]
        nearest[rows[known], column[known]] = np.inf
        others = nearest.reshape(len(x), -1)
        k = min(self.k, others.shape[1])
        others = np.partition(others, k - 1, axis=1)[:, :k]
        # A label with no clean points at all counts as far as the farthest point seen.
        farthest = np.sqrt(squared.max(axis=1))
        return (np.log(_mean_distance(same, farthest) + 1e-9)
                - np.log(_mean_distance(others, farthest) + 1e-9))

    def state(self) -> dict[str, Any]:
        return {**super().state(), "points": self.points, "labels": self.labels,
                "centre": self.centre}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        # Files without a centre hold the points themselves.
        self._keep(np.asarray(state["points"]), np.asarray(state["labels"]), state.get("centre"))

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "max_points": self.max_points, "seed": self.seed}


def _mean_distance(squared: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per row, the mean of the finite distances among ``squared`` (squared distances);
    ``fallback`` where there is none."""
    finite = np.isfinite(squared)
    total = np.sqrt(np.where(finite, squared, 0.0)).sum(axis=1)
    count = finite.sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), fallback)
