"""The containers Keras users pass their data in, on the TensorFlow backend: ``tf.data``
datasets (batched, with labels and sample weights, repeated for ``steps``, prefetched),
generators, ``PyDataset``s, TensorFlow tensors and variables, numpy arrays of other
dtypes. A guarded model, calibrated or not, answers as the plain one does, with one audit
line per batch screened; a batch Keras could not read is a typed refusal naming it.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import aimsec_core
from aimsec_core import InputFormatError, NonFiniteInputError
from tests.cases import digits

if keras.backend.backend() != "tensorflow":
    pytest.skip("TensorFlow containers", allow_module_level=True)
tf = pytest.importorskip("tensorflow")

X, Y = digits()
X = X.astype(np.float32)
DATA = X[:50]  # three batches of 16 and a last one of 2


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,), name="pixels"),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(X, Y, epochs=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def calibration(model):
    guarded = aimsec_core.guard(model, sinks=[])
    guarded.calibrate(X[50:450])
    return aimsec_core.guard_of(guarded).calibration


@pytest.fixture(params=["uncalibrated", "calibrated"])
def guarded(request, model, sink, calibration):
    return aimsec_core.guard(model, name="digits", sinks=[sink], calibration=(
        calibration if request.param == "calibrated" else None))


def _slices(*arrays):
    return tf.data.Dataset.from_tensor_slices(arrays if len(arrays) > 1 else arrays[0])


CONTAINERS = {  # -> (make the data, keyword arguments, batches screened)
    "dataset": (lambda: _slices(DATA).batch(16), {}, 4),
    "dataset (x, y)": (lambda: _slices(DATA, Y[:50]).batch(16), {}, 4),
    "dataset (x, y, w)": (lambda: _slices(DATA, Y[:50], np.ones(50, np.float32)).batch(16),
                          {}, 4),
    "prefetched float64": (lambda: _slices(DATA.astype(np.float64)).batch(16).prefetch(2),
                           {}, 4),
    "repeated, steps": (lambda: _slices(DATA).batch(16).repeat(), {"steps": 5}, 5),
    "unknown length": (lambda: _slices(DATA).filter(lambda v: True).batch(16), {}, 4),
    "generator": (lambda: ((DATA[i:i + 16],) for i in range(0, 50, 16)), {}, 4),
    "tf.Tensor, batch_size": (lambda: tf.constant(DATA), {"batch_size": 16}, 1),
    "tf.Variable": (lambda: tf.Variable(DATA), {}, 1),
    "tf.SparseTensor": (lambda: tf.sparse.from_dense(DATA), {}, 1),
    "float16": (lambda: DATA.astype(np.float16), {"batch_size": 16}, 1),
    "numpy, steps": (lambda: DATA, {"steps": 2, "batch_size": 16}, 1),
}


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
@pytest.mark.parametrize("kind", CONTAINERS)
def test_each_container_predicts_as_the_plain_model(guarded, model, sink, kind):
    make, options, batches = CONTAINERS[kind]
    expected = model.predict(make(), verbose=0, **options)
    got = guarded.predict(make(), verbose=0, **options)
    assert type(got) is type(expected)
    np.testing.assert_array_equal(got, expected)
    assert sink.outcomes == ["allowed"] * batches


def test_evaluate_on_a_weighted_dataset_is_the_plain_model_s(guarded, model, sink):
    data = _slices(DATA, Y[:50], np.linspace(0.5, 1.5, 50, dtype=np.float32)).batch(16)
    assert guarded.evaluate(data, verbose=0) == model.evaluate(data, verbose=0)
    assert sink.outcomes == ["allowed"] * 4


def test_a_nan_in_a_later_batch_of_a_dataset_is_refused_by_sample(guarded, sink):
    bad = DATA.copy()
    bad[30, 7] = np.nan  # batch 2, sample 14
    with pytest.raises(NonFiniteInputError, match="sample 14") as caught:
        guarded.predict(_slices(bad).batch(16), verbose=0)
    assert sink.outcomes == ["allowed", "rejected"]
    assert guarded.last_verdict is caught.value.verdict


def _generator(batch_3):
    """A generator whose third batch is ``batch_3``; the others read as Keras reads them."""
    for i in range(0, 50, 16):
        yield batch_3 if i == 32 else (DATA[i:i + 16],)


LAYOUTS = {  # a batch Keras cannot read -> what the refusal says it was
    "bare array": (DATA[32:48], "of type ndarray, not a tuple"),
    "list": ([DATA[32:48]], "of type list, not a tuple"),
    "dict": ({"pixels": DATA[32:48]}, "of type dict, not a tuple"),
    "None": (None, "of type NoneType, not a tuple"),
    "four values": ((DATA[32:48], Y[32:48], np.ones(16), np.ones(16)), "a tuple of 4 values"),
    "empty tuple": ((), "a tuple of 0 values"),
}


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_generator_batch_keras_cannot_read_is_a_typed_refusal(model, sink, layout):
    # Keras refuses a generator's batch that is not a tuple of one to three values (its
    # ValueError, or TensorFlow's InvalidArgumentError for a later batch); the guard
    # accepted bare arrays, lists and dicts, and let the others fail in Keras or
    # TensorFlow with no audit line for them.
    batch, said = LAYOUTS[layout]
    guarded = aimsec_core.guard(model, name="digits", sinks=[sink])
    with pytest.raises(InputFormatError, match=f"batch 3 of the generator given as data is "
                       f"{said}; expected a tuple") as caught:
        guarded.predict(_generator(batch), verbose=0)
    assert sink.outcomes == ["allowed", "allowed", "rejected"]
    assert caught.value.verdict.findings[0].check == "format"
    first = (batch for _ in range(1))  # the first batch: Keras never gets one
    sink.events.clear()
    with pytest.raises(InputFormatError, match="batch 1 of the generator"):
        guarded.predict(first, verbose=0)
    assert sink.outcomes == ["rejected"]


class _Batches(keras.utils.PyDataset):
    def __init__(self, last):
        super().__init__()
        self.last = last

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return [DATA[:16]] if i == 0 else self.last  # a list reads as a tuple here


def test_a_py_dataset_batch_of_four_values_is_a_typed_refusal(model, sink):
    guarded = aimsec_core.guard(model, name="digits", sinks=[sink])
    expected = model.predict(_Batches(DATA[16:32]), verbose=0)
    np.testing.assert_array_equal(
        guarded.predict(_Batches(DATA[16:32]), verbose=0), expected)
    sink.events.clear()
    with pytest.raises(InputFormatError, match="batch 2 of the keras.utils.PyDataset given "
                       "as data is a tuple of 4 values"):
        guarded.predict(_Batches((DATA[16:32], Y[:16], np.ones(16), np.ones(16))),
                        verbose=0)
    assert sink.outcomes == ["allowed", "rejected"]


@pytest.mark.parametrize("method", ["predict", "evaluate"])
def test_array_data_read_for_some_steps_is_screened_as_far_as_keras_reads(
        model, sink, calibration, method):
    # Keras reads the first steps * batch_size samples; the calibrated guard screened all
    # 50 and its detectors met 32 outputs: numpy's own broadcasting ValueError
    guarded = aimsec_core.guard(model, name="digits", sinks=[sink], calibration=calibration)
    data = (DATA,) if method == "predict" else (DATA, Y[:50])
    options = {"steps": 2, "batch_size": 16, "verbose": 0}
    expected = getattr(model, method)(*data, **options)
    got = getattr(guarded, method)(*data, **options)
    np.testing.assert_array_equal(got, expected)
    assert sink.outcomes == ["allowed"]
    assert guarded.last_verdict.batch_size == 32
