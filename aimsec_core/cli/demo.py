"""``aimsec demo``: guard digits models and replay mixed traffic."""

from __future__ import annotations

import argparse
from typing import Any

from .. import digits
from .arguments import MAX_DEMO_CALLS, demo_calls, seed


def register(commands: Any) -> None:
    demo = commands.add_parser("demo", help="guard digits models and replay mixed traffic")
    demo.add_argument("--calls", type=demo_calls, default=200,
                      help=f"calls per model (default 200, at most {MAX_DEMO_CALLS:,})")
    demo.add_argument("--framework", action="append", choices=digits.FRAMEWORKS,
                      help="only this framework (repeatable); default: every installed one")
    demo.add_argument("--seed", type=seed, default=0,
                      help="seed of the data split, models and traffic, 0 to 2**32 - 1")
    demo.add_argument("--out", help="folder under which the run's folder is made "
                                    "(default: SECURITY_LOG_PATH, else ./security_logs)")
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from .. import demo as demo_job

    result = demo_job.run(calls=args.calls, frameworks=args.framework, seed=args.seed,
                          out=args.out)
    print(f"done in {result.seconds:.0f} s; everything is in {result.folder}")
    return 0
