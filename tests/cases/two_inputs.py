"""Data and a check shared by the tests of models of two inputs: ``image`` (digits' 64
pixels) and ``meta`` (3 uniform noise features the models learn to ignore)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from aimsec_core import CalibrationError, guard_of
from tests.cases import digits


def meta(n: int, seed: int) -> np.ndarray:
    """(n, 3) float32 in [0, 1): the ``meta`` input."""
    return np.random.default_rng(seed).uniform(0, 1, (n, 3)).astype(np.float32)


X = digits()[0].astype(np.float32)
META = meta(len(X), 1)
ORDER = np.random.default_rng(0).permutation(len(X))
#: shuffled rows: digits are stored in runs of classes, so a contiguous split is biased
CALIBRATION, HELD_OUT = ORDER[:400], ORDER[400:600]


def assert_one_input_calibration_refused(guarded: Any, made: Any, path: Any) -> None:
    """A one-input calibration ``made`` is refused by the two-input ``guarded`` however it
    is installed (forced, loaded forced from ``path``, set on the guard), which stays
    uncalibrated."""
    guard = guard_of(guarded)
    saved = made.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # made for another model
        for install in (lambda: guard.use_calibration(made, force=True),
                        lambda: guarded.load_calibration(saved, force=True)):
            with pytest.raises(CalibrationError, match=r"2 inputs \['image', 'meta'\]"):
                install()
    with pytest.raises(CalibrationError, match="one input"):
        guard.calibration = made
    assert guard.calibration is None
