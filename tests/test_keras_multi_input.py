"""Adversarial-input detection on a Keras model of several inputs (functional API, two
``keras.Input`` concatenated), called with a list or a dict of arrays."""

from __future__ import annotations

import warnings
from functools import lru_cache

import keras
import numpy as np
import pytest

import aimsec_core
from aimsec_core import CalibrationError
from tests.cases import digits
from tests.cases.two_inputs import (CALIBRATION, HELD_OUT, META, ORDER, X,
                                     assert_one_input_calibration_refused)
from tests.cases.two_inputs import meta as _meta


@lru_cache(maxsize=2)
def _trained(as_dict: bool = False) -> keras.Model:
    """A digits classifier reading the 64 pixels as ``image`` and three noise features in
    [0, 1] as ``meta``, trained a few epochs."""
    keras.utils.set_random_seed(3)
    image, meta = keras.Input((64,), name="image"), keras.Input((3,), name="meta")
    hidden = keras.layers.Dense(32, activation="relu")(
        keras.layers.Concatenate()([image, meta]))
    out = keras.layers.Dense(10, activation="softmax")(hidden)
    model = keras.Model({"image": image, "meta": meta} if as_dict else [image, meta], out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = digits()
    model.fit({"image": x, "meta": _meta(len(x), 0)}, y, epochs=8, batch_size=64, verbose=0)
    return model


def _single_input_calibration() -> aimsec_core.Calibration:
    """A calibration made on a one-input model whose input is shaped as ``image``."""
    keras.utils.set_random_seed(4)
    single = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    return aimsec_core.guard(single, sinks=[]).calibrate(digits()[0][:300], fpr=0.05)


def test_a_calibration_for_one_input_is_refused_by_a_model_of_two(sink, tmp_path):
    """A one-input calibration forced onto a two-input model (force=True, or set on the
    guard directly) loaded, and then every call raised Keras' own ValueError ("expects 2
    named input(s)"): the detectors ran the model on its first input alone. It is now a
    CalibrationError when it is installed, and the calls go on unscreened."""
    x = digits()[0]
    guarded = aimsec_core.guard(_trained(), sinks=[sink])
    made = _single_input_calibration()
    assert_one_input_calibration_refused(guarded, made, tmp_path / "single.npz")
    for given in ([x[:5], _meta(5, 1)], {"image": x[:5], "meta": _meta(5, 1)}):
        assert guarded.predict(given, verbose=0).shape == (5, 10)
        assert tuple(guarded(given).shape) == (5, 10)
    assert set(sink.outcomes) == {"allowed"}


# --- calibrated on all its inputs ------------------------------------------------------------

def _given(rows: np.ndarray, as_dict: bool, scale: float = 1.0, meta_scale: float = 1.0):
    image, meta = X[rows] * scale, META[rows] * meta_scale
    return {"image": image, "meta": meta} if as_dict else [image, meta]


@pytest.fixture(params=[False, True], ids=["list-inputs", "dict-inputs"])
def as_dict(request):
    return request.param


@pytest.mark.filterwarnings("ignore:The structure of `inputs`")
def test_a_model_of_two_inputs_calibrates_and_holds_its_false_positive_rate(sink, as_dict):
    """calibrate() refused a two-input model's data (a list or dict of its arrays). The
    detectors now read each sample's inputs flattened and joined, the gradient of each
    input joined alike: the verdicts are per sample, clean held-out data is flagged at
    about the calibrated rate and inputs 100 times too large are flagged."""
    guarded = aimsec_core.guard(_trained(as_dict), sinks=[sink], mode="monitor")
    made = guarded.calibrate(_given(CALIBRATION, as_dict), fpr=0.05)
    assert [d.name for d in made.suite.detectors] == [
        "boundary", "density", "sparsity", "neighbours", "shift", "robust"]
    assert made.input_shapes == ((64,), (3,)) and made.sample_shape == (67,)
    for run in (lambda data: guarded.predict(data, verbose=0), guarded):
        run(_given(HELD_OUT, as_dict))
        flags = guarded.last_verdict.flags
        assert len(flags) == 200 and np.mean(flags) < 0.15  # 5% +- binomial spread
        run(_given(HELD_OUT[:20], as_dict, scale=100, meta_scale=100))
        assert all(guarded.last_verdict.flags)
        run(_given(HELD_OUT[:20], as_dict, meta_scale=100))  # the second input alone
        assert all(guarded.last_verdict.flags)


def test_the_gradient_detector_reads_the_gradient_of_every_input(sink):
    from aimsec_keras import KerasAdapter

    model = _trained()
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor")
    guarded.calibrate(_given(CALIBRATION, False), fpr=0.05, detectors=["gradient", "margin"])
    given = _given(HELD_OUT[:30], False)
    predicted = np.asarray(model.predict(given, verbose=0)).argmax(axis=1)
    image, meta = KerasAdapter(model).input_gradient(given, predicted)
    expected = np.log(np.linalg.norm(np.concatenate([image, meta], axis=1), axis=1) + 1e-12)
    for run in (lambda data: guarded.predict(data, verbose=0), guarded):
        run(given)
        np.testing.assert_allclose(guarded.last_verdict.scores["gradient"], expected,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:The structure of `inputs`")
def test_detectors_reading_the_input_or_transformed_copies_read_the_joined_row(
        sink, tmp_path):
    """The input-space detectors, squeezing, noise and the internal features on a model
    built on a dict of inputs, from dict data and list reference data; the calibration
    file keeps the input shapes and screens the same on a guard that loads it."""
    model = _trained(True)
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor")
    names = ["squeeze", "noise", "jump", "sparsity", "neighbours", "density", "features"]
    made = guarded.calibrate(_given(CALIBRATION, True), fpr=0.05, detectors=names,
                             reference=_given(ORDER[600:1000], False))
    assert made.summary()["input_shapes"] == [[64], [3]]
    loaded = aimsec_core.guard(model, sinks=[], mode="monitor",
                               calibration=guarded.save_calibration(tmp_path / "two.npz"))
    assert loaded.__aimsec_guard__.calibration.input_shapes == ((64,), (3,))
    for each in (guarded, loaded):
        each.predict(_given(HELD_OUT, True), verbose=0)
        assert len(each.last_verdict.flags) == 200 and np.mean(each.last_verdict.flags) < 0.15
    assert guarded.last_verdict.scores == loaded.last_verdict.scores
    guarded.predict(_given(HELD_OUT[:20], True, scale=100, meta_scale=100), verbose=0)
    assert all(guarded.last_verdict.flags)


def test_what_a_model_of_two_inputs_cannot_be_calibrated_with_is_refused(sink):
    model = _trained()
    guarded = aimsec_core.guard(model, sinks=[sink])
    data = _given(CALIBRATION, False)
    with pytest.raises(aimsec_core.ConfigurationError, match="no image: leave image_shape"):
        guarded.calibrate(data, detectors=["squeeze", "margin"], image_shape=(8, 8))
    with pytest.raises(CalibrationError, match=r"a list \(in this order\) or a dict \(by "
                                               r"name\) of one array per input; received a "
                                               r"ndarray"):
        guarded.calibrate(data[0])
    with pytest.raises(CalibrationError, match=r"received a dict of \['image', 'extra'\]"):
        guarded.calibrate({"image": data[0], "extra": data[1]})
    dirty = data[1].copy()
    dirty[3, 1] = np.nan
    with pytest.raises(CalibrationError, match="must be clean and valid: .*'meta'"):
        guarded.calibrate([data[0], dirty])
    with pytest.raises(CalibrationError, match=r"reference data must be clean and valid: "
                                               r"input 'image' has shape \(400, 3\)"):
        guarded.calibrate(data, reference={"image": data[1], "meta": data[0]})
    assert guarded.__aimsec_guard__.calibration is None
    made = guarded.calibrate(data, detectors=["margin", "density"])
    single = aimsec_core.guard(keras.Sequential([keras.Input((67,)), keras.layers.Dense(10)]),
                               sinks=[])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # made for another model
        with pytest.raises(CalibrationError, match=r"made on 2 inputs \(64,\) and \(3,\); "
                                                   "this model takes one input"):
            single.__aimsec_guard__.use_calibration(made, force=True)


def test_a_calibration_file_s_input_shapes_are_checked():
    from aimsec_core.detection import calibration_file

    made = aimsec_core.guard(_trained(), sinks=[]).calibrate(
        _given(CALIBRATION, False), detectors=["margin"])
    meta = made.summary()
    calibration_file.check_meta(meta)
    for damaged in ([[64], [4]], [[64]], "64,3", [[64], [0, 3]], [[64], [True, 3]]):
        with pytest.raises(CalibrationError, match="'input_shapes'"):
            calibration_file.check_meta({**meta, "input_shapes": damaged})


@pytest.mark.xfail(strict=True, raises=(ValueError, RuntimeError), reason=(
    "a subclassed model taking a list declares no inputs, so a one-input calibration "
    "forced onto it cannot be told apart from one that fits when it is installed; its "
    "detectors then run the model on the list's first array, and Keras' own error "
    "(ValueError on TensorFlow, RuntimeError on torch) ends the call"))
def test_a_one_input_calibration_forced_onto_a_subclassed_model_of_two_arrays(sink):
    class TwoArrays(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(10, activation="softmax")

        def call(self, arrays):
            return self.dense(keras.ops.concatenate(arrays, axis=1))

    model = TwoArrays()
    model([X[:2], META[:2]])
    guarded = aimsec_core.guard(model, sinks=[sink])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # made for another model
        try:
            guarded.__aimsec_guard__.use_calibration(_single_input_calibration(), force=True)
        except CalibrationError:
            return  # refused when installed: what should happen
    try:
        guarded.predict([X[:5], META[:5]], verbose=0)
    except aimsec_core.AimsecError:
        return  # a typed error naming what was wrong: what should happen


def test_a_calibration_of_two_inputs_is_refused_where_the_adapter_cannot_run_them():
    """Forced onto an ONNX graph of two feeds through an adapter that runs a model on
    one array (the ONNX adapter's capabilities without ``several_inputs``)."""
    import dataclasses

    ort = pytest.importorskip("onnxruntime")
    from aimsec_core.guard import Guard
    from aimsec_onnx import OnnxAdapter
    from tests.test_onnx_adapter import _two_input_model as onnx_two_inputs

    class OneArray(OnnxAdapter):
        capabilities = dataclasses.replace(OnnxAdapter.capabilities, several_inputs=False)

    session = ort.InferenceSession(onnx_two_inputs(), providers=["CPUExecutionProvider"])
    made = aimsec_core.guard(_trained(), sinks=[]).calibrate(
        _given(CALIBRATION, False), detectors=["margin"])
    guard = Guard(session, OneArray(session), sinks=[])
    with pytest.raises(CalibrationError, match=r"\['upper', 'lower'\], and calibration "
                                               "data is a list of 2 .*cannot run a model "
                                               "of several inputs"):
        guard.calibrate([np.zeros((40, 32), np.float32), np.zeros((40, 32), np.int64)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # made for another model
        with pytest.raises(CalibrationError, match="onnx adapter cannot run a model "
                                                   "of several inputs"):
            guard.use_calibration(made, force=True)
    assert guard.calibration is None


def test_a_list_for_a_model_built_on_a_dict_of_unsorted_keys_is_refused_typed(sink):
    """Keras takes a list or tuple for a model built on a dict only where the dict's keys
    are in sorted order; otherwise it raises its own ValueError. The guard screened such
    a list in sorted order and let Keras' error end the call; it is now refused with an
    InputFormatError saying to pass a dict, and a dict runs as on the plain model."""
    zeta, alpha = keras.Input((3,), name="zeta"), keras.Input((5,), name="alpha")
    out = keras.layers.Dense(4)(keras.layers.Concatenate()([zeta, alpha]))
    model = keras.Model({"zeta": zeta, "alpha": alpha}, out)
    z, a = np.ones((2, 3), np.float32), np.ones((2, 5), np.float32)
    with pytest.raises(ValueError):
        model.predict([a, z], verbose=0)  # what the plain model does, in sorted order too
    guarded = aimsec_core.guard(model, sinks=[sink])
    for given in ([a, z], (a, z), [z, a]):
        for run in (lambda: guarded.predict(given, verbose=0), lambda: guarded(given),
                    lambda: guarded.predict_on_batch(given)):
            with pytest.raises(aimsec_core.InputFormatError,
                               match=r"built on a dict of inputs \['zeta', 'alpha'\].*"
                                     r"by name only; received a (list|tuple)"):
                run()
    given = {"alpha": a, "zeta": z}
    np.testing.assert_array_equal(guarded.predict(given, verbose=0),
                                  model.predict(given, verbose=0))
