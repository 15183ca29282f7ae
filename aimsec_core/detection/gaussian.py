"""Class-conditional Gaussians with one shared (tied) covariance, the model of Lee et al.
(NeurIPS 2018): fitted on clean features labelled by the model's own predictions, scored
by Mahalanobis distance. Shared by the detectors that measure distance from clean data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TiedGaussians:
    classes: np.ndarray  #: (k,) the labels seen, sorted
    means: np.ndarray  #: (k, d)
    precision: np.ndarray  #: (d, d), symmetric positive definite

    def __post_init__(self) -> None:
        # the whitening cache has its key from the start: a first score adding it while
        # another thread copies the calibration (copy.deepcopy walks this __dict__) would
        # change the dict's size under the copy
        self._white: tuple[np.ndarray, ...] | None = None

    def __getstate__(self) -> dict[str, object]:
        """The arrays without the whitening cache (recomputed on the first score): a
        pickle or copy stays the size of the Gaussians, and keeps the cache's key."""
        state = dict(self.__dict__)
        state["_white"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        # a pickle taken by an earlier version before any score has no cache key
        self.__dict__.update(state)
        self.__dict__.setdefault("_white", None)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, shrinkage: float) -> TiedGaussians:
        """Means per label and the pooled within-class covariance, shrunk towards a scaled
        identity by ``shrinkage`` (a ridge of ``shrinkage`` times the mean variance), so
        directions clean data never uses stay finite. Raises ``LinAlgError`` if singular."""
        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        covariance = centred.T @ centred / max(len(features) - len(classes), 1)
        ridge = shrinkage * np.trace(covariance) / len(covariance)
        precision = np.linalg.inv(covariance + ridge * np.eye(len(covariance)))
        return cls(classes, means, (precision + precision.T) / 2)

    def whitened(self) -> tuple[np.ndarray, np.ndarray]:
        """``W`` with ``W W^T = precision`` (Mahalanobis distance is Euclidean after
        ``x @ W``) and the means mapped alike; computed once per precision matrix."""
        return self._whitening()[:2]

    def _whitening(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``W``, the whitened means ``M``, ``[W, -2 W M^T]`` (one product of a row with
        it gives ``z = x W`` and ``-2 z M^T``) and the means' squared norms; computed once
        per precision matrix and means."""
        cached = self._white
        if cached is None or cached[0] is not self.precision or cached[1] is not self.means:
            whitener = np.linalg.cholesky(self.precision)
            white_means = self.means @ whitener
            joint = np.hstack([whitener, -2 * (whitener @ white_means.T)])
            cached = self._white = (self.precision, self.means, whitener, white_means,
                                    joint, (white_means ** 2).sum(axis=1))
        return cached[2:]

    def _parts(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, ``|z|^2`` and ``|m|^2 - 2 z.m`` for each class mean ``m``: their sum
        is the squared distance (expanded: one matrix product, no (n, k, d) tensor)."""
        _, _, joint, norms = self._whitening()
        product = features @ joint
        z = product[:, :len(joint)]
        return np.einsum("ij,ij->i", z, z), product[:, len(joint):] + norms

    def squared_distances(self, features: np.ndarray) -> np.ndarray:
        """(n, k) squared Mahalanobis distances of each row to each class mean."""
        own, to_means = self._parts(features)
        to_means += own[:, None]
        return np.maximum(to_means, 0.0, out=to_means)

    def nearest_squared_distance(self, features: np.ndarray) -> np.ndarray:
        """(n,) squared Mahalanobis distance of each row to its nearest class mean."""
        own, to_means = self._parts(features)
        return np.maximum(own + to_means.min(axis=1), 0.0)

    def check(self, width: int | None, what: str) -> None:
        """``ValueError`` unless the arrays fit each other (and ``width`` features)."""
        d = self.means.shape[1]
        if not len(self.means):  # the score is a minimum over the classes
            raise ValueError(f"{what}: no class means; expected at least one")
        if (width is not None and d != width) or self.precision.shape != (d, d) or len(
                self.classes) != len(self.means):
            raise ValueError(f"{what}: means {self.means.shape}, precision "
                             f"{self.precision.shape} and {len(self.classes)} classes do not "
                             f"fit {width if width is not None else d} features")
        if not np.allclose(self.precision, self.precision.T):
            raise ValueError(f"{what}: the precision matrix is not symmetric")
        try:
            np.linalg.cholesky(self.precision)
        except np.linalg.LinAlgError:
            raise ValueError(f"{what}: the precision matrix is not positive definite") from None
