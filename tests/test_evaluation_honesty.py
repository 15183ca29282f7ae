"""What ``aimsec evaluate`` reports means what it says, on a small subset: the adaptive
attacker's copy of the suite gives the guard's own suspicion (so its choice of example,
"best of all targets", is made on the number the guard decides by), and the rows count
only what the detectors flag."""

from __future__ import annotations

import numpy as np
import pytest

import aimsec_core
from aimsec_core import digits

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def setup():
    """The digits CNN, guarded and calibrated as the evaluation does it (default
    detectors, 5% FPR, the training set as reference), on test samples 0-63."""
    from aimsec_core.evaluation import run

    from tests.test_adaptive import digits_cnn

    data, model = digits_cnn()
    x, y = data.split.x_test[:64], data.split.y_test[:64]
    target = run._target(data, "torch", model, x, y, fpr=0.05, seed=0, detectors=None,
                         reference=True)
    return data, model, target, x, y


def _guard_suspicion(target, x):
    target.guarded(digits.as_model_input("torch", x))
    return np.asarray(target.guarded.last_verdict.scores["suspicion"])


def test_the_attackers_suspicion_is_the_guards(setup):
    """The adaptive attacks keep, per sample, the fooling iterate with the lowest suspicion
    by the differentiable suite; that must be the guard's suspicion, not a smoothed one
    (which read up to 0.3 higher in the clean scores' sparse upper tail, near the
    threshold, and so picked examples by a number the guard never computes)."""
    from aimsec_core.evaluation import adaptive
    from aimsec_core.evaluation.surrogates import Suite

    data, model, target, x, y = setup
    calibration = aimsec_core.guard_of(target.guarded).calibration
    x_adv = adaptive.high_confidence(model, calibration, data, x, y, 0.2, 10,
                                     constrained=True)
    for relaxation in (None, 1 / 16):
        suite = Suite(model, calibration, data.sample_shape, relaxation=relaxation)
        for batch in (x, x_adv):
            values = torch.from_numpy(batch).requires_grad_(True)
            _, suspicion = suite(values)
            np.testing.assert_allclose(suspicion.detach().numpy(),
                                       _guard_suspicion(target, batch), atol=1e-3)
            # and it still has a gradient to follow, finite everywhere
            (grad,) = torch.autograd.grad(suspicion.sum(), values)
            assert torch.isfinite(grad).all()
            assert (grad.abs().sum(dim=1) > 0).float().mean() > 0.9
