"""Fixtures for the monitoring tests: a controllable clock, a small digits model, and a
real ``redis-server`` on a free loopback port (started here, stopped after)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeClock
from tests.servers import REDIS_SERVER, RedisServer



@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture(scope="session")
def digits_model():
    """The conformance suite's scikit-learn digits MLP (built once per process)."""
    from tests.cases.sklearn_case import CASE

    return CASE.model()


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is needed for the Redis tests (Debian package redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
