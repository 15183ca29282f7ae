"""Boolean masks beside a model's inputs are screened as their 0/1 values in uint8, by one
core helper for every framework (``aimsec_core.arrays.masks_as_bytes``); the model's own
inputs stay as they are, and a mask that cannot be viewed is left for validation to
refuse by name, never a crash."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import aimsec_core
from aimsec_core import InputFormatError
from aimsec_core.arrays import masks_as_bytes
from tests.conftest import ListSink


def _keras_kinds() -> dict[str, object]:
    import keras

    kinds = {"keras.Variable": lambda a: keras.Variable(a, dtype="bool")}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        kinds["tf.Tensor"] = tf.constant
    return kinds


#: array kind -> numpy bool array to that kind
KINDS = {"numpy": lambda a: a, "torch": torch.from_numpy,
         "torch-transposed": lambda a: torch.from_numpy(a.T.copy()).permute(
             *reversed(range(a.ndim))), **_keras_kinds()}


def _read(value):
    import keras

    return keras.ops.convert_to_numpy(value)


@settings(max_examples=40, deadline=None, database=None)
@given(mask=hnp.arrays(np.bool_, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5)),
       kind=st.sampled_from(sorted(KINDS)))
def test_every_boolean_mask_kind_becomes_its_0_1_values(mask, kind):
    primary = KINDS[kind](mask.copy())
    out = masks_as_bytes({"x": primary, "mask": KINDS[kind](mask)}, _read)
    assert out["x"] is primary  # the model's own input: a dtype error, not a mask
    host = np.asarray(out["mask"].cpu() if isinstance(out["mask"], torch.Tensor)
                      else out["mask"])
    assert host.dtype == np.uint8
    np.testing.assert_array_equal(host, mask.astype(np.uint8))


def test_a_view_shares_the_masks_memory_and_other_values_are_untouched():
    mask = torch.ones(4, 3, dtype=torch.bool)
    other = torch.zeros(4, 3)
    out = masks_as_bytes({"x": other, "mask": mask, "bias": other, "none": None,
                          "listed": [True, False]}, after=1)
    assert out["mask"].dtype is torch.uint8 and out["mask"].data_ptr() == mask.data_ptr()
    assert out["bias"] is other and out["none"] is None and out["listed"] == [True, False]
    declared = {"a": np.ones(2, bool), "b": np.ones(2, bool), "extra": np.ones(2, bool)}
    out = masks_as_bytes(declared, after=2)  # a model's second declared input stays bool
    assert [v.dtype for v in out.values()] == [np.bool_, np.bool_, np.uint8]


def test_a_sparse_boolean_torch_mask_is_refused_by_name_not_a_crash():
    class Masked(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)

        def forward(self, x, mask=None):
            return self.linear(x)

    sink = ListSink()
    guarded = aimsec_core.guard(Masked(), name="masked", sinks=[sink])
    mask = torch.ones(4, 3, dtype=torch.bool)
    with pytest.raises(InputFormatError, match="'mask'"):
        guarded(torch.rand(4, 3), mask=mask.to_sparse())
    guarded(torch.rand(4, 3), mask=mask)
    assert [e.outcome for e in sink.events] == ["rejected", "allowed"]
