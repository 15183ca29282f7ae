"""Adversarial-input detection on an onnxruntime session of several inputs: a graph that
concatenates two float inputs, run as ``run(None, {"image": a, "meta": b})``."""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import aimsec_core  # noqa: E402
from aimsec_core import CalibrationError  # noqa: E402
from aimsec_onnx import OnnxAdapter  # noqa: E402
from tests.cases import digits  # noqa: E402
from tests.cases.two_inputs import (CALIBRATION, HELD_OUT, META, ORDER, X,  # noqa: E402
                                     assert_one_input_calibration_refused)
from tests.cases.two_inputs import meta as _meta  # noqa: E402
from tests.cases.onnx_case import session as digits_session  # noqa: E402
from tests.test_onnx_adapter import _graph_session, _two_input_model  # noqa: E402


@lru_cache(maxsize=1)
def _image_and_meta() -> bytes:
    """A digits MLP (scikit-learn's, 32 hidden units) reading the 64 pixels as ``image``
    and three noise features in [0, 1] as ``meta``, concatenated in the graph."""
    from onnx import TensorProto
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a test model, trained briefly
        mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(
            np.hstack([X, _meta(len(X), 0)]), digits()[1])
    w1, w2 = (w.astype(np.float32) for w in mlp.coefs_)
    b1, b2 = (b.astype(np.float32) for b in mlp.intercepts_)
    return _graph_session(
        "image_and_meta",
        [("Concat", ["image", "meta"], ["joined"], {"axis": 1}),
         ("MatMul", ["joined", "w1"], ["h_pre"]), ("Add", ["h_pre", "b1"], ["h_lin"]),
         ("Relu", ["h_lin"], ["h"]), ("MatMul", ["h", "w2"], ["z_pre"]),
         ("Add", ["z_pre", "b2"], ["z"]), ("Softmax", ["z"], ["probabilities"], {"axis": 1})],
        [("image", TensorProto.FLOAT, ["N", 64]), ("meta", TensorProto.FLOAT, ["N", 3])],
        [("probabilities", TensorProto.FLOAT, ["N", 10])],
        {"w1": w1, "b1": b1, "w2": w2, "b2": b2})


def _session(model: bytes | None = None) -> ort.InferenceSession:
    return ort.InferenceSession(model or _image_and_meta(), providers=["CPUExecutionProvider"])


def _feed(rows: np.ndarray, scale: float = 1.0, meta_scale: float = 1.0) -> dict:
    return {"image": X[rows] * scale, "meta": META[rows] * meta_scale}


def test_a_calibration_for_one_input_is_refused_by_a_session_of_two(sink, tmp_path):
    session = _session()
    guarded = aimsec_core.guard(session, sinks=[sink])
    made = aimsec_core.guard(digits_session(), sinks=[]).calibrate(X[:300], fpr=0.05)
    assert_one_input_calibration_refused(guarded, made, tmp_path / "single.npz")
    feed = _feed(HELD_OUT[:5])
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    assert set(sink.outcomes) == {"allowed"}


@pytest.mark.parametrize("as_dict", [False, True], ids=["list-data", "dict-data"])
def test_a_session_of_two_inputs_calibrates_and_holds_its_false_positive_rate(
        sink, as_dict):
    """calibrate() refused a two-input session's data ("the detectors read one input");
    the detectors now read each sample's inputs joined: the verdicts are per sample, the
    session's answers are the plain session's, clean held-out data is flagged at about
    the calibrated rate and inputs 100 times too large are flagged."""
    session = _session()
    guarded = aimsec_core.guard(session, sinks=[sink], mode="monitor")
    feed = _feed(CALIBRATION)
    made = guarded.calibrate(feed if as_dict else [feed["image"], feed["meta"]], fpr=0.05)
    assert [d.name for d in made.suite.detectors] == [
        "margin", "density", "sparsity", "neighbours", "shift", "robust"]  # no gradients
    assert made.input_shapes == ((64,), (3,)) and made.sample_shape == (67,)
    feed = _feed(HELD_OUT)
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    flags = guarded.last_verdict.flags
    assert len(flags) == 200 and np.mean(flags) < 0.15  # 5% +- binomial spread
    guarded.run(None, _feed(HELD_OUT[:20], scale=100, meta_scale=100))
    assert all(guarded.last_verdict.flags)
    guarded.run(None, _feed(HELD_OUT[:20], meta_scale=100))  # the second input alone
    assert all(guarded.last_verdict.flags)
    values = {name: ort.OrtValue.ortvalue_from_numpy(a)
              for name, a in _feed(HELD_OUT[:20], meta_scale=100).items()}
    guarded.run_with_ort_values(None, values)
    assert all(guarded.last_verdict.flags)


def test_detectors_reading_transformed_copies_and_a_saved_calibration(sink, tmp_path):
    """Squeezing and noise hand the session their rows split back into its inputs; the
    calibration file keeps the input shapes and screens the same on a guard that loads
    it."""
    session = _session()
    guarded = aimsec_core.guard(session, sinks=[sink], mode="monitor")
    names = ["squeeze", "noise", "jump", "sparsity", "neighbours", "density"]
    made = guarded.calibrate(_feed(CALIBRATION), fpr=0.05, detectors=names,
                             reference=[X[ORDER[600:1000]], META[ORDER[600:1000]]])
    assert made.summary()["input_shapes"] == [[64], [3]]
    loaded = aimsec_core.guard(session, sinks=[], mode="monitor",
                               calibration=guarded.save_calibration(tmp_path / "two.npz"))
    assert loaded.__aimsec_guard__.calibration.input_shapes == ((64,), (3,))
    for each in (guarded, loaded):
        each.run(None, _feed(HELD_OUT))
        assert len(each.last_verdict.flags) == 200 and np.mean(each.last_verdict.flags) < 0.15
    assert guarded.last_verdict.scores == loaded.last_verdict.scores
    guarded.run(None, _feed(HELD_OUT[:20], scale=100, meta_scale=100))
    assert all(guarded.last_verdict.flags)


def test_a_float_and_an_integer_input_calibrate_in_declared_order(sink):
    """The digits MLP split into float ``upper`` pixels and int64 ``lower`` pixel counts:
    the integer rows squeezing and noise transform are rounded back to int64, which the
    session insists on."""
    session = _session(_two_input_model())
    guarded = aimsec_core.guard(session, sinks=[sink], mode="monitor")

    def split(rows: np.ndarray) -> list[np.ndarray]:
        return [X[rows, :32], np.rint(X[rows, 32:] * 16).astype(np.int64)]

    made = guarded.calibrate(split(CALIBRATION), fpr=0.05,
                             detectors=["margin", "squeeze", "noise", "density"])
    assert made.input_shapes == ((32,), (32,))
    upper, lower = split(HELD_OUT)
    feed = {"upper": upper, "lower": lower}
    np.testing.assert_array_equal(guarded.run(None, feed)[0], session.run(None, feed)[0])
    assert len(guarded.last_verdict.flags) == 200 and np.mean(guarded.last_verdict.flags) < 0.15
    assert OnnxAdapter(session).scores([upper, lower]).shape == (200, 10)


def test_what_a_session_of_two_inputs_cannot_be_calibrated_or_screened_with_is_refused(
        sink):
    guarded = aimsec_core.guard(_session(), sinks=[sink])
    feed = _feed(CALIBRATION)
    with pytest.raises(CalibrationError, match=r"a list \(in this order\) or a dict \(by "
                                               r"name\) of one array per input; received a "
                                               r"ndarray"):
        guarded.calibrate(feed["image"])
    with pytest.raises(CalibrationError, match=r"received a dict of \['image', 'extra'\]"):
        guarded.calibrate({"image": feed["image"], "extra": feed["meta"]})
    with pytest.raises(CalibrationError, match="must be clean and valid"):
        guarded.calibrate([feed["image"], feed["meta"].astype(np.float64)])
    with pytest.raises(aimsec_core.ConfigurationError, match="gradient"):
        guarded.calibrate(feed, detectors=["gradient"])
    assert guarded.__aimsec_guard__.calibration is None
    guarded.calibrate(feed, detectors=["margin", "density"])
    with pytest.raises(aimsec_core.InvalidInputError, match="disagree on dimension 'N'"):
        guarded.run(None, {"image": X[:4], "meta": META[:3]})
    assert sink.outcomes[-1] == "rejected"
