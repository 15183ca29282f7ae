"""Calling a guarded Keras model screens every array in the call, not only the first:
a subclassed model's ``call(x, bias)`` (by position or keyword) and a mask have their
tensors screened by parameter name, as the torch adapter screens a ``forward``'s."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import aimsec_core
from aimsec_core import InputFormatError, NonFiniteInputError, ValueRangeError
from tests.conftest import write_after_check

X = np.random.default_rng(0).random((4, 3)).astype("float32")
NAN = np.full((4, 3), np.nan, dtype="float32")


class Biased(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x, bias=None, training=None):
        out = self.dense(x)
        return out if bias is None else out + keras.ops.sum(keras.ops.cast(bias, out.dtype))


@pytest.fixture(scope="module")
def plain() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = Biased()
    model(X)
    return model


@pytest.fixture
def guarded(plain, sink):
    return aimsec_core.guard(plain, name="biased", sinks=[sink],
                             constraints={"min_value": 0.0, "max_value": 1.0})


@pytest.mark.parametrize("call", [lambda g, b: g(X, b), lambda g, b: g(X, bias=b),
                                  lambda g, b: g(x=X, bias=b),
                                  lambda g, b: g(X, b, training=False)],
                         ids=["positional", "keyword", "both-keywords", "with-training"])
def test_every_array_argument_is_screened_by_name(guarded, sink, call):
    with pytest.raises(NonFiniteInputError, match="'bias'"):
        call(guarded, NAN)
    assert [e.outcome for e in sink.events] == ["rejected"]
    with pytest.raises(ValueRangeError, match="'bias'"):
        call(guarded, X + 5)


def test_valid_extra_arguments_give_the_plain_answer(guarded, plain, sink):
    expected = keras.ops.convert_to_numpy(plain(X, bias=X, training=False))
    got = keras.ops.convert_to_numpy(guarded(X, bias=X, training=False))
    assert np.array_equal(got, expected)
    assert np.array_equal(keras.ops.convert_to_numpy(guarded(X, training=False)),
                          keras.ops.convert_to_numpy(plain(X, training=False)))
    assert [e.outcome for e in sink.events] == ["allowed", "allowed"]


def test_a_boolean_mask_argument_is_screened_as_its_0_1_values(guarded, plain, sink):
    mask = np.ones((4, 3), dtype=bool)
    expected = keras.ops.convert_to_numpy(plain(X, bias=mask))
    assert np.array_equal(keras.ops.convert_to_numpy(guarded(X, bias=mask)), expected)
    assert sink.events[-1].outcome == "allowed"


@pytest.mark.parametrize("bias", [X, np.ones((4, 3), dtype=bool)], ids=["array", "mask"])
@pytest.mark.parametrize("call", [lambda m, x, b: m(x, b), lambda m, x, b: m(x, bias=b),
                                  lambda m, x, b: m(x=x, bias=[b])],
                         ids=["positional", "keyword", "in-a-list"])
def test_every_array_argument_is_read_as_checked(plain, sink, bias, call):
    """Another thread's write into the input or an argument beside it (a boolean mask
    too) after the check never reaches the model; the model gets a mask as booleans."""
    x, bias = X.copy(), bias.copy()
    expected = keras.ops.convert_to_numpy(call(plain, x.copy(), bias.copy()))
    guarded = aimsec_core.guard(plain, name="biased", sinks=[sink],
                                constraints={"min_value": 0.0, "max_value": 1.0})

    def write() -> None:
        x[...], bias[...] = 0.5, 0
    write_after_check(guarded, write)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(call(guarded, x, bias)),
                                  expected)
    assert sink.outcomes == ["allowed"]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a tf.Variable")
def test_a_variable_beside_the_input_is_read_once_before_the_checks(plain, sink):
    """A ``tf.Variable`` passed beside the input is read once, before the checks: an
    assignment after them never reaches the model, and a tape still reaches it."""
    import tensorflow as tf

    bias = tf.Variable(X)
    with tf.GradientTape() as tape:
        expected = plain(X, bias=bias)
    expected_gradient = tape.gradient(expected, bias)
    guarded = aimsec_core.guard(plain, name="biased", sinks=[sink],
                                constraints={"min_value": 0.0, "max_value": 1.0})
    write_after_check(guarded, lambda: bias.assign(X + 5))
    with tf.GradientTape() as tape:
        output = guarded(X, bias=bias)
    np.testing.assert_array_equal(output.numpy(), expected.numpy())
    np.testing.assert_array_equal(tape.gradient(output, bias).numpy(),
                                  expected_gradient.numpy())
    assert sink.outcomes == ["allowed"]


@pytest.mark.parametrize("call", [
    lambda g: g(X, colour="red"), lambda g: g(X, mask=None), lambda g: g(X, X, False, 5),
    lambda g: g(X, bias=X, x=X), lambda g: g(X, training="yes"),
    lambda g: g(X, X, False), lambda g: g(X, None, True), lambda g: g(X, 2),
    lambda g: g(X, "yes"), lambda g: g(X, [X, 1.5]), lambda g: g(X, {"b": "x"}),
    lambda g: g(X, X, X),
], ids=["unknown-keyword", "mask-not-taken", "too-many", "input-twice", "training-not-bool",
        "training-by-position", "true-by-position", "int-by-position", "str-by-position",
        "float-in-list-by-position", "str-in-dict-by-position", "tensor-as-training"])
def test_arguments_that_do_not_fit_call_are_refused_before_the_model_runs(guarded, sink,
                                                                          call):
    """As plain Keras refuses them (its TypeError, ValueError; only tensors may be passed
    by position after the input), but typed and recorded."""
    with pytest.raises(InputFormatError, match="do not fit call|'training'"):
        call(guarded)
    assert [e.outcome for e in sink.events] == ["rejected"]


def test_a_call_without_its_input_names_what_was_passed(guarded, sink):
    """The input under another keyword than ``call``'s (``guarded(pixels=x)``, the
    ``keras.Input``'s name) was refused as "input 'x' is None" (EmptyInputError), as if
    None had been sent; plain Keras says the input argument is missing."""
    with pytest.raises(InputFormatError, match=r"do not fit call: no input; expected it "
                       r"first or as x=\.\.\.; received the keyword\(s\) \['pixels'\]"):
        guarded(pixels=X)
    with pytest.raises(InputFormatError, match="no input; .* received no argument"):
        guarded()
    assert [e.outcome for e in sink.events] == ["rejected", "rejected"]


def test_training_given_to_a_call_without_it_is_dropped_as_keras_drops_it(sink):
    class NoTraining(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = NoTraining()
    expected = keras.ops.convert_to_numpy(model(X, training=False))
    guarded = aimsec_core.guard(model, name="no-training", sinks=[sink])
    assert np.array_equal(keras.ops.convert_to_numpy(guarded(X, training=False)), expected)
    assert [e.outcome for e in sink.events] == ["allowed"]


def test_a_ragged_tensor_by_position_runs_as_in_plain_keras(sink):
    """Keras takes any tensor of its backend by position (TensorFlow's ragged and sparse
    ones too), not only dense ones: such a call is not refused for its position."""
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("ragged tensors are TensorFlow's")

    class Lengths(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x, ragged=None):
            out = self.dense(x)
            if ragged is None:
                return out
            return out + keras.ops.cast(keras.ops.expand_dims(ragged.row_lengths(), 1),
                                        out.dtype)

    model = Lengths()
    ragged = tf.ragged.constant([[1.0], [1.0, 2.0], [], [3.0]])
    expected = keras.ops.convert_to_numpy(model(X, ragged))
    guarded = aimsec_core.guard(model, name="ragged", sinks=[sink])
    assert np.array_equal(keras.ops.convert_to_numpy(guarded(X, ragged)), expected)
    assert [e.outcome for e in sink.events] == ["allowed"]


def _recursive_list():
    loop = []
    loop.append(loop)
    return loop


def _recursive_dict():
    loop = {}
    loop["x"] = loop
    return loop


@pytest.mark.parametrize("make", [_recursive_list, lambda: [X, _recursive_list()],
                                  _recursive_dict, lambda: [[[[[[[X]]]]]]]],
                         ids=["list-holding-itself", "inside-a-list", "dict-holding-itself",
                              "nested-past-the-bound"])
@pytest.mark.parametrize("how", ["call", "predict"])
def test_a_self_referencing_input_is_refused_with_one_line(guarded, sink, make, how):
    """A structure holding itself given as the input is refused as no array, as an
    unreadable list is; never a RecursionError with no audit line."""
    with pytest.raises(InputFormatError):
        guarded(make()) if how == "call" else guarded.predict(make(), verbose=0)
    assert [e.outcome for e in sink.events] == ["rejected"]


@pytest.mark.parametrize("make", [lambda: np.float32(0.5), lambda: np.bool_(True),
                                  lambda: [np.float32(1), np.float32(2)],
                                  lambda: __import__("pandas").DataFrame(X)],
                         ids=["numpy-scalar", "numpy-bool", "list-of-numpy-scalars",
                              "dataframe"])
def test_values_keras_converts_to_tensors_run_by_position(plain, guarded, sink, make):
    """Keras converts what has ``__array__`` before it checks positional arguments: such
    values run as in plain Keras, not refused as values that are no tensor."""
    expected = keras.ops.convert_to_numpy(plain(X, make()))
    assert np.array_equal(keras.ops.convert_to_numpy(guarded(X, make())), expected)
    assert [e.outcome for e in sink.events] == ["allowed"]


def test_a_value_passed_by_position_is_named_by_its_type(guarded, sink):
    with pytest.raises(InputFormatError, match="a value of type int was passed by position"):
        guarded(X, 2)


def test_training_by_keyword_after_star_args_runs_as_in_plain_keras(sink):
    """Only a training value given by position is refused (Keras passes it by keyword
    too): one given by keyword to a call taking ``*rest`` runs as in plain Keras."""
    class Rest(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x, *rest, training=None):
            return self.dense(x)

    model = Rest()
    expected = keras.ops.convert_to_numpy(model(X, X, X, training=False))
    guarded = aimsec_core.guard(model, name="rest", sinks=[sink])
    got = keras.ops.convert_to_numpy(guarded(X, X, X, training=False))
    assert np.array_equal(got, expected)
    assert [e.outcome for e in sink.events] == ["allowed"]
