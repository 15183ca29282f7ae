"""Guard overhead, measured against the plain model in the same run.

    python tests/benchmarks/bench_overhead.py [--repeats 300]

Prints, per installed framework, guarded/plain time at batch 1 and 64 and the fixed cost
per call (guarded minus plain at batch 1), with the audit log writing to a temp folder;
then validation of a 10^7-element float32 array against one ``x.max()`` pass.
Targets (issue "Guard any model in one line"): ratio <= 1.10 at batch 64, fixed cost
<= 50 us, validation <= 2.5x one max pass.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def median_time(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(max(5, repeats // 10)):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def interleaved(plain: Callable[[], object], guarded: Callable[[], object],
                repeats: int, rounds: int = 5) -> tuple[float, float]:
    """Medians of alternating rounds, so drift in machine load hits both sides alike."""
    p, g = [], []
    for _ in range(rounds):
        p.append(median_time(plain, repeats // rounds))
        g.append(median_time(guarded, repeats // rounds))
    return statistics.median(p), statistics.median(g)


def bench_adapters(repeats: int) -> None:
    import aimsec_core
    from aimsec_core import digits

    data = digits.load()
    print(f"{'framework':<10}{'batch':>6}{'plain us':>12}{'guarded us':>12}{'ratio':>8}"
          f"{'fixed us':>10}")
    with tempfile.TemporaryDirectory() as logs:
        audit = aimsec_core.AuditLog(logs)
        for framework in digits.available():
            model = digits.BUILDERS[framework](data)
            guarded = aimsec_core.guard(model, name=f"bench-{framework}", sinks=[audit],
                                        constraints=digits.constraints(framework))
            call = digits.caller(framework)
            fixed = None
            for batch in (1, 64):
                x = digits.as_model_input(framework, data.x_test[:batch])
                reps = repeats // 4 if framework == "keras" else repeats
                plain_s, guarded_s = interleaved(lambda: call(model, x),
                                                 lambda: call(guarded, x), reps)
                if batch == 1:
                    fixed = (guarded_s - plain_s) * 1e6
                print(f"{framework:<10}{batch:>6}{plain_s * 1e6:>12.1f}{guarded_s * 1e6:>12.1f}"
                      f"{guarded_s / plain_s:>8.3f}"
                      f"{fixed if batch == 1 else float('nan'):>10.1f}")


def bench_validation(repeats: int) -> None:
    from aimsec_core import Constraints
    from aimsec_core.adapter import HostArrays
    from aimsec_core.validation import validate

    x = np.random.default_rng(0).random((1, 10_000_000), dtype=np.float32)
    constraints = Constraints(min_value=0.0, max_value=1.0, max_size=10**8)
    adapter = HostArrays(None)
    one_max = median_time(lambda: x.max(), repeats // 10)
    checked = median_time(lambda: validate({"x": x}, adapter, {"x": None}, constraints),
                          repeats // 10)
    print(f"\nvalidation of 10^7 float32 (finite + range): {checked * 1e3:.2f} ms; "
          f"one x.max(): {one_max * 1e3:.2f} ms; ratio {checked / one_max:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=400)
    args = parser.parse_args()
    bench_adapters(args.repeats)
    bench_validation(args.repeats)
