"""The ``aimsec`` command: one module per subcommand, each with ``register`` and ``run``.

A subcommand module defines ``register(subparsers)`` (adds its parser and sets
``run`` as the parser's ``handler`` default) and ``run(args) -> int``; adding a command
is one module plus one name in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

#: Framework start-up chatter kept out of the command's output (the application's own
#: settings win: these are defaults). TensorFlow reads them when it is first imported.
QUIET_FRAMEWORKS = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}

#: Subcommand modules, in the order ``aimsec --help`` lists them.
COMMANDS = ("demo", "evaluate", "report", "incidents", "threat_model", "audit")


def main(argv: list[str] | None = None) -> int:
    for variable, value in QUIET_FRAMEWORKS.items():
        os.environ.setdefault(variable, value)
    parser = argparse.ArgumentParser(
        prog="aimsec", description="Security middleware for trained ML models.")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"aimsec {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(commands)
    args = parser.parse_args(argv)
    from ..errors import AimsecError
    from .arguments import fail, is_symlink_loop

    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:  # the reader went away (`aimsec incidents --json | head`)
        _silence_stdout()
        return 1
    except (AimsecError, OSError) as exc:  # a bad file or setting: one line, no traceback
        return fail(args.command, exc)
    except RuntimeError as exc:
        if not is_symlink_loop(exc):
            raise
        return fail(args.command, f"{exc}: the path leads to itself through symbolic links; "
                                  "expected a file or folder")
    except KeyboardInterrupt:
        return fail(args.command, "interrupted", 130)


def _silence_stdout() -> None:
    """Point standard output at the null device, so the interpreter's last flush into a
    closed pipe is not a second error (the recipe of Python's ``signal`` documentation,
    "Note on SIGPIPE")."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no descriptor behind it (a test's)
        pass


if __name__ == "__main__":
    sys.exit(main())
