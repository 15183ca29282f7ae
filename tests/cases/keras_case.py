"""The Keras case: a small dense digits classifier on whichever backend ``KERAS_BACKEND``
names (TensorFlow by default; the torch backend is run in a subprocess by
``tests/test_keras_adapter.py``)."""

from __future__ import annotations

import numpy as np

from . import AdapterCase, float_batches, layouts, digits


def _build():
    import keras

    keras.utils.set_random_seed(0)
    x, y = digits()
    model = keras.Sequential([
        keras.Input((64,), name="pixels"),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    return model


def valid_inputs():
    """What Keras casts to its float32 input itself: float32, float64 and integer arrays,
    in any layout or byte order (Keras' predict takes no nested lists)."""
    return float_batches([np.float32, np.float64, np.int32, np.int64, np.uint8]).flatmap(
        lambda a: layouts(a, lists=False, big_endian=True))


CASE = AdapterCase(
    id="keras",
    build=_build,
    to_native=lambda x: x,
    call_plain=lambda model, x: np.asarray(model.predict(x, verbose=0)),
    call_guarded=lambda guarded, x: np.asarray(guarded.predict(x, verbose=0)),
    from_numpy_any=lambda a: a,
    declares_shape=True,
    valid_inputs=valid_inputs,
)
