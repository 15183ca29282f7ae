"""The boundary detector: the linearised distance to the decision boundary, exact for a
linear model, blind to how steep the model is, and what the suite flags a minimal attack
with."""

from __future__ import annotations

import numpy as np
import pytest

from aimsec_core.detection import BoundaryDetector, DetectorSuite, MarginDetector, Probe
from tests.cases.evaluation_case import guarded_mlp


def _linear(x: np.ndarray, w: np.ndarray) -> Probe:
    """A two-class linear softmax model, logits ``(0, x @ w)``, probed as the guard would:
    its probabilities and the input gradient of the cross-entropy at the predicted label."""
    z = x @ w
    p1 = 1.0 / (1.0 + np.exp(-z))
    probabilities = np.stack([1.0 - p1, p1], axis=1)
    predicted = probabilities.argmax(axis=1)
    # d(-log p_t)/dx = -(1 - p_t) * d(z_t - z_r)/dx, and d(z_1 - z_0)/dx = w
    toward = np.where(predicted == 1, 1.0, -1.0)[:, None] * w[None]
    gradient = -(1.0 - probabilities.max(axis=1))[:, None] * toward
    return Probe(x, probabilities, ask=None, gradient=gradient)


def test_the_score_is_minus_the_log_of_the_distance_to_a_linear_boundary():
    rng = np.random.default_rng(0)
    w = np.array([3.0, -4.0])  # |w| = 5
    x = rng.normal(0, 1, (50, 2))
    scores = BoundaryDetector().score(_linear(x, w))
    np.testing.assert_allclose(scores, -np.log(np.abs(x @ w) / 5.0), rtol=1e-6)


def test_it_reads_distance_where_the_margin_reads_steepness():
    # The same inputs, one model ten times steeper than the other: the boundary and every
    # distance to it are the same, the margins are not.
    x = np.array([[0.05, 0.0], [0.5, 0.0], [2.0, 0.0]])
    gentle, steep = np.array([1.0, 0.0]), np.array([10.0, 0.0])
    np.testing.assert_allclose(BoundaryDetector().score(_linear(x, gentle)),
                               BoundaryDetector().score(_linear(x, steep)), rtol=1e-6)
    assert not np.allclose(MarginDetector().score(_linear(x, gentle)),
                           MarginDetector().score(_linear(x, steep)))
    scores = BoundaryDetector().score(_linear(x, gentle))
    assert scores[0] > scores[1] > scores[2]  # nearer the boundary, more suspect


def test_ties_saturation_nan_and_one_class_models_score_without_raising():
    detector = BoundaryDetector()
    x = np.zeros((4, 2))
    probabilities = np.array([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1], [np.nan, np.nan]])
    gradient = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    scores = detector.score(Probe(x, probabilities, ask=None, gradient=gradient))
    assert np.isfinite(scores[:3]).all() and np.isnan(scores[3])
    assert scores[0] == scores[:3].max()  # a tie is on the boundary
    one_class = Probe(x[:2], np.ones((2, 1)), ask=None, gradient=np.ones((2, 2)))
    assert detector.score(one_class).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="gradient"):
        detector.score(Probe(x, probabilities, ask=None))


def test_calibrated_it_flags_inputs_moved_just_past_the_boundary():
    """Clean inputs of two classes and the same inputs moved minimally (to 2% past the
    boundary, as DeepFool does): the calibrated suite flags the moved ones and about 5% of
    new clean ones."""
    rng = np.random.default_rng(1)
    w = np.array([1.0, 1.0, 0.0, 0.0])

    def clean(n: int) -> np.ndarray:
        labels = rng.integers(0, 2, n)
        return rng.normal(0, 1, (n, 4)) + np.where(labels == 1, 1.5, -1.5)[:, None] * w / 2

    suite = DetectorSuite([BoundaryDetector()])
    fitted = suite.fit(_linear(clean(2000), w), (-10.0, 10.0))
    suite.set_threshold_cross_fitted(fitted, fpr=0.05)
    test = clean(4000)
    assert abs(suite.score(_linear(test, w)).flags.mean() - 0.05) < 0.015
    z = test @ w
    far = np.abs(z) / np.linalg.norm(w) > 0.5  # what a minimal attack has to move
    crossed = test[far] - 1.02 * (z[far] / (w @ w))[:, None] * w[None]
    assert suite.score(_linear(crossed, w)).flags.mean() > 0.99


def test_a_guard_calibrated_with_it_saves_and_loads_the_same_verdicts(tmp_path):
    torch = pytest.importorskip("torch")
    import aimsec_core
    from aimsec_core import digits
    from aimsec_core.evaluation import datasets

    data = datasets.load("wine", 0)
    model = digits.torch_mlp(data.split, epochs=5)

    def guarded():
        return aimsec_core.guard(model, name="boundary", sinks=[], mode="monitor",
                                 constraints=digits.constraints(
                                     "torch", sample_shape=data.sample_shape))

    first = guarded()
    first.calibrate(torch.from_numpy(data.split.x_calibration), fpr=0.05,
                    detectors=["boundary", "density"])
    path = first.save_calibration(tmp_path / "wine.npz")
    second = guarded()
    second.load_calibration(path)
    x = torch.from_numpy(data.split.x_test)
    with torch.no_grad():
        first(x)
        second(x)
    for name in ("boundary", "suspicion"):
        np.testing.assert_allclose(second.last_verdict.scores[name],
                                   first.last_verdict.scores[name])
    assert aimsec_core.guard_of(second).calibration.summary()["detectors"]["boundary"][
        "raw_threshold"] is not None


def test_the_differentiable_copy_computes_the_guards_boundary_score():
    torch = pytest.importorskip("torch")
    import aimsec_core
    from aimsec_core.evaluation.surrogates import Suite

    data, model, guarded = guarded_mlp("wine", ["boundary", "density"], name="boundary")
    x = data.split.x_test[:40]
    with torch.no_grad():
        guarded(torch.from_numpy(x))
    expected = guarded.last_verdict.scores["boundary"]
    suite = Suite(model, aimsec_core.guard_of(guarded).calibration, data.sample_shape)
    inputs = torch.from_numpy(x).requires_grad_(True)
    _, raw = suite.raw_scores(inputs)
    np.testing.assert_allclose(raw["boundary"].detach().numpy(), expected, rtol=1e-3,
                               atol=1e-3)
    _, suspicion = suite(inputs)
    (grad,) = torch.autograd.grad(suspicion.sum(), inputs)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0  # an attacker can descend it


def test_evaluate_gives_models_without_autograd_the_margin_in_its_place():
    from aimsec_core.evaluation.run import _usable

    asked = ["boundary", "gradient", "density", "neighbours"]
    assert _usable(asked, gradients=True) == asked
    assert _usable(asked, gradients=False) == ["margin", "density", "neighbours"]


def test_the_detector_aware_attack_gets_across_the_boundary_it_guards():
    """-log(log-odds) has no bound at the decision boundary: differentiated as it is, it
    walled the boundary off and the adaptive attack fooled nothing (a gradient-masking
    artefact that flatters the detector); its copy takes a smoothed gradient."""
    pytest.importorskip("torch")
    import aimsec_core
    from aimsec_core.evaluation import adaptive
    from aimsec_core.evaluation.measure import predict

    data, model, guarded = guarded_mlp("wine", ["boundary", "density"], epochs=30,
                                       name="boundary")
    x, y = data.split.x_test, data.split.y_test
    x_adv = adaptive.detector_aware(model, aimsec_core.guard_of(guarded).calibration, data,
                                    x, y, 0.1, 20, constrained=False, targets=1,
                                    penalties=(1.0,))
    correct = predict("torch", model, data, x) == y
    fooled = correct & (predict("torch", model, data, x_adv) != y)
    assert fooled.sum() >= 12  # measured: 18 of 45 (unsmoothed: 0)
