"""Argument types shared by the subcommands, and the one way a command reports an error.

A bad argument ends the command with one line on standard error and a nonzero exit
status, never a traceback: argparse types raise ``argparse.ArgumentTypeError`` (argparse
prints ``usage`` and the message, exit status 2); a command's own checks call :func:`fail`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

#: SQLite's largest INTEGER: row ids (incident ids) above it cannot exist.
SQLITE_MAX_INT = 2**63 - 1
#: Largest seed: scikit-learn's ``random_state`` and numpy's legacy seeds are 32-bit.
MAX_SEED = 2**32 - 1
#: Most calls ``aimsec demo`` replays per model (about a quarter of an hour each).
MAX_DEMO_CALLS = 100_000
#: A whole number as an operator types it: ASCII digits, an optional sign.
_WHOLE = re.compile(r"\s*([+-]?)([0-9]+)\s*", re.ASCII)
#: Digits beyond which a number is out of every range (and not converted: Python refuses
#: to convert more than 4,300 digits, which read as "not a whole number").
_MOST_DIGITS = 40


def received(text: str, shown: int = 60) -> str:
    """``text`` quoted for an error message, cut to ``shown`` characters (an argument of
    megabytes is not echoed whole): ``'12345…' (5,000 characters)``."""
    if len(text) <= shown:
        return repr(text)
    return f"{text[:shown]!r}… ({len(text):,} characters)"


def whole_number(text: str, low: int, high: int | None = None) -> int:
    """``text`` as an integer from ``low`` to ``high`` (no bound when ``None``); an
    ``argparse.ArgumentTypeError`` saying what was expected otherwise. Only ASCII digits
    count: ``int`` also reads ``1_0`` as 10 and other scripts' digits (``٣`` as 3), so a
    mistyped incident id acted on another incident."""
    expected = (f"a number of at least {low}" if high is None
                else f"a number from {low} to {high}")
    match = _WHOLE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a whole number in ASCII digits "
                                         f"({expected}); received {received(text)}")
    sign, digits = match.groups()
    if len(digits.lstrip("0")) > _MOST_DIGITS:
        raise argparse.ArgumentTypeError(f"expected {expected}; received {received(text)}")
    value = int(sign + digits)
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"expected {expected}; received {received(text)}")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    return whole_number(text, 1)


def seed(text: str) -> int:
    """A seed from 0 to 2**32 - 1 (``--seed``)."""
    return whole_number(text, 0, MAX_SEED)


def demo_calls(text: str) -> int:
    """Calls per model for ``aimsec demo --calls``: 1 to :data:`MAX_DEMO_CALLS`."""
    return whole_number(text, 1, MAX_DEMO_CALLS)


def row_id(text: str) -> int:
    """A database row id: an integer from 1 to 2**63 - 1."""
    value = positive_int(text)
    if value > SQLITE_MAX_INT:
        raise argparse.ArgumentTypeError(f"expected an id of at most {SQLITE_MAX_INT}; "
                                         f"received {received(text)}")
    return value


def row_limit(text: str) -> int:
    """How many rows to list (``--limit``): an integer from 1 to 2**63 - 2 (SQLite's
    largest INTEGER, less the one row read to tell whether more were left out)."""
    value = positive_int(text)
    if value > SQLITE_MAX_INT - 1:
        raise argparse.ArgumentTypeError(f"expected a number of rows of at most "
                                         f"{SQLITE_MAX_INT - 1}; received {received(text)}")
    return value


def database_file(text: str) -> str:
    """``--db``: a path that is not empty (an empty one read as the current folder)."""
    return _not_blank(text, "the path of an SQLite file")


def output_file(text: str) -> str:
    """A file to write (``--json``, ``--markdown``): a path that is not empty (an empty one
    read as "not asked for", and nothing was written)."""
    return _not_blank(text, "the path of a file to write")


def _not_blank(text: str, expected: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected {expected}; received {received(text)}")
    return text


def rate(text: str) -> float:
    """A rate strictly between 0 and 1 (``--fpr``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; received {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 1), e.g. 0.05; "
                                         f"received {text}")
    return value


def sha256_hex(text: str) -> str:
    """A SHA-256 digest as 64 hexadecimal digits (``--head``), lower-cased."""
    digest = text.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise argparse.ArgumentTypeError(f"expected a SHA-256 digest (64 hex digits, as "
                                         f"printed after 'head'); received {text!r}")
    return digest


def fail(command: str, message: object, status: int = 2) -> int:
    """Print ``aimsec COMMAND: MESSAGE`` as one line on standard error, control and bidi
    characters as escapes (messages quote file names and settings an attacker may have
    chosen); returns ``status``."""
    from ..visible import visible

    text = visible(" ".join(str(message).split()))
    # a path's bytes that are not UTF-8 (lone surrogates) as escapes, as Python's own
    # standard error writes them: a stream that is strict raised UnicodeEncodeError
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    print(f"aimsec {command}: {text}", file=sys.stderr)
    return status


def is_symlink_loop(error: BaseException) -> bool:
    """Whether ``error`` is pathlib's ``RuntimeError`` for a path whose symbolic links lead
    back to themselves (``Path.resolve`` raises it, not ``OSError``, before Python 3.13)."""
    return type(error) is RuntimeError and str(error).startswith("Symlink loop from ")


def demo_run_hint(folder: str | Path, option: str) -> str:
    """``; the latest aimsec demo run is in F: OPTION F`` when ``folder`` holds no trail of
    its own but ``aimsec demo`` runs (``demo-<UTC time>/``, each with its trail) beneath it,
    else ``""``: the commands read ``./security_logs`` itself, not a demo run's folder."""
    base = Path(folder)
    try:
        if (base / "audit.jsonl").exists():
            return ""
        runs = sorted(p for p in base.glob("demo-*") if (p / "audit.jsonl").is_file())
    except OSError:
        return ""
    if not runs:
        return ""
    latest = runs[-1]
    target = latest / "incidents.sqlite3" if option == "--db" else latest
    return f"; the latest aimsec demo run is in {latest}: {option} {target}".rstrip()
