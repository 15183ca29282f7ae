"""The original tool's ``ChatbotThreatModeler``, on the chatbot threat catalogue.

>>> from aimsec_core import ChatbotThreatModeler
>>> modeler = ChatbotThreatModeler()
>>> assessment = modeler.assess_implementation({"api_authentication", "rate_limiting"})
>>> report = modeler.generate_report(assessment)
>>> report["risk_level"], len(report["missing_controls"])
('Critical', 7)

Same names, arguments, keys, risk levels and score formula as the original (the share of
the 14 controls missing, plus 10 per applicable critical threat, capped at 100), without
its defects: the catalogue is never changed by an assessment (each instance holds its own
copy, and assessments hold their own data), a control missing for two threats is listed
once, unknown control ids are refused with :class:`~aimsec_core.ConfigurationError` (also
a ``ValueError``), and nothing configures logging.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from numbers import Real
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..files import as_path
from ..threats.catalogue import control_ids, load_catalogue
from ..threats.modeler import risk_level

#: Points the original adds to the score for each applicable critical threat.
CRITICAL_THREAT_POINTS = 10


class ChatbotThreatModeler:
    """Scores a chatbot deployment's implemented controls against known threats."""

    def __init__(self) -> None:
        catalogue = load_catalogue("chatbot")
        #: control id -> {"name", "description"}; this instance's own copy.
        self.security_controls: dict[str, dict[str, str]] = {
            c.id: {"name": c.name, "description": c.description}
            for c in catalogue.controls.values()}
        #: the known threats, with the original's keys.
        self.threats: list[dict[str, Any]] = [
            {"category": t.category, "severity": t.severity, "description": t.description,
             "impact": t.impact, "likelihood": t.likelihood,
             "recommended_controls": list(t.controls)}
            for t in catalogue.threats]

    def assess_implementation(self, implemented_controls: Iterable[str]) -> dict[str, Any]:
        """``{"threats", "missing_controls", "risk_score", "timestamp"}`` for the given
        implemented control ids; raises ``ConfigurationError`` for an unknown id."""
        implemented = control_ids(implemented_controls, "implemented_controls")
        unknown = sorted(str(c) for c in implemented if c not in self.security_controls)
        if unknown:
            raise ConfigurationError(
                f"unknown control id{'s' if len(unknown) > 1 else ''} {unknown}; expected ids "
                f"among {sorted(self.security_controls)}")
        applicable, missing = [], {}
        for threat in self.threats:
            absent = [c for c in threat["recommended_controls"] if c not in implemented]
            if absent:
                applicable.append(copy.deepcopy(threat))
                missing.update(dict.fromkeys(absent))
        return {"threats": applicable, "missing_controls": list(missing),
                "risk_score": self._score(applicable, implemented),
                "timestamp": datetime.now(timezone.utc).isoformat()}

    def _score(self, applicable: list[dict[str, Any]], implemented: set[str]) -> float:
        total = len(self.security_controls)
        share_missing = 100 * (total - len(implemented)) / total
        critical = sum(1 for t in applicable if t["severity"] == "critical")
        return round(min(100.0, share_missing + CRITICAL_THREAT_POINTS * critical), 1)

    def generate_report(self, assessment: dict[str, Any]) -> dict[str, Any]:
        """The original report: timestamp, risk score and level, threats, missing controls
        (name and description, once each) and recommendations."""
        score, missing, threats = _assessment_parts(assessment)
        unknown = [c for c in missing if c not in self.security_controls]
        if unknown:
            raise ConfigurationError(f"the assessment names unknown controls {unknown}")
        return {
            "timestamp": assessment.get("timestamp",
                                        datetime.now(timezone.utc).isoformat()),
            "risk_score": score,
            "risk_level": risk_level(score),
            "threats": _copied([{k: t[k] for k in _THREAT_KEYS} for t in threats]),
            "missing_controls": [dict(self.security_controls[c]) for c in missing],
            "recommendations": [
                f"Implement {self.security_controls[c]['name']}: "
                f"{self.security_controls[c]['description']}" for c in missing],
        }

    def export_report(self, report: dict[str, Any], filename: str | Path) -> None:
        """Write ``report`` as JSON to ``filename``. numpy values, sets and datetimes are
        written as JSON numbers, lists and ISO 8601 text. Raises
        :class:`ConfigurationError` for a report JSON cannot hold (other objects, NaN or
        infinity, a reference cycle) or a ``filename`` that cannot be written (a folder, in
        a missing folder, a name too long)."""
        try:
            text = json.dumps(report, indent=2, default=_json_value, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ConfigurationError(f"the report cannot be written as JSON: {exc}; expected "
                                     "the dict generate_threat_report returns") from None
        path = as_path(filename, "filename")
        if _is_dir(path):
            raise ConfigurationError(f"filename {str(path)!r:.200} is a folder; expected a "
                                     "file to write the report to")
        from ..threats.export import write_text  # (rich, which it imports, only when used)

        write_text(path, text)


def _copied(threats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A deep copy of the report's threats. Raises :class:`ConfigurationError` for values
    nested too deep to copy (a caller's assessment may hold anything)."""
    try:
        return copy.deepcopy(threats)
    except RecursionError:
        raise ConfigurationError("assessment['threats'] holds values nested too deep to "
                                 "copy; expected the dict assess_implementation "
                                 "returns") from None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long: writing it says so, with the file's name
        return False


def _json_value(value: Any) -> Any:
    """A JSON-writable form of a value ``json`` cannot write itself (``default=``)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


_THREAT_KEYS = ("category", "severity", "description", "impact", "likelihood",
                "recommended_controls")


def _assessment_parts(assessment: Any) -> tuple[float, list[str], list[dict[str, Any]]]:
    """The risk score, missing control ids (once each) and threats of an assessment from
    :meth:`ChatbotThreatModeler.assess_implementation`. Raises
    :class:`ConfigurationError` for anything else."""
    expected = "expected the dict assess_implementation returns"
    if not isinstance(assessment, Mapping):
        raise ConfigurationError(f"assessment must be a dict; {expected}; received "
                                 f"{type(assessment).__name__}")
    score = assessment.get("risk_score")
    if isinstance(score, bool) or not isinstance(score, Real) or not 0 <= score <= 100:
        # compared as it is: float() of an int beyond any float raised OverflowError
        raise ConfigurationError(f"assessment['risk_score'] must be a number in [0, 100]; "
                                 f"received {score!r:.80}")
    score = float(score)  # a numpy number as the plain float a report can be written with
    missing = assessment.get("missing_controls", [])
    if not isinstance(missing, (str, bytes, Mapping)) and isinstance(missing, Iterable):
        missing = list(missing)  # once: checked, then listed (an iterator was used up)
    if not isinstance(missing, list) or not all(isinstance(c, str) for c in missing):
        raise ConfigurationError("assessment['missing_controls'] must be a list of control "
                                 f"ids; received {missing!r:.80}")
    threats = assessment.get("threats", [])
    if isinstance(threats, (str, bytes, Mapping)) or not isinstance(threats, Iterable):
        raise ConfigurationError(f"assessment['threats'] must be a list of threats; "
                                 f"received {threats!r:.80}")
    threats = list(threats)
    for threat in threats:
        if not isinstance(threat, Mapping) or any(k not in threat for k in _THREAT_KEYS):
            raise ConfigurationError(f"each of assessment['threats'] must be a dict with "
                                     f"{list(_THREAT_KEYS)}; received {threat!r:.80}")
    return score, list(dict.fromkeys(missing)), threats
