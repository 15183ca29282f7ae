"""The calling client is kept per thread and per asyncio task."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aimsec_core import ConfigurationError, client, current_client


def test_nested_blocks_restore_the_outer_client():
    assert current_client() == "anonymous"
    with client("a"):
        with client("b"):
            assert current_client() == "b"
        assert current_client() == "a"
    assert current_client() == "anonymous"


def test_threads_keep_their_own_client():
    seen: dict[str, str] = {}
    barrier = threading.Barrier(4)

    def work(name: str) -> None:
        with client(name):
            barrier.wait()
            seen[name] = current_client()

    threads = [threading.Thread(target=work, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {f"c{i}": f"c{i}" for i in range(4)}


def test_asyncio_tasks_keep_their_own_client():
    async def handle(name: str) -> str:
        with client(name):
            await asyncio.sleep(0.01)
            return current_client()

    async def main() -> list[str]:
        return await asyncio.gather(*(handle(f"k{i}") for i in range(5)))

    assert asyncio.run(main()) == [f"k{i}" for i in range(5)]


@pytest.mark.parametrize("bad", ["", None, 42])
def test_client_identity_must_be_a_non_empty_string(bad):
    with pytest.raises(ConfigurationError):
        with client(bad):
            pass
