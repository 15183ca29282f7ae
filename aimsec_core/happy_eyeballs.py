"""Connecting to whichever of a name's addresses answers first, within one deadline.

A host name may answer several addresses (IPv6 and IPv4, replicas behind one name). Tried
one after another, each with its own timeout, an address that drops every packet (a
firewalled IPv6 route, a server gone without a reset) costs a whole timeout before the
next is tried: three such addresses, three timeouts. Here the attempts race as in Happy
Eyeballs (RFC 8305, section 5): one starts, and while none has connected, the next starts
after an attempt delay; the first to connect wins and the others are closed. The delay is
the time left divided among the addresses (RFC 8305 suggests 250 ms, longer than a
monitoring store's whole budget of 50 ms), so every address is tried before the deadline.
An address answered twice is tried once, and at most :data:`_AT_ONCE` attempts are under
way together (the oldest gives way to the next): a name answering thousands of addresses
opens no more sockets than that.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

#: ``connect_ex`` codes of a connection under way on a non-blocking socket
_UNDER_WAY = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EALREADY}
_NO_DEADLINE_DELAY = 0.25  #: RFC 8305's connection attempt delay, without a deadline
_AT_ONCE = 8  #: attempts under way together, at most


def connect_first(addresses: Sequence[Any], deadline: float | None,
                  prepare: Callable[[socket.socket], None] = lambda sock: None,
                  ) -> tuple[socket.socket, Any]:
    """The first of ``addresses`` (``getaddrinfo``'s 5-tuples, in the order to try) to
    connect before ``deadline`` (a :func:`time.monotonic` time; ``None``: none), and its
    sockaddr. ``prepare`` sets a new socket's options before it connects. The socket is
    returned connected and blocking (set its timeout next).

    Raises ``TimeoutError`` (``socket.timeout``) when none connected by the deadline, else
    the last attempt's ``OSError`` (``ConnectionRefusedError``…), or ``OSError`` when
    ``addresses`` is empty. An address listed again is not tried again; at most
    :data:`_AT_ONCE` attempts are under way at once (the oldest is closed for the next).
    """
    queue = _distinct(addresses)
    attempts: dict[socket.socket, Any] = {}  #: under way: socket -> its sockaddr
    failure: OSError | None = None
    selector = selectors.DefaultSelector()
    try:
        while queue or attempts:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if queue:
                if len(attempts) >= _AT_ONCE:  # the oldest gives way: it had the longest
                    oldest = next(iter(attempts))
                    selector.unregister(oldest)
                    oldest.close()
                    del attempts[oldest]
                started = _start(queue.pop(0), prepare)
                if isinstance(started, OSError):
                    failure = started
                    continue
                sock, address, connected = started
                if connected:
                    return sock, address
                attempts[sock] = address
                selector.register(sock, selectors.EVENT_WRITE)
            if not attempts:
                continue
            wait = _wait(deadline, len(queue) + 1 if queue else 0)
            for key, _ in selector.select(wait):
                sock = key.fileobj  # type: ignore[assignment]
                selector.unregister(sock)
                # kept in ``attempts`` until returned or closed: closed there otherwise
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    sock.setblocking(True)
                    return sock, attempts.pop(sock)
                failure = OSError(code, os.strerror(code))
                sock.close()
                del attempts[sock]
        if attempts or failure is None:
            raise socket.timeout(
                "no address answered in time" if addresses else "no address to connect to")
        raise failure
    finally:
        for sock in attempts:
            sock.close()
        selector.close()


def _distinct(addresses: Sequence[Any]) -> list[Any]:
    """``addresses`` in their order, each family and sockaddr once (its first entry)."""
    first: dict[tuple[Any, Any], Any] = {}
    for info in addresses:
        first.setdefault((info[0], info[4]), info)
    return list(first.values())


def _start(info: Any, prepare: Callable[[socket.socket], None]
           ) -> tuple[socket.socket, Any, bool] | OSError:
    """A non-blocking connection attempt to ``info``'s address: (socket, sockaddr,
    connected already), or the ``OSError`` that ended it at once (a family the host lacks,
    a refusal, no route)."""
    family, kind, proto, _, address = info
    sock = None
    try:
        sock = socket.socket(family, kind, proto)
        prepare(sock)
        sock.setblocking(False)
        code = sock.connect_ex(address)
    except BaseException as exc:  # an option redis-py was given that the socket refuses
        if sock is not None:
            sock.close()
        if isinstance(exc, OSError):
            return exc
        raise
    if code == 0:
        sock.setblocking(True)
        return sock, address, True
    if code in _UNDER_WAY:
        return sock, address, False
    sock.close()
    return OSError(code, os.strerror(code))


def _wait(deadline: float | None, waiting: int) -> float | None:
    """Seconds to wait for an attempt under way before starting the next: the time left
    shared among the ``waiting`` addresses still to start and the newest attempt (``0``:
    none left to start, wait for the deadline)."""
    if deadline is None:
        return _NO_DEADLINE_DELAY if waiting else None
    left = max(0.0, deadline - time.monotonic())
    return left / waiting if waiting else left
