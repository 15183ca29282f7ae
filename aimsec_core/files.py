"""Opening files named by hostile input (audit trails, configuration files) safely.

A FIFO, device or socket where a regular file should be is hostile input: a FIFO blocks
its reader forever, ``/dev/zero`` never ends. :func:`open_regular` opens without blocking,
checks what it opened, and refuses anything but a regular file, so one swapped in after a
listing is refused too. :func:`read_bounded` also refuses a file too large to hold.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def as_path(value: object, what: str) -> Path:
    """``value`` (text or an ``os.PathLike``) as a path. Raises
    :class:`~aimsec_core.errors.ConfigurationError` naming ``what`` for anything that is no
    path: ``None``, a number, text with a NUL character (no file can be named so)."""
    from .errors import ConfigurationError

    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(text, str) or "\x00" in text:
        raise ConfigurationError(f"{what} must be a path (text without NUL characters); "
                                 f"received {type(value).__name__} {value!r:.80}")
    return Path(text)


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for binary reading. Raises ``ValueError`` when it is not a regular
    file (naming what it is), ``OSError`` when it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | _NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path} is not a regular file (it is a {_kind(mode)}); "
                             "expected a file")
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_appending(path: str | Path, mode: int = 0o644) -> int:
    """A descriptor of the regular file ``path`` opened for appending (``O_APPEND``,
    created with ``mode`` if missing). Raises ``OSError`` when it cannot be opened or is
    not a regular file: a FIFO is refused at once instead of blocking the opening until a
    reader comes."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | _NONBLOCK, mode)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: a FIFO without a reader
            raise
        fd = -1
    try:
        kind = os.fstat(fd).st_mode if fd >= 0 else os.stat(path).st_mode
        if not stat.S_ISREG(kind):
            raise OSError(errno.EINVAL, f"not a regular file (it is a {_kind(kind)}); "
                          "expected a file to append to", os.fspath(path))
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return fd
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def read_bounded(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them. Raises
    ``ValueError`` for a longer file or one that is not regular, ``OSError`` when it
    cannot be read."""
    with open_regular(path) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path} is longer than {limit} bytes")
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


def write_whole(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all: through a temporary file of
    its own beside it, renamed over ``path``, so a reader never sees half a file, an
    interrupted or failed write (Ctrl-C, a full disk) leaves the previous file as it was,
    and two writers into one folder at once never write into the same file. The file is
    created as any new file, under the process's umask (``mkstemp``'s were readable by
    their owner only, so a web server could not serve a report). Raises ``OSError``."""
    partial = _partial(Path(path))
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def check_whole(path: str | Path) -> None:
    """Raise ``OSError`` when :func:`write_whole` could not write ``path``: its temporary
    file cannot be made beside it (the folder does not exist, is no folder, or this user
    may not create files in it: a read-only folder refuses even where ``path`` itself is
    a writable file). Found out by making that file, which is removed again: a command
    that writes its result after minutes of work checks first."""
    partial = _partial(Path(path))
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    os.unlink(partial)


def _partial(path: Path) -> Path:
    """A new name beside ``path`` for :func:`write_whole`'s temporary file."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")


def write_target(path: str | Path) -> tuple[Path, bool]:
    """Where writing to ``path`` goes, and whether :func:`write_whole` may write it: the
    file a symbolic link leads to, for a regular file or one not there yet (the link is
    kept); ``path`` itself, written in place, for anything else (a FIFO, a device) and for
    a link the file system cannot name: ``/dev/stdout`` on a pipe leads to
    ``/proc/<pid>/fd/pipe:[...]``, no file a temporary one could be renamed over."""
    path = Path(path)
    try:
        status = os.stat(path)
    except OSError:
        status = None
    if status is not None and not stat.S_ISREG(status.st_mode):
        return path, False
    target = Path(os.path.realpath(path))
    if status is not None:
        try:
            same = os.path.samestat(status, os.stat(target))
        except OSError:
            same = False
        if not same:  # a file of another process's, or one since unlinked
            return path, False
    return target, True
