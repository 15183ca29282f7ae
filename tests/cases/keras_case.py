"""The Keras case: a small dense digits classifier on whichever backend ``KERAS_BACKEND``
names (TensorFlow by default; the torch backend is run in a subprocess by
``tests/test_keras_adapter.py``)."""

from __future__ import annotations

import numpy as np

from . import AdapterCase, digits


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


CASE = AdapterCase(
    id="keras",
    build=_build,
    to_native=lambda x: x,
    call_plain=lambda model, x: np.asarray(model.predict(x, verbose=0)),
    call_guarded=lambda guarded, x: np.asarray(guarded.predict(x, verbose=0)),
    from_numpy_any=lambda a: a,
    declares_shape=True,
)
