"""A replica for the multi-process Redis tests: guards the digits model against a shared
store and sends calls as one client (run in a spawned process)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

FIXED_TIME = 1_700_000_000.0


def fixed_clock() -> float:
    return FIXED_TIME


@lru_cache(maxsize=1)
def model() -> Any:
    from sklearn.naive_bayes import GaussianNB

    from tests.cases import digits

    x, y = digits()
    return GaussianNB().fit(x, y)


def guarded(url: str, policy: dict[str, Any]) -> Any:
    import aimsec_core

    # a loaded machine may take longer than the default 50 ms for a round trip, and a
    # call timed out is served on local state (fail_open): the shared counts would differ
    return aimsec_core.guard(model(), name="digits", sinks=[],
                             policy={"store_timeout": 5.0, **policy}, store=url)


def send(url: str, policy: dict[str, Any], client: str, rows: list[int], start: Any) -> int:
    """Send digits ``rows`` as ``client`` once ``start`` is set; returns how many were
    admitted (a refused call raises ``SecurityViolation``, counted as not admitted)."""
    import aimsec_core
    from aimsec_core.guard import Guard
    from tests.cases import digits

    guard_policy = dict(policy)
    g = aimsec_core.guard_of(guarded(url, guard_policy))
    g.clock = fixed_clock  # every call inside one minute, in both processes
    assert isinstance(g, Guard)
    g.monitor.clock = fixed_clock
    x = digits()[0]
    start.wait(60)
    admitted = 0
    with aimsec_core.client(client):
        for row in rows:
            try:
                g.call({"X": x[row:row + 1]}, lambda: None)
                admitted += 1
            except aimsec_core.SecurityViolation:
                pass
    return admitted


def first_query(url: str, row: np.ndarray, client: str) -> str:
    """Send one query; returns the outcome's checks (comma-joined)."""
    import aimsec_core

    g = guarded(url, {})
    with aimsec_core.client(client):
        g.predict(row)
    return ",".join(g.last_verdict.checks)
