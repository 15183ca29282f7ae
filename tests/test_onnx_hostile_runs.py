"""Hostile runs of a guarded onnxruntime session: partial refusals on the asynchronous and
OrtValue paths, the extraction monitor on every run path, fixed-batch shape messages."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import aimsec_core
from aimsec_core import AdversarialInputError, InputFormatError
from tests.cases import digits
from tests.cases.onnx_case import session


@pytest.fixture(scope="module")
def calibration() -> Any:
    x, _ = digits()
    guarded = aimsec_core.guard(session(), sinks=[], policy=False,
                                constraints={"min_value": 0.0, "max_value": 1.0})
    return guarded.calibrate(x[900:1400], fpr=0.05)


@pytest.fixture
def partial(calibration, sink) -> Any:
    """A calibrated session that refuses flagged samples only."""
    return aimsec_core.guard(session(), sinks=[sink], policy=False, calibration=calibration,
                             on_flagged="samples",
                             constraints={"min_value": 0.0, "max_value": 1.0})


def _batch() -> np.ndarray:
    """Four clean digits, then six pushed by +-0.3 per pixel (FGSM-like), which the
    calibration flags."""
    x, _ = digits()
    noisy = np.clip(x[1404:1410] + np.random.default_rng(0).choice([-0.3, 0.3], (6, 64)),
                    0, 1).astype(np.float32)
    return np.vstack([x[1400:1404], noisy])


def test_run_async_hands_the_callback_the_allowed_samples_only(partial, sink):
    # the callback got the outputs of all ten samples, the six refused ones included,
    # while run_async raised naming four allowed samples
    batch = _batch()
    done, got = threading.Event(), []
    with pytest.raises(AdversarialInputError) as caught:
        partial.run_async(None, {"X": batch},
                          lambda out, data, err: (got.append((out, data, err)), done.set()),
                          "token")
    allowed = list(caught.value.allowed)
    assert 0 < len(allowed) < len(batch) and sink.outcomes == ["partial"]
    assert done.wait(30)
    outputs, data, error = got[0]
    assert data == "token" and not error
    want = aimsec_core.unguard(partial).run(None, {"X": batch})
    assert [len(o) for o in outputs] == [len(allowed)] * 2
    for a, b in zip(outputs, want):
        np.testing.assert_array_equal(a, b[allowed])


def test_run_async_of_a_clean_batch_keeps_every_row(partial, sink):
    x = digits()[0][1400:1404]
    done, got = threading.Event(), []
    partial.run_async(None, {"X": x}, lambda out, data, err: (got.append(out), done.set()),
                      None)
    assert done.wait(30) and sink.outcomes == ["allowed"]
    np.testing.assert_array_equal(got[0][1], aimsec_core.unguard(partial).run(None, {"X": x})[1])


def test_run_with_ort_values_refuses_flagged_samples_only(partial, sink):
    batch = _batch()
    with pytest.raises(AdversarialInputError) as caught:
        partial.run_with_ort_values(None, {"X": ort.OrtValue.ortvalue_from_numpy(batch)})
    allowed = list(caught.value.allowed)
    assert sink.outcomes == ["partial"]
    want = aimsec_core.unguard(partial).run(None, {"X": batch})
    got = caught.value.allowed_output
    assert all(isinstance(o, ort.OrtValue) for o in got)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.numpy(), b[allowed])


RUNS = {
    "run": lambda g, x: g.run(None, {"X": x}),
    "run_with_ort_values": lambda g, x: g.run_with_ort_values(
        None, {"X": ort.OrtValue.ortvalue_from_numpy(x)}),
    "run_async": lambda g, x: _run_async(g, x),
}


def _run_async(guarded: Any, x: np.ndarray) -> None:
    done = threading.Event()
    guarded.run_async(None, {"X": x}, lambda *_: done.set(), None)
    assert done.wait(30)


@pytest.mark.parametrize("path", [
    "run",
    # OrtValue outputs are read by the adapter (an extraction attack through
    # run_with_ort_values went unseen: no array library reads them)
    "run_with_ort_values",
    # run_async returns before the model answers: the guard learns from the outputs the
    # callback receives (an extraction attack through run_async went unseen)
    "run_async",
])
def test_the_extraction_monitor_learns_from_every_run_path(path, sink, monkeypatch):
    guarded = aimsec_core.guard(session(), sinks=[sink], mode="monitor")
    extraction = aimsec_core.guard_of(guarded).monitor.extraction
    learnt = []
    observe = extraction.observe
    monkeypatch.setattr(extraction, "observe", lambda key, samples, classes: (
        learnt.append(list(classes)), observe(key, samples, classes))[1])
    x = digits()[0][:2]
    with aimsec_core.client("thief"):
        RUNS[path](guarded, x)
    assert learnt == [aimsec_core.unguard(guarded).run(None, {"X": x})[0].tolist()]



def test_a_monitor_failing_to_learn_from_run_async_still_calls_back(sink, monkeypatch, caplog):
    # the guard learns in onnxruntime's callback thread: its failure must cost the caller
    # neither the callback nor the outputs
    guarded = aimsec_core.guard(session(), sinks=[sink], mode="monitor")
    extraction = aimsec_core.guard_of(guarded).monitor.extraction

    def broken(*args):
        raise RuntimeError("the statistics are broken")

    monkeypatch.setattr(extraction, "observe", broken)
    x = digits()[0][:2]
    got, done = [], threading.Event()
    with aimsec_core.client("thief"):
        guarded.run_async(None, {"X": x}, lambda out, data, err: (got.append((out, err)),
                                                                   done.set()), None)
    assert done.wait(30)
    (outputs, error), = got
    assert not error
    np.testing.assert_array_equal(outputs[0], aimsec_core.unguard(guarded).run(None, {"X": x})[0])
    assert "failed to learn" in caplog.text

def test_a_fixed_batch_mismatch_is_not_called_a_feature_mismatch(sink):
    from onnx import TensorProto

    from tests.test_onnx_adapter import _graph_session

    plain = ort.InferenceSession(_graph_session(
        "fixed", [("Identity", ["x"], ["y"])], [("x", TensorProto.FLOAT, [1, 4])],
        [("y", TensorProto.FLOAT, [1, 4])]), providers=["CPUExecutionProvider"])
    guarded = aimsec_core.guard(plain, sinks=[sink])
    one = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(guarded.run(None, {"x": one})[0], one)
    with pytest.raises(InputFormatError, match=r"\(2, 4\).*\(1, 4\)") as caught:
        guarded.run(None, {"x": np.ones((2, 4), np.float32)})
    assert "features" not in str(caught.value)
    assert sink.outcomes == ["allowed", "rejected"]


def test_an_optional_input_given_as_none_is_left_out(sink):
    # onnxruntime reads None for an optional input as "no value"; the guard refused it as
    # an EmptyInputError ("input 'o' is None")
    from tests.test_onnx_keras_hostile import _optional_input_model

    plain = ort.InferenceSession(_optional_input_model(), providers=["CPUExecutionProvider"])
    guarded = aimsec_core.guard(plain, sinks=[sink])
    x = np.ones((2, 4), np.float32)
    feed = {"x": x, "o": None}
    got, want = guarded.run(None, feed), plain.run(None, feed)
    np.testing.assert_array_equal(got[0], want[0])
    assert not got[1] and not want[1]  # OptionalHasElement: no value given
    with pytest.raises(aimsec_core.NonFiniteInputError):  # a given value is still screened
        guarded.run(None, {"x": x, "o": x * np.nan})
    with pytest.raises(aimsec_core.EmptyInputError):  # None is no value for a required one
        guarded.run(None, {"x": None, "o": x})
    assert sink.outcomes == ["allowed", "rejected", "rejected"]
