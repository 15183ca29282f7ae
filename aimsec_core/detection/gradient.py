"""Gradient analysis: the size of the input gradient of the loss at the predicted label.

On clean, confidently classified input the loss is flat around the prediction; inputs
pushed across a boundary sit where it is steep. The gradient comes from the same forward
pass that produced the caller's prediction (GraN, Lust & Condurache 2020, uses the same
signal layer by layer).
"""

from __future__ import annotations

import numpy as np

from .base import Detector, Probe


class GradientNormDetector(Detector):
    name = "gradient"
    needs_gradient = True

    def score(self, probe: Probe) -> np.ndarray:
        if probe.gradient is None:
            raise ValueError("the gradient detector needs an input gradient")
        flat = np.asarray(probe.gradient, dtype=np.float64).reshape(len(probe.x), -1)
        return np.log(np.linalg.norm(flat, axis=1) + 1e-12)
