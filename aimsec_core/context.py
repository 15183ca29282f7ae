"""Who is calling: set once per request, read by every guarded call beneath it.

A ``contextvars.ContextVar`` keeps the value per thread and per asyncio task, so a server
handling many requests at once never mixes their clients up.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

ANONYMOUS = "anonymous"

_current_client: contextvars.ContextVar[str] = contextvars.ContextVar(
    "aimsec_client", default=ANONYMOUS
)


@contextmanager
def client(identity: str) -> Iterator[str]:
    """Attribute every guarded call inside the block to ``identity`` (an address or key id).

    >>> with client("203.0.113.7"):
    ...     current_client()
    '203.0.113.7'
    """
    if not isinstance(identity, str) or not identity:
        from .errors import ConfigurationError

        raise ConfigurationError(
            f"client identity must be a non-empty string; received {identity!r}"
        )
    token = _current_client.set(identity)
    try:
        yield identity
    finally:
        _current_client.reset(token)


def current_client() -> str:
    """The identity set by the innermost :func:`client` block, or ``"anonymous"``."""
    return _current_client.get()
