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
            x = x.reshape(len(x), *self.image_shape)
        return largest_jump(x, len(x))

    def config(self) -> dict[str, Any]:
        return {"image_shape": list(self.image_shape) if self.image_shape else None}


class SparsityDetector(Detector):
    """Share of zero values: unusually empty (or unusually full) inputs stand out."""

    name = "sparsity"
    two_sided = True

    def score(self, probe: Probe) -> np.ndarray:
        flat = probe.x.reshape(len(probe.x), -1)
        return (flat == 0).mean(axis=1)
