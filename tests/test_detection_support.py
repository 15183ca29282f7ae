"""The support detector: neighbours on the pattern of values above the data's floor, on
its own and through a calibration file (framework-free)."""

from __future__ import annotations

import numpy as np

from aimsec_core import digits
from aimsec_core.detection import Probe, SupportDetector


def _probe(x, labels, classes=10):
    return Probe(np.asarray(x, dtype=np.float64), np.eye(classes)[labels], ask=None)


def test_a_digit_predicted_as_another_class_than_its_shape_scores_higher():
    data = digits.load(0)
    detector = SupportDetector()
    detector.fit(_probe(data.x_train, data.y_train), (0.0, 1.0))
    assert detector.active
    x, y = data.x_test[:200], data.y_test[:200]
    own = detector.score(_probe(x, y))
    other = detector.score(_probe(x, (y + 1) % 10))  # the shape of y, predicted y + 1
    assert np.median(other) > np.percentile(own, 90)
    assert (other > own).mean() > 0.9
    # values above the floor count as support whatever their size: scaling them changes
    # nothing, zeroing a stroke does
    np.testing.assert_allclose(detector.score(_probe(0.5 * x + 0.01 * (x > 0), y)), own)


def test_it_switches_itself_off_where_the_floor_means_nothing():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 1.0, (300, 64))  # no value at the floor (textured images)
    labels = rng.integers(0, 3, 300)
    detector = SupportDetector()
    detector.fit(_probe(x, labels, 3), (0.3, 1.0))
    assert not detector.active
    np.testing.assert_array_equal(detector.score(_probe(x[:5], labels[:5], 3)), 0.0)
    assert set(detector.state()) == {"floor"}


def test_its_state_round_trips_active_and_inactive():
    data = digits.load(0)
    for x, floor in ((data.x_train, 0.0), (data.x_train + 0.5, 0.5 - 1.0)):
        fitted = SupportDetector(k=3)
        fitted.fit(_probe(x, data.y_train), (floor, 1.5))
        restored = SupportDetector(k=3)
        restored.load_state({k: np.asarray(v) for k, v in fitted.state().items()})
        restored.check_state(64)
        assert restored.active == fitted.active
        probe = _probe(x[:50], data.y_train[:50])
        np.testing.assert_allclose(restored.score(probe), fitted.score(probe))
