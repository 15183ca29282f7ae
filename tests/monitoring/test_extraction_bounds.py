"""PRADA's state stays bounded whatever the input size and the number of classes, and the
test still works on wide inputs, where it keeps a random subset of positions."""

from __future__ import annotations

import numpy as np
import pytest

from aimsec_core.monitoring.extraction import MAX_CLASSES, MAX_WIDTH, ExtractionTracker
from tests.cases import digits


def _wide(x: np.ndarray) -> np.ndarray:
    """Digits at 32x32 (1,024 values, each pixel a 4x4 block)."""
    images = x.reshape(-1, 8, 8).repeat(4, axis=1).repeat(4, axis=2)
    return images.reshape(len(x), -1)


def _nearest_centroid(x: np.ndarray, y: np.ndarray):  # type: ignore[no-untyped-def]
    centroids = np.stack([x[y == c].mean(axis=0) for c in range(10)])
    return lambda rows: np.argmin(((rows[:, None] - centroids[None]) ** 2).sum(-1), axis=1)


def _flagged_after(tracker: ExtractionTracker, client: str, rows, classify, limit: int):  # type: ignore[no-untyped-def]
    for n, row in enumerate(rows, start=1):
        if tracker.observe(client, row[None], classify(row[None]).tolist()) is not None:
            return n
        if n >= limit:
            return None
    return None


def test_wide_inputs_are_judged_on_a_subset_of_positions():
    x, y = digits()
    wide = _wide(x)
    classify = _nearest_centroid(wide, y)
    # seed 1: flagged after 108 probes at 1,024 values (kept: 128), as after 108 on the
    # 64-value digits themselves (seed 0's probes stay unflagged at either width)
    rng = np.random.default_rng(1)

    def probes():  # type: ignore[no-untyped-def]
        points = list(wide[rng.choice(len(wide), 10, replace=False)])
        while True:
            yield from points
            points = [np.clip(p + 0.1 * rng.choice([-1.0, 1.0], p.shape), 0, 1)
                      for p in points]

    tracker = ExtractionTracker()
    found = _flagged_after(tracker, "thief", probes(), classify, 500)
    assert found is not None
    for honest in range(3):
        draws = wide[rng.permutation(len(wide))[:600]]
        assert _flagged_after(tracker, f"honest-{honest}", draws, classify, 600) is None
    state = tracker._clients["thief"]
    assert state.members.shape[2] == MAX_WIDTH


def test_memory_per_client_is_bounded_by_classes_and_width():
    rng = np.random.default_rng(1)
    tracker = ExtractionTracker(set_size=8)
    width = 224 * 224 * 3  # an ImageNet-sized input: 150,528 values
    for label in range(100):  # a model with many classes: one query of each, twice
        rows = rng.random((2, width)).astype(np.float32)
        tracker.observe("many-classes", rows, [label, label])
    state = tracker._clients["many-classes"]
    assert len(state.labels) == MAX_CLASSES
    assert list(state.labels) == list(range(100 - MAX_CLASSES, 100))  # the most recent
    held = state.members.nbytes
    assert held <= MAX_CLASSES * 8 * MAX_WIDTH * 4


def test_classes_that_do_not_match_the_samples_are_refused_before_any_state_changes(
        monkeypatch):
    # the compiled step reads one class slot per row without bounds checks: three rows
    # with one class read (and wrote through) memory past the slot array
    from aimsec_core.monitoring import kernels

    rng = np.random.default_rng(0)
    for compiled in (False, True):
        with monkeypatch.context() as m:
            if not compiled:
                m.setattr(kernels, "load", lambda: None)
            tracker = ExtractionTracker()
            tracker.observe("c", rng.random((1, 8)), [0])
            before = tracker._clients["c"].ring.copy()
            for rows, classes in ((3, [0]), (5, [0, 1]), (1, [0, 1])):
                with pytest.raises(ValueError, match="one class per sample"):
                    tracker.observe("c", rng.random((rows, 8)), classes)
            state = tracker._clients["c"]
            assert list(state.labels) == [0]
            np.testing.assert_array_equal(state.ring, before)


def test_a_client_whose_input_width_changes_is_the_most_recent_client():
    # its new state must not sit where its old one was first made (dropped first)
    tracker = ExtractionTracker(clients=3)
    rng = np.random.default_rng(0)
    for client in ("a", "b", "c"):
        tracker.observe(client, rng.random((1, 8)), [0])
    tracker.observe("a", rng.random((1, 16)), [0])  # "a" again, another width
    tracker.observe("d", rng.random((1, 8)), [0])  # one client too many: the oldest goes
    assert list(tracker._clients) == ["c", "a", "d"]
