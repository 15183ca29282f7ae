"""Every way to run a Keras model through its guarded object is screened or refused.

Screened (one audit record per call, ``last_verdict`` set, a NaN input refused with
``NonFiniteInputError`` before the model reads it):

- ``predict(x)``, ``predict(x=x)``; ``predict`` on a generator, a ``tf.data.Dataset`` and a
  ``keras.utils.PyDataset`` (one record per batch: one batch here)
- ``predict_on_batch(x)``
- ``evaluate(x, y)``, and on a labelled ``tf.data.Dataset``; ``test_on_batch(x, y)`` (its
  loss and metrics answer the caller as ``evaluate``'s do)
- calling it: ``guarded(x)``, ``guarded(inputs=x)``, ``guarded(x, training=False)``
- ``type(guarded).__call__(guarded, x)`` and ``guarded.__call__(x)``
- a ``keras.Sequential([guarded])`` called eagerly: it calls the guarded object (Keras
  re-raises the refusal as a new error of the same type: the verdict is on
  ``last_verdict``)

Refused with ``UnguardedCallError`` (the model never runs; ``aimsec_core.unguard`` gives
the plain model to callers who bypass the guard knowingly):

- ``call`` reached through the proxy (also what ``keras.layers.Layer.__call__(guarded, x)``
  and wrappers such as ``TimeDistributed`` use), ``forward`` (the torch backend's),
  ``predict_step``, ``test_step``,
  ``make_predict_function``, ``predict_function``, ``make_test_function``,
  ``test_function``, ``export``, ``stateless_call`` (a forward pass on the variable
  values it is handed)
- ``tf.function(guarded)`` and a ``tf.function`` that calls it (traced on symbolic tensors)
- functional re-use as a layer, ``keras.Model(inputs, guarded(inputs))``, and a
  ``Sequential([guarded])`` compiled by ``predict`` (on the torch backend ``predict`` runs
  eagerly and calls the guarded object: screened)

Private attributes (``_run_through_graph``, the torch backend's ``_call_impl``) and the
layers themselves (``guarded.layers[0](x)``) are the original's: Keras reads them when the
guarded model sits inside another one. A base class's method called on the guarded object
(``keras.layers.Layer.__call__(guarded, x)``) reaches ``call`` on TensorFlow (refused) but
the original's ``_call_impl`` on torch: programming around the proxy, not a way to serve.

Training (``fit``, ``train_on_batch``, ``train_step``) is the original model's: it learns
from data, it does not answer a caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

import aimsec_core
from aimsec_core import NonFiniteInputError, UnguardedCallError
from tests.conftest import write_after_check

tf = pytest.importorskip("tensorflow") if keras.backend.backend() == "tensorflow" else None
LABELS = np.array([0, 1, 2, 0])


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,), name="x"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture
def guarded(model, sink):
    return aimsec_core.guard(model, name="paths", sinks=[sink])


def _x(nan: bool = False) -> np.ndarray:
    x = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    if nan:
        x[2, 1] = np.nan
    return x


class _OneBatch(keras.utils.PyDataset):
    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        self.x = x

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.x


SCREENED: dict[str, Callable[[Any, np.ndarray], Any]] = {
    "predict": lambda g, x: g.predict(x, verbose=0),
    "predict(x=)": lambda g, x: g.predict(x=x, verbose=0),
    "predict(generator)": lambda g, x: g.predict((b for b in [(x,)]), verbose=0),
    "predict(PyDataset)": lambda g, x: g.predict(_OneBatch(x), verbose=0),
    "predict_on_batch": lambda g, x: g.predict_on_batch(x),
    "evaluate": lambda g, x: g.evaluate(x, LABELS, verbose=0),
    "test_on_batch": lambda g, x: g.test_on_batch(x, LABELS),
    "test_on_batch(x=)": lambda g, x: g.test_on_batch(x=x, y=LABELS),
    "call": lambda g, x: g(x),
    "call(inputs=)": lambda g, x: g(inputs=x),
    "call(training=False)": lambda g, x: g(x, training=False),
    "type(g).__call__": lambda g, x: type(g).__call__(g, x),
    "Sequential([g])": lambda g, x: keras.Sequential([g])(x),
}
if tf is None:  # the torch backend predicts eagerly: the guarded layer sees real tensors
    SCREENED["Sequential([g]).predict"] = lambda g, x: keras.Sequential([g]).predict(
        x, verbose=0)
else:
    SCREENED["predict(tf.data)"] = lambda g, x: g.predict(
        tf.data.Dataset.from_tensor_slices(x).batch(4), verbose=0)
    SCREENED["evaluate(tf.data)"] = lambda g, x: g.evaluate(
        tf.data.Dataset.from_tensor_slices((x, LABELS)).batch(4), verbose=0)


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
@pytest.mark.parametrize("path", list(SCREENED))
def test_each_path_is_screened(guarded, sink, path):
    run = SCREENED[path]
    run(guarded, _x())
    assert sink.outcomes == ["allowed"]
    assert guarded.last_verdict is sink.events[0].verdict
    with pytest.raises(NonFiniteInputError) as caught:
        run(guarded, _x(nan=True))
    assert sink.outcomes == ["allowed", "rejected"]
    # (inside another layer's call Keras re-raises the error as a new one of the same
    # type, with its own message: the verdict is then on last_verdict only)
    verdict = caught.value.verdict or guarded.last_verdict
    assert verdict is sink.events[1].verdict and verdict.flags == (False, False, True, False)


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
@pytest.mark.parametrize("path", list(SCREENED))
def test_each_path_runs_on_exactly_what_was_checked(model, guarded, sink, path):
    """Another thread writes out-of-range values into the caller's array after the guard
    checked it and before Keras reads it: every path answers for the values checked. The
    model (and a pipeline's reader) is handed the copy the checks read."""
    run = SCREENED[path]
    expected = _numbers(run(model, _x()))
    x = _x()
    write_after_check(guarded, lambda: x.__setitem__(..., 1e30))
    np.testing.assert_allclose(_numbers(run(guarded, x)), expected, rtol=1e-6)
    assert sink.outcomes == ["allowed"] and (x == 1e30).all()


def _numbers(result: Any) -> np.ndarray:
    """A call's result (an array, a backend tensor, a loss) as numpy."""
    return np.asarray(keras.ops.convert_to_numpy(result) if keras.ops.is_tensor(result)
                      else result)


REFUSED: dict[str, Callable[[Any, np.ndarray], Any]] = {
    "call via the proxy": lambda g, x: g.call(x),
    "predict_step": lambda g, x: g.predict_step(x),
    "test_step": lambda g, x: g.test_step((x, LABELS)),
    "make_predict_function": lambda g, x: g.make_predict_function(),
    "predict_function": lambda g, x: g.predict_function,
    "make_test_function": lambda g, x: g.make_test_function(),
    "test_function": lambda g, x: g.test_function,
    "forward (torch backend)": lambda g, x: g.forward(x),
    "export": lambda g, x: g.export("never-written"),
    "stateless_call": lambda g, x: g.stateless_call(
        [v.value for v in g.trainable_variables],
        [v.value for v in g.non_trainable_variables], x),
    "functional re-use": lambda g, x: keras.Model(inputs := keras.Input((4,)), g(inputs)),
}
if tf is not None:  # compiled: the guarded layer would be traced on symbolic tensors
    REFUSED["Layer.__call__"] = lambda g, x: keras.layers.Layer.__call__(g, x)
    REFUSED["Sequential([g]).predict"] = lambda g, x: keras.Sequential([g]).predict(
        x, verbose=0)
    REFUSED["tf.function(g)"] = lambda g, x: tf.function(g)(x)
    REFUSED["tf.function calling g"] = lambda g, x: tf.function(lambda t: g(t))(
        tf.constant(x))


@pytest.mark.parametrize("path", list(REFUSED))
def test_each_path_the_guard_cannot_screen_is_refused(guarded, sink, path):
    with pytest.raises(UnguardedCallError, match="unguard"):
        REFUSED[path](guarded, _x(nan=True))
    assert sink.outcomes == []  # refused before any input is read
    assert not hasattr(guarded, "predict_function")  # hasattr stays false, not an error


def test_the_plain_model_is_one_unguard_away(guarded, model):
    x = _x(nan=True)
    assert np.isnan(keras.ops.convert_to_numpy(aimsec_core.unguard(guarded).call(x))).any()


def _token_models() -> list[Any]:
    """One Sequential and one functional model whose input is read by an Embedding."""
    keras.utils.set_random_seed(0)
    sequential = keras.Sequential([keras.Input((3,), dtype="int32"),
                                   keras.layers.Embedding(10, 4), keras.layers.Flatten(),
                                   keras.layers.Dense(2)])
    ids = keras.Input((3,))
    out = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(10, 4)(ids)))
    return [sequential, keras.Model(ids, out)]


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("ids", [[[1, 2, 10]], [[-1, 2, 3]]])
def test_an_index_outside_the_embeddings_table_is_refused_before_keras_reads_it(which, ids):
    """Token ids past the table raised TensorFlow's InvalidArgumentError out of the
    guarded call, its graph's traceback with it."""
    from aimsec_core import ValueRangeError

    from tests.conftest import ListSink

    model = _token_models()[which]
    sink = ListSink()
    guarded = aimsec_core.guard(model, sinks=[sink])
    with pytest.raises(ValueRangeError, match="table of 10"):
        guarded.predict(np.array(ids), verbose=0)
    assert sink.outcomes == ["rejected"]
    good = np.array([[0, 5, 9]])
    np.testing.assert_array_equal(guarded.predict(good, verbose=0),
                                  model.predict(good, verbose=0))


def test_ids_read_by_an_embedding_and_another_layer_are_range_checked_too():
    """An input read by an Embedding and beside it by another layer (its ids also
    counted by a Dense) reached TensorFlow's gather unchecked: InvalidArgumentError."""
    from aimsec_core import ValueRangeError

    keras.utils.set_random_seed(0)
    ids = keras.Input((3,))
    looked_up = keras.layers.Flatten()(keras.layers.Embedding(10, 4)(ids))
    both = keras.layers.Concatenate()([looked_up, keras.layers.Dense(2)(ids)])
    model = keras.Model(ids, keras.layers.Dense(2)(both))
    guarded = aimsec_core.guard(model, sinks=[])
    with pytest.raises(ValueRangeError, match="table of 10"):
        guarded.predict(np.array([[1, 2, 10]]), verbose=0)
    good = np.array([[0, 5, 9]])
    np.testing.assert_array_equal(guarded.predict(good, verbose=0),
                                  model.predict(good, verbose=0))
