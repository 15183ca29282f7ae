"""Incidents for the report, through one small interface.

An incident source is any iterable of mappings with the incident store's fields: ``id``,
``model``, ``threat``, ``client``, ``severity``, ``status``, ``first_seen``, ``last_seen``,
``count``, ``evidence``, ``owasp``, ``atlas_techniques``, ``atlas_mitigations``. Tests and
other tools pass plain dicts; :func:`load_incidents` reads aimsec's SQLite incident store
when ``aimsec_core.incidents`` is installed, and otherwise says why there is none.

A rolled-up incident (the store held its most unresolved incidents: client ``(further
clients)``) is one row standing for many clients' incidents: its ``evidence`` has
``rolled_up`` (how many) and ``clients`` (a sample); the section counts the row once and
adds what it stands for to ``rolled_up``. Incidents that retention deleted are not there
to count: :func:`load_incidents` says how many were, when the period reaches back to them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..severity import SEVERITIES
from .records import MAX_TEXT, as_read, parse_time

#: Open incidents listed in the report (all are counted).
MAX_LISTED = 50
OPEN_STATUSES = ("open", "acknowledged")
#: Every status an incident can have: the report counts them all.
INCIDENT_STATUSES = ("open", "acknowledged", "resolved")
#: Where open incidents of a severity aimsec does not know are counted (a source of plain
#: mappings may hold any text there), so the counts by severity add up to the open ones.
UNKNOWN_SEVERITY = "unknown"


@dataclass
class IncidentRow:
    id: str
    model: str
    threat: str
    client: str
    severity: str
    status: str
    first_seen: str
    last_seen: str
    count: int
    owasp: list[str]
    atlas_techniques: list[str]
    atlas_mitigations: list[str]
    #: incidents this row stands for beyond itself (0: an incident of one client)
    rolled_up: int = 0
    #: a sample of the clients of a rolled-up row
    clients: list[str] = field(default_factory=list)


@dataclass
class IncidentsSection:
    """``available`` is false when no store could be read; ``note`` then says why."""

    available: bool
    note: str = ""
    total: int = 0
    open: int = 0
    open_by_severity: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    listed: list[IncidentRow] = field(default_factory=list)
    #: rows of the period that are rolled up, and the incidents they stand for
    rolled_up_rows: int = 0
    rolled_up: int = 0
    #: rows the store could not read (damaged), passed over; the first ones' ids
    damaged: int = 0
    damaged_ids: list[int] = field(default_factory=list)


def summarise_incidents(source: Iterable[Mapping[str, Any]] | None, *,
                        since: float | None = None, until: float | None = None,
                        model: str | None = None, note: str = "") -> IncidentsSection:
    """Count ``source``'s incidents seen in the period and list the most serious open ones
    (highest severity first, then most repeated), at most :data:`MAX_LISTED`."""
    if source is None:
        return IncidentsSection(False, note or "no incident store")
    section = IncidentsSection(True, note)
    statuses: Counter[str] = Counter()
    open_severity: Counter[str] = Counter()
    kept: list[tuple[tuple[int, int], int, IncidentRow]] = []
    # a long name is kept cut short: by the store (as audit lines are read) or by _row
    names = None if model is None else {model[:MAX_TEXT], as_read(model)}
    for number, raw in enumerate(source):
        if not isinstance(raw, Mapping):
            continue
        row = _row(raw)
        if names is not None and row.model not in names:
            continue
        last = parse_time(row.last_seen) or parse_time(row.first_seen)
        first = parse_time(row.first_seen) or last
        if since is not None and last is not None and last < since:
            continue
        if until is not None and first is not None and first >= until:
            continue
        section.total += 1
        if row.rolled_up:
            section.rolled_up_rows += 1
            section.rolled_up += row.rolled_up
        statuses[row.status] += 1
        if row.status in OPEN_STATUSES:
            section.open += 1
            known = row.severity in SEVERITIES  # others count as "unknown": the sum is open
            open_severity[row.severity if known else UNKNOWN_SEVERITY] += 1
            rank = SEVERITIES.index(row.severity) if known else -1
            kept.append(((-rank, -row.count), number, row))
            if len(kept) > 4 * MAX_LISTED:  # stay bounded: keep only the best candidates
                kept = sorted(kept, key=lambda k: (k[0], k[1]))[:MAX_LISTED]
    failure = getattr(source, "failure", "")
    if failure:
        return IncidentsSection(False, failure)
    damaged = getattr(source, "damaged", None)
    if damaged:  # rows the store could not read: passed over, said beside the counts
        section.note = "; ".join(filter(None, (section.note, damaged.note())))
        section.damaged, section.damaged_ids = damaged.count, list(damaged.ids)
    section.listed = [r for _, _, r in sorted(kept, key=lambda k: (k[0], k[1]))[:MAX_LISTED]]
    section.by_status = dict(statuses)
    section.open_by_severity = {s: open_severity[s]
                                for s in (*reversed(SEVERITIES), UNKNOWN_SEVERITY)
                                if open_severity[s]}
    return section


def load_incidents(db: str | Path | None, *, since: float | None = None,
                   model: str | None = None, limit: int = 100_000
                   ) -> tuple[Iterable[Mapping[str, Any]] | None, str]:
    """``(source, note)``: the incident store's incidents (every status, last seen at or
    after ``since``, of ``model`` when given; the ``limit`` most severe and recent, the
    note saying so when there were more) as a :class:`StoredIncidents`, read as it is
    iterated, or ``None`` and the reason none could be read.

    ``db`` is the SQLite file (default: ``AIMSEC_INCIDENT_DB``, else
    ``<SECURITY_LOG_PATH>/incidents.sqlite3``); a file that does not exist is reported,
    never created."""
    from ..incidents import IncidentStore
    from ..incidents.journal import unwritten
    from ..incidents.model import clip
    from ..incidents.store import database_path

    path = database_path(db)
    if not path.exists():
        waiting = _waiting(unwritten(IncidentStore(path, read_only=True)))
        return None, (f"no incident store at {path} (a guard creates it with its first "
                      "incident: none configured there, or nothing recorded yet)"
                      + (f"; {waiting}" if waiting else ""))
    if not path.is_file():
        return None, f"the incident store {path} is not a file"
    store = IncidentStore(path, read_only=True)  # a report never changes the file it reads
    selection = {"statuses": INCIDENT_STATUSES, "since": since,
                 "model": None if model is None else clip(model)}
    try:
        found = store.count(**selection, at_most=limit + 1)
        pruned = store.pruned().get("incidents")
        waiting = unwritten(store)
    except Exception as exc:  # a damaged store is reported on the page, not raised
        return None, _unreadable(path, exc)
    finally:
        store.close()
    notes = []
    if found > limit:
        notes.append(f"only the {limit:,} most severe and recent incidents were read; more "
                     "are in the store (aimsec incidents --status all)")
    if pruned and (since is None or since <= pruned["latest"]):
        notes.append(pruned_note(pruned, every_model=model is not None))
    if waiting.findings:
        notes.append(_waiting(waiting))
    return StoredIncidents(path, selection, min(found, limit)), "; ".join(notes)


def _waiting(waiting: Any) -> str:
    """What journals of killed processes hold, unwritten (a ``Replayed`` dry run); ""
    for nothing."""
    if not waiting.findings:
        return ""
    return (f"{waiting.findings:,} finding(s) of {waiting.journals:,} process(es) that "
            "ended without writing them (killed) are in their journals, not counted here: "
            "aimsec incidents (or the next guard) writes them")


def pruned_note(pruned: Mapping[str, Any], every_model: bool = False) -> str:
    """What retention deleted, said for the period's reader: ``pruned`` is the store's
    tally (``rows``, ``findings``, ``latest``), kept for the whole file: ``every_model``
    says so where the report is of one model."""
    from ..incidents.model import iso

    whose = " of every model" if every_model else ""
    return (f"retention deleted {pruned['rows']:,} resolved incident(s){whose} ("
            f"{pruned['findings']:,} finding(s)) last seen up to {iso(pruned['latest'])}; "
            "they are not counted here (AIMSEC_INCIDENT_RETENTION_DAYS)")


class StoredIncidents:
    """The incidents :func:`load_incidents` selected, read from the store as they are
    iterated, so a report holds a few of them at a time (a list of the 100,000 it reads
    at most held 580 MB with their evidence). ``len()`` is their number (damaged rows
    included); ``failure`` says why the store could not be read to the end (``""`` when
    it could); ``damaged`` (a :class:`~aimsec_core.incidents.damaged.DamagedRows`) counts
    the rows of the last pass that could not be read and were passed over."""

    def __init__(self, path: Path, selection: dict[str, Any], count: int) -> None:
        from ..incidents.damaged import DamagedRows

        self.path, self.selection, self.count = path, selection, count
        self.failure = ""
        self.damaged = DamagedRows()

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from ..incidents import IncidentStore
        from ..incidents.damaged import DamagedRows

        store = IncidentStore(self.path, read_only=True)
        self.damaged = DamagedRows()
        try:
            for incident in store.each(**self.selection, limit=self.count,
                                       damaged=self.damaged):
                yield _flattened(incident.as_dict())
        except Exception as exc:  # a store damaged meanwhile: said on the page, not raised
            self.failure = _unreadable(self.path, exc)
        finally:
            store.close()


def _unreadable(path: Path, exc: Exception) -> str:
    """Why the store at ``path`` could not be read: the store's own words (they name the
    file and say what it is not: an SQLite file, a schema this aimsec reads), else only
    the error's type."""
    from ..errors import AimsecError

    why = f": {exc}" if isinstance(exc, AimsecError) else ""
    return f"the incident store {path} could not be read ({type(exc).__name__}{why})"


def _flattened(incident: dict[str, Any]) -> dict[str, Any]:
    """The store's incident with its taxonomy's ids at the top level, as rows read them."""
    return {**incident, **incident.pop("taxonomy", {})}


def _row(raw: Mapping[str, Any]) -> IncidentRow:
    def text(key: str, default: str = "") -> str:
        value = raw.get(key)
        if value is None:
            return default
        value = value if isinstance(value, str) else str(value)
        return value[:MAX_TEXT]

    def ids(key: str) -> list[str]:
        value = raw.get(key)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return []
        return [str(v)[:40] for v in value[:12]]

    count = raw.get("count")
    evidence = raw.get("evidence")
    evidence = evidence if isinstance(evidence, Mapping) else {}
    rolled_up = evidence.get("rolled_up")
    clients = evidence.get("clients")
    return IncidentRow(
        id=text("id"), model=text("model", "unknown"), threat=text("threat", "unknown"),
        client=text("client", "anonymous"), severity=text("severity", "unknown").lower(),
        status=text("status", "open").lower(), first_seen=_time_text(raw.get("first_seen")),
        last_seen=_time_text(raw.get("last_seen")),
        count=count if isinstance(count, int) and not isinstance(count, bool) else 1,
        owasp=ids("owasp"), atlas_techniques=ids("atlas_techniques"),
        atlas_mitigations=ids("atlas_mitigations"),
        rolled_up=rolled_up if type(rolled_up) is int and rolled_up > 0 else 0,
        clients=[str(c)[:MAX_TEXT] for c in clients[:20]] if isinstance(clients, list)
        else [])


def _time_text(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        from datetime import datetime, timezone

        try:
            return datetime.fromtimestamp(value, timezone.utc).isoformat()
        except (OverflowError, OSError, ValueError):
            return ""
    return str(value)[:40] if value is not None else ""
