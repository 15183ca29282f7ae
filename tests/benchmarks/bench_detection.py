"""Cost of adversarial-input detection, against the plain model in the same run.

    python tests/benchmarks/bench_detection.py [--repeats 200] [--framework torch ...]
        [--default-only] [--no-wider] [--torch-threads N] [--clock wall|cpu]

Guarded over plain predict at batch 64: for torch and Keras, gradient analysis alone (the
gradient from the same forward pass as the prediction; target <= 2.5x); for every
framework, the default detectors, and the default detectors with the training set as
reference data (the neighbours detector then searches 1,000 clean inputs instead of the
calibration half).
For torch and Keras also the ``features`` detector alone (internal activations; torch
captures them during the prediction's own forward pass) and a suite with it in the
gradient's place. For every framework and each model-agnostic detector alone: guarded
over plain, and the extra forward passes ("extra") it costs, counted during one call: the class scores of the
input (shared by the detectors that read them; free where the gradient pass gives them),
plus the detector's own.

The detectors' own cost is fixed per batch (a few tenths of a millisecond), so the ratio
depends on how long the model takes; the last table repeats the torch rows for the same
CNN with 2x and 4x the channels. Each torch model also gets a row for a bare forward +
backward to the input, no guard at all: the floor any gradient analysis starts from.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

from bench_overhead import interleaved  # noqa: E402  (same timing method)

AGNOSTIC = ("margin", "density", "sparsity", "neighbours", "jump", "squeeze", "noise", "robust")


def main(repeats: int, frameworks: list[str] | None = None, default_only: bool = False,
         wider: bool = True) -> None:
    import aimsec_core
    from aimsec_core import digits

    data = digits.load()
    print(f"{'framework':<9}{'detectors':<46}{'extra':>7}{'plain ms':>10}{'guarded ms':>12}"
          f"{'ratio':>8}")
    for framework in [f for f in digits.available() if not frameworks or f in frameworks]:
        model = digits.BUILDERS[framework](data)
        call = digits.caller(framework)
        x = digits.as_model_input(framework, data.x_test[:64])
        calibration_x = digits.as_model_input(framework, data.x_calibration)
        reference = digits.as_model_input(framework, data.x_train)
        reps = max(repeats // 5, 20) if framework == "keras" else repeats
        setups: list[tuple[list[str] | None, bool]] = []
        if framework == "torch":
            _backward_floor("", model, x, call, reps)
        if framework in ("torch", "keras"):
            setups.append((["gradient"], False))
        if framework in ("torch", "keras") and not default_only:
            setups += [(["features"], False),
                       (["features", "margin", "density", "sparsity", "neighbours"], True)]
        setups += [(None, False), (None, True)]
        if not default_only:
            setups += [([name], False) for name in AGNOSTIC]
        for detectors, with_reference in setups:
            guarded = aimsec_core.guard(model, sinks=[], mode="monitor",
                                        constraints=digits.constraints(framework))
            calibration = guarded.calibrate(calibration_x, detectors=detectors,
                                            image_shape=(8, 8),
                                            reference=reference if with_reference else None)
            suite = calibration.suite
            passes = _extra_forward_passes(guarded, call, x)
            names = "+".join(d.name for d in suite.detectors)
            label = (f"default: {names}" if detectors is None else names) + (
                " +reference" if with_reference else "")
            _row(framework, label, passes, model, guarded, call, x, reps)
    if wider and (not frameworks or "torch" in frameworks):
        _wider_torch_models(data, repeats)


def _extra_forward_passes(guarded: Any, call: Any, x: Any) -> int:
    """How many times one guarded call asks the model for class scores besides its own
    prediction."""
    import aimsec_core

    adapter = aimsec_core.guard_of(guarded).adapter
    asked = []
    original = adapter.scores
    adapter.scores = lambda batch: (asked.append(1), original(batch))[1]
    try:
        call(guarded, x)
    finally:
        del adapter.scores
    return len(asked)


def _backward_floor(prefix: str, model: Any, x: Any, call: Any, reps: int) -> None:
    import torch

    def forward_backward() -> None:
        leaf = x.detach().requires_grad_(True)
        logits = model(leaf)
        loss = torch.nn.functional.cross_entropy(logits, logits.detach().argmax(1),
                                                 reduction="sum")
        torch.autograd.grad(loss, leaf)

    plain_s, floor_s = interleaved(lambda: call(model, x), forward_backward, reps)
    print(f"{'torch':<9}{prefix + 'forward+backward alone, unguarded':<46}{'-':>7}"
          f"{plain_s * 1e3:>10.3f}{floor_s * 1e3:>12.3f}{floor_s / plain_s:>8.2f}")


def _row(framework: str, label: str, passes: int, model: Any, guarded: Any, call: Any, x: Any,
         reps: int) -> None:
    plain_s, guarded_s = interleaved(lambda: call(model, x), lambda: call(guarded, x), reps)
    print(f"{framework:<9}{label:<46}{passes:>7}{plain_s * 1e3:>10.3f}"
          f"{guarded_s * 1e3:>12.3f}{guarded_s / plain_s:>8.2f}")


def _wider_torch_models(data: Any, repeats: int) -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return
    import aimsec_core
    from aimsec_core import digits

    print("\ntorch CNN with wider layers (trained 5 epochs), batch 64")
    call = digits.caller("torch")
    x = digits.as_model_input("torch", data.x_test[:64])
    for width in (2, 4):
        model = digits.torch_cnn(data, epochs=5, width=width)
        _backward_floor(f"x{width}: ", model, x, call, repeats)
        for detectors in (["gradient"], None):
            guarded = aimsec_core.guard(model, sinks=[], mode="monitor",
                                        constraints=digits.constraints("torch"))
            suite = guarded.calibrate(digits.as_model_input("torch", data.x_calibration),
                                      detectors=detectors).suite
            names = "+".join(d.name for d in suite.detectors)
            label = f"x{width}: " + (f"default: {names}" if detectors is None else names)
            _row("torch", label, 0, model, guarded, call, x, repeats)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--framework", action="append", choices=("sklearn", "torch", "keras",
                                                                 "onnx"),
                        help="only these frameworks (repeatable; default: every installed)")
    parser.add_argument("--default-only", action="store_true",
                        help="only the unguarded floor, gradient analysis alone and the default "
                             "suites (no features or per-detector rows)")
    parser.add_argument("--no-wider", action="store_true",
                        help="skip the table of wider torch models")
    parser.add_argument("--torch-threads", type=int,
                        help="torch's intra-op threads (default: torch's own choice). On a "
                             "loaded machine a second thread's wake-ups can dominate every "
                             "call that leaves torch for a while; one thread measures the "
                             "work itself")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the process's CPU clock, which time spent waiting for a "
                             "core on a loaded machine does not advance (with one torch "
                             "thread: the work itself; with more, every thread's spinning "
                             "counts too)")
    args = parser.parse_args()
    if args.clock == "cpu":
        import time

        import bench_overhead

        bench_overhead.clock = time.process_time
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    main(args.repeats, args.framework, args.default_only, not args.no_wider)
