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
_current_tier: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "aimsec_client_tier", default=None)


@contextmanager
def client(identity: str, tier: str | None = None) -> Iterator[str]:
    """Attribute every guarded call inside the block to ``identity`` (an address or key id).

    ``tier`` names the policy tier whose limits apply (``policy={"tiers": {...}}``).

    >>> with client("203.0.113.7"):
    ...     current_client()
    '203.0.113.7'
    """
    if not isinstance(identity, str) or not identity:
        from .errors import ConfigurationError

        raise ConfigurationError(
            f"client identity must be a non-empty string; received {identity!r}"
        )
    if tier is not None and not isinstance(tier, str):
        from .errors import ConfigurationError

        raise ConfigurationError(f"client tier must be a string or None; received {tier!r}")
    token = _current_client.set(identity)
    tier_token = _current_tier.set(tier)
    try:
        yield identity
    finally:
        _current_tier.reset(tier_token)
        _current_client.reset(token)


def current_client() -> str:
    """The identity set by the innermost :func:`client` block, or ``"anonymous"``."""
    return _current_client.get()


def current_tier() -> str | None:
    """The policy tier set by the innermost :func:`client` block (``None``: the base)."""
    return _current_tier.get()
