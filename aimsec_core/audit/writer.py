"""The file writer behind the audit trail: one per file and process, owned by the library.

Every line goes to the file in one ``os.write`` on a descriptor opened with ``O_APPEND``
before the call that produced it returns: nothing is buffered in the process, so a crash
of the process loses no recorded call (``fsync=True`` also survives a crash of the
machine, at the cost of a disk flush per line).

Threads share one writer per file (a lock). Processes appending to the same file
coordinate through ``fcntl.flock`` on a lock file beside it (``audit.jsonl.lock``): under
that lock a writer checks whether another process appended or rotated since its own last
line, reopens the file if it was rotated, and re-reads the last line to continue the hash
chain. So several workers (gunicorn, ``multiprocessing``, joblib) can share one trail
without interleaving partial lines or forking the chain. Where ``fcntl`` does not exist
(Windows) only threads are coordinated: give each process its own file there.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from ..errors import ConfigurationError
from ..files import open_appending
from .chain import GENESIS, digest, link, rotated, tail_digest

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: threads only (see the module docstring)
    fcntl = None  # type: ignore[assignment]

_log = logging.getLogger("aimsec.audit")


class AuditWriter:
    """Appends chained lines to ``file``, rotating it past ``max_bytes`` into ``backups``
    numbered files (``audit.jsonl.1`` newest). ``max_bytes=0`` or ``backups=0`` never
    rotates. Obtain one with :func:`writer_for`: one writer per file and process."""

    def __init__(self, file: Path, max_bytes: int, backups: int, fsync: bool) -> None:
        self.file = file
        self._path = os.fspath(file)
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd = -1
        self._lock_fd = -1
        self._inode: tuple[int, int] | None = None
        self._size = -1  # bytes in the file after our last line; -1: unknown
        self._prev = GENESIS
        self._rotation_failing = False  #: warned that renames fail; cleared by a rotation

    def write(self, body: bytes) -> bytes:
        """Close ``body`` (an unclosed JSON object) with its ``prev`` link and append it;
        returns the line written. Raises ``OSError`` when the file cannot be written."""
        with self._lock:
            locked = self._lock_processes()
            try:
                self._follow_file()
                line = link(body, self._prev)
                size = len(line)
                if (self.max_bytes and self.backups and self._size
                        and self._size + size > self.max_bytes):
                    self._rotate()
                self._append(line)
                if self.fsync:
                    os.fsync(self._fd)
                self._size += size
                self._prev = digest(line[:-1])
            finally:
                if locked and self._lock_fd >= 0:  # none: taking the new lock file failed
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        return line

    def close(self) -> None:
        with self._lock:
            self._close()

    # -- internals (called with the thread lock held) -----------------------------------

    def _lock_processes(self) -> bool:
        if fcntl is None:
            return False
        if self._lock_fd < 0:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(lock_path(self.file),
                                    os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                                    0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return True

    def _follow_file(self) -> None:
        """Make our view match the file: reopen it if it was rotated or removed, and take
        the chain from its last line if anyone else wrote to it since our last line."""
        try:
            stat = os.stat(self._path)
            inode: tuple[int, int] | None = (stat.st_dev, stat.st_ino)
        except FileNotFoundError:
            inode = None
        if inode is None or inode != self._inode or self._fd < 0:
            if self._relocked():  # state read under a lock nobody else takes: read again
                self._follow_file()
                return
            self._open()
            stat = os.fstat(self._fd)
        if stat.st_size != self._size:
            self._resume()

    def _relocked(self) -> bool:
        """Take the lock file now at the lock path when it is no longer the one held (the
        folder was removed, and made again by whoever wrote next): every other writer
        locks that one. True when the lock changed. Asked only when the trail's file
        changed under this writer, which is what removing the folder does."""
        if fcntl is None or self._lock_fd < 0:
            return False
        held = os.fstat(self._lock_fd)
        try:
            now = os.stat(lock_path(self.file))
            if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return False
        except FileNotFoundError:
            pass
        old, self._lock_fd = self._lock_fd, -1
        try:
            self._lock_processes()
        finally:
            os.close(old)  # and with it this writer's lock on the removed file
        return True

    def _open(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self._fd = open_appending(self._path)
        stat = os.fstat(self._fd)
        self._inode = (stat.st_dev, stat.st_ino)
        self._size = -1

    def _resume(self) -> None:
        """Continue the chain from the last line on disk: this file's, else the newest
        rotated file's, else (a new trail) what this writer last wrote."""
        prev, complete = tail_digest(self.file)
        if not complete:  # a line cut short by a crash: end it, chain to what is there
            _write_all(self._fd, b"\n")
        if prev is None and self.backups:
            try:
                prev, _ = tail_digest(rotated(self.file, 1))
            except (OSError, ValueError):  # unreadable, or not a file (a FIFO): absent
                prev = None
        if prev is not None:
            self._prev = prev
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        """Rename the file to ``.1`` (shifting older ones up, up to the first free
        number: ``.backups`` is dropped when none is) and start a new one. When a rename
        fails (a folder where files can no longer be renamed, while the file itself stays
        writable) the line goes to the file as it is, past ``max_bytes``: a trail over its
        size loses nothing, one that cannot rotate would lose every later line. Rotation
        is tried again with the next line; one warning per failing streak. A retry after
        the older files moved but the file itself did not finds ``.1`` free and moves
        nothing else (shifting them all again would drop the oldest each time)."""
        size = self._size
        os.close(self._fd)
        self._fd = -1
        try:
            free = next((index for index in range(1, self.backups)
                         if not rotated(self.file, index).exists()), self.backups)
            for index in range(free - 1, 0, -1):
                os.replace(rotated(self.file, index), rotated(self.file, index + 1))
            os.replace(self.file, rotated(self.file, 1))
        except OSError as exc:
            if not self._rotation_failing:
                self._rotation_failing = True
                _log.warning("aimsec: cannot rotate the audit log %s (%s: %s); lines are "
                             "appended to it past its %d bytes until it can be renamed",
                             self.file, type(exc).__name__, exc.strerror or exc,
                             self.max_bytes)
            self._open()
            self._size = size  # the same file: nobody appended (we hold the lock)
            return
        self._rotation_failing = False
        self._drop_beyond_backups()
        self._open()
        self._size = 0

    def _drop_beyond_backups(self) -> None:
        """Remove the rotated files numbered above ``backups``: left by a run with more
        backups (``AIMSEC_LOG_BACKUPS`` lowered since), older than every file kept, they
        sat before ``.backups`` in the trail with the lines rotation had dropped between
        them, and ``aimsec audit verify`` (and the report) called the trail changed."""
        index, dropped = self.backups + 1, 0
        while True:
            try:
                os.unlink(rotated(self.file, index))
            except FileNotFoundError:
                break
            except OSError as exc:  # kept: a later rotation tries again
                _log.warning("aimsec: cannot remove %s, beyond the %d rotated audit files "
                             "kept (%s)", rotated(self.file, index), self.backups,
                             exc.strerror or exc)
                break
            index, dropped = index + 1, dropped + 1
        if dropped:
            _log.warning("aimsec: removed %d rotated audit file(s) numbered above %d, the "
                         "number kept (AIMSEC_LOG_BACKUPS), left by an earlier setting",
                         dropped, self.backups)

    def _append(self, line: bytes) -> None:
        """Write ``line`` whole or not at all: after a short write (a signal, a disk
        filling up) the rest is written; if that fails, the part already in the file is cut
        off again, so the next line chains to a complete one (we hold the file: no other
        writer appended meanwhile)."""
        written = os.write(self._fd, line)
        if written == len(line):
            return
        try:
            _write_all(self._fd, line[written:])
        except OSError:
            try:  # back to the size before this line (exact: checked under the lock)
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._size = -1  # could not cut it: the next line ends it and re-reads
            raise

    def _close(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._lock_fd = -1
        self._inode, self._size = None, -1

    def _after_fork(self) -> None:
        # The child shares the parent's open file descriptions; flock locks belong to
        # those, so the child needs its own (and a fresh thread lock: the parent's may have
        # been held by a thread that does not exist here). Its copies are closed, not just
        # forgotten: a lock the parent takes later on the shared description would
        # otherwise outlive a parent killed while holding it, and no writer of the trail
        # could take the lock again (closing a copy never releases the parent's lock).
        self._lock = threading.Lock()
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._lock_fd = -1
        self._inode, self._size = None, -1


def lock_path(file: Path) -> Path:
    """The lock file the writers of ``file`` coordinate through (``audit.jsonl.lock``)."""
    return file.with_name(file.name + ".lock")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


_writers: dict[Path, AuditWriter] = {}
_writers_lock = threading.Lock()


def writer_for(file: Path, max_bytes: int, backups: int, fsync: bool) -> AuditWriter:
    """The process's writer for ``file`` (resolved path), created on first use. Raises
    :class:`~aimsec_core.errors.ConfigurationError` when the file is already open with
    another rotation policy: one file has one."""
    with _writers_lock:
        writer = _writers.get(file)
        if writer is None:
            writer = _writers[file] = AuditWriter(file, max_bytes, backups, fsync)
        elif (writer.max_bytes, writer.backups) != (max_bytes, backups):
            raise ConfigurationError(
                f"the audit log {file} is already open with max_bytes={writer.max_bytes}, "
                f"backups={writer.backups}; received max_bytes={max_bytes}, "
                f"backups={backups}. One file has one rotation policy: use the same "
                "settings or another folder")
        else:
            writer.fsync = writer.fsync or fsync
        return writer


def _reset_after_fork() -> None:
    global _writers_lock
    _writers_lock = threading.Lock()
    for writer in _writers.values():
        writer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
