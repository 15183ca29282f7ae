"""Agreement of an input's shape with its predicted class: the ``neighbours`` detector
(Deep k-Nearest Neighbors in the spirit of Papernot & McDaniel 2018) on the input's
support, the pattern of values above the data's floor, instead of on the values.

Where the floor carries meaning (a digit's strokes on an exactly-zero background, a
sparse count vector, a mask) the support alone says which class an input resembles. An
attacker then has two choices, and each is seen by a different detector: keep the
support (it then still has the shape of the class it came from, while the model is made
to predict another, which this detector measures), or change it (the share of values at
the floor moves, which ``sparsity`` measures, or, at an unchanged share, the shape still
has to become another class's). Against attacks that keep the zero pattern this lifts
detection (digits, the zero-keeping adaptive attack: 0.62 to 0.75); an attacker free to
move the pattern, aiming at both through a relaxed pattern (``aimsec evaluate
--adaptive``, "support-aware"), reshapes the digit within budget and is caught at 0.40,
no better than without it. So it is optional, not a default.

Score: ``log(d_same / d_other)`` as in ``neighbours``, on the 0/1 support vectors (so
squared distances count the positions where two supports differ). On data where the
floor means nothing (fewer than ``MIN_SHARE`` of the calibration values at the floor, or
more than ``1 - MIN_SHARE``: textured images, min-max scaled tabular features) the
detector switches itself off: its score is 0 for every input, so it neither costs time
nor changes the suite's verdicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import arguments
from .base import Probe
from .neighbours import NeighbourDetector


class SupportDetector(NeighbourDetector):
    name = "support"

    state_keys = ("projection", "points", "labels", "centre", "floor")
    #: Least share of calibration values at the floor (and of values above it) for the
    #: support to carry information.
    MIN_SHARE = 0.05

    def __init__(self, k: int = 5, max_points: int = 1000, seed: int = 0) -> None:
        super().__init__(k, max_points, seed)
        self.floor: float | None = None

    @property
    def active(self) -> bool:
        return self.points is not None

    @property
    def abstains(self) -> bool:
        return self.floor is not None and not self.active

    def abstain(self) -> None:
        self.points = self.labels = self.centre = self._layout = None
        self.projection = None

    def support(self, x: np.ndarray) -> np.ndarray:
        """(n, d) float32: 1 where a value is above the floor, 0 where it is at or below."""
        if self.floor is None:
            raise ValueError("the support detector is not fitted")
        return (x.reshape(len(x), -1) > self.floor).astype(np.float32)

    def _as_support(self, probe: Probe) -> Probe:
        return Probe(self.support(probe.x), probe.probabilities, probe.ask)

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        self.floor = float(value_range[0])
        self.points = self.labels = self.centre = None
        self.projection = None
        at_floor = 1.0 - float(self.support(probe.x).mean()) if len(probe.x) else 0.0
        if self.MIN_SHARE <= at_floor <= 1.0 - self.MIN_SHARE:
            super().fit(self._as_support(probe), value_range)

    def score(self, probe: Probe) -> np.ndarray:
        if self.floor is None:
            raise ValueError("the support detector is not fitted")
        if not self.active:
            return np.zeros(len(probe.x))
        return super().score(self._as_support(probe))

    def state(self) -> dict[str, Any]:
        floor = {"floor": np.asarray([self.floor], dtype=np.float64)}
        return {**super().state(), **floor} if self.active else floor

    def load_state(self, state: dict[str, Any]) -> None:
        self.floor = float(arguments.array(state, "floor", 1, rows=1)[0])
        if "points" in state:
            super().load_state(state)
        else:
            self.points = self.labels = self.centre = self._layout = None
            self.projection = None

    def check_state(self, width: int) -> None:
        if self.active:
            super().check_state(width)
