"""A whole-exchange deadline for a channel's connection.

A socket timeout bounds each read, not the exchange: a server that answers one byte just
inside every timeout (or sends an endless reply) holds the delivery thread for as long as
it likes, and every other alert waits behind it. :class:`Deadline` shuts the connection's
socket down when its time is up, so the blocked read returns and the channel fails with a
retryable error.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any


class Deadline:
    """Within ``with Deadline(seconds, sockets):``, once ``seconds`` have passed the sockets
    that ``sockets()`` returns (``None`` entries skipped) are shut down for reading and
    writing; ``expired`` then tells the caller why its connection broke."""

    def __init__(self, seconds: float, sockets: Callable[[], list[Any]]) -> None:
        self.seconds = seconds
        self.sockets = sockets
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        self.expired = True
        for sock in self.sockets():
            if sock is None:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):  # already closed
                pass

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._timer.cancel()

    def note(self) -> str:
        """Text to add to an error: why the connection broke, when the deadline did it."""
        return f" (the whole exchange took over {self.seconds:g} s)" if self.expired else ""
