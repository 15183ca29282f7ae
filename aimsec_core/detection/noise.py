"""Prediction stability under small random noise ("The odds are odd", Roth et al. 2019):
adversarial inputs sit close to a decision boundary, so a little noise moves their
prediction far more than it moves a clean input's."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import arguments
from .base import Detector, Probe, value_range_of as _value_range


class NoiseDetector(Detector):
    name = "noise"

    state_keys = ("value_range",)

    def __init__(self, sigma: float = 0.05, draws: int = 8, seed: int = 0) -> None:
        self.sigma = arguments.real("sigma", sigma, 0.0, 10.0, open_low=True)
        self.draws = arguments.whole("draws", draws, 1, 256)
        self.seed = arguments.whole("seed", seed, 0, 2**63 - 1)
        self.value_range = (0.0, 1.0)

    @property
    def forward_passes(self) -> int:  # type: ignore[override]
        return 1  # all draws go through the model as one batch

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        self.value_range = value_range

    def score(self, probe: Probe) -> np.ndarray:
        x = probe.x
        low, high = self.value_range
        # A fixed seed makes a verdict reproducible: the same input gets the same score.
        rng = np.random.default_rng(self.seed)
        noise = rng.normal(0.0, self.sigma * (high - low), size=(self.draws, *x.shape))
        noisy = np.clip(x[None] + noise, low, high).reshape(-1, *x.shape[1:])
        moved = probe.probabilities_of(noisy).reshape(self.draws, len(x), -1)
        return np.abs(moved - probe.probabilities[None]).sum(axis=2).mean(axis=0)

    def state(self) -> dict[str, Any]:
        return {"value_range": np.asarray(self.value_range)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.value_range = _value_range(state)

    def config(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "draws": self.draws, "seed": self.seed}
