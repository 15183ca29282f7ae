"""What one screened call produced: findings and the verdict built from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .severity import highest, rank, severity_of


@dataclass(frozen=True)
class Finding:
    """One check's objection.

    ``reason`` says which constraint was broken and for how many samples, never the input's
    values: it is what the audit trail records. ``detail`` holds what was received when that
    is derived from the values (the extremes of a range violation, a converter's message):
    it reaches the caller through :attr:`message` and the raised error, and the audit trail
    only when raw inputs are logged (``AIMSEC_LOG_INPUTS``).
    ``samples`` are the batch indices it concerns; empty when it concerns the whole call.
    ``blocking`` findings describe input the model cannot run at all (wrong type or shape):
    they refuse the call even in monitor mode. ``severity`` is one of ``low``, ``medium``,
    ``high``, ``critical``; left ``None`` it takes the check's default
    (:data:`aimsec_core.severity.DEFAULT_SEVERITY`).
    """

    check: str
    reason: str
    samples: tuple[int, ...] = ()
    expected: Any = None
    received: Any = None
    score: float | None = None
    blocking: bool = False
    severity: str | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.severity is None:
            object.__setattr__(self, "severity", severity_of(self.check))
        else:
            rank(self.severity)  # refuses an unknown severity here, not in a report later

    @property
    def message(self) -> str:
        """The reason with its detail, for the caller (errors, consoles)."""
        return f"{self.reason} ({self.detail})" if self.detail else self.reason

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check, "severity": self.severity,
                               "reason": self.reason}
        if self.detail:
            out["detail"] = self.detail
        if self.samples:
            out["samples"] = list(self.samples)
        if self.score is not None:  # JSON has no Infinity/NaN: those become strings
            out["score"] = self.score if math.isfinite(self.score) else str(self.score)
        return out


@dataclass(frozen=True)
class Verdict:
    """The outcome of one call.

    ``allowed`` says whether the call reached the model. ``flags[i]`` is true when sample
    ``i`` drew a finding; ``scores`` maps each detector to one score per sample.
    ``input_type``, ``shape`` and ``dtype`` describe the first input as far as it was read
    (also for refused calls); ``input_hash`` is empty when its bytes were not read (an
    input refused before conversion, over ``max_size``, or not numeric). ``request_id``
    comes from :func:`aimsec_core.request_id` or is generated; ``calibration_id`` is the
    digest of the calibration that screened the call (``None`` without one).
    """

    allowed: bool
    mode: str
    model: str
    client: str
    batch_size: int
    flags: tuple[bool, ...] = ()
    findings: tuple[Finding, ...] = ()
    scores: dict[str, tuple[float, ...]] = field(default_factory=dict)
    input_hash: str = ""
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    timestamp: float = 0.0
    #: The calibrated suspicion threshold and false-positive target the detectors decided
    #: with; ``None`` when no detector ran on this call.
    threshold: float | None = None
    fpr: float | None = None
    input_type: str | None = None
    request_id: str = ""
    calibration_id: str | None = None

    @property
    def clean(self) -> bool:
        """True when no check objected (in monitor mode a call can be allowed yet unclean)."""
        return not self.findings

    @property
    def flagged(self) -> list[int]:
        """Indices of the samples that drew a finding."""
        return [i for i, f in enumerate(self.flags) if f]

    def summary(self) -> str:
        """One line for logs and consoles: decision, checks, flagged samples."""
        return (f"allowed={self.allowed} checks={list(self.checks)} "
                f"flagged samples={self.flagged}")

    @property
    def severity(self) -> str | None:
        """The most serious severity among the findings (``None`` for a clean call)."""
        return highest([f.severity for f in self.findings if f.severity])

    @property
    def checks(self) -> tuple[str, ...]:
        """Names of the checks that objected, in order, without repeats."""
        if not self.findings:
            return ()
        return tuple(dict.fromkeys(f.check for f in self.findings))

    def as_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "mode": self.mode,
            "model": self.model,
            "client": self.client,
            "batch_size": self.batch_size,
            "flagged": self.flagged,
            "findings": [f.as_dict() for f in self.findings],
            "input_hash": self.input_hash,
            "shape": list(self.shape) if self.shape is not None else None,
            "dtype": self.dtype,
            "input_type": self.input_type,
            "timestamp": self.timestamp,
            "request_id": self.request_id,
            "calibration_id": self.calibration_id,
        }
