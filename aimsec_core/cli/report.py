"""``aimsec report``: a report of the audit trail and the incidents, as JSON and one HTML page."""

from __future__ import annotations

import argparse
from typing import Any

from .arguments import database_file


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "report", help="write report.json and report.html from the audit trail and incidents",
        description="Read the audit trail (rotated files included) and the incident store "
                    "for a period and write report.json and a self-contained report.html.")
    parser.add_argument("--since", help="start: an ISO date/time (2026-11-26, "
                        "2026-11-26T04:00+00:00) or an age (24h, 7d); default: the trail's start")
    parser.add_argument("--until", help="end, as --since; default: now")
    parser.add_argument("--model", help="only this model's calls")
    parser.add_argument("--out", default=".", help="folder for the report (default: here)")
    parser.add_argument("--logs", help="audit folder or file (default: SECURITY_LOG_PATH, "
                        "else ./security_logs)")
    parser.add_argument("--db", type=database_file,
                        help="incident store file (default: incidents.sqlite3 beside the "
                        "trail, else the store's own)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..config import log_folder
    from ..errors import ConfigurationError
    from ..reporting import report
    from .arguments import demo_run_hint, fail

    console = Console()
    try:
        report(args.logs, since=args.since, until=args.until, model=args.model, out=args.out,
               db=args.db, console=console)
    except ConfigurationError as exc:
        missing = str(exc).startswith("no audit trail")
        hint = demo_run_hint(log_folder(args.logs), "--logs") if missing else ""
        return fail("report", f"{exc}{hint}")
    return 0
