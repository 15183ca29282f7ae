"""The tolerant line parser and the bounded-memory estimators."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimsec_core.reporting.aggregate import MAX_BUCKETS, Timeline
from aimsec_core.reporting.records import MAX_TEXT, parse_line
from aimsec_core.reporting.sketches import HeavyHitters, LogHistogram

LINE = {"time": "2026-11-26T04:12:20.176559+00:00", "model": "digits", "client": "c",
        "decision": "rejected", "input_hash": "1f", "shape": [2, 64], "dtype": "float32",
        "batch_size": 2, "flagged": [0], "latency_ms": 0.41,
        "findings": [{"check": "range", "severity": "medium", "reason": "r", "samples": [0]}]}


def test_both_flagged_forms_and_extra_keys():
    old = parse_line(json.dumps(LINE))
    new = parse_line(json.dumps({**LINE, "flagged": {"count": 7, "first": [0, 1]},
                                 "request_id": "r", "prev": "h", "version": "1",
                                 "findings": [{"check": "range", "samples": {"count": 7}}]}))
    assert old.flagged == 1 and new.flagged == 7
    assert old.checks == new.checks == ("range",)
    assert old.time == new.time and old.refused


def test_absent_keys_take_defaults_and_bad_lines_are_none():
    entry = parse_line('{"time": "2026-11-26T04:12:20"}')  # naive: UTC
    assert (entry.model, entry.client, entry.decision, entry.batch_size, entry.checks,
            entry.latency_ms, entry.detection) == ("unknown", "anonymous", "other", 0, (), None,
                                                   None)
    for bad in ("", "{", "[]", '"text"', '{"time": 5}', '{"time": "yesterday"}', b"\xff\xfe"):
        assert parse_line(bad) is None


def test_detection_summary_is_read():
    line = {**LINE, "detection": {"suspicion_max": "inf", "threshold": 3.5, "fpr": 0.01,
                                  "above": 2}}
    detection = parse_line(json.dumps(line)).detection
    assert detection.threshold == 3.5 and detection.above == 2 and math.isinf(
        detection.suspicion_max)
    assert parse_line(json.dumps({**LINE, "detection": {"threshold": "x"}})).detection is None


def test_hostile_text_is_cut():
    entry = parse_line(json.dumps({**LINE, "client": "x" * 10_000}))
    assert len(entry.client) == MAX_TEXT


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200),
                 st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=20)
                              | st.integers(),
                              lambda inner: st.lists(inner, max_size=4)
                              | st.dictionaries(st.sampled_from(list(LINE) + ["detection"]),
                                                inner, max_size=8),
                              max_leaves=20).map(json.dumps)))
def test_any_line_parses_or_is_refused_never_raises(line):
    entry = parse_line(line)
    assert entry is None or isinstance(entry.time, float)


def test_log_histogram_percentiles_within_the_relative_error():
    rng = np.random.default_rng(0)
    values = rng.lognormal(0, 1.5, 50_000)
    histogram = LogHistogram(relative_error=0.01)
    for v in values:
        histogram.add(float(v))
    for q in (0.5, 0.9, 0.99):
        exact = np.quantile(values, q, method="lower")
        assert histogram.quantile(q) == pytest.approx(exact, rel=0.0101)
    assert histogram.quantile(1.0) == pytest.approx(values.max(), rel=0.0101)
    assert LogHistogram().quantile(0.5) is None


def test_heavy_hitters_exact_below_capacity_and_bounded_above():
    rng = random.Random(1)
    stream = [f"c{int(rng.paretovariate(1.2))}" for _ in range(20_000)]
    exact = {}
    for key in stream:
        exact[key] = exact.get(key, 0) + 1
    small = HeavyHitters(capacity=len(exact))
    small.update(stream)
    assert small.exact and dict(small.counts) == exact
    tight = HeavyHitters(capacity=16)
    tight.update(stream)
    assert not tight.exact and len(tight.counts) <= 16
    assert tight.error_bound <= len(stream) / 17
    for key, count in tight.top(5):
        assert exact[key] - tight.error_bound <= count <= exact[key]
    assert [k for k, _ in tight.top(3)] == sorted(exact, key=lambda k: -exact[k])[:3]


def test_timeline_widens_and_keeps_every_call():
    timeline = Timeline()
    for i in range(10_000):
        timeline.add(1_700_000_000 + 97.0 * i, "allowed", ("range",) if i % 3 == 0 else ())
    assert len(timeline.decisions) <= MAX_BUCKETS
    assert sum(c["allowed"] for c in timeline.decisions.values()) == 10_000
    assert sum(c["range"] for c in timeline.checks.values()) == 3334
