"""An L-infinity step in the directions clean data hardly uses: a matched filter.

L-infinity attacks (FGSM, PGD, BIM; Goodfellow et al. 2015, Madry et al. 2018) move every
input value by about the same amount, along the sign of the loss gradient. Where features
are correlated (measurements that depend on each other, redundant columns), the clean
data's within-class covariance has a *noise floor*: eigen-directions with far less
variance than the rest, below the spectrum's largest gap. A sign vector spreads over all
features, so a good part of it lands in that floor, where it is many standard deviations
long; the density detector sees it too, but diluted by every other direction.

So the score tests for exactly that displacement. With ``t`` the class the model predicts
and ``r`` its runner-up, ``s = sign(P (mu_t - mu_r))`` is the sign pattern of the linear
discriminant from ``r`` to ``t`` (``P`` the tied precision, ``mu`` the class means): the
direction an attack from ``r`` to ``t`` steps in wherever the model is close to linear,
read from the data, so no gradient is needed and the test runs for every framework.
Where the probe carries the model's input gradient (autograd adapters, when the suite
holds the gradient detector) the model's own step, ``-sign`` of the loss gradient at the
predicted label, is tested too and the larger of the two results kept: a model that is
far from linear steps where the discriminant does not. With ``W`` the whitener of the
noise floor, each test is the component of ``W'(x - mu_t)`` along ``W's``: standard
normal for clean inputs under the Gaussian model, shifted by ``eps * |W's|`` for an input
moved by ``eps * s`` (the likelihood-ratio test for a known direction). One-sided: only a
step towards ``t`` is suspect.

Where the spectrum has no clear floor (the largest ratio between neighbouring eigenvalues
under ``min_gap``: uncorrelated features, images whose pixels all vary alike) there is
nothing to look in, and the detector abstains: it scores every input 0, which the suite
reads as no evidence at all; so does an input whose predicted or runner-up class clean
data never had. Directions without any clean variance (constant features) are left out:
the density detector watches them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import arguments
from .base import InputSpaceDetector, Probe


class ShiftDetector(InputSpaceDetector):
    name = "shift"

    state_keys = ("projection", "classes", "means", "discriminants", "whitener")

    def __init__(self, min_gap: float = 3.0, shrinkage: float = 0.01, seed: int = 0) -> None:
        super().__init__(seed)
        self.min_gap = arguments.real("min_gap", min_gap, 1.0, 1e6)
        self.shrinkage = arguments.real("shrinkage", shrinkage, 0.0, 1.0, open_low=True)
        self.classes: np.ndarray | None = None  #: (k,) labels the means belong to
        self.means: np.ndarray | None = None  #: (k, d)
        self.discriminants: np.ndarray | None = None  #: (k, d): each mean times P
        self.whitener: np.ndarray | None = None  #: (d, m), m = 0 where it abstains

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        features = self.fit_features(probe.x)
        labels = probe.predicted
        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        covariance = centred.T @ centred / max(len(features) - len(classes), 1)
        variances, directions = np.linalg.eigh(covariance)  # ascending
        ridge = self.shrinkage * max(float(variances.mean()), 1e-12)
        precision = (directions / (variances + ridge)) @ directions.T
        floor = self.noise_floor(variances, ridge)
        self.classes, self.means = classes, means
        self.discriminants = means @ precision
        self.whitener = directions[:, floor] / np.sqrt(variances[floor] + ridge)

    def noise_floor(self, variances: np.ndarray, ridge: float) -> np.ndarray:
        """Indices (into ascending ``variances``) of the directions below the largest gap
        between neighbouring ``variances + ridge``, if that ratio is at least ``min_gap``;
        none otherwise. Directions without variance (under 1e-9 of the largest) take no
        part, and the ridge keeps nearly constant ones from making a gap of their own."""
        live = np.flatnonzero(variances > 1e-9 * max(float(variances.max()), 1e-300))
        if len(live) < 2:
            return live[:0]
        shrunk = variances[live] + ridge
        ratios = shrunk[1:] / shrunk[:-1]
        gap = int(np.argmax(ratios))
        return live[:gap + 1] if ratios[gap] >= self.min_gap else live[:0]

    @property
    def abstains(self) -> bool:
        return self.whitener is not None and self.whitener.shape[1] == 0

    def abstain(self) -> None:
        assert self.whitener is not None
        self.whitener = self.whitener[:, :0]

    def score(self, probe: Probe) -> np.ndarray:
        if self.whitener is None or self.means is None or self.discriminants is None:
            raise ValueError("the shift detector is not fitted")
        if self.whitener.shape[1] == 0:  # abstains (a NaN input stays suspect)
            return np.where(np.isnan(probe.x.reshape(len(probe.x), -1)).any(axis=1),
                            np.nan, 0.0)
        predicted, runner_up, known = self.classes_of(probe.probabilities)
        offset = (self.features(probe.x) - self.means[predicted]) @ self.whitener
        steps = [self.discriminant_step(predicted, runner_up)]
        if probe.gradient is not None:
            steps.append(self.gradient_step(probe.gradient))
        tests = [self.along(offset, step) for step in steps]
        # no direction to test: a class clean data never had
        return np.where(known, np.max(tests, axis=0), 0.0)

    def classes_of(self, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
        """Rows of ``means`` for the predicted and the runner-up class, and whether clean
        data had both."""
        order = np.argsort(probabilities, axis=1)
        predicted, known = self._rows(order[:, -1])
        runner_up, known_too = self._rows(order[:, -2] if order.shape[1] > 1 else order[:, -1])
        return predicted, runner_up, known & known_too

    def discriminant_step(self, predicted: np.ndarray, runner_up: np.ndarray) -> np.ndarray:
        """The sign of the discriminant from the runner-up to the predicted class, taken on
        the input values (through the projection and back where inputs are projected)."""
        assert self.discriminants is not None
        discriminant = self.discriminants[predicted] - self.discriminants[runner_up]
        if self.projection is None:
            return np.sign(discriminant)
        return np.sign(discriminant @ self.projection.T) @ self.projection

    def gradient_step(self, gradient: np.ndarray) -> np.ndarray:
        """Minus the sign of the loss gradient at the predicted label: the direction that
        made the prediction, as an attack that ended there stepped, in feature space."""
        step = -np.sign(np.asarray(gradient, dtype=np.float64).reshape(len(gradient), -1))
        return step if self.projection is None else step @ self.projection

    def along(self, offset: np.ndarray, step: np.ndarray) -> np.ndarray:
        """The component of the whitened ``offset`` along the whitened ``step`` (0 where
        the step has no part in the noise floor)."""
        assert self.whitener is not None
        towards = step @ self.whitener
        length = np.linalg.norm(towards, axis=1)
        return np.where(length > 0, (offset * towards).sum(axis=1) / np.maximum(length, 1e-300),
                        0.0)

    def _rows(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``means`` for ``labels``, and which labels clean data had at all."""
        assert self.classes is not None
        column = np.searchsorted(self.classes, labels).clip(0, len(self.classes) - 1)
        return column, self.classes[column] == labels

    def state(self) -> dict[str, Any]:
        return {**super().state(), "classes": self.classes, "means": self.means,
                "discriminants": self.discriminants, "whitener": self.whitener}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        classes = arguments.array(state, "classes", 1)
        if (classes.dtype.kind not in "iu" or not len(classes)
                or (classes.dtype.kind == "u" and classes.max() > np.iinfo(np.int64).max)
                or (np.diff(classes.astype(np.int64)) <= 0).any()):
            raise ValueError("shift: class labels must be one or more sorted distinct "
                             "int64 integers")
        self.classes = classes.astype(np.int64)
        self.means = arguments.array(state, "means", 2, rows=len(classes))
        self.discriminants = arguments.array(state, "discriminants", 2, rows=len(classes),
                                             columns=self.means.shape[1])
        self.whitener = arguments.array(state, "whitener", 2, rows=self.means.shape[1])

    def check_state(self, width: int) -> None:
        assert self.means is not None and self.whitener is not None
        features = self.feature_width(width)
        if self.means.shape[1] != features or self.whitener.shape[1] > features:
            raise ValueError(f"shift: means of width {self.means.shape[1]} and a whitener "
                             f"of {self.whitener.shape[1]} directions do not fit {features} "
                             "features")

    def config(self) -> dict[str, Any]:
        return {"min_gap": self.min_gap, "shrinkage": self.shrinkage, "seed": self.seed}
