"""A calibration file names the model it was made for: another model's weights are refused,
the same model reloaded or cloned is accepted (torch, Keras, onnxruntime)."""

from __future__ import annotations

import warnings

import pytest

import aimsec_core
from aimsec_core import CalibrationError
from tests.cases import digits


def _calibrated_file(model, x, tmp_path, **guard_options):
    guarded = aimsec_core.guard(model, sinks=[], policy=False, **guard_options)
    guarded.calibrate(x, fpr=0.05, detectors=["density"])
    return guarded.save_calibration(tmp_path / "calibration.npz")


def test_torch_a_file_for_other_weights_is_refused_and_the_same_weights_load(tmp_path):
    torch = pytest.importorskip("torch")
    x = torch.tensor(digits()[0][:60])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 10))
    saved = _calibrated_file(model, x, tmp_path)
    other = torch.nn.Sequential(torch.nn.Linear(64, 10))  # same architecture, new weights
    with pytest.raises(CalibrationError, match="another model"):
        aimsec_core.guard(other, sinks=[], calibration=saved)
    other.load_state_dict(model.state_dict())  # a checkpoint of the calibrated model
    guarded = aimsec_core.guard(other, sinks=[], calibration=saved)
    assert aimsec_core.guard_of(guarded).calibration is not None


def test_keras_the_same_model_reloaded_or_cloned_accepts_its_calibration(tmp_path):
    keras = pytest.importorskip("keras")
    x = digits()[0][:60]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    saved = _calibrated_file(model, x, tmp_path)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")  # its input is renamed
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for same in (reloaded, clone):
        guarded = aimsec_core.guard(same, sinks=[], calibration=saved)
        assert aimsec_core.guard_of(guarded).calibration is not None
    other = keras.models.clone_model(model)  # fresh weights
    with pytest.raises(CalibrationError, match="another model"):
        aimsec_core.guard(other, sinks=[], calibration=saved)


def test_onnx_a_file_for_another_model_is_refused(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = digits()

    def exported(n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a short fit does not converge
            fitted = LogisticRegression(max_iter=50).fit(x[:n], y[:n])
        return to_onnx(fitted, x[:1], options={"zipmap": False}).SerializeToString()

    def session(model_bytes):
        return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])

    first, second = exported(300), exported(200)
    saved = _calibrated_file(session(first), x[900:960], tmp_path)
    with pytest.raises(CalibrationError, match="another model"):
        aimsec_core.guard(session(second), sinks=[], calibration=saved)
    guarded = aimsec_core.guard(session(first), sinks=[], calibration=saved)
    assert aimsec_core.guard_of(guarded).calibration is not None
