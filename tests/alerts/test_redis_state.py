"""Replicas sharing Redis send one message per group, not one per replica (a real
redis-server on a free loopback port)."""

from __future__ import annotations

import threading

import pytest
import redis

from aimsec_core.alerts import Grouper, GroupingPolicy, RedisGroupState
from aimsec_core.incidents import Occurrence

from tests.fakes import FakeClock

POLICY = GroupingPolicy(group_wait=30, group_interval=300, repeat_interval=14400,
                        floor="medium")


def occ(clock, client="203.0.113.7", severity="high", count=1):
    return Occurrence("digits", "adversarial", client, severity, clock(), clock(), count)


@pytest.fixture
def replicas(redis_server, clock):
    prefix = f"test:{id(clock)}:"
    return [Grouper(POLICY, RedisGroupState(redis.Redis.from_url(redis_server.url),
                                            prefix=prefix), clock=clock) for _ in range(3)]


def test_three_replicas_seeing_the_same_flood_send_one_message(replicas, clock):
    sent = []
    for _ in range(60):
        for replica in replicas:  # every replica sees the attack (a round-robin balancer)
            replica.observe(occ(clock, count=5))
            sent += replica.due()
        clock.advance(1)
    for _ in range(4 * 3600 // 30):  # the next four hours, every replica ticking
        clock.advance(30)
        sent += [a for r in replicas for a in r.due()]
    first, follow_up = sent
    assert (first.kind, follow_up.kind) == ("new", "update")
    assert first.count + follow_up.suppressed == 900 == follow_up.count


def test_the_first_message_is_claimed_once_when_replicas_race(replicas, clock):
    for replica in replicas:
        replica.observe(occ(clock, count=10))
    clock.advance(30)
    got, start = [], threading.Barrier(len(replicas))

    def claim(replica):
        start.wait()
        got.extend(replica.due())

    threads = [threading.Thread(target=claim, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    [alert] = got
    assert (alert.kind, alert.count, alert.suppressed) == ("new", 30, 29)


def test_escalation_on_one_replica_is_sent_once(replicas, clock):
    replicas[0].observe(occ(clock, severity="medium"))
    clock.advance(30)
    assert len([a for r in replicas for a in r.due()]) == 1
    replicas[2].observe(occ(clock, severity="critical"))
    [alert] = [a for r in replicas for a in r.due()]
    assert (alert.kind, alert.severity) == ("escalation", "critical")


def test_groups_expire_in_redis(redis_server, clock):
    client = redis.Redis.from_url(redis_server.url)
    state = RedisGroupState(client, prefix="ttl:", ttl_s=60)
    Grouper(POLICY, state, clock=clock).observe(occ(clock))
    [group_id] = state.ids()
    assert 0 < client.pttl(group_id) <= 60_000


@pytest.mark.parametrize("repeat_interval", [1e16, 1e308])
def test_a_repeat_interval_beyond_what_redis_can_expire_still_shares_groups(
        redis_server, clock, repeat_interval):
    """Groups expire twice the repeat interval after their last occurrence. An
    AIMSEC_ALERT_REPEAT_INTERVAL of 1e308 (a finite number of seconds, so accepted) made
    building the shared state raise OverflowError out of guard(); one of 1e16 made Redis
    refuse every group's PEXPIRE, so no group was ever shared (each replica grouped alone,
    logging a failure each time). The expiry is now capped where Redis can keep it."""
    client = redis.Redis.from_url(redis_server.url)
    policy = GroupingPolicy(repeat_interval=repeat_interval, floor="medium")
    state = RedisGroupState(client, prefix="far:", ttl_s=2 * policy.repeat_interval)
    grouper = Grouper(policy, state, clock=clock)
    grouper.observe(occ(clock, count=4))
    [group_id] = state.ids()
    assert client.pttl(group_id) > 10**15  # a long way off
    clock.advance(30)
    [alert] = grouper.due()
    assert (alert.kind, alert.count) == ("new", 4)


def test_shared_groups_outlive_a_group_interval_longer_than_the_repeat_interval(
        redis_server, monkeypatch):
    """A group is forgotten after its group interval when the repeat interval is shorter;
    Redis kept it only twice the repeat interval (2 s for AIMSEC_ALERT_REPEAT_INTERVAL=1),
    so a returning group expired there and was sent again as new."""
    from aimsec_core.alerts import security_sinks

    monkeypatch.setenv("AIMSEC_REDIS_URL", redis_server.url)
    policy = GroupingPolicy(group_interval=300, repeat_interval=1, floor="medium")
    *_, sink = security_sinks(incidents=False, metrics=False, policy=policy)
    assert sink.dispatcher.grouper.state.ttl_ms == 600_000


def test_redis_down_falls_back_to_grouping_in_this_process(clock):
    from .servers import free_port

    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = RedisGroupState(redis.Redis(port=free_port(), socket_connect_timeout=0.5,
                                       retry=Retry(NoBackoff(), 0)))
    grouper = Grouper(POLICY, dead, clock=FakeClock())
    grouper.observe(occ(grouper.clock, count=3))
    grouper.clock.advance(30)
    [alert] = grouper.due()
    assert alert.count == 3


def test_a_claim_whose_reply_is_lost_is_still_sent(redis_server, clock):
    """Redis paused (SIGSTOP) after a replica decided to send a group: the claim reaches
    the server and is stored when it resumes, but its reply never came. The alert goes out
    all the same (it was stored as sent: no replica would send it again)."""
    import os
    import signal

    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(redis_server.url, socket_timeout=0.5,
                                  retry=Retry(NoBackoff(), 0))
    grouper = Grouper(POLICY, RedisGroupState(client, prefix="lost:"), clock=clock)
    grouper.observe(occ(clock, count=4))
    clock.advance(30)
    claim = grouper._claim
    pid = redis_server.process.pid

    def claim_then_pause(*args):
        decided = claim(*args)
        os.kill(pid, signal.SIGSTOP)  # the server stops before the claim is written
        return decided

    grouper._claim = claim_then_pause
    try:
        sent = grouper.due()
    finally:
        os.kill(pid, signal.SIGCONT)
    del grouper._claim
    [alert] = sent
    assert (alert.kind, alert.count) == ("new", 4)


def test_a_group_lost_with_a_redis_restarted_empty_is_still_sent(redis_server, clock):
    """Redis restarted empty (no persistence) while a group waited its group_wait: the
    replica that fed it sends it from its own process; it was never sent by anyone."""
    state = RedisGroupState(redis.Redis.from_url(redis_server.url), prefix="gone:")
    feeder, other = (Grouper(POLICY, state, clock=clock) for _ in range(2))
    feeder.observe(occ(clock, count=3))
    clock.advance(10)
    feeder.observe(occ(clock, count=2))
    redis_server.stop()
    redis_server.start()
    clock.advance(30)
    assert other.due() == []  # fed nothing: nothing to send
    [alert] = feeder.due()
    assert (alert.count, alert.client) == (5, "203.0.113.7")
    clock.advance(600)
    assert feeder.due() == [] and other.due() == []  # once


def test_a_group_another_replica_sent_is_not_sent_again_when_it_is_forgotten(replicas,
                                                                            clock):
    """A group fed by one replica and sent by another is seen as sent; once the shared
    state forgets it (quiet for repeat_interval), the feeder does not take it for lost."""
    feeder, sender, _ = replicas
    feeder.observe(occ(clock, count=2))
    clock.advance(30)
    [alert] = sender.due()
    assert alert.count == 2
    assert feeder.due() == []  # reads it sent
    clock.advance(POLICY.repeat_interval + 1)
    assert [a for r in replicas for a in r.due()] == []  # forgotten, not resent
    clock.advance(30)
    assert [a for r in replicas for a in r.due()] == []
