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
from ..audit.verify import trail_files
from ..errors import ConfigurationError
from ..files import open_regular
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
    """The trail's files, oldest first (:func:`aimsec_core.audit.verify.trail_files`: the
    same files ``aimsec audit verify`` checks), for a folder holding ``audit.jsonl`` or a
    file.

    Raises :class:`ConfigurationError` when nothing is there.
    """
    try:
        return trail_files(Path(logs))
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigurationError(
            f"{exc}: expected {AUDIT_FILE} (and its rotated files {AUDIT_FILE}.1 …) in "
            "that folder, or an audit file. Point --logs (or SECURITY_LOG_PATH) at the "
            "folder a guard writes to") from None


def read_entries(files: list[Path], stats: ReadStats, *, since: float | None = None,
                 until: float | None = None, model: str | None = None,
                 progress: Callable[[int], None] | None = None) -> Iterator[AuditEntry]:
    """Entries of ``files`` with ``since <= time < until`` (and of ``model``, if given).

    ``progress(n)`` is told about every ``n`` bytes read. Malformed, oversized and
    filtered-out lines are counted in ``stats``, never raised.
    """
    for file in files:
        try:
            stream = open_regular(file)
        except FileNotFoundError:  # rotated away since it was listed: its lines moved on
            stats.vanished.append(str(file))
            continue
        except ValueError as exc:  # a FIFO or device in the trail's place
            raise ConfigurationError(f"cannot read the audit file: {exc}") from None
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
