"""Host names resolved off the caller's path, so a slow resolver costs a bounded wait.

``socket.getaddrinfo`` takes no timeout: a DNS server that does not answer holds the
caller for the resolver's own retries (often 5 s and more), past any socket timeout set
afterwards. :class:`Resolver` runs each lookup in a background thread (at most one per
host and port at a time, however many callers wait or give up) and keeps the answer:
callers wait for it at most the time they are given and get the cached addresses
afterwards. An answer older than ``fresh_s`` seconds is looked up again in the
background while the cached addresses keep being used. After every address failed to
connect (:meth:`Resolver.refresh`: the server may have moved) the next caller waits for
a new lookup, again at most its time, and gets the old addresses if none came. A failed
lookup keeps the last good answer.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

#: ``getaddrinfo``'s answer: (family, type, proto, canonname, sockaddr) tuples
AddressInfo = Sequence[tuple[Any, ...]]
_Key = tuple[str, int, int]
#: Names remembered at most (each a configured server's; a new one past this forgets all
#: but those being looked up)
_NAMES = 256
#: Lookups under way at most (threads; a DNS server that hangs holds each): a name past
#: them is not looked up until one ends (its callers' ``TimeoutError`` says so)
_LOOKUPS = 32


class _Entry:
    __slots__ = ("addresses", "error", "at", "pending", "moved")

    def __init__(self) -> None:
        self.addresses: AddressInfo | None = None
        self.error: OSError | None = None
        self.at = 0.0  #: when ``addresses`` were looked up (the resolver's clock)
        self.pending: threading.Event | None = None  #: set when the lookup under way ends
        self.moved = False  #: connecting to ``addresses`` failed: wait for a new lookup


class Resolver:
    """Looks host names up in background threads and caches the answers.

    ``lookup`` is ``getaddrinfo``'s signature (default: ``socket.getaddrinfo``, read at
    each lookup); ``clock`` (seconds, default ``time.monotonic``) ages the answers.
    """

    def __init__(self, lookup: Callable[..., AddressInfo] | None = None, *,
                 fresh_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        self.fresh_s = fresh_s
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[_Key, _Entry] = {}
        self._running = 0  #: lookups under way
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"Resolver(names={len(self._entries)})"

    def addresses(self, host: str, port: int, family: int = 0, *,
                  wait: float | None) -> AddressInfo:
        """The stream addresses of ``host``:``port`` (``getaddrinfo``'s tuples), waiting
        at most ``wait`` seconds (``None``: until the lookup ends) for a name not looked
        up yet or whose addresses failed to connect. An address literal is answered at
        once, without a lookup. Raises ``TimeoutError`` (``socket.timeout``) when no
        answer came in time, and the lookup's ``OSError`` (``socket.gaierror``) when it
        failed."""
        if _literal(host):  # getaddrinfo answers without asking anyone
            return socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0,
                                      socket.AI_NUMERICHOST)
        key = (host, int(port), family)
        if self._pid != os.getpid():  # forked: the parent's lookups under way (and the
            # holder of its lock) did not come along, and would be waited for in vain
            self._lock, self._entries, self._pid = threading.Lock(), {}, os.getpid()
            self._running = 0
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                if len(self._entries) >= _NAMES:  # those under way stay: one lookup each
                    self._entries = {k: e for k, e in self._entries.items() if e.pending}
                entry = self._entries[key] = _Entry()
            if entry.pending is None and self._running < _LOOKUPS and (
                    entry.addresses is None or entry.moved
                    or self.clock() - entry.at >= self.fresh_s):
                self._start(key, entry)
            if entry.addresses is not None and not entry.moved:
                return entry.addresses
            pending = entry.pending
        if pending is not None:
            pending.wait(wait)
        with self._lock:
            if entry.addresses is not None:
                return entry.addresses
            error = entry.error if entry.pending is None else None
        if error is not None:  # a new one each time: one raised again keeps its frames
            raise type(error)(*error.args)
        if pending is None:  # none started: as many under way as may be
            raise socket.timeout(f"cannot resolve {host!r} now: {_LOOKUPS} lookups of "
                                 "other names are under way (the DNS server hangs?)")
        raise socket.timeout(f"resolving {host!r} took longer than {wait} s (the lookup "
                             "goes on in the background)")

    def refresh(self, host: str, port: int, family: int = 0) -> None:
        """Connecting to every cached address of ``host`` failed: look it up again with
        the next :meth:`addresses` (the server may have moved)."""
        with self._lock:
            entry = self._entries.get((host, int(port), family))
            if entry is not None and entry.addresses is not None:
                entry.moved = True

    def _start(self, key: _Key, entry: _Entry) -> None:
        """Start the lookup of ``key`` (under the lock)."""
        done = entry.pending = threading.Event()
        self._running += 1
        threading.Thread(target=self._resolve, args=(key, entry, done), daemon=True,
                         name="aimsec-resolve").start()

    def _resolve(self, key: _Key, entry: _Entry, done: threading.Event) -> None:
        host, port, family = key
        found: AddressInfo | None = None
        error: OSError | None = None
        try:
            lookup = self._lookup or socket.getaddrinfo
            found = list(lookup(host, port, family, socket.SOCK_STREAM))
            if not found:
                error = OSError(f"no address for {host!r}")
        except OSError as exc:
            error = exc
        except BaseException as exc:  # a name getaddrinfo cannot take (UnicodeError),
            # a cancelled lookup (no Exception): the lookup ends either way
            error = OSError(f"cannot resolve {host!r}: {type(exc).__name__}: {exc}")
        with self._lock:
            if found:
                entry.addresses, entry.at, entry.error = found, self.clock(), None
            else:  # a failed lookup keeps the last good answer, looked up again later
                entry.error, entry.at = error, -float("inf")
            entry.pending, entry.moved = None, False
            self._running -= 1
        done.set()


def _literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


#: The resolver of this process's Redis connections.
RESOLVER = Resolver()
