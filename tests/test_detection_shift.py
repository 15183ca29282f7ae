"""The shift detector: an L-infinity step along the discriminant's sign shows in the
clean data's noise floor; without a floor it abstains."""

from __future__ import annotations

import numpy as np
import pytest

from aimsec_core.detection import DetectorSuite, Probe, ShiftDetector
from tests.cases.evaluation_case import guarded_mlp


def _correlated(n: int, seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Two classes in 12 features: 3 latent factors mixed into every feature, plus small
    independent noise (the noise floor); the classes differ along the first factor."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    latent = rng.normal(0, 1, (n, 3))
    latent[:, 0] += np.where(labels == 1, 1.5, -1.5)
    mixing = np.random.default_rng(99).normal(0, 1, (3, 12))
    return latent @ mixing + rng.normal(0, noise, (n, 12)), labels


def _probe(x: np.ndarray, labels: np.ndarray, gradient: np.ndarray | None = None) -> Probe:
    probabilities = np.where(labels[:, None] == np.arange(2)[None], 0.9, 0.1)
    return Probe(x, probabilities, ask=None, gradient=gradient)


@pytest.fixture(scope="module")
def fitted():
    x, labels = _correlated(600)
    detector = ShiftDetector()
    detector.fit(_probe(x, labels), (-10, 10))
    return detector


def test_a_sign_step_along_the_discriminant_is_far_out_and_a_random_one_is_not(fitted):
    x, labels = _correlated(300, seed=1)
    clean = fitted.score(_probe(x, labels))
    # An attack from class 0 to class 1: every value moves by eps along the sign of the
    # discriminant from 0 to 1; the model now says 1 (runner-up 0).
    step = np.sign(fitted.discriminants[1] - fitted.discriminants[0])
    from_zero = x[labels == 0]
    attacked = fitted.score(_probe(from_zero + 0.3 * step, np.ones(len(from_zero), int)))
    assert np.median(attacked) > np.quantile(clean, 0.99)
    random_step = np.random.default_rng(2).choice([-1.0, 1.0], (len(from_zero), 12))
    wandered = fitted.score(_probe(from_zero + 0.3 * random_step, np.zeros(len(from_zero), int)))
    assert np.median(wandered) < np.median(attacked) / 3


def test_the_models_own_gradient_step_is_tested_where_the_probe_has_it(fitted):
    x, labels = _correlated(200, seed=3)
    zero = x[labels == 0]
    step = np.random.default_rng(4).choice([-1.0, 1.0], zero.shape)  # not the discriminant's
    moved, says_one = zero + 0.3 * step, np.ones(len(zero), int)
    without = fitted.score(_probe(moved, says_one))
    # the loss gradient at the predicted label points back, against the step taken
    with_gradient = fitted.score(_probe(moved, says_one, gradient=-step))
    assert np.median(with_gradient) > np.median(without) + 3


def test_it_abstains_without_a_noise_floor_and_keeps_nan_suspect():
    rng = np.random.default_rng(0)
    x, labels = rng.normal(0, 1, (400, 8)), rng.integers(0, 2, 400)  # no correlations
    detector = ShiftDetector()
    detector.fit(_probe(x, labels), (-5, 5))
    assert detector.whitener.shape[1] == 0
    scores = detector.score(_probe(np.vstack([x[:5], np.full((1, 8), np.nan)]),
                                   np.zeros(6, int)))
    assert (scores[:5] == 0).all() and np.isnan(scores[5])
    suite = DetectorSuite([detector])
    clean = suite.fit(_probe(x, labels), (-5, 5))
    assert suite.set_threshold_cross_fitted(clean, 0.05) == 0.0  # no evidence, no flags


def test_constant_features_tiny_sets_and_unknown_classes_score_finitely():
    x, labels = _correlated(30, seed=5)  # fewer samples than... 2.5 per feature
    x = np.hstack([x, np.full((30, 1), 0.5)])  # and a constant feature
    detector = ShiftDetector()
    detector.fit(_probe(x, labels), (-10, 10))
    scores = detector.score(_probe(x, labels))
    assert np.isfinite(scores).all()
    if detector.whitener.shape[1]:  # the constant direction is no part of the floor
        assert np.abs(detector.whitener[-1]).max() < 1e-6 * np.abs(detector.whitener).max()
    only_zero = ShiftDetector()
    only_zero.fit(_probe(x, np.zeros(30, int)), (-10, 10))  # clean data had one class
    assert (only_zero.score(_probe(x[:4], np.ones(4, int))) == 0).all()


def test_its_state_round_trips_and_damaged_state_is_refused(fitted):
    x, labels = _correlated(50, seed=6)
    restored = ShiftDetector(**fitted.config())
    restored.load_state(fitted.state())
    restored.check_state(12)
    np.testing.assert_allclose(restored.score(_probe(x, labels)),
                               fitted.score(_probe(x, labels)))
    with pytest.raises(ValueError):
        restored.check_state(11)
    damaged = {**fitted.state(), "whitener": fitted.whitener[:5]}
    with pytest.raises(ValueError):
        ShiftDetector().load_state(damaged)
    with pytest.raises(ValueError):
        ShiftDetector().load_state({**fitted.state(), "classes": np.array([1, 0])})


@pytest.mark.parametrize("classes", [np.array([], dtype=np.int64),
                                     np.array([0, 2**64 - 1], dtype=np.uint64)])
def test_state_without_classes_or_with_labels_past_int64_is_refused(fitted, classes):
    # a hostile calibration file: no class at all made every guarded call raise a raw
    # IndexError; a uint64 label past int64 wrapped to -1 and broke the sorted lookup
    rows = len(classes)
    state = {**fitted.state(), "classes": classes, "means": fitted.means[:1].repeat(rows, 0),
             "discriminants": fitted.discriminants[:1].repeat(rows, 0)}
    with pytest.raises(ValueError, match="class labels"):
        ShiftDetector().load_state(state)


def test_the_differentiable_copy_computes_the_guards_shift_score():
    torch = pytest.importorskip("torch")
    import aimsec_core
    from aimsec_core.evaluation.surrogates import Suite

    data, model, guarded = guarded_mlp("tabular", ["gradient", "density", "shift"],
                                       name="shift", reference=True)
    detector = aimsec_core.guard_of(guarded).calibration.suite.detectors[-1]
    assert detector.whitener.shape[1] > 0  # correlated features: a noise floor
    x = data.split.x_test[:40]
    with torch.no_grad():
        guarded(torch.from_numpy(x))
    expected = guarded.last_verdict.scores["shift"]
    suite = Suite(model, aimsec_core.guard_of(guarded).calibration, data.sample_shape)
    _, raw = suite.raw_scores(torch.from_numpy(x).requires_grad_(True))
    np.testing.assert_allclose(raw["shift"].detach().numpy(), expected, rtol=1e-3, atol=1e-3)
