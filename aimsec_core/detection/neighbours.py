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
        self._layout: _Layout | None = None  #: derived from ``points`` and ``labels``
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
        self._layout = _Layout(self.points, self.labels, self.k)
        self._reach = float32_reach(self.points.shape[1])  #: inputs are clipped there

    def score(self, probe: Probe) -> np.ndarray:
        if self.points is None or self._layout is None:
            raise ValueError("the neighbours detector is not fitted")
        x = self.features(probe.x)  # a new float64 array: centred and clipped in place
        x -= self.centre
        # past the reach of float32 squares an input is far from every point anyway:
        # clipped there, its distances stay finite (and large)
        np.minimum(x, self._reach, out=x)
        np.maximum(x, -self._reach, out=x)
        x = x.astype(np.float32)
        squared = self._layout.nearest(x, probe.predicted)  # (n, 2, k)
        total = np.sqrt(squared).sum(axis=2)
        if np.isfinite(total.sum()):  # k points in each group: the means' log ratio
            logs = np.log(total + self.k * 1e-9)
            return logs[:, 0] - logs[:, 1]
        # fewer than k points in a group, none at all, or a NaN input
        mean, found = _mean_distance(squared)  # (n, 2) each
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


#: Most values per sorted chunk of a row: numpy's vectorised sort is fastest on rows of up
#: to a few hundred values and sorts a row in steps of powers of two (x86-64, 64 rows of
#: 1,004 values: in 2 chunks of 502 in 34 us, in 4 of 251 in 34, in 3 of 335 in 49, whole
#: in 65; a partition takes 52), so a longer row is sorted in chunks and their ``k``
#: smallest merged.
CHUNK = 512


def _split(total: int, k: int) -> tuple[int, int]:
    """``(chunks, width)``: at least ``total`` columns as equal chunks of at most
    :data:`CHUNK` values where ``k`` allows, and of at least ``k``."""
    chunks = max(1, min(-(-total // CHUNK), total // k))
    return chunks, -(-total // chunks)


def _smallest(values: np.ndarray, chunks: int, k: int) -> np.ndarray:
    """``values`` (n, chunks * width), sorted in place chunk by chunk: per row its ``k``
    smallest, ascending, (n, k)."""
    n = len(values)
    parts = values.reshape(n, chunks, -1)
    parts.sort(axis=2)
    if chunks == 1:
        return values[:, :k]
    heads = parts[:, :, :k].reshape(n, -1)  # a copy: each chunk's k smallest
    heads.sort(axis=1)
    return heads[:, :k]


#: Labels up to which :class:`_Layout` finds a label's columns through a table.
LABEL_TABLE = 1 << 16


class _Layout:
    """The points laid out for one matrix product and two row selections per call.

    Columns: each point once, sorted by label, then at least one padding column (a zero
    point of infinite norm: its distance is inf), as many as make equal chunks of at least
    ``k`` (:func:`_split`). ``columns`` holds per label the columns of
    its points, padded with a padding column to the largest label's count (and to at least
    ``k``), in equal chunks too; its last row is all padding, for a predicted label that
    no clean point has. A row's "same" group is then gathered through its label's columns,
    and its "other" group is what the row holds once those columns are set to inf."""

    def __init__(self, points: np.ndarray, labels: np.ndarray, k: int) -> None:
        """``points`` float32 (n, d), sorted by ``labels`` (n,)."""
        classes, starts, counts = np.unique(labels, return_index=True, return_counts=True)
        n = len(points)
        self.k = k
        self.other_chunks, width = _split(max(n + 1, k), k)
        self.scaled = np.zeros((points.shape[1], self.other_chunks * width), dtype=np.float32)
        self.scaled[:, :n] = -2 * points.T  #: (d, columns): -2 times each point
        self.norms = np.full(self.scaled.shape[1], np.inf, dtype=np.float32)
        self.norms[:n] = (points * points).sum(axis=1)  #: (columns,) squared norms
        self.classes = classes
        self.same_chunks, width = _split(max(int(counts.max()), k), k)
        self.columns = np.full((len(classes) + 1, self.same_chunks * width), n, dtype=np.intp)
        for row, (start, count) in enumerate(zip(starts, counts)):
            self.columns[row, :count] = np.arange(start, start + count)
        # Predicted labels are column indices of the model's scores: each one's row of
        # ``columns`` read from a table (its last entry, the padding row, for any label
        # past the largest), where the labels are such indices and few.
        self.row_of: np.ndarray | None = None
        if 0 <= classes[0] and classes[-1] < LABEL_TABLE:
            self.row_of = np.full(int(classes[-1]) + 2, len(classes), dtype=np.intp)
            self.row_of[classes] = np.arange(len(classes))

    def nearest(self, x: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """(n, 2, k) float32 squared distances of each row of ``x`` to its ``k`` nearest
        points labelled ``predicted`` ([:, 0]) and labelled otherwise ([:, 1]); inf where
        a group has fewer than ``k`` points."""
        # |x - p|^2 = |x|^2 + |p|^2 - 2 x.p; |x|^2 is the same along a row, so the order
        # is decided without it and it is added to the k kept (as is the clamp at 0: a
        # rounding error can make a tiny distance negative)
        partial = x @ self.scaled
        partial += self.norms
        if self.row_of is not None:
            own = self.columns[self.row_of[np.minimum(predicted, len(self.row_of) - 1)]]
        else:  # labels from a file that no model's scores index
            row = np.searchsorted(self.classes, predicted).clip(0, len(self.classes) - 1)
            own = self.columns[np.where(self.classes[row] == predicted, row,
                                        len(self.classes))]
        rows = np.arange(len(x))[:, None]
        same = partial[rows, own]
        partial[rows, own] = np.inf  # left: the points of every other label
        nearest = np.empty((len(x), 2, self.k), dtype=np.float32)
        nearest[:, 0] = _smallest(same, self.same_chunks, self.k)
        nearest[:, 1] = _smallest(partial, self.other_chunks, self.k)
        nearest += np.einsum("ij,ij->i", x, x)[:, None, None]
        return np.maximum(nearest, 0.0, out=nearest)
