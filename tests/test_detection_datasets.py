"""The evaluation's data sets: bundled or generated, in [0, 1], seeded, and the textured
digits without the zero background that made digits detection look easy."""

from __future__ import annotations

import numpy as np
import pytest

from aimsec_core.evaluation import datasets


@pytest.mark.parametrize("name", list(datasets.DATASETS))
def test_every_data_set_is_scaled_split_and_seeded(name):
    data = datasets.load(name, 0)
    split = data.split
    parts = (split.x_train, split.x_calibration, split.x_test)
    assert all(p.dtype == np.float32 and p.shape[1] == data.width for p in parts)
    assert min(p.min() for p in parts) >= 0.0 and max(p.max() for p in parts) <= 1.0
    assert set(np.unique(split.y_train)) == set(range(data.classes))
    again = datasets.load(name, 0).split
    np.testing.assert_array_equal(again.x_test, split.x_test)
    assert not np.array_equal(datasets.load(name, 1).split.x_test, split.x_test)


def test_textured_digits_have_no_zero_and_no_grid():
    plain, textured = datasets.load("digits", 0), datasets.load("digits-textured", 0)
    assert (plain.split.x_train == 0).mean() > 0.4  # the artefact
    x = textured.split.x_train
    assert x.min() >= 0.3 - 1e-6  # no budget evaluated (<= 0.3) reaches zero
    assert not np.allclose(x * 16, np.round(x * 16))
    np.testing.assert_array_equal(textured.split.y_train, plain.split.y_train)


def test_unknown_data_sets_are_named():
    with pytest.raises(ValueError, match="expected one of"):
        datasets.load("mnist")


@pytest.mark.parametrize("name", ["wine", "tabular"])
def test_tabular_data_sets_are_scaled_by_their_training_split_alone(name):
    """The scale comes from the training split (as a deployed model's preprocessing
    would): every feature spans exactly [0, 1] there (scaled over the whole data set,
    a feature whose extreme lies in a held-out sample would not), and the calibration
    and test splits, whose values may fall outside the training range, are clipped."""
    split = datasets.load(name, 0).split
    np.testing.assert_allclose(split.x_train.min(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(split.x_train.max(axis=0), 1.0, atol=1e-6)
    held_out = np.concatenate([split.x_calibration, split.x_test])
    assert held_out.min() >= 0.0 and held_out.max() <= 1.0
