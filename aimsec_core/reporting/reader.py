"""Streaming the audit trail: rotated files oldest first, one line at a time.

The trail is ``audit.jsonl`` plus the files rotation left beside it, ``audit.jsonl.1``
(the most recent) to ``audit.jsonl.N`` (the oldest). Lines are read one at a time from
binary files, so memory does not grow with the trail; a line longer than
:data:`MAX_LINE_BYTES` is skipped (and counted) without being held whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..audit import AUDIT_FILE
from ..errors import ConfigurationError
from .records import AuditEntry, parse_line

#: Longest audit line read; longer ones (e.g. unbounded ``flagged`` lists) are skipped.
MAX_LINE_BYTES = 16 * 1024 * 1024


@dataclass
class ReadStats:
    """What reading the trail met, for the report's "sources" section."""

    files: list[str] = field(default_factory=list)
    bytes: int = 0
    lines: int = 0
    malformed: int = 0      #: not a JSON object with a readable time
    oversized: int = 0      #: longer than MAX_LINE_BYTES
    outside: int = 0        #: outside the period or of another model
    used: int = 0
    vanished: list[str] = field(default_factory=list)  #: listed, gone before being read


def audit_files(logs: str | Path) -> list[Path]:
    """The trail's files, oldest first, for a folder holding ``audit.jsonl`` or a file.

    Raises :class:`ConfigurationError` when nothing is there.
    """
    path = Path(logs)
    current = path / AUDIT_FILE if path.is_dir() else path
    rotated = []
    for candidate in current.parent.glob(current.name + ".*"):
        suffix = candidate.name[len(current.name) + 1:]
        if suffix.isdecimal() and candidate.is_file():  # "²" is a digit int() refuses
            rotated.append((int(suffix), candidate))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if current.is_file():
        files.append(current)
    if not files:
        raise ConfigurationError(
            f"no audit trail at {path}: expected {AUDIT_FILE} (and its rotated files "
            f"{AUDIT_FILE}.1 …) in that folder, or an audit file. Point --logs (or "
            "SECURITY_LOG_PATH) at the folder a guard writes to")
    return files


def read_entries(files: list[Path], stats: ReadStats, *, since: float | None = None,
                 until: float | None = None, model: str | None = None,
                 progress: Callable[[int], None] | None = None) -> Iterator[AuditEntry]:
    """Entries of ``files`` with ``since <= time < until`` (and of ``model``, if given).

    ``progress(n)`` is told about every ``n`` bytes read. Malformed, oversized and
    filtered-out lines are counted in ``stats``, never raised.
    """
    for file in files:
        try:
            stream = open(file, "rb")
        except FileNotFoundError:  # rotated away since it was listed: its lines moved on
            stats.vanished.append(str(file))
            continue
        except OSError as exc:
            raise ConfigurationError(f"cannot read the audit file {file}: "
                                     f"{exc.strerror or exc}") from exc
        stats.files.append(str(file))
        with stream:
            pending = 0
            while True:
                line = stream.readline(MAX_LINE_BYTES)
                if not line:
                    break
                size = len(line)
                oversized = size == MAX_LINE_BYTES and not line.endswith(b"\n")
                if oversized:
                    size += _skip_rest_of_line(stream)
                pending += size
                if pending >= 1 << 20:
                    stats.bytes += pending
                    if progress is not None:
                        progress(pending)
                    pending = 0
                if oversized:
                    stats.lines += 1
                    stats.oversized += 1
                    continue
                if line.isspace():
                    continue
                stats.lines += 1
                entry = parse_line(line)
                if entry is None:
                    stats.malformed += 1
                    continue
                if ((since is not None and entry.time < since)
                        or (until is not None and entry.time >= until)
                        or (model is not None and entry.model != model)):
                    stats.outside += 1
                    continue
                stats.used += 1
                yield entry
            stats.bytes += pending
            if progress is not None and pending:
                progress(pending)


def _skip_rest_of_line(stream: object) -> int:
    skipped = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES)  # type: ignore[attr-defined]
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def total_bytes(files: list[Path]) -> int:
    """The files' combined size (a file rotated away meanwhile counts 0)."""
    total = 0
    for file in files:
        try:
            total += file.stat().st_size
        except OSError:
            continue
    return total
