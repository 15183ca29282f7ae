"""A live audit trail's files as they were at one moment, for the commands that read it.

A trail (``audit.jsonl`` and the files rotation left beside it, ``audit.jsonl.1`` the most
recent to ``audit.jsonl.N`` the oldest) keeps being written and rotated while it is read.
Reading it by name, one file after another, is wrong on a live trail: a rotation between
listing the files and opening a later one shifts the names, so a reader would meet lines
out of order or twice and miss a file dropped meanwhile. :func:`snapshot` lists and opens
every file while the trail's writers are held (a shared ``flock`` on their lock file, see
:mod:`.writer`; for the time it takes to open them, not to read them) and records each
file's size then: open files keep their lines whatever they are renamed to, and the sizes
bound each file to the lines it held at that moment (a line appended later is never read,
let alone half-written). ``aimsec audit verify`` and ``aimsec report`` both read through it.

Descriptors are bounded, however many files the trail has (thousands of rotated files ran
into the process's open-file limit): the :data:`HELD_OPEN` oldest files (the first a
rotation drops) stay open from the snapshot on; every other one is closed once its
identity (device, inode, first bytes) and size are recorded, and opened again when it is
read, found under whatever name rotations gave it since (one scan of the folder per
rotation met), and closed at its end. A file rotated away before it was read is
``vanished``; a file is never mistaken for another that reused its inode.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ..files import open_regular
from .log import AUDIT_FILE
from .writer import fcntl, lock_path

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
#: A rotated file: the trail's name and an index of ASCII digits ("audit.jsonl.²" is none)
_ROTATED = re.compile(r"^(?P<base>.+)\.(?P<index>[0-9]+)$")
#: Oldest files of a snapshot held open while it is read; the others open one at a time.
HELD_OPEN = 8
#: Leading bytes recorded per file to know it again (with its device and inode).
_HEAD_BYTES = 256


class TrailFile:
    """One file of a :func:`snapshot`: ``path`` (its name when the snapshot was taken),
    ``size`` (its bytes then) and :meth:`readline`, which reads it up to that size.

    ``vanished`` is true for a file listed but gone before it could be opened (rotated
    away by a writer that does not lock, e.g. where ``fcntl`` is missing), or, for one not
    held open, gone before it was read (rotated away); it reads as empty. A file not held
    open is opened by the first of ``vanished`` or :meth:`readline` (``OSError`` when it
    cannot be) and closed at its end.
    """

    __slots__ = ("path", "size", "_stream", "_left", "_gone", "_finder", "_identity",
                 "_head")

    def __init__(self, path: Path, stream: BinaryIO | None, size: int, *,
                 finder: _Finder | None = None, identity: tuple[int, int] | None = None,
                 head: bytes = b"") -> None:
        self.path = path
        self.size = size
        self._stream = stream
        self._left = size
        self._finder = finder
        self._identity = identity  #: (device, inode) of a file to open when it is read
        self._head = head
        self._gone = stream is None and identity is None

    @property
    def vanished(self) -> bool:
        self._open()
        return self._gone

    def _open(self) -> None:
        if self._identity is None or self._finder is None:
            return
        identity, self._identity = self._identity, None
        self._stream = self._finder.reopen(self.path, identity, self._head)
        if self._stream is None:
            self._gone, self._left = True, 0

    def readline(self, limit: int) -> bytes:
        """The next line (its newline included), at most ``limit`` bytes of it and never
        past the recorded size; ``b""`` at that size. Raises ``OSError`` when the file
        cannot be read."""
        self._open()
        if self._stream is None or self._left <= 0:  # nothing (left) to read: an empty
            self.close()  # file's descriptor goes too
            return b""
        raw = self._stream.readline(min(limit, self._left))
        self._left -= len(raw)
        if not raw or self._left <= 0:  # read: its descriptor goes now
            self.close()
        return raw

    def close(self) -> None:
        """Close the file (reading on reads nothing)."""
        self._identity, self._left = None, 0
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


class _Finder:
    """Opens a snapshot's files again under the names rotations gave them since."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._names: dict[tuple[int, int], Path] = {}  #: identity -> name, at the last scan
        self._scanned: object = None  #: :meth:`_rotation` at the last scan

    def reopen(self, path: Path, identity: tuple[int, int], head: bytes) -> BinaryIO | None:
        """The file of ``identity`` whose first bytes are ``head``: at ``path``, else
        where the last scan of the trail found it, else where a new scan finds it (none
        when no rotation happened since the last: files removed meanwhile cost one scan,
        not one each); None when it is gone. Raises ``OSError`` when it is there but
        cannot be opened."""
        with _writers_held(self.base):
            for scan in (False, True):
                if scan:
                    rotation = self._rotation()
                    if rotation == self._scanned:
                        break
                    self._names, self._scanned = self._scan(), rotation
                for name in (path, self._names.get(identity)):
                    stream = None if name is None else _matching(name, identity, head)
                    if stream is not None:
                        return stream
        return None

    def _rotation(self) -> object:
        """What every rotation changes: the identities of the trail's newest file and of
        its ``.1`` (the newest file renamed, a file whose inode is alive as ``.2`` after
        the next rotation, so never the same twice in a row)."""
        found = []
        for name in (self.base, self.base.with_name(f"{self.base.name}.1")):
            try:
                info = name.stat()
            except OSError:
                found.append(None)
            else:
                found.append((info.st_dev, info.st_ino))
        return found

    def _scan(self) -> dict[tuple[int, int], Path]:
        names = {}
        try:
            entries = list(self.base.parent.iterdir())
        except FileNotFoundError:
            return names
        for entry in entries:
            match = _ROTATED.match(entry.name)
            if entry.name == self.base.name or (match and match["base"] == self.base.name):
                try:
                    info = entry.stat()
                except FileNotFoundError:
                    continue
                names[(info.st_dev, info.st_ino)] = entry
        return names


def _matching(path: Path, identity: tuple[int, int], head: bytes) -> BinaryIO | None:
    """``path`` opened, if it is the file of ``identity`` starting with ``head``."""
    try:
        stream = open_regular(path)
    except (FileNotFoundError, ValueError):  # gone, or something else in its place
        return None
    try:
        info = os.fstat(stream.fileno())
        if (info.st_dev, info.st_ino) == identity and stream.read(len(head)) == head:
            stream.seek(0)
            return stream
    except BaseException:
        stream.close()
        raise
    stream.close()
    return None


def trail_files(path: Path) -> list[Path]:
    """The files of the trail at ``path``, oldest first: a file and its rotated siblings
    (``audit.jsonl.3``, ``.2``, ``.1``, then ``audit.jsonl``), or for a folder holding one
    trail, that trail. Raises ``FileNotFoundError`` / ``ValueError`` when there is none or
    the folder holds several (name the file then).

    The names only: a reader of a live trail opens them through :func:`snapshot`."""
    return _rotated_files(trail_path(path))


def trail_path(path: Path) -> Path:
    """The trail's newest file: ``path`` itself, or in a folder its ``audit.jsonl`` (the
    guard's own trail, beside its incident database and outbox), else the one trail the
    folder holds. Raises ``FileNotFoundError`` for a folder without a trail,
    ``ValueError`` for one holding several.

    The guard's trail is known by its newest rotated file too: inside a rotation, between
    renaming ``audit.jsonl`` and making the next one, the folder holds no ``audit.jsonl``
    (the snapshot then opens the files once the writer is done)."""
    if path.is_dir():
        if (path / AUDIT_FILE).exists() or (path / f"{AUDIT_FILE}.1").exists():
            path = path / AUDIT_FILE
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


@contextmanager
def snapshot(path: Path) -> Iterator[list[TrailFile]]:
    """The files of the trail at ``path`` (as :func:`trail_files`), oldest first, each
    opened with its size while no writer of the trail can append or rotate (all but the
    :data:`HELD_OPEN` oldest closed again until they are read, see the module's
    docstring); they are closed when the block ends.

    Raises ``FileNotFoundError`` / ``ValueError`` as :func:`trail_files`, ``ValueError``
    for a file that is not a regular one (a FIFO, a device), ``OSError`` for one that
    cannot be opened, and ``OSError`` (``EMFILE``/``ENFILE``) saying so when the process
    is at its limit of open files already."""
    base = trail_path(path)
    finder = _Finder(base)
    opened: list[TrailFile] = []
    try:
        with _writers_held(base):
            files = _rotated_files(base)
            for index, file in enumerate(files):
                try:
                    stream = open_regular(file)
                except FileNotFoundError:
                    opened.append(TrailFile(file, None, 0))
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        raise _too_many_files(base, len(files), exc.errno) from None
                    raise
                try:
                    info = os.fstat(stream.fileno())
                    head = stream.read(min(info.st_size, _HEAD_BYTES))
                    stream.seek(0)
                except BaseException:
                    stream.close()
                    raise
                if index < HELD_OPEN:
                    opened.append(TrailFile(file, stream, info.st_size))
                    continue
                stream.close()
                opened.append(TrailFile(file, None, info.st_size, finder=finder,
                                        identity=(info.st_dev, info.st_ino), head=head))
        yield opened
    finally:
        for trail_file in opened:
            trail_file.close()


def _too_many_files(base: Path, count: int, code: int) -> OSError:
    try:
        import resource

        limit = f" ({resource.getrlimit(resource.RLIMIT_NOFILE)[0]} per process)"
    except (ImportError, OSError, ValueError):
        limit = ""
    which = (f"the limit on open files{limit}" if code == errno.EMFILE
             else "the system's limit on open files")
    return OSError(code, f"cannot open the {count} files of the audit trail {base}: the "
                   f"process has as many files open as {which} allows; raise it "
                   f"(ulimit -n) or close files")


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


def _base(name: str) -> str:
    match = _ROTATED.match(name)
    return match["base"] if match else name
