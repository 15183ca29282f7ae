"""Connecting to the first of a name's addresses that answers, within one deadline.

An address that drops every packet is a loopback listener whose accept queue is full
(``listen(0)`` and one connection never accepted): the kernel then ignores new
connection requests, as a firewall dropping them would. Tests observe the order of
attempts and closes, never a clock: deadlines are seconds long."""

from __future__ import annotations

import socket
import uuid

import pytest
import redis

from aimsec_core.happy_eyeballs import connect_first
from aimsec_core.redis_client import redis_client
from aimsec_core.resolver import Resolver


_REAL_SOCKET = socket.socket


class Recording(socket.socket):
    """A socket recording when its connection attempt starts and when it is closed."""

    events: list[tuple[str, object]] = []

    def connect_ex(self, address):
        self.target = address
        Recording.events.append(("start", address))
        return super().connect_ex(address)

    def connect(self, address):  # the one-at-a-time path connected this way
        self.target = address
        Recording.events.append(("start", address))
        return super().connect(address)

    def close(self):
        if not getattr(self, "recorded_close", False) and hasattr(self, "target"):
            self.recorded_close = True
            Recording.events.append(("close", self.target))
        super().close()


@pytest.fixture
def recording(monkeypatch):
    Recording.events = []
    monkeypatch.setattr(socket, "socket", Recording)
    return Recording.events


@pytest.fixture
def blackholes():
    """Factory of loopback addresses that ignore connection requests."""
    made = []

    def make() -> tuple:
        listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        address = listener.getsockname()
        filler = _REAL_SOCKET()  # fills the accept queue (unrecorded)
        filler.connect(address)
        made.extend((listener, filler))
        return (socket.AF_INET, socket.SOCK_STREAM, 6, "", address)

    yield make
    for sock in made:
        sock.close()


def _info(port: int) -> tuple:
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))


def test_an_address_dropping_packets_does_not_hold_back_the_next(blackholes, recording):
    """The attempt to the second address starts while the first is still under way, and
    the first is closed once the second connected (it waited a whole timeout before)."""
    good = socket.create_server(("127.0.0.1", 0))
    try:
        dropped = blackholes()
        sock, address = connect_first([dropped, _info(good.getsockname()[1])],
                                      _deadline(4.0))
        assert address == good.getsockname()
        assert sock.getblocking()
        sock.close()
    finally:
        good.close()
    assert recording[:2] == [("start", dropped[4]), ("start", address)]
    assert ("close", dropped[4]) in recording  # the loser does not linger


def test_none_answering_is_a_timeout_after_every_address_was_tried(blackholes, recording):
    first, second = blackholes(), blackholes()
    with pytest.raises(socket.timeout):
        connect_first([first, second], _deadline(4.0))
    # both tried within the one deadline: the second before the first gave up
    assert recording[:2] == [("start", first[4]), ("start", second[4])]
    assert sorted(recording[2:]) == sorted([("close", first[4]), ("close", second[4])])


def test_a_refused_address_moves_on_to_the_next_at_once():
    closed = socket.create_server(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()
    good = socket.create_server(("127.0.0.1", 0))
    try:
        sock, address = connect_first([_info(refused_port), _info(good.getsockname()[1])],
                                      None)
        assert address == good.getsockname()
        sock.close()
        with pytest.raises(ConnectionRefusedError):
            connect_first([_info(refused_port)], _deadline(5.0))
    finally:
        good.close()


def test_no_address_is_an_os_error():
    with pytest.raises(OSError, match="no address"):
        connect_first([], _deadline(1.0))


def test_a_redis_client_reaches_the_address_that_answers(redis_server, blackholes, recording):
    """The Redis store's connections (monitoring, shared alert state) race their
    addresses: a name answering a dropped address first still connects well inside
    ``socket_connect_timeout`` (it waited the whole timeout on each dropped address)."""
    dropped = blackholes()

    def lookup(host, port, *args, **kwargs):
        return [dropped, _info(redis_server.port)]

    client = redis_client(f"redis://redis-{uuid.uuid4().hex[:8]}.test:{redis_server.port}/0",
                          resolver=Resolver(lookup), socket_connect_timeout=4.0,
                          socket_timeout=8.0)
    try:
        assert client.ping()
    finally:
        client.close()
    assert recording[:2] == [("start", dropped[4]), ("start", ("127.0.0.1", redis_server.port))]


def test_a_redis_client_whose_addresses_all_drop_gives_up_at_its_one_deadline(blackholes):
    dropped = [blackholes(), blackholes()]
    client = redis_client(f"redis://redis-{uuid.uuid4().hex[:8]}.test:6379/0",
                          resolver=Resolver(lambda *a, **k: dropped),
                          socket_connect_timeout=0.5, socket_timeout=0.5)
    with pytest.raises((redis.exceptions.TimeoutError, redis.exceptions.ConnectionError)):
        client.ping()
    client.close()


def _deadline(seconds: float) -> float:
    import time

    return time.monotonic() + seconds


def test_an_option_the_socket_refuses_closes_it_and_raises(recording):
    good = socket.create_server(("127.0.0.1", 0))

    def prepare(sock):
        recording.append(("prepared", None))
        sock.target = "prepared"
        raise TypeError("keepalive option values must be integers")

    try:
        with pytest.raises(TypeError, match="keepalive"):
            connect_first([_info(good.getsockname()[1])], _deadline(5.0), prepare)
    finally:
        good.close()
    assert recording == [("prepared", None), ("close", "prepared")]


def _under_way_at_most(events: list) -> int:
    """The most attempts started and not yet closed at any point of ``events``."""
    count = most = 0
    for kind, _ in events:
        count += 1 if kind == "start" else -1 if kind == "close" else 0
        most = max(most, count)
    return most


def test_a_name_answering_many_addresses_opens_a_bounded_number_at_once(
        blackholes, recording, monkeypatch):
    """Every address that drops packets stayed under way until the end: a hostile DNS
    answer of thousands held thousands of sockets (and the process's descriptors) at
    once. At most eight now: the oldest gives way to the next, so the last still gets
    its turn. The attempt delay is made short: only the order matters here."""
    from aimsec_core import happy_eyeballs

    monkeypatch.setattr(happy_eyeballs, "_wait",
                        lambda deadline, waiting: 0.001 if waiting else 5.0)
    good = socket.create_server(("127.0.0.1", 0))
    try:
        dropped = [blackholes() for _ in range(12)]
        sock, address = connect_first(dropped + [_info(good.getsockname()[1])],
                                      _deadline(60.0))
        sock.close()
        assert address == good.getsockname()
    finally:
        good.close()
    assert [target for kind, target in recording if kind == "start"] == (
        [info[4] for info in dropped] + [address])
    assert _under_way_at_most(recording) == 8


def test_an_address_answered_twice_is_tried_once(blackholes, recording, monkeypatch):
    from aimsec_core import happy_eyeballs

    monkeypatch.setattr(happy_eyeballs, "_wait",
                        lambda deadline, waiting: 0.001 if waiting else 5.0)
    good = socket.create_server(("127.0.0.1", 0))
    try:
        dropped = blackholes()
        sock, address = connect_first([dropped] * 5 + [_info(good.getsockname()[1]), dropped],
                                      _deadline(60.0))
        sock.close()
    finally:
        good.close()
    assert [event for event in recording if event[0] == "start"] == [
        ("start", dropped[4]), ("start", address)]
