"""Alertmanager semantics on a clock moved by hand: group_wait, duplicates suppressed and
counted, the quiet follow-up, repeat_interval reminders, escalation at once, forgetting."""

from __future__ import annotations

import pytest

from aimsec_core.alerts import Grouper, GroupingPolicy
from aimsec_core.incidents import Occurrence

POLICY = GroupingPolicy(group_wait=30, group_interval=300, repeat_interval=4 * 3600,
                        floor="medium")


def occurrence(clock, severity="high", client="203.0.113.7", threat="adversarial", count=1):
    return Occurrence("digits", threat, client, severity, clock(), clock(), count)


@pytest.fixture
def grouper(clock):
    return Grouper(POLICY, clock=clock)


def test_first_message_waits_group_wait_and_counts_what_it_collected(grouper, clock):
    grouper.observe(occurrence(clock))
    assert grouper.due() == []
    clock.advance(10)
    grouper.observe(occurrence(clock, count=4))
    clock.advance(19.9)
    assert grouper.due() == []
    clock.advance(0.2)
    [alert] = grouper.due()
    assert (alert.kind, alert.count, alert.suppressed) == ("new", 5, 4)
    assert (alert.model, alert.threat, alert.client, alert.severity) == (
        "digits", "adversarial", "203.0.113.7", "high")
    assert grouper.due() == []  # claimed: nothing twice


def test_duplicates_wait_for_the_group_to_go_quiet_then_carry_the_suppressed_count(grouper,
                                                                                   clock):
    grouper.observe(occurrence(clock))
    clock.advance(30)
    assert [a.kind for a in grouper.due()] == ["new"]
    for _ in range(10):  # still firing: one a minute for ten minutes
        clock.advance(60)
        grouper.observe(occurrence(clock))
        assert grouper.due() == []
    clock.advance(299)
    assert grouper.due() == []
    clock.advance(1)
    [update] = grouper.due()
    assert (update.kind, update.count, update.suppressed) == ("update", 11, 10)
    clock.advance(4 * 3600 - 1)
    assert grouper.due() == []


def test_a_group_that_keeps_firing_is_reminded_every_repeat_interval(grouper, clock):
    grouper.observe(occurrence(clock))
    clock.advance(30)
    grouper.due()
    kinds = []
    for _ in range(int(9 * 3600 / 60)):
        clock.advance(60)
        grouper.observe(occurrence(clock))
        kinds += [(a.kind, a.suppressed) for a in grouper.due()]
    assert kinds == [("reminder", 240), ("reminder", 240)]


@pytest.mark.parametrize("pattern", ["firing", "returning"])
def test_a_repeat_interval_below_the_group_interval_sends_no_faster_than_the_group_interval(
        clock, pattern):
    """AIMSEC_ALERT_REPEAT_INTERVAL=1 (accepted: > 0) reminded a group that keeps firing
    every second, and forgot a group quiet for a second, so its next finding was a new
    group sent at once: a message per round, the flood grouping exists to prevent.
    group_interval is the least time between two messages of a group (escalations
    aside), as in Alertmanager, where reminders wait for the group's interval too."""
    grouper = Grouper(GroupingPolicy(group_wait=0, group_interval=300, repeat_interval=1,
                                     floor="medium"), clock=clock)
    sent_at = []
    for step in range(360):  # an hour: every 10 s, or every 2 s out of 10 returning
        clock.advance(10 if pattern == "firing" else (2 if step % 2 else 8))
        if pattern == "firing" or step % 2:
            grouper.observe(occurrence(clock))
        sent_at += [clock() for _ in grouper.due()]
    gaps = [later - earlier for earlier, later in zip(sent_at, sent_at[1:])]
    assert sent_at and gaps and min(gaps) >= 300, gaps[:5]


def test_severity_escalation_is_sent_at_once(grouper, clock):
    grouper.observe(occurrence(clock, severity="medium"))
    clock.advance(30)
    assert [a.severity for a in grouper.due()] == ["medium"]
    clock.advance(1)
    grouper.observe(occurrence(clock, severity="critical"))
    [alert] = grouper.due()
    assert (alert.kind, alert.severity, alert.suppressed) == ("escalation", "critical", 1)


def test_groups_are_per_model_threat_and_client(grouper, clock):
    for client in ("a", "b"):
        for threat in ("adversarial", "extraction"):
            grouper.observe(occurrence(clock, client=client, threat=threat))
    clock.advance(30)
    alerts = grouper.due()
    assert sorted((a.client, a.threat) for a in alerts) == [
        ("a", "adversarial"), ("a", "extraction"), ("b", "adversarial"), ("b", "extraction")]


def test_below_the_floor_nothing_is_grouped_or_sent(clock):
    grouper = Grouper(GroupingPolicy(floor="high"), clock=clock)
    grouper.observe(occurrence(clock, severity="medium"))
    clock.advance(3600)
    assert grouper.due() == [] and grouper.idle


def test_a_quiet_group_is_forgotten_and_starts_over(grouper, clock):
    grouper.observe(occurrence(clock))
    clock.advance(30)
    grouper.due()
    clock.advance(4 * 3600)
    assert grouper.due() == [] and grouper.idle
    grouper.observe(occurrence(clock))
    clock.advance(30)
    [alert] = grouper.due()
    assert (alert.kind, alert.count) == ("new", 1)


def test_force_sends_what_is_pending_at_shutdown(grouper, clock):
    grouper.observe(occurrence(clock))
    [alert] = grouper.due(force=True)
    assert alert.kind == "new"
    grouper.observe(occurrence(clock))
    [alert] = grouper.due(force=True)
    assert (alert.kind, alert.suppressed) == ("flush", 1)


def test_an_unreachable_state_logs_its_traceback_once_not_every_pass(clock, caplog):
    """A shared state that is down fails on every pass: its traceback is logged once (a
    minute), the later failures in one line each."""
    import logging

    from aimsec_core.alerts.grouping import MemoryGroupState

    class Down(MemoryGroupState):
        def ids(self):
            raise ConnectionError("redis is down")

    grouper = Grouper(GroupingPolicy(), Down(), clock=clock, retry_s=0)  # tried each time
    with caplog.at_level(logging.WARNING, logger="aimsec"):
        for _ in range(3):
            grouper.due()
    failures = [r for r in caplog.records if "failed to list groups" in r.getMessage()]
    assert len(failures) == 3
    assert [bool(r.exc_info) for r in failures] == [True, False, False]


def test_an_unreachable_state_logs_its_traceback_once_not_every_occurrence(clock, caplog):
    """Observing into a state that is down falls back to this process's groups: the
    traceback is logged once a minute, not once per occurrence (a flood of findings
    logged a flood of tracebacks)."""
    import logging

    from aimsec_core.alerts.grouping import MemoryGroupState

    class Down(MemoryGroupState):
        def add(self, key, **fields):
            raise ConnectionError("redis is down")

    grouper = Grouper(GroupingPolicy(), Down(), clock=clock, retry_s=0)  # tried each time
    with caplog.at_level(logging.WARNING, logger="aimsec"):
        for _ in range(3):
            grouper.observe(occurrence(clock))
    failures = [r for r in caplog.records if "grouping in this process" in r.getMessage()]
    assert [bool(r.exc_info) for r in failures] == [True, False, False]
    clock.advance(30)
    [alert] = grouper.due()
    assert alert.count == 3  # grouped here, none lost


def test_a_clock_that_goes_back_delays_a_group_by_its_timer_not_by_the_jump(grouper, clock):
    grouper.observe(occurrence(clock))
    clock.advance(-3600)  # an NTP step back by an hour
    assert grouper.due() == []
    clock.advance(30)
    [first] = grouper.due()  # group_wait after the jump, not an hour and group_wait
    assert (first.kind, first.count) == ("new", 1)
    grouper.observe(occurrence(clock))
    clock.advance(-3600)
    grouper.due()
    clock.advance(300)
    [update] = grouper.due()  # the quiet follow-up, group_interval after the jump
    assert (update.kind, update.suppressed) == ("update", 1)


def test_a_clock_that_goes_back_frees_a_capped_client_slot_after_repeat_interval(clock):
    """The client cap counts clients per repeat_interval from when each was last seen; a
    slot taken before an NTP step back stayed taken until the clock caught up with the old
    time again (the jump plus repeat_interval), so every new client was rolled up."""
    policy = GroupingPolicy(group_wait=0, group_interval=60, repeat_interval=600,
                            floor="medium", max_clients=1)
    grouper = Grouper(policy, clock=clock)
    grouper.observe(occurrence(clock, client="a"))
    assert [a.client for a in grouper.due()] == ["a"]
    clock.advance(-86_400)  # a day back
    assert grouper.due() == []  # the worker's next round
    clock.advance(601)  # "a" quiet for repeat_interval: its slot is free again
    grouper.observe(occurrence(clock, client="b"))
    assert [a.client for a in grouper.due()] == ["b"]
