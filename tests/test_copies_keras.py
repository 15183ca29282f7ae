"""Keras: a guarded model refuses to be copied or pickled, by a typed error; the gradient
pass of a calibrated ``predict`` works in chunks of the call's batch size, with the same
values as one pass over the whole batch."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import aimsec_core
from aimsec_core.errors import UncopyableError
from tests.cases import digits
from tests.cases.keras_case import CASE

keras = pytest.importorskip("keras")


@pytest.mark.parametrize("make_copy", [copy.copy, copy.deepcopy, pickle.dumps],
                         ids=["copy", "deepcopy", "pickle"])
def test_copies_are_refused_with_a_typed_error_that_says_how(make_copy):
    guarded = aimsec_core.guard(CASE.model(), sinks=[])
    with pytest.raises(UncopyableError, match="clone_model") as caught:
        make_copy(guarded)
    assert isinstance(caught.value, TypeError)  # what pickle and copy raise for the rest
    assert isinstance(caught.value, aimsec_core.ConfigurationError)


def test_the_gradient_pass_of_predict_works_in_chunks_of_the_batch_size(monkeypatch, sink):
    from aimsec_keras import GRADIENT_CHUNK, _gradients

    x, _ = digits()
    model = CASE.model()
    guarded = aimsec_core.guard(model, sinks=[sink], policy=False, mode="monitor",
                                constraints={"min_value": 0.0, "max_value": 1.0})
    guarded.calibrate(x[900:1300])
    passes: list[int] = []
    one_pass = _gradients._one_pass
    monkeypatch.setattr(_gradients, "_one_pass",
                        lambda model, x, *rest: passes.append(len(x)) or one_pass(model, x, *rest))
    batch = x[:700]
    guarded.predict(batch, verbose=0)
    assert passes == [GRADIENT_CHUNK, GRADIENT_CHUNK, 700 - 2 * GRADIENT_CHUNK]
    passes.clear()
    guarded.predict(batch, batch_size=300, verbose=0)  # a larger batch size is the chunk
    assert passes == [300, 300, 100]
    chunked = guarded.last_verdict.scores["suspicion"]

    whole = _gradients.forward_backward(model, batch, None)  # one pass, for comparison
    parts = _gradients.forward_backward(model, batch, None, chunk=300)
    np.testing.assert_allclose(parts[0], whole[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts[2], whole[2], rtol=1e-4, atol=1e-7)
    assert len(chunked) == 700 and len(sink.events) == 2  # both calls screened and recorded
