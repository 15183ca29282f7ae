"""The incident journal: what the predict path queued, on disk before the call returns.

The dispatcher holds occurrences in memory until its worker writes them (a round a
second). A process killed meanwhile (SIGKILL: the OOM killer, a container runtime after
its grace period) ran no exit code, so those occurrences were lost although each call's
audit line was written. Each occurrence the dispatcher queues is therefore also appended,
as one JSON line and one ``write`` on a file opened ``O_APPEND``, to a journal file of
its process, before the guarded call returns: the line is in the operating system's page
cache then, so it survives the process being killed (not a power loss or a kernel crash:
the journal is not fsynced, which would cost milliseconds a flagged call).

Each process writes ``<database>.journal/<pid>-<token>-{0,1}.jsonl``, two files used in
turn: the dispatcher switches to the other one when it drains its queue, and empties the
sealed one once the store committed what it held (so a file never holds what is still
only in memory, and neither grows while the store keeps up). Each line carries a
sequence number; the store keeps, per journal, the highest number written
(``journals`` table), in the same transaction as the incidents: an occurrence is
written once, however often its batch is retried (an interrupt between the commit and
the write's return) or replayed.

A process holds ``flock`` locks on its files while it lives; the kernel drops them when
it dies, however. :func:`replay` (run by every dispatcher at its start and a minute
apart, and by ``aimsec incidents``) takes the files whose locks are free, records what
they hold beyond the store's number for them, and deletes them. The journal needs
``fcntl`` (POSIX); without it there is none.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .model import MOST_COUNTED, Evidence, Incident, Occurrence

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from .store import IncidentStore

log = logging.getLogger("aimsec.incidents")

#: The most bytes one journal file holds (two per process); beyond it (a store that has
#: failed for long, under a flood) occurrences are held in memory only, and counted.
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
SUFFIX = ".jsonl"
#: The longest line a replay reads: aimsec's are a few KiB (their evidence is bounded); a
#: longer one is not aimsec's, skipped and counted unreadable without being held whole.
MAX_LINE = 1 << 20
#: Seconds a journal that could not be written (a full or read-only disk) is left alone.
RETRY_S = 60.0


def journal_folder(database: Path) -> Path:
    """The folder of the journals of the incident database ``database``."""
    return database.with_name(database.name + ".journal")


def available() -> bool:
    """Whether this platform has the file locks the journal needs (POSIX ``flock``)."""
    return fcntl is not None


class Journal:
    """The journal of one process for the database whose journal folder is ``folder``.

    Not thread-safe: the dispatcher calls it under its queue's lock. Files are opened at
    the first :meth:`append`; an error (a read-only or full disk) is logged once and the
    occurrence is held in memory only, as without a journal (``skipped`` counts them)."""

    def __init__(self, folder: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 enabled: bool = True) -> None:
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        #: False: no files (the name still keys the store's writes of this process)
        self.enabled = enabled and fcntl is not None
        self.skipped = 0
        self._start()

    def _start(self) -> None:
        self.pid = os.getpid()
        self.name = f"{self.pid}-{secrets.token_hex(6)}"
        self._fds: list[int] = []
        self._sizes = [0, 0]
        self._sealed = [0, 0]  #: the highest sequence number the sealed file may hold
        self._active = 0
        #: time.monotonic() before which a journal that failed is not tried again
        self._failed_until = 0.0
        #: a write failed part way: the next line starts on a line of its own
        self._cut = False

    def __repr__(self) -> str:
        return f"Journal({str(self.folder)!r}, name={self.name!r})"

    def paths(self) -> list[Path]:
        return [self.folder / f"{self.name}-{n}{SUFFIX}" for n in (0, 1)]

    def _open(self) -> None:
        """Create both files under temporary names, lock them, then give them their names:
        a replay never sees a file of a live process unlocked. A folder another process
        removed meanwhile (empty, at its close) is made again."""
        for attempt in range(3):
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                return self._create()
            except FileNotFoundError:
                if attempt == 2:
                    raise

    def _create(self) -> None:
        fds = []
        try:
            for path in self.paths():
                temporary = path.with_suffix(".open")
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                             | getattr(os, "O_CLOEXEC", 0), 0o600)
                fds.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.replace(temporary, path)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        self._fds = fds
        _opened.add(self)

    def append(self, occurrence: Occurrence, seq: int) -> None:
        """Write ``occurrence`` (sequence number ``seq``) to the active file: one
        ``write`` to the page cache, no fsync. Never raises for I/O (logged once)."""
        if not self.enabled or (self._failed_until
                                and time.monotonic() < self._failed_until):
            self.skipped += 1
            return
        if self.pid != os.getpid():  # forked by a dispatcher the fork hook did not reset
            self.after_fork()
        try:
            line = _line(occurrence, seq)
        except Exception:  # never into the predict path
            self.skipped += 1
            log.exception("aimsec could not journal an incident occurrence")
            return
        if self._cut:
            line = b"\n" + line
        active = self._active
        if self._sizes[active] + len(line) > self.max_bytes:
            self.skipped += 1
            return
        done = 0
        try:
            if not self._fds:
                self._open()
            fd = self._fds[active]
            done = os.write(fd, line)
            while done < len(line):  # a regular file writes all but on a full disk
                done += os.write(fd, line[done:])
        except OSError as exc:
            self._cut = self._cut or 0 < done < len(line)
            self.skipped += 1
            if not self._failed_until:
                log.error("aimsec cannot write the incident journal in %s (%s); queued "
                          "incidents of this process are held in memory only (a kill "
                          "loses them) and the journal is tried again every %g s",
                          self.folder, exc, RETRY_S)
            self._failed_until = time.monotonic() + RETRY_S
            return
        self._sizes[active] += len(line)
        self._cut = False
        self._failed_until = 0.0

    def seal(self, seq: int) -> None:
        """The queue was drained up to ``seq``: later lines go to the other file, when it
        is empty (its content committed)."""
        other = 1 - self._active
        if self._sizes[self._active] and not self._sizes[other]:
            self._sealed[self._active] = seq
            self._active = other

    def committed(self, seq: int) -> None:
        """The store committed everything up to ``seq``: empty the sealed file if all it
        holds is that old."""
        other = 1 - self._active
        if self._fds and self._sizes[other] and self._sealed[other] <= seq:
            try:
                os.ftruncate(self._fds[other], 0)
            except OSError as exc:
                log.warning("aimsec could not empty the incident journal %s (%s)",
                            self.paths()[other], exc)
                return
            self._sizes[other] = 0

    def close(self) -> str | None:
        """Everything was committed: delete the files. Returns the name they had, whose
        number the store may forget, or ``None`` when none was opened (a later
        occurrence opens files under a new name)."""
        if not self._fds or self.pid != os.getpid():
            return None
        gone = _delete(self.paths())
        for fd in self._fds:
            os.close(fd)
        try:  # the folder goes with the last journal (another process may be in it)
            self.folder.rmdir()
        except OSError:
            pass
        name = self.name
        self._start()
        return name if gone else None  # files left: their number keeps a replay from
        # writing them again

    def after_fork(self) -> None:
        """In a forked child: the parent's files stay the parent's (its locks too: the
        descriptors are closed, not unlocked); the child writes files of its own."""
        if self.pid == os.getpid():
            return
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._start()


_opened: weakref.WeakSet[Journal] = weakref.WeakSet()


def _forget_after_fork() -> None:
    """In a forked child, every journal the parent had open lets go of the parent's files:
    a child that outlived its parent's kill would otherwise hold their locks, and the
    parent's journal would wait for the child's end to be replayed."""
    for journal in list(_opened):
        journal.after_fork()
    _opened.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


#: one encoder for every line (``json.dumps`` with options builds one per call)
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _line(o: Occurrence, seq: int) -> bytes:
    """One journal line: ``{"s": seq, "m": model, "t": threat, "c": client, "v": severity,
    "f": first_seen, "l": last_seen, "n": count, "e": evidence}`` and a newline, UTF-8."""
    return (_encode({"s": seq, "m": o.model, "t": o.threat, "c": o.client, "v": o.severity,
                     "f": o.first_seen, "l": o.last_seen, "n": o.count,
                     "e": o.evidence.as_dict()}) + "\n").encode("utf-8", "replace")


def _occurrence(line: bytes) -> tuple[int, Occurrence]:
    """One journal line read back; ``ValueError`` (or ``TypeError``, ``KeyError``) for
    one cut short or not aimsec's: nested past the parser's depth, a sequence number or
    count beyond SQLite's integers included."""
    try:
        data = json.loads(line)
    except RecursionError:  # nested deeper than the parser goes: not aimsec's
        raise ValueError("nested too deep") from None
    seq, count = data["s"], data["n"]
    if type(seq) is not int or not 1 <= seq <= MOST_COUNTED:
        raise ValueError("sequence number")
    if type(count) is not int or count > MOST_COUNTED:  # no count SQLite holds
        raise ValueError("count")
    return seq, Occurrence(data["m"], data["t"], data["c"], data["v"], data["f"], data["l"],
                           data["n"], Evidence.from_dict(data["e"]))


@dataclass
class Replayed:
    """What :func:`replay` did: journals of ended processes taken, occurrences (and the
    findings they count) written to the store, lines unreadable (cut short by a crash of
    the machine), and the occurrences written (merged per group)."""

    journals: int = 0
    occurrences: int = 0
    findings: int = 0
    unreadable: int = 0
    written: list[Occurrence] = field(default_factory=list)
    #: the store's results for ``written`` (``None``: written before)
    results: list[tuple[Incident, bool] | None] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.journals)

    @property
    def noteworthy(self) -> bool:
        """Whether the journals held anything (findings, or unreadable lines): those of
        processes that closed, then ended without exit handlers (``os._exit``), are empty
        and only tidied away."""
        return bool(self.findings or self.unreadable)

    def summary(self) -> str:
        return (f"{self.findings} finding(s) in {self.occurrences} occurrence(s) from "
                f"{self.journals} journal(s) of processes that ended without writing them"
                + (f"; {self.unreadable} unreadable line(s) skipped" if self.unreadable
                   else ""))


def pending(folder: Path, own: str | None = None) -> bool:
    """Whether ``folder`` holds journal files other than those of ``own`` (one
    ``listdir``; live processes' included)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return any(n.endswith(SUFFIX) and (own is None or not n.startswith(own + "-"))
               for n in names)


def replay(store: IncidentStore, folder: Path | None = None, *,
           own: str | None = None, into: Replayed | None = None) -> Replayed:
    """Record what the journals in ``folder`` (default: ``store``'s) of ended processes
    hold and the store has not (``own``: this process's journal name, left alone), then
    delete them. Each journal is written in one transaction, its occurrences merged per
    (model, threat, client). Raises IncidentStoreError when the store cannot be written
    (that journal and those after it stay for a later replay); what was written before
    is in ``into`` (filled as each journal is written), for its alerts."""
    done = Replayed() if into is None else into
    if fcntl is None:
        return done
    folder = journal_folder(store.path) if folder is None else Path(folder)
    for name, paths in _journals(folder).items():
        if name != own:
            _replay_one(store, name, paths, done)
    if done:
        try:  # empty now, unless a live process has its journal there
            folder.rmdir()
        except OSError:
            pass
    return done


def unwritten(store: IncidentStore, folder: Path | None = None) -> Replayed:
    """What :func:`replay` would write, changing nothing (for readers such as reports,
    which open the store read-only): the journals of ended processes in ``folder``
    (default: ``store``'s) and the findings they hold that the store has not. A store
    of a schema before the journal counts every line."""
    done = Replayed()
    if fcntl is None:
        return done
    for name, paths in _journals(journal_folder(store.path) if folder is None
                                 else Path(folder)).items():
        _replay_one(store, name, paths, done, write=False)
    return done


def _journals(folder: Path) -> dict[str, list[Path]]:
    """The journal files in ``folder``, by journal name."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {}
    journals: dict[str, list[Path]] = {}
    for n in names:
        if n.endswith(SUFFIX) and n[:-len(SUFFIX)][-2:] in ("-0", "-1"):
            journals.setdefault(n[:-len(SUFFIX) - 2], []).append(folder / n)
    return journals


def _mark(store: IncidentStore, name: str) -> int:
    try:
        return store.journal_mark(name)
    except Exception:  # a read-only store of a schema before the journal: nothing written
        if store.read_only:
            return 0
        raise


def _replay_one(store: IncidentStore, name: str, paths: list[Path], done: Replayed, *,
                write: bool = True) -> None:
    fds: list[int] = []
    taken: list[Path] = []  #: what is deleted after the write: a file not a journal stays
    try:
        for path in paths:
            fd = _open_file(path)
            if fd is None:  # another replay took it, or it is not a journal
                continue
            fds.append(fd)
            taken.append(path)
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except OSError:  # its process is alive (or another replay holds it)
                return
            if os.fstat(fd).st_nlink == 0:  # replayed and deleted meanwhile
                return
        if not fds:
            return
        mark = _mark(store, name)
        merged: dict[tuple[str, str, str], Occurrence] = {}
        top = findings = unreadable = 0  # counted into ``done`` once written
        for fd in fds:
            for raw in _lines(fd):
                try:
                    if raw is None:
                        raise ValueError("longer than MAX_LINE")
                    seq, occurrence = _occurrence(raw)
                except (ValueError, TypeError, KeyError):
                    unreadable += 1
                    continue
                if seq <= mark:
                    continue
                top = max(top, seq)
                findings += occurrence.count
                if occurrence.key in merged:
                    joined = merged[occurrence.key]
                    joined.merge(occurrence)
                    joined.count = min(joined.count, MOST_COUNTED)
                else:
                    merged[occurrence.key] = occurrence
        written = list(merged.values())
        results = (store.record(written, journal=name, seqs=[top] * len(written))
                   if write and written else [])
        done.journals += 1
        done.findings += findings
        done.unreadable += unreadable
        if not write:
            done.occurrences += len(written)
            return
        done.occurrences += sum(r is not None for r in results)
        done.written += [o for o, r in zip(written, results) if r is not None]
        done.results += [r for r in results if r is not None]
        if _delete(taken):  # else the number stays: a later replay writes nothing twice
            store.forget_journal(name)
    finally:
        for fd in fds:
            os.close(fd)


def _delete(paths: Iterable[Path]) -> bool:
    """Delete ``paths``; whether none is left."""
    gone = True
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            gone = False
            log.warning("aimsec could not delete the incident journal %s (%s)", path, exc)
    return gone


def _lines(fd: int) -> Iterator[bytes | None]:
    """The lines of the file ``fd``, empty ones left out, read a MiB at a time: ``None``
    for one longer than :data:`MAX_LINE`, whose bytes are not held."""
    held, overlong = b"", False
    while chunk := os.read(fd, 1 << 20):
        *parts, held = (held + chunk).split(b"\n")
        for part in parts:
            if overlong or len(part) > MAX_LINE:
                overlong = False
                yield None
            elif part.strip():
                yield part
        if len(held) > MAX_LINE:
            held, overlong = b"", True
    if overlong:
        yield None
    elif held.strip():
        yield held


#: the paths of files not journals already said in the log (once per process each)
_foreign: set[Path] = set()


def _open_file(path: Path) -> int | None:
    """``path`` opened for reading, or ``None`` when it is gone, is not a regular file of
    its own (a symbolic link, a FIFO, whose open would wait for a writer, a device, a
    folder) or may not be read (another user's): such a file is left where it is, for
    its owner's processes, said once in the log."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _not_journal(path, exc.strerror or str(exc))
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        return _not_journal(path, exc.strerror or str(exc))
    if not stat.S_ISREG(mode):
        os.close(fd)
        return _not_journal(path, "not a regular file")
    return fd


def _not_journal(path: Path, why: str) -> None:
    if path not in _foreign and len(_foreign) < 1000:
        _foreign.add(path)
        log.warning("aimsec left %s in the incident journal folder unread (%s); expected "
                    "a journal: a regular file this user may read", path, why)
    return None
