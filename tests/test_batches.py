"""Running a model that declares a fixed batch length on batches of any size
(``aimsec_core.batches``): what the detectors' passes hand the model."""

from __future__ import annotations

import numpy as np
import pytest

from aimsec_core.batches import batched, fixed_batch, free_batch
from aimsec_core.signature import InputSpec


class _Model:
    """Takes exactly ``batch`` rows (or any number, with ``None``), as a fixed-batch
    session does; records each batch it was run on."""

    def __init__(self, batch: int | None) -> None:
        self.batch, self.seen = batch, []

    def scores(self, x: np.ndarray) -> np.ndarray:
        if self.batch is not None and len(x) != self.batch:
            raise ValueError(f"got {len(x)} rows; expected {self.batch}")
        self.seen.append(np.array(x))
        return np.stack([x.sum(axis=1), -x.sum(axis=1)], axis=1)

    def features(self, x: np.ndarray) -> list[np.ndarray]:
        return [self.scores(x), x * 2]

    def gradient(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        self.scores(x)
        return x * labels[:, None]


X = np.arange(30, dtype=np.float32).reshape(10, 3)


def test_a_fixed_batch_runs_in_batches_of_it_the_last_padded_and_cut():
    model = _Model(4)
    got = batched(model.scores, 4, chunk=512)(X)
    np.testing.assert_array_equal(got, _Model(None).scores(X))
    assert [len(b) for b in model.seen] == [4, 4, 4]
    np.testing.assert_array_equal(model.seen[2], X[[8, 9, 9, 9]])  # last row repeated


def test_every_output_and_every_input_is_cut_alike():
    model = _Model(4)
    layers = batched(model.features, 4)(X)
    assert [layer.shape for layer in layers] == [(10, 2), (10, 3)]
    np.testing.assert_array_equal(layers[1], X * 2)
    labels = np.arange(10) % 3
    np.testing.assert_array_equal(batched(model.gradient, 4)(X, labels), X * labels[:, None])


@pytest.mark.parametrize("rows", [4, 0])
def test_one_batch_of_the_fixed_size_or_none_is_handed_over_as_it_is(rows):
    output = np.zeros(1)
    assert batched(lambda x: output, 4)(X[:rows]) is output


def test_a_free_batch_runs_in_chunks_unpadded_or_whole():
    model = _Model(None)
    np.testing.assert_array_equal(batched(model.scores, None, chunk=4)(X),
                                  _Model(None).scores(X))
    assert [len(b) for b in model.seen] == [4, 4, 2]
    run = model.scores
    assert batched(run, None) is run


@pytest.mark.parametrize("shape, batch", [
    ((1, 1, 8, 8), 1), ((4, 64), 4), ((None, 64), None), (("batch", 64), None),
    ((64,), None), (None, None)])
def test_the_fixed_batch_is_a_fixed_leading_length_of_rank_two_or_more(shape, batch):
    spec = InputSpec("x", "float32", shape)
    assert fixed_batch([spec]) == batch
    freed = free_batch(spec)
    assert freed.shape == (shape if batch is None else (None, *shape[1:]))
    assert fixed_batch(None) is None and free_batch(None) is None
