"""Scoring a set of implemented controls against a threat catalogue.

Risk, 0–100::

    weight(t) = likelihood(t) × impact(t)      likelihood low/medium/high = 1/2/3,
                                               impact = severity low/medium/high/critical = 1/2/3/4
    risk      = 100 × Σ_t weight(t) × missing(t) / controls(t)  /  Σ_t weight(t)

where ``controls(t)`` is how many controls threat ``t`` names and ``missing(t)`` how many of
them are not implemented: a threat left wholly uncovered adds its full weight, a threat
half covered half of it; no control at all scores 100, every control 0. Implementing a
missing control ``c`` lowers the score by ``100 × Σ_{t ∋ c} weight(t) / controls(t) /
Σ_t weight(t)`` points — the order in which missing controls are recommended.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import ConfigurationError
from .catalogue import Catalogue, Threat, control_ids, load_catalogue

#: The original tool's risk levels: Critical >= 75, High >= 50, Medium >= 25, else Low.
RISK_LEVELS = ((75, "Critical"), (50, "High"), (25, "Medium"), (0, "Low"))


def risk_level(score: float) -> str:
    return next(level for floor, level in RISK_LEVELS if score >= floor)


@dataclass(frozen=True)
class ControlStatus:
    """Whether a control is in place, and what says so (``source``: "guard" for a live
    guard's configuration, "declared" for the user's word, "given" for a plain list)."""

    id: str
    name: str
    implemented: bool
    detail: str = ""
    source: str = "given"


@dataclass(frozen=True)
class ThreatFinding:
    """A threat with at least one of its controls missing."""

    id: str
    category: str
    severity: str
    likelihood: str
    description: str
    impact: str
    controls: list[str]
    missing_controls: list[str]
    weight: int
    uncovered_share: float
    owasp: list[str]
    atlas_techniques: list[str]
    atlas_mitigations: list[str]
    notes: list[str]


@dataclass(frozen=True)
class MissingControl:
    id: str
    name: str
    description: str
    observed: str
    threats: list[str]
    risk_reduction: float  #: points the score drops by once this control is in place
    how: str = ""


@dataclass
class Assessment:
    catalogue: str
    subject: str
    timestamp: str
    risk_score: float
    risk_level: str
    controls: list[ControlStatus]
    threats: list[ThreatFinding]
    missing_controls: list[MissingControl]
    recommendations: list[str] = field(default_factory=list)

    @property
    def missing_ids(self) -> list[str]:
        return [m.id for m in self.missing_controls]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ThreatModeler:
    """Assesses implemented controls against one catalogue (built-in name or file)."""

    def __init__(self, catalogue: Catalogue | str = "model-endpoint") -> None:
        self.catalogue = catalogue if isinstance(catalogue, Catalogue) else load_catalogue(
            catalogue)

    def assess(self, implemented: Iterable[str] | Mapping[str, ControlStatus], *,
               subject: str = "", how: Mapping[str, str] | None = None) -> Assessment:
        """Score ``implemented`` control ids (or a full control → status mapping).

        ``how`` maps a control id to the setting that turns it on, for recommendations.
        Raises :class:`ConfigurationError` (a ``ValueError``) for ids the catalogue lacks.
        """
        statuses = self._statuses(implemented)
        in_place = {cid for cid, s in statuses.items() if s.implemented}
        threats = self.catalogue.threats
        total_weight = sum(t.weight for t in threats)
        findings, reduction = [], {}
        uncovered = 0.0
        for threat in threats:
            missing = [c for c in threat.controls if c not in in_place]
            share = len(missing) / len(threat.controls)
            uncovered += threat.weight * share
            for cid in missing:
                reduction[cid] = reduction.get(cid, 0.0) + threat.weight / len(threat.controls)
            if missing:
                findings.append(_finding(threat, missing, share))
        score = round(100 * uncovered / total_weight, 1)
        findings.sort(key=lambda f: -f.weight * f.uncovered_share)
        missing_controls = [
            MissingControl(cid, self.catalogue.controls[cid].name,
                           self.catalogue.controls[cid].description,
                           self.catalogue.controls[cid].observed,
                           [t.id for t in threats if cid in t.controls],
                           round(100 * points / total_weight, 1), (how or {}).get(cid, ""))
            for cid, points in sorted(reduction.items(), key=lambda kv: (-kv[1], kv[0]))]
        return Assessment(
            catalogue=self.catalogue.name, subject=subject,
            timestamp=datetime.now(timezone.utc).isoformat(), risk_score=score,
            risk_level=risk_level(score), controls=list(statuses.values()),
            threats=findings, missing_controls=missing_controls,
            recommendations=[_recommendation(m) for m in missing_controls])

    def _statuses(self, implemented: Iterable[str] | Mapping[str, ControlStatus]
                  ) -> dict[str, ControlStatus]:
        if isinstance(implemented, Mapping):
            given = dict(implemented)
            odd = sorted(str(c) for c, s in given.items() if not isinstance(s, ControlStatus))
            if odd:
                raise ConfigurationError(
                    f"a mapping of controls must map each id to a ControlStatus; received "
                    f"other values for {odd!r:.200} (pass a set of the ids in place instead)")
        else:
            ids = control_ids(implemented, "implemented controls")
            bad = [c for c in ids if not isinstance(c, str)]
            if bad:
                raise ConfigurationError(f"control ids must be strings; received {bad!r:.200}")
            given = {cid: ControlStatus(cid, "", True) for cid in ids}
        unknown = self.catalogue.unknown(set(given))
        if unknown:
            raise ConfigurationError(
                f"unknown control id{'s' if len(unknown) > 1 else ''} {unknown} for the "
                f"{self.catalogue.name} catalogue; expected ids among "
                f"{sorted(self.catalogue.controls)}")
        statuses = {}
        for cid, control in self.catalogue.controls.items():
            status = given.get(cid)
            statuses[cid] = ControlStatus(
                cid, control.name, status.implemented if status else False,
                status.detail if status else "", status.source if status else "given")
        return statuses


def _finding(threat: Threat, missing: list[str], share: float) -> ThreatFinding:
    return ThreatFinding(
        threat.id, threat.category, threat.severity, threat.likelihood, threat.description,
        threat.impact, list(threat.controls), missing, threat.weight, round(share, 3),
        list(threat.owasp), list(threat.atlas_techniques), list(threat.atlas_mitigations),
        list(threat.notes))


def _recommendation(missing: MissingControl) -> str:
    text = (f"Implement {missing.name} (lowers the risk score by {missing.risk_reduction:g} "
            f"points; counters {', '.join(missing.threats)})")
    return f"{text}: {missing.how}" if missing.how else text
