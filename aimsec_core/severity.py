"""How serious a finding is: one scale and one default per check, decided here only.

Severities, lowest first: ``low`` (malformed input, usually a client bug), ``medium``
(input or traffic outside the policy: non-finite or out-of-range values, oversized calls,
rate limits), ``high`` (signs of an attack: adversarial input, near-duplicate query
streams, model extraction, a locked-out client), ``critical`` (reserved for escalations
a deployment configures, e.g. an attack from an authenticated internal tier).

Incidents and alerts filter on this scale (``at_least``); the original tool's three
levels (low/medium/high) are its first three.
"""

from __future__ import annotations

SEVERITIES: tuple[str, ...] = ("low", "medium", "high", "critical")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

#: check (threat) name -> the severity its findings carry unless a check says otherwise.
DEFAULT_SEVERITY: dict[str, str] = {
    # format: the model could not run the input at all
    "null": "low", "empty": "low", "format": "low", "dtype": "low", "shape": "low",
    "missing": "low", "unknown": "low",
    # what serving code refuses itself (``refuse``) with a bare InvalidInputError
    "input": "low",
    # content and size outside the policy
    "size": "medium", "finite": "medium", "range": "medium",
    "max_gradient": "medium", "min_sparsity": "medium",
    "structure": "medium",  # a StructuralAnomalyError refused without naming its check
    # admission and query-stream monitoring
    "rate_limit": "medium", "min_interval": "low", "store_unavailable": "medium",
    "repeat": "low", "lockout": "high", "near_duplicate": "high", "extraction": "high",
    # per-input detection
    "adversarial": "high",
}
#: Checks not in the table (a third-party check) are taken this seriously.
FALLBACK_SEVERITY = "medium"


def severity_of(check: str) -> str:
    """The default severity of findings of ``check``."""
    return DEFAULT_SEVERITY.get(check, FALLBACK_SEVERITY)


def rank(severity: str) -> int:
    """0 for ``low`` … 3 for ``critical``; raises ``ValueError`` for anything else."""
    try:
        return _RANK[severity]
    except (KeyError, TypeError):
        raise ValueError(f"unknown severity {severity!r}; expected one of "
                         f"{list(SEVERITIES)}") from None


def at_least(severity: str, floor: str) -> bool:
    """Whether ``severity`` is ``floor`` or more serious."""
    return rank(severity) >= rank(floor)


def highest(severities: list[str] | tuple[str, ...]) -> str | None:
    """The most serious of ``severities`` (``None`` when empty)."""
    return max(severities, key=rank) if severities else None
