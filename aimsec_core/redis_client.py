"""Redis clients whose connections resolve the server's name through :mod:`.resolver`.

redis-py resolves the host of a ``redis://`` or ``rediss://`` URL with
``socket.getaddrinfo`` each time it connects, outside its ``socket_connect_timeout``: a
slow DNS server held a guarded call for seconds past the store's timeout. The
connections made here ask a :class:`~aimsec_core.resolver.Resolver` instead, and connect
to whichever address it answers connects first (:mod:`.happy_eyeballs`): the lookup and
every attempt share one deadline, ``socket_connect_timeout`` seconds away (each address
had a timeout of its own before: two addresses dropping every packet cost two timeouts).
TLS (``rediss://``) still checks the certificate against the host *name* of the URL. A
``unix://`` URL resolves nothing and is left to redis-py. Imported only where the
``redis`` extra is installed.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.connection import Connection, SSLConnection

from .happy_eyeballs import connect_first
from .resolver import RESOLVER, Resolver


class ResolvedConnection(Connection):
    """A TCP connection to the addresses ``resolver`` answers for its host."""

    def __init__(self, *args: Any, resolver: Resolver = RESOLVER, **kwargs: Any) -> None:
        self.resolver = resolver
        self._address: Any = None  #: the address connected to (a sockaddr tuple)
        super().__init__(*args, **kwargs)

    def connect(self) -> None:
        """Connect if not connected (redis-py calls it each time the pool hands the
        connection out); a connection to an address the name no longer answers (a
        failover by DNS to another server, the old one still answering) is closed and
        made again to the new one. The answer is looked up again once it is older than
        the resolver's ``fresh_s``, so a moved name is followed within about that long."""
        if self._address is not None and self._sock is not None and self._moved():
            self.disconnect()
        super().connect()

    def _moved(self) -> bool:
        try:  # the cached answer at once (an aged one is looked up in the background)
            answer = self.resolver.addresses(self.host, self.port, self.socket_type,
                                             wait=0)
        except OSError:  # nothing known yet, or the lookup failed: keep what works
            return False
        return all(found[4] != self._address for found in answer)

    def _connect(self) -> socket.socket:
        timeout = self.socket_connect_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        addresses = self.resolver.addresses(self.host, self.port, self.socket_type,
                                            wait=timeout)
        try:
            sock, self._address = connect_first(addresses, deadline, self._prepare)
        except OSError:
            self.resolver.refresh(self.host, self.port, self.socket_type)  # moved, perhaps
            raise
        sock.settimeout(self.socket_timeout)
        return sock

    def _prepare(self, sock: socket.socket) -> None:
        """redis-py's socket options, set before the socket connects."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.socket_keepalive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for option, value in (self.socket_keepalive_options or {}).items():
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


class ResolvedSSLConnection(SSLConnection, ResolvedConnection):
    """:class:`ResolvedConnection` wrapped in TLS, checked against the URL's host name."""


def check_url(url: str) -> None:
    """Raise ``ValueError`` for a ``redis://`` or ``rediss://`` URL that redis-py would
    read as another one, silently: a path that is not a database number (redis-py
    ignores it, so the state would go to database 0, and reads ``/1/2`` as database
    12), a database in the query beside one in the path (the query's wins, while the
    URL reads as the path's) or twice in the query (the first wins), port 0 (read as the default 6379). The message never
    repeats the URL (it may hold a password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return  # redis-py's own parsing reports it
    if parts.scheme not in ("redis", "rediss"):
        return
    if parts.path not in ("", "/") and not re.fullmatch(r"/[0-9]+", parts.path):
        raise ValueError("the path after host:port must be empty or a database number "
                         "such as /0 (is a '/' in the password not escaped as %2F?)")
    databases = len(parse_qs(parts.query).get("db", ()))
    if databases > 1 or (databases and parts.path not in ("", "/")):
        raise ValueError("the database is given twice (in the path and as ?db=, or as ?db= "
                         "twice); expected one of them")
    if port == 0:
        raise ValueError("port 0 is no port to connect to (redis-py would use 6379); "
                         "expected a port from 1 to 65535, or none for 6379")


def redis_client(url: str, *, resolver: Resolver | None = None, **kwargs: Any) -> redis.Redis:
    """``redis.Redis.from_url(url, **kwargs)``, its TCP connections resolving their host
    through ``resolver`` (default: the process's
    :data:`~aimsec_core.resolver.RESOLVER`). Raises ``ValueError`` as redis-py does for
    a URL it cannot use, and for one it would read as another (:func:`check_url`)."""
    check_url(url)
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        kwargs["connection_class"] = (ResolvedSSLConnection if scheme == "rediss"
                                      else ResolvedConnection)
        kwargs["resolver"] = resolver or RESOLVER
    return redis.Redis.from_url(url, **kwargs)
