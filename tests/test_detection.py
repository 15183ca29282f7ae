"""Detectors and their calibration on hand-checkable data (framework-free where possible)."""

from __future__ import annotations

import numpy as np
import pytest

import aimsec_core
from aimsec_core import CalibrationError, ConfigurationError
from aimsec_core.adapter import Capabilities
from aimsec_core.detection import (DensityDetector, DetectorSuite, MarginDetector, Probe,
                                   select_detectors, softmax_if_needed)
from aimsec_core.detection.calibration import Calibration
from aimsec_core.detection.squeeze import median_smooth, reduce_bit_depth
from aimsec_core.detection.structure import SparsityDetector
from aimsec_core.detection.suite import CleanReference


def _probe(x, probabilities=None):
    if probabilities is None:
        probabilities = np.full((len(x), 2), 0.5)
    return Probe(np.asarray(x, dtype=np.float64), np.asarray(probabilities), ask=None)


def test_margin_is_one_minus_the_gap_between_the_top_two_classes():
    probe = _probe(np.zeros((2, 1)), [[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    np.testing.assert_allclose(MarginDetector().score(probe), [0.5, 0.95])


def test_a_model_of_one_class_calibrates_with_the_default_detectors(sink):
    # predict_proba of a one-class estimator has one column: the margin's runner-up
    # lookup raised a raw IndexError from calibrate
    from sklearn.dummy import DummyClassifier

    x = np.random.default_rng(0).normal(size=(120, 6))
    model = DummyClassifier().fit(x, np.zeros(len(x), int))
    guarded = aimsec_core.guard(model, sinks=[sink], policy=False)
    guarded.calibrate(x[:80])
    np.testing.assert_array_equal(guarded.predict(x[80:]), 0)
    assert MarginDetector().score(_probe(x[:2], [[1.0], [1.0]])).tolist() == [0.0, 0.0]


def test_softmax_is_applied_only_to_scores_that_are_not_probabilities():
    probabilities = np.array([[0.25, 0.75]])
    assert softmax_if_needed(probabilities) is not None
    np.testing.assert_allclose(softmax_if_needed(probabilities), probabilities)
    np.testing.assert_allclose(softmax_if_needed(np.array([[0.0, np.log(3)]])), probabilities)


def test_bit_depth_reduction_and_median_smoothing_by_hand():
    np.testing.assert_allclose(reduce_bit_depth(np.array([0.1, 0.2, 0.9]), 1, 0.0, 1.0),
                               [0.0, 0.0, 1.0])
    image = np.zeros((1, 1, 3, 3))
    image[0, 0, 1, 1] = 1.0  # a lone bright pixel: every 2x2 window's median is 0
    assert median_smooth(image, 2).max() == 0.0
    image[0, 0, 1, 2] = 1.0  # two side by side: the windows holding both give (1+0)/2
    assert median_smooth(image, 2).max() == 0.5
    assert median_smooth(np.ones((1, 3, 3)), 2).min() == 1.0


def test_density_scores_points_off_the_clean_data_higher():
    rng = np.random.default_rng(0)
    clean = rng.normal(0, 1, (400, 3)) * [1.0, 1.0, 0.01]  # third axis barely varies
    probabilities = np.tile([1.0, 0.0], (400, 1))
    detector = DensityDetector()
    detector.fit(_probe(clean, probabilities), (-5, 5))
    on, off = np.zeros((1, 3)), np.array([[0.0, 0.0, 0.5]])
    near = detector.score(_probe(on, [[1.0, 0.0]]))
    far = detector.score(_probe(off, [[1.0, 0.0]]))
    assert far[0] > near[0] + 3  # 0.5 along a direction of spread 0.01 is very far
    # the nearest class mean's distance, as the (n, classes) distances give it
    queries = rng.normal(0, 1, (50, 3))
    np.testing.assert_allclose(
        detector.gaussians.nearest_squared_distance(queries),
        detector.gaussians.squared_distances(queries).min(axis=1), rtol=1e-12)
    difference = queries[:, None] - detector.gaussians.means[None]
    brute = np.einsum("nkd,de,nke->nk", difference, detector.gaussians.precision, difference)
    np.testing.assert_allclose(detector.gaussians.squared_distances(queries), brute,
                               rtol=1e-9)


def test_rarity_is_the_share_of_clean_scores_at_least_as_high():
    reference = CleanReference.of(np.arange(99.0))  # 0 .. 98
    # 10 of 99 clean scores are >= 89: p = (10 + 1) / 100
    assert reference.upper_rarity(np.array([89.0]))[0] == pytest.approx(-np.log10(0.11))
    beyond = reference.upper_rarity(np.array([98.0, 120.0, 200.0]))
    assert beyond[0] < beyond[1] < beyond[2]  # past the clean maximum, order is kept
    suite = DetectorSuite([MarginDetector(), SparsityDetector()], references={
        "margin": reference, "sparsity": reference})
    for detector in suite.detectors:  # a NaN score is suspect, in either tail
        assert suite.rarity(detector, np.array([np.nan, 50.0]))[0] == np.inf


def test_calibration_hits_its_false_positive_target_on_new_clean_data():
    rng = np.random.default_rng(1)

    def probe(n):
        return _probe(np.zeros((n, 1)), rng.dirichlet([1.0, 1.0, 1.0], n))

    suite = DetectorSuite([MarginDetector()])
    suite.fit(probe(2000), (0.0, 1.0))
    achieved = suite.set_threshold(probe(2000), fpr=0.05)
    measured = suite.score(probe(20000)).flags.mean()
    assert achieved <= 0.05
    assert abs(measured - 0.05) < 0.02  # within sampling error of a 2,000-sample threshold


def test_cross_fitted_threshold_hits_its_target_on_new_clean_data():
    """Every calibration sample sets the threshold, scored by what the other folds taught
    (a learning detector included); new clean data then sees the target rate."""
    rng = np.random.default_rng(3)

    def probe(n):
        x = rng.normal(0, 1, (n, 4))
        return _probe(x, rng.dirichlet([1.0, 1.0, 1.0], n))

    suite = DetectorSuite([MarginDetector(), DensityDetector()])
    clean = suite.fit(probe(2000), (-5.0, 5.0))
    assert set(clean) == {"margin", "density"} and len(clean["density"]) == 2000
    achieved = suite.set_threshold_cross_fitted(clean, fpr=0.05)
    measured = suite.score(probe(20000)).flags.mean()
    assert achieved <= 0.05
    assert abs(measured - 0.05) < 0.015  # within sampling error of 2,000 samples


def test_select_detectors_refuses_gradients_without_autograd():
    with pytest.raises(ConfigurationError, match="needs input gradients"):
        select_detectors(["gradient"], Capabilities())
    names = [d.name for d in select_detectors(None, Capabilities())]
    assert not {"gradient", "boundary"} & set(names) and "margin" in names
    with pytest.raises(ConfigurationError, match="needs input gradients"):
        select_detectors(["boundary"], Capabilities())
    with pytest.raises(ConfigurationError, match="unknown detector"):
        select_detectors(["nonsense"], Capabilities())


@pytest.fixture(scope="module")
def digits_model():
    from sklearn.linear_model import LogisticRegression

    from tests.cases import digits

    x, y = digits()
    return LogisticRegression(max_iter=1000).fit(x[:900], y[:900]), x, y


def test_calibration_file_round_trip_gives_the_same_scores(digits_model, tmp_path, sink):
    model, x, _ = digits_model
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor",
                                constraints={"min_value": 0.0, "max_value": 1.0})
    calibration = guarded.calibrate(x[900:1400], fpr=0.05, image_shape=(8, 8))
    path = guarded.save_calibration(tmp_path / "calibration")
    assert path.suffix == ".npz"
    loaded = Calibration.load(path)
    assert loaded.data_hash == calibration.data_hash and loaded.samples == 500
    assert loaded.summary()["detectors"].keys() == calibration.summary()["detectors"].keys()
    again = aimsec_core.guard(model, sinks=[sink], mode="monitor", calibration=path)
    guarded.predict(x[1400:1450])
    again.predict(x[1400:1450])
    assert guarded.last_verdict.scores == again.last_verdict.scores
    assert set(guarded.last_verdict.scores) >= {"suspicion", "margin", "density"}


def test_calibration_refuses_bad_data(digits_model, sink):
    model, x, _ = digits_model
    guarded = aimsec_core.guard(model, sinks=[sink], constraints={"max_value": 1.0})
    with pytest.raises(CalibrationError, match="clean and valid"):
        guarded.calibrate(x[:100] * 2)
    with pytest.raises(CalibrationError, match="at least 40"):
        guarded.calibrate(x[:10])
    with pytest.raises(CalibrationError, match="nothing to save"):
        guarded.save_calibration("never.npz")


def test_calibration_data_with_nan_is_refused_by_name(sink):
    # a model that allows NaN passes it through validation; the detectors cannot learn
    # from it (shift's eigendecomposition failed as "too uniform", before it a raw
    # ValueError from the calibration metadata)
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    x[::4, 2] = np.nan
    model = HistGradientBoostingClassifier(max_iter=3).fit(x, (x[:, 0] > 0).astype(int))
    guarded = aimsec_core.guard(model, sinks=[sink], policy=False)
    with pytest.raises(CalibrationError, match="x_clean holds NaN"):
        guarded.calibrate(x)
    complete = x[1::4].repeat(2, 0) + rng.normal(0, 0.1, (60, 6))
    with pytest.raises(CalibrationError, match="reference holds NaN"):
        guarded.calibrate(complete, reference=x)
    guarded.calibrate(complete)


def test_a_corrupt_calibration_file_is_a_calibration_error(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match="cannot read"):
        Calibration.load(bad)


def test_enforce_mode_refuses_inputs_the_detectors_flag(digits_model, sink):
    model, x, _ = digits_model
    guarded = aimsec_core.guard(model, sinks=[sink],
                                constraints={"min_value": 0.0, "max_value": 1.0})
    guarded.calibrate(x[900:1400], fpr=0.05)
    noisy = np.clip(x[1400:1410] + np.random.default_rng(0).choice([-0.3, 0.3], (10, 64)),
                    0, 1)  # an FGSM-like perturbation of every pixel
    with pytest.raises(aimsec_core.AdversarialInputError) as caught:
        guarded.predict(noisy)
    verdict = caught.value.verdict
    assert "adversarial" in verdict.checks and sum(verdict.flags) >= 8
    assert sink.outcomes[-1] == "rejected"


def test_neighbours_score_is_positive_when_the_label_disagrees_with_the_neighbourhood():
    from aimsec_core.detection import NeighbourDetector

    clean = np.array([[0.0], [0.5], [1.0], [10.0], [10.5], [11.0]])
    labels = np.repeat([[1.0, 0.0], [0.0, 1.0]], 3, axis=0)
    detector = NeighbourDetector(k=2)
    detector.fit(_probe(clean, labels), (0.0, 11.0))
    near_zero = np.array([[0.75], [0.75]])
    scores = detector.score(_probe(near_zero, [[1.0, 0.0], [0.0, 1.0]]))
    # labelled 0: nearest same-label points at 0.25 and 0.25 vs other-label 9.25, 9.75
    assert scores[0] == pytest.approx(np.log(0.25) - np.log(9.5), abs=1e-6)
    assert scores[1] == pytest.approx(-scores[0], abs=1e-6)  # labelled 1: the reverse


def test_wide_inputs_are_projected_and_the_projection_is_kept():
    from aimsec_core.detection import NeighbourDetector

    rng = np.random.default_rng(0)
    clean = rng.random((60, 3, 32, 32))  # 3,072 values a sample: past MAX_DIM
    probe = _probe(clean, np.eye(2)[np.arange(60) % 2])
    for detector in (DensityDetector(), NeighbourDetector()):
        detector.fit(probe, (0.0, 1.0))
        assert detector.projection.shape == (3072, detector.PROJECTED_DIM)
        restored = type(detector)()
        restored.load_state(detector.state())
        np.testing.assert_allclose(restored.score(probe), detector.score(probe))


def test_review_regressions(digits_model, tmp_path, sink):
    """Inputs the calibration never saw, damaged files, non-finite scores, masked arrays."""
    import json
    import zipfile

    model, x, _ = digits_model
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor",
                                constraints={"min_value": 0.0, "max_value": 1.0})
    calibration = guarded.calibrate(x[900:1400])
    assert calibration.sample_shape == (64,)
    # a damaged file, and one missing a detector's arrays, are calibration errors
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CalibrationError):
        Calibration.load(bad)
    path = guarded.save_calibration(tmp_path / "whole.npz")
    with zipfile.ZipFile(path) as whole, zipfile.ZipFile(tmp_path / "part.npz", "w") as part:
        for item in whole.namelist():
            if not item.startswith("density."):
                part.writestr(item, whole.read(item))
    with pytest.raises(CalibrationError, match="changed after it was written"):
        Calibration.load(tmp_path / "part.npz")
    # NaN input in monitor mode: the finite finding stands and the model's own error is typed
    nan = x[:2].copy()
    nan[0, 1] = np.nan
    with pytest.raises(aimsec_core.NonFiniteInputError):
        guarded.predict(nan)
    # a masked array is checked on the values the model reads, not the unmasked ones
    masked = np.ma.masked_array(x[:1] * 0 + 7.0, mask=np.ones((1, 64)))
    guarded.predict(masked)
    assert "range" in guarded.last_verdict.checks
    # the two-sided sparsity detector reports a low and a high threshold
    summary = calibration.summary()["detectors"]["sparsity"]["raw_threshold"]
    assert isinstance(summary, list) and len(summary) == 2
    json.dumps(calibration.summary(), allow_nan=False)


def test_single_threaded_blas_restores_the_application_setting_across_threads():
    import threading

    from threadpoolctl import threadpool_info

    from aimsec_core.detection.suite import single_threaded_blas

    np.ones((4, 4)) @ np.ones((4, 4))
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with single_threaded_blas():
            a_in.set()
            b_in.wait()
        a_out.set()

    def second():
        a_in.wait()
        with single_threaded_blas():
            b_in.set()
            a_out.wait()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before
    with single_threaded_blas():
        inside = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert inside and set(inside) == {1}


def test_single_threaded_blas_finds_libraries_loaded_after_its_first_use(monkeypatch):
    """A BLAS loaded by an import after the first detection call (scipy's, torch's) was
    never limited: the libraries were found once. Any import since makes it look again."""
    import sys

    from threadpoolctl import threadpool_info

    from aimsec_core.detection import suite

    np.ones((4, 4)) @ np.ones((4, 4))
    # as if found before any BLAS was loaded, with an import since
    monkeypatch.setattr(suite, "_blas_libraries", [])
    monkeypatch.setattr(suite, "_blas_modules_seen", len(sys.modules) - 1)
    with suite.single_threaded_blas():
        inside = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert inside and set(inside) == {1}


@pytest.mark.parametrize("internal_api, threading_layer", [("mkl", "intel"),
                                                             ("openblas", "openmp")])
def test_single_threaded_blas_sets_other_libraries_through_their_controller(
        internal_api, threading_layer):
    """OpenBLAS with its own threads is set through its C functions; any other library
    (and OpenBLAS threaded by OpenMP, whose limit is per thread) through threadpoolctl's
    controller."""
    from aimsec_core.detection import suite

    class Controller:
        threads = 4

        def _get_symbol(self, name):
            raise AssertionError("only OpenBLAS's own threads are set directly")

        def get_num_threads(self):
            return self.threads

        def set_num_threads(self, threads):
            self.threads = threads

    controller = Controller()
    controller.internal_api, controller.threading_layer = internal_api, threading_layer
    get, set_threads = suite._thread_functions(controller)
    set_threads(1)
    assert controller.threads == 1 and get() == 1


class _Fixed(MarginDetector):
    """A detector whose scores are given up front."""

    def __init__(self, name, scores):
        self.name, self.scores = name, np.asarray(scores)

    def score(self, probe):
        return self.scores


def test_the_suspicion_is_the_sum_of_the_two_largest_rarities():
    rarities = [[3.0, 0.5, 0.1], [0.2, 2.0, 1.0], [0.0, 0.0, 4.0]]  # 3 detectors x 3 samples
    suite = DetectorSuite([_Fixed(f"d{i}", row) for i, row in enumerate(rarities)])
    suite.rarity = lambda detector, scores: scores  # rarity = raw score, to check the sum
    np.testing.assert_allclose(suite.score(_probe(np.zeros((3, 1)))).combined,
                               [3.0 + 0.2, 2.0 + 0.5, 4.0 + 1.0])
    suite.top = None  # files written before the top-2 rule summed every detector
    np.testing.assert_allclose(suite.score(_probe(np.zeros((3, 1)))).combined,
                               [3.2, 2.5, 5.1])


def test_default_detectors_measure_confidence_once():
    with_gradients = [d.name for d in select_detectors(None, Capabilities(gradients=True))]
    without = [d.name for d in select_detectors(None, Capabilities())]
    assert with_gradients == ["boundary", "density", "sparsity", "neighbours", "shift",
                              "robust"]
    assert without == ["margin", "density", "sparsity", "neighbours", "shift", "robust"]


def test_neighbours_keep_a_bounded_sorted_reference_and_old_files_still_score_alike():
    from aimsec_core.detection import NeighbourDetector

    rng = np.random.default_rng(1)
    clean = rng.random((300, 4))
    probabilities = np.eye(3)[rng.integers(0, 3, 300)]
    detector = NeighbourDetector(k=3, max_points=100)
    detector.fit(_probe(clean, probabilities), (0.0, 1.0))
    assert len(detector.points) == 100 and np.all(np.diff(detector.labels) >= 0)
    queries = _probe(rng.random((20, 4)), np.eye(3)[rng.integers(0, 3, 20)])
    points = detector.points.astype(np.float64) + detector.centre
    shuffled = rng.permutation(100)  # older files: uncentred points, in any order
    restored = NeighbourDetector(k=3, max_points=100)
    restored.load_state({"points": points[shuffled], "labels": detector.labels[shuffled]})
    np.testing.assert_allclose(restored.score(queries), detector.score(queries), rtol=1e-5)
    # brute force: mean distance to the 3 nearest points of the same / of other labels
    d = np.linalg.norm(queries.x[:, None] - points[None], axis=2)
    same = detector.labels[None] == queries.predicted[:, None]
    expected = [np.log(np.sort(row[m])[:3].mean()) - np.log(np.sort(row[~m])[:3].mean())
                for row, m in zip(d, same)]
    np.testing.assert_allclose(detector.score(queries), expected, rtol=1e-4, atol=1e-4)


# rows sorted in chunks, labels' columns searched; rows sorted whole, labels' in a table
@pytest.mark.parametrize("chunk, label_table", [(8, 0), (10_000, 1 << 16)])
def test_neighbours_match_brute_force_whatever_the_label_sizes(monkeypatch, chunk,
                                                               label_table):
    """Labels of very different sizes, one with fewer points than k, a prediction no clean
    point has, a NaN input."""
    from aimsec_core.detection import NeighbourDetector, neighbours

    monkeypatch.setattr(neighbours, "CHUNK", chunk)
    monkeypatch.setattr(neighbours, "LABEL_TABLE", label_table)

    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2, 3], [400, 2, 60, 25])
    clean = rng.random((len(labels), 6))
    detector = NeighbourDetector(k=4)
    detector.fit(_probe(clean, np.eye(5)[labels]), (0.0, 1.0))
    predicted = np.r_[np.arange(5), rng.integers(0, 4, 35)]  # label 4: no clean points
    queries = rng.random((40, 6))
    scores = detector.score(_probe(queries, np.eye(5)[predicted]))
    d = np.linalg.norm(queries[:, None] - clean[None], axis=2)
    for row, label, score in zip(d, predicted, scores):
        same, other = np.sort(row[labels == label])[:4], np.sort(row[labels != label])[:4]
        expected = np.log(same.mean() if len(same) else row.max()) - np.log(other.mean())
        assert score == pytest.approx(expected, rel=1e-4, abs=1e-4)
    full = np.isin(predicted, [0, 2, 3])  # a batch whose groups all hold k points
    np.testing.assert_allclose(
        detector.score(_probe(queries[full], np.eye(5)[predicted[full]])), scores[full],
        rtol=1e-5, atol=1e-5)
    nan = queries[:2].copy()
    nan[0, 3] = np.nan
    assert np.isnan(detector.score(_probe(nan, np.eye(5)[[0, 1]]))[0])


def test_a_label_without_clean_neighbours_scores_finitely():
    from aimsec_core.detection import NeighbourDetector

    detector = NeighbourDetector(k=2)
    detector.fit(_probe(np.array([[0.0], [1.0], [2.0]]), np.tile([1.0, 0.0, 0.0], (3, 1))),
                 (0.0, 2.0))
    scores = detector.score(_probe(np.array([[0.5]]), [[0.0, 0.0, 1.0]]))  # a label never seen
    assert np.all(np.isfinite(scores))


def test_reference_data_teaches_the_learning_detectors_but_never_sets_the_threshold(
        digits_model, tmp_path, sink):
    model, x, _ = digits_model
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor",
                                constraints={"min_value": 0.0, "max_value": 1.0})
    calibration = guarded.calibrate(x[900:1400], reference=x[:900])
    assert calibration.reference_samples == 900 and calibration.samples == 500
    neighbours = next(d for d in calibration.suite.detectors if d.name == "neighbours")
    assert len(neighbours.points) == 1000  # 500 clean + 900 reference, capped at max_points
    assert len(calibration.suite.references["neighbours"].scores) == 500  # scored: x_clean
    loaded = Calibration.load(guarded.save_calibration(tmp_path / "with_reference"))
    assert loaded.reference_samples == 900 and loaded.summary()["top"] == 2
    with pytest.raises(CalibrationError, match="reference data must be clean"):
        guarded.calibrate(x[900:1400], reference=x[:100] * 2)


def test_neighbours_keep_their_precision_when_inputs_share_a_large_offset():
    from aimsec_core.detection import NeighbourDetector

    rng = np.random.default_rng(2)
    clean, queries = rng.random((300, 16)), rng.random((40, 16))
    labels, predicted = np.eye(5)[rng.integers(0, 5, 300)], np.eye(5)[rng.integers(0, 5, 40)]
    scores = []
    for offset in (0.0, 1000.0):  # raw sensor readings, say: the same data shifted
        detector = NeighbourDetector()
        detector.fit(_probe(clean + offset, labels), (0.0, 1001.0))
        restored = NeighbourDetector()
        restored.load_state(detector.state())
        scores.append(restored.score(_probe(queries + offset, predicted)))
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-3)


def test_reference_data_is_checked_and_only_used_where_a_detector_learns(digits_model, sink):
    import torch

    model, x, _ = digits_model
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor")
    calibration = guarded.calibrate(x[900:1400], detectors=["margin"], reference=x[:900])
    assert calibration.reference_samples == 0  # the margin learns nothing from data
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    images = torch.from_numpy(x[900:1400].astype(np.float32)).reshape(-1, 1, 8, 8)
    with pytest.raises(CalibrationError, match="shaped like the calibration data"):
        aimsec_core.guard(flat, sinks=[sink]).calibrate(
            images, reference=torch.from_numpy(x[:900].astype(np.float32)))


def test_suite_and_rarity_edge_cases():
    reference = CleanReference.of(np.arange(99.0))
    assert reference.upper_rarity(200.0).shape == ()  # scalars in, scalars out
    assert softmax_if_needed(np.empty((0, 10))).shape == (0, 10)
    with pytest.raises(CalibrationError, match="top must be"):
        DetectorSuite([MarginDetector()], top=0)


def test_sparsity_abstains_where_zeros_are_rare_and_counts_them_where_common():
    """Min-max scaled features hold a zero only at a feature's minimum: one clean input
    with a zero, where calibration held none, was flagged by a rarity of millions; the
    detector now abstains there. On digits-like data (half the values zero) it counts."""
    from aimsec_core.detection import SparsityDetector

    rng = np.random.default_rng(0)
    tabular = rng.uniform(0.01, 1.0, (200, 13))
    suite = DetectorSuite([SparsityDetector(), MarginDetector()])
    clean = suite.fit(_probe(tabular, rng.dirichlet([1, 1], 200)), (0.0, 1.0))
    suite.set_threshold_cross_fitted(clean, fpr=0.05)
    assert not suite.detectors[0].active
    at_minimum = tabular[:20].copy()
    at_minimum[:, 3] = 0.0
    scores = suite.score(_probe(at_minimum, np.tile([0.9, 0.1], (20, 1))))
    assert (scores.raw["sparsity"] == 0).all() and not scores.flags.any()
    images = np.where(rng.random((200, 64)) < 0.5, 0.0, rng.uniform(0.1, 1.0, (200, 64)))
    detector = SparsityDetector()
    detector.fit(_probe(images), (0.0, 1.0))
    assert detector.active
    np.testing.assert_allclose(detector.score(_probe(images[:3])),
                               (images[:3] == 0).mean(axis=1))
    restored = SparsityDetector()
    restored.load_state(SparsityDetector().state() | {"active": np.array([0.0])})
    assert not restored.active
    with pytest.raises(ValueError, match="active"):
        SparsityDetector().load_state({"active": np.array([0.5])})


class _SeesOnlyInLargeSamples(DensityDetector):
    """A learning detector that abstains when fitted on fewer than ``needs`` samples."""

    name = "picky"

    def __init__(self, needs):
        super().__init__()
        self.needs, self.off = needs, False

    def fit(self, probe, value_range):
        super().fit(probe, value_range)
        self.off = len(probe.x) < self.needs

    @property
    def abstains(self):
        return self.off

    def abstain(self):
        self.off = True

    def score(self, probe):
        return np.zeros(len(probe.x)) if self.off else super().score(probe)


def test_a_detector_that_abstains_on_some_folds_abstains_for_good():
    """Fold copies fitted on 4/5 of the data abstained (clean scores all 0) while the fit
    on all of it did not: new clean inputs were then rarer than every clean score by
    millions of decades, and nearly all flagged. Where the data does not say clearly, the
    detector abstains, and its clean scores are those of the detector that scores."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (100, 3))
    probe = _probe(x, rng.dirichlet([1.0, 1.0], 100))
    suite = DetectorSuite([MarginDetector(), _SeesOnlyInLargeSamples(needs=100)])
    clean = suite.fit(probe, (-5.0, 5.0))
    picky = suite.detectors[1]
    assert picky.abstains and not clean["picky"].any()
    suite.set_threshold_cross_fitted(clean, fpr=0.05)
    new = _probe(rng.normal(0, 1, (2000, 3)), rng.dirichlet([1.0, 1.0], 2000))
    assert suite.score(new).flags.mean() < 0.1
    both = DetectorSuite([_SeesOnlyInLargeSamples(needs=10)])  # never abstains
    assert both.fit(probe, (-5.0, 5.0))["picky"].any() and not both.detectors[0].abstains


def test_shift_found_in_all_the_calibration_data_but_not_its_folds_abstains(digits_model,
                                                                            sink):
    """Digits, 300 calibration samples, no reference: the shift detector's noise floor
    showed in all 300 but in none of the 240-sample folds, and 45% of new clean inputs
    were flagged at a 5% target."""
    model, x, _ = digits_model
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor",
                                constraints={"min_value": 0.0, "max_value": 1.0})
    calibration = guarded.calibrate(x[1000:1300], fpr=0.05, detectors=["margin", "shift"])
    assert calibration.suite.detectors[1].abstains
    guarded.predict(x[1500:])
    assert np.mean(guarded.last_verdict.flags) < 0.2  # 0.46 before; margin alone: 0.11
