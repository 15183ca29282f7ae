"""Disagreement with a second, adversarially trained classifier.

An attacker with a bounded perturbation moves the protected model's prediction easily and
a robust model's hardly: a classifier that resists ``eps``-perturbations (``robust_mlp``,
PGD adversarial training, Madry et al. 2018) still prefers the input's true class where
the protected model has been pushed to another. The detector trains such a classifier on
clean inputs labelled by the protected model itself (no ground truth needed), and scores
how strongly it prefers some other class over the one the model predicts:
``max_{j != predicted} r_j - r_predicted``, ``r`` its logits (negative where it agrees).

This is the constructive side of Tramèr's observation ("Detecting adversarial examples is
(nearly) as hard as classifying them", ICML 2022): a detector is robust at a budget only
where some classifier is, so the detector builds one. It needs no secret and no
randomness; an attacker who knows its weights (they are in the calibration file) must
move it as well, which a bounded perturbation can do only where the classes lie within
about twice ``eps`` of each other. On digits it lifted the detection of the strongest
adaptive attack (every detector in the loss, this one included, targeted, best of all
targets) from 0.44-0.49 to 0.69-0.79 at 5% false positives (torch CNN, seeds 0-2, mean
0.75; README, "Measuring it"); where the attack's budget exceeds half the distance between classes
(the textured digits at 0.2) it adds nothing.

``eps`` is chosen from the clean data unless given: ``EPS_SHARE`` times the median, over
clean inputs, of the L-infinity distance to the nearest clean input the model labels
otherwise (digits: 0.25 x 0.75 = 0.19). A classifier cannot resist more than half that
distance, and the data, not a fixed number, says how far apart its classes are; a
smaller share keeps clean accuracy, and so the false-positive cost, down. On digits
(60 epochs, three seeds) the strongest adaptive attack was caught at 0.73, 0.72 and 0.59
on average with shares of 0.2, 0.27 and 0.4; 150 epochs at 0.25 gave 0.75-0.76.
Training costs ``min(updates, epochs * n / 64)`` steps of ``attack_steps + 1`` passes over
a batch of 64 (about 5 s on digits, one core); scoring, two small matrix products (about
0.09 ms for a batch of 64 digits, a fifth of the CNN's own forward pass).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CalibrationError
from . import arguments
from .base import Detector, Probe
from .robust_mlp import BATCH, RobustMLP
from .suite import single_threaded_blas

#: ``eps`` as a share of the median L-infinity distance between differently labelled
#: clean inputs (a classifier can resist at most half of it).
EPS_SHARE = 0.25
#: Clean inputs the median distance is measured on (a seeded random subset).
DISTANCE_SAMPLES = 1000


class RobustDetector(Detector):
    name = "robust"
    learns = True
    multiplies_matrices = True
    #: Fitted once on reference data where the calibration has some (see suite.py).
    fits_on_reference = True
    state_keys = ("w1", "b1", "w2", "b2", "eps")

    def __init__(self, eps: float | None = None, hidden: int = 512, epochs: int = 150,
                 updates: int = 3000, attack_steps: int = 3, max_samples: int = 20_000,
                 seed: int = 0) -> None:
        self.eps_setting = None if eps is None else arguments.real("eps", eps, 0.0, 1e6)
        self.hidden = arguments.whole("hidden", hidden, 1, 4096)
        self.epochs = arguments.whole("epochs", epochs, 1, 10_000)
        self.updates = arguments.whole("updates", updates, 1, 1_000_000)
        self.attack_steps = arguments.whole("attack_steps", attack_steps, 0, 100)
        self.max_samples = arguments.whole("max_samples", max_samples, 1, 10_000_000)
        self.seed = arguments.whole("seed", seed, 0, 2**63 - 1)
        self.classifier: RobustMLP | None = None
        self.eps: float | None = None  #: the budget it was trained for, in the data's units

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        x = probe.x.reshape(len(probe.x), -1).astype(np.float32)
        # a model of one class still gets a classifier of two (one never predicted), so
        # the file keeps the same form; ``score`` abstains for it
        labels, classes = probe.predicted, max(probe.probabilities.shape[1], 2)
        rng = np.random.default_rng(self.seed)
        if len(x) > self.max_samples:
            keep = rng.choice(len(x), self.max_samples, replace=False)
            x, labels = x[keep], labels[keep]
        self.eps = self.eps_setting if self.eps_setting is not None else (
            EPS_SHARE * separation(x, labels, rng))
        updates = min(self.updates, -(-self.epochs * len(x) // BATCH))
        with single_threaded_blas():
            self.classifier = RobustMLP.train(
                x, labels, classes, eps=self.eps, value_range=value_range,
                hidden=self.hidden, updates=updates, attack_steps=self.attack_steps,
                seed=int(rng.integers(2**63)))

    def score(self, probe: Probe) -> np.ndarray:
        if self.classifier is None:
            raise ValueError("the robust detector is not fitted")
        classes = probe.probabilities.shape[1]
        if classes < 2:  # a model of one class: no other class to prefer
            return np.zeros(len(probe.x))
        if self.classifier.w2.shape[1] != classes:  # the file was made for another model
            raise CalibrationError(
                f"the calibration's robust detector has a classifier of "
                f"{self.classifier.w2.shape[1]} classes; the model gives {classes}: "
                "recalibrate on this model")
        logits = self.classifier.logits(
            probe.x.reshape(len(probe.x), -1).astype(np.float32, copy=False)
        ).astype(np.float64)
        rows, predicted = np.arange(len(logits)), probe.predicted
        own = logits[rows, predicted]
        logits[rows, predicted] = -np.inf
        return logits.max(axis=1) - own

    def state(self) -> dict[str, Any]:
        assert self.classifier is not None and self.eps is not None
        c = self.classifier
        return {"w1": c.w1, "b1": c.b1, "w2": c.w2, "b2": c.b2,
                "eps": np.asarray([self.eps])}

    def load_state(self, state: dict[str, Any]) -> None:
        w1 = arguments.array(state, "w1", 2)
        w2 = arguments.array(state, "w2", 2, rows=w1.shape[1])
        b1 = arguments.array(state, "b1", 1, rows=w1.shape[1])
        b2 = arguments.array(state, "b2", 1, rows=w2.shape[1])
        if w2.shape[1] < 2:
            raise ValueError(f"robust: the classifier has {w2.shape[1]} classes; expected "
                             "at least 2")
        for key, value in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
            arguments.bounded(key, value, arguments.FLOAT32_MAX ** 0.25,
                              "the classifier computes in float32")
        self.eps = float(arguments.array(state, "eps", 1, rows=1)[0])
        self.classifier = RobustMLP(*(np.asarray(v, dtype=np.float32)
                                      for v in (w1, b1, w2, b2)))

    def check_state(self, width: int) -> None:
        assert self.classifier is not None
        if self.classifier.w1.shape[0] != width:
            raise ValueError(f"robust: the classifier reads {self.classifier.w1.shape[0]} "
                             f"values; the calibrated samples have {width}")

    def config(self) -> dict[str, Any]:
        return {"eps": self.eps_setting, "hidden": self.hidden, "epochs": self.epochs,
                "updates": self.updates, "attack_steps": self.attack_steps,
                "max_samples": self.max_samples, "seed": self.seed}


def separation(x: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> float:
    """Median over (at most :data:`DISTANCE_SAMPLES`) inputs of the L-infinity distance
    to the nearest input labelled otherwise; 0 where every label is the same."""
    if len(x) > DISTANCE_SAMPLES:
        keep = rng.choice(len(x), DISTANCE_SAMPLES, replace=False)
        x, labels = x[keep], labels[keep]
    nearest = np.full(len(x), np.inf)
    rows = max(1, 2**22 // max(x.size, 1))  # the (rows, n, d) differences stay ~16 MB
    for start in range(0, len(x), rows):
        part = np.abs(x[start:start + rows, None, :] - x[None, :, :]).max(axis=2)
        part[labels[start:start + rows, None] == labels[None, :]] = np.inf
        nearest[start:start + rows] = part.min(axis=1)
    finite = nearest[np.isfinite(nearest)]
    return float(np.median(finite)) if len(finite) else 0.0
