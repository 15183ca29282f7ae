"""Long-running and hostile-volume behaviour of the monitor's counters: state and work
per call stay bounded whatever a client sends."""

from __future__ import annotations

import numpy as np

from aimsec_core.monitoring.analysis import RequestStats
from aimsec_core.monitoring.memory import MemoryStore
from aimsec_core.monitoring.monitor import Monitor
from aimsec_core.monitoring.policy import Policy


def test_a_near_duplicate_batch_keeps_ten_sample_indices_not_one_per_row():
    now = [1_000.0]
    monitor = Monitor("m", Policy.coerce({}), MemoryStore(secret=b"s" * 32), lambda: now[0])
    rows = 5_000
    x = np.random.default_rng(0).random(64) + np.random.default_rng(1).normal(
        0, 1e-4, (rows, 64))
    visit = monitor.admit("attacker")
    findings = monitor.check(visit, [x], rows, "h")
    assert [f.check for f in findings] == ["near_duplicate"]
    assert len(findings[0].samples) >= rows - 1  # the call's own finding names them all
    kept = monitor.stats._matches[-1]
    assert kept["samples"] == list(findings[0].samples[:10])
    assert kept["sample_count"] == len(findings[0].samples)
    match = monitor.request_analysis()["near_duplicate_matches"][-1]
    assert len(match["samples"]) == 10 and match["sample_count"] >= rows - 1


class _CountingDict(dict):
    """A dict counting its whole-table walks."""

    walks = 0

    def items(self):
        type(self).walks += 1
        return super().items()

    def values(self):
        type(self).walks += 1
        return super().values()


def test_a_lockout_renewed_on_every_refused_call_does_not_walk_a_full_table():
    stats = RequestStats()
    stats._suspicions = _CountingDict()
    now = 1_000.0
    for i in range(4096):  # as many locked-out clients as the table keeps
        stats.suspect(now, f"bot-{i}", "lockout", now + 3600, "r")
    walks = _CountingDict.walks
    for i in range(2_000):  # each refused call of a locked-out client renews its entry
        stats.suspect(now + i * 0.01, f"bot-{i}", "lockout", now + 3600, "r")
    for i in range(2_000):  # new ones while nothing has expired: dropped, no walk each
        stats.suspect(now + 30 + i * 0.01, f"new-{i}", "lockout", now + 3600, "r")
    assert _CountingDict.walks - walks <= 2
    # once the first ones end, a new one takes an expired one's place
    stats.suspect(now + 3601, "late", "lockout", now + 7200, "r")
    found = stats.report(now + 3601, 60, 5)["active_suspicions"]
    assert [s["client"] for s in found] == ["late"]


class _CountingTimes(list):
    """A client's call times, counting the ones read."""

    reads = 0

    def __getitem__(self, index):
        found = super().__getitem__(index)
        type(self).reads += len(found) if isinstance(index, slice) else 1
        return found

    def __iter__(self):
        for value in super().__iter__():
            type(self).reads += 1
            yield value


def test_a_refusal_at_a_large_quota_reads_a_few_call_times_not_all():
    from aimsec_core.monitoring.ratelimit import Quota

    quota, now, limit = Quota(), 1_000.0, 50_000
    for _ in range(limit):
        now += 1e-4
        assert quota.hit(limit, now, "m", "c") is None
    (key,) = quota.windows.events
    quota.windows.events[key] = _CountingTimes(quota.windows.events[key])
    now += 1e-4
    retry = quota.hit(limit, now, "m", "c")
    assert retry is not None and abs(retry - (60 - limit * 1e-4)) < 1e-6
    assert _CountingTimes.reads < 100
    # at the window's edge: a call exactly 60 s old still counts
    assert quota.windows.get_moving_window(key, limit, 60) == (1_000.0001, limit)
    quota.windows.now = 1_060.0001
    assert quota.windows.get_moving_window(key, limit, 60)[1] == limit
    quota.windows.now = 1_060.0002
    assert quota.windows.get_moving_window(key, limit, 60)[1] == limit - 1
