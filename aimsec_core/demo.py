"""``aimsec demo``: guard a digits model in every installed framework and replay traffic.

Clean digits come from a few clients, mixed with the malformed calls a real endpoint sees
(NaN, out-of-range values, wrong shape or dtype, nothing at all, a list declaring 10^8
numbers) and with inputs the calibrated detectors should flag (noise images that pass
every validation check). Each run writes into a folder of its own (``demo-<UTC time>``
under ``SECURITY_LOG_PATH``): the audit trail, the incident database, the alert outbox
(``.eml`` files) and the report, and prints where everything went.

The models are small and trained for a few epochs (seconds on two cores): the demo shows
the guard, not accuracy. ``aimsec evaluate`` trains the full-size models.
"""

from __future__ import annotations

import os
import time
import warnings
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
from .config import log_folder
from .context import client
from .errors import AimsecError, ConfigurationError, MissingExtraError
from .extras import require
from .files import as_path
from .sinks import CallRecord
from .visible import shown

CLIENTS = ("203.0.113.7", "198.51.100.23", "api-key:analytics")
#: The client whose calls are a black-box attack's probes (``probe`` in the traffic).
PROBER = "api-key:scraper"
#: The client sending the noise images (``noise``): inputs only the detectors object to,
#: from one source, as an adversary's or a broken client's would come. Spread over the
#: ordinary clients they would raise every model's detection rate for all its traffic,
#: which the report rightly reads as calibration drift.
FUZZER = "api-key:fuzzer"
LIMITS = {"max_size": 1_000_000, "min_sparsity": 0.02}
#: share of each kind of call in the replayed traffic
TRAFFIC = {"clean": 0.62, "nan": 0.05, "out_of_range": 0.05, "blank_image": 0.04,
           "wrong_shape": 0.05, "wrong_dtype": 0.04, "null": 0.03, "huge_list": 0.04,
           "noise": 0.03, "probe": 0.05}
#: The demo's three clients each send every kind of call: with the default lockout (five
#: refused calls in ten minutes lock a client out for an hour) they would be locked out
#: within seconds and the table would show nothing but ``lockout``. A real deployment keeps
#: it; here it is off so that every check shows.
POLICY = {"max_failed_attempts": 0}
#: Detectors are calibrated so that 5% of clean calls of this many samples are refused.
CALL_FPR, CALL_SIZE = 0.05, 8


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


def _spoil(kind: str, framework: str, batch: np.ndarray, rng: np.random.Generator) -> Any:
    """One call's input of the given kind, built from a clean (n, 64) batch."""
    x = batch.copy()
    if kind == "noise":  # on the digits' grid and in range: only the detectors object
        x[0] = rng.integers(0, 17, size=x.shape[1]) / 16.0
    elif kind == "nan":
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
    """(client, model input) per call: clean and spoiled batches from the ordinary
    clients, and a black-box attacker's probes from :data:`PROBER`: one digit walked a
    few pixels at a time, as HopSkipJump or Boundary walk towards the decision boundary
    (each probe valid and clean-looking on its own; the request monitor refuses them as
    near-duplicates)."""
    kinds, weights = zip(*TRAFFIC.items())
    # a digit the ordinary clients never send (they draw from the test split): probes
    # around an input others send make those senders near-duplicates too (README)
    probe = data.x_calibration[int(rng.integers(0, len(data.x_calibration)))].copy()
    for _ in range(calls):
        start = int(rng.integers(0, len(data.x_test) - 16))
        batch = data.x_test[start:start + int(rng.integers(1, 16))]
        kind = str(rng.choice(kinds, p=np.asarray(weights) / sum(weights)))
        if kind == "probe":
            moved = rng.choice(len(probe), 3, replace=False)
            probe[moved] = np.clip(probe[moved] + rng.choice([-1, 1], 3) / 16, 0.0, 1.0)
            yield PROBER, digits.as_model_input(framework, probe[None])
        elif kind == "noise":
            yield FUZZER, _spoil(kind, framework, batch, rng)
        else:
            yield str(rng.choice(CLIENTS)), _spoil(kind, framework, batch, rng)


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


def _trained_quietly(framework: str, data: digits.DigitsSplit, seed: int,
                     trained: dict[str, Any]) -> Any:
    """Train with BLAS and OpenMP on one thread: these matrices are small, and on a busy
    2-core machine multi-threaded pools spin (measured: 10.5 s against 0.5 s for the
    scikit-learn MLP)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        if framework == "torch":
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return _demo_models(framework, data, seed, trained)
            finally:
                torch.set_num_threads(threads)
        return _demo_models(framework, data, seed, trained)


@dataclass
class DemoRun:
    """What a demo run left behind."""

    folder: Path
    audit_file: Path
    tally: Tally
    seconds: float
    incidents: Path | None = None
    outbox: Path | None = None
    report: Path | None = None


class _Steps:
    """Progress as plain lines: readable in a terminal, a CI log and a redirected file."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.noted: set[str] = set()

    def run(self, label: str, work: Callable[[], Any]) -> Any:
        """Run ``work`` under a progress line; a warning aimsec raises is printed once per
        run as a note after the line (never in the middle of it, nor with its source line);
        other libraries' warnings are shown as usual, after the line."""
        start = time.perf_counter()
        self.console.print(f"  {label} ...", end="")
        with warnings.catch_warnings(record=True) as caught:  # the filters in force stay
            result = work()
        self.console.print(f" {time.perf_counter() - start:.1f} s", highlight=False)
        for caught_warning in caught:
            if "aimsec" not in caught_warning.filename:  # another library's: shown as usual
                warnings.showwarning(caught_warning.message, caught_warning.category,
                                     caught_warning.filename, caught_warning.lineno)
                continue
            message = str(caught_warning.message)
            if message not in self.noted:
                self.noted.add(message)
                self.console.print(f"    note: {message}", highlight=False)
        return result


def run_folder(base: str | Path | None = None) -> Path:
    """A new folder for one demo run: ``<base>/demo-<UTC time>`` (``base`` defaults to
    ``SECURITY_LOG_PATH``, else ``./security_logs``). Raises :class:`ConfigurationError`
    for a ``base`` that is no path, and naming the folder (and ``SECURITY_LOG_PATH`` when
    it came from there) when the run's folder cannot be made under it: a file there, no
    permission."""
    root = log_folder(None if base is None else as_path(base, "the demo's output folder"))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    folder = root / f"demo-{stamp}"
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        named = ("the output folder" if base is not None else "SECURITY_LOG_PATH"
                 if os.environ.get("SECURITY_LOG_PATH") else "the default folder")
        raise ConfigurationError(
            f"cannot make the demo's folder {shown(folder)}: {exc.strerror or exc}; "
            f"expected {named} ({shown(root)}) to be a folder that can be written to, or "
            "a path where one can be made") from exc
    return folder


def run(calls: int = 200, frameworks: list[str] | None = None, seed: int = 0,
        console: Console | None = None, out: str | Path | None = None) -> DemoRun:
    """Train, guard and replay traffic; returns where the run's files went.

    Raises :class:`MissingExtraError` without scikit-learn (the digits data come from it)
    or when none of ``frameworks`` is installed; the ones missing among several are
    skipped with a note."""
    started = time.perf_counter()
    console = console or Console()
    require(("sklearn",), "sklearn", "the demo's digits data set")
    chosen = frameworks or digits.available()
    missing = sorted(set(chosen) - set(digits.available()))
    if missing and set(missing) == set(chosen):
        raise digits.not_installed(missing)
    if missing:
        console.print(f"not installed, skipped: {', '.join(missing)}")
    chosen = [f for f in chosen if f not in missing]
    folder = run_folder(out)
    console.print(f"aimsec demo: {', '.join(chosen)}; this run writes to {shown(folder)}",
                  highlight=False)
    data = digits.load(seed)
    tally, audit = Tally(), AuditLog(folder)
    security = _security_sinks(folder)
    rng = np.random.default_rng(seed)
    steps, trained = _Steps(console), {}
    for framework in chosen:
        model = steps.run(f"training the {framework} digits model",
                          lambda: _trained_quietly(framework, data, seed, trained))
        trained[framework] = model
        guarded = guard(model, name=f"digits-{framework}",
                        constraints=digits.constraints(framework, **LIMITS),
                        sinks=[audit, tally, *security], policy=POLICY)
        steps.run(f"calibrating its detectors ({CALL_FPR:.0%} of clean calls of "
                  f"{CALL_SIZE} refused)", lambda: guarded.calibrate(
                      digits.as_model_input(framework, data.x_calibration), fpr=CALL_FPR,
                      batch_size=CALL_SIZE,
                      reference=digits.as_model_input(framework, data.x_train)))
        steps.run(f"replaying {calls} calls to the guarded {framework} model",
                  lambda: _replay(guarded, framework, data, calls, rng))
        guarded.close()  # incidents stored, alerts written before the next model
    audit.flush()
    result = DemoRun(folder, audit.file, tally, 0.0)
    console.print(summary_table(tally))
    _where_everything_went(result, console)
    result.seconds = time.perf_counter() - started
    return result


def _security_sinks(folder: Path) -> list[Any]:
    """Incidents (medium severity and up) and alerts (high and up, as ``.eml`` files)
    inside the run's folder: what a security team would receive from this traffic."""
    from .alerts import OutboxChannel, security_sinks

    return security_sinks(incidents=folder / "incidents.sqlite3",
                          alerts=[OutboxChannel(folder / "outbox")])


def _where_everything_went(result: DemoRun, console: Console) -> None:
    console.print(f"audit log:  {shown(result.audit_file)}", highlight=False)
    incidents = result.folder / "incidents.sqlite3"
    if incidents.exists():
        result.incidents = incidents
        from .incidents import IncidentStore

        store = IncidentStore(incidents)
        try:
            count = len(store.incidents())
        finally:
            store.close()
        console.print(f"incidents:  {count} open in {shown(incidents)} (aimsec incidents "
                      f"--db {shown(incidents)})", highlight=False)
    outbox = result.folder / "outbox"
    if outbox.exists():
        result.outbox = outbox
        console.print(f"alerts:     {len(list(outbox.glob('*.eml')))} e-mails in "
                      f"{shown(outbox)}",
                      highlight=False)
    from .reporting import report

    try:
        files = report(result.folder, out=result.folder, db=incidents,
                       console=Console(quiet=True))
    except MissingExtraError:  # the report extra (Jinja2, matplotlib) is not installed
        console.print("report:     not written (pip install 'aimsec[report]')", markup=False,
                      highlight=False)
        return
    result.report = files.html_path
    console.print(f"report:     {shown(files.html_path)}", highlight=False)


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
