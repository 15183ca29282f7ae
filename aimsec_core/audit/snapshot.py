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

One descriptor is held per file while the trail is read (default: 11 files); a trail of
more files than the process may open fails with a message saying so.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

from ..files import open_regular
from .log import AUDIT_FILE
from .writer import fcntl, lock_path

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
#: A rotated file: the trail's name and an index of ASCII digits ("audit.jsonl.²" is none)
_ROTATED = re.compile(r"^(?P<base>.+)\.(?P<index>[0-9]+)$")


class TrailFile:
    """One file of a :func:`snapshot`: ``path`` (its name when the snapshot was taken),
    ``size`` (its bytes then) and :meth:`readline`, which reads it up to that size.

    ``vanished`` is true for a file listed but gone before it could be opened (rotated
    away by a writer that does not lock, e.g. where ``fcntl`` is missing); it reads as
    empty.
    """

    __slots__ = ("path", "size", "_stream", "_left")

    def __init__(self, path: Path, stream: BinaryIO | None, size: int) -> None:
        self.path = path
        self.size = size
        self._stream = stream
        self._left = size

    @property
    def vanished(self) -> bool:
        return self._stream is None

    def readline(self, limit: int) -> bytes:
        """The next line (its newline included), at most ``limit`` bytes of it and never
        past the recorded size; ``b""`` at that size. Raises ``OSError`` when the file
        cannot be read."""
        if self._stream is None or self._left <= 0:
            return b""
        raw = self._stream.readline(min(limit, self._left))
        self._left -= len(raw)
        return raw


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
    opened with its size while no writer of the trail can append or rotate; they are
    closed when the block ends.

    Raises ``FileNotFoundError`` / ``ValueError`` as :func:`trail_files`, ``ValueError``
    for a file that is not a regular one (a FIFO, a device), ``OSError`` for one that
    cannot be opened, and ``OSError`` (``EMFILE``/``ENFILE``) saying so when the trail
    has more files than the process may hold open at once."""
    base = trail_path(path)
    with ExitStack() as stack:
        opened = []
        with _writers_held(base):
            files = _rotated_files(base)
            for file in files:
                try:
                    stream = stack.enter_context(open_regular(file))
                except FileNotFoundError:
                    opened.append(TrailFile(file, None, 0))
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        raise _too_many_files(base, len(files), exc.errno) from None
                    raise
                opened.append(TrailFile(file, stream, os.fstat(stream.fileno()).st_size))
        yield opened


def _too_many_files(base: Path, count: int, code: int) -> OSError:
    try:
        import resource

        limit = f" ({resource.getrlimit(resource.RLIMIT_NOFILE)[0]} per process)"
    except (ImportError, OSError, ValueError):
        limit = ""
    which = (f"the limit on open files{limit}" if code == errno.EMFILE
             else "the system's limit on open files")
    return OSError(code, f"cannot open the {count} files of the audit trail {base} at "
                   f"once: more than {which} allows; raise it (ulimit -n) or move the "
                   f"oldest rotated files ({base.name}.N) out of the folder")


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
