"""Request monitoring: what it costs and how fast it refuses attacks, in one run.

    python tests/benchmarks/bench_monitoring.py [--stored 1000000] [--repeats 2000]
                                                [--no-redis] [--no-attacks]
                                                [--only {index,checks,call,attacks}]
                                                [--clock {wall,cpu}]

Prints side by side:

1. the near-duplicate check (fingerprint + index match-and-store of one digits row) with
   10^3 and 10^6 fingerprints stored (target ratio <= 1.3), and the bytes per stored
   fingerprint (target <= 2 KB) in memory and, with a local ``redis-server``, in Redis;
   Then the index growing from 1,024 to 100,000 slots: the longest single check with
   the next size's memory prepared in the background against allocated by the call;
2. query checks per second (one identified client, digits rows) on memory and on Redis;
3. a guarded call on the scikit-learn digits model, one row, identified client, benign
   digits: monitoring on (default policy, memory store) against the same guard with
   ``policy=False``: the microseconds monitoring adds (target <= 30 us); then the same
   for an anonymous caller and for a client whose calls are near-duplicates;
4. IBM ART HopSkipJump, Boundary and Square against the guarded scikit-learn, ONNX and
   torch digits models: queries until the first refusal, one client id and 10 rotating.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import aimsec_core  # noqa: E402
from aimsec_core import digits  # noqa: E402
from aimsec_core.monitoring.fingerprint import FingerprintSettings, Fingerprinter  # noqa: E402
from aimsec_core.monitoring.index import FingerprintIndex  # noqa: E402
from aimsec_core.monitoring.policy import Policy  # noqa: E402

SECRET = b"benchmark secret"
#: what per-call times are measured with: wall time, or (``--clock cpu``) this thread's
#: CPU time, which other processes on a shared machine disturb less
CLOCK: list[Callable[[], float]] = [time.perf_counter]


def per_call(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds per call over 5 rounds of ``repeats // 5`` calls."""
    for _ in range(20):
        fn()
    rounds = []
    for _ in range(5):
        start = CLOCK[0]()
        for _ in range(max(1, repeats // 5)):
            fn()
        rounds.append((CLOCK[0]() - start) / max(1, repeats // 5))
    return statistics.median(rounds)


class Paired(NamedTuple):
    """Seconds per call of two callables timed in alternating rounds."""

    off: float  #: median over rounds of the first
    on: float  #: median over rounds of the second
    added: float  #: median over rounds of (second - first): what the second adds
    low: float  #: lower quartile of the per-round differences
    high: float  #: upper quartile of the per-round differences


def paired(off: Callable[[], object], on: Callable[[], object], calls: int,
           rounds: int = 15) -> Paired:
    """``off`` and ``on`` timed in ``rounds`` alternating rounds of ``calls // rounds``
    calls each, so load on the machine hits both alike; what ``on`` adds is the median of
    the per-round differences (a paired estimate: a round disturbed by other work moves
    both of its halves), given with its quartiles."""
    for fn in (off, on):
        for _ in range(20):
            fn()
    per_round = max(1, calls // rounds)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for fn, spent in zip((off, on), times):
            start = CLOCK[0]()
            for _ in range(per_round):
                fn()
            spent.append((CLOCK[0]() - start) / per_round)
    added = [b - a for a, b in zip(*times)]
    low, _, high = statistics.quantiles(added, n=4)
    return Paired(statistics.median(times[0]), statistics.median(times[1]),
                  statistics.median(added), low, high)


def fingerprinter() -> Fingerprinter:
    p = Policy()
    return Fingerprinter(FingerprintSettings(p.near_duplicate_window, p.near_duplicate_step,
                                             p.near_duplicate_unit, p.near_duplicate_hashes),
                         SECRET)


def filled_index(stored: int) -> FingerprintIndex:
    """An index holding ``stored`` fingerprints of random 64-value rows."""
    rng = np.random.default_rng(0)
    index = FingerprintIndex(stored, 50, initial=stored)
    f = fingerprinter()
    for start in range(0, stored, 4096):
        n = min(4096, stored - start)
        rows = rng.random((n, 64))
        index.match_and_add(f(rows), rng.integers(1, 2**32, n, dtype=np.uint32), 7, 0.0, 1e9)
    return index


def bench_index(stored: int, repeats: int) -> None:
    x = digits.load().x_test
    f = fingerprinter()
    indexes = {}
    for count in (1000, stored):
        start = time.perf_counter()
        indexes[count] = filled_index(count)
        print(f"filled {count:>9,} fingerprints in {time.perf_counter() - start:.1f} s; "
              f"{indexes[count].nbytes / count:6.0f} bytes per fingerprint")
    times: dict[int, list[float]] = {count: [] for count in indexes}
    i = [0]
    for _ in range(5):  # alternate rounds, so load on the machine hits both alike
        for count, index in indexes.items():
            def check(index: FingerprintIndex = index) -> None:
                row = x[i[0] % len(x)][None]
                i[0] += 1
                index.match_and_add(f(row), np.array([i[0]], np.uint32), 9, 1.0, 1e9)

            times[count].append(per_call(check, repeats // 5))
    small, large = (statistics.median(times[c]) for c in (1000, stored))
    print(f"near-duplicate check (fingerprint + match + store one digits row): "
          f"{small * 1e6:.1f} us with 1,000 stored, {large * 1e6:.1f} us with {stored:,}; "
          f"ratio {large / small:.2f} (target <= 1.3)")


def bench_checks(url: str | None, repeats: int) -> None:
    from aimsec_core.monitoring import build_monitor
    from aimsec_core.monitoring.memory import MemoryStore

    x = digits.load().x_test
    for label, store in (("memory", MemoryStore(secret=SECRET)), ("redis", url)):
        if store is None:
            continue
        monitor = build_monitor("bench", {"max_requests_per_minute": 10**6,
                                          "store_timeout": 1.0}, store, time.time)
        i = [0]
        outages = [0]

        def one() -> None:
            row = x[i[0] % len(x)][None] + i[0] * 1e-3
            i[0] += 1
            visit = monitor.admit("client-7")
            monitor.check(visit, [row], 1, f"{i[0]:032x}")
            outages[0] += visit.outage

        seconds = per_call(one, repeats)
        print(f"admission + query checks on {label:<6}: {1 / seconds:9.0f} per second "
              f"({seconds * 1e6:.0f} us each; {outages[0]} of {i[0]} fell back to local "
              "state)")


def benign_digits() -> np.ndarray:
    """Benign traffic of distinct natural inputs: the 1,797 digits of ``load_digits`` and
    their one-pixel shifts in four directions (8,985 rows), shuffled. Sent once each by
    one client they raise near-duplicate findings on under 0.5% of calls and no extraction
    suspicion, so every check runs and almost no call pays for a finding."""
    from sklearn.datasets import load_digits

    images = load_digits().data.reshape(-1, 8, 8)
    shifted = [images]
    for axis in (1, 2):
        for step in (1, -1):
            moved = np.roll(images, step, axis=axis)
            edge = 0 if step == 1 else -1
            if axis == 1:
                moved[:, edge, :] = 0
            else:
                moved[:, :, edge] = 0
            shifted.append(moved)
    rows = np.concatenate(shifted).reshape(-1, 64)
    return rows[np.random.default_rng(0).permutation(len(rows))]


def bench_guarded_call(repeats: int) -> None:
    """A guarded call on the digits scikit-learn MLP, one row: monitoring off
    (``policy=False``) against on (default policy, memory store) for the same identified
    client, in one run, timed in alternating rounds; a guard per measurement, so each sees
    every row once (its fingerprint index grows as it would in service)."""
    data = digits.load()
    model = digits.sklearn_mlp(data)
    benign = benign_digits()
    repeating = data.x_test  # 360 rows sent again and again, slightly moved: near-duplicates
    with tempfile.TemporaryDirectory() as logs:
        audit = aimsec_core.AuditLog(logs)

        def caller(policy: object, rows: np.ndarray, step: float = 0.0,
                   client: str | None = "x") -> Callable[[], object]:
            # monitor mode: a flagged call still runs every check and the model, so the
            # full cost is measured
            guarded = aimsec_core.guard(model, name="bench", sinks=[audit], policy=policy,
                                        mode="monitor")
            i = [0]

            def call() -> object:
                i[0] += 1
                row = rows[i[0] % len(rows)][None]
                if step:
                    row = row + (i[0] // len(rows)) * step
                if client is None:
                    return guarded.predict(row)
                with aimsec_core.client(client):
                    return guarded.predict(row)

            return call

        calls = len(benign) - 40  # every row once per measurement (20 warm-up calls each)
        plain = per_call(lambda: model.predict(benign[:1]), min(repeats, calls))
        identified = paired(caller(False, benign), caller(None, benign), calls)
        anonymous = paired(caller(False, benign, client=None),
                           caller(None, benign, client=None), calls)
        flagged = paired(caller(False, repeating, 1e-4), caller(None, repeating, 1e-4), calls)

    def added(p: Paired) -> str:
        return (f"{p.off * 1e6:.0f} us -> {p.on * 1e6:.0f} us ({p.added * 1e6:+.1f} us; "
                f"quartiles {p.low * 1e6:+.1f} to {p.high * 1e6:+.1f})")

    print(f"sklearn digits MLP, one row (plain model {plain * 1e6:.0f} us), identified client "
          f"'x', benign digits, {calls} calls in 15 paired rounds: guarded with monitoring "
          f"off (policy=False) {identified.off * 1e6:.0f} us | on (default policy, memory "
          f"store) {identified.on * 1e6:.0f} us: monitoring adds "
          f"{identified.added * 1e6:+.1f} us per call (median of the rounds' differences; "
          f"quartiles {identified.low * 1e6:+.1f} to {identified.high * 1e6:+.1f}; "
          "target <= 30)")
    print(f"  same, anonymous caller (query checks off by default): {added(anonymous)}")
    print("  same, identified client repeating 360 rows (near-duplicate findings on almost "
          f"every call): {added(flagged)}")


def redis_server() -> tuple[subprocess.Popen[bytes], str] | None:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        return None
    import socket

    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return process, f"redis://127.0.0.1:{port}/0"
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    process.terminate()
    return None


def redis_bytes_per_fingerprint(url: str, capacity: int = 20_000) -> None:
    """Redis memory of the index filled past its cap (``capacity`` fingerprints live)."""
    import redis

    from aimsec_core.monitoring import build_monitor

    client = redis.Redis.from_url(url)
    client.flushall()
    before = client.info("memory")["used_memory"]
    monitor = build_monitor("bytes", {"near_duplicate_max_fingerprints": capacity,
                                      "store_timeout": 5.0}, url, time.time)
    rng = np.random.default_rng(0)
    outages = 0
    for _ in range(0, 2 * capacity, 16):
        visit = monitor.admit("c")
        monitor.check(visit, [rng.random((16, 64))], 16, "")
        outages += visit.outage
    after = client.info("memory")["used_memory"]
    print(f"redis: {(after - before) / capacity:.0f} bytes per stored fingerprint "
          f"({2 * capacity:,} stored into an index capped at {capacity:,}; "
          f"{outages} outages)")


def bench_attacks() -> None:
    from tests.monitoring.attacks import ATTACKS, queries_until_refusal

    data = digits.load()
    sk = digits.sklearn_mlp(data)
    models: dict[str, tuple[object, Callable[[object, np.ndarray], np.ndarray]]] = {
        "sklearn": (sk, lambda g, x: g.predict_proba(x))}
    try:
        models["onnx"] = (digits.onnx_session(data, sklearn_model=sk),
                          lambda g, x: g.run(None, {g.get_inputs()[0].name: x})[1])
    except ImportError:
        pass
    try:
        import torch

        def torch_probabilities(g: object, x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                logits = g(torch.from_numpy(np.ascontiguousarray(x)).reshape(-1, 1, 8, 8))
            return torch.softmax(logits, dim=1).numpy()

        models["torch"] = (digits.torch_cnn(data), torch_probabilities)
    except ImportError:
        pass
    print(f"\n{'model':<9}{'attack':<13}{'queries until refusal: one id':>32}"
          f"{'10 rotating ids':>20}")
    for name, (model, probabilities) in models.items():
        for attack in ATTACKS:
            cells = []
            for ids in (["mallory"], [f"mallory-{i}" for i in range(10)]):
                runs = []
                for seed in range(5):
                    guarded = aimsec_core.guard(model, name=f"art-{name}", sinks=[],
                                                constraints=digits.constraints(name))
                    runs.append(queries_until_refusal(
                        lambda x, g=guarded: probabilities(g, x), attack,
                        data.x_test[seed:seed + 1], ids, budget=1000, seed=seed)[0])
                cells.append(f"{min(runs)}-{max(runs)} (median {statistics.median(runs):g})")
            print(f"{name:<9}{attack:<13}{cells[0]:>32}{cells[1]:>20}")


def _growth_times(capacity: int, prepared: bool, pace: float = 100e-6
                  ) -> tuple[float, float, float]:
    """Median, mean and longest one-row check (seconds, wall) while an index grows from
    1,024 slots to ``capacity``, one check every ``pace`` seconds (the rest of a guarded
    call: the model, the guard; spent busy, holding the GIL); ``prepared``: as shipped,
    else growth allocates."""
    from aimsec_core.monitoring import kernels
    from aimsec_core.monitoring.fingerprint import Query
    from aimsec_core.monitoring.index import _SERIALS

    kernels.load(wait=True)
    rows = np.random.default_rng(3).random((capacity, 64))
    f = fingerprinter()
    index = FingerprintIndex(capacity, 50)
    if not prepared:
        index._prepare = lambda: setattr(index, "_prepare_at", _SERIALS)  # type: ignore
    times = np.empty(capacity)
    for i in range(capacity):
        start = time.perf_counter()
        index.fingerprint_match_and_add(Query(f, rows[i:i + 1]), 7, 1.0, 1e9)
        times[i] = time.perf_counter() - start
        while time.perf_counter() < start + pace:
            pass
    return float(np.median(times)), float(times.mean()), float(times.max())


def bench_growth(capacity: int = 100_000) -> None:
    """One-row checks on an index growing from 1,024 slots to ``capacity`` (as a guarded
    model's does in its first hours), one every 100 us, each way in a fresh process (memory a process has
    freed is mapped already, and would flatter the second): the next size's memory
    faulted in on a background thread (as shipped) against growth allocating it."""
    import multiprocessing

    longest = []
    for label, prepared in (("prepared in the background", True),
                            ("allocated by the growing call", False)):
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            median, mean, worst = pool.apply(_growth_times, (capacity, prepared))
        longest.append(worst)
        print(f"growing to {capacity:,} fingerprints, memory {label}: median "
              f"{median * 1e6:.1f} us, mean {mean * 1e6:.1f} us, longest single check "
              f"{worst * 1e3:.1f} ms")
    print(f"  longest check while growing: {longest[0] / longest[1]:.2f} of the growing "
          "call allocating itself")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stored", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--no-attacks", action="store_true")
    parser.add_argument("--only", choices=("index", "checks", "call", "attacks"),
                        help="run one part (default: all of them)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time per call as wall time (default) or as this thread's CPU "
                             "time (steadier on a machine other processes load)")
    args = parser.parse_args()
    if args.clock == "cpu":
        CLOCK[0] = time.thread_time
    parts = {args.only} if args.only else {"index", "checks", "call", "attacks"}
    if args.no_attacks:
        parts.discard("attacks")
    from aimsec_core.monitoring import kernels

    compiled = kernels.load(wait=True) is not None  # not the numpy forms of a first call
    print("monitoring kernels: " + ("compiled (numba)" if compiled else
                                    "numpy forms (numba not installed, or AIMSEC_JIT=0)"))
    print("times per call: " + ("this thread's CPU time" if args.clock == "cpu"
                                else "wall time"))
    if "index" in parts:
        bench_index(args.stored, args.repeats)
        bench_growth()
    if "checks" in parts:
        server = None if args.no_redis else redis_server()
        try:
            if server is not None:
                redis_bytes_per_fingerprint(server[1])
            bench_checks(server[1] if server else None, args.repeats)
        finally:
            if server is not None:
                server[0].terminate()
    if "call" in parts:
        bench_guarded_call(args.repeats)
    if "attacks" in parts:
        bench_attacks()


if __name__ == "__main__":
    main()
