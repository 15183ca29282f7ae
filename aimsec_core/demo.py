"""``aimsec demo``: guard a digits model in every installed framework and replay traffic.

Clean digits come from a few clients, mixed with the malformed calls a real endpoint sees
(NaN, out-of-range values, wrong shape or dtype, nothing at all, a list declaring 10^8
numbers). Each run writes into a folder of its own (``demo-<UTC time>`` under
``SECURITY_LOG_PATH``) and prints where everything went.

The models are small and trained for a few epochs (seconds on two cores): the demo shows
the guard, not accuracy. ``aimsec evaluate`` trains the full-size models.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from . import digits
from .api import guard
from .audit import AuditLog
from .config import DEFAULT_LOG_PATH, resolve
from .context import client
from .errors import AimsecError
from .sinks import CallRecord

CLIENTS = ("203.0.113.7", "198.51.100.23", "api-key:analytics")
LIMITS = {"max_size": 1_000_000, "min_sparsity": 0.02}
#: share of each kind of call in the replayed traffic
TRAFFIC = {"clean": 0.70, "nan": 0.05, "out_of_range": 0.05, "blank_image": 0.04,
           "wrong_shape": 0.05, "wrong_dtype": 0.04, "null": 0.03, "huge_list": 0.04}


class Tally:
    """A sink counting outcomes and refused checks per model."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.outcomes: dict[str, Counter[str]] = defaultdict(Counter)
        self.checks: dict[str, Counter[str]] = defaultdict(Counter)

    def record(self, event: CallRecord) -> None:
        model = event.verdict.model
        self.calls[model] += 1
        self.outcomes[model][event.outcome] += 1
        for check in event.verdict.checks:
            self.checks[model][check] += 1


def _spoil(kind: str, framework: str, batch: np.ndarray) -> Any:
    """One call's input of the given kind, built from a clean (n, 64) batch."""
    x = batch.copy()
    if kind == "nan":
        x[0, 13] = np.nan
    elif kind == "out_of_range":
        x[-1] *= 3.0
    elif kind == "blank_image":
        x[0] = 0.0
    elif kind == "null":
        return None
    elif kind == "huge_list":
        return [[0.0] * 64] * 2_000_000
    model_input = digits.as_model_input(framework, x)
    if kind == "wrong_shape":
        return model_input[..., :-1]
    if kind == "wrong_dtype":
        return model_input * 1j
    return model_input


def traffic(data: digits.DigitsSplit, framework: str, calls: int,
            rng: np.random.Generator) -> Iterator[tuple[str, Any]]:
    kinds, weights = zip(*TRAFFIC.items())
    for _ in range(calls):
        start = int(rng.integers(0, len(data.x_test) - 16))
        batch = data.x_test[start:start + int(rng.integers(1, 16))]
        kind = str(rng.choice(kinds, p=np.asarray(weights) / sum(weights)))
        yield str(rng.choice(CLIENTS)), _spoil(kind, framework, batch)


#: Demo-sized models: a few seconds of training each; the ONNX model is the exported
#: scikit-learn one, so it is trained once.
def _demo_models(framework: str, data: digits.DigitsSplit, seed: int,
                 trained: dict[str, Any]) -> Any:
    if framework == "sklearn" or (framework == "onnx" and "sklearn" not in trained):
        model = digits.sklearn_mlp(data, seed, max_iter=150)
        if framework == "sklearn":
            return model
        trained["sklearn"] = model
    if framework == "onnx":
        return digits.onnx_session(data, seed, sklearn_model=trained["sklearn"])
    if framework == "torch":
        return digits.torch_mlp(data, seed, epochs=8)
    from .cli.quiet import native_stderr_silenced

    with native_stderr_silenced():  # TensorFlow's native start-up lines
        return digits.keras_mlp(data, seed, epochs=8)


@dataclass
class DemoRun:
    """What a demo run left behind."""

    folder: Path
    audit_file: Path
    tally: Tally
    seconds: float


class _Steps:
    """Progress as plain lines: readable in a terminal, a CI log and a redirected file."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def run(self, label: str, work: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        self.console.print(f"  {label} ...", end="")
        result = work()
        self.console.print(f" {time.perf_counter() - start:.1f} s", highlight=False)
        return result


def run_folder(base: str | Path | None = None) -> Path:
    """A new folder for one demo run: ``<base>/demo-<UTC time>``."""
    root = Path(resolve(None if base is None else str(base), "SECURITY_LOG_PATH",
                        DEFAULT_LOG_PATH, str))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    folder = root / f"demo-{stamp}"
    folder.mkdir(parents=True, exist_ok=False)
    return folder


def run(calls: int = 200, frameworks: list[str] | None = None, seed: int = 0,
        console: Console | None = None, out: str | Path | None = None) -> DemoRun:
    """Train, guard and replay traffic; returns where the run's files went."""
    started = time.perf_counter()
    console = console or Console()
    chosen = frameworks or digits.available()
    missing = sorted(set(chosen) - set(digits.available()))
    if missing:
        console.print(f"not installed, skipped: {', '.join(missing)}")
    chosen = [f for f in chosen if f not in missing]
    folder = run_folder(out)
    console.print(f"aimsec demo: {', '.join(chosen)}; this run writes to {folder}",
                  highlight=False)
    data = digits.load(seed)
    tally, audit = Tally(), AuditLog(folder)
    rng = np.random.default_rng(seed)
    steps, trained = _Steps(console), {}
    for framework in chosen:
        model = steps.run(f"training the {framework} digits model",
                          lambda: _demo_models(framework, data, seed, trained))
        trained[framework] = model
        guarded = guard(model, name=f"digits-{framework}",
                        constraints=digits.constraints(framework, **LIMITS),
                        sinks=[audit, tally])
        steps.run(f"replaying {calls} calls to the guarded {framework} model",
                  lambda: _replay(guarded, framework, data, calls, rng))
    audit.flush()
    console.print(summary_table(tally))
    console.print(f"audit log: {audit.file}", highlight=False)
    return DemoRun(folder, audit.file, tally, time.perf_counter() - started)


def _replay(guarded: Any, framework: str, data: digits.DigitsSplit, calls: int,
            rng: np.random.Generator) -> None:
    call = digits.caller(framework)
    for who, x in traffic(data, framework, calls, rng):
        with client(who):
            try:
                call(guarded, x)
            except AimsecError:
                pass  # refused and recorded; a server would answer 4xx here


def summary_table(tally: Tally) -> Table:
    """One column per model and one row per outcome and check: stays narrow whatever the
    number of checks (80 columns hold four models)."""
    models = sorted(tally.calls)
    checks = sorted({c for counter in tally.checks.values() for c in counter})
    table = Table(title="calls per guarded model",
                  caption="rows under 'rejected': calls each check objected to")
    table.add_column("", no_wrap=True)
    for model in models:
        table.add_column(model.removeprefix("digits-"), justify="right")
    table.add_row("calls", *(str(tally.calls[m]) for m in models))
    for outcome in ("allowed", "rejected"):
        table.add_row(outcome, *(str(tally.outcomes[m][outcome]) for m in models))
    for check in checks:
        table.add_row(f"  {check}", *(str(tally.checks[m][check]) for m in models))
    return table
