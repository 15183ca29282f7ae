"""Confidence margin: minimal-perturbation attacks (Carlini-Wagner, DeepFool) stop just
past the decision boundary, where the top two classes are nearly tied."""

from __future__ import annotations

import numpy as np

from .base import Detector, Probe


class MarginDetector(Detector):
    name = "margin"

    def score(self, probe: Probe) -> np.ndarray:
        top2 = np.sort(probe.probabilities, axis=1)[:, -2:]
        if top2.shape[1] < 2:  # a model of one class: no runner-up, nothing is close
            return 1.0 - top2[:, -1]
        return 1.0 - (top2[:, 1] - top2[:, 0])
