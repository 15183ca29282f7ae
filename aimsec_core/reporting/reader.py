"""Streaming the audit trail: rotated files oldest first, one line at a time.

The trail is ``audit.jsonl`` plus the files rotation left beside it, ``audit.jsonl.1``
(the most recent) to ``audit.jsonl.N`` (the oldest). A guard may rotate it while it is
read, so the files are taken as they are at one moment (:func:`open_trail`, the
snapshot ``aimsec audit verify`` reads too, a bounded number of them open at once) and
each is read up to its size then. Lines are read one at a time from binary files, so
memory does not grow with the trail; a line longer than :data:`MAX_LINE_BYTES` is
skipped (and counted) without being held whole.

Every line's hash-chain link (its ``"prev"``, see :mod:`aimsec_core.audit.chain`) is
checked on the way, lines outside the period included, so a report says when the trail it
counted was changed (:class:`ChainCheck`), as ``aimsec audit verify`` would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..audit import AUDIT_FILE
from ..audit.chain import written_link
from ..audit.snapshot import TrailFile, snapshot, trail_path
from ..audit.verify import LONGEST_LINE
from ..errors import ConfigurationError
from .records import AuditEntry, as_read, is_json_object, parse_line

#: Longest audit line read; longer ones (e.g. unbounded ``flagged`` lists) are skipped.
MAX_LINE_BYTES = 16 * 1024 * 1024



@dataclass
class ChainCheck:
    """The trail's hash chain as the reader met it.

    ``checked`` lines carried a link (or lacked one after the chain began); ``breaks`` of
    them did not match the digest of the line before: a line was changed, removed,
    inserted or reordered just before (``first_break``: ``{"file", "line"}``, 1-based). Lines before the chain's
    first link (a trail written before the chain existed) are ``unchained``; once the
    chain has begun, a line without a link (a blank one too) is a break. ``anchored``: the first linked line
    starts the trail (``prev`` null) rather than following lines rotated away; ``None``
    without a link. The newest file's last line without its newline (being written, where
    writers do not lock) is left unchecked; a line cut short anywhere else (a rotated file
    cut mid-line) is a break, as verify says.
    A linked line longer than ``aimsec audit verify`` reads (64 KiB; the writer's are at
    most 8 KB) is a break too, as verify says, though the report still counts its call.
    """

    checked: int = 0
    breaks: int = 0
    first_break: dict[str, object] | None = None
    unchained: int = 0
    anchored: bool | None = None
    _expected: bytes | None = field(default=None, repr=False)  #: the last line's digest
    _started: bool = field(default=False, repr=False)
    _last_break: tuple[Path, int] | None = field(default=None, repr=False)

    def add(self, line: bytes, digest: bytes, file: Path, number: int,
            size: int | None = None, newest: bool = True) -> None:
        """Check ``line`` (its bytes, newline included; of an oversized line, its end)
        whose own digest is ``digest`` and whole length ``size`` (``len(line)`` if not
        given), read from the trail's ``newest`` file or an older one. A linked line
        longer than ``aimsec audit verify`` reads (no writer writes one) is a break there,
        so it is one here too."""
        if not line.endswith(b"\n"):
            self._expected = None  # cut short (or being written): no successor to check
            if not newest and self._started:  # a rotated file is written no more
                self.checked += 1
                self._break(file, number)
            return
        link = written_link(line)
        if link is None and not self._started:
            if line.isspace():
                return  # a blank line before the chain begins is no line of a trail
            self.unchained += 1
        else:
            self.checked += 1
            too_long = (len(line) if size is None else size) > LONGEST_LINE + 1
            if not self._started:
                self._started = True
                self.anchored = link == b"null"
                if too_long:
                    self._break(file, number)
            elif too_long or (self._expected is not None
                              and link != b'"' + self._expected + b'"'):
                self._break(file, number)
        self._expected = digest

    def unreadable(self, file: Path, number: int) -> None:
        """The line just added (ending with its newline) is no JSON object: once the chain
        has begun that is a break (verify's "not a JSON line"), its link whatever it is."""
        if self._started and self._last_break != (file, number):
            self._break(file, number)

    def _break(self, file: Path, number: int) -> None:
        self._last_break = (file, number)
        self.breaks += 1
        if self.first_break is None:
            self.first_break = {"file": str(file), "line": number}

    def lost(self) -> None:
        """Lines went missing between two files (one rotated away while being read)."""
        self._expected = None

    def as_dict(self) -> dict[str, object]:
        return {"checked": self.checked, "breaks": self.breaks,
                "first_break": self.first_break, "unchained": self.unchained,
                "anchored": self.anchored}


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
    wrong_type: int = 0     #: used, with a field of a type no writer produces (read as absent)
    vanished: list[str] = field(default_factory=list)  #: listed, gone before being read
    chain: ChainCheck = field(default_factory=ChainCheck)


@contextmanager
def open_trail(logs: str | Path) -> Iterator[list[TrailFile]]:
    """The trail's files at ``logs`` (a folder holding ``audit.jsonl``, or a file: the
    files ``aimsec audit verify`` checks, oldest first), as they are at this moment
    (:func:`aimsec_core.audit.snapshot.snapshot`, as ``aimsec audit verify`` reads them:
    a bounded number open at once, however many there are), for :func:`read_entries`;
    closed when the block ends. A rotation meanwhile changes nothing they hold (a file
    rotated away before it is read is counted as vanished), and lines written later are
    not read.

    Raises :class:`ConfigurationError` when nothing is there, a file is not a regular
    one, cannot be opened, or the process is at its limit of open files already.
    """
    with ExitStack() as stack:
        try:
            base = trail_path(Path(logs))
        except (FileNotFoundError, ValueError) as exc:  # nothing there, or several trails
            raise _no_trail(exc) from None
        try:
            files = stack.enter_context(snapshot(base))
        except FileNotFoundError as exc:  # everything rotated away meanwhile
            raise _no_trail(exc) from None
        except ValueError as exc:  # a FIFO or device in the trail's place
            raise ConfigurationError(f"cannot read the audit file: {exc}") from None
        except OSError as exc:  # a file that cannot be opened, or too many files at once
            raise ConfigurationError(
                f"cannot read the audit file {exc.filename}: {exc.strerror or exc}"
                if exc.filename else exc.strerror or str(exc)) from exc
        yield files


def _no_trail(exc: Exception) -> ConfigurationError:
    return ConfigurationError(
        f"{exc}: expected {AUDIT_FILE} (and its rotated files {AUDIT_FILE}.1 …) in "
        "that folder, or an audit file. Point --logs (or SECURITY_LOG_PATH) at the "
        "folder a guard writes to")


def read_entries(files: list[TrailFile], stats: ReadStats, *, since: float | None = None,
                 until: float | None = None, model: str | None = None,
                 progress: Callable[[int], None] | None = None) -> Iterator[AuditEntry]:
    """Entries of ``files`` (from :func:`open_trail`) with ``since <= time < until`` (and
    of ``model``, if given), each file read up to the size it had when it was opened.

    ``progress(n)`` is told about every ``n`` bytes read. Malformed, oversized and
    filtered-out lines are counted in ``stats``, never raised. Raises
    :class:`ConfigurationError` when a file cannot be read.
    """
    model = None if model is None else as_read(model)  # a long name is read cut short
    for index, file in enumerate(files):
        try:
            if file.vanished:  # rotated away after it was listed: its lines moved on
                stats.vanished.append(str(file.path))
                stats.chain.lost()
                continue
            stats.files.append(str(file.path))
            yield from _file_entries(file, stats, since, until, model, progress,
                                     newest=index == len(files) - 1)
        except OSError as exc:
            raise ConfigurationError(f"cannot read the audit file {file.path}: "
                                     f"{exc.strerror or exc}") from exc


def _file_entries(file: TrailFile, stats: ReadStats, since: float | None,
                  until: float | None, model: str | None,
                  progress: Callable[[int], None] | None,
                  newest: bool = True) -> Iterator[AuditEntry]:
    pending = number = 0
    while True:
        line = file.readline(MAX_LINE_BYTES)
        if not line:
            break
        number += 1
        size = len(line)
        hasher = hashlib.sha256(line.rstrip(b"\n"))
        oversized = size == MAX_LINE_BYTES and not line.endswith(b"\n")
        if oversized:
            skipped, last = _skip_rest_of_line(file, hasher)
            size += skipped
            line = last  # its end, where the link would be
        # a blank line is no audit line: once the chain has begun it is a break,
        # as aimsec audit verify says (the file was edited)
        stats.chain.add(line, hasher.hexdigest().encode(), file.path, number, size, newest)
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
            if line.endswith(b"\n") and not is_json_object(line):
                stats.chain.unreadable(file.path, number)
            continue
        if ((since is not None and entry.time < since)
                or (until is not None and entry.time >= until)
                or (model is not None and entry.model != model)):
            stats.outside += 1
            continue
        stats.used += 1
        if entry.wrong_type:
            stats.wrong_type += 1
        yield entry
    stats.bytes += pending
    if progress is not None and pending:
        progress(pending)


def _skip_rest_of_line(stream: TrailFile, hasher: object) -> tuple[int, bytes]:
    """Read to the end of the line: the bytes skipped and the last chunk (hashed into
    ``hasher`` without the newline)."""
    skipped, chunk = 0, b""
    while True:
        previous = chunk
        chunk = stream.readline(MAX_LINE_BYTES)
        skipped += len(chunk)
        hasher.update(chunk.rstrip(b"\n"))  # type: ignore[attr-defined]
        if not chunk or chunk.endswith(b"\n"):
            return skipped, chunk or previous


def total_bytes(files: list[TrailFile]) -> int:
    """The files' combined size when they were opened (the bytes :func:`read_entries`
    reads)."""
    return sum(file.size for file in files)
