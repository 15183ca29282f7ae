"""Exact repeats, near-duplicate fingerprints and the fingerprint index."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aimsec_core
from aimsec_core import QueryAttackError
from aimsec_core.adapter import HostArrays
from aimsec_core.guard import Guard
from aimsec_core.monitoring.fingerprint import FingerprintSettings, Fingerprinter
from aimsec_core.monitoring.index import FingerprintIndex
from aimsec_core.monitoring.memory import MemoryStore
from aimsec_core.monitoring.policy import Policy
from aimsec_core.registry import adapter_for
from tests.cases import digits

DEFAULT = Policy()
SECRET = b"fixed secret for reproducible fingerprints"


def _guard(model, clock, sink, mode="enforce", **policy):
    adapter = adapter_for(model)
    return adapter.wrap(Guard(model, adapter, name="digits", mode=mode, sinks=[sink],
                              clock=clock, policy=policy, store=MemoryStore(secret=SECRET)))


def _fingerprinter(secret: bytes = SECRET) -> Fingerprinter:
    p = DEFAULT
    return Fingerprinter(FingerprintSettings(p.near_duplicate_window, p.near_duplicate_step,
                                             p.near_duplicate_unit, p.near_duplicate_hashes),
                         secret)


def _shared(a: np.ndarray, b: np.ndarray) -> float:
    f = _fingerprinter()
    fa, fb = f(a[None])[0], f(b[None])[0]
    fa = fa[fa != 0]
    return len(np.intersect1d(fa, fb[fb != 0])) / len(fa)


# -- exact repeats ------------------------------------------------------------------------

def test_repeats_are_judged_per_client(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink, near_duplicate=False)
    x = digits()[0][:1]
    with aimsec_core.client("203.0.113.5"):
        for _ in range(5):
            guarded.predict(x)
        with pytest.raises(QueryAttackError) as caught:
            guarded.predict(x)
        guarded.predict(digits()[0][1:2])  # its other inputs are fine
    verdict = caught.value.verdict
    assert verdict.checks == ("repeat",) and verdict.client == "203.0.113.5"
    assert "6 times" in str(caught.value)
    with aimsec_core.client("198.51.100.1"):  # nobody else is refused for it
        guarded.predict(x)
    clock.advance(3601)  # the repeat window has passed
    with aimsec_core.client("203.0.113.5"):
        guarded.predict(x)


def test_exact_repeats_are_not_near_duplicates(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink)
    x = digits()[0][7:8]
    with aimsec_core.client("a"):
        for _ in range(5):
            guarded.predict(x)
    with aimsec_core.client("b"):  # a popular input asked by many clients
        guarded.predict(x)
    assert sink.outcomes == ["allowed"] * 6


def test_a_sample_alone_and_inside_another_batch_is_the_same_content(digits_model, clock,
                                                                     sink):
    guarded = _guard(digits_model, clock, sink)
    x = digits()[0][10:12]
    with aimsec_core.client("a"):
        guarded.predict(x)
    with aimsec_core.client("b"):  # the first sample of a's batch, sent alone
        guarded.predict(x[:1])
    with aimsec_core.client("c"):  # and a batch ending with it
        guarded.predict(np.concatenate([digits()[0][20:21], x[:1]]))
    assert sink.outcomes == ["allowed"] * 3


# -- near-duplicates ----------------------------------------------------------------------

def test_near_duplicates_are_refused_for_the_same_client_and_across_clients(
        digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink)
    x = digits()[0][10:11]
    step = x.copy()
    step[0, 27:30] = np.clip(step[0, 27:30] + 0.25, 0, 1)  # one small square changed
    with aimsec_core.client("attacker-1"):
        guarded.predict(x)
    with aimsec_core.client("attacker-2"), pytest.raises(QueryAttackError) as caught:
        guarded.predict(step)
    finding = caught.value.verdict.findings[0]
    assert finding.check == "near_duplicate" and finding.severity == "high"
    assert "another client" in finding.reason and finding.samples == (0,)
    analysis = guarded.request_analysis()
    assert analysis["near_duplicate_matches"][0]["client"] == "attacker-2"
    assert analysis["near_duplicate_matches"][0]["with"] == "another client"


def test_a_bystander_matching_only_others_queries_is_refused_but_never_locked_out(
        digits_model, clock, sink):
    # an attacker stores one perturbed copy of each popular input; a client then sending
    # the popular inputs themselves matches those copies: refused (Blacklight's rule across
    # accounts), but counting these towards its lockout let the attacker lock it out
    from aimsec_core import ClientBlockedError

    guarded = _guard(digits_model, clock, sink)
    x = digits()[0][:8].astype(np.float64)
    rng = np.random.default_rng(0)
    with aimsec_core.client("mallory"):
        for row in x:
            copy = row.copy()
            copy[rng.integers(64)] += 0.02
            clock.advance(1)
            guarded.predict(copy[None])
    with aimsec_core.client("alice"):
        for row in x:  # more than max_failed_attempts (5) refusals
            clock.advance(1)
            with pytest.raises(QueryAttackError):
                guarded.predict(row[None])
        clock.advance(1)
        guarded.predict(digits()[0][100:101])  # not locked out
    # a client whose near-duplicates match its own queries still collects failed attempts
    seed = digits()[0][200:201].astype(np.float64)
    with aimsec_core.client("prober"):
        guarded.predict(seed)
        with pytest.raises(ClientBlockedError):
            for i in range(8):
                step = seed.copy()
                step[0, i] += 0.02
                clock.advance(1)
                with pytest.raises(QueryAttackError):
                    guarded.predict(step)


def test_near_duplicates_inside_one_batch(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink, mode="monitor")
    x = digits()[0][20:21]
    batch = np.vstack([x, np.clip(x + 0.002, 0, 1), digits()[0][30:31]]).astype(np.float32)
    with aimsec_core.client("c"):
        guarded.predict(batch)
    assert guarded.last_verdict.checks == ("near_duplicate",)
    assert guarded.last_verdict.flags == (False, True, False)


def test_nearly_constant_inputs_from_many_clients_are_not_near_duplicates(digits_model,
                                                                         clock, sink):
    # blank images, an idle sensor's readings: every window hashes alike, so any two of
    # them would share their whole fingerprint; 50 clients each send a slightly different
    # one, and narrow inputs (wine's 13 features: 2 windows) are still judged
    guarded = _guard(digits_model, clock, sink)
    rng = np.random.default_rng(0)
    for i in range(50):
        with aimsec_core.client(f"sensor-{i}"):
            guarded.predict((0.5 + rng.normal(0, 1e-4, (1, 64))).astype(np.float32))
            guarded.predict(np.full((1, 64), rng.integers(0, 3) / 16, np.float32))
    assert sink.outcomes == ["allowed"] * 100
    assert guarded.request_analysis()["flat_samples"] == 100  # seen, not fingerprinted
    # a query with features is judged as before: a digit, then the digit a step away
    x = digits()[0][10:11]
    step = x.copy()
    step[0, 27:30] = np.clip(step[0, 27:30] + 0.25, 0, 1)
    with aimsec_core.client("a"):
        guarded.predict(x)
    with aimsec_core.client("b"), pytest.raises(QueryAttackError):
        guarded.predict(step)


def test_fingerprints_expire_after_their_ttl(digits_model, clock, sink):
    guarded = _guard(digits_model, clock, sink, near_duplicate_ttl=60)
    x = digits()[0][40:41]
    with aimsec_core.client("c"):
        guarded.predict(x)
        clock.advance(61)
        guarded.predict(np.clip(x + 0.01, 0, 1).astype(np.float32))


def test_multi_input_models_fingerprint_the_concatenated_inputs(clock, sink):
    guard = Guard(None, HostArrays(None), name="two-inputs", sinks=[sink], clock=clock,
                  store=MemoryStore(secret=SECRET))
    rng = np.random.default_rng(1)
    image, row = rng.random((1, 64)), rng.random((1, 13)) * 100
    with aimsec_core.client("c"):
        guard.call({"image": image, "row": row}, lambda: None)
        with pytest.raises(QueryAttackError):
            guard.call({"image": image + 0.005, "row": row * 1.001}, lambda: None)
        guard.call({"image": rng.random((1, 64)), "row": rng.random((1, 13)) * 100},
                   lambda: None)


def test_wine_rows_match_their_own_perturbations_not_each_other():
    from sklearn.datasets import load_wine

    rows = load_wine().data
    rng = np.random.default_rng(0)
    f = _fingerprinter()
    fp = f(rows)
    index = FingerprintIndex(1000, DEFAULT.near_duplicate_hashes)
    benign = index.match_and_add(fp, np.arange(len(rows), dtype=np.uint32) + 1, 1, 0.0, 60.0)
    false = sum(m.shared > 0.5 * m.size for m in benign)
    assert false <= 2  # of 178 real wine rows (a couple are near-identical in the data)
    close = rows[:50] * (1 + rng.normal(0, 0.005, (50, 13)))
    hits = sum(_shared(a, b) > 0.5 for a, b in zip(close, rows[:50]))
    assert hits >= 30  # per query; an attack sends many, one match refuses it


# -- fingerprints and the index ----------------------------------------------------------

def test_the_secret_changes_the_fingerprint_and_never_shows():
    x = digits()[0][:3]
    a, b = _fingerprinter(b"a" * 32)(x), _fingerprinter(b"b" * 32)(x)
    assert not np.array_equal(a, b)
    assert "aaaa" not in repr(_fingerprinter(b"a" * 32))
    from aimsec_core.monitoring.memory import MemoryStore

    store = MemoryStore()
    assert store.secret().hex() not in repr(store) and len(store.secret()) == 32


def test_benign_digits_rarely_match_each_other():
    x = digits()[0]
    index = FingerprintIndex(10_000, DEFAULT.near_duplicate_hashes)
    matches = index.match_and_add(_fingerprinter()(x), np.arange(len(x), dtype=np.uint32) + 1,
                                  1, 0.0, 3600.0)
    assert sum(m.shared > 0.5 * m.size for m in matches) <= 2  # of 1,797


def test_index_capacity_replaces_the_oldest():
    rng = np.random.default_rng(0)
    index = FingerprintIndex(64, 8, initial=16)
    first = rng.integers(1, 2**32, (1, 8), dtype=np.uint32)
    index.match_and_add(first, np.array([1], np.uint32), 1, 0.0, 1e9)
    assert index.match_and_add(first, np.array([2], np.uint32), 1, 0.0, 1e9)[0].shared == 8
    others = rng.integers(1, 2**32, (100, 8), dtype=np.uint32)
    index.match_and_add(others, np.arange(100, dtype=np.uint32) + 10, 1, 0.0, 1e9)
    assert len(index) == 64 and index._slots == 64
    assert index.match_and_add(first, np.array([3], np.uint32), 1, 0.0, 1e9)[0].shared == 0


def test_bytes_per_stored_fingerprint_stay_under_2kb():
    index = FingerprintIndex(4096, 50, initial=4096)
    assert index.nbytes / 4096 <= 2048


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1,
                max_size=200))
def test_any_finite_row_fingerprints(values):
    row = np.asarray(values, dtype=np.float64)[None]
    fp = _fingerprinter()(row)
    levels = np.arcsinh(row) / DEFAULT.near_duplicate_step
    flat = np.ptp(levels) < 1.0  # within one quantization step: no fingerprint
    assert fp.dtype == np.uint32 and fp.shape[0] == 1
    assert (fp != 0).sum() == 0 if flat else 1 <= (fp != 0).sum() <= 50


@pytest.mark.parametrize("unit, step", [(1.0, 0.2), (1e-300, 0.2), (1.0, 1e-20),
                                        (1.0, 1e-310)])
def test_extreme_values_and_nan_fingerprint_without_numpy_warnings(unit, step):
    # NaN reaches the monitor where allow_nan lets it through; a huge value over a small
    # unit or step scales past float64 or int64: neither may warn (or raise, under -W
    # error) on a guarded call; a row that is not flat gets a fingerprint of its own
    f = Fingerprinter(FingerprintSettings(12, step, unit, 50), SECRET)
    rows = np.array([[1e308] * 20, [-1e308] * 20, [np.nan] * 20, [5e-324] * 20,
                     [1.0, np.nan] * 10, np.linspace(-1.0, 1.0, 20) * 1e308])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = f(rows)
        alone = [f(row[None])[0] for row in rows]
    assert batch.dtype == np.uint32
    fingerprinted = (batch != 0).any(axis=1)
    assert fingerprinted[[2, 4, 5]].all()  # a NaN or a spread of values: never flat
    if (unit, step) == (1.0, 0.2):  # constant finite rows are flat: no fingerprint
        assert not fingerprinted[[0, 1, 3]].any()
    for row, single in zip(batch, alone):
        assert np.array_equal(row[row != 0], single)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(4, 400), st.sampled_from([4, 12, 40]))
def test_the_best_match_is_the_stored_fingerprint_sharing_most_hashes(seed, alphabet, stored):
    """Against a brute-force scan: alive (within the ttl, other content) and sharing most
    hashes, whether few or many candidates (counted in Python or with numpy)."""
    rng = np.random.default_rng(seed)
    hashes = 8
    index = FingerprintIndex(1000, hashes, ways=64, initial=16)  # no bucket ever overflows
    kept: list[tuple[set[int], int, float]] = []
    for step in range(stored + 20):
        row = np.sort(rng.choice(np.arange(1, alphabet + 1, dtype=np.uint32),
                                 size=min(hashes, alphabet), replace=False))[::-1]
        content, now = int(rng.integers(0, 6)), float(step)
        match = index.match_and_add(row[None], np.array([content], np.uint32), step % 3,
                                    now, 10.0)[0]
        alive = [len(set(row.tolist()) & h) for h, c, t in kept
                 if t >= now - 10.0 and c != content]
        assert match.shared == max(alive, default=0) and match.size == len(row)
        kept.append((set(row.tolist()), content, now))


def test_growing_keeps_every_entry_and_finds_what_it_found():
    rng = np.random.default_rng(1)
    rows = np.sort(rng.integers(1, 3000, (900, 3, 20), dtype=np.uint32), axis=2)[:, :, ::-1]
    grown = FingerprintIndex(100_000, 20, ways=4, initial=16)
    direct = FingerprintIndex(100_000, 20, ways=4, initial=4096)
    for k, batch in enumerate(rows):
        contents = np.arange(3, dtype=np.uint32) + 3 * k
        grown.match_and_add(batch, contents, k, float(k), 1e9)
        direct.match_and_add(batch, contents, k, float(k), 1e9)
    assert grown._slots == 4096 and len(grown) == 2700  # grown 8 times

    def table(index: FingerprintIndex) -> list[set[tuple[int, int]]]:
        return [set(zip(s.tolist(), h.tolist())) for s, h in zip(index.t_serial, index.t_hash)]

    kept, full = table(grown), table(direct)
    assert all(a <= b for a, b in zip(kept, full))  # a subset of the same buckets' entries
    assert sum(map(len, kept)) >= 0.9 * sum(map(len, full))  # only crowded buckets lose
    for name in ("fp_serial", "fp_time", "fp_client", "fp_content", "fp_hashes"):
        assert np.array_equal(getattr(grown, name), getattr(direct, name))
    last = rows[-1]  # the most recent fingerprints are whole in both
    again = grown.match_and_add(last, np.array([9, 9, 9], np.uint32), 0, 901.0, 1e9)
    assert [m.shared for m in again] == [20, 20, 20]


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "not-yet"])
def test_growing_takes_memory_faulted_in_off_the_calling_thread(monkeypatch, prepared):
    """Half full, the index starts writing the next size's memory on a background
    thread (a fresh allocation is mapped page by page as first written: that took longer
    than the growth itself); growth then allocates nothing on the calling thread. A
    preparation still under way when growth comes changes nothing but who allocates."""
    import threading

    from aimsec_core.monitoring import index as index_module

    allocated: list[str] = []
    real = index_module._aligned_zeros

    def recording(words: int) -> np.ndarray:
        allocated.append(threading.current_thread().name)
        return real(words)

    monkeypatch.setattr(index_module, "_aligned_zeros", recording)
    release = threading.Event()
    if not prepared:  # the background thread held up until growth is done
        fault_in = FingerprintIndex._fault_in

        def held(self, slots):
            release.wait(10)
            fault_in(self, slots)

        monkeypatch.setattr(FingerprintIndex, "_fault_in", held)
    rng = np.random.default_rng(2)
    rows = np.sort(rng.integers(1, 3000, (64, 1, 20), dtype=np.uint32), axis=2)[:, :, ::-1]
    index = FingerprintIndex(1000, 20, ways=4, initial=32)
    direct = FingerprintIndex(1000, 20, ways=4, initial=64)
    for k, row in enumerate(rows[:31]):
        index.match_and_add(row, np.array([k], np.uint32), 1, float(k), 1e9)
    assert index._preparing is not None  # started at 16 of 32
    if prepared:
        index._preparing.join(10)
    allocated.clear()
    for k, row in enumerate(rows):
        if k >= 31:
            index.match_and_add(row, np.array([k], np.uint32), 1, float(k), 1e9)
        direct.match_and_add(row, np.array([k], np.uint32), 1, float(k), 1e9)
    assert index._slots == 64
    caller = threading.current_thread().name
    assert (caller in allocated) is not prepared
    release.set()
    for thread in threading.enumerate():
        if thread.name == "aimsec-index-memory":
            thread.join(10)
    # a late preparation for the size already reached is dropped; the next size's kept
    assert set(index._spares) <= {128}
    for name in ("fp_serial", "fp_time", "fp_client", "fp_content", "fp_hashes"):
        assert np.array_equal(getattr(index, name), getattr(direct, name))
    again = index.match_and_add(rows[-1], np.array([99], np.uint32), 1, 99.0, 1e9)
    assert [m.shared for m in again] == [20]


def _half_fill(index: FingerprintIndex, rows: int, seed: int = 3) -> np.ndarray:
    """Store ``rows`` random one-row batches of 20 hashes; the batches, in order."""
    rng = np.random.default_rng(seed)
    batches = np.sort(rng.integers(1, 3000, (rows, 1, 20), dtype=np.uint32), axis=2)[:, :, ::-1]
    for k, row in enumerate(batches):
        index.match_and_add(row, np.array([k], np.uint32), 1, float(k), 1e9)
    return batches


def test_no_thread_to_be_had_leaves_the_check_to_grow_as_before(monkeypatch):
    """Starting the memory thread can fail (a container's limit on threads, an
    interpreter shutting down): the check that crossed half full raised RuntimeError
    ('can't start new thread') out of the guarded call; now the growth allocates."""
    import threading

    def refuse(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    index = FingerprintIndex(1000, 20, ways=4, initial=32)
    direct = FingerprintIndex(1000, 20, ways=4, initial=64)
    rows = _half_fill(index, 40)
    _half_fill(direct, 40)
    assert index._slots == 64 and index._preparing is None and not index._spares
    for name in ("fp_serial", "fp_time", "fp_client", "fp_content", "fp_hashes"):
        assert np.array_equal(getattr(index, name), getattr(direct, name))
    again = index.match_and_add(rows[-1], np.array([99], np.uint32), 1, 99.0, 1e9)
    assert [m.shared for m in again] == [20]


def test_the_memory_thread_never_waits_for_the_index_lock():
    """The thread took the index's lock to hand its memory over: a process forked
    while it held it (a server preloading the guarded model, then forking workers) kept
    the lock held for ever in the child, every check there waiting on it. It hands over
    without the lock now: here it ends while the lock is held."""
    import threading

    index = FingerprintIndex(1000, 20, ways=4, initial=32)
    with index._lock:
        thread = threading.Thread(target=index._fault_in, args=(64,))
        thread.start()
        thread.join(20)
        ended = not thread.is_alive()
    thread.join()
    assert ended and set(index._spares) == {64}
    _half_fill(index, 40)
    assert index._slots == 64 and 64 not in index._spares  # taken by the growth


def test_copies_of_an_index_never_grow_into_the_same_memory():
    """A shallow copy shares the prepared memory with its original: both grew into the
    one spare, two indexes writing one table (the compiled-against-numpy table test
    compared an array with itself). The spare goes to one of them only."""
    import copy

    index = FingerprintIndex(1000, 20, ways=4, initial=32)
    _half_fill(index, 20)
    index._preparing.join(60)  # the next size's memory ready
    first, second = copy.copy(index), copy.copy(index)
    first._grow()
    second._grow()
    assert first._slots == second._slots == 64
    assert not np.shares_memory(first._packed, second._packed)


def test_the_index_starts_over_when_serials_no_longer_fit(monkeypatch):
    """Serials share a 64-bit table entry with the hash; past 2^32 stored fingerprints
    the index empties itself once and goes on matching what comes after."""
    from aimsec_core.monitoring import index as index_module

    monkeypatch.setattr(index_module, "_SERIALS", 40)
    rng = np.random.default_rng(3)
    index = FingerprintIndex(16, 8, initial=16)
    rows = np.sort(rng.integers(1, 2**32, (45, 8), dtype=np.uint32), axis=1)[:, ::-1]
    for k, row in enumerate(rows[:40]):
        index.match_and_add(row[None], np.array([k], np.uint32), 1, float(k), 1e9)
    assert index.match_and_add(rows[39][None], np.array([99], np.uint32), 1, 40.0,
                               1e9)[0].shared == 0  # the 41st: history forgotten
    assert len(index) == 1
    again = index.match_and_add(rows[39][None], np.array([98], np.uint32), 2, 41.0, 1e9)[0]
    assert again.shared == 8 and not again.same_client


def test_the_table_views_show_what_was_stored():
    index = FingerprintIndex(64, 8, initial=16)
    row = np.arange(8, 0, -1, dtype=np.uint32) * 977
    index.match_and_add(row[None], np.array([1], np.uint32), 1, 0.0, 1e9)
    stored = index.t_hash != 0
    assert sorted(index.t_hash[stored].tolist()) == sorted(row.tolist())
    assert set(index.t_serial[stored].tolist()) == {0}
    assert (index.t_serial[~stored] == -1).all()


def test_wide_inputs_hash_their_windows_alike_without_a_gather_table(monkeypatch):
    """Past _GATHERED values the windows are summed shift by shift, not gathered (w times
    the input's memory, cached per width): the same fingerprints, and no gather table
    cached (the salt and content coefficients are, for at most four wide widths)."""
    from aimsec_core.monitoring import fingerprint as fingerprint_module

    rows = np.random.default_rng(5).normal(size=(3, 300))
    gathered = _fingerprinter()(rows)
    monkeypatch.setattr(fingerprint_module, "_GATHERED", 100)
    wide = _fingerprinter()
    np.testing.assert_array_equal(wide(rows), gathered)
    assert [layout.gather for layout in wide._salts.values()] == [None]
    for width in range(301, 310):
        wide(np.random.default_rng(width).normal(size=(1, width)))
    assert len(wide._salts) == 4
    monkeypatch.setattr(fingerprint_module, "_GATHERED", 4096)
    monkeypatch.setattr(fingerprint_module, "_GATHERED_VALUES", 500)  # a large batch
    np.testing.assert_array_equal(_fingerprinter()(rows), gathered)


def test_first_calls_at_once_share_one_fingerprint_index():
    import threading

    store = MemoryStore(secret=SECRET)
    barrier = threading.Barrier(8)
    seen = []

    def first_call() -> None:
        barrier.wait()
        seen.append(store.index("digits", DEFAULT))

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(index) for index in seen}) == 1
