"""Check an audit trail's hash chain and name the first broken line.

Reads each file once, line by line, holding one line at a time (lines longer than
:data:`LONGEST_LINE` are reported, never read whole), so a trail of any size is checked in
bounded memory. A live trail can be checked while it is written: the files are opened
together while its writers are held (for the time it takes to open them, not to read
them), so a rotation meanwhile changes nothing the check reads, and lines appended after
that moment are left for the next check.

What the chain proves and what it cannot: a changed, removed, inserted or reordered line
breaks the link of the line after it, and a cut-short last line is not valid JSON. Lines
cut from the *start* of the trail look like lines that rotation dropped, and a change to
the *last* line has no successor to expose it: compare the head digest this check prints
with one recorded elsewhere (``--head``) to cover the end too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..files import open_regular
from .log import AUDIT_FILE
from .writer import fcntl, lock_path

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

LONGEST_LINE = 64 * 1024  #: lines are at most 8 KB; anything far longer is damage
#: A rotated file: the trail's name and an index of ASCII digits ("audit.jsonl.²" is none)
_ROTATED = re.compile(r"^(?P<base>.+)\.(?P<index>[0-9]+)$")


@dataclass(frozen=True)
class Verification:
    """The result of :func:`verify_trail`.

    ``intact`` is false when ``broken_file``/``broken_line`` (1-based) name the first line
    that fails; ``reason`` says why. ``head`` is the hex SHA-256 of the last line checked;
    ``anchored`` is false when the trail's first line links to a line no longer present
    (rotated away).
    """

    intact: bool
    files: tuple[Path, ...]
    lines: int
    head: str | None
    anchored: bool
    broken_file: Path | None = None
    broken_line: int | None = None
    reason: str = ""


def trail_files(path: Path) -> list[Path]:
    """The files of the trail at ``path``, oldest first: a file and its rotated siblings
    (``audit.jsonl.3``, ``.2``, ``.1``, then ``audit.jsonl``), or for a folder holding one
    trail, that trail. Raises ``FileNotFoundError`` / ``ValueError`` when there is none or
    the folder holds several (name the file then)."""
    return _rotated_files(_trail_path(path))


def _trail_path(path: Path) -> Path:
    """The trail's file (``audit.jsonl``, or the one trail a folder holds)."""
    if path.is_dir():
        if (path / AUDIT_FILE).exists():  # the guard's own trail, beside its incident
            path = path / AUDIT_FILE      # database and outbox
    if path.is_dir():
        bases = {_base(p.name) for p in path.iterdir()
                 if p.is_file() and not p.name.endswith(".lock")}
        if not bases:
            raise FileNotFoundError(f"no audit trail in {path}")
        if len(bases) > 1:
            raise ValueError(f"{path} holds several trails ({', '.join(sorted(bases))}); "
                             "name one of the files")
        path = path / bases.pop()
    return path


def _rotated_files(path: Path) -> list[Path]:
    siblings = []
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            match = _ROTATED.match(p.name)
            if match and match["base"] == path.name and p.is_file():
                siblings.append((int(match["index"]), p))
    files = [p for _, p in sorted(siblings, reverse=True)]
    if path.exists():
        files.append(path)
    if not files:
        raise FileNotFoundError(f"no audit trail at {path}")
    return files


@contextmanager
def _snapshot(path: Path) -> Iterator[list[tuple[Path, BinaryIO, int]]]:
    """The trail's files, each opened with its size, taken while no writer of the trail
    can append or rotate (a shared lock on the writers' lock file, when there is one).

    A live trail keeps being written while it is checked: a rotation between listing
    the files and opening a later one would shift the names, so the check would read
    lines in the wrong order (or miss a file dropped meanwhile) and report an intact
    trail as broken. Open files keep their lines whatever they are renamed to, and the
    sizes bound each file to the lines it held at that moment (a line being appended
    after the snapshot is never read half-written)."""
    base = _trail_path(path)
    with ExitStack() as stack:
        opened = []
        with _writers_held(base):
            for file in _rotated_files(base):
                handle = stack.enter_context(open_regular(file))
                opened.append((file, handle, os.fstat(handle.fileno()).st_size))
        yield opened


@contextmanager
def _writers_held(trail: Path) -> Iterator[None]:
    """Hold the trail's writers (see :mod:`.writer`) for the block, where they coordinate
    through ``flock``; without a usable lock file (no writer on this system, one that is
    not a regular file, no ``fcntl``) the block runs unlocked."""
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(lock_path(trail), os.O_RDONLY | _NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        yield
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


_DIGEST = re.compile("[0-9a-f]{64}")  #: a SHA-256 hex digest, as the writer links lines


def _base(name: str) -> str:
    match = _ROTATED.match(name)
    return match["base"] if match else name


def verify_trail(path: str | Path, head: str | None = None) -> Verification:
    """Check the trail at ``path`` (see :func:`trail_files`); ``head``, if given, is the
    hex digest the last line must have."""
    with _snapshot(Path(path)) as opened:
        files = tuple(file for file, _, _ in opened)
        expected: str | None = None
        anchored = True
        count = 0
        for file, handle, size in opened:
            for number, raw in _lines(handle, size):
                count += 1
                problem = _check(raw, expected, first=count == 1)
                if problem is not None:
                    return Verification(False, files, count, expected, anchored, file,
                                        number, problem)
                if count == 1:
                    anchored = json.loads(raw)["prev"] is None
                expected = hashlib.sha256(raw[:-1]).hexdigest()
    if head is not None and head != expected:
        last = files[-1]
        found = ("the trail has no lines" if expected is None
                 else f"the last line's digest is {expected}")
        return Verification(False, files, count, expected, anchored, last, None,
                            f"{found}; expected {head} "
                            "(lines were changed or removed at the end)")
    return Verification(True, files, count, expected, anchored)


def _lines(handle: BinaryIO, size: int) -> Iterator[tuple[int, bytes]]:
    """The first ``size`` bytes of ``handle`` line by line, numbered from 1."""
    number = 0
    while size > 0:
        raw = handle.readline(min(LONGEST_LINE + 1, size))
        if not raw:
            return
        size -= len(raw)
        number += 1
        yield number, raw
        if len(raw) > LONGEST_LINE and not raw.endswith(b"\n"):
            return  # reported by _check; the rest of this file is not read


def _check(raw: bytes, expected: str | None, first: bool) -> str | None:
    if not raw.endswith(b"\n"):
        if len(raw) > LONGEST_LINE:
            return f"line longer than {LONGEST_LINE} bytes (audit lines are at most 8 KB)"
        return "the line is cut short (no newline at the end of the file)"
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested deep
        return f"not a JSON line ({exc.__class__.__name__}: {exc})"
    if not isinstance(line, dict) or "prev" not in line:
        return "not an audit line (no \"prev\" link)"
    if first:  # null: the trail's start; a digest: it starts after lines rotated away
        prev = line["prev"]
        if prev is None or (isinstance(prev, str) and _DIGEST.fullmatch(prev)):
            return None
        return (f"the first line's \"prev\" is {prev!r:.100}; expected null (the trail's "
                "first line) or the 64-hex-digit digest of a line before it")
    if line["prev"] != expected:
        return (f"its \"prev\" is {line['prev']!r:.100}, but the line before it hashes to "
                f"{expected!r}: a line was changed, removed, inserted or reordered here "
                "or just before")
    return None
