"""Peak memory of a guarded, calibrated call against the plain call, per adapter.

    python tests/benchmarks/bench_memory.py [--rows 50000] [--framework sklearn ...]

Each measurement runs in a process of its own: build the digits model of the framework
(``tests/cases``), calibrate the guard (for the guarded call) and make the input batch
(``--rows`` digits rows, tiled, float32), then reset the process's peak resident set
(``/proc/self/clear_refs``, value 5) and run one call. The figure is ``VmHWM`` (the peak)
minus ``VmRSS`` just before the call: what the call itself added. The guard runs in
monitor mode, so every detector scores the whole batch whatever it finds.

Target (issue "An audit trail and calibration that hold under hostile input", item 9):
guarded peak <= 2 x the plain call's + the input's size; the printed ratio is the guarded
peak over that bound (<= 1.0 meets it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("sklearn", "onnx", "keras", "torch")


def _status(field: str) -> int:
    """A ``/proc/self/status`` field, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _case(framework: str) -> Any:
    import importlib

    return importlib.import_module(f"tests.cases.{framework}_case").CASE


def _call(framework: str, model: Any, x: Any) -> Any:
    if framework == "sklearn":
        return model.predict_proba(x)
    if framework == "onnx":
        return model.run(["probabilities"], {"X": x})[0]
    if framework == "keras":
        return model.predict(x, verbose=0)  # Keras' own batch size (32)
    import torch

    with torch.no_grad():
        return model(x)


def measure(framework: str, guarded: bool, rows: int) -> dict[str, Any]:
    """One call's added peak memory, in this process (see the module docstring)."""
    import aimsec_core
    from tests.cases import digits

    case = _case(framework)
    model = case.model()
    x, _ = digits()
    if guarded:
        model = aimsec_core.guard(model, mode="monitor", policy=False,
                                  constraints={"min_value": 0.0, "max_value": 1.0})
        model.calibrate(case.to_native(x[900:1400]), fpr=0.05)
    batch = case.to_native(np.resize(x, (rows, x.shape[1])).astype(np.float32))
    _call(framework, model, case.to_native(x[:64]))  # warm up: lazy imports, compilation
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    before = _status("VmRSS")
    _call(framework, model, batch)
    peak = _status("VmHWM") - before
    nbytes = int(getattr(batch, "nbytes", 0) or batch.element_size() * batch.nelement())
    return {"peak": peak, "input": nbytes}


def _in_subprocess(framework: str, guarded: bool, rows: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "adapters"), os.environ.get("PYTHONPATH", "")]),
        "SECURITY_LOG_PATH": tempfile.mkdtemp(prefix="aimsec-bench-memory-"),
        "AIMSEC_ALERTS": "0"}
    done = subprocess.run(
        [sys.executable, __file__, "--one", framework, "--rows", str(rows)]
        + (["--guarded"] if guarded else []),
        capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{framework} ({'guarded' if guarded else 'plain'}) failed:\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--framework", nargs="*", default=list(FRAMEWORKS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--guarded", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.guarded, args.rows)))
        return
    mb = 1024 * 1024
    print(f"peak memory added by one call on {args.rows} digits rows (MB); "
          "ratio = guarded / (2 x plain + input), target <= 1.0")
    print(f"{'framework':<10}{'plain':>10}{'guarded':>10}{'input':>10}{'bound':>10}{'ratio':>8}")
    for framework in args.framework:
        plain = _in_subprocess(framework, False, args.rows)
        guarded = _in_subprocess(framework, True, args.rows)
        bound = 2 * plain["peak"] + plain["input"]
        print(f"{framework:<10}{plain['peak'] / mb:>10.1f}{guarded['peak'] / mb:>10.1f}"
              f"{plain['input'] / mb:>10.1f}{bound / mb:>10.1f}"
              f"{guarded['peak'] / bound:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
