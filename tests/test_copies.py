"""Every copy of a guarded object keeps its whole guard.

A ``copy.deepcopy``, a pickle (joblib, a worker process) and scikit-learn's ``clone`` of a
guarded model keep its calibration (the copy refuses exactly the batch the original
refuses), its monitoring policy, ``on_flagged``, clock and sinks (the copy writes to the
same audit trail, in another process too). A sink that cannot travel is refused by name,
never dropped. The scikit-learn guard is built once when threads race its first call.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aimsec_core
from aimsec_core.api import guard_of
from aimsec_core.audit import AuditLog
from aimsec_core.errors import UncopyableError
from aimsec_core.guard import Guard
from aimsec_core.monitoring import Policy
from aimsec_core.registry import adapter_for
from tests.cases import digits

ADAPTERS = ["sklearn", "onnx"]


def fixed_clock() -> float:
    """A module-level clock (pickles by reference): every verdict's timestamp."""
    return 1_700_000_000.0


def _model(kind: str) -> Any:
    if kind == "sklearn":
        from tests.cases.sklearn_case import CASE

        return copy.deepcopy(CASE.model())  # a model of its own: guarding marks nothing
    from tests.cases.onnx_case import session

    return session()


def _predict(guarded: Any, kind: str, x: np.ndarray) -> Any:
    if kind == "sklearn":
        return guarded.predict_proba(x)
    return guarded.run(["probabilities"], {"X": x})[0]


def _batches() -> tuple[np.ndarray, np.ndarray]:
    """A clean batch, and the same samples with every pixel pushed by +-0.3 (FGSM-like)."""
    x, _ = digits()
    clean = x[1400:1410]
    noisy = np.clip(clean + np.random.default_rng(0).choice([-0.3, 0.3], clean.shape),
                    0, 1).astype(np.float32)
    return clean, noisy


@pytest.fixture(scope="module")
def calibrations() -> dict[str, Any]:
    """One calibration per adapter, made once (each guard below gets it)."""
    x, _ = digits()
    made = {}
    for kind in ADAPTERS:
        guarded = aimsec_core.guard(_model(kind), sinks=[], policy=False,
                                    constraints={"min_value": 0.0, "max_value": 1.0})
        made[kind] = guarded.calibrate(x[900:1400], fpr=0.05)
    return made


def _guarded(kind: str, calibrations: dict[str, Any], sinks: Any, **settings: Any) -> Any:
    """A guarded model of ``kind`` with the shared calibration (``clock`` is a ``Guard``
    setting that ``guard()`` does not take, hence the guard is built here)."""
    model = _model(kind)
    adapter = adapter_for(model)
    return adapter.wrap(Guard(model, adapter, sinks=sinks, calibration=calibrations[kind],
                              constraints={"min_value": 0.0, "max_value": 1.0}, **settings))


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _verdict_of(guarded: Any, kind: str, x: np.ndarray) -> tuple[bool, tuple[bool, ...]]:
    try:
        _predict(guarded, kind, x)
    except aimsec_core.AdversarialInputError as refused:
        return False, refused.verdict.flags
    return True, guarded.last_verdict.flags


def _round_trip(guarded: Any) -> Any:
    return pickle.loads(pickle.dumps(guarded))


# --- the same guard, in the same process ---------------------------------------------------

@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize("make_copy", [copy.deepcopy, _round_trip], ids=["deepcopy", "pickle"])
def test_a_copy_refuses_what_the_original_refuses_and_writes_the_same_trail(
        kind, make_copy, calibrations, tmp_path):
    audit = AuditLog(file=tmp_path / "audit.jsonl")
    guarded = _guarded(kind, calibrations, [audit], on_flagged="samples", clock=fixed_clock,
                       policy={"max_requests_per_minute": 1000})
    clean, noisy = _batches()
    original = _verdict_of(guarded, kind, noisy)
    assert original[0] is False and sum(original[1]) >= 8  # the calibration refuses it

    twin = make_copy(guarded)
    assert _verdict_of(twin, kind, noisy) == original  # same calibration, same flags
    assert _verdict_of(twin, kind, clean)[0] is True
    ours, theirs = guard_of(guarded), guard_of(twin)
    assert theirs.model is not ours.model
    assert theirs.calibration_id == ours.calibration_id
    assert (theirs.on_flagged, theirs.clock, theirs.mode) == ("samples", fixed_clock, "enforce")
    assert theirs.monitor is not None and theirs.monitor.policy == ours.monitor.policy
    assert theirs.monitor.store is not ours.monitor.store  # memory:// belongs to one guard
    decisions = [line["decision"] for line in _lines(audit.file)]
    assert decisions == ["rejected", "rejected", "allowed"]  # one trail, all three calls
    assert {line["time"] for line in _lines(audit.file)} == {"2023-11-14T22:13:20.000000+00:00"}


def test_deepcopy_shares_sinks_and_pickle_carries_picklable_ones(calibrations, sink):
    guarded = _guarded("sklearn", calibrations, [sink])
    assert guard_of(copy.deepcopy(guarded)).sinks is guard_of(guarded).sinks
    restored = _round_trip(guarded)
    assert [type(s).__name__ for s in guard_of(restored).sinks] == ["ListSink"]


class _Unpicklable:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def record(self, event: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<the pager sink>"


@pytest.mark.parametrize("kind", ADAPTERS)
def test_a_sink_that_cannot_travel_is_refused_by_name_not_dropped(kind, calibrations):
    guarded = _guarded(kind, calibrations, [_Unpicklable()])
    with pytest.raises(UncopyableError, match="the pager sink") as caught:
        pickle.dumps(guarded)
    assert isinstance(caught.value, aimsec_core.ConfigurationError)
    assert isinstance(copy.deepcopy(guarded), type(guarded))  # shared, so a deepcopy works


def test_monitoring_is_off_in_copies_of_a_guard_without_it(calibrations):
    guarded = _guarded("sklearn", calibrations, [], policy=False)
    assert guard_of(_round_trip(guarded)).monitor is None


def test_a_redis_store_is_reopened_by_its_url(calibrations):
    guarded = _guarded("sklearn", calibrations, [], store="redis://127.0.0.1:1/0",
                       policy={"store_failure": "fail_open"})
    twin = guard_of(_round_trip(guarded))
    assert type(twin.monitor.store).__name__ == "RedisStore"
    assert twin.monitor.store.url == "redis://127.0.0.1:1/0"
    assert twin.monitor.store is not guard_of(guarded).monitor.store


def test_a_store_without_a_url_is_refused_by_name(calibrations):
    from aimsec_core.monitoring.memory import MemoryStore

    class Unnamed(MemoryStore):
        url = ""

    from sklearn.base import clone

    store = Unnamed()
    guarded = _guarded("sklearn", calibrations, [], store=store)
    with pytest.raises(UncopyableError, match="monitoring store"):
        pickle.dumps(guarded)
    assert guard_of(clone(guarded)).monitor.store is store  # this process: shared as it is


# --- scikit-learn: clone, refit, cross-validation workers, racing threads -------------------

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_clone_and_refit_keep_the_guard_but_the_calibration(calibrations, tmp_path):
    from sklearn.base import clone

    audit = AuditLog(file=tmp_path / "audit.jsonl")
    guarded = _guarded("sklearn", calibrations, [audit], on_flagged="samples",
                       clock=fixed_clock, policy={"max_requests_per_minute": 500})
    twin = clone(guarded)
    x, y = digits()
    twin.fit(x[:600], y[:600])
    twin.predict(x[:3])
    guard = guard_of(twin)
    assert guard.calibration is None  # it described the model before the refit
    assert (guard.on_flagged, guard.clock) == ("samples", fixed_clock)
    assert guard.monitor.policy == Policy.coerce({"max_requests_per_minute": 500})
    assert guard.sinks is guard_of(guarded).sinks
    assert [line["decision"] for line in _lines(audit.file)] == ["allowed"]


def test_cross_validation_workers_write_to_the_same_trail(tmp_path, monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    monkeypatch.setenv("AIMSEC_ALERTS", "0")
    guarded = aimsec_core.guard(LogisticRegression(max_iter=300), name="cv-model")
    x, y = digits()
    scores = cross_val_score(guarded, x[:600], y[:600], cv=3, n_jobs=2)
    assert len(scores) == 3 and min(scores) > 0.8
    trail = tmp_path / "security_logs" / "audit.jsonl"  # the default sinks, rebuilt there
    lines = _lines(trail)
    assert [line["model"] for line in lines] == ["cv-model"] * 3  # one screened score per fold
    assert [line["decision"] for line in lines] == ["allowed"] * 3


def test_threads_racing_the_first_calls_of_an_unpickled_model_all_detect(calibrations, sink):
    guarded = _guarded("sklearn", calibrations, [sink])
    _, noisy = _batches()
    for restored in (_round_trip(guarded), _refitted_clone(guarded)):
        start = threading.Barrier(8)
        guards, refused = [], []

        def first_call(model: Any = restored) -> None:
            start.wait()
            guards.append(guard_of(model))
            try:
                model.predict(noisy)
            except aimsec_core.AdversarialInputError:
                refused.append(True)

        threads = [threading.Thread(target=first_call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(g) for g in guards}) == 1  # one guard, built once
        if guards[0].calibration is not None:  # the unpickled one keeps it: all detect
            assert len(refused) == 8


def _refitted_clone(guarded: Any) -> Any:
    """A clone fitted with the same data: its guard is built on first use (lazily)."""
    from sklearn.base import clone

    twin = clone(guarded)
    twin.__dict__["estimator_"] = copy.deepcopy(guarded.estimator)  # fitted, no call yet
    return twin


# --- another process ---------------------------------------------------------------------

def _child(payload: bytes, kind: str, result: Any) -> None:
    """Runs in a spawned process: unpickle, call clean then noisy, report the outcomes."""
    guarded = pickle.loads(payload)
    clean, noisy = _batches()
    outcomes = [_verdict_of(guarded, kind, clean)[0], _verdict_of(guarded, kind, noisy)[0]]
    guarded.close()
    result.put(outcomes)


@pytest.mark.parametrize("kind", ADAPTERS)
def test_a_pickle_in_another_process_keeps_the_calibration_and_the_trail(
        kind, calibrations, tmp_path, monkeypatch):
    monkeypatch.setenv("AIMSEC_ALERTS", "0")
    guarded = _guarded(kind, calibrations, None)  # the default sinks: audit, incidents
    _, noisy = _batches()
    assert _verdict_of(guarded, kind, noisy)[0] is False
    trail = tmp_path / "security_logs" / "audit.jsonl"
    assert len(_lines(trail)) == 1

    context = multiprocessing.get_context("spawn")
    result = context.Queue()
    child = context.Process(target=_child, args=(pickle.dumps(guarded), kind, result))
    child.start()
    outcomes = result.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert outcomes == [True, False]  # clean allowed, the noisy batch refused there too
    lines = _lines(trail)
    assert [line["decision"] for line in lines] == ["rejected", "allowed", "rejected"]
    assert lines[1]["calibration"] == lines[2]["calibration"] == lines[0]["calibration"]


def test_a_session_whose_file_is_gone_cannot_be_copied_and_says_why(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    guarded = aimsec_core.guard(ort.InferenceSession(str(path)), sinks=[])
    path.unlink()  # the session runs from memory; a copy must read the file again
    with pytest.raises(UncopyableError, match="model.onnx") as caught:
        copy.deepcopy(guarded)
    assert caught.value.__cause__ is not None
    guarded.run(None, {"x": np.ones((1, 2), np.float32)})  # the original is unharmed


# --- copies taken while other threads call ------------------------------------------------

def _attribute_names(root: Any) -> dict[int, frozenset[str]]:
    """For every object reachable from ``root`` through attributes and containers, the
    names in its ``__dict__``: what ``copy.deepcopy`` iterates, live, for a plain object."""
    found: dict[int, frozenset[str]] = {}
    todo = [root]
    while todo:
        item = todo.pop()
        if id(item) in found or isinstance(item, (np.ndarray, str, bytes, int, float)):
            continue
        if isinstance(item, dict):
            found[id(item)] = frozenset(map(str, item))
            todo.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            found[id(item)] = frozenset()
            todo.extend(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            found[id(item)] = frozenset(vars(item))
            todo.extend(vars(item).values())
    return found


@pytest.mark.parametrize("kind", ADAPTERS)
def test_screening_adds_no_attribute_a_concurrent_copy_would_see_change(kind):
    """A calibration's objects keep the same attributes through their first screenings.
    A detector that added a cache attribute on first use changed a ``__dict__`` while a
    ``copy.deepcopy`` of the guarded model, in another thread, was iterating it:
    ``RuntimeError: dictionary changed size during iteration`` (the Gaussians'
    whitening cache did)."""
    from aimsec_core.detection import DETECTORS

    x, _ = digits()
    guarded = aimsec_core.guard(_model(kind), sinks=[], policy=False, mode="monitor",
                                constraints={"min_value": 0.0, "max_value": 1.0})
    names = [n for n, d in DETECTORS.items()
             if not d.needs_gradient and n != "features"]  # no features from these models
    calibration = guarded.calibrate(x[900:1400], fpr=0.05, detectors=names)
    guard_of(guarded).calibration = calibration
    before = _attribute_names(calibration)
    clean, noisy = _batches()
    for batch in (clean[:1], clean, noisy):
        _predict(guarded, kind, batch)
    after = _attribute_names(calibration)
    changed = {k: sorted(after[k] ^ before[k]) for k in before if after.get(k) != before[k]}
    assert changed == {}


def test_gaussians_pickled_without_their_whitening_cache_load_and_score():
    """A calibration pickled before its first score carried no whitening-cache attribute
    (a guarded model saved by an earlier version): loaded, its first score raised
    ``AttributeError``. The cache is not pickled at all (it is recomputed)."""
    import pickle

    from aimsec_core.detection.gaussian import TiedGaussians

    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(200, 6)), rng.integers(0, 3, 200)
    gaussians = TiedGaussians.fit(features, labels, 0.1)
    earlier = copy.copy(gaussians)
    del earlier.__dict__["_white"]  # as an earlier version pickled it before a score
    loaded = pickle.loads(pickle.dumps(earlier))
    expected = gaussians.squared_distances(features[:5])  # fills the cache
    np.testing.assert_allclose(loaded.squared_distances(features[:5]), expected)
    carried = pickle.loads(pickle.dumps(gaussians))
    assert carried._white is None  # the cache stays behind
    np.testing.assert_allclose(carried.squared_distances(features[:5]), expected)
