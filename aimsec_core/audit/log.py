"""The audit sink: one line per call to ``<SECURITY_LOG_PATH>/audit.jsonl``."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from ..config import (DEFAULT_LOG_BACKUPS, DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_PATH,
                      parse_bool, parse_positive_int, resolve)
from ..errors import ConfigurationError
from ..files import as_path
from ..sinks import CallRecord
from .line import render
from .writer import lock_path, writer_for

AUDIT_FILE = "audit.jsonl"


def _check_folder(folder: Path) -> None:
    """Raise :class:`ConfigurationError` when the audit folder can never be written: it, or
    the nearest part of its path that exists, is a file or a folder this process may not
    write to (every call's line would otherwise be lost, one logged error each). Reads
    only: nothing is created here."""
    existing = folder
    try:
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
    except OSError as exc:  # a name longer than the system allows, a loop of links
        raise ConfigurationError(f"the audit log's folder {str(folder)!r:.200} cannot be "
                                 f"used ({exc.strerror or exc}); expected a folder (or a "
                                 "path where one can be made) (SECURITY_LOG_PATH)") from None
    if not existing.is_dir():
        raise ConfigurationError(f"the audit log's folder {folder} cannot be made: "
                                 f"{existing} is a file; expected a folder (or a path "
                                 "where one can be made)")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is" if existing == folder else f"would be made in {existing}, which is"
        raise ConfigurationError(f"the audit log's folder {folder} {what} not writable by "
                                 "this process; expected a folder it can write to "
                                 "(SECURITY_LOG_PATH)")


def _resolved(file: Path) -> Path:
    """``file`` as an absolute path without symbolic links. Raises
    :class:`ConfigurationError` where that cannot be found (a loop of links, a name
    longer than the system allows)."""
    try:
        return file.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop, before Python 3.13
        raise ConfigurationError(f"the audit log file {str(file)!r:.200} cannot be "
                                 f"resolved ({getattr(exc, 'strerror', None) or exc}); "
                                 "expected a path to a file or where one can be made "
                                 "(SECURITY_LOG_PATH)") from None


def _check_regular(file: Path, what: str, use: str) -> None:
    """Raise :class:`ConfigurationError` when ``file`` exists and is no regular file (a
    folder, a FIFO, a device, a link to nowhere): every line would be lost, one logged
    error each. One stat: another process's rotation may move the file between two."""
    try:
        mode: int | None = file.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None if not file.is_symlink() else 0  # made on the first line; or a
    except OSError as exc:  # link to nowhere
        raise ConfigurationError(f"{what} {file} cannot be read ({exc.strerror or exc}); "
                                 f"expected a file {use}") from None
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a link to a missing path" if mode == 0 else "a folder, a FIFO or a device"
        raise ConfigurationError(f"{what} {file} is not a regular file ({kind}); expected "
                                 f"a file {use}, or a path where one can be made")


class AuditLog:
    """A sink writing one JSON line per call to ``<path>/audit.jsonl`` (or to ``file``).

    Arguments left ``None`` come from ``SECURITY_LOG_PATH``, ``AIMSEC_LOG_MAX_BYTES``,
    ``AIMSEC_LOG_BACKUPS``, ``AIMSEC_LOG_INPUTS`` and ``AIMSEC_LOG_FSYNC``. Raw inputs (and
    the value-bearing ``detail`` of findings) are written only when ``include_inputs`` is
    true. Every ``AuditLog`` of one file shares the process's writer for it
    (:mod:`aimsec_core.audit.writer`); the line is in the file (handed to the operating
    system in one write) before :meth:`record` returns, and with ``fsync`` on disk.

    The trail does not go through :mod:`logging`, so no logging configuration of the
    application (``dictConfig``, ``fileConfig``, disabled loggers) can silence it.
    ``also_log_to="aimsec.audit"`` additionally hands each line, as the message, to that
    logger (INFO for allowed calls, WARNING otherwise): an extra destination, off by
    default, subject to the application's logging configuration.

    Copies and pickles of an ``AuditLog`` write to the same file (the pickle holds the
    settings, not the open file).

    Raises :class:`~aimsec_core.errors.ConfigurationError` for invalid environment values,
    a path that names no folder (a NUL in it, a loop of links, a name too long), a folder
    that is (or would be made under) a file or that this process may not write to, a file
    or lock file (``audit.jsonl.lock``) that is no regular file, or when the file is
    already open in this process with another rotation policy.
    """

    def __init__(self, path: str | Path | None = None, *, file: str | Path | None = None,
                 max_bytes: int | None = None, backups: int | None = None,
                 include_inputs: bool | None = None, fsync: bool | None = None,
                 also_log_to: str | None = None) -> None:
        if file is None:
            folder = as_path(resolve(path, "SECURITY_LOG_PATH", DEFAULT_LOG_PATH, str),
                             "the audit log's folder")
            file = folder / AUDIT_FILE
        self.file = _resolved(as_path(file, "the audit log file"))
        _check_folder(self.file.parent)
        _check_regular(self.file, "the audit log file", "to append to")
        _check_regular(lock_path(self.file), "the audit log's lock file", "to lock")
        self.include_inputs = resolve(include_inputs, "AIMSEC_LOG_INPUTS", False, parse_bool)
        self.max_bytes = resolve(max_bytes, "AIMSEC_LOG_MAX_BYTES", DEFAULT_LOG_MAX_BYTES,
                                 parse_positive_int)
        self.backups = resolve(backups, "AIMSEC_LOG_BACKUPS", DEFAULT_LOG_BACKUPS,
                               parse_positive_int)
        self.fsync = resolve(fsync, "AIMSEC_LOG_FSYNC", False, parse_bool)
        self.also_log_to = also_log_to
        self._attach()

    def _attach(self) -> None:
        from .. import __version__

        self._version = __version__
        self._writer = writer_for(self.file, self.max_bytes, self.backups, self.fsync)
        self._logger = logging.getLogger(self.also_log_to) if self.also_log_to else None

    def record(self, event: CallRecord) -> None:
        """Write ``event``'s line. Raises ``OSError`` when the file cannot be written (the
        guard reports a failing sink on the ``aimsec`` logger and carries on)."""
        line = self._writer.write(render(event, version=self._version,
                                         include_inputs=self.include_inputs))
        if self._logger is not None:
            level = logging.INFO if event.outcome == "allowed" else logging.WARNING
            self._logger.log(level, line[:-1].decode("ascii"))

    def flush(self) -> None:
        """Nothing to do: every line is in the file when :meth:`record` returns. Kept for
        code written against sinks that buffer."""

    def __getstate__(self) -> dict[str, Any]:
        return {"file": self.file, "max_bytes": self.max_bytes, "backups": self.backups,
                "include_inputs": self.include_inputs, "fsync": self.fsync,
                "also_log_to": self.also_log_to}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._attach()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.file)!r})"
