"""The ``aimsec`` command."""

from __future__ import annotations

import argparse
import sys

from . import digits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aimsec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="guard digits models and replay mixed traffic")
    demo.add_argument("--calls", type=int, default=200, help="calls per model (default 200)")
    demo.add_argument("--framework", action="append", choices=digits.FRAMEWORKS,
                      help="only this framework (repeatable); default: every installed one")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from . import demo as demo_job

        demo_job.run(calls=args.calls, frameworks=args.framework, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
