"""Request monitoring: who is calling, how often, and whether their queries form an attack.

Per client and per model, through one state store (this process's memory, or Redis shared
by every replica): rate limits and minimum intervals on the ``limits`` library, lockout
after repeated refusals, exact repeats, Blacklight-style near-duplicate fingerprints
matched per client and across all clients, and PRADA's extraction test. ``Guard.call``
consults it in the pipeline's order (admission before the input is read, query checks
after validation, learning after the model); ``request_analysis()`` reports what it saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..config import resolve_store_url
from ..extras import require
from .monitor import Monitor, Visit
from .policy import ClientRules, Policy
from .store import Store, StoreError, open_store

__all__ = ["ClientRules", "Monitor", "Policy", "Store", "StoreError", "Visit",
           "build_monitor", "open_store"]


def build_monitor(model: str, policy: Policy | Mapping[str, Any] | bool | None,
                  store: str | Store | None, clock: Callable[[], float]) -> Monitor | None:
    """The monitor of one guarded model; ``None`` when ``policy`` is ``False``.

    ``store`` is a :class:`Store`, a URL (``memory://``, ``redis://host:port/db``) or
    ``None`` for ``AIMSEC_STORE_URL`` (default ``memory://``).
    """
    if policy is False:
        return None
    settings = Policy.coerce(None if policy is True else policy)  # type: ignore[arg-type]
    if any(rules.max_requests_per_minute is not None for rules in settings.all_rules):
        require(("limits",), "monitoring", "the max_requests_per_minute rate limit")
    if not isinstance(store, Store):
        store = open_store(resolve_store_url(store), timeout=settings.store_timeout)
    return Monitor(model, settings, store, clock)
