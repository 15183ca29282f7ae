"""One audit line as the report reads it, and the one function that parses it.

The line format grows (request ids, versions, a hash chain, bounded ``flagged`` lists), so
:func:`parse_line` reads only the keys a report needs and tolerates absent and extra keys:
``flagged`` may be a list of batch indices or ``{"count": n, "first": [...]}``; a finding
without a ``check`` counts as ``"unknown"``. A line that is not a JSON object, or has no
readable ``time``, is malformed: :func:`parse_line` returns ``None`` and the reader counts it.
A field present with a type or value no writer produces (a model that is an object, a
batch size of ``"3"`` or -1, a latency of NaN) is read as absent, and the entry says so
(:attr:`AuditEntry.wrong_type`), so the report counts the line rather than letting it pass
for an ordinary call.

Everything in a line is treated as hostile text: strings are cut to :data:`MAX_TEXT`
characters, so one forged line cannot grow the report's memory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..detection.calibration_file import MAX_THRESHOLD

#: Longest client id, model or check name kept (longer ones are cut and marked with "…").
MAX_TEXT = 200
DECISIONS = ("allowed", "flagged", "rejected", "error")
#: Decisions counted as another: a call refused for its flagged samples only is a refusal.
SAME_AS = {"partial": "rejected"}
#: Findings that stop a call as a query-stream attack (repeat, near-duplicate, extraction).
QUERY_ATTACK_CHECKS = frozenset({"repeat", "near_duplicate", "extraction"})
#: Largest count (batch size, flagged or above-threshold samples) read from a line: 2**53,
#: the last whole number a float holds exactly; a larger one is no count a call had.
MAX_COUNT = 2**53


@dataclass(frozen=True, slots=True)
class Detection:
    """The detectors' summary of one call (present only when detection ran)."""

    suspicion_max: float  #: the largest per-sample suspicion of the call
    threshold: float      #: the calibrated threshold the call was judged against
    fpr: float | None     #: the false-positive rate the threshold was calibrated for (0-1)
    above: int            #: samples whose suspicion exceeded the threshold


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """The parts of one audit line a report aggregates."""

    time: float                       #: seconds since the epoch (UTC)
    model: str
    client: str
    decision: str                     #: one of DECISIONS, else "other"
    batch_size: int
    flagged: int                      #: how many samples drew a finding
    checks: tuple[str, ...]           #: the checks that objected, without repeats
    latency_ms: float | None
    detection: Detection | None
    #: fields present with a type or value no writer produces, read as absent
    wrong_type: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        return self.decision == "rejected"


def parse_line(line: str | bytes) -> AuditEntry | None:
    """The entry of one audit line, or ``None`` when the line is malformed."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        return None
    if not isinstance(raw, dict):
        return None
    when = parse_time(raw.get("time"))
    if when is None:
        return None
    wrong: list[str] = []
    decision = raw.get("decision")
    if not isinstance(decision, str):  # a forged object or list would not even hash
        if decision is not None:
            wrong.append("decision")
        decision = "other"
    model, client = raw.get("model"), raw.get("client")
    latency, detection = raw.get("latency_ms"), raw.get("detection")
    batch_size = _count(raw.get("batch_size"), "batch_size", wrong)
    flagged = _flagged_count(raw.get("flagged"), wrong)
    checks = _checks(raw.get("findings"), wrong)
    latency_ms = _number(latency)
    if latency is not None and (latency_ms is None or latency_ms < 0):
        wrong.append("latency_ms")
        latency_ms = None
    read_detection = _detection(detection, wrong)
    for name, value in (("model", model), ("client", client)):
        if value is not None and type(value) is not str:
            wrong.append(name)
    return AuditEntry(
        time=when,
        model=_text(model, "unknown"),
        client=_text(client, "anonymous"),
        decision=SAME_AS.get(decision, decision if decision in DECISIONS else "other"),
        batch_size=batch_size,
        flagged=flagged,
        checks=checks,
        latency_ms=latency_ms,
        detection=read_detection,
        wrong_type=tuple(wrong),
    )


def is_json_object(line: str | bytes) -> bool:
    """Whether ``line`` is a JSON object at all (of a line :func:`parse_line` refused)."""
    try:
        return isinstance(json.loads(line), dict)
    except (ValueError, RecursionError):
        return False


#: Years an audit time may fall in; others are malformed (charts cannot place them).
_FIRST_YEAR, _LAST_YEAR = 1970, 9000


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch for an ISO 8601 string (naive times are UTC), else None."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if not _FIRST_YEAR <= when.year <= _LAST_YEAR:
        return None  # no audit line was written then: a forged or broken time
    return when.timestamp()


def as_read(name: str) -> str:
    """``name`` as :func:`parse_line` reads it from a line (cut to :data:`MAX_TEXT`), so a
    name given by a user compares equal to the lines that carry it."""
    return _text(name, "unknown")


def _text(value: Any, default: str) -> str:
    if type(value) is str and len(value) <= MAX_TEXT and value.isascii():  # the common case
        return value
    if value is None:
        return default
    text = value if isinstance(value, str) else str(value)
    text = text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"
    # a "\ud800" escape parses to a lone surrogate, which no file can be written with
    return text.encode("utf-8", "replace").decode("utf-8")


def _number(value: Any) -> float | None:
    kind = type(value)  # exact types: bool is no number here
    if kind is float:
        return value if value - value == 0 else None  # inf - inf and nan - nan are nan
    if kind is int:
        try:
            return float(value)
        except OverflowError:  # JSON allows integers of hundreds of digits; no float does
            return None
    return None


def _count(value: Any, name: str = "", wrong: list[str] | None = None) -> int:
    """A count as the writer writes it (a whole number, 0 to MAX_COUNT); else 0, and
    ``name`` is added to ``wrong`` when the value was present."""
    number = _number(value)
    if number is not None and 0 <= number <= MAX_COUNT and number == int(number):
        return int(number)
    if wrong is not None and value is not None:
        wrong.append(name)
    return 0


def _rate(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and 0 <= number <= 1 else None


def _flagged_count(value: Any, wrong: list[str]) -> int:
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict):
        return _count(value.get("count"), "flagged", wrong)
    if value is not None:
        wrong.append("flagged")
    return 0


def _checks(value: Any, wrong: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list):
        if value is not None:
            wrong.append("findings")
        return ()
    if not all(isinstance(f, dict) and isinstance(f.get("check", ""), str) for f in value):
        wrong.append("findings")
    names = (_text(f.get("check"), "unknown") if isinstance(f, dict) else "unknown"
             for f in value)
    return tuple(dict.fromkeys(names))


def _detection(value: Any, wrong: list[str]) -> Detection | None:
    if not isinstance(value, dict):
        if value is not None:
            wrong.append("detection")
        return None
    threshold = _number(value.get("threshold"))
    suspicion = value.get("suspicion_max")
    if suspicion in ("inf", "Infinity"):  # the writer spells non-finite numbers as strings
        suspicion = math.inf
    elif suspicion in ("-inf", "nan"):  # as written, but no suspicion a threshold can judge
        return None
    else:
        suspicion = _number(suspicion)
    # a threshold no calibration holds (one of 1e308 stretched the chart's axis past
    # what matplotlib can draw) is no summary a guard wrote
    if suspicion is None or threshold is None or not 0 <= threshold <= MAX_THRESHOLD:
        wrong.append("detection")
        return None
    return Detection(suspicion, threshold, _rate(value.get("fpr")),
                     _count(value.get("above")))
