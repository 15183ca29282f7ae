"""The compiled kernels give what the numpy implementations give.

Replicas sharing a Redis store must hash alike whether or not numba is installed, and the
numpy forms stay the fallback, so every kernel is checked against its numpy form on the
same inputs, hostile ones included.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aimsec_core.monitoring import extraction, kernels
from aimsec_core.monitoring.fingerprint import FingerprintSettings, Fingerprinter, Query
from aimsec_core.monitoring.index import FingerprintIndex
from tests.cases import digits

pytestmark = pytest.mark.skipif(kernels.load(wait=True) is None,
                                reason="numba is not installed")
SECRET = b"fixed secret for reproducible fingerprints"


def _numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "load", lambda: None)


def _both(monkeypatch: pytest.MonkeyPatch, call):  # type: ignore[no-untyped-def]
    compiled = call()
    with monkeypatch.context() as m:
        _numpy(m)
        reference = call()
    return compiled, reference


values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 0.5, 3.0]))


@settings(max_examples=150, deadline=None)
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 40)),
                    elements=values),
       window=st.integers(1, 16), step=st.sampled_from([1e-300, 0.05, 0.2, 3.0]),
       unit=st.sampled_from([1e-6, 1.0, 250.0]), hashes=st.integers(1, 60))
def test_fingerprints_and_content_tags_match_numpy(x, window, step, unit, hashes):
    f = Fingerprinter(FingerprintSettings(window, step, unit, hashes), SECRET)
    with pytest.MonkeyPatch.context() as monkeypatch:
        (fast, fast_tags), (slow, slow_tags) = _both(monkeypatch, lambda: f.fingerprint(x))
    assert fast.dtype == slow.dtype == np.uint32 and fast.shape == slow.shape
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(fast_tags, slow_tags)


def test_content_tags_tell_apart_values_with_long_runs_of_zero_bits(monkeypatch):
    # digits hold multiples of 1/16: their float64 patterns end in ~48 zero bits, which a
    # plain keyed sum would leave out of the kept bits (every tag alike in its low half)
    f = Fingerprinter(FingerprintSettings(12, 0.2, 1.0, 50), SECRET)
    x = np.unique(digits()[0].astype(np.float64), axis=0)
    for tags in _both(monkeypatch, lambda: f.fingerprint(x)[1]):
        low = np.unique(tags & 0xFFFF)  # the Redis store keeps 16 bits
        assert len(low) > 0.97 * len(x)  # birthday collisions only (about 1.4%)


def _stream() -> list[np.ndarray]:
    """Benign rows, near-duplicates of them, exact repeats, a flat row and hostile values,
    in batches of 1 to 7."""
    x = digits()[0].astype(np.float64)
    rng = np.random.default_rng(3)
    moved = x[:150].copy()
    moved[:, 27:30] += 0.25
    hostile = x[300:304].copy()
    hostile[0, 5], hostile[1, 9], hostile[2, 0] = np.nan, np.inf, -1e308
    hostile[3] = 2.0  # flat: no fingerprint
    stream = np.concatenate([x[:300], hostile, moved, x[:40]])
    cuts = np.cumsum(rng.integers(1, 8, len(stream)))
    return np.split(stream, cuts[cuts < len(stream)])


def _run_index(match) -> list:  # type: ignore[no-untyped-def]
    # a capacity small enough to grow, wrap and expire (ttl) within the stream
    index = FingerprintIndex(256, 50, initial=16)
    out = []
    for k, batch in enumerate(_stream()):
        out += match(index, batch, k)
    return out


def _assert_same_matches(fast: list, slow: list) -> None:
    # of equally good matches, the most recent is reported either way (a benign row
    # shares a hash or two with many others): the same owner too
    assert fast == slow
    assert sum(m.shared > 25 for m in fast) >= 30  # near-duplicates within the ttl found


def test_the_index_matches_the_same_way_compiled_and_in_numpy(monkeypatch):
    f = Fingerprinter(FingerprintSettings(12, 0.2, 1.0, 50), SECRET)

    def match(index, batch, k):  # type: ignore[no-untyped-def]
        hashes, tags = f.fingerprint(batch)
        return index.match_and_add(hashes, tags, k % 3, float(k), 40.0)

    _assert_same_matches(*_both(monkeypatch, lambda: _run_index(match)))


def test_fingerprinting_and_matching_in_one_pass_match_the_two_passes(monkeypatch):
    f = Fingerprinter(FingerprintSettings(12, 0.2, 1.0, 50), SECRET)

    def one_pass(index, batch, k):  # type: ignore[no-untyped-def]
        return index.fingerprint_match_and_add(Query(f, batch), k % 3, float(k), 40.0)

    def two_passes(index, batch, k):  # type: ignore[no-untyped-def]
        return index.match_and_add(*f.fingerprint(batch), k % 3, float(k), 40.0)

    fused = _run_index(one_pass)
    assert [m.size for m in fused].count(0) == 1  # the flat row
    _assert_same_matches(fused, _run_index(two_passes))  # both compiled
    with monkeypatch.context() as m:
        _numpy(m)
        _assert_same_matches(fused, _run_index(two_passes))


@pytest.mark.parametrize("threshold", [0.0, 3.0, 1e9])
def test_extraction_distances_agree_to_float32_rounding(monkeypatch, threshold):
    rng = np.random.default_rng(0)
    members = rng.random((64, 64)).astype(np.float32)
    row = rng.random(64) * 1.5

    def step() -> tuple[float, np.ndarray]:
        stored = members.copy()
        join = extraction.distance_and_join
        if kernels.load() is not None:
            from aimsec_core.monitoring import _compiled

            join = _compiled.distance_and_join
        return join(stored, 40, row, threshold), stored

    (fast, fast_stored), (slow, slow_stored) = _both(monkeypatch, step)
    assert fast == pytest.approx(slow, rel=1e-6)
    np.testing.assert_array_equal(fast_stored, slow_stored)  # joined alike (or not)
    joined = not np.array_equal(fast_stored, members)
    assert joined == (fast > threshold)
    if joined:
        np.testing.assert_array_equal(fast_stored[40], row.astype(np.float32))


@pytest.mark.parametrize("batch", [1, 7])
def test_prada_state_is_the_same_compiled_and_in_numpy(monkeypatch, batch):
    # 600 rows of 20 classes (more than a client keeps: classes are evicted, within a
    # batch too), with exact repeats: every array of the client's state and every test
    # come out alike
    rng = np.random.default_rng(3)
    seeds = rng.random((20, 32))
    labels = rng.integers(0, 20, 600)
    rows = seeds[labels] + rng.normal(0, 0.05, (600, 32)) * (rng.random((600, 1)) < 0.9)

    def run():  # type: ignore[no-untyped-def]
        tracker = extraction.ExtractionTracker(window=120, min_queries=40, test_every=10,
                                               set_size=16)
        flags = [tracker.observe("c", rows[i:i + batch], labels[i:i + batch].tolist())
                 for i in range(0, len(rows), batch)]
        return tracker._clients["c"], flags

    (fast, fast_flags), (slow, slow_flags) = _both(monkeypatch, run)
    assert len(fast.labels) == extraction.MAX_CLASSES
    _assert_same_prada_state(fast, slow, fast_flags, slow_flags)
    assert fast.last_w == pytest.approx(slow.last_w, rel=1e-9)


def _assert_same_prada_state(fast, slow, fast_flags, slow_flags) -> None:  # type: ignore[no-untyped-def]
    """One client's PRADA state and test outcomes alike, compiled and in numpy (the
    distances to rounding)."""
    assert [(repr(k), v) for k, v in fast.labels.items()] == \
        [(repr(k), v) for k, v in slow.labels.items()]
    np.testing.assert_array_equal(fast.ring, slow.ring)
    np.testing.assert_array_equal(fast.members, slow.members)
    np.testing.assert_allclose(fast.recent(), slow.recent(), rtol=1e-9)
    np.testing.assert_allclose(fast.classes, slow.classes, rtol=1e-9)
    np.testing.assert_allclose(fast.class_distances, slow.class_distances, rtol=1e-9)
    assert [f is None for f in fast_flags] == [f is None for f in slow_flags]


@pytest.mark.parametrize("case", ["natural", "outliers", "wrapped", "equal", "few", "probes"])
def test_prada_test_statistic_is_the_same_compiled_and_in_numpy(case):
    from aimsec_core.monitoring import _compiled

    rng = np.random.default_rng(7)
    window, appended = 200, 150
    distances = rng.gamma(3.0, 1.0, window)
    if case == "outliers":
        distances[[3, 40, 99]] = [80.0, 95.0, 1e6]
    elif case == "wrapped":
        appended = 1_234  # the ring went round: the oldest value sits at 1,234 % 200
    elif case == "equal":
        distances[:] = 2.5
    elif case == "few":
        appended = 2
    elif case == "probes":  # an attack's distances: a few values, repeated
        distances = rng.choice([0.1, 0.1, 0.1, 0.5], window)
    tracker = extraction.ExtractionTracker(window=window)
    state = extraction._ClientState(8, 8, window, 16)
    state.distances[:] = distances
    state.ring[0] = appended
    compiled = tracker._shapiro_compiled(kernels.load(), state)
    reference = extraction._shapiro(state.recent())
    if reference is None:
        assert compiled is None
    else:
        assert compiled == pytest.approx(reference, rel=1e-12, abs=1e-12)
    recent = state.recent()  # the sample the test reads: sorted, 3-sigma outliers out
    centred = recent - recent.mean()
    spread = centred.std()
    expected = np.sort(recent[np.abs(centred) <= 3 * spread] if spread > 0 else recent)
    sample = np.empty(window)
    n = _compiled.prada_sample(state.distances, appended, sample)
    np.testing.assert_allclose(sample[:n], expected, rtol=1e-12)
    if case == "outliers":
        assert 1e6 not in sample[:n] and n < len(recent)


def test_counting_candidates_in_a_table_picks_what_sorting_them_picks():
    # serials of 1 to 400 candidates; the stored fingerprints alive, overwritten, expired
    # or of the query's own content: the same (count, serial) either way, whether the
    # serial counted most often is alive or the ranking has to go further
    from aimsec_core.monitoring import _compiled

    slots, first = 64, 1_000
    beyond = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        found = rng.integers(first, first + int(rng.integers(1, 100)), int(rng.integers(1, 401)))
        fp_serial = np.empty(slots, np.int64)
        for serial in range(first, first + slots):
            fp_serial[serial % slots] = serial if rng.random() > 0.2 else -1  # overwritten
        fp_time = np.where(rng.random(slots) < 0.3, 0.0, 10.0)  # 0.0: expired
        fp_content = np.where(rng.random(slots) < 0.1, 7, 8).astype(np.uint64)  # 7: own
        args = (np.uint64(7), 5.0, fp_serial, fp_time, fp_content)
        expected = _compiled._best_alive(found.copy(), *args)
        assert _compiled._most_shared(found.copy(), *args) == expected
        values, counts = np.unique(found, return_counts=True)
        top = values[np.lexsort((values, counts))[-1]]
        beyond += expected[1] != top
    assert 20 < beyond < 180  # both ways taken


@pytest.mark.parametrize("n", [0, 1, 2, 53, 400, 3000])
def test_the_kernels_sort_sorts_in_place(n):
    from aimsec_core.monitoring import _compiled

    rng = np.random.default_rng(n)
    for values in (rng.integers(0, 2**32, n).astype(np.uint32),
                   rng.integers(0, 20, n).astype(np.int64)):  # many ties
        ordered = values.copy()
        _compiled._sort(ordered)
        np.testing.assert_array_equal(ordered, np.sort(values))


def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "_loaded", [])
    monkeypatch.setattr(kernels, "_loader", [])


def test_aimsec_jit_0_turns_the_kernels_off(monkeypatch):
    _fresh(monkeypatch)
    monkeypatch.setenv("AIMSEC_JIT", "0")
    assert kernels.load(wait=True) is None
    _fresh(monkeypatch)
    monkeypatch.setenv("AIMSEC_JIT", "1")
    assert kernels.load(wait=True) is not None


def test_the_numpy_forms_serve_while_the_kernels_compile(monkeypatch):
    import threading

    from aimsec_core.monitoring import _compiled

    release = threading.Event()
    real = _compiled.warm_up
    monkeypatch.setattr(_compiled, "warm_up", lambda: (release.wait(30), real()))
    _fresh(monkeypatch)
    f = Fingerprinter(FingerprintSettings(12, 0.2, 1.0, 50), SECRET)
    x = digits()[0][:3]
    assert kernels.load() is None  # compiling: the numpy forms answer
    before = f.fingerprint(x)
    release.set()
    assert kernels.load(wait=True) is not None
    after = f.fingerprint(x)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_a_kernel_that_cannot_compile_leaves_the_numpy_forms_running(monkeypatch, caplog):
    from aimsec_core.monitoring import _compiled

    def broken() -> None:
        raise RuntimeError("cannot cache function: no locator available")

    _fresh(monkeypatch)
    monkeypatch.setattr(_compiled, "warm_up", broken)
    assert kernels.load(wait=True) is None
    assert "numpy forms run instead" in caplog.text
    f = Fingerprinter(FingerprintSettings(12, 0.2, 1.0, 50), SECRET)
    assert f(digits()[0][:2]).shape == (2, 50)


def test_no_guarded_call_compiles_another_kernel_specialization():
    # numba compiles one specialization per argument type (about a second each, on the
    # caller's time): read-only, unaligned or Fortran-ordered input (np.frombuffer over a
    # request body) and a clock giving ints must reach the kernels as the types load()
    # compiled
    from aimsec_core.monitoring import _compiled

    kernels_ = (_compiled.fingerprint_rows, _compiled.match_and_add_rows,
                _compiled.fingerprint_match_and_add_rows, _compiled.learn_rows,
                _compiled.prada_sample, _compiled.shapiro_sorted, _compiled.rebucket)
    x = digits()[0][:3].astype(np.float64)
    f = Fingerprinter(FingerprintSettings(12, 0.2, 1.0, 50), SECRET)
    f.fingerprint(x)
    FingerprintIndex(64, 50).match_and_add(*f.fingerprint(x), 1, 0.0, 60.0)
    before = [len(k.signatures) for k in kernels_]
    unaligned = np.frombuffer(b"\0" + x.tobytes(), np.float64, offset=1).reshape(x.shape)
    assert not unaligned.flags.aligned and not unaligned.flags.writeable
    read_only = x.copy()
    read_only.setflags(write=False)
    index = FingerprintIndex(64, 50)
    for samples in (unaligned, read_only, np.asfortranarray(x)):
        hashes, tags = f.fingerprint(samples)
        np.testing.assert_array_equal(hashes, f(x))
        index.match_and_add(hashes, tags, np.uint32(7), 1_700_000_000, 60)
        index.fingerprint_match_and_add(Query(f, samples), np.uint32(7), 1_700_000_000, 60)
        index.fingerprint_match_and_add(Query(f, samples.astype(np.float32)), 7, 1.0, 60.0)
    tracker = extraction.ExtractionTracker()
    tracker.observe("c", read_only.astype(np.float32), [0, 0, 1])
    # PRADA's test (its coefficients are read-only), a batch split by a class eviction,
    # and the index growing
    tracker = extraction.ExtractionTracker(window=8, min_queries=4, test_every=1)
    rng = np.random.default_rng(0)
    for i in range(12):
        tracker.observe("c", rng.random((2, 5)), [i % 17, (i + 1) % 17])
    assert tracker.statistic("c") is not None
    tracker.observe("c", rng.random((3, 5)), [100, 101, 102])
    grown = FingerprintIndex(64, 50, initial=2)
    for i in range(3):
        grown.fingerprint_match_and_add(Query(f, x[i:i + 1]), 7, 1.0, 60.0)
    assert grown._slots > 2
    assert [len(k.signatures) for k in kernels_] == before


@pytest.mark.parametrize("extreme", [1e20, 1e39, 1e300, -np.inf, np.nan])
def test_extraction_distances_stay_finite_and_alike_for_extreme_values(monkeypatch,
                                                                        extreme):
    # float32 squares overflowed past 1e19, the cast past 3.4e38; NaN gave NaN in numpy
    # and inf compiled: each poisoned the client's window (NaN W, no flag)
    rng = np.random.default_rng(0)
    rows = rng.random((30, 16))
    rows[::7, 3] = extreme

    def run() -> list[float]:
        tracker = extraction.ExtractionTracker(window=50, min_queries=10, test_every=5)
        for i in range(len(rows)):
            tracker.observe("c", rows[i:i + 1], [i % 2])
        return list(tracker._clients["c"].recent())

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast, slow = _both(monkeypatch, run)
    assert np.isfinite(fast).all() and len(fast) == len(slow) == 28
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_an_unreadable_aimsec_jit_is_a_configuration_error(monkeypatch):
    from aimsec_core import ConfigurationError

    _fresh(monkeypatch)
    monkeypatch.setenv("AIMSEC_JIT", "maybe")
    with pytest.raises(ConfigurationError, match="AIMSEC_JIT"):
        kernels.load()


def test_an_unreadable_aimsec_jit_is_refused_when_the_guard_is_built(monkeypatch):
    """Not on the first watched call, where it would refuse every identified client's
    predict calls instead of the deployment's start."""
    import aimsec_core
    from aimsec_core import ConfigurationError

    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = digits()
    model = sklearn.LogisticRegression(max_iter=20).fit(x[:200], y[:200])
    _fresh(monkeypatch)
    monkeypatch.setenv("AIMSEC_JIT", "maybe")
    with pytest.raises(ConfigurationError, match="AIMSEC_JIT"):
        aimsec_core.guard(model, sinks=[])
    aimsec_core.guard(model, sinks=[], policy=False)  # no monitoring: nothing compiles


def test_the_table_splits_the_same_way_compiled_and_in_numpy(monkeypatch):
    """Growing the index moves every entry to its new bucket in one compiled pass: the
    same table as the numpy form gives."""
    rng = np.random.default_rng(4)
    index = FingerprintIndex(100_000, 30, ways=4, initial=256)
    for k, batch in enumerate(np.sort(rng.integers(1, 2**32, (120, 2, 30), dtype=np.uint32),
                                      axis=2)[:, :, ::-1]):
        index.match_and_add(batch, np.arange(2, dtype=np.uint32) + 2 * k, k, float(k), 1e9)
    assert index._slots == 256 and np.count_nonzero(index.table) > 3000

    def grow() -> FingerprintIndex:
        grown = copy.copy(index)  # the same arrays: growing replaces them, never writes them
        grown._grow()
        return grown

    fast, slow = _both(monkeypatch, grow)
    assert fast._slots == slow._slots == 512
    assert np.array_equal(fast.table, slow.table)
    assert np.count_nonzero(fast.table) == np.count_nonzero(index.table)


@pytest.mark.parametrize("hashes", [4, 30])  # candidates counted in Python, with numpy
@pytest.mark.parametrize("ranked_first_dead", [False, True])
def test_equal_matches_name_the_most_recent_owner_compiled_and_in_numpy(
        monkeypatch, hashes, ranked_first_dead):
    # two clients stored fingerprints that share as many hashes with the query: the most
    # recent decides whether the near-duplicate is the asking client's own (it counts
    # towards a lockout only then), compiled and in numpy alike; also when the best
    # ranked candidates are dead (here: the query's own content) and the ranking goes on
    row = np.arange(hashes, 0, -1, dtype=np.uint32)[None] * 7919
    fewer = row.copy()
    fewer[0, -1] = 0  # shares all but one hash
    stored = fewer if ranked_first_dead else row

    def run() -> list:  # type: ignore[no-untyped-def]
        index = FingerprintIndex(64, hashes, initial=64)
        index.match_and_add(stored, np.array([1], np.uint32), 1, 0.0, 60.0)
        index.match_and_add(stored, np.array([2], np.uint32), 2, 1.0, 60.0)
        if ranked_first_dead:
            for _ in range(4):
                index.match_and_add(row, np.array([9], np.uint32), 3, 2.0, 60.0)
        return index.match_and_add(row, np.array([9], np.uint32), 2, 3.0, 60.0)

    fast, slow = _both(monkeypatch, run)
    shared = hashes - 1 if ranked_first_dead else hashes
    assert fast == slow == [(shared, hashes, True)]


def test_hashes_sharing_a_bucket_are_stored_alike_compiled_and_in_numpy(monkeypatch):
    # more of one row's hashes in a bucket than it has ways: each in turn takes the
    # oldest entry left (past the ways, the row's own), compiled and in numpy alike, so
    # the same later queries match
    def run():  # type: ignore[no-untyped-def]
        index = FingerprintIndex(16, 3, ways=2, initial=16)
        step = index._mask + 1
        row = np.array([[3 * step + 5, 2 * step + 5, step + 5]], np.uint32)  # one bucket
        index.match_and_add(row, np.array([1], np.uint32), 1, 0.0, 60.0)
        table = index.table.copy()
        return table, index.match_and_add(row[:, 2:], np.array([2], np.uint32), 2, 1.0, 60.0)

    (fast_table, fast), (slow_table, slow) = _both(monkeypatch, run)
    np.testing.assert_array_equal(fast_table, slow_table)
    assert fast == slow == [(1, 1, False)]


@st.composite
def _index_calls(draw):  # type: ignore[no-untyped-def]
    """Calls of a few rows of up to ``hashes`` hashes drawn from a small alphabet (so
    stored fingerprints share hashes and buckets), by four clients, as time goes on."""
    hashes = draw(st.integers(1, 8))
    alphabet = draw(st.integers(hashes, 4 * hashes + 40))
    calls, now = [], 0.0
    for _ in range(draw(st.integers(1, 30))):
        rows = np.zeros((draw(st.integers(1, 4)), hashes), np.uint32)
        for row in rows:
            values = sorted(set(draw(st.lists(st.integers(1, alphabet), max_size=hashes))),
                            reverse=True)
            row[:len(values)] = values
        contents = np.array(draw(st.lists(st.integers(0, 3), min_size=len(rows),
                                          max_size=len(rows))), np.uint32)
        now += draw(st.sampled_from([0.0, 1.0, 5.0]))
        calls.append((rows, contents, draw(st.integers(0, 3)), now))
    return hashes, calls


@settings(max_examples=120, deadline=None)
@given(calls=_index_calls(), capacity=st.integers(1, 40), initial=st.integers(1, 16),
       ways=st.sampled_from([1, 2, 8]), serials=st.sampled_from([7, 64, 1 << 32]),
       ttl=st.sampled_from([2.0, 1e9]))
def test_the_index_gives_the_same_matches_and_state_compiled_and_in_numpy(
        calls, capacity, initial, ways, serials, ttl):
    # growth, the ring wrapping past capacity, expiry, the restart past the last serial
    # (made small here), crowded buckets and equally good matches: the same matches,
    # owners included, and the same stored state after every call
    from aimsec_core.monitoring import index as index_module

    hashes, calls = calls
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(index_module, "_SERIALS", serials)
        fast = FingerprintIndex(capacity, hashes, ways=ways, initial=initial)
        slow = FingerprintIndex(capacity, hashes, ways=ways, initial=initial)
        for rows, contents, client, now in calls:
            found = fast.match_and_add(rows, contents, client, now, ttl)
            with monkeypatch.context() as m:
                _numpy(m)
                assert slow.match_and_add(rows, contents, client, now, ttl) == found
            if (fast._slots, fast._serial) != (slow._slots, slow._serial):
                # the compiled pass makes room before a row without hashes too, the numpy
                # form only before the next row it stores: nothing stored in between
                assert not rows.any()
                continue
            for name in ("fp_serial", "fp_time", "fp_client", "fp_content", "fp_hashes",
                         "table"):
                np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))


_labels = st.one_of(st.integers(0, 30), st.sampled_from([np.int64(3), 3.0, True, "a", "b"]),
                    st.just(float("nan")))  # every NaN object is a class of its own


@settings(max_examples=80, deadline=None)
@given(batches=st.lists(st.tuples(st.integers(1, 20), st.integers(0, 2**31)), min_size=1,
                        max_size=12),
       widths=st.lists(st.sampled_from([1, 3, 130]), min_size=1, max_size=2),
       labels=st.lists(_labels, min_size=240, max_size=240),
       window=st.sampled_from([3, 20]), min_queries=st.sampled_from([3, 10, 50]),
       set_size=st.sampled_from([1, 4]))
def test_prada_streams_give_the_same_state_compiled_and_in_numpy(
        batches, widths, labels, window, min_queries, set_size):
    # batches of 1 to 20 rows over more classes than a client keeps (evictions inside a
    # batch, a class back after its eviction), labels of several types, hostile values,
    # exact repeats, the width changing, min_queries past the window
    def run():  # type: ignore[no-untyped-def]
        tracker = extraction.ExtractionTracker(window=window, min_queries=min_queries,
                                               test_every=2, set_size=set_size)
        tracker._seed = 1  # the same positions of wide rows either way
        flags, used = [], 0
        for k, (n, seed) in enumerate(batches):
            rng = np.random.default_rng(seed)
            rows = rng.normal(0, 1, (n, widths[k % len(widths)])) * rng.choice([1e-2, 1, 1e20])
            rows[rng.random(rows.shape) < 0.05] = rng.choice([np.nan, np.inf, -1e39])
            rows[rng.random(n) < 0.2] = rows[0]
            flags.append(tracker.observe("c", rows, labels[used:used + n]))
            used += n
        return tracker._clients["c"], flags

    with pytest.MonkeyPatch.context() as monkeypatch:
        (fast, fast_flags), (slow, slow_flags) = _both(monkeypatch, run)
    _assert_same_prada_state(fast, slow, fast_flags, slow_flags)
    assert (fast.last_w is None) == (slow.last_w is None)
    if fast.last_w is not None:
        assert fast.last_w == pytest.approx(slow.last_w, rel=1e-7, abs=1e-9)
