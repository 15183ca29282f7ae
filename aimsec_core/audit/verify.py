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
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .chain import written_link
from .snapshot import TrailFile, snapshot, trail_files

__all__ = ["LONGEST_LINE", "Verification", "trail_files", "verify_trail"]

LONGEST_LINE = 64 * 1024  #: lines are at most 8 KB; anything far longer is damage


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


_DIGEST = re.compile("[0-9a-f]{64}")  #: a SHA-256 hex digest, as the writer links lines


def verify_trail(path: str | Path, head: str | None = None) -> Verification:
    """Check the trail at ``path`` (see :func:`trail_files`); ``head``, if given, is the
    hex digest the last line must have.

    Raises ``FileNotFoundError`` / ``ValueError`` when there is no trail there, it is
    ambiguous or a file of it is no regular file, and ``OSError`` when a file cannot be
    opened (see :func:`~aimsec_core.audit.snapshot.snapshot`)."""
    with snapshot(Path(path)) as opened:
        files = tuple(file.path for file in opened)
        expected: str | None = None
        anchored = True
        count = 0
        for trail_file in opened:
            file = trail_file.path
            if trail_file.vanished:  # rotated away meanwhile (opened as it is reached)
                raise FileNotFoundError(f"{file} was rotated away while the trail was "
                                        "read; check again")
            for number, raw in _lines(trail_file):
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


def _lines(file: TrailFile) -> Iterator[tuple[int, bytes]]:
    """The lines ``file`` held when the snapshot was taken, numbered from 1."""
    number = 0
    while True:
        raw = file.readline(LONGEST_LINE + 1)
        if not raw:
            return
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
        if not (prev is None or (isinstance(prev, str) and _DIGEST.fullmatch(prev))):
            return (f"the first line's \"prev\" is {prev!r:.100}; expected null (the "
                    "trail's first line) or the 64-hex-digit digest of a line before it")
    if written_link(raw) is None:
        return ("its \"prev\" link is not where the writer puts it (last, written "
                "exactly ,\"prev\":...}): the line was rewritten")
    if first:
        return None
    if line["prev"] != expected:
        return (f"its \"prev\" is {line['prev']!r:.100}, but the line before it hashes to "
                f"{expected!r}: a line was changed, removed, inserted or reordered here "
                "or just before")
    return None
