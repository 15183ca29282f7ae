"""Many threads on one guarded model: every call leaves exactly one whole audit line, and
the lines form one unbroken hash chain."""

from __future__ import annotations

import json
import threading

import numpy as np

import aimsec_core
from aimsec_core import AuditLog

THREADS, CALLS = 8, 2000


def test_eight_threads_leave_sixteen_thousand_well_formed_lines(tmp_path):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.random((40, 8))
    model = LogisticRegression().fit(x, np.arange(40) % 3)
    audit = AuditLog(tmp_path)
    # each client repeats 40 rows on purpose: monitoring runs (shared state under eight
    # threads) with its repeat, near-duplicate and lockout decisions switched off
    guarded = aimsec_core.guard(model, name="threads", sinks=[audit],
                                constraints={"max_value": 0.95},
                                policy={"max_repeats": 0, "near_duplicate": False,
                                        "max_failed_attempts": 0})
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        barrier.wait()
        with aimsec_core.client(f"client-{t}"):
            for i in range(CALLS):
                row = x[(t * CALLS + i) % 40][None]
                try:
                    guarded.predict(row)
                except aimsec_core.ValueRangeError:
                    pass  # rows above 0.95 are refused; they must still be audited
                except BaseException as exc:  # anything else is a bug
                    errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    audit.flush()
    assert errors == []
    lines = audit.file.read_text().splitlines()
    assert len(lines) == THREADS * CALLS
    parsed = [json.loads(line) for line in lines]
    per_client = {}
    for line in parsed:
        per_client[line["client"]] = per_client.get(line["client"], 0) + 1
        assert line["decision"] in ("allowed", "rejected") and len(line["input_hash"]) == 32
    assert per_client == {f"client-{t}": CALLS for t in range(THREADS)}
    refused = sum(line["decision"] == "rejected" for line in parsed)
    expected = sum(int((x[(t * CALLS + i) % 40] > 0.95).any())
                   for t in range(THREADS) for i in range(CALLS))
    assert refused == expected > 0
    verified = aimsec_core.audit.verify_trail(audit.file)  # one unbroken hash chain
    assert verified.intact and verified.lines == THREADS * CALLS


def test_a_call_is_screened_by_the_calibration_in_place_when_it_began():
    # another thread's refit (which drops the calibration) or recalibration landing
    # between validation and the detectors: the call went unscreened, or was scored by
    # the new calibration, under a verdict naming the one it began with
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.random((120, 4))
    model = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor")
    first = guarded.calibrate(x[:60], detectors=["margin", "density"])
    guard = aimsec_core.guard_of(guarded)
    screen = guard.screen
    expected = guard.calibration_id

    def screen_then_drop(*args, **kwargs):
        result = screen(*args, **kwargs)
        guard.calibration = None  # what a concurrent refit leaves
        return result

    guard.screen = screen_then_drop
    guarded.predict(x[60:64])
    verdict = guarded.last_verdict
    assert verdict.scores and verdict.threshold == first.suite.threshold
    assert verdict.calibration_id == expected

    guard.calibration = first
    second = guarded.calibrate(x[60:], detectors=["margin"], fpr=0.2)
    guard.calibration = first

    def screen_then_swap(*args, **kwargs):
        result = screen(*args, **kwargs)
        guard.calibration = second
        return result

    guard.screen = screen_then_swap
    guarded.predict(x[:4])
    verdict = guarded.last_verdict
    assert set(verdict.scores) == {"suspicion", "margin", "density"}
    assert verdict.calibration_id == expected
