"""The state store: one small interface, two backends (this process's memory, Redis).

Everything monitoring decides across calls goes through it, two operations per guarded
call at most: :meth:`Store.admit` before the input is read (rate limit, minimum interval,
lockout) and :meth:`Store.observe` after validation (repeats, near-duplicate fingerprints,
a standing suspicion). On Redis each is one round trip, atomic across replicas. Refused
calls and suspicions are written with :meth:`record_failure` / :meth:`mark_suspect`; the
Redis backend sends them along with its next round trip.

``open_store(url)`` picks the backend: ``memory://`` (the default) or ``redis://...``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..config import redacted_url
from ..errors import ConfigurationError
from ..extras import require
from .fingerprint import Query
from .index import Match
from .policy import ClientRules, Policy


class StoreError(Exception):
    """The store could not be reached within its timeout (handled by the monitor)."""


@dataclass(frozen=True)
class Admission:
    """What the store said about letting one call in; ``None`` fields mean "fine"."""

    rate_retry: float | None = None  #: seconds until the per-minute quota admits a call
    interval_retry: float | None = None  #: seconds until the minimum interval has passed
    locked_for: float | None = None  #: seconds the client's lockout still lasts


#: The admission of a call that nothing turned down (shared: it is never changed).
ADMITTED = Admission()


class Observation(NamedTuple):
    """What the store knows about one call's content (a named tuple: one is made per
    watched call)."""

    repeats: int = 0  #: earlier identical calls by the client within the repeat window
    matches: Sequence[Match] = ()  #: best match per sample
    suspect_for: float | None = None  #: seconds a standing extraction suspicion lasts


class Store(ABC):
    """Shared monitoring state of every guarded model using it (keys carry the model)."""

    url: str

    @abstractmethod
    def secret(self) -> bytes:
        """The fingerprint secret (salt), generated once and kept with the state."""

    @abstractmethod
    def admit(self, model: str, client: str, now: float, rules: ClientRules, *,
              lockout: bool) -> Admission:
        """Count one call of ``client`` against its quota and interval; report lockout."""

    @abstractmethod
    def observe(self, model: str, client: str, now: float, rules: ClientRules,
                policy: Policy, call_hash: str, query: Query | None,
                client_tag: int) -> Observation:
        """Count ``call_hash`` as a repeat, match and store the fingerprints of ``query``'s
        samples (hashes and content tags), and read the client's standing suspicion."""

    @abstractmethod
    def record_failure(self, model: str, client: str, now: float, rules: ClientRules) -> None:
        """Count one refused call; locks the client out at ``max_failed_attempts``."""

    @abstractmethod
    def mark_suspect(self, model: str, client: str, now: float, until: float) -> None:
        """Suspect ``client`` of extraction from ``now`` until ``until``."""

    def flush(self) -> None:
        """Send anything buffered (Redis); nothing to do in memory."""

    def close(self) -> None:
        """Release connections."""


def client_key(client: str) -> str:
    """A fixed-length key for a client id (ids are hostile input: any length, any bytes)."""
    return hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def open_store(url: str | Store | None, *, timeout: float = 0.05) -> Store:
    """The store for ``url``: ``memory://`` (default) or ``redis://host:port/db``."""
    if isinstance(url, Store):
        return url
    url = url or "memory://"
    if not isinstance(url, str):
        raise ConfigurationError(f"store must be 'memory://', a 'redis://host:port' URL or a "
                                 f"Store; received {type(url).__name__}")
    if url.startswith("memory://"):
        from .memory import MemoryStore

        return MemoryStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        require(("redis", "limits"), "redis", "a Redis monitoring store")
        from .redis_store import RedisStore

        try:
            return RedisStore(url, timeout=timeout)
        except ValueError as exc:  # redis' own parsing: a bad port, db or query value
            raise ConfigurationError(f"store URL {redacted_url(url, path=True)!r} cannot be "
                                     f"used: {exc}") from None
    shown = redacted_url(url) if "@" in url else url[:80]  # credentials are never echoed
    raise ConfigurationError(f"store must be 'memory://' or a 'redis://host:port' URL; "
                             f"received {shown!r}")
