"""The torch adapter on a GPU: inputs are screened on the device, and what that costs.

    python tests/benchmarks/bench_cuda.py [--runs 500] [--batch 64]

(a) Screens a CUDA batch through the guard (every validation check on, the audit log
    writing to a temp folder) under ``torch.profiler`` (CPU + CUDA activities) and reads
    every device->host memcpy from the trace: exactly one may be as large as the input (its
    bytes, copied once for the SHA-256 content hash); every other is a few numbers per
    sample. A control run (``x.cpu()``) proves the profiler sees such copies at all. Checks
    that the input hashes the same on the device and on the CPU.
(b) Prints the guarded/plain time of a small CNN at the given batch size: warm-up,
    ``torch.cuda.synchronize()`` around each call, median of many interleaved runs.
(c) Prints the content hash's own cost on the device (copy to the host + SHA-256) against
    the plain forward pass, at the given batch size and at 64x it.

Without CUDA it prints "skipped: no CUDA device" and exits 0. ``--device cpu`` runs the
same code on the CPU (a smoke test of the script; no copies to look for there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere


def small_cnn(torch):
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def device_to_host_copies(torch, run: Callable[[], object], cuda: bool) -> list[int]:
    """Byte sizes of every device->host memcpy the profiler saw while ``run`` ran."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        run()
        if cuda:
            torch.cuda.synchronize()
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())
    events = events.get("traceEvents", []) if isinstance(events, dict) else events
    return [int((e.get("args") or {}).get("bytes", -1)) for e in events
            if e.get("cat") == "gpu_memcpy" and "DtoH" in e.get("name", "")]


def check_no_host_copy(torch, device: str, batch: int) -> bool:
    import aimsec_core

    cuda = device.startswith("cuda")
    model = small_cnn(torch).to(device)
    x = torch.rand(batch, 1, 8, 8, device=device)
    size = x.numel() * x.element_size()
    with tempfile.TemporaryDirectory() as logs:
        guarded = aimsec_core.guard(
            model, name="bench-cuda", sinks=[aimsec_core.AuditLog(logs)],
            constraints={"min_value": 0.0, "max_value": 1.0, "sample_shape": (1, 8, 8),
                         "max_gradient": 1.0, "min_sparsity": 0.01})

        def screened() -> None:
            with torch.no_grad():
                guarded(x)

        screened()  # warm-up: kernels loaded, digest weights on the device
        copies = device_to_host_copies(torch, screened, cuda)
        verdict = guarded.last_verdict
    print(f"(a) guarded call on {device}: input {tuple(x.shape)} float32 = {size} bytes; "
          f"device->host copies: {len(copies)}, {sum(copies)} bytes in all {sorted(copies)}")
    print(f"    verdict allowed={verdict.allowed} input_hash={verdict.input_hash}")
    if not cuda:
        print("    (cpu run: no device, nothing to copy)")
        return True
    control = device_to_host_copies(torch, lambda: x.cpu(), cuda)
    if size not in control:
        print(f"    INCONCLUSIVE: the profiler did not see the control copy x.cpu() "
              f"({size} bytes; saw {control}); is CUPTI available?")
        return False
    whole = [c for c in copies if c >= size]
    others = [c for c in copies if c < size]
    if whole != [size] or -1 in copies:
        print(f"    FAIL: expected one device->host copy of the input ({size} bytes, for the "
              f"hash); saw {sorted(whole)}")
        return False
    largest = max(others, default=0)
    print(f"    ok: the input's bytes left the device once (the hash); every other copy is "
          f"small (largest {largest} bytes; the control x.cpu() copied {size})")
    from aimsec_core.arrays import content_hash

    adapter = guarded.__aimsec_guard__.adapter
    on_device = content_hash([x], adapter.host_bytes)
    on_host = content_hash([x.cpu()], adapter.host_bytes)
    if on_device != on_host:
        print(f"    FAIL: the input hashes {on_device} on {device} and {on_host} on the CPU")
        return False
    print(f"    ok: the same hash on {device} and on the CPU ({on_device})")
    return True


def hash_cost(torch, device: str, batch: int, runs: int) -> None:
    import aimsec_core
    from aimsec_core.arrays import content_hash

    cuda = device.startswith("cuda")
    model = small_cnn(torch).to(device)
    adapter = aimsec_core.guard(model, sinks=[]).__aimsec_guard__.adapter
    print(f"(c) content hash on {device} (copy to host + SHA-256) against one forward pass:")
    for n in (batch, batch * 64):
        x = torch.rand(n, 1, 8, 8, device=device)

        def timed(fn: Callable[[], object]) -> float:
            samples = []
            for i in range(runs // 5 + 10):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn()
                if cuda:
                    torch.cuda.synchronize()
                if i >= 10:
                    samples.append(time.perf_counter() - start)
            return statistics.median(samples)

        with torch.no_grad():
            forward = timed(lambda: model(x))
        hashing = timed(lambda: content_hash([x], adapter.host_bytes))
        print(f"    batch {n:>6} ({x.numel() * 4 / 1e6:.2f} MB): hash {hashing * 1e6:9.1f} us, "
              f"forward {forward * 1e6:9.1f} us, ratio {hashing / forward:5.2f}x")


def timing(torch, device: str, batch: int, runs: int) -> None:
    import aimsec_core

    cuda = device.startswith("cuda")
    model = small_cnn(torch).to(device)
    x = torch.rand(batch, 1, 8, 8, device=device)
    limits = {"min_value": 0.0, "max_value": 1.0, "sample_shape": (1, 8, 8)}
    with tempfile.TemporaryDirectory() as logs:
        calls = {
            "plain": model,
            "guarded": aimsec_core.guard(model, name="bench-plain-sinks", sinks=[],
                                         constraints=limits),
            "guarded+audit": aimsec_core.guard(model, name="bench-audit",
                                               sinks=[aimsec_core.AuditLog(logs)],
                                               constraints=limits),
        }

        def once(fn: Callable[[torch.Tensor], object]) -> float:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(x)
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - start

        samples: dict[str, list[float]] = {name: [] for name in calls}
        with torch.no_grad():
            for fn in calls.values():
                for _ in range(max(20, runs // 10)):
                    once(fn)  # warm-up
            for _ in range(runs):  # interleaved, so drift hits every variant alike
                for name, fn in calls.items():
                    samples[name].append(once(fn))
    plain = statistics.median(samples["plain"])
    print(f"(b) small CNN, batch {batch}, {device}, median of {runs} runs:")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"    {name:<14}{median * 1e6:>9.1f} us   ratio {median / plain:5.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("skipped: no CUDA device (torch.cuda.is_available() is False)")
        return 0
    name = (torch.cuda.get_device_name(torch.device(args.device)) if args.device != "cpu"
            else "cpu")
    print(f"torch {torch.__version__} on {name}")
    ok = check_no_host_copy(torch, args.device, args.batch)
    timing(torch, args.device, args.batch, args.runs)
    hash_cost(torch, args.device, args.batch, args.runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
