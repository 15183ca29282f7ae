"""Which published threat each check stands for: OWASP ML Top 10 and MITRE ATLAS, one table.

Sources: OWASP Machine Learning Security Top 10 (2023 edition,
https://owasp.org/www-project-machine-learning-security-top-10/) and MITRE ATLAS
(https://atlas.mitre.org/, techniques ``AML.T…``, mitigations ``AML.M…``). A check with no
fitting entry keeps an empty tuple rather than a stretched one: the Top 10 has no entry for
denial of service, and an unreachable state store is an operational fault, not an attack.

Every check in :data:`aimsec_core.severity.DEFAULT_SEVERITY` has a row (a test holds it to
that); the original ``AISecurityMonitor``'s threat names are aliases of the checks they
correspond to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ThreatMapping:
    """One check's place in the published taxonomies."""

    title: str
    owasp: tuple[str, ...]
    techniques: tuple[str, ...]
    mitigations: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "owasp": list(self.owasp),
                "atlas_techniques": list(self.techniques),
                "atlas_mitigations": list(self.mitigations)}


def _row(title: str, owasp: str = "", techniques: str = "", mitigations: str = "") -> ThreatMapping:
    return ThreatMapping(title, tuple(owasp.split()), tuple(techniques.split()),
                         tuple(mitigations.split()))


_MALFORMED = _row("Malformed input", "ML01", "", "AML.M0024")
_CRAFTED = _row("Input outside the clean data's envelope", "ML01", "AML.T0043 AML.T0015",
                "AML.M0015")
_FLOOD = _row("Query flood", "", "AML.T0029 AML.T0034", "AML.M0004")

#: check -> its mapping. The one table.
TAXONOMY: dict[str, ThreatMapping] = {
    # validation: the model could not run the input
    "null": _MALFORMED, "empty": _MALFORMED, "format": _MALFORMED, "dtype": _MALFORMED,
    "shape": _MALFORMED, "missing": _MALFORMED, "unknown": _MALFORMED, "input": _MALFORMED,
    # validation: content and size outside the policy
    "size": _row("Oversized call", "", "AML.T0029 AML.T0034", "AML.M0004"),
    "finite": _CRAFTED, "range": _CRAFTED, "max_gradient": _CRAFTED, "min_sparsity": _CRAFTED,
    "structure": _CRAFTED,
    # admission and query-stream monitoring
    "rate_limit": _FLOOD, "min_interval": _FLOOD,
    "store_unavailable": _row("Monitoring state unavailable", "", "", "AML.M0024"),
    "repeat": _row("Repeated identical queries", "ML05", "AML.T0040", "AML.M0004 AML.M0024"),
    "lockout": _row("Client locked out after failed attempts", "ML01", "AML.T0040",
                    "AML.M0019 AML.M0004"),
    "near_duplicate": _row("Near-duplicate query stream (black-box attack search)",
                           "ML01 ML05", "AML.T0040 AML.T0043", "AML.M0004 AML.M0015"),
    "extraction": _row("Model extraction", "ML05", "AML.T0024.002", "AML.M0004 AML.M0002"),
    # per-input detection
    "adversarial": _row("Adversarial input (evasion)", "ML01", "AML.T0043 AML.T0015",
                        "AML.M0015 AML.M0003"),
}

#: The original ``AISecurityMonitor``'s threat names -> the check each corresponds to.
ALIASES: dict[str, str] = {
    "rate_limit_exceeded": "rate_limit",
    "extreme_values": "range",
    "suspicious_sparsity": "min_sparsity",
    "potential_adversarial_pattern": "max_gradient",
    "analysis_error": "format",
}

#: Names of the ids used above, for messages and reports.
NAMES: dict[str, str] = {
    "ML01": "Input Manipulation Attack", "ML02": "Data Poisoning Attack",
    "ML03": "Model Inversion Attack", "ML04": "Membership Inference Attack",
    "ML05": "Model Theft", "ML06": "AI Supply Chain Attacks",
    "ML07": "Transfer Learning Attack", "ML08": "Model Skewing",
    "ML09": "Output Integrity Attack", "ML10": "Model Poisoning",
    "AML.T0015": "Evade AI Model", "AML.T0024.002": "Exfiltration via AI Inference API: "
    "Extract AI Model", "AML.T0029": "Denial of AI Service", "AML.T0034": "Cost Harvesting",
    "AML.T0040": "AI Model Inference API Access", "AML.T0043": "Craft Adversarial Data",
    "AML.M0002": "Passive AI Output Obfuscation", "AML.M0003": "Model Hardening",
    "AML.M0004": "Restrict Number of AI Model Queries",
    "AML.M0015": "Adversarial Input Detection",
    "AML.M0019": "Control Access to AI Models and Data in Production",
    "AML.M0024": "AI Telemetry Logging",
}

UNMAPPED = ThreatMapping("Unclassified finding", (), (), ())


def mapping_for(threat: str) -> ThreatMapping:
    """The taxonomy row of ``threat`` (a check name or an original threat name);
    :data:`UNMAPPED` for a check the table does not know (a third-party check)."""
    return TAXONOMY.get(ALIASES.get(threat, threat), UNMAPPED)
