"""``aimsec demo``: guard a digits model in every installed framework and replay traffic.

Clean digits come from a few clients, mixed with the malformed calls a real endpoint sees
(NaN, out-of-range values, wrong shape or dtype, nothing at all, a list declaring 10^8
numbers). The audit log is left behind under ``SECURITY_LOG_PATH``.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from . import digits
from .api import guard
from .audit import AuditLog
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


def run(calls: int = 200, frameworks: list[str] | None = None, seed: int = 0,
        console: Console | None = None) -> Tally:
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    chosen = frameworks or digits.available()
    missing = sorted(set(chosen) - set(digits.available()))
    if missing:
        console.print(f"[yellow]not installed, skipped:[/] {', '.join(missing)}")
    chosen = [f for f in chosen if f not in missing]
    data = digits.load(seed)
    tally, audit = Tally(), AuditLog()
    rng = np.random.default_rng(seed)
    with Progress(console=console, transient=True) as progress:
        models = {}
        task = progress.add_task("training digits models", total=len(chosen))
        for framework in chosen:
            models[framework] = digits.BUILDERS[framework](data, seed)
            progress.advance(task)
        for framework, model in models.items():
            guarded = guard(model, name=f"digits-{framework}",
                            constraints=digits.constraints(framework, **LIMITS),
                            sinks=[audit, tally])
            call = digits.caller(framework)
            task = progress.add_task(f"replaying traffic to {framework}", total=calls)
            for who, x in traffic(data, framework, calls, rng):
                with client(who):
                    try:
                        call(guarded, x)
                    except AimsecError:
                        pass  # refused and recorded; a server would answer 4xx here
                progress.advance(task)
    audit.flush()
    console.print(summary_table(tally))
    console.print(f"audit log: {audit.file}")
    return tally


def summary_table(tally: Tally) -> Table:
    checks = sorted({c for counter in tally.checks.values() for c in counter})
    table = Table(title="aimsec demo: calls per guarded model",
                  caption="columns after 'rejected': calls each check objected to")
    table.add_column("model", no_wrap=True)
    for column in ("calls", "allowed", "rejected", *checks):
        table.add_column(column, justify="right")
    for model in sorted(tally.calls):
        outcomes = tally.outcomes[model]
        table.add_row(model, str(tally.calls[model]), str(outcomes["allowed"]),
                      str(outcomes["rejected"]),
                      *(str(tally.checks[model][c]) for c in checks))
    return table
