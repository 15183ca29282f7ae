"""The original tool's structural checks as calibrated detectors.

As fixed limits, ``max_gradient`` (largest jump between neighbouring values) and
``min_sparsity`` (share of non-zero values) fire on ordinary data or never; standardised
against clean data they only fire on inputs whose structure clean inputs never have.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..arrays import largest_jump
from . import arguments
from .base import Detector, Probe


class JumpDetector(Detector):
    """Largest jump between neighbouring values (along rows and columns of images)."""

    name = "jump"

    def __init__(self, image_shape: tuple[int, int] | None = None) -> None:
        self.image_shape = arguments.image_shape(image_shape)

    def score(self, probe: Probe) -> np.ndarray:
        x = probe.x
        if self.image_shape is not None:
            x = arguments.as_images(x, self.image_shape, channels=False)
        return largest_jump(x, len(x))

    def config(self) -> dict[str, Any]:
        return {"image_shape": list(self.image_shape) if self.image_shape else None}


class SparsityDetector(Detector):
    """Share of zero values: unusually empty (or unusually full) inputs stand out.

    Only where zeros are common enough to mean something (at least ``MIN_SHARE`` of the
    calibration values, and at most ``1 - MIN_SHARE``: a digit's background, sparse
    counts). Elsewhere (textured images, min-max scaled tabular features, where a zero is
    merely some feature's smallest value) the detector abstains, scoring 0: a clean input
    that happened to hold one zero, where calibration held none, was otherwise rarer than
    any clean score by millions of decades, and on tabular data an attack's clipping to
    the value range is an artefact of the scaling, not evidence."""

    name = "sparsity"
    two_sided = True
    state_keys = ("active",)
    #: Least share of calibration values at zero (and of values off it) for zeros to count.
    MIN_SHARE = 0.05

    def __init__(self) -> None:
        self.active = True  #: files from before the abstention kept every sparsity check

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        share = float((probe.x == 0).mean()) if probe.x.size else 0.0
        self.active = self.MIN_SHARE <= share <= 1.0 - self.MIN_SHARE

    def score(self, probe: Probe) -> np.ndarray:
        flat = probe.x.reshape(len(probe.x), -1)
        if not self.active:  # abstains (a NaN input stays suspect)
            return np.where(np.isnan(flat).any(axis=1), np.nan, 0.0)
        return (flat == 0).sum(axis=1) / flat.shape[1]  # the share of zeros

    def state(self) -> dict[str, Any]:
        return {"active": np.asarray([1.0 if self.active else 0.0])}

    def load_state(self, state: dict[str, Any]) -> None:
        if "active" in state:
            flag = arguments.array(state, "active", 1, rows=1)[0]
            if flag not in (0.0, 1.0):
                raise ValueError(f"sparsity: member 'active' is {flag}; expected 0 or 1")
            self.active = bool(flag)
