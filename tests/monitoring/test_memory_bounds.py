"""The in-process store stays bounded whatever clients send: distinct inputs without end,
rotating ids, lockouts and suspicions; expired entries go even behind a long-lived one."""

from __future__ import annotations

import pytest

from aimsec_core.monitoring import memory
from aimsec_core.monitoring.memory import MemoryStore
from aimsec_core.monitoring.policy import ClientRules, Policy

RULES = ClientRules(max_repeats=3, repeat_window=100.0, min_request_interval=0.5,
                    max_failed_attempts=2, failure_window=50.0, session_timeout=30.0)


@pytest.fixture
def small(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(memory, "KEPT", 64)
    monkeypatch.setattr(memory, "_SWEEP_EVERY", 16)
    return MemoryStore(secret=b"s" * 32)


def _observe(store: MemoryStore, client: str, digest: str, now: float) -> int:
    return store.observe("m", client, now, RULES, Policy(), digest, None, 0).repeats


def test_endless_distinct_inputs_keep_at_most_kept_repeat_entries(small):
    for i in range(2_000):
        _observe(small, "flood", f"{i:064x}", float(i) * 1e-3)
    assert len(small._repeats) <= 64 + 16
    # the newest inputs are still counted
    assert _observe(small, "flood", f"{1_999:064x}", 2.0) == 1


def test_rotating_ids_keep_at_most_kept_entries_per_table(small):
    for i in range(2_000):
        now = float(i)
        client = f"id-{i}"
        small.admit("m", client, now, RULES, lockout=True)
        small.record_failure("m", client, now, RULES)
        small.record_failure("m", client, now, RULES)  # locked out
        small.mark_suspect("m", client, now, now + 1e6)
    for table in (small._last, small._failures, small._locked, small._suspects):
        assert len(table) <= 64 + 16


def test_an_entry_renewed_long_after_it_was_made_does_not_hold_expired_ones(small):
    # one client repeats an input once per window for a long time; a thousand others
    # come and go behind it: their expired entries are swept, not kept until the cap
    for hour in range(40):
        now = hour * 200.0
        assert _observe(small, "regular", "a" * 64, now) == 0  # its window had ended
        for i in range(25):
            _observe(small, f"passer-{hour}-{i}", f"{i:064x}", now + i)
    assert len(small._repeats) <= 25 + 16 + 1


def test_a_repeat_within_its_window_is_counted_after_sweeps(small):
    for i in range(3):
        assert _observe(small, "c", "b" * 64, float(i)) == i
    for i in range(200):  # sweeps run; this entry is live and among the newest 64
        _observe(small, "d", f"{i:064x}", 3.0 + i * 0.01)
        if i % 20 == 0:
            _observe(small, "c", "b" * 64, 3.0 + i * 0.01)
    assert _observe(small, "c", "b" * 64, 6.0) >= 3


def test_refused_calls_from_rotating_ids_are_swept_without_a_quota(small, digits_model,
                                                                   clock):
    # without a quota or interval admission reads the lockout without the lock (no write
    # counted), and an invalid call is never observed: the failures of a stream of such
    # calls from ever new ids must still be swept
    import aimsec_core
    from aimsec_core import ValueRangeError
    from aimsec_core.guard import Guard
    from aimsec_core.registry import adapter_for
    from tests.cases import digits

    adapter = adapter_for(digits_model)
    guard = Guard(digits_model, adapter, name="digits", sinks=[], clock=clock,
                  store=small, constraints={"min_value": 0.0, "max_value": 1.0})
    guarded = adapter.wrap(guard)
    bad = digits()[0][:1] + 2.0
    for i in range(300):
        with aimsec_core.client(f"id-{i}"), pytest.raises(ValueRangeError):
            guarded.predict(bad)
        clock.advance(0.1)
    assert len(small._failures) <= 64 + 16


QUOTA = ClientRules(max_requests_per_minute=3)


def test_rotating_ids_within_a_minute_keep_at_most_kept_quota_windows(small):
    # the quota's windows were only swept by age: a flood of fresh ids within one
    # minute held one window each (about 400 bytes: gigabytes at millions of ids)
    for i in range(2_000):
        small.admit("m", f"id-{i}", i * 1e-3, QUOTA, lockout=False)
    assert len(small._quota.windows.events) <= 64 + 16


def test_a_busy_client_keeps_its_quota_while_ids_rotate_past_it(small):
    # the least recently counted windows go first: a client calling all along keeps its
    # count (it is not the oldest id) and stays refused past its quota
    for _ in range(3):
        assert small.admit("m", "busy", 0.0, QUOTA, lockout=False).rate_retry is None
    for i in range(2_000):
        small.admit("m", f"id-{i}", 1.0, QUOTA, lockout=False)
        if i % 32 == 0:
            assert small.admit("m", "busy", 1.0, QUOTA, lockout=False).rate_retry is not None


def _lock_out(store: MemoryStore, client: str, now: float) -> None:
    for _ in range(RULES.max_failed_attempts):
        store.record_failure("m", client, now, RULES)


def _locked_for(store: MemoryStore, client: str, now: float) -> float | None:
    return store.admit("m", client, now, RULES, lockout=True).locked_for


def test_a_flood_of_locked_out_ids_cannot_evict_a_live_lockout(small, caplog):
    # the cap dropped the least recently renewed lockouts first: a client locked out could
    # lock out KEPT fresh ids of its own (two refused calls each here, five by default)
    # and be admitted again long before its session_timeout
    _lock_out(small, "attacker", 0.0)
    assert _locked_for(small, "attacker", 0.0) is not None
    with caplog.at_level("WARNING", logger="aimsec.monitoring"):
        for i in range(2_000):
            _lock_out(small, f"flood-{i}", 1.0 + i * 1e-3)
    assert _locked_for(small, "attacker", 5.0) is not None
    assert len(small._locked) <= 64 + 16  # still bounded
    assert small.not_kept["lockout"] > 0
    assert len([r for r in caplog.records if "lockouts are in force" in r.getMessage()]) == 1


def test_a_client_locked_out_through_the_guard_stays_locked_out_under_a_flood(
        small, digits_model, clock):
    import aimsec_core
    from aimsec_core import ClientBlockedError, ValueRangeError
    from aimsec_core.guard import Guard
    from aimsec_core.registry import adapter_for
    from tests.cases import digits

    adapter = adapter_for(digits_model)
    guard = Guard(digits_model, adapter, name="digits", sinks=[], clock=clock, store=small,
                  constraints={"min_value": 0.0, "max_value": 1.0},
                  policy={"max_failed_attempts": 2, "session_timeout": 600})
    guarded = adapter.wrap(guard)
    bad = digits()[0][:1] + 2.0

    def lock_out(client: str) -> None:
        with aimsec_core.client(client):
            for _ in range(2):
                with pytest.raises(ValueRangeError):
                    guarded.predict(bad)

    lock_out("attacker")
    for i in range(200):  # more lockouts than the (patched) cap of 64
        lock_out(f"flood-{i}")
        clock.advance(0.1)
    with aimsec_core.client("attacker"), pytest.raises(ClientBlockedError):
        guarded.predict(digits()[0][:1])


def test_lockouts_are_kept_again_once_the_live_ones_expire(small):
    for i in range(200):
        _lock_out(small, f"flood-{i}", 0.0)
    later = RULES.session_timeout + 1.0  # every lockout of the flood has ended
    _lock_out(small, "next", later)
    assert _locked_for(small, "next", later) is not None
    assert len(small._locked) <= 64 + 16


def test_a_flood_of_suspected_ids_cannot_evict_a_live_suspicion(small):
    small.mark_suspect("m", "extractor", 0.0, 1_000.0)
    for i in range(2_000):
        small.mark_suspect("m", f"flood-{i}", 1.0, 1_000.0)
    assert small.observe("m", "extractor", 5.0, RULES, Policy(), "", None, 0).suspect_for
    assert len(small._suspects) <= 64 + 16
