"""How much the incident database keeps, and the bounded steps that remove the rest.

Three limits, each from the explicit argument, else the environment, else its default:

- ``retention_days`` (``AIMSEC_INCIDENT_RETENTION_DAYS``, 90): a *resolved* incident last
  seen longer ago, and a delivery record older, is deleted. ``0`` keeps them forever.
  Open and acknowledged incidents are never deleted, however old.
- ``max_open`` (``AIMSEC_INCIDENT_MAX_OPEN``, 10000): the most unresolved (open or
  acknowledged) incidents. While the store holds this many, a finding that would open a
  new incident joins the *rolled-up* incident of its (model, threat) instead (client
  :data:`~.model.ROLLUP_CLIENT`): its count keeps every finding, its evidence a sample of
  client ids and how many incidents it stands for. ``0`` lifts the cap.
- ``max_deliveries`` (``AIMSEC_INCIDENT_MAX_DELIVERIES``, 100000): the most alert delivery
  records kept, the oldest deleted first. ``0`` lifts the cap.

A store prunes on its writer's thread (the alert worker's, never a guarded call's): a
write runs one step when ``every_s`` seconds have passed on the store's clock since its
last one, or at once while the last step left rows it had no room for. A step deletes at
most ``batch`` incidents and ``batch`` delivery records in one short transaction and adds
what it deleted to the ``pruned`` table, so reports can say what is no longer there. The
incident with the highest id is never deleted: SQLite would give its id to the next
incident, and delivery records and alerts name incidents by id.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from ..config import ascii_number, parse_positive_int, resolve
from ..errors import ConfigurationError
from .model import LAST_SECOND, MOST_COUNTED

DAY_S = 86400.0
#: Unresolved statuses, as the index ``incidents_status`` finds them.
UNRESOLVED = ("open", "acknowledged")


def parse_days(raw: Any) -> float:
    """``raw`` as a finite number of days >= 0 (``ValueError`` saying what was expected)."""
    try:
        value = float(ascii_number(raw))
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value < math.inf:
        raise ValueError(f"expected a finite number of days >= 0, received {raw!r:.40}")
    return value


@dataclass(frozen=True)
class RetentionPolicy:
    """The limits above; ``every_s`` (seconds between pruning steps) and ``batch`` (rows
    of each table one step deletes at most) set how the work is spread. Raises
    :class:`ConfigurationError` naming the setting for a value out of range."""

    retention_days: float = 90.0
    max_open: int = 10_000
    max_deliveries: int = 100_000
    every_s: float = 60.0
    batch: int = 500

    def __post_init__(self) -> None:
        days = self.retention_days
        if isinstance(days, bool) or not isinstance(days, Real) \
                or not 0 <= float(days) < math.inf:
            raise ConfigurationError(
                "incident retention_days (AIMSEC_INCIDENT_RETENTION_DAYS): expected a finite "
                f"number of days >= 0 (0 keeps resolved incidents forever); received "
                f"{days!r:.40}")
        for name, variable, least in (("max_open", "AIMSEC_INCIDENT_MAX_OPEN", 0),
                                      ("max_deliveries", "AIMSEC_INCIDENT_MAX_DELIVERIES", 0),
                                      ("batch", None, 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < least \
                    or value > MOST_COUNTED:
                source = f" ({variable})" if variable else ""
                lifted = " (0 lifts the cap)" if least == 0 else ""
                raise ConfigurationError(
                    f"incident {name}{source}: expected a whole number from {least} to "
                    f"{MOST_COUNTED}{lifted}; received {value!r:.40}")
        every = self.every_s
        if isinstance(every, bool) or not isinstance(every, Real) \
                or not 0 <= float(every) < math.inf:
            raise ConfigurationError("incident pruning every_s: expected a finite number of "
                                     f"seconds >= 0; received {every!r:.40}")
        # numpy numbers become plain ones (they are compared and written to SQLite); -0
        # becomes 0 ('-0' from the environment printed as "-0 day(s)", "-0.0" in JSON)
        object.__setattr__(self, "retention_days", float(days) + 0.0)
        object.__setattr__(self, "every_s", float(every))
        for name in ("max_open", "max_deliveries", "batch"):
            object.__setattr__(self, name, int(getattr(self, name)))

    @classmethod
    def resolve(cls, retention_days: float | None = None, max_open: int | None = None,
                max_deliveries: int | None = None, **spread: Any) -> RetentionPolicy:
        """The policy from the arguments, else ``AIMSEC_INCIDENT_RETENTION_DAYS``,
        ``AIMSEC_INCIDENT_MAX_OPEN``, ``AIMSEC_INCIDENT_MAX_DELIVERIES``, else the
        defaults; ``spread``: ``every_s``, ``batch``."""
        return cls(
            resolve(retention_days, "AIMSEC_INCIDENT_RETENTION_DAYS", cls.retention_days,
                    parse_days),
            resolve(max_open, "AIMSEC_INCIDENT_MAX_OPEN", cls.max_open, parse_positive_int),
            resolve(max_deliveries, "AIMSEC_INCIDENT_MAX_DELIVERIES", cls.max_deliveries,
                    parse_positive_int),
            **spread)

    def cutoff(self, now: float) -> float | None:
        """Seconds since the epoch before which resolved incidents and delivery records
        go, or ``None`` when they are kept forever."""
        return None if self.retention_days == 0 else now - self.retention_days * DAY_S


@dataclass
class Pruned:
    """What pruning deleted: ``incidents`` (resolved ones), ``findings`` (their counts
    summed), ``deliveries``; ``more`` when rows are left that a step had no room for."""

    incidents: int = 0
    findings: int = 0
    deliveries: int = 0
    more: bool = False

    def add(self, other: Pruned) -> None:
        self.incidents += other.incidents
        self.findings = min(self.findings + other.findings, MOST_COUNTED)
        self.deliveries += other.deliveries
        self.more = other.more


# the oldest resolved incidents past the cutoff, never the highest id
_OLD_INCIDENTS = ("SELECT id, count, last_seen FROM incidents WHERE status = 'resolved' "
                  "AND last_seen < :cutoff AND id < (SELECT MAX(id) FROM incidents) "
                  "ORDER BY last_seen LIMIT :batch")
_OLD_DELIVERIES = ("SELECT id, time FROM deliveries WHERE time < :cutoff "
                   "ORDER BY time LIMIT :batch")
# the records beyond the cap: the oldest ids below the newest max_deliveries records (ids
# have gaps where retention or an operator deleted records: MAX(id) - max_deliveries
# deleted records from a table holding fewer than the cap). The walk down the newest
# max_deliveries ids costs about 1 ms per 100,000.
_EXCESS_DELIVERIES = ("SELECT id, time FROM deliveries WHERE id <= (SELECT id FROM "
                      "deliveries ORDER BY id DESC LIMIT 1 OFFSET :keep) "
                      "ORDER BY id LIMIT :batch")


def prune_step(conn: sqlite3.Connection, policy: RetentionPolicy, now: float) -> Pruned:
    """One bounded step on ``conn``, inside the caller's write transaction."""
    done = Pruned()
    cutoff = policy.cutoff(now)
    if cutoff is not None:
        rows, findings, latest = _delete(conn, "incidents", _OLD_INCIDENTS,
                                         {"cutoff": cutoff, "batch": policy.batch}, 1, 2)
        done.incidents, done.findings = rows, findings
        done.more = rows >= policy.batch
        _tally(conn, "incidents", rows, findings, latest)
    room = policy.batch
    for query, wanted in ((_OLD_DELIVERIES, cutoff is not None),
                          (_EXCESS_DELIVERIES, policy.max_deliveries > 0)):
        if not wanted or room <= 0:
            continue
        rows, _, latest = _delete(conn, "deliveries", query,
                                  {"cutoff": cutoff, "keep": policy.max_deliveries,
                                   "batch": room}, None, 1)
        _tally(conn, "deliveries", rows, 0, latest)
        done.deliveries += rows
        room -= rows
    done.more = done.more or room <= 0
    return done


def _delete(conn: sqlite3.Connection, table: str, query: str, params: dict[str, Any],
            count_at: int | None, time_at: int) -> tuple[int, int, float]:
    """Delete the rows ``query`` selects from ``table``; (rows, their counts summed,
    their latest time). A count or time aimsec did not write (an edited file: text, a
    negative count, a time no calendar holds) is not summed; the row still goes."""
    found = conn.execute(query, params).fetchall()
    if not found:
        return 0, 0, 0.0
    conn.executemany(f"DELETE FROM {table} WHERE id = ?", [(row[0],) for row in found])
    findings = 0 if count_at is None else sum(
        row[count_at] for row in found if type(row[count_at]) is int and row[count_at] > 0)
    latest = max((float(row[time_at]) for row in found
                  if type(row[time_at]) in (int, float) and 0 <= row[time_at] <= LAST_SECOND),
                 default=0.0)
    return len(found), min(findings, MOST_COUNTED), latest


def _tally(conn: sqlite3.Connection, kind: str, rows: int, findings: int,
           latest: float) -> None:
    if not rows:
        return
    conn.execute(
        "INSERT INTO pruned (kind, rows, findings, latest) VALUES (?, ?, ?, ?) "
        f"ON CONFLICT (kind) DO UPDATE SET rows = min(rows + excluded.rows, {MOST_COUNTED}), "
        f"findings = min(findings + excluded.findings, {MOST_COUNTED}), "
        # an edited tally's time no calendar holds is replaced, not kept as the maximum
        f"latest = CASE WHEN latest BETWEEN 0 AND {LAST_SECOND} THEN "
        "max(latest, excluded.latest) ELSE excluded.latest END",
        (kind, rows, findings, latest))


def pruned_tally(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """What retention has deleted from the file behind ``conn``: ``{"incidents": {"rows",
    "findings", "latest"}, "deliveries": {...}}`` (``latest``: the last seen time of the
    latest row deleted, seconds since the epoch); ``{}`` for a file older than the
    ``pruned`` table or never pruned. A row aimsec did not write (a count below 0, a
    time no calendar holds: an edited file) is left out, as if nothing was pruned."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                          "name = 'pruned'").fetchone()
    if not exists:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for kind, rows, findings, latest in conn.execute(
            "SELECT kind, rows, findings, latest FROM pruned"):
        if kind in ("incidents", "deliveries") and type(rows) is int and rows >= 0 \
                and type(findings) is int and findings >= 0 \
                and type(latest) in (int, float) and 0 <= latest <= LAST_SECOND:
            found[kind] = {"rows": rows, "findings": findings, "latest": float(latest)}
    return found
