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


# -- generators (one thread, interleaved handlers) -------------------------------------

def _handler(name: str, seen: list[str]):
    with client(name):
        yield
        seen.append(current_client())
        yield


def _interleave(a, b) -> None:
    next(a), next(b)  # both handlers enter their client() block
    next(a), next(b)  # and read their identity after the other one entered


def test_plain_generators_on_one_thread_share_one_client():
    """The limitation, kept visible: a generator runs in the context of its caller."""
    seen: list[str] = []
    a, b = _handler("a", seen), _handler("b", seen)
    _interleave(a, b)
    assert seen == ["b", "b"]  # "a" reads b's identity
    b.close(), a.close()  # unwound last-in first-out, the shared value is restored
    assert current_client() == "anonymous"


def test_isolated_generators_keep_their_own_client_and_leave_the_caller_alone():
    from aimsec_core import isolated, isolated_generator

    seen: list[str] = []
    with client("caller"):
        _interleave(isolated(_handler("a", seen)), isolated(_handler("b", seen)))
        assert current_client() == "caller"
    assert seen == ["a", "b"]

    seen.clear()
    handler = isolated_generator(_handler)
    a, b = handler("a", seen), handler("b", seen)
    _interleave(a, b)
    assert seen == ["a", "b"]
    assert list(a) == [] and list(b) == []  # run to completion; the blocks close cleanly
    assert current_client() == "anonymous"


def test_isolated_generators_pass_send_throw_and_close_through():
    from aimsec_core import isolated

    def echo():
        with client("echo"):
            received = yield current_client()
            try:
                yield received
            except KeyError:
                yield "caught"

    gen = isolated(echo())
    assert next(gen) == "echo" and gen.send("hello") == "hello"
    assert gen.throw(KeyError("k")) == "caught"
    gen.close()
    assert current_client() == "anonymous"


def test_guarded_calls_from_isolated_generators_are_attributed_to_their_client(tmp_path):
    import json

    import numpy as np

    import aimsec_core
    from aimsec_core.adapter import HostArrays

    audit = aimsec_core.AuditLog(tmp_path)
    guard = aimsec_core.Guard(None, HostArrays(None), sinks=[audit])

    @aimsec_core.isolated_generator
    def stream(name: str):
        with client(name):
            for _ in range(2):
                guard.call({"x": np.zeros((1, 2))}, lambda: None)
                yield

    a, b = stream("a"), stream("b")
    for _ in range(2):
        next(a), next(b)
    clients = [json.loads(line)["client"] for line in audit.file.read_text().splitlines()]
    assert clients == ["a", "b", "a", "b"]


def test_a_client_named_anonymous_is_watched_like_any_other(tmp_path):
    """``client("anonymous")`` (a user id chosen so, passed through by serving code) was
    the anonymous caller itself, whom the default policy never throttles nor watches:
    that client could repeat one query for ever. It is now recorded in quotes and
    watched; calls outside any block, and inside unidentified(), stay anonymous."""
    import json

    import numpy as np

    import aimsec_core
    from aimsec_core.adapter import HostArrays
    from aimsec_core.context import unidentified

    audit = aimsec_core.AuditLog(tmp_path)
    guard = aimsec_core.Guard(None, HostArrays(None), sinks=[audit], mode="monitor")

    def repeat(times: int) -> None:
        for _ in range(times):
            guard.call({"x": np.zeros((1, 2))}, lambda: None)

    with client("anonymous"):
        assert current_client() == '"anonymous"'
        repeat(7)  # past max_repeats (5): a watched client draws repeat findings
        with unidentified():
            assert current_client() == "anonymous"
    repeat(7)  # the anonymous caller: never watched by default
    lines = [json.loads(line) for line in audit.file.read_text().splitlines()]
    assert [line["client"] for line in lines] == ['"anonymous"'] * 7 + ["anonymous"] * 7
    assert [line["decision"] for line in lines] == ["allowed"] * 5 + ["flagged"] * 2 + [
        "allowed"] * 7


# -- request ids ---------------------------------------------------------------------------

def test_request_ids_nest_and_default_to_generated_ones():
    from aimsec_core import current_request_id, request_id

    assert current_request_id() is None
    with request_id("outer"):
        with request_id() as generated:
            assert current_request_id() == generated and len(generated) == 32
        assert current_request_id() == "outer"
    assert current_request_id() is None
    with pytest.raises(ConfigurationError):
        with request_id(""):
            pass


@pytest.mark.parametrize("value,says", [
    (None, "client identity must be a non-empty string; received NoneType"),
    (5, "client identity must be a non-empty string; received int"),
    ("", "client identity must be a non-empty string; received str ''"),
])
def test_a_bad_client_is_named_by_what_it_is(value, says):
    # a non-string was shown as "received NoneType ''", as if an empty string came
    with pytest.raises(ConfigurationError) as raised:
        with client(value):
            pass
    assert str(raised.value) == says


def test_guards_made_and_dropped_in_a_loop_leave_no_verdicts_in_the_thread(sink):
    """A context keeps every variable set in it: one variable per guard kept each dropped
    guard's last verdict (flags and scores per row) for as long as the thread lived."""
    import contextvars
    import gc

    import numpy as np

    from aimsec_core.adapter import HostArrays
    from aimsec_core.guard import Guard

    def call_one():
        guard = Guard(None, HostArrays(None), name="m", sinks=[sink], policy=False)
        guard.call({"input": np.zeros((1000, 4))}, lambda: None)
        assert guard.last_verdict.batch_size == 1000

    call_one()
    gc.collect()
    before = len(contextvars.copy_context())
    for _ in range(50):
        call_one()
        gc.collect()
    assert len(contextvars.copy_context()) <= before + 1
    # a variable a dropped guard used is reused, never with the dropped guard's verdict
    fresh = Guard(None, HostArrays(None), name="m", sinks=[sink], policy=False)
    assert fresh.last_verdict is None
