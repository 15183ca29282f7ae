"""``aimsec incidents``: list incidents from the SQLite incident store, change a status, or
prune what retention says goes."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any

from ..incidents.model import STATUSES
from ..severity import SEVERITIES
from ..visible import shown
from .arguments import database_file, demo_run_hint, fail, received, row_id, row_limit

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.ASCII)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: How long a command waits for other processes writing the file before it gives up.
WAIT_S = 30.0
_STYLE = {"low": "dim", "medium": "yellow", "high": "bold red", "critical": "bold white on red"}


def since(text: str) -> float:
    """``30m``, ``24h``, ``7d`` (ago) or an ISO 8601 date/time -> seconds since the epoch."""
    match = _SPAN.match(text)
    if match:
        return time.time() - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a span such as 30m, 24h, 7d or an ISO date such as 2026-01-31; "
            f"received {received(text)}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "incidents", help="list open incidents (most severe first)",
        description="List incidents from the incident database, most severe and latest "
                    "first; or acknowledge/resolve one, or prune what retention says "
                    "goes. Before any of these, what the journals of processes killed "
                    "before writing their incidents hold is written into the database "
                    "(said on standard error).")
    parser.add_argument("--since", type=since, metavar="SPAN|DATE",
                        help="only incidents seen since then: 30m, 24h, 7d or an ISO date")
    parser.add_argument("--severity", choices=SEVERITIES, help="at least this severity")
    parser.add_argument("--status", choices=(*STATUSES, "all"), default="open",
                        help="which incidents (default: open)")
    parser.add_argument("--limit", type=row_limit, default=200,
                        help="most rows (default 200)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--db", type=database_file, metavar="PATH",
                        help="the incident database (default: AIMSEC_INCIDENT_DB, else "
                             "SECURITY_LOG_PATH/incidents.sqlite3)")
    parser.add_argument("--ack", type=row_id, metavar="ID", help="mark incident ID acknowledged")
    parser.add_argument("--resolve", type=row_id, metavar="ID",
                        help="mark incident ID resolved")
    parser.add_argument("--prune", action="store_true",
                        help="delete now the resolved incidents and delivery records older "
                             "than the retention (AIMSEC_INCIDENT_RETENTION_DAYS, default 90) "
                             "and the delivery records beyond AIMSEC_INCIDENT_MAX_DELIVERIES")
    parser.add_argument("--retention-days", type=retention_days, metavar="DAYS",
                        help="with --prune: days to keep instead of the setting")
    parser.add_argument("--vacuum", action="store_true",
                        help="with --prune: then give the freed space back to the disk "
                             "(SQLite VACUUM; guards writing meanwhile wait for it); a "
                             "file SQLite's quick_check finds damaged is refused before "
                             "anything is pruned")
    parser.set_defaults(handler=run)


def retention_days(text: str) -> float:
    """``--retention-days``: a finite number of days > 0 (pruning with 0 would keep all)."""
    from ..incidents.retention import parse_days

    try:
        value = parse_days(text)
    except ValueError:
        value = 0.0
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of days > 0; "
                                         f"received {received(text)}")
    return value


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..incidents.damaged import DamagedRows
    from ..incidents.store import IncidentStoreError, database_path

    console = Console(width=None if sys.stdout.isatty() else 80)
    path = database_path(args.db)
    for flag, given in (("--retention-days", args.retention_days is not None),
                        ("--vacuum", args.vacuum)):
        if given and not args.prune:
            return fail("incidents", f"{flag} goes with --prune; expected both or neither")
    given = [flag for flag, on in (("--ack", args.ack is not None),
                                   ("--resolve", args.resolve is not None),
                                   ("--prune", args.prune)) if on]
    if len(given) > 1:
        return fail("incidents", f"{' and '.join(given)} cannot be combined; expected one "
                                 "of --ack, --resolve and --prune per command")
    changing = args.ack is not None or args.resolve is not None or args.prune
    filters = [flag for flag, given in (("--since", args.since is not None),
                                        ("--severity", args.severity is not None),
                                        ("--status", args.status != "open"),
                                        ("--limit", args.limit != 200)) if given]
    if changing and filters:  # they would be ignored: the change is not what they say
        verb = "selects" if len(filters) == 1 else "select"
        return fail("incidents", f"{', '.join(filters)} {verb} the incidents to list; "
                                 "--ack, --resolve and --prune act on one incident or on "
                                 "what retention says goes: expected no listing filter "
                                 "with them")
    try:
        exists, is_file = path.exists(), path.is_file()
    except OSError as exc:  # a name too long, a folder that may not be searched
        return fail("incidents", f"the incident database {received(str(path), 120)}: "
                                 f"{exc.strerror or exc}; expected the path of an SQLite file")
    if not exists:  # a process killed before its first write: its journal makes it
        _replay(path)
        exists, is_file = path.exists(), path.is_file()
    if not exists:
        if args.prune:
            if args.json:
                print(json.dumps(_pruned_json(path, None, None, None)))
            else:
                console.print(f"no incident database at {shown(path)}: nothing to prune",
                              highlight=False)
            return 0
        if changing:  # nothing to mark: as for an unknown id in an existing database
            wanted = args.ack if args.ack is not None else args.resolve
            return fail("incidents", f"no incident with id {wanted}: there is no incident "
                                     f"database at {path}", 1)
        if args.json:
            print(json.dumps(_listing_json(path, [], False, DamagedRows()), indent=2))
        else:
            hint = demo_run_hint(path.parent, "--db") if args.db is None else ""
            console.print(f"no incident database at {shown(path)}: nothing recorded "
                          f"yet{shown(hint)}", highlight=False)
        return 0
    if not is_file:
        return fail("incidents", f"{path} is not a file; expected the incident database "
                                 "(an SQLite file)")
    _replay(path)
    store = _opened(args, path, changing)  # a bad setting: main says it in one line
    try:
        if changing:
            _check_ours(path)
        if args.prune:
            return _prune(args, store, path, console)
        return _show(args, store, path, console)
    except IncidentStoreError as exc:  # not an incident database, or one that cannot be read
        return fail("incidents", exc)
    finally:
        store.close()


def _opened(args: argparse.Namespace, path: Any, changing: bool) -> Any:
    """The store at ``path``: read-only unless a command changes it (listing never
    does); ``--retention-days`` replaces the setting for ``--prune``. Raises
    ConfigurationError for a bad AIMSEC_INCIDENT_* setting."""
    from ..incidents.retention import RetentionPolicy
    from ..incidents.store import IncidentStore

    policy = RetentionPolicy.resolve(retention_days=args.retention_days) if args.prune \
        else None
    return IncidentStore(path, read_only=not changing, retention=policy, timeout_s=WAIT_S)


def _replay(path: Any) -> None:
    """Write what the journals of processes that ended without writing it hold (a kill),
    so the command sees every incident; said in one line on standard error. A file that
    is not an incident database, or one this user may not write, is left as it is (the
    line says so; the command goes on)."""
    from ..incidents.journal import Replayed, journal_folder, pending, replay
    from ..incidents.store import IncidentStore, IncidentStoreError

    if not pending(journal_folder(path)):
        return
    done = Replayed()
    try:
        if path.exists():  # else made by the replay, as by a guard
            _check_ours(path)
        store = IncidentStore(path, timeout_s=WAIT_S)
        try:
            replay(store, into=done)
        finally:
            store.close()
    except IncidentStoreError as exc:
        print(f"aimsec incidents: {f'replayed {done.summary()}, then ' if done else ''}"
              f"the journals of ended processes in {journal_folder(path)} were not "
              f"replayed: {exc}", file=sys.stderr)
        return
    if done.noteworthy:
        print(f"aimsec incidents: replayed {done.summary()}", file=sys.stderr)


def _check_ours(path: Any) -> None:
    """Raise IncidentStoreError unless ``path`` is an incident database (of this or an
    older schema): a command that changes the file would otherwise give aimsec's tables
    to any other SQLite file it was pointed at."""
    from ..incidents.store import IncidentStore

    probe = IncidentStore(path, read_only=True, timeout_s=WAIT_S)
    try:
        probe.count(statuses=STATUSES, at_most=1)
    finally:
        probe.close()


def _prune(args: argparse.Namespace, store: Any, path: Any, console: Any) -> int:
    """Delete what retention says goes, in bounded steps; print what went."""
    from ..incidents.retention import Pruned
    from ..incidents.store import IncidentStoreError

    policy = store.retention
    keeps_all = policy.retention_days == 0 and not policy.max_deliveries
    if args.vacuum:  # a damaged file is refused before anything is pruned
        store.check_intact("nothing was pruned or compacted (compacting would keep only "
                           "what can still be read)")
    done = Pruned() if keeps_all else store.prune()
    try:
        sizes = store.vacuum(checked=True) if args.vacuum else None
    except IncidentStoreError as exc:  # what was pruned stays pruned: said with the error
        return fail("incidents", f"pruned {done.incidents:,} resolved incident(s) and "
                                 f"{done.deliveries:,} delivery record(s), then {exc}")
    if args.json:
        print(json.dumps(_pruned_json(path, done, policy, sizes)))
        return 0
    if keeps_all:
        console.print("retention keeps everything (AIMSEC_INCIDENT_RETENTION_DAYS=0 and "
                      "AIMSEC_INCIDENT_MAX_DELIVERIES=0): nothing pruned", highlight=False)
    else:
        console.print(f"pruned {done.incidents:,} resolved incident(s) ({done.findings:,} "
                      f"finding(s)) and {done.deliveries:,} delivery record(s) "
                      f"{_pruned_why(policy)} from {shown(path)}", highlight=False)
    if sizes is not None:
        console.print(f"compacted {shown(path)}: {sizes[0]:,} bytes before, {sizes[1]:,} "
                      "after (file and write-ahead log)", highlight=False)
    return 0


def _pruned_json(path: Any, done: Any, policy: Any, sizes: tuple[int, int] | None
                 ) -> dict[str, Any]:
    """The JSON of ``--prune --json``: ``database``; ``incidents``, ``findings`` and
    ``deliveries`` deleted; ``retention_days`` and ``max_deliveries`` applied (``null``
    without a database); ``vacuum``: ``{"bytes_before", "bytes_after"}`` with
    ``--vacuum``, else ``null``."""
    from ..incidents.retention import Pruned

    done = done or Pruned()
    return {"database": str(path), "incidents": done.incidents, "findings": done.findings,
            "deliveries": done.deliveries,
            "retention_days": policy.retention_days if policy else None,
            "max_deliveries": policy.max_deliveries if policy else None,
            "vacuum": None if sizes is None else {"bytes_before": sizes[0],
                                                  "bytes_after": sizes[1]}}


def _pruned_why(policy: Any) -> str:
    """What made rows go: the retention, the delivery cap, or both (with 0 days only the
    cap deletes, and it deletes delivery records alone)."""
    reasons = []
    if policy.retention_days:
        reasons.append(f"older than {policy.retention_days:g} day(s)")
    if policy.max_deliveries:
        reasons.append(f"beyond the {policy.max_deliveries:,} delivery records kept")
    return f"({' or '.join(reasons)})"


def _show(args: argparse.Namespace, store: Any, path: Any, console: Any) -> int:
    """Change a status (``--ack``/``--resolve``) or list incidents; ``IncidentStoreError``
    when the file is not an incident database."""
    from ..incidents.damaged import DamagedRows

    for incident_id, status in ((args.ack, "acknowledged"), (args.resolve, "resolved")):
        if incident_id is not None:
            try:
                changed = store.set_status(incident_id, status)
            except KeyError as exc:
                return fail("incidents", exc.args[0], 1)
            if args.json:
                print(json.dumps({"database": str(path), "incident": changed.as_dict()},
                                 indent=2))
            else:
                console.print(f"incident #{incident_id} {status}")
            return 0
    statuses = STATUSES if args.status == "all" else (args.status,)
    damaged = DamagedRows()
    found = store.incidents(statuses=statuses, since=args.since, severity=args.severity,
                            limit=args.limit + 1, damaged=damaged)
    cut = len(found) > args.limit
    found = found[:args.limit]
    if args.json:
        print(json.dumps(_listing_json(path, found, cut, damaged), indent=2))
        return 0
    if not found:
        console.print(f"no {args.status if args.status != 'all' else ''} incidents in "
                      .replace("  ", " ") + shown(path), highlight=False)
    else:
        console.print(table(found, time.time()))
        for line in legend(found):
            console.print(line, highlight=False)
        more = f" (the {args.limit} most severe and recent; --limit shows more)" if cut else ""
        console.print(f"{len(found)} incident(s){more} from {shown(path)}; details: aimsec "
                      "incidents --json", highlight=False)
    if damaged:
        console.print(shown(damaged.note()), highlight=False)
    return 0


def _listing_json(path: Any, found: list[Any], cut: bool, damaged: Any) -> dict[str, Any]:
    """The JSON of a listing: ``database``; ``incidents`` (each as
    :meth:`Incident.as_dict`); ``more`` (whether ``--limit`` left some out); ``damaged``
    (:meth:`DamagedRows.as_dict`: rows passed over because they cannot be read)."""
    return {"database": str(path), "incidents": [i.as_dict() for i in found], "more": cut,
            "damaged": damaged.as_dict()}


def table(incidents: list[Any], now: float) -> Any:
    """A rich table of ``incidents`` that reads at 80 columns."""
    from rich import box
    from rich.table import Table

    out = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="aimsec incidents")
    out.add_column("#", justify="right", no_wrap=True)
    out.add_column("severity", no_wrap=True)
    out.add_column("threat", overflow="ellipsis", no_wrap=True, max_width=22)
    out.add_column("model", overflow="fold", ratio=1)
    out.add_column("client", overflow="fold", ratio=1)
    out.add_column("count", justify="right", no_wrap=True)
    out.add_column("last", justify="right", no_wrap=True)
    for i in incidents:
        out.add_row(str(i.id), f"[{_STYLE.get(i.severity, '')}]{i.severity}[/]",
                    shown(i.threat), shown(i.model), client_cell(i), f"{i.count:,}",
                    ago(now - i.last_seen))
    return out


def client_cell(incident: Any) -> str:
    """The client column: the client, or for a rolled-up incident how many clients'
    incidents it stands for and the first clients of its sample."""
    if not incident.rolled_up:
        return shown(incident.client)
    sample = ", ".join(incident.evidence.clients[:3])
    return shown(f"{incident.client}: {incident.evidence.rolled_up:,} incidents"
                 + (f" ({sample}, …)" if sample else ""))


def legend(incidents: list[Any]) -> list[str]:
    """One line per threat shown: its OWASP ML Top 10 ids, ATLAS techniques, mitigations."""
    lines = []
    for threat in dict.fromkeys(i.threat for i in incidents):
        row = next(i for i in incidents if i.threat == threat).taxonomy
        parts = [" ".join(ids) for ids in (row.owasp, row.techniques, row.mitigations) if ids]
        lines.append(f"{shown(threat)}: {' / '.join(parts) or 'unmapped'}")
    return lines


def ago(seconds: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: how long ago, in one short word."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


