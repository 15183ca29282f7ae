"""What an incident is: a run of findings of one threat, from one client, against one model.

An :class:`Occurrence` is what the predict path hands over (one or more identical findings,
already merged); an :class:`Incident` is what the store keeps. Both carry bounded
:class:`Evidence`: finding reasons, scores and input hashes, never the raw input.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..severity import rank
from . import distinct
from .taxonomy import ThreatMapping, mapping_for

STATUSES = ("open", "acknowledged", "resolved")

MAX_REASONS = 5  #: distinct reasons kept per incident (the first ones seen)
MAX_SCORES = 10  #: scores kept (the highest)
MAX_HASHES = 10  #: distinct input hashes kept (the first ones seen)
MAX_TEXT = 300  #: characters kept of a reason
MAX_NAME = 200  #: characters kept of a model, threat or client name
MAX_CLIENTS = 20  #: distinct client ids a rolled-up incident keeps as its sample
#: The client of a rolled-up incident: new incidents of one (model, threat) folded into
#: one row while the store holds its most unresolved incidents (``max_open``).
ROLLUP_CLIENT = "(further clients)"
#: What a client whose id is :data:`ROLLUP_CLIENT` is stored as: a client calling itself
#: so would otherwise pass for a roll-up (not counted as a client, listed as standing for
#: others) and take in the findings rolled up beyond the cap.
CLIENT_NAMED_ROLLUP = f'"{ROLLUP_CLIENT}"'
#: The latest time an incident can carry: datetime's last second (9999-12-31).
LAST_SECOND = 253_402_300_799.0


def clip(text: Any, limit: int = MAX_NAME) -> str:
    """``text`` as a printable string of at most ``limit`` characters (client-controlled
    names may hold anything: control characters become spaces). A container is shown
    through a bounded ``reprlib`` (a nested list of millions is never written out whole);
    an object whose ``str`` raises by its type's name."""
    value = text if type(text) is str else _text_of(text, limit)
    if len(value) > limit:  # cut first: a name of megabytes is never scanned whole
        value = value[:limit - 1] + "…"
    if not value.isprintable():
        value = "".join(c if c.isprintable() else " " for c in value)
    return value


def _text_of(value: Any, limit: int) -> str:
    if isinstance(value, (dict, list, tuple, set, frozenset, bytes, bytearray)):
        shown = reprlib.Repr()
        shown.maxlevel, shown.maxstring, shown.maxother = 2, limit, limit
        # two levels deep (a deeper container reads "[...]"), with as many items per
        # container as ``limit`` characters can hold (two each at least): only what the
        # cut drops anyway is left out, and the work stays (limit / 2) ** 2 items at most
        shown.maxlist = shown.maxtuple = shown.maxdict = shown.maxset = \
            shown.maxfrozenset = limit // 2
        try:
            return shown.repr(value)
        except Exception:
            return f"<{type(value).__name__}>"
    try:
        return str.__str__(value) if isinstance(value, str) else str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _score(value: Any) -> float | None:
    """``value`` as a finite float, or ``None``: a score of a third-party check may be of
    any type (text, an array, a bool, an int no float holds), and it must not fail the
    evidence of the finding, nor the incidents of the call's later findings."""
    if value is None or isinstance(value, (str, bytes, bytearray, bool)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class Evidence:
    """Why an incident exists, bounded whatever the number of occurrences.

    A rolled-up incident also carries ``clients`` (the first :data:`MAX_CLIENTS` distinct
    client ids folded in) and ``client_sketch`` (all of them, counted by
    :mod:`.distinct`); :attr:`rolled_up` is their number."""

    reasons: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    input_hashes: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    client_sketch: str = ""

    @property
    def rolled_up(self) -> int:
        """How many distinct clients were folded in: exact while the sample has room (it
        holds them all), else the sketch's estimate (standard error about 6.5%); 0 for
        an incident of one client. At most :data:`MOST_COUNTED`: an edited sketch of
        registers at their top claims about 2.6e19 clients."""
        if len(self.clients) < MAX_CLIENTS:
            return len(self.clients)
        return min(max(MAX_CLIENTS, distinct.estimate(self.client_sketch)), MOST_COUNTED)

    def add(self, reason: str | None = None, score: float | None = None,
            input_hash: str | None = None) -> None:
        if reason:
            text = clip(reason, MAX_TEXT)
            if text not in self.reasons and len(self.reasons) < MAX_REASONS:
                self.reasons.append(text)
        value = _score(score)
        if value is not None:
            self.scores = sorted([*self.scores, value], reverse=True)[:MAX_SCORES]
        if input_hash and input_hash not in self.input_hashes \
                and len(self.input_hashes) < MAX_HASHES:
            self.input_hashes.append(clip(input_hash, 64))

    def roll_up(self, client: str) -> None:
        """Count ``client`` as folded in (into the sample while it has room)."""
        name = clip(client)
        self.client_sketch = distinct.add(self.client_sketch, name)
        self._sample(name)

    def _sample(self, name: str) -> None:
        if name not in self.clients and len(self.clients) < MAX_CLIENTS:
            self.clients.append(name)

    def merge(self, other: Evidence) -> None:
        for reason in other.reasons:
            self.add(reason=reason)
        for score in other.scores:
            self.add(score=score)
        for input_hash in other.input_hashes:
            self.add(input_hash=input_hash)
        for client in other.clients:  # counted by its sketch already
            self._sample(client)
        self.client_sketch = distinct.merge(self.client_sketch, other.client_sketch)

    def as_dict(self) -> dict[str, Any]:
        """``reasons``, ``scores``, ``input_hashes``; and ``clients``, ``rolled_up`` and
        ``client_sketch`` for a rolled-up incident only."""
        found: dict[str, Any] = {"reasons": list(self.reasons), "scores": list(self.scores),
                                 "input_hashes": list(self.input_hashes)}
        if self.clients:
            found.update(clients=list(self.clients), rolled_up=self.rolled_up,
                         client_sketch=self.client_sketch)
        return found

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Evidence:
        """The evidence ``as_dict`` wrote, read back from a file that may have been edited:
        only text reasons and hashes and finite number scores are kept, clipped and
        bounded as :meth:`add` keeps them. Raises ``ValueError`` when ``data`` or one of
        its lists is of another type."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"evidence is a JSON {type(data).__name__}; expected an object")
        evidence = cls()
        for key, kinds, argument in (("reasons", (str,), "reason"),
                                     ("scores", (int, float), "score"),
                                     ("input_hashes", (str,), "input_hash")):
            values = data.get(key, [])
            if not isinstance(values, list):
                raise ValueError(f"evidence {key!r} is a JSON {type(values).__name__}; "
                                 "expected a list")
            for value in values:
                if type(value) in kinds:  # exact types: a bool is no score
                    evidence.add(**{argument: float(value) if key == "scores" else value})
        clients = data.get("clients", [])
        if not isinstance(clients, list):
            raise ValueError(f"evidence 'clients' is a JSON {type(clients).__name__}; "
                             "expected a list")
        for client in clients:  # the sample; the sketch counts them all
            if type(client) is str:
                evidence._sample(clip(client))
        sketch = data.get("client_sketch", "")  # ``rolled_up`` is derived: not read
        if distinct.valid(sketch):
            evidence.client_sketch = sketch
        return evidence


@dataclass
class Occurrence:
    """``count`` findings of ``threat`` by ``client`` against ``model``, seen between
    ``first_seen`` and ``last_seen`` (seconds since the epoch), merged before storage.

    Raises ``ValueError`` for an unknown severity, a time outside 0 .. year 9999 (NaN and
    infinity included), ``first_seen`` after ``last_seen``, or a count that is not a whole
    number >= 1."""

    model: str
    threat: str
    client: str
    severity: str
    first_seen: float
    last_seen: float
    count: int = 1
    evidence: Evidence = field(default_factory=Evidence)

    def __post_init__(self) -> None:
        # refused here, not in the worker: there, one bad occurrence failed the
        # transaction of every batch it was retried in, and their incidents were lost
        rank(self.severity)
        for name in ("first_seen", "last_seen"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not 0.0 <= value <= LAST_SECOND:
                raise ValueError(f"occurrence {name} must be seconds since the epoch from 0 "
                                 f"to {LAST_SECOND:.0f} (year 9999); received {value!r:.40}")
        if self.first_seen > self.last_seen:
            raise ValueError(f"occurrence first_seen {self.first_seen!r} is after its "
                             f"last_seen {self.last_seen!r}; expected first <= last")
        if isinstance(self.count, bool) or not isinstance(self.count, numbers.Integral) \
                or self.count < 1:
            raise ValueError(f"occurrence count must be a whole number >= 1; received "
                             f"{self.count!r:.40}")
        self.first_seen, self.last_seen = float(self.first_seen), float(self.last_seen)
        self.count = int(self.count)
        self.model, self.threat, self.client = (clip(self.model), clip(self.threat),
                                                clip(self.client))

    @property
    def key(self) -> tuple[str, str, str]:
        """The grouping key: (model, threat, client)."""
        return (self.model, self.threat, self.client)

    def merge(self, other: Occurrence) -> None:
        """Fold ``other`` (same key) into this one."""
        self.count += other.count
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        if rank(other.severity) > rank(self.severity):
            self.severity = other.severity
        self.evidence.merge(other.evidence)


@dataclass(frozen=True)
class Incident:
    """One stored incident. Times are seconds since the epoch (UTC)."""

    id: int
    model: str
    threat: str
    client: str
    severity: str
    status: str
    first_seen: float
    last_seen: float
    count: int
    evidence: Evidence

    @property
    def rolled_up(self) -> bool:
        """Whether this incident stands for many clients' (see :data:`ROLLUP_CLIENT`):
        ``evidence.rolled_up`` says how many incidents, ``evidence.clients`` names some."""
        return self.client == ROLLUP_CLIENT

    @property
    def taxonomy(self) -> ThreatMapping:
        """The threat's OWASP ML Top 10 ids and MITRE ATLAS techniques and mitigations."""
        return mapping_for(self.threat)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "model": self.model, "threat": self.threat, "client": self.client,
            "severity": self.severity, "status": self.status,
            "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen),
            "count": self.count, "evidence": self.evidence.as_dict(),
            "taxonomy": self.taxonomy.as_dict(),
        }


#: SQLite's largest INTEGER: no count the store keeps exceeds it.
MOST_COUNTED = 2**63 - 1


def iso(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as an ISO 8601 UTC string."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")
