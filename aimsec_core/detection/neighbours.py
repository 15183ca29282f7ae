"""Agreement with the nearest clean inputs (in the spirit of Deep k-Nearest Neighbors,
Papernot & McDaniel 2018, here in input space so it works for any model).

A small perturbation pushes an input across the model's decision boundary but leaves it
close to clean inputs of its true class. So compare how far the input is from the clean
inputs the model labels like it and from those it labels otherwise: clean inputs sit
nearer their own kind; adversarial ones nearer another. Score: ``log(d_same / d_other)``,
the mean distances to the ``k`` nearest clean inputs of each group.

The more clean inputs it keeps, the finer the neighbourhoods it resolves (on digits, the
training set as reference lifted the suite's detection of grid-projected DeepFool examples
transferred to a scikit-learn MLP from 90% to 97%), so
``calibrate(..., reference=x_train)`` hands it more than the calibration data.
It keeps at most ``max_points`` of them (a seeded random subset), which bounds its cost:
one (batch x points) distance matrix per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import arguments
from .base import InputSpaceDetector, Probe


class NeighbourDetector(InputSpaceDetector):
    name = "neighbours"

    state_keys = ("projection", "points", "labels", "centre")
    #: Largest ``max_points``: the per-call distance matrix is (batch x points).
    MAX_POINTS = 100_000

    def __init__(self, k: int = 5, max_points: int = 1000, seed: int = 0) -> None:
        super().__init__(seed)
        self.max_points = arguments.whole("max_points", max_points, 1, self.MAX_POINTS)
        self.k = arguments.whole("k", k, 1, min(1000, self.max_points))
        self.points: np.ndarray | None = None  #: float32, centred on ``centre``
        self.labels: np.ndarray | None = None
        self.centre: np.ndarray | None = None
        # Derived from ``labels``: each label and where its block of points starts and ends.
        self._blocks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._norms: np.ndarray | None = None  #: derived from ``points``
        self._reach = 0.0  #: derived from ``points``

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
        classes, starts = np.unique(self.labels, return_index=True)
        self._blocks = (classes, starts, np.r_[starts[1:], len(self.labels)])
        self._norms = (self.points * self.points).sum(1)  #: each point's squared norm
        self._reach = float32_reach(self.points.shape[1])  #: inputs are clipped there

    def score(self, probe: Probe) -> np.ndarray:
        if self.points is None or self.labels is None:
            raise ValueError("the neighbours detector is not fitted")
        # past the reach of float32 squares an input is far from every point anyway:
        # clipped there, its distances stay finite (and large)
        x = np.clip(self.features(probe.x) - self.centre, -self._reach,
                    self._reach).astype(np.float32)
        squared = (x * x).sum(1)[:, None] + self._norms[None] - 2 * (x @ self.points.T)
        np.maximum(squared, 0.0, out=squared)
        classes, nearest = self._nearest_by_label(squared)
        # The predicted label's k nearest are the "same" group; the k nearest among all
        # the other labels' k nearest are the "other" group.
        predicted = probe.predicted
        known = np.flatnonzero(np.isin(predicted, classes))
        column = np.searchsorted(classes, predicted[known])
        same = np.full((len(x), self.k), np.inf, dtype=np.float32)
        same[known] = nearest[known, column]
        nearest[known, column] = np.inf
        others = nearest.reshape(len(x), -1)
        k = min(self.k, others.shape[1])
        others = np.partition(others, k - 1, axis=1)[:, :k]
        # A label with no clean points at all counts as far as the farthest point seen.
        farthest = np.sqrt(squared.max(axis=1))
        return (np.log(_mean_distance(same, farthest) + 1e-9)
                - np.log(_mean_distance(others, farthest) + 1e-9))

    def _nearest_by_label(self, squared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored labels, and per row and label the ``k`` smallest squared distances
        (inf-padded where a label has fewer points): one small partition per label's
        block, cheaper than masking the whole matrix once per group."""
        assert self._blocks is not None
        classes, starts, stops = self._blocks
        nearest = np.full((len(squared), len(classes), self.k), np.inf, dtype=np.float32)
        for c, (start, stop) in enumerate(zip(starts, stops)):
            k = min(self.k, stop - start)
            nearest[:, c, :k] = np.partition(squared[:, start:stop], k - 1, axis=1)[:, :k]
        return classes, nearest

    def state(self) -> dict[str, Any]:
        return {**super().state(), "points": self.points, "labels": self.labels,
                "centre": self.centre}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        points = arguments.array(state, "points", 2)
        labels = arguments.array(state, "labels", 1, rows=len(points))
        if not 0 < len(points) <= self.max_points or labels.dtype.kind not in "iu":
            raise ValueError(f"neighbours: {len(points)} points with {labels.dtype} labels; "
                             f"expected 1 to max_points={self.max_points} and integer labels")
        arguments.bounded("points", points, float32_reach(points.shape[1]),
                          "their squared distances, summed in float32, must stay finite")
        centre = (arguments.array(state, "centre", 1, columns=points.shape[1])
                  if "centre" in state else None)  # files without one hold the points as is
        self._keep(points, labels, centre)

    def check_state(self, width: int) -> None:
        assert self.points is not None
        features = self.feature_width(width)
        if self.points.shape[1] != features:
            raise ValueError(f"neighbours: points of width {self.points.shape[1]} do not fit "
                             f"{features} features")

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "max_points": self.max_points, "seed": self.seed}


def float32_reach(width: int) -> float:
    """Largest magnitude per value for which squared distances between vectors of
    ``width`` values, summed in float32 (norms and a product, as :meth:`score` does),
    stay finite: ``sqrt(FLOAT32_MAX / (8 * width))``, 8.1e17 for 64 values."""
    return float(np.sqrt(arguments.FLOAT32_MAX / (8 * max(width, 1))))


def _mean_distance(squared: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per row, the mean of the finite distances among ``squared`` (squared distances);
    ``fallback`` where there is none."""
    finite = np.isfinite(squared)
    total = np.sqrt(np.where(finite, squared, 0.0)).sum(axis=1)
    count = finite.sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), fallback)
