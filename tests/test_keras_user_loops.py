"""A guarded Keras model in the code its user already has: training with callbacks,
checkpoints and saving, data pipelines read for a number of steps, a ``PyDataset`` with
epoch hooks, a subclassed model called by its own argument name.

Each check compares the guarded model with an identical plain one: same results, bit for
bit, and one audit record per guarded call (none for training).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import aimsec_core

tf = pytest.importorskip("tensorflow") if keras.backend.backend() == "tensorflow" else None
RNG = np.random.default_rng(0)
X = RNG.random((40, 8)).astype(np.float32)
Y = RNG.integers(0, 3, 40)


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,), name="features"),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dropout(0.25),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def pair() -> tuple[keras.Model, keras.Model]:
    """A plain model and an identical one to guard, neither trained."""
    return _model(), _model()


def _equal(a, b) -> bool:
    a, b = keras.tree.flatten(a), keras.tree.flatten(b)
    return len(a) == len(b) and all(
        np.array_equal(keras.ops.convert_to_numpy(p), keras.ops.convert_to_numpy(q))
        for p, q in zip(a, b))


class _Batches(keras.utils.PyDataset):
    """Five labelled batches of eight; counts the epoch hooks Keras calls."""

    def __init__(self, x: np.ndarray) -> None:
        super().__init__()
        self.x, self.begun, self.ended = x, 0, 0

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int):
        return self.x[8 * i:8 * i + 8], Y[8 * i:8 * i + 8]

    def on_epoch_begin(self) -> None:
        self.begun += 1

    def on_epoch_end(self) -> None:
        self.ended += 1


def test_training_with_callbacks_is_the_plain_model_s_and_saves_the_plain_model(
        pair, sink, tmp_path):
    """``fit`` (validation data, early stopping, a checkpoint) trains the guarded model as
    the plain one, bit for bit, records nothing, and what it saves loads as the plain model."""
    plain, model = pair
    guarded = aimsec_core.guard(model, sinks=[sink])

    def callbacks(name: str) -> list:
        return [keras.callbacks.EarlyStopping(patience=1, restore_best_weights=True),
                keras.callbacks.ModelCheckpoint(tmp_path / f"{name}.keras")]

    histories = []
    for net, name in ((plain, "plain"), (guarded, "guarded")):
        keras.utils.set_random_seed(1)
        histories.append(net.fit(X, Y, epochs=3, batch_size=8, verbose=0,
                                 validation_data=(X[:16], Y[:16]),
                                 callbacks=callbacks(name)).history)
    assert histories[0] == histories[1]
    assert _equal(plain.get_weights(), guarded.get_weights())
    assert sink.outcomes == []
    guarded.save(tmp_path / "saved.keras")
    for name in ("guarded", "saved"):
        loaded = keras.models.load_model(tmp_path / f"{name}.keras")
        assert type(loaded) is keras.Sequential  # the plain model, not a guarded one
        assert _equal(loaded.predict(X, verbose=0), plain.predict(X, verbose=0))
    assert _equal(guarded.predict(X, verbose=0), plain.predict(X, verbose=0))
    assert sink.outcomes == ["allowed"]


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_a_pipeline_read_for_some_steps_is_screened_only_as_far_as_keras_reads(pair, sink):
    """``predict(data, steps=2)`` reads two batches: a bad third batch the model never
    reads must not refuse the call (TensorFlow's reader of the screened batches reads
    ahead), nor leave a record of a call that did not happen."""
    plain, model = pair
    guarded = aimsec_core.guard(model, sinks=[sink])
    x = X.copy()
    x[17, 0] = np.nan  # in the third batch of eight
    pipelines = {
        "generator": lambda: ((x[i:i + 8],) for i in range(0, 40, 8)),
        "PyDataset": lambda: _Batches(x),
    }
    if tf is not None:
        pipelines["tf.data"] = lambda: tf.data.Dataset.from_tensor_slices(x).batch(8)
    for kind, data in pipelines.items():
        sink.events.clear()
        expected = plain.predict(data(), steps=2, verbose=0)
        assert _equal(guarded.predict(data(), steps=2, verbose=0), expected), kind
        assert sink.outcomes == ["allowed"] * 2, kind
    sink.events.clear()
    expected = plain.evaluate(_Batches(x), steps=2, verbose=0)
    assert guarded.evaluate(_Batches(x), steps=2, verbose=0) == expected
    assert sink.outcomes == ["allowed"] * 2


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_a_py_dataset_s_epoch_hooks_run_as_on_the_plain_model(pair, sink):
    """Keras calls ``on_epoch_begin`` and ``on_epoch_end`` around ``predict`` and
    ``evaluate`` on a ``PyDataset`` (where it sets up or reshuffles its batches); the
    guarded model must too, once each, also when it stops early or refuses a batch."""
    plain, model = pair
    guarded = aimsec_core.guard(model, sinks=[sink])
    for call in (lambda net, d: net.predict(d, verbose=0),
                 lambda net, d: net.evaluate(d, verbose=0),
                 lambda net, d: net.predict(d, steps=2, verbose=0)):
        ours, theirs = _Batches(X), _Batches(X)
        assert _equal(call(guarded, ours), call(plain, theirs))
        # (Keras' evaluate ends the epoch once more on resetting its iterator)
        assert (ours.begun, ours.ended) == (theirs.begun, min(theirs.ended, 1)) == (1, 1)
    x = X.copy()
    x[17, 0] = np.nan
    refused = _Batches(x)
    with pytest.raises(aimsec_core.NonFiniteInputError):
        guarded.predict(refused, verbose=0)
    assert (refused.begun, refused.ended) == (1, 1)


class _Subclassed(keras.Model):
    """A subclassed model whose ``call`` names its input ``features``."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, features, training=False):
        return self.dense(features)


def test_a_subclassed_model_called_by_its_own_argument_name(sink):
    """``model(features=x)`` works on a subclassed model whose ``call`` takes
    ``features``: the guarded model screens that argument, and runs the model on it."""
    keras.utils.set_random_seed(0)
    model = _Subclassed()
    model(X[:1])
    guarded = aimsec_core.guard(model, sinks=[sink])
    assert _equal(guarded(features=X, training=False), model(features=X, training=False))
    assert sink.outcomes == ["allowed"]
    x = X.copy()
    x[3, 1] = np.nan
    with pytest.raises(aimsec_core.NonFiniteInputError) as caught:
        guarded(features=x)
    assert caught.value.verdict.flags[3] and sink.outcomes == ["allowed", "rejected"]


def test_a_long_pipeline_holds_its_latest_verdict_not_one_per_batch(pair):
    """Each batch's verdict (its flags per sample) was kept in a list until the call
    returned: memory that grew with the data read."""
    import gc

    from aimsec_core.verdict import Verdict

    _, model = pair
    guarded = aimsec_core.guard(model, sinks=[], policy=False)
    alive = []

    def batches():
        for i in range(150):
            if i == 149:  # 149 batches screened by now
                gc.collect()
                alive.append(sum(isinstance(o, Verdict) and o.client == "pipeline"
                                 for o in gc.get_objects()))
            yield (X[:8],)

    with aimsec_core.client("pipeline"):
        guarded.predict(batches(), verbose=0)
    assert alive and alive[0] < 20
    assert guarded.last_verdict is not None and guarded.last_verdict.batch_size == 8
