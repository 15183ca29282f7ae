"""Several detectors, one calibrated decision.

Each detector's clean scores are standardised (median and interquartile spread on the fit
half of the clean data); a sample's suspicion is its largest standardised score, and one
threshold on that maximum is set at the ``1 - fpr`` quantile of the held-out half. So the
false-positive target holds for the suite as a whole, not once per detector, and every
detector's own threshold in raw units follows from it (recorded in the calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CalibrationError
from .base import Detector, Probe


@dataclass
class SuiteScores:
    """Per-sample results of one screened batch."""

    combined: np.ndarray  #: the largest standardised score per sample
    standardised: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    flags: np.ndarray
    forward_passes: int = 0


@dataclass
class DetectorSuite:
    detectors: list[Detector]
    centre: dict[str, float] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None
    fpr_target: float | None = None

    @property
    def needs_gradient(self) -> bool:
        return any(d.needs_gradient for d in self.detectors)

    @property
    def calibrated(self) -> bool:
        return self.threshold is not None

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        """Fit every detector on clean data, then learn how its clean scores spread."""
        for detector in self.detectors:
            detector.fit(probe, value_range)
        for detector in self.detectors:
            scores = detector.score(probe)
            low, median, high = np.percentile(scores, [25, 50, 75])
            spread = (high - low) / 1.349  # the standard deviation, were scores Gaussian
            if not spread > 0:
                spread = float(np.std(scores)) or 1e-6
            self.centre[detector.name] = float(median)
            self.spread[detector.name] = float(spread)

    def set_threshold(self, probe: Probe, fpr: float) -> float:
        """Threshold at the ``1 - fpr`` quantile of held-out clean data; returns the
        false-positive rate achieved on that data."""
        if not 0 < fpr < 1:
            raise CalibrationError(f"fpr must be in (0, 1); received {fpr}")
        combined = self.score(probe, flag=False).combined
        self.threshold = float(np.quantile(combined, 1 - fpr, method="higher"))
        self.fpr_target = fpr
        return float(np.mean(combined > self.threshold))

    def score(self, probe: Probe, *, flag: bool = True) -> SuiteScores:
        raw, standardised = {}, {}
        for detector in self.detectors:
            scores = np.asarray(detector.score(probe), dtype=np.float64)
            z = (scores - self.centre[detector.name]) / self.spread[detector.name]
            raw[detector.name] = scores
            standardised[detector.name] = np.abs(z) if detector.two_sided else z
        combined = np.max(np.stack(list(standardised.values())), axis=0)
        combined = np.where(np.isnan(combined), np.inf, combined)  # NaN scores are suspect
        flags = (combined > self.threshold) if flag and self.threshold is not None else (
            np.zeros(len(combined), dtype=bool))
        return SuiteScores(combined, standardised, raw, flags, probe.forward_passes)

    def raw_thresholds(self) -> dict[str, float]:
        """Each detector's threshold in its own units (upper one for two-sided ones)."""
        if self.threshold is None:
            return {}
        return {name: self.centre[name] + self.threshold * self.spread[name]
                for name in self.centre}

    def describe(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "fpr_target": self.fpr_target,
                "detectors": {d.name: {"centre": self.centre.get(d.name),
                                       "spread": self.spread.get(d.name),
                                       "raw_threshold": self.raw_thresholds().get(d.name),
                                       "two_sided": d.two_sided,
                                       "config": d.config()}
                              for d in self.detectors}}
