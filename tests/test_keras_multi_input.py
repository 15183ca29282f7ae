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


def _meta(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 3)).astype(np.float32)


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
    guard = aimsec_core.guard_of(guarded)
    made = _single_input_calibration()
    saved = made.save(tmp_path / "single.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # made for another model
        for install in (lambda: guard.use_calibration(made, force=True),
                        lambda: guarded.load_calibration(saved, force=True)):
            with pytest.raises(CalibrationError, match=r"2 inputs \['image', 'meta'\]"):
                install()
    with pytest.raises(CalibrationError, match="one input"):
        guard.calibration = made
    assert guard.calibration is None
    for given in ([x[:5], _meta(5, 1)], {"image": x[:5], "meta": _meta(5, 1)}):
        assert guarded.predict(given, verbose=0).shape == (5, 10)
        assert tuple(guarded(given).shape) == (5, 10)
    assert set(sink.outcomes) == {"allowed"}
