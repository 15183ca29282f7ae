"""``aimsec audit verify [PATH]``: check an audit trail's hash chain (default: the folder
``SECURITY_LOG_PATH`` names, else ``./security_logs``, as the other commands read).

Exit status 0 when the trail is intact, 1 when a line is broken (the first one is named:
file and line number), 2 when there is no trail at ``PATH``.
"""

from __future__ import annotations

import argparse
from typing import Any

from .arguments import sha256_hex


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="work with the audit trail")
    actions = audit.add_subparsers(dest="action", required=True)
    verify = actions.add_parser(
        "verify", help="check the hash chain of a trail and name the first broken line")
    verify.add_argument("path", nargs="?", help="an audit file (its rotated files are "
                        "included) or the folder holding it (default: SECURITY_LOG_PATH, "
                        "else ./security_logs)")
    verify.add_argument("--head", type=sha256_hex, help="hex SHA-256 the last line must have (recorded "
                                       "earlier), to cover changes at the end")
    audit.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..audit import verify_trail
    from ..config import log_folder
    from ..visible import visible
    from .arguments import demo_run_hint, fail

    if args.path is None:
        args.path = str(log_folder())
    try:
        result = verify_trail(args.path, head=args.head)
    except FileNotFoundError as exc:
        return fail("audit verify", f"{exc}{demo_run_hint(args.path, 'aimsec audit verify')}")
    except ValueError as exc:
        return fail("audit verify", exc)
    except OSError as exc:  # a file that cannot be opened, or too many files at once
        return fail("audit verify", exc if exc.filename or not exc.strerror else exc.strerror)
    if not result.intact:
        where = f"{result.broken_file}" + (
            f", line {result.broken_line}" if result.broken_line is not None else "")
        print(visible(f"BROKEN: {where}: {result.reason}"))
        return 1
    if result.head is None:  # no line: nothing to chain, no digest to record
        print(f"intact: 0 lines in {len(result.files)} file(s): the trail is empty")
        return 0
    start = ("starts at the trail's first line" if result.anchored
             else "starts after lines rotated away (its first link is not checked)")
    print(f"intact: {result.lines} lines in {len(result.files)} file(s); {start}; "
          f"head {result.head}")
    return 0
