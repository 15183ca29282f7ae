"""One guarded model, many threads (and asyncio tasks handing calls to threads), while
other threads recalibrate, refit, switch clients, read ``request_analysis``, close, copy
and pickle it.

What a user relies on, checked per call: exactly one audit line (one hash chain that
verifies), carrying that call's client and request id; the verdict it names the
calibration that screened it, and only that one; the thread gets its own model output
and its own ``last_verdict``; ``request_analysis`` and the Prometheus counters count
every call once; no thread hangs and no untyped exception escapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import pickle
import signal
import threading
import warnings
from typing import Any

import numpy as np
import pytest

import aimsec_core
from aimsec_core import AuditLog
from aimsec_core.metrics import MetricsSink, metrics_for
from tests.cases import all_cases, digits, digits_logistic

THREADS = 8
JOIN_S = 120  # a hang fails the test instead of stalling the run


def _run(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_S)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"


def _lines(audit: AuditLog) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit.file.read_text().splitlines()]


# -- every adapter: one line, one client, one calibration, one output per call ------------

CASES = {case.id: case for case in all_cases()}
CALLS = {"sklearn": 40, "onnx": 40, "torch": 40, "keras": 6}  # per thread


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_each_call_keeps_its_line_client_calibration_output_and_verdict(case_id, tmp_path):
    """Eight clients call one guarded model while other threads swap its calibration
    (two of them and none), read request_analysis, close it and copy it."""
    from prometheus_client import CollectorRegistry

    case = CASES[case_id]
    model = case.model()
    x, _ = digits()
    native = (lambda a: case.to_native(a.reshape((-1, *case.sample_shape))))
    audit = AuditLog(file=tmp_path / "audit.jsonl")
    registry = CollectorRegistry()
    guarded = aimsec_core.guard(model, name=case_id, mode="monitor",
                                sinks=[audit, MetricsSink(metrics_for(registry))],
                                constraints={"min_value": 0, "max_value": 1},
                                policy={"max_repeats": 0, "near_duplicate": False,
                                        "max_failed_attempts": 0})
    guard = aimsec_core.guard_of(guarded)
    calibrations = [guarded.calibrate(native(x[600:800]), detectors=["margin"]),
                    guarded.calibrate(native(x[800:1000]), detectors=["margin", "density"],
                                      fpr=0.2)]
    installed = {None}
    for calibration in calibrations:
        guard.calibration = calibration
        installed.add(guard.calibration_id)
    guard.calibration = None
    rows = 32
    expected = [case.call_plain(model, native(x[r:r + 1])) for r in range(rows)]
    calls = CALLS[case_id]
    seen: dict[str, tuple[str, str | None, bool]] = {}  # request id -> client, calibration
    problems: list[Any] = []
    stop = threading.Event()
    start = threading.Barrier(THREADS + 2)

    def caller(t: int) -> None:
        start.wait()
        with aimsec_core.client(f"client-{t}"):
            for i in range(calls):
                r = (t * calls + i) % rows
                rid = f"req-{t}-{i}"
                try:
                    with aimsec_core.request_id(rid):
                        out = case.call_guarded(guarded, native(x[r:r + 1]))
                except Exception as exc:  # monitor mode refuses nothing here
                    problems.append(("raised", rid, repr(exc)))
                    continue
                verdict = guarded.last_verdict
                if verdict.request_id != rid or verdict.client != f"client-{t}":
                    problems.append(("last_verdict", rid, verdict.request_id, verdict.client))
                if not np.allclose(out, expected[r], atol=1e-5):
                    problems.append(("output", rid))
                seen[rid] = (f"client-{t}", verdict.calibration_id, bool(verdict.scores))

    def recalibrator() -> None:
        start.wait()
        k = 0
        while not stop.is_set():
            guard.calibration = (calibrations + [None])[k % 3]
            k += 1
            stop.wait(0.0005)

    def bystander() -> None:
        start.wait()
        while not stop.is_set():
            try:
                guarded.request_analysis()
                assert guarded.close(timeout=1.0)
                if case_id != "keras":  # Keras models cannot be copied (documented)
                    copy.deepcopy(guarded)  # shares the sinks
                    with pytest.raises(aimsec_core.UncopyableError):
                        pickle.dumps(guarded)  # the metrics sink of a private registry
            except BaseException as exc:
                problems.append(("bystander", repr(exc)))
                return
            stop.wait(0.002)

    callers = [threading.Thread(target=caller, args=(t,)) for t in range(THREADS)]
    others = [threading.Thread(target=recalibrator), threading.Thread(target=bystander)]
    for thread in callers + others:
        thread.start()
    for thread in callers:
        thread.join(JOIN_S)
    stop.set()
    for thread in others:
        thread.join(JOIN_S)
    assert not any(thread.is_alive() for thread in callers + others), "a thread hung"
    assert problems == []

    total = THREADS * calls
    lines = [line for line in _lines(audit) if line["request_id"].startswith("req-")]
    assert len(lines) == len({line["request_id"] for line in lines}) == len(seen) == total
    for line in lines:
        client, calibration_id, scored = seen[line["request_id"]]
        assert line["client"] == client
        assert line["calibration"] == calibration_id and calibration_id in installed
        # named a calibration exactly when one screened it
        assert (calibration_id is not None) == scored == ("detection" in line)
    verified = aimsec_core.audit.verify_trail(audit.file)
    assert verified.intact, verified.reason
    from aimsec_core.cli import main

    assert main(["audit", "verify", str(audit.file)]) == 0  # `aimsec audit verify`
    assert guarded.request_analysis()["total_requests"] == total
    assert registry.get_sample_value("aimsec_guard_latency_seconds_count",
                                     {"model": case_id}) == total


def test_a_call_begun_without_calibration_names_none_though_one_arrives_meanwhile():
    """A calibration installed by another thread after a call captured "none" but before
    its verdict was built: the call ran unscreened, and its line named the new
    calibration (with no detection in it)."""
    model = digits_logistic()
    x, _ = digits()
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor")
    guard = aimsec_core.guard_of(guarded)
    calibration = guarded.calibrate(x[600:900], detectors=["margin"])
    guard.calibration = None
    screen = guard.screen

    def install_then_screen(*args: Any, **kwargs: Any) -> Any:
        guard.calibration = calibration  # another thread's calibrate() lands here
        return screen(*args, **kwargs)

    guard.screen = install_then_screen
    guarded.predict(x[:2])
    verdict = guarded.last_verdict
    assert not verdict.scores and verdict.threshold is None
    assert verdict.calibration_id is None

    guard.screen = screen  # and the next call is screened by it, and names it
    guarded.predict(x[:2])
    assert guarded.last_verdict.scores
    assert guarded.last_verdict.calibration_id == guard.calibration_id is not None


# -- torch: a detector's eval-mode pass never switches another thread's training call -----

def test_torch_calls_in_train_mode_run_in_train_mode_while_detectors_switch_to_eval():
    """A model in train mode, calibrated: each call's detectors take their own eval-mode
    pass (switching the shared model to eval and back), so another thread's call running
    meanwhile ran in eval mode (no dropout, no batch-statistics update): the output of a
    function the caller never asked for."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class ModeMark(nn.Module):  # +100 in train mode: which mode ran shows in the output
        def forward(self, x: Any) -> Any:
            return x + (100.0 if self.training else 0.0)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), ModeMark())
    x, _ = digits()
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor", policy=False)
    guarded.eval()
    guarded.calibrate(x[:300], detectors=["margin"])
    guarded.train()
    inputs = torch.from_numpy(x[300:332])
    eval_mode: list[tuple[int, int]] = []
    start = threading.Barrier(THREADS)

    def work(t: int) -> None:
        start.wait()
        for i in range(200):
            with torch.no_grad():
                out = guarded(inputs[(t + i) % 32][None])
            if float(out.min()) < 50:
                eval_mode.append((t, i))
            if not guarded.last_verdict.scores:
                eval_mode.append((t, -1))  # screened, too

    _run([threading.Thread(target=work, args=(t,)) for t in range(THREADS)])
    assert eval_mode == []
    assert all(m.training for m in model.modules())  # left in train mode


def test_torch_mode_read_copied_or_changed_during_a_detector_pass_is_the_users():
    """While another thread's call had the model switched to eval mode for its detectors'
    pass, ``guarded.training`` read False, a deepcopy or a pickle of the guarded model
    came out in eval mode for good (dropout off in the copy's training), and an
    ``eval()`` made meanwhile was undone when the pass restored the modes it had saved."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.nn.modules.module import register_module_forward_hook

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.1))
    x, _ = digits()
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor", policy=False)
    guarded.eval()
    guarded.calibrate(x[:300], detectors=["margin"])
    guarded.train()
    entered, release = threading.Event(), threading.Event()

    def hold(module: Any, inputs: Any, output: Any) -> None:  # the detectors' pass waits
        if module is model[2] and not module.training and not entered.is_set():
            entered.set()
            release.wait(JOIN_S)

    handle = register_module_forward_hook(hold)  # global: nothing on the model to copy
    try:
        caller = threading.Thread(target=guarded, args=(torch.from_numpy(x[300:304]),))
        caller.start()
        assert entered.wait(JOIN_S)
        seen = guarded.training
        twin, thawed = copy.deepcopy(guarded), pickle.loads(pickle.dumps(guarded))
        copy.copy(guarded)  # shares the model: leaves it as the pass has it
        in_pass = [m.training for m in model.modules()]
        switch = threading.Thread(target=guarded.eval)
        switch.start()
        switch.join(0.5)  # made during the pass (it waits for it, or the pass undoes it)
        release.set()
        _run([])
        caller.join(JOIN_S)
        switch.join(JOIN_S)
    finally:
        release.set()
        handle.remove()
    assert seen is True
    assert in_pass == [False] * 4
    assert [m.training for m in twin.modules()] == [True] * 4
    assert [m.training for m in thawed.modules()] == [True] * 4
    assert [m.training for m in model.modules()] == [False] * 4


# -- scikit-learn: a refit in another thread loses no count and no verdict ----------------

@pytest.mark.filterwarnings("ignore::UserWarning")
def test_refits_in_another_thread_lose_no_call_count_and_no_threads_last_verdict():
    """``fit`` rebuilt the guard around a fresh monitor and a fresh ``last_verdict``: the
    calls made before it (and those still running on the old guard) vanished from
    ``request_analysis``, and a thread reading ``last_verdict`` after its own call got
    ``None`` when another thread had refitted meanwhile."""
    from sklearn.linear_model import LogisticRegression

    x, y = digits()
    guarded = aimsec_core.guard(LogisticRegression(max_iter=100), sinks=[],
                                policy={"max_repeats": 0, "near_duplicate": False})
    guarded.fit(x[:300], y[:300])
    calls = 150
    problems: list[Any] = []
    done = threading.Event()
    start = threading.Barrier(THREADS + 1)

    def caller(t: int) -> None:
        start.wait()
        with aimsec_core.client(f"client-{t}"):
            for i in range(calls):
                rid = f"req-{t}-{i}"
                with aimsec_core.request_id(rid):
                    guarded.predict(x[600 + i:601 + i])
                verdict = guarded.last_verdict
                if verdict is None or verdict.request_id != rid:
                    problems.append((rid, verdict and verdict.request_id))

    def refitter() -> None:
        start.wait()
        k = 0
        while not done.is_set() or k < 3:  # at least three refits, whatever the timing
            guarded.fit(x[k % 3 * 100:300 + k % 3 * 100], y[k % 3 * 100:300 + k % 3 * 100])
            k += 1
            done.wait(0.005)

    callers = [threading.Thread(target=caller, args=(t,)) for t in range(THREADS)]
    refit = threading.Thread(target=refitter)
    for thread in callers + [refit]:
        thread.start()
    for thread in callers:
        thread.join(JOIN_S)
    done.set()
    refit.join(JOIN_S)
    assert not any(thread.is_alive() for thread in callers + [refit]), "a thread hung"
    assert problems == []
    analysis = guarded.request_analysis()
    assert analysis["total_requests"] == THREADS * calls
    assert {c["client"]: c["requests"] for c in analysis["top_clients"]} == {
        f"client-{t}": calls for t in range(THREADS)}
    # the refit still drops the calibration (it described the model before)
    guarded.calibrate(x[600:900], detectors=["margin"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guarded.fit(x[:300], y[:300])
    guarded.predict(x[:1])
    assert aimsec_core.guard_of(guarded).calibration is None


def test_set_params_in_another_thread_keeps_the_calls_verdict_and_its_count():
    """``set_params(mode=...)`` (or ``constraints``, ``sinks``) rebuilt the guard around a
    fresh monitor and a fresh ``last_verdict``: a call under way in another thread read
    ``None`` as its ``last_verdict`` when it returned, and ``request_analysis`` (and the
    extraction statistics) forgot every call made before the change."""
    from sklearn.linear_model import LogisticRegression

    x, y = digits()
    model = LogisticRegression(max_iter=100).fit(x[:300], y[:300])
    guarded = aimsec_core.guard(model, sinks=[])
    with aimsec_core.client("earlier"):
        guarded.predict(x[:1])
    inside, release = threading.Event(), threading.Event()
    plain = model.predict

    def held(rows: Any) -> Any:  # the model, answering once the settings have changed
        inside.set()
        release.wait(JOIN_S)
        return plain(rows)

    model.predict = held
    seen: list[Any] = []

    def caller() -> None:
        with aimsec_core.client("busy"), aimsec_core.request_id("under-way"):
            guarded.predict(x[1:2])
            seen.append(guarded.last_verdict)

    thread = threading.Thread(target=caller)
    thread.start()
    assert inside.wait(JOIN_S)
    guarded.set_params(mode="monitor")
    release.set()
    thread.join(JOIN_S)
    assert not thread.is_alive(), "a thread hung"
    del model.predict
    assert seen[0] is not None and seen[0].request_id == "under-way"
    analysis = guarded.request_analysis()
    assert analysis["total_requests"] == 2
    assert {c["client"] for c in analysis["top_clients"]} == {"earlier", "busy"}
    with aimsec_core.client("busy"), aimsec_core.request_id("after"):
        guarded.predict(x[2:3])
    assert guarded.last_verdict.mode == "monitor"
    guarded.set_params(name="renamed")  # another model to the monitoring state
    assert guarded.request_analysis()["total_requests"] == 0
    assert guarded.last_verdict.request_id == "after"


def test_a_clone_still_counts_its_own_calls():
    """A clone (cross-validation) is another estimator: its calls are not the original's."""
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression

    x, y = digits()
    guarded = aimsec_core.guard(LogisticRegression(max_iter=100), sinks=[])
    guarded.fit(x[:300], y[:300])
    with aimsec_core.client("a"):
        guarded.predict(x[:1])
    twin = clone(guarded).fit(x[:300], y[:300])
    with aimsec_core.client("b"):
        twin.predict(x[:1])
        twin.predict(x[1:2])
    assert guarded.request_analysis()["total_requests"] == 1
    assert twin.request_analysis()["total_requests"] == 2


# -- asyncio: tasks handing calls to worker threads ----------------------------------------

def test_tasks_calling_through_to_thread_keep_their_clients_and_verdicts(tmp_path):
    """``asyncio.to_thread`` runs each call in a copy of the task's context: the line
    carries the task's client; the verdict is that of the call, in the worker; the task
    itself never sees another task's verdict."""
    model = digits_logistic()
    x, _ = digits()
    audit = AuditLog(file=tmp_path / "audit.jsonl")
    guarded = aimsec_core.guard(model, sinks=[audit], constraints={"max_value": 0.9},
                                policy={"max_repeats": 0, "near_duplicate": False,
                                        "max_failed_attempts": 0})
    calls = 40
    problems: list[Any] = []

    def screened(rid: str, row: np.ndarray) -> tuple[str, Any]:
        try:
            guarded.predict(row)
            outcome = "allowed"
        except aimsec_core.ValueRangeError:
            outcome = "rejected"
        verdict = guarded.last_verdict
        if verdict.request_id != rid:
            problems.append(("worker", rid, verdict.request_id))
        return outcome, verdict

    async def task(t: int) -> list[tuple[str, str]]:
        outcomes = []
        with aimsec_core.client(f"task-{t}"):
            for i in range(calls):
                rid = f"req-{t}-{i}"
                with aimsec_core.request_id(rid):
                    outcome, _ = await asyncio.to_thread(screened, rid, x[t * calls + i][None])
                mine = guarded.last_verdict  # the task's own context: none of its calls ran here
                if mine is not None:
                    problems.append(("task", rid, mine.request_id))
                outcomes.append((rid, outcome))
        return outcomes

    async def main() -> list[list[tuple[str, str]]]:
        return await asyncio.wait_for(
            asyncio.gather(*(task(t) for t in range(THREADS))), JOIN_S)

    results = asyncio.run(main())
    assert problems == []
    lines = {line["request_id"]: line for line in _lines(audit)}
    assert len(lines) == THREADS * calls
    for t, outcomes in enumerate(results):
        for rid, outcome in outcomes:
            assert lines[rid]["client"] == f"task-{t}"
            assert lines[rid]["decision"] == outcome
    assert aimsec_core.audit.verify_trail(audit.file).intact


# -- calibration files: one thread saves while another (or a replica) loads ----------------

def test_a_calibration_file_being_saved_again_still_loads_whole(tmp_path, monkeypatch):
    import os

    from aimsec_core.detection import calibration_file

    x, _ = digits()
    guarded = aimsec_core.guard(digits_logistic(), sinks=[], mode="monitor")
    guarded.calibrate(x[600:900], detectors=["margin"])
    path = guarded.save_calibration(tmp_path / "calibration.npz")
    reader = aimsec_core.guard(digits_logistic(), sinks=[], mode="monitor")
    loaded: list[Any] = []
    savez = calibration_file.np.savez_compressed

    def save_with_a_load_midway(file: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(file, (str, os.PathLike)):
            open(file, "wb").close()  # what writing starts with: the file it writes, empty
        try:  # another thread loads the file at this moment
            loaded.append(reader.load_calibration(path))
        except aimsec_core.CalibrationError as exc:
            loaded.append(exc)
        savez(file, *args, **kwargs)

    monkeypatch.setattr(calibration_file.np, "savez_compressed", save_with_a_load_midway)
    guarded.save_calibration(path)
    assert len(loaded) == 1 and not isinstance(loaded[0], Exception), loaded


def test_a_calibration_file_that_cannot_be_written_is_a_calibration_error(tmp_path):
    x, _ = digits()
    guarded = aimsec_core.guard(digits_logistic(), sinks=[], mode="monitor")
    guarded.calibrate(x[600:900], detectors=["margin"])
    (tmp_path / "taken.npz").mkdir()
    (tmp_path / "a-file").write_text("")
    for target in (tmp_path / "taken.npz", tmp_path / "a-file" / "c.npz"):
        with pytest.raises(aimsec_core.CalibrationError, match="cannot write the calibration"):
            guarded.save_calibration(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "taken.npz"]


# -- fork: a child forked while other threads are inside a guarded call ------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@contextlib.contextmanager
def _held_by_a_thread(locks: list[Any]) -> Any:
    """Inside the block, another thread holds every one of ``locks``."""
    held, release = threading.Event(), threading.Event()

    def inside() -> None:
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait(JOIN_S)
        for lock in locks:
            lock.release()

    thread = threading.Thread(target=inside)
    thread.start()
    assert held.wait(JOIN_S)
    try:
        yield
    finally:
        release.set()
        thread.join(JOIN_S)


def test_a_child_forked_while_threads_hold_the_monitoring_locks_serves_its_calls(tmp_path):
    """A thread inside a guarded call holds the fingerprint index's lock (most of a
    watched call), the in-memory store's, PRADA's, the request counters' or the
    detectors' BLAS lock; a process forked then (a ``multiprocessing`` worker forked from
    a serving process) copied the lock held, by a thread that does not exist in it, and
    its first guarded call hung for ever (16 of 30 children forked beside four busy
    threads)."""
    from aimsec_core.detection import suite as detection_suite
    from aimsec_core.monitoring import shapiro

    model = digits_logistic()
    x, _ = digits()
    audit = AuditLog(file=tmp_path / "audit.jsonl")
    guarded = aimsec_core.guard(model, sinks=[audit], policy={"max_repeats": 0})
    guarded.calibrate(x[600:900], detectors=["margin", "density"])
    with aimsec_core.client("parent"):
        guarded.predict(x[:1])  # the index, the counters and PRADA's state exist
    monitor = aimsec_core.guard_of(guarded).monitor
    [index] = monitor.store._indexes.values()
    locks = [index._lock, monitor.store._lock, monitor.extraction._lock, monitor.stats._lock,
             monitor._lock, shapiro._lock, detection_suite._blas_lock]
    with _held_by_a_thread(locks):  # a serving thread, inside every one of them
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's status says how it went
            signal.alarm(60)  # a hang ends the child with SIGALRM, not the run stalled
            try:
                with aimsec_core.client("child"):
                    for i in range(3):
                        guarded.predict(x[1 + i:2 + i])
                ok = guarded.request_analysis()["total_requests"] == 4
            except BaseException:
                os._exit(2)
            os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
        f"the child hung or failed (status {status:#x})")
    clients = [line["client"] for line in _lines(audit)]
    assert clients == ["parent"] + ["child"] * 3


def test_two_settings_changed_at_once_in_two_threads_are_both_kept(monkeypatch):
    """Each change rebuilt the guard from the settings it read, without a lock: a change
    made while another was being applied was lost from the guard (get_params showing
    both)."""
    from sklearn.linear_model import LogisticRegression

    from aimsec_core.guard import Guard

    x, y = digits()
    guarded = aimsec_core.guard(LogisticRegression(max_iter=100).fit(x[:300], y[:300]),
                                sinks=[])
    guarded.predict(x[:1])
    inside, release = threading.Event(), threading.Event()
    rebuild = Guard.with_settings

    def slow(self: Guard, **settings: Any) -> Guard:  # the mode's rebuild, held
        if settings.get("mode") == "monitor" and not inside.is_set():
            inside.set()
            release.wait(JOIN_S)
        return rebuild(self, **settings)

    monkeypatch.setattr(Guard, "with_settings", slow)
    mode = threading.Thread(target=lambda: guarded.set_params(mode="monitor"))
    mode.start()
    assert inside.wait(JOIN_S)
    limits = threading.Thread(target=lambda: guarded.set_params(
        constraints={"min_value": 0, "max_value": 16}))
    limits.start()
    limits.join(1.0)  # done at once without the lock; waits for the mode's with it
    release.set()
    for thread in (mode, limits):
        thread.join(JOIN_S)
        assert not thread.is_alive(), "a thread hung"
    guard = aimsec_core.guard_of(guarded)
    assert guard.mode == "monitor"
    assert guard.constraints.max_value == 16


def test_a_child_forked_while_the_adapters_and_registries_locks_are_held_can_take_them():
    """The registry's, the metrics', scikit-learn's guard-building and torch's
    feature-capture locks were copied held into a child forked while a thread held
    them: its first guard built, metrics sink made, set_params or torch feature capture
    waited for ever."""
    torch_features = pytest.importorskip("aimsec_torch._features")
    from aimsec_core import metrics, registry
    from aimsec_sklearn import _estimator

    owners = [(registry, "_lock"), (metrics, "_lock"), (_estimator, "_BUILDING"),
              (torch_features, "_RUNNING_LOCK")]
    with _held_by_a_thread([getattr(owner, name) for owner, name in owners]):
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's status says how it went
            free = all(getattr(owner, name).acquire(blocking=False) for owner, name in owners)
            os._exit(0 if free else 1)
    _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "a lock stayed held"
