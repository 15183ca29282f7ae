"""Long-running and hostile-volume behaviour of the monitor's counters: state and work
per call stay bounded whatever a client sends."""

from __future__ import annotations

import numpy as np

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
