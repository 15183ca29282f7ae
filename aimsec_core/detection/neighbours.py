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
        self._blocks: _Blocks | None = None  #: derived from ``points`` and ``labels``
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
        sorted by label."""
        points = np.asarray(points, dtype=np.float64)
        if centre is None:
            centre = points.mean(axis=0)
            points = points - centre
        order = np.argsort(labels, kind="stable")
        self.points, self.labels = points[order].astype(np.float32), labels[order]
        self.centre = np.asarray(centre, dtype=np.float64)
        self._blocks = _Blocks.of(self.points, self.labels, self.k)
        self._reach = float32_reach(self.points.shape[1])  #: inputs are clipped there

    def score(self, probe: Probe) -> np.ndarray:
        if self.points is None or self._blocks is None:
            raise ValueError("the neighbours detector is not fitted")
        # past the reach of float32 squares an input is far from every point anyway:
        # clipped there, its distances stay finite (and large)
        x = np.clip(self.features(probe.x) - self.centre, -self._reach,
                    self._reach).astype(np.float32)
        # Per block its k nearest; the predicted label's k nearest are the "same" group,
        # the k nearest among all the other labels' the "other" group.
        nearest = self._blocks.nearest(x, self.k)  # (n, blocks, k)
        mine = self._blocks.label[None, :] == probe.predicted[:, None]
        apart = np.where(np.stack([mine, ~mine], axis=1), np.float32(0), np.float32(np.inf))
        groups = nearest.reshape(len(x), 1, -1) + apart.repeat(self.k, axis=2)
        mean, found = _mean_distance(_smallest(groups, self.k))  # (n, 2) each
        lost = ~found.all(axis=1)
        if lost.any():  # a label with no clean points counts as far as the farthest point
            farthest = np.sqrt(self._squared(x[lost]).max(axis=1))
            mean[lost] = np.where(found[lost], mean[lost], farthest[:, None])
        return np.log(mean[:, 0] + 1e-9) - np.log(mean[:, 1] + 1e-9)

    def _squared(self, x: np.ndarray) -> np.ndarray:
        """(n, points) squared distances in float32, as :meth:`score` computes them."""
        assert self.points is not None
        norms = (self.points * self.points).sum(1)
        squared = (x * x).sum(1)[:, None] + norms[None] - 2 * (x @ self.points.T)
        return np.maximum(squared, 0.0)

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


def _mean_distance(squared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Along the last axis, the mean of the finite distances among ``squared`` (squared
    distances), and whether there was any (the mean is 0 where there was none)."""
    finite = np.isfinite(squared)
    total = np.sqrt(np.where(finite, squared, 0.0)).sum(axis=-1)
    count = finite.sum(axis=-1)
    return total / np.maximum(count, 1), count > 0


def _smallest(values: np.ndarray, k: int) -> np.ndarray:
    """``values`` (n, g, m): per row and group, the ``k`` smallest, in no order:
    (n, g, k)."""
    return values if values.shape[2] <= k else np.partition(values, k - 1, axis=2)[..., :k]


class _Blocks:
    """The points laid out for one matrix product per call: each label's points in blocks
    of ``width`` columns (a label with more points takes several, the last padded), so
    that one in-place partition of the (n, blocks, width) products gives every block's
    ``k`` nearest; a label's ``k`` nearest are then the ``k`` smallest among its blocks'.

    Padding columns hold a zero point of infinite norm: never among the nearest unless a
    label has fewer than ``k`` points, where they stand for the missing ones (inf)."""

    def __init__(self, scaled: np.ndarray, norms: np.ndarray, label: np.ndarray,
                 width: int) -> None:
        self.scaled = scaled  #: (d, blocks * width) float32: -2 times the points
        self.norms = norms  #: (blocks * width,) float32: each point's squared norm
        self.label = label  #: (blocks,) the label of each block
        self.width = width

    @classmethod
    def of(cls, points: np.ndarray, labels: np.ndarray, k: int) -> _Blocks:
        """Blocks of ``points`` (float32, sorted by ``labels``)."""
        classes, starts, counts = np.unique(labels, return_index=True, return_counts=True)
        width = _block_width(counts, k)
        per_label = -(-counts // width)  # blocks per label, rounded up
        first = np.r_[0, np.cumsum(per_label)[:-1]] * width
        padded = np.zeros((int(per_label.sum()) * width, points.shape[1]), dtype=np.float32)
        norms = np.full(len(padded), np.inf, dtype=np.float32)
        for begin, start, count in zip(first, starts, counts):
            padded[begin:begin + count] = points[start:start + count]
            norms[begin:begin + count] = (points[start:start + count] ** 2).sum(1)
        return cls(np.ascontiguousarray(-2 * padded.T), norms,
                   np.repeat(classes, per_label), width)

    def nearest(self, x: np.ndarray, k: int) -> np.ndarray:
        """(n, blocks, k) float32: per row of ``x`` and block, the ``k`` smallest squared
        distances (inf for padding), in no order."""
        # |x - p|^2 = |x|^2 + |p|^2 - 2 x.p; |x|^2 is the same along a row, so the order
        # is decided without it and it is added to the k kept (as is the clamp at 0: a
        # rounding error can make a tiny distance negative)
        partial = x @ self.scaled
        partial += self.norms
        blocks = partial.reshape(len(x), -1, self.width)
        blocks.partition(k - 1, axis=2)
        nearest = blocks[:, :, :k] + (x * x).sum(1)[:, None, None]
        return np.maximum(nearest, 0.0, out=nearest)


def _block_width(counts: np.ndarray, k: int) -> int:
    """Columns per block (at least ``k``) for labels with ``counts`` points: the fewest
    columns in all, padding included, with each block counted as ``4 k`` columns more
    (the per-call work on its ``k`` nearest costs about that much, measured on digits).
    One block per label where labels are about balanced."""
    largest = int(counts.max())
    widths = {max(k, -(-largest // parts)) for parts in range(1, 65)}

    def cost(width: int) -> int:
        blocks = -(-counts // width)
        return int((blocks * width).sum() + 4 * k * blocks.sum())
    return min(widths, key=lambda w: (cost(w), -w))
