"""The Redis store's host name is resolved off the guarded call's path: a DNS server that
hangs or fails costs a call at most ``store_timeout`` and is an outage under the store's
failure policy; the name is looked up once however many calls wait, looked up again when
its addresses stop answering, and TLS checks the certificate against the name.

The resolvers here are fakes that block on an event or answer what the test says: no
test waits on a clock."""

from __future__ import annotations

import socket
import ssl
import threading
import uuid

import pytest
import redis

import aimsec_core
from aimsec_core import StoreUnavailableError
from aimsec_core.guard import Guard
from aimsec_core.monitoring import build_monitor
from aimsec_core.monitoring.redis_store import RedisStore
from aimsec_core.registry import adapter_for
from aimsec_core.resolver import Resolver
from tests.cases import digits
from tests.conftest import ListSink
from tests.servers import free_port

#: a fake lookup gives up after this long (only code that waits for it ever gets there)
GIVE_UP_S = 20.0


class HungLookup:
    """``getaddrinfo`` for ``name`` blocks until ``release`` is set, then answers
    ``answer`` (a port on 127.0.0.1) or fails; other names go to the real lookup."""

    def __init__(self, name: str, real=socket.getaddrinfo) -> None:
        self.name, self.real = name, real
        self.release, self.gave_up = threading.Event(), threading.Event()
        self.calls = 0
        self.answer: int | None = None

    def __call__(self, host, port, *args, **kwargs):
        if host != self.name:
            return self.real(host, port, *args, **kwargs)
        self.calls += 1
        if not self.release.wait(GIVE_UP_S):
            self.gave_up.set()
        if self.answer is None:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return self.real("127.0.0.1", self.answer, socket.AF_INET, socket.SOCK_STREAM)


class Answers:
    """A lookup answering, in turn, a failure (``None``) or a port on 127.0.0.1."""

    def __init__(self, *ports: int | None) -> None:
        self.ports = list(ports)
        self.calls = 0

    def __call__(self, host, port, *args, **kwargs):
        self.calls += 1
        answer = self.ports.pop(0) if len(self.ports) > 1 else self.ports[0]
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return socket.getaddrinfo("127.0.0.1", answer, socket.AF_INET, socket.SOCK_STREAM)


@pytest.fixture
def hung(monkeypatch):
    """A host name whose lookup hangs, through the process's own ``getaddrinfo`` (what
    redis-py called itself before, on the guarded call's thread)."""
    lookup = HungLookup(f"hangs-{uuid.uuid4().hex[:12]}.invalid")
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    yield lookup
    lookup.release.set()


def _monitor(url_or_store, clock, **policy):
    policy = {"max_requests_per_minute": 100, "store_timeout": 0.05, **policy}
    monitor = build_monitor("m", policy, url_or_store, clock)
    assert monitor is not None
    return monitor


def _checks(visit) -> list[str]:
    return [f.check for f in visit.findings]


@pytest.mark.parametrize("failure", ["fail_open", "fail_closed"])
def test_a_hanging_resolver_costs_a_call_the_store_timeout_not_the_lookup(hung, clock,
                                                                          failure):
    # redis-py resolved the host with getaddrinfo on the call's thread, outside every
    # timeout: a DNS server that did not answer held each guarded call as long as the
    # resolver's retries took (here: until the fake gives up)
    monitor = _monitor(f"redis://{hung.name}:6379/0", clock, store_failure=failure)
    visit = monitor.admit("client-1")
    assert not hung.gave_up.is_set()  # answered while the lookup still hangs
    assert _checks(visit) == ["store_unavailable"]
    assert ("store_unavailable" in monitor.advisory_checks) == (failure == "fail_open")
    clock.advance(monitor.policy.store_retry)
    assert _checks(monitor.admit("client-1")) == ["store_unavailable"]
    assert not hung.gave_up.is_set() and hung.calls == 1  # one lookup, however many wait
    monitor.store.close()


def test_a_fail_closed_guard_refuses_while_the_resolver_hangs(hung, digits_model, clock):
    adapter = adapter_for(digits_model)
    guarded = adapter.wrap(Guard(digits_model, adapter, name="digits", mode="enforce",
                                 sinks=[ListSink()], clock=clock,
                                 policy={"store_failure": "fail_closed",
                                         "store_timeout": 0.05},
                                 store=f"redis://{hung.name}:6379/0"))
    with aimsec_core.client("c"), pytest.raises(StoreUnavailableError):
        guarded.predict(digits()[0][:1])
    assert not hung.gave_up.is_set()


def test_a_lookup_that_answers_late_is_used_when_the_store_is_tried_again(redis_server,
                                                                         clock):
    lookup = HungLookup("redis.test")
    lookup.answer = redis_server.port
    resolver = Resolver(lookup)
    # the wait for the name is the connect timeout; a loaded machine needs seconds for
    # the round trips once connected
    store = RedisStore(f"redis://redis.test:{redis_server.port}/0", timeout=2.0,
                       resolver=resolver)
    monitor = _monitor(store, clock, store_timeout=2.0)
    assert _checks(monitor.admit("client-1")) == ["store_unavailable"]
    lookup.release.set()
    assert resolver.addresses("redis.test", redis_server.port, wait=GIVE_UP_S)  # it ended
    clock.advance(monitor.policy.store_retry)
    assert _checks(monitor.admit("client-1")) == []
    assert lookup.calls == 1 and not lookup.gave_up.is_set()
    admin = redis.Redis(port=redis_server.port)
    assert admin.keys("aimsec:m:*")  # the shared state was written
    admin.close()
    store.close()


def test_a_failing_lookup_is_an_outage_and_looked_up_again(redis_server, clock):
    answers = Answers(None, redis_server.port)
    store = RedisStore(f"redis://redis.test:{redis_server.port}/0", timeout=5.0,
                       resolver=Resolver(answers))
    monitor = _monitor(store, clock, store_timeout=5.0)
    visit = monitor.admit("client-1")
    assert _checks(visit) == ["store_unavailable"]
    assert "Name or service not known" in visit.findings[0].reason
    clock.advance(monitor.policy.store_retry)
    assert _checks(monitor.admit("client-1")) == []
    assert answers.calls == 2
    store.close()


def test_addresses_that_stop_answering_are_looked_up_again(redis_server, clock):
    # a server moved (a failover to another address): the cached addresses refuse, and
    # the next connection waits for the name's new addresses
    nobody = free_port()
    answers = Answers(nobody, redis_server.port)
    store = RedisStore(f"redis://redis.test:{redis_server.port}/0", timeout=5.0,
                       resolver=Resolver(answers))
    monitor = _monitor(store, clock, store_timeout=5.0)
    assert _checks(monitor.admit("client-1")) == ["store_unavailable"]
    clock.advance(monitor.policy.store_retry)
    assert _checks(monitor.admit("client-1")) == []
    assert answers.calls == 2
    store.close()


def test_an_answer_is_kept_until_it_ages_then_refreshed_in_the_background(clock):
    asked, refresh = threading.Event(), threading.Event()

    class Refreshing(Answers):
        def __call__(self, *args, **kwargs):
            if self.calls:  # the refresh: held until the test lets it answer
                asked.set()
                refresh.wait(GIVE_UP_S)
            return super().__call__(*args, **kwargs)

    answers = Refreshing(1111, 2222)
    resolver = Resolver(answers, fresh_s=60, clock=clock)
    first = resolver.addresses("redis.test", 6379, wait=GIVE_UP_S)
    assert first[0][4][1] == 1111
    assert resolver.addresses("redis.test", 6379, wait=0) == first and answers.calls == 1
    clock.advance(60)
    # aged: looked up again in the background, the cached answer meanwhile (at once)
    assert resolver.addresses("redis.test", 6379, wait=0) == first
    pending = resolver._entries[("redis.test", 6379, 0)].pending
    assert pending is not None and asked.wait(GIVE_UP_S)
    refresh.set()
    assert pending.wait(GIVE_UP_S)
    assert resolver.addresses("redis.test", 6379, wait=0)[0][4][1] == 2222


def test_an_address_literal_is_never_looked_up():
    answers = Answers(None)
    found = Resolver(answers).addresses("127.0.0.1", 6379, wait=0)
    assert found[0][4] == ("127.0.0.1", 6379) and answers.calls == 0


def _tls_server(tls_ca, name: str) -> socket.socket:
    """A TLS server on 127.0.0.1 presenting a certificate for ``name`` (closed by the
    caller); it completes one handshake, then waits for the client to go."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert(name).configure_cert(context)
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        try:
            conn, _ = server.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    return server


@pytest.mark.parametrize("certified", ["redis.test", "other.test"])
def test_tls_checks_the_certificate_against_the_urls_name(tmp_path, certified):
    import trustme

    from aimsec_core.redis_client import ResolvedSSLConnection

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = _tls_server(ca, certified)
    port = server.getsockname()[1]
    conn = ResolvedSSLConnection(host="redis.test", port=port,
                                 resolver=Resolver(Answers(port)),
                                 ssl_ca_certs=str(ca_file), ssl_cert_reqs="required",
                                 ssl_check_hostname=True, socket_connect_timeout=30,
                                 socket_timeout=30)
    try:
        if certified == "redis.test":
            sock = conn._connect()  # connected to 127.0.0.1, checked as redis.test
            assert sock.server_hostname == "redis.test"
            assert sock.getpeername()[0] == "127.0.0.1"
            sock.close()
        else:
            with pytest.raises(ssl.SSLCertVerificationError, match="redis.test"):
                conn._connect()
    finally:
        server.close()


def test_shared_alert_groups_resolve_their_host_off_the_call_too(hung):
    # the alert worker's Redis connection resolved its host the same way: a hanging DNS
    # server held the worker (and close() at exit waiting for it) past its 2 s timeout
    from aimsec_core.alerts.state import RedisGroupState

    state = RedisGroupState.from_url(f"redis://{hung.name}:6379/0")
    with pytest.raises(redis.exceptions.TimeoutError):
        state.ids()
    assert not hung.gave_up.is_set()
    state.client.close()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_a_forked_child_looks_up_again_instead_of_waiting_for_the_parents_lookup():
    # a lookup under way at the fork has no thread in the child: its answer never comes
    import os

    release = threading.Event()

    def lookup(host, port, *args):
        if os.getpid() == parent:
            release.wait(GIVE_UP_S)
        return socket.getaddrinfo("127.0.0.1", port, socket.AF_INET, socket.SOCK_STREAM)

    parent = os.getpid()
    resolver = Resolver(lookup)
    with pytest.raises(socket.timeout):
        resolver.addresses("redis.test", 6379, wait=0)  # the parent's lookup hangs
    pid = os.fork()
    if pid == 0:  # the child: answered by a lookup of its own
        code = 1
        try:
            code = int(resolver.addresses("redis.test", 6379, wait=GIVE_UP_S)[0][4][1]
                       != 6379)
        finally:
            os._exit(code)
    release.set()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_address_of_a_family_the_host_lacks_is_skipped_for_the_next(redis_server, clock):
    # localhost answered ::1 first on a host without IPv6: creating the socket failed
    # outside the loop's handler, so the IPv4 address after it was never tried
    def lookup(host, port, *args, **kwargs):
        usable = socket.getaddrinfo("127.0.0.1", redis_server.port, socket.AF_INET,
                                    socket.SOCK_STREAM)
        unsupported = (255, socket.SOCK_STREAM, 0, "", ("::1", redis_server.port, 0, 0))
        return [unsupported, *usable]

    store = RedisStore(f"redis://redis.test:{redis_server.port}/0", timeout=5.0,
                       resolver=Resolver(lookup))
    monitor = _monitor(store, clock, store_timeout=5.0)
    assert _checks(monitor.admit("client-1")) == []
    store.close()


def test_a_lookup_ending_in_an_exception_of_any_kind_is_looked_up_again():
    # a lookup that raised something no Exception (gevent's Timeout, a cancellation)
    # killed its thread before it marked the lookup ended: every later caller waited
    # for it in vain and the name was never looked up again
    class Cancelled(BaseException):
        pass

    calls = []

    def lookup(host, port, *args, **kwargs):
        calls.append(host)
        if len(calls) == 1:
            raise Cancelled("lookup cancelled")
        return socket.getaddrinfo("127.0.0.1", port, socket.AF_INET, socket.SOCK_STREAM)

    resolver = Resolver(lookup)
    with pytest.raises(OSError, match="Cancelled"):
        resolver.addresses("redis.test", 6379, wait=GIVE_UP_S)
    assert resolver.addresses("redis.test", 6379, wait=GIVE_UP_S)[0][4] == ("127.0.0.1", 6379)
    assert len(calls) == 2


def test_a_name_moved_to_another_server_that_answers_is_followed(redis_server, clock):
    # a failover by DNS where the old server still answers (demoted, not down): the
    # pooled connection to it never failed, so the name was never looked up again and
    # the replica kept talking to the old server for ever; the answer is refreshed as
    # it ages, and a connection to an address it no longer holds reconnects
    from tests.servers import RedisServer

    other = RedisServer().start()
    try:
        answers = Answers(redis_server.port, other.port)
        resolver = Resolver(answers, fresh_s=60, clock=clock)
        store = RedisStore(f"redis://redis.test:{redis_server.port}/0", timeout=5.0,
                           resolver=resolver)
        old, new = redis.Redis(port=redis_server.port), redis.Redis(port=other.port)
        store.client.set("where", "x")
        assert old.get("where") == b"x"
        clock.advance(60)
        store.client.set("where", "y")  # the aged answer is looked up again meanwhile
        pending = resolver._entries[("redis.test", redis_server.port, 0)].pending
        assert pending is None or pending.wait(GIVE_UP_S)
        store.client.set("where", "z")
        assert new.get("where") == b"z" and old.get("where") != b"z"
        store.close()
        old.close()
        new.close()
    finally:
        other.stop()


def test_lookups_under_way_are_bounded_however_many_names_hang():
    # each name not known yet started a thread; with a DNS server that hangs, a process
    # asked for many names (every one a new thread, the cache forgetting those under way
    # past 256 names, so asking again started more) held a thread per name and more
    from aimsec_core import resolver as resolving

    lookup = HungLookup("unused")
    lookup.name = None  # every name hangs

    def hangs(host, port, *args, **kwargs):
        lookup.calls += 1
        lookup.release.wait(GIVE_UP_S)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    resolver = Resolver(hangs)
    before = threading.active_count()
    try:
        for round_ in range(2):
            for index in range(resolving._NAMES + 44):
                with pytest.raises(OSError):
                    resolver.addresses(f"n{index}.test", 6379, wait=0)
        assert threading.active_count() - before <= 32  # resolver._LOOKUPS
        assert lookup.calls <= 32
    finally:
        lookup.release.set()
