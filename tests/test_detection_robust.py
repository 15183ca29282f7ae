"""The robust detector: disagreement with an adversarially trained MLP fitted at
calibration (framework-free: the MLP is numpy), its training, its state, and how the
suite fits it (once, on the reference data, where there is some)."""

from __future__ import annotations

import numpy as np
import pytest

import aimsec_core
from aimsec_core import digits
from aimsec_core.detection import DetectorSuite, Probe, RobustDetector
from aimsec_core.detection.robust import EPS_SHARE, separation
from aimsec_core.detection.robust_mlp import RobustMLP
from aimsec_core.errors import ConfigurationError


def _probe(x, labels, classes=10):
    return Probe(np.asarray(x, dtype=np.float64), np.eye(classes)[labels], ask=None)


@pytest.fixture(scope="module")
def fitted():
    data = digits.load(0)
    detector = RobustDetector(epochs=40)
    detector.fit(_probe(data.x_train, data.y_train), (0.0, 1.0))
    return data, detector


def test_the_input_gradient_is_the_loss_gradient():
    rng = np.random.default_rng(0)
    model = RobustMLP(rng.normal(size=(5, 7)), rng.normal(size=7), rng.normal(size=(7, 3)),
                      rng.normal(size=3))
    x, labels = rng.normal(size=(4, 5)), np.array([0, 2, 1, 2])

    def loss(values):
        z = model.logits(values)
        z = z - z.max(axis=1, keepdims=True)
        return -np.mean(z[np.arange(4), labels] - np.log(np.exp(z).sum(axis=1)))

    grad, _ = model._loss_gradients(x, labels, True)
    step = 1e-6
    for i, j in ((0, 0), (1, 3), (3, 4)):
        moved = x.copy()
        moved[i, j] += step
        assert grad[i, j] == pytest.approx((loss(moved) - loss(x)) / step, rel=1e-3, abs=1e-6)


def test_the_training_perturbation_stays_within_eps_and_the_range():
    rng = np.random.default_rng(1)
    model = RobustMLP.train(rng.random((80, 6)), rng.integers(0, 2, 80), 2, eps=0.1,
                            value_range=(0.0, 1.0), hidden=8, updates=5, attack_steps=2,
                            seed=0)
    x = rng.random((20, 6)).astype(np.float32)
    moved = model.perturbed(x, np.zeros(20, dtype=int), 0.3, 4, (0.0, 1.0), rng)
    assert np.abs(moved - x).max() <= 0.3 + 1e-6
    assert moved.min() >= 0.0 and moved.max() <= 1.0


def test_adversarial_training_resists_perturbations_plain_training_does_not():
    data = digits.load(0)
    x, y = data.x_train, data.y_train

    def accuracy_under_attack(model, eps):
        rng = np.random.default_rng(5)
        moved = model.perturbed(data.x_test, data.y_test, eps, 10, (0.0, 1.0), rng)
        return (model.logits(moved).argmax(1) == data.y_test).mean()

    options = dict(value_range=(0.0, 1.0), hidden=64, updates=400, attack_steps=2, seed=0)
    plain = RobustMLP.train(x, y, 10, eps=0.0, **options)
    robust = RobustMLP.train(x, y, 10, eps=0.2, **options)
    assert (robust.logits(data.x_test).argmax(1) == data.y_test).mean() > 0.85
    # measured: 0.36 against 0.01 (a small model, 400 updates)
    assert accuracy_under_attack(robust, 0.2) > accuracy_under_attack(plain, 0.2) + 0.2


def test_a_digit_predicted_as_another_class_scores_higher(fitted):
    data, detector = fitted
    x, y = data.x_test[:200], data.y_test[:200]
    own = detector.score(_probe(x, y))
    other = detector.score(_probe(x, (y + 1) % 10))
    assert np.median(own) < 0 < np.median(other)  # agrees with the truth, not the lie
    assert (other > own).mean() > 0.95


def test_eps_is_a_share_of_the_class_separation_unless_given():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [1.0, 0.4]])
    labels = np.array([0, 0, 1, 1])
    # nearest input labelled otherwise, L-infinity: 0.9, 0.9, 0.9, 0.9
    assert separation(x, labels, np.random.default_rng(0)) == pytest.approx(0.9)
    assert separation(x, np.zeros(4, dtype=int), np.random.default_rng(0)) == 0.0
    detector = RobustDetector(epochs=1)
    detector.fit(_probe(x, labels, 2), (0.0, 1.0))
    assert detector.eps == pytest.approx(EPS_SHARE * 0.9)
    given = RobustDetector(eps=0.05, epochs=1)
    given.fit(_probe(x, labels, 2), (0.0, 1.0))
    assert given.eps == 0.05


def test_its_state_round_trips_and_hostile_state_is_refused(fitted):
    data, detector = fitted
    restored = RobustDetector(**detector.config())
    restored.load_state({k: np.asarray(v) for k, v in detector.state().items()})
    restored.check_state(64)
    probe = _probe(data.x_test[:50], data.y_test[:50])
    np.testing.assert_allclose(restored.score(probe), detector.score(probe))
    assert restored.eps == detector.eps
    with pytest.raises(ValueError, match="reads 64 values"):
        restored.check_state(65)
    state = {k: np.asarray(v) for k, v in detector.state().items()}
    for key, value in (("w2", state["w2"][:3]), ("b1", np.full_like(state["b1"], np.nan)),
                       ("w1", state["w1"] * 1e12), ("eps", np.zeros(2))):
        with pytest.raises(ValueError):
            RobustDetector().load_state({**state, key: value})


def test_the_suite_fits_it_once_on_the_reference_and_scores_calibration_out_of_sample():
    data = digits.load(0)
    fits = []

    class Counted(RobustDetector):
        def fit(self, probe, value_range):
            fits.append(len(probe.x))
            super().fit(probe, value_range)

    calibration = _probe(data.x_calibration[:100], data.y_calibration[:100])
    reference = _probe(data.x_train[:300], data.y_train[:300])
    DetectorSuite([Counted(epochs=2)]).fit(calibration, (0.0, 1.0), reference=reference)
    assert fits == [300]  # the reference alone, once
    fits.clear()
    DetectorSuite([Counted(epochs=2)]).fit(calibration, (0.0, 1.0))
    assert fits == [80] * 5 + [100]  # without one: cross-fitted, as every learner


def test_a_calibration_file_keeps_it(tmp_path):
    from sklearn.naive_bayes import GaussianNB

    data = digits.load(0)
    model = GaussianNB().fit(data.x_train, data.y_train)
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor")
    guarded.calibrate(data.x_calibration, detectors=[RobustDetector(epochs=10), "density"],
                      reference=data.x_train)
    path = guarded.save_calibration(tmp_path / "robust.npz")
    again = aimsec_core.guard(model, sinks=[], mode="monitor", calibration=path)
    guarded.predict(data.x_test[:40])
    again.predict(data.x_test[:40])
    np.testing.assert_allclose(again.last_verdict.scores["robust"],
                               guarded.last_verdict.scores["robust"])


def test_settings_out_of_range_are_refused():
    for setting in ({"hidden": 0}, {"eps": -0.1}, {"attack_steps": 101}, {"epochs": 1.5}):
        with pytest.raises(ConfigurationError):
            RobustDetector(**setting)


def test_a_model_of_one_class_saves_and_reloads_its_calibration(tmp_path):
    # its classifier had one logit, so every clean score was -inf, the tail NaN, and
    # saving the calibration raised a raw ValueError from the JSON encoder
    from sklearn.dummy import DummyClassifier

    x = np.random.default_rng(0).normal(size=(60, 6))
    model = DummyClassifier().fit(x, np.zeros(len(x), int))
    guarded = aimsec_core.guard(model, sinks=[], policy=False)
    guarded.calibrate(x[:40], detectors=[RobustDetector(epochs=2), "density"])
    path = guarded.save_calibration(tmp_path / "one.npz")
    again = aimsec_core.guard(model, sinks=[], policy=False, calibration=path)
    again.predict(x[40:])
    assert list(again.last_verdict.scores["robust"]) == [0.0] * 20


def test_a_classifier_of_other_classes_than_the_model_is_a_calibration_error(fitted):
    # a (crafted) file whose classifier has 3 classes for a 10-class model raised a raw
    # ValueError on every call
    data, detector = fitted
    restored = RobustDetector()
    state = {k: np.asarray(v) for k, v in detector.state().items()}
    restored.load_state({**state, "w2": state["w2"][:, :3], "b2": state["b2"][:3]})
    with pytest.raises(aimsec_core.CalibrationError, match="3 classes; the model gives 10"):
        restored.score(_probe(data.x_test[:5], data.y_test[:5]))
