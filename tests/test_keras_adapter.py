"""The Keras adapter: a guarded model is the original model, with its predict paths screened.

Runs on the backend ``KERAS_BACKEND`` names (TensorFlow by default);
``test_torch_backend_in_a_subprocess`` runs the conformance suite and this file again on
the torch backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import aimsec_core
from aimsec_core import InputFormatError, NonFiniteInputError, ValueRangeError
from aimsec_keras import KerasAdapter
from tests.cases import digits
from tests.cases.keras_case import CASE
from tests.conftest import write_after_check

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def guarded(sink):
    return aimsec_core.guard(CASE.model(), name="digits", sinks=[sink],
                             constraints={"min_value": 0.0, "max_value": 1.0})


def _batch(n: int = 8, start: int = 0) -> np.ndarray:
    return digits()[0][start:start + n].copy()


# --- the guarded object is the original model ----------------------------------------------

def test_guarded_model_passes_for_the_original(guarded):
    model = CASE.model()
    assert isinstance(guarded, keras.Model) and isinstance(guarded, keras.Sequential)
    assert aimsec_core.unguard(guarded) is model
    assert isinstance(aimsec_core.guard_of(guarded).adapter, KerasAdapter)
    assert guarded.layers == model.layers and guarded.optimizer is model.optimizer
    assert guarded.compiled and guarded.loss == model.loss
    for ours, theirs in zip(guarded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    lines: list[str] = []
    guarded.summary(print_fn=lines.append)
    assert "dense" in "".join(lines)
    assert {"last_verdict", "calibrate", "layers"} <= set(dir(guarded))
    assert "guarded" in repr(guarded)


def test_attribute_writes_reach_the_original(guarded):
    model = CASE.model()
    guarded.trainable = False
    try:
        assert model.trainable is False and not model.trainable_weights
    finally:
        guarded.trainable = True
    guarded.note = "set through the guard"
    assert model.note == "set through the guard"
    del guarded.note
    assert not hasattr(model, "note")


def test_guarded_model_cannot_be_pickled_into_a_broken_copy(guarded):
    import copy

    with pytest.raises(TypeError, match="unguard"):
        copy.copy(guarded)


# --- guarded calls -------------------------------------------------------------------------

def test_call_and_evaluate_are_guarded_and_unchanged(guarded, sink):
    model = CASE.model()
    x, y = _batch(16), digits()[1][:16]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(guarded(x, training=False)),
                                  keras.ops.convert_to_numpy(model(x, training=False)))
    np.testing.assert_array_equal(guarded.predict_on_batch(x), model.predict_on_batch(x))
    assert guarded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert sink.outcomes == ["allowed"] * 3
    x[3, 5] = np.nan
    for call in (lambda: guarded(x), lambda: guarded.evaluate(x, y, verbose=0),
                 lambda: guarded.predict_on_batch(x)):
        with pytest.raises(NonFiniteInputError, match="'pixels'") as caught:
            call()
        assert caught.value.verdict.flags[3]
    assert sink.outcomes[3:] == ["rejected"] * 3


def test_backend_tensors_are_screened(guarded):
    x = _batch(4)
    x[1, 0] = 3.0
    tensor = keras.ops.convert_to_tensor(x)
    with pytest.raises(ValueRangeError):
        guarded.predict(tensor, verbose=0)
    assert guarded.last_verdict.flags == (False, True, False, False)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.SparseTensor is TensorFlow's")
def test_a_sparse_tensor_declaring_more_than_max_size_is_refused_before_it_is_made_dense(
        guarded, sink):
    """The guard reads a tf.SparseTensor made dense: one stored value in a shape of 10^12
    places had TensorFlow allocate for all of them (12 times max_size, 3 * 10^8 x 4,
    took seconds and gigabytes) before the core counted them; it is now refused from
    its shape."""
    import tensorflow as tf

    one = tf.SparseTensor(indices=[[0, 0]], values=[1.0], dense_shape=[10**6, 10**6])
    with pytest.raises(aimsec_core.InputTooLargeError, match="before it was read"):
        guarded(one)
    small = tf.SparseTensor(indices=[[0, 0]], values=[0.5], dense_shape=[2, 64])
    assert guarded(small).shape[0] == 2  # still read made dense, as before


def test_torch_tensors_are_read_as_the_torch_adapter_reads_them(guarded, sink):
    """The adapter took any torch tensor as it was: a sparse, nested or meta one raised
    torch's own error out of the guarded call (from DLPack or the content hash), and a
    negative view (logically -0.5) was checked as its raw memory (0.5) and allowed.
    torch's adapter reads them: the first are format errors, the view is checked as the
    values the model reads."""
    torch = pytest.importorskip("torch")

    dense = torch.full((2, 64), 0.5)
    for unreadable, named in ((dense.to_sparse(), "sparse"), (torch.empty(2, 64, device="meta"),
                              "meta"), (torch.nested.nested_tensor([dense[0], dense[1]]),
                                        "nested")):
        with pytest.raises(InputFormatError, match=named):
            guarded(unreadable)
    with pytest.raises(ValueRangeError, match="outside the allowed range"):
        guarded(torch._neg_view(dense))
    assert sink.outcomes == ["rejected"] * 4


def test_symbolic_input_is_refused_with_the_way_out(guarded, sink):
    with pytest.raises(aimsec_core.UnguardedCallError, match="unguard"):
        guarded(keras.Input((64,)))
    with pytest.raises(InputFormatError, match="unguard"):  # predict: a bad input, recorded
        guarded.predict(keras.Input((64,)), verbose=0)
    assert sink.outcomes == ["rejected"]


def _two_input_model(as_dict: bool = False) -> keras.Model:
    keras.utils.set_random_seed(1)
    image, meta = keras.Input((64,), name="image"), keras.Input((3,), name="meta")
    merged = keras.layers.Concatenate()([image, meta])
    out = keras.layers.Dense(10, activation="softmax")(merged)
    return keras.Model({"image": image, "meta": meta} if as_dict else [image, meta], out)


@pytest.mark.parametrize("as_dict", [False, True], ids=["list-inputs", "dict-inputs"])
def test_every_input_of_a_multi_input_model_is_screened(sink, as_dict):
    model = _two_input_model(as_dict)
    guarded = aimsec_core.guard(model, sinks=[sink], constraints={"max_value": 1.0})
    assert [s.describe() for s in guarded.__aimsec_guard__.adapter.signature()] == [
        "image: float32 (N, 64)", "meta: float32 (N, 3)"]
    image, meta = _batch(5), np.full((5, 3), 0.5, np.float32)
    good = {"image": image, "meta": meta}
    if not as_dict:
        np.testing.assert_array_equal(guarded.predict([image, meta], verbose=0),
                                      model.predict([image, meta], verbose=0))
    np.testing.assert_array_equal(guarded.predict(good, verbose=0),
                                  model.predict(good, verbose=0))
    bad_meta = meta.copy()
    bad_meta[4, 1] = 7.0
    with pytest.raises(ValueRangeError, match="input 'meta'") as caught:
        guarded.predict({"image": image, "meta": bad_meta}, verbose=0)
    assert caught.value.verdict.flags == (False,) * 4 + (True,)
    with pytest.raises(InputFormatError, match=r"input 'meta' has shape \(5, 4\)"):
        guarded.predict({"image": image, "meta": np.zeros((5, 4), np.float32)}, verbose=0)
    with pytest.raises(InputFormatError, match="input 'meta': missing from the call"):
        guarded.predict({"image": image}, verbose=0)
    with pytest.raises(InputFormatError, match="input 'meta': missing: the call gives 1 input"):
        guarded.predict([image] if not as_dict else image, verbose=0)
    with pytest.raises(InputFormatError, match="input 'extra': no input of the model has"):
        guarded.predict({**good, "extra": meta}, verbose=0)
    with pytest.raises(InputFormatError, match="the call gives 3 inputs; the model takes 2"):
        guarded.predict([image, meta, meta], verbose=0)
    with pytest.raises(InputFormatError, match="batch size"):
        guarded.predict({"image": image, "meta": meta[:4]}, verbose=0)


@pytest.mark.parametrize("as_dict", [False, True], ids=["list-inputs", "dict-inputs"])
def test_each_input_of_a_multi_input_model_is_read_as_checked(sink, as_dict):
    """Another thread's write into either input after the check never reaches the model,
    and the caller's list or dict is left as it was given."""
    model = _two_input_model(as_dict)
    image, meta = _batch(5), np.full((5, 3), 0.5, np.float32)
    given = {"image": image, "meta": meta} if as_dict else [image, meta]
    expected = model.predict({"image": image.copy(), "meta": meta.copy()}, verbose=0)
    guarded = aimsec_core.guard(model, sinks=[sink], constraints={"max_value": 1.0})

    def write() -> None:
        image[...], meta[...] = 1e30, -1e30
    write_after_check(guarded, write)
    np.testing.assert_array_equal(guarded.predict(given, verbose=0), expected)
    assert (given["meta"] if as_dict else given[1]) is meta and sink.outcomes == ["allowed"]


def test_a_subclassed_model_taking_a_list_has_each_array_screened(sink):
    class TwoArrays(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, arrays):
            return self.dense(keras.ops.concatenate(arrays, axis=1))

    guarded = aimsec_core.guard(TwoArrays(), sinks=[sink], constraints={"max_value": 1.0})
    a, b = np.ones((2, 2), np.float32), np.ones((2, 1), np.float32)
    assert guarded.predict(x=[a, b], verbose=0).shape == (2, 3)  # x as a keyword, too
    with pytest.raises(ValueRangeError, match=r"input 'x\[1\]'"):
        guarded.predict([a, b * 5], verbose=0)
    with pytest.raises(InputFormatError, match="disagree on the batch size"):
        guarded.predict([a, b[:1]], verbose=0)


def test_a_model_that_learns_its_input_on_first_call_is_checked_from_then_on(sink):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.layers.Dense(10, activation="softmax")])  # no Input
    guarded = aimsec_core.guard(model, sinks=[sink])
    guarded.predict(_batch(4), verbose=0)  # builds the model; nothing declared to check yet
    with pytest.raises(InputFormatError, match=r"expects .*\(N, 64\)"):
        guarded.predict(np.zeros((4, 63), np.float32), verbose=0)
    assert guarded.predict(_batch(7), verbose=0).shape == (7, 10)  # any batch size


# --- data pipelines: each batch screened as Keras reads it ---------------------------------

class _Digits(keras.utils.PyDataset):
    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        self.x = x

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> np.ndarray:
        return self.x[i * 10:(i + 1) * 10]


def _pipelines():
    import tensorflow as tf
    import torch

    return {
        "generator": lambda x: ((x[i:i + 10],) for i in range(0, 40, 10)),
        "pydataset": _Digits,
        "tf.data": lambda x: tf.data.Dataset.from_tensor_slices(x).batch(10),
        "dataloader": lambda x: torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(x)), batch_size=10),
    }


@pytest.mark.filterwarnings("ignore:Your input ran out of data")  # Keras' own, for generators
@pytest.mark.parametrize("kind", ["generator", "pydataset", "tf.data", "dataloader"])
def test_pipeline_batches_are_screened_as_they_are_read(guarded, sink, kind):
    make = _pipelines()[kind]
    x = _batch(40)
    np.testing.assert_allclose(guarded.predict(make(x), verbose=0),
                               CASE.model().predict(make(x), verbose=0), rtol=0, atol=0)
    assert sink.outcomes == ["allowed"] * 4
    sink.events.clear()
    x[25, 3] = 1.5  # third batch, sample 5
    with aimsec_core.client("198.51.100.4"), pytest.raises(ValueRangeError) as caught:
        guarded.predict(make(x), verbose=0)
    # TensorFlow reads later batches on its own threads: still the caller's client, the
    # refusal raised as itself, and the last verdict is the refused batch's.
    assert sink.outcomes == ["allowed", "allowed", "rejected"]
    assert {e.verdict.client for e in sink.events} == {"198.51.100.4"}
    assert guarded.last_verdict is caught.value.verdict
    assert caught.value.verdict.flags[5] and sum(caught.value.verdict.flags) == 1
    sink.events.clear()
    x[0, 0] = -1.0  # the first batch: Keras never gets any data
    with pytest.raises(ValueRangeError):
        guarded.predict(make(x), verbose=0)
    assert sink.outcomes == ["rejected"]


def test_evaluate_screens_the_inputs_of_a_labelled_pipeline(guarded, sink):
    import tensorflow as tf

    x, y = _batch(40), digits()[1][:40]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(20)
    assert guarded.evaluate(data, verbose=0) == CASE.model().evaluate(data, verbose=0)
    assert sink.outcomes == ["allowed"] * 2
    monitored = aimsec_core.guard(CASE.model(), mode="monitor", sinks=[sink],
                                  constraints={"max_value": 1.0})
    x[30, 0] = 2.0
    monitored.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(20), verbose=0)
    assert sink.outcomes[2:] == ["allowed", "flagged"]


# --- gradients: a one-layer softmax model checked by hand ----------------------------------

W = np.array([[1.0, -1.0, 0.5], [0.0, 2.0, -0.5], [-1.0, 0.0, 1.0], [0.5, 0.5, 0.0]],
             np.float32)
B = np.array([0.1, -0.2, 0.0], np.float32)
X = np.array([[0.2, 0.4, 0.1, 0.9], [1.0, 0.0, 0.3, 0.2]], np.float32)


def _softmax_layer(activation: str | None = "softmax") -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation=activation)])
    model.set_weights([W, B])
    return model


def _by_hand(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p = softmax(xW + b); d(-log p_y)/dx = (p - onehot(y)) W^T."""
    z = X.astype(np.float64) @ W + B
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p, (p - np.eye(3)[labels]) @ W.T


@pytest.mark.parametrize("activation", ["softmax", None], ids=["probabilities", "logits"])
def test_gradient_matches_the_hand_computation(activation):
    model = _softmax_layer(activation)
    adapter = KerasAdapter(model)
    labels = np.array([2, 0])
    p, expected = _by_hand(labels)
    np.testing.assert_allclose(adapter.input_gradient(X, labels), expected, atol=1e-5)
    np.testing.assert_allclose(adapter.scores(X), p, atol=1e-6)


def test_forward_with_gradient_is_one_pass_at_the_predicted_label():
    model = _softmax_layer()
    adapter = KerasAdapter(model)
    before = [w.copy() for w in model.get_weights()]
    output, scores, gradient = adapter.forward_with_gradient(None, X)
    predicted = _by_hand(np.zeros(2, int))[0].argmax(1)
    p, expected = _by_hand(predicted)
    assert scores.argmax(1).tolist() == predicted.tolist()
    np.testing.assert_allclose(gradient, expected, atol=1e-5)
    np.testing.assert_allclose(scores, p, atol=1e-6)
    # The output is what predict returns (exactly so for this model on both backends).
    np.testing.assert_allclose(output, model.predict(X, verbose=0), rtol=1e-6, atol=1e-7)
    # Any other call: its own output comes back, a backend tensor here.
    tensor, *rest = adapter.forward_with_gradient(lambda t: model(t, training=False), X)
    assert keras.ops.is_tensor(tensor)
    for ours, theirs in zip([keras.ops.convert_to_numpy(tensor), *rest],
                            (output, scores, gradient)):
        np.testing.assert_array_equal(ours, theirs)
    # The model is left as found: weights, trainable flags, no gradient kept anywhere.
    for now, then in zip(model.get_weights(), before):
        np.testing.assert_array_equal(now, then)
    assert all(v.trainable for v in model.weights)
    if BACKEND == "torch":
        assert all(v.value.grad is None for v in model.weights)


def test_gradient_of_a_multi_input_model_has_the_inputs_structure():
    model = _two_input_model()
    image, meta = _batch(3), np.full((3, 3), 0.5, np.float32)
    gradient = KerasAdapter(model).input_gradient([image, meta], np.array([1, 2, 3]))
    assert [g.shape for g in gradient] == [(3, 64), (3, 3)]
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in gradient)


def test_gradient_needs_a_classifier_output():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Reshape((2, 2))])
    with pytest.raises(aimsec_core.ConfigurationError, match=r"\(batch, classes\)"):
        KerasAdapter(model).input_gradient(X, np.array([0, 1]))


def test_calibrated_detectors_share_the_prediction_forward_pass(sink, monkeypatch):
    x, y = digits()
    guarded = aimsec_core.guard(CASE.model(), mode="monitor", sinks=[sink],
                                constraints={"min_value": 0.0, "max_value": 1.0})
    guard = guarded.__aimsec_guard__
    assert "boundary" in [d.name for d in guarded.calibrate(x[:600], fpr=0.05).suite.detectors]
    passes = []
    real = KerasAdapter.forward_with_gradient
    monkeypatch.setattr(KerasAdapter, "forward_with_gradient",
                        lambda self, call, v: passes.append(call) or real(self, call, v))
    clean = x[1000:1100]
    np.testing.assert_array_equal(guarded.predict(clean, verbose=0),
                                  CASE.model().predict(clean, verbose=0))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(guarded(clean, training=False)),
        keras.ops.convert_to_numpy(CASE.model()(clean, training=False)))
    assert len(passes) == 2 and "boundary" in guarded.last_verdict.scores
    clean_flagged = sum(guarded.last_verdict.flags)
    # One signed-gradient step (FGSM, eps 0.1) against the true labels.
    step = np.sign(guard.adapter.input_gradient(clean, y[1000:1100]))
    guarded.predict(np.clip(clean + 0.1 * step, 0, 1).astype(np.float32), verbose=0)
    assert sum(guarded.last_verdict.flags) > 3 * max(clean_flagged, 5)


@pytest.mark.parametrize("path", ["predict", "predict_on_batch", "call"])
def test_the_gradient_pass_reads_the_copy_the_model_reads(sink, path):
    """With the gradient detectors calibrated, a write into the caller's array after the
    check reaches neither the prediction nor the input gradient the detectors score."""
    x, _ = digits()
    guarded = aimsec_core.guard(CASE.model(), mode="monitor", sinks=[sink],
                                constraints={"min_value": 0.0, "max_value": 1.0})
    guarded.calibrate(x[:600], fpr=0.05)
    run = {"predict": lambda v: guarded.predict(v, verbose=0),
           "predict_on_batch": lambda v: guarded.predict_on_batch(v),
           "call": lambda v: keras.ops.convert_to_numpy(guarded(v, training=False))}[path]
    clean = x[1000:1064].copy()
    expected = run(clean.copy())
    scores = guarded.last_verdict.scores
    assert "boundary" in scores
    write_after_check(guarded, lambda: clean.__setitem__(..., 1e30))
    np.testing.assert_array_equal(run(clean), expected)
    assert guarded.last_verdict.scores == scores and (clean == 1e30).all()


@pytest.mark.skipif(BACKEND != "tensorflow", reason="a tf.Variable: TensorFlow backend")
@pytest.mark.parametrize("kind", ["tf.Variable", "keras.Variable"])
def test_a_variable_is_read_once_and_keeps_its_gradient(sink, kind):
    """A variable input is read once, before the checks: an assignment after the check
    never reaches the model, and a gradient tape still reaches the variable."""
    import tensorflow as tf

    make = tf.Variable if kind == "tf.Variable" else keras.Variable
    model = CASE.model()
    plain = make(_batch(4))
    with tf.GradientTape() as tape:
        expected = model(plain)
    expected_gradient = tape.gradient(expected, plain)
    x = make(_batch(4))
    guarded = aimsec_core.guard(model, sinks=[sink],
                                constraints={"min_value": 0.0, "max_value": 1.0})
    write_after_check(guarded, lambda: x.assign(tf.fill(x.shape, 1e30)))
    with tf.GradientTape() as tape:
        output = guarded(x)
    np.testing.assert_array_equal(output.numpy(), expected.numpy())
    np.testing.assert_array_equal(tape.gradient(output, x).numpy(), expected_gradient.numpy())
    x.assign(_batch(4))
    np.testing.assert_array_equal(guarded.predict(x, verbose=0), model.predict(
        _batch(4), verbose=0))
    assert sink.outcomes == ["allowed", "allowed"]


# --- the torch backend ---------------------------------------------------------------------

@pytest.mark.skipif(BACKEND != "torch", reason="a torch tensor with autograd: torch backend")
def test_a_torch_tensor_is_read_as_checked_and_keeps_its_gradient(sink):
    """On the torch backend the model reads the copy of a torch tensor that was checked,
    and that copy is joined to the caller's graph: the output and the caller's gradient
    are the plain call's."""
    import torch

    model = CASE.model()
    plain = torch.tensor(_batch(4), requires_grad=True)
    expected = model(plain)
    expected.sum().backward()
    x = torch.tensor(_batch(4), requires_grad=True)
    guarded = aimsec_core.guard(model, sinks=[sink],
                                constraints={"min_value": 0.0, "max_value": 1.0})
    write_after_check(guarded, lambda: x.data.fill_(1e30))
    output = guarded(x)
    output.sum().backward()
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, plain.grad, rtol=0, atol=0)
    assert sink.outcomes == ["allowed"] and (x == 1e30).all()


def _input_gradient(values: np.ndarray):
    """A function returning, for a model, d(sum of its output)/d(its input) with
    ``values`` given as a backend tensor the caller differentiates against."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.constant(values)

        def gradient(model):
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = keras.ops.sum(model(x))
            found = tape.gradient(total, x)
            return None if found is None else found.numpy()
        return gradient
    import torch

    def gradient(model):
        x = torch.tensor(values, requires_grad=True)
        keras.ops.sum(model(x)).backward()
        return None if x.grad is None else x.grad.numpy()
    return gradient


def test_a_calibrated_call_keeps_the_gradient_to_the_callers_input(sink):
    """With the gradient detectors calibrated, calling the model shares its forward pass
    with the detector, whose watched twin of the input was a tensor of its own: the
    caller's gradient tape (or torch graph) no longer reached the input (d output / d x
    was None, as for adversarial training through the guard). The twin is now joined to
    the caller's input."""
    x, _ = digits()
    model = CASE.model()
    guarded = aimsec_core.guard(model, mode="monitor", sinks=[sink],
                                constraints={"min_value": 0.0, "max_value": 1.0})
    guarded.calibrate(x[:600], fpr=0.05, detectors=["boundary"])
    gradient = _input_gradient(x[1000:1016])
    expected = gradient(model)
    assert expected is not None
    np.testing.assert_array_equal(gradient(guarded), expected)
    assert "boundary" in guarded.last_verdict.scores


def test_torch_backend_in_a_subprocess():
    """Conformance, this file and the call paths again, with Keras on torch (chosen before
    keras loads)."""
    # One thread: the models are tiny, and torch's threads spin against each other (ten
    # times slower) when the machine is busy with other tests.
    env = {**os.environ, "KERAS_BACKEND": "torch", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/conformance", "tests/test_keras_adapter.py", "tests/test_keras_call_paths.py",
         "-k", "keras and not test_torch_backend_in_a_subprocess"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


# --- the values checked are the values the model reads --------------------------------------

def _cast_model(dtype: str) -> keras.Model:
    """An identity model on a ``dtype`` input: its output is what it read, as float32."""
    inputs = keras.Input((4,), dtype=dtype, name="v")
    return keras.Model(inputs, keras.layers.Activation("linear", dtype="float32")(
        keras.ops.cast(inputs, "float32")))


@pytest.mark.parametrize("path", ["predict", "predict_on_batch", "call"])
def test_finite_float64_beyond_float32_is_refused_on_every_path(sink, path):
    guarded = aimsec_core.guard(_cast_model("float32"), sinks=[sink])
    run = {"predict": lambda x: guarded.predict(x, verbose=0),
           "predict_on_batch": guarded.predict_on_batch, "call": guarded}[path]
    x = np.full((3, 4), 0.5)
    x[1, 2] = -1e39  # finite in float64; -inf once Keras casts it to the declared float32
    with pytest.raises(NonFiniteInputError, match="float64 input is cast to float32") as caught:
        run(x)
    assert caught.value.verdict.flags == (False, True, False) and sink.outcomes == ["rejected"]
    x[1, 2] = 1e30  # within float32: read as the float32 nearest, and allowed
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(run(x)), x.astype(np.float32))


@pytest.mark.parametrize("dtype,fed,bad,error", [
    ("float16", np.float32, 7e4, NonFiniteInputError),  # beyond float16's 65504
    ("int8", np.int64, 300, ValueRangeError),  # would wrap around to 44
    ("uint8", np.float32, -2.0, ValueRangeError),  # would wrap around to 254
])
def test_declared_input_dtypes_are_honoured(sink, dtype, fed, bad, error):
    model = _cast_model(dtype)
    guarded = aimsec_core.guard(model, sinks=[sink])
    assert guarded.__aimsec_guard__.adapter.signature()[0].dtype == dtype
    x = np.ones((2, 4), fed)
    np.testing.assert_array_equal(guarded.predict_on_batch(x), model.predict_on_batch(x))
    x[0, 3] = bad
    with pytest.raises(error, match=f"cast to {dtype}") as caught:
        guarded.predict_on_batch(x)
    assert caught.value.verdict.flags == (True, False)
    assert sink.outcomes == ["allowed", "rejected"]


def test_dtypes_keras_casts_itself_are_accepted(sink):
    model = _cast_model("float32")
    guarded = aimsec_core.guard(model, sinks=[sink])
    for x in (np.eye(2, 4, dtype=bool), np.arange(8, dtype=np.uint8).reshape(2, 4),
              np.arange(8, dtype=np.int64).reshape(2, 4), np.ones((2, 4), np.float16),
              np.ones((2, 4), ">f8")):  # big-endian: the torch backend itself refuses it
        np.testing.assert_array_equal(guarded.predict_on_batch(x),
                                      model.predict_on_batch(x.astype(x.dtype.newbyteorder("="))))
    assert sink.outcomes == ["allowed"] * 5
    if np.dtype(np.longdouble).itemsize > 8:  # where long double is wider than float64
        with pytest.raises(InputFormatError, match="long double"):
            guarded.predict_on_batch(np.ones((2, 4), np.longdouble))


@pytest.mark.parametrize("kind", ["memmap", "masked", "subclass"])
def test_a_numpy_subclass_is_read_as_checked(sink, tmp_path, kind):
    """An np.memmap (whose file any process may write), a masked array or another ndarray
    subclass: a write after the check never reaches the model, which reads the copy of
    the plain array the checks read."""
    clean = _batch(4)
    if kind == "memmap":
        x = np.memmap(tmp_path / "x.dat", dtype=clean.dtype, mode="w+", shape=clean.shape)
        x[...] = clean
    elif kind == "masked":
        x = np.ma.masked_array(clean.copy())
    else:
        x = clean.copy().view(type("Batch", (np.ndarray,), {}))
    model = CASE.model()
    expected = model.predict(clean, verbose=0)
    guarded = aimsec_core.guard(model, sinks=[sink],
                                constraints={"min_value": 0.0, "max_value": 1.0})
    write_after_check(guarded, lambda: x.__setitem__(..., 1e30))
    np.testing.assert_array_equal(guarded.predict(x, verbose=0), expected)
    x[...] = clean
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(guarded(x)),
                                  keras.ops.convert_to_numpy(model(clean)))
    assert sink.outcomes == ["allowed", "allowed"]
    assert (np.asarray(x) == np.float32(1e30)).all()  # written, after each check


def test_variables_in_a_named_tuple_are_read_once_before_the_checks(sink):
    """A named tuple of variables (Keras takes one as a list of inputs): each is read
    once, before the checks, as alone or in a list; an assignment after the check never
    reaches the model, in enforce mode an out-of-range value included."""
    import collections

    Pair = collections.namedtuple("Pair", "image meta")
    model = _two_input_model()
    image, meta = _batch(5), np.full((5, 3), 0.5, np.float32)
    expected = keras.ops.convert_to_numpy(model([image, meta]))
    x = Pair(keras.Variable(image), keras.Variable(meta))
    guarded = aimsec_core.guard(model, sinks=[sink], constraints={"max_value": 1.0})
    write_after_check(guarded, lambda: x.image.assign(keras.ops.full(image.shape, 1e30)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(guarded(x)), expected)
    assert sink.outcomes == ["allowed"]
