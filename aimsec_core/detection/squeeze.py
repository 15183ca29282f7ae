"""Feature squeezing (Xu, Evans & Qi, NDSS 2018): compare the prediction on the input with
the prediction on squeezed copies (fewer grey levels; median-smoothed where the input is
an image). Adversarial perturbations live in the detail squeezing removes, so the
prediction moves; on clean input it barely does. Score: the largest L1 distance between
the probability vectors over the squeezers."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import arguments
from .base import Detector, Probe, value_range_of as _value_range


def reduce_bit_depth(x: np.ndarray, bits: int, low: float, high: float) -> np.ndarray:
    """``x`` on ``2 ** bits`` levels spanning ``[low, high]``, in ``x``'s dtype. Computed
    in float64: a span below float32's smallest normal would be 0 in float32 arithmetic
    (numpy keeps a float32 array's dtype), and NaN would reach the model."""
    levels = 2 ** bits - 1
    span = high - low if high > low else 1.0
    unit = np.clip((np.asarray(x, dtype=np.float64) - low) / span, 0.0, 1.0)
    squeezed = np.round(unit * levels) / levels * span + low
    return squeezed.astype(x.dtype, copy=False) if x.dtype.kind == "f" else squeezed


def median_smooth(images: np.ndarray, size: int = 2) -> np.ndarray:
    """Median over a ``size`` x ``size`` window on the last two axes (edges repeated)."""
    before, after = (size - 1) // 2, size // 2
    pad = [(0, 0)] * (images.ndim - 2) + [(before, after), (before, after)]
    padded = np.pad(images, pad, mode="edge")
    h, w = images.shape[-2:]
    windows = [padded[..., i:i + h, j:j + w] for i in range(size) for j in range(size)]
    return np.median(np.stack(windows, axis=-1), axis=-1)


class SqueezeDetector(Detector):
    """``image_shape`` lets flat inputs (e.g. 64 features of an 8x8 image) be smoothed."""

    name = "squeeze"
    state_keys = ("value_range",)

    def __init__(self, bits: int = 3, median: int = 2,
                 image_shape: tuple[int, int] | None = None) -> None:
        self.bits = arguments.whole("bits", bits, 1, 16)
        self.median = arguments.whole("median", median, 0, 16)
        self.image_shape = arguments.image_shape(image_shape)
        self.value_range = (0.0, 1.0)

    @property
    def forward_passes(self) -> int:  # type: ignore[override]
        return 2 if self.median else 1

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        self.value_range = value_range

    def _as_images(self, x: np.ndarray) -> np.ndarray | None:
        if self.image_shape is not None:
            return arguments.as_images(x, self.image_shape, channels=True)
        return x if x.ndim >= 3 else None

    def score(self, probe: Probe) -> np.ndarray:
        x = probe.x
        squeezed = [reduce_bit_depth(x, self.bits, *self.value_range)]
        images = self._as_images(x) if self.median else None
        if images is not None:
            squeezed.append(median_smooth(images, self.median).reshape(x.shape))
        distances = [np.abs(probe.probabilities_of(s) - probe.probabilities).sum(axis=1)
                     for s in squeezed]
        return np.max(distances, axis=0)

    def state(self) -> dict[str, Any]:
        return {"value_range": np.asarray(self.value_range)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.value_range = _value_range(state)

    def config(self) -> dict[str, Any]:
        return {"bits": self.bits, "median": self.median,
                "image_shape": list(self.image_shape) if self.image_shape else None}
