"""Hostile calibration arguments, calibration files, concurrent recalibration and
``aimsec evaluate`` arguments: typed errors saying what was wrong, never a raw one."""

from __future__ import annotations

import copy
import io
import json
import warnings
import zipfile

import numpy as np
import pytest

import aimsec_core
from aimsec_core import CalibrationError
from tests.conftest import run_cli
from aimsec_core.detection.calibration_integrity import seal
from aimsec_core.errors import AimsecError
from tests.cases import digits

pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402


@pytest.fixture(scope="module")
def data():
    x, y = digits()
    return x.astype(np.float64), y


@pytest.fixture(scope="module")
def model(data):
    x, y = data
    return LogisticRegression(max_iter=200).fit(x[:600], y[:600])


def _guard(model):
    return aimsec_core.guard(model, sinks=[])


# -- calibration arguments ---------------------------------------------------------------

@pytest.mark.parametrize("fpr, batch_size", [
    (5e-324, None),  # 1 / fpr is infinite: the sample count it needs is no integer
    (1e-17, 2),      # the per-sample target rounds to 0 in float64
    (1e-10, 10**9),
])
def test_a_rate_too_small_to_measure_is_a_typed_error(model, data, fpr, batch_size):
    x, _ = data
    with pytest.raises(AimsecError, match="fpr"):
        _guard(model).calibrate(x[600:700], fpr=fpr, batch_size=batch_size)


def test_a_numpy_integer_seed_is_a_seed(model, data):
    x, _ = data
    chosen = _guard(model).calibrate(x[600:900], seed=np.int64(3), detectors=["margin"])
    plain = _guard(model).calibrate(x[600:900], seed=3, detectors=["margin"])
    assert chosen.suite.threshold == plain.suite.threshold


@pytest.mark.parametrize("scale, detectors, match", [
    (1e200, ["margin", "density", "sparsity"], "'density' gives 300 of the 300"),
    (1e25, ["neighbours"], "'neighbours' gives"),
    (1e152, ["margin", "jump"], "could not be saved and loaded again"),
    (1e151, ["density"], "could not be saved and loaded again"),
])
def test_clean_data_too_large_for_a_detector_is_refused_at_calibration(
        tmp_path, model, data, scale, detectors, match):
    """Finite values past a detector's arithmetic gave infinite clean scores and NaN
    tails (saving then raised a raw ValueError), or stored arrays a file may not hold
    (the saved file then refused to load): calibrate refuses, naming the detector and the
    data's magnitude, and the calibration in use stays."""
    x, _ = data
    guarded = _guard(model)
    kept = guarded.calibrate(x[600:900], detectors=["margin"])
    with pytest.raises(CalibrationError, match=match) as raised:
        guarded.calibrate(x[600:900] * scale, detectors=detectors)
    assert f"magnitude up to {scale:.3g}" in str(raised.value)
    assert guarded.__aimsec_guard__.calibration is kept


def test_a_calibration_with_a_non_finite_tail_is_not_saved_raw(tmp_path, model, data):
    x, _ = data
    calibration = _guard(model).calibrate(x[600:900], detectors=["margin"])
    calibration.suite.references["margin"].tail = float("nan")
    with pytest.raises(CalibrationError, match="NaN or infinite"):
        calibration.save(tmp_path / "c.npz")
    assert not list(tmp_path.iterdir())


# -- calibration files -------------------------------------------------------------------

@pytest.fixture(scope="module")
def members(tmp_path_factory, model, data):
    """The saved file's metadata (without digests) and arrays."""
    x, _ = data
    guarded = _guard(model)
    guarded.calibrate(x[600:900], detectors=["margin", "density", "noise"])
    path = guarded.save_calibration(tmp_path_factory.mktemp("cal") / "c.npz")
    with zipfile.ZipFile(path) as archive:
        raw = {i.filename: archive.read(i) for i in archive.infolist()}
    meta = json.loads(np.load(io.BytesIO(raw.pop("__meta__.npy"))).tobytes())
    meta.pop("integrity")
    arrays = {k[:-len(".npy")]: np.load(io.BytesIO(v)) for k, v in raw.items()}
    return meta, arrays


def _sealed(path, meta, arrays):
    """A file as an attacker who rewrites the (unkeyed) digest writes it."""
    meta = seal(meta, arrays)
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in {"__meta__": np.frombuffer(json.dumps(meta).encode(), np.uint8),
                            **arrays}.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


HUGE = 10**400  # valid JSON; too large for a float


@pytest.mark.parametrize("edit", [
    lambda m: m.update(threshold=HUGE),
    lambda m: m.update(fpr_target=-HUGE),
    lambda m: m.update(achieved_fpr=HUGE),
    lambda m: m.update(value_range=[0, HUGE]),
    lambda m: m["detectors"]["margin"].update(tail=HUGE),
    lambda m: m["detectors"]["density"]["config"].update(shrinkage=HUGE),
    lambda m: m["detectors"]["noise"]["config"].update(sigma=-HUGE),
], ids=["threshold", "fpr_target", "achieved_fpr", "value_range", "tail",
        "density-shrinkage", "noise-sigma"])
def test_integers_too_large_for_a_float_in_a_calibration_file_are_refused(
        tmp_path, model, members, edit):
    meta, arrays = members
    meta = copy.deepcopy(meta)
    edit(meta)
    path = _sealed(tmp_path / "huge.npz", meta, arrays)
    with pytest.raises(CalibrationError):
        _guard(model).load_calibration(path)


# -- concurrent recalibration ------------------------------------------------------------

def test_a_call_is_scored_with_the_output_reading_of_its_own_calibration(data):
    torch = pytest.importorskip("torch")
    x, y = data
    x = x.astype(np.float32)

    class HiddenSigmoid(torch.nn.Module):  # a sigmoid the adapter cannot see
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                              torch.nn.Linear(16, 1))

        def forward(self, v):
            return torch.sigmoid(self.layers(v))

    torch.manual_seed(0)
    net = HiddenSigmoid()
    optimiser = torch.optim.Adam(net.parameters(), 1e-2)
    inputs = torch.tensor(x[:600])
    labels = torch.tensor((y[:600] >= 5).astype(np.float32))[:, None]
    for _ in range(150):
        optimiser.zero_grad()
        torch.nn.functional.binary_cross_entropy(net(inputs), labels).backward()
        optimiser.step()
    guarded = aimsec_core.guard(net, sinks=[], mode="monitor")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        calibration = guarded.calibrate(x[600:900], detectors=["margin", "density"])
    assert calibration.sigmoid_output
    probe = torch.tensor(x[900:904])
    guarded(probe)
    alone = guarded.last_verdict.scores["suspicion"]

    guard = aimsec_core.guard_of(guarded)
    screen = guard.screen

    def screen_then_drop(*args, **kwargs):  # another thread drops the calibration here
        result = screen(*args, **kwargs)
        guard.calibration = None
        return result

    guard.screen = screen_then_drop
    guarded(probe)
    verdict = guarded.last_verdict
    assert verdict.threshold == calibration.suite.threshold
    np.testing.assert_allclose(verdict.scores["suspicion"], alone)


# -- aimsec evaluate ---------------------------------------------------------------------

@pytest.fixture
def never_evaluated(monkeypatch):
    """``aimsec evaluate`` whose evaluation fails the test if it starts: a bad argument
    must be refused before minutes of training."""
    from aimsec_core import evaluation

    def evaluate(*args, **kwargs):
        raise AssertionError("the evaluation ran despite a bad argument")

    monkeypatch.setattr(evaluation, "evaluate", evaluate)


@pytest.mark.parametrize("argv, says", [
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
    (["--out", "{tmp}"], "{tmp}"),
    (["--out", "{tmp}/no/such/folder/out.json"], "out.json"),
    (["--attack", "Boundary"], "Boundary"),
    (["--quick", "--attack", "CW"], "CW"),
    (["--detector", "nope"], "nope"),
    (["--detector", "density", "--detector", "density"], "density"),
])
def test_evaluate_refuses_bad_arguments_before_it_trains(tmp_path, capsys, never_evaluated,
                                                          argv, says):
    pytest.importorskip("art")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    status, err = run_cli(["evaluate", *argv], capsys)
    assert status == 2
    last = err.strip().splitlines()[-1]  # argparse prints its usage lines above
    assert last.startswith("aimsec evaluate") and says.replace("{tmp}", str(tmp_path)) in last
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_detector_object_given_to_two_calibrations_serves_each_unchanged(model, data):
    """The object was fitted in place: calibrating a second guard with it refitted the
    first guard's detector under that guard's clean scores, whose clean calls then
    scored differently (and were refused)."""
    from aimsec_core.detection import DensityDetector

    x, _ = data
    shared = DensityDetector()
    first, second = _guard(model), _guard(model)
    first.calibrate(x[600:1000], detectors=[shared, "margin"])
    guard = first.__aimsec_guard__
    before = guard.calibration.suite.detectors[0].score(_probe(x[1000:1010]))
    second.calibrate(x[1000:1100] * 0.5, detectors=[shared, "margin"])
    after = guard.calibration.suite.detectors[0].score(_probe(x[1000:1010]))
    np.testing.assert_array_equal(before, after)
    assert guard.calibration.suite.detectors[0] is not shared


def _probe(x):
    from aimsec_core.detection import Probe

    return Probe(x, None, lambda batch: np.full((len(batch), 10), 0.1))


@pytest.mark.filterwarnings("ignore:the calibration was made for another model")
def test_a_calibration_whose_detectors_this_adapter_cannot_feed_is_refused(model, data):
    """A calibration with the ``features`` detector (made on a torch model) forced onto a
    scikit-learn model loaded, and then every call raised the adapter's raw
    NotImplementedError."""
    torch = pytest.importorskip("torch")
    x, _ = data
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 10)).eval()
    made = aimsec_core.guard(net, sinks=[]).calibrate(
        torch.tensor(x[600:900], dtype=torch.float32), detectors=["features", "margin"])
    guarded = _guard(model)
    with pytest.raises(CalibrationError, match="'features', which needs internal features"):
        guarded.__aimsec_guard__.use_calibration(made, force=True)
    assert guarded.__aimsec_guard__.calibration is None
    guarded.predict(x[:3])


def test_clean_data_the_model_cannot_take_is_a_calibration_error(data):
    """A torch module declares no input shape, so flat rows given to a convolutional one
    passed validation and calibrate() raised torch's own RuntimeError (conv2d expects 4-d
    input); the calibration in use stayed, as it does now."""
    torch = pytest.importorskip("torch")
    x, _ = data
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(),
                              torch.nn.Linear(144, 10)).eval()
    guarded = aimsec_core.guard(net, sinks=[])
    images = torch.tensor(x[:300], dtype=torch.float32).reshape(-1, 1, 8, 8)
    before = guarded.calibrate(images, detectors=["margin", "density"])
    flat = torch.tensor(x[300:600], dtype=torch.float32)
    with pytest.raises(CalibrationError,
                       match=r"RuntimeError on x_clean, samples of shape \(64,\)") as raised:
        guarded.calibrate(flat, detectors=["margin", "density"])
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert guarded.__aimsec_guard__.calibration is before


def test_a_detector_object_a_file_cannot_restore_is_refused(tmp_path, model, data):
    """A subclass of a known detector calibrated, was saved under its kind's name and
    loaded as that kind: the guard loading the file scored every call otherwise than the
    guard that wrote it (here flagging what it passed). A detector of a kind of its own
    was refused only after fitting, blamed on the data's magnitude."""
    from aimsec_core.detection import Detector, MarginDetector

    class Inverted(MarginDetector):
        def score(self, probe):
            return -super().score(probe)

    class Own(Detector):
        name = "own"

        def fit(self, probe, value_range):
            pass

        def score(self, probe):
            return np.zeros(len(probe.x))

    x, _ = data
    for detector, named in ((Inverted(), "Inverted named 'margin'"),
                            (Own(), "Own named 'own'")):
        guarded = _guard(model)
        with pytest.raises(aimsec_core.ConfigurationError,
                           match=f"detector objects must be of aimsec's own kinds.*{named}"):
            guarded.calibrate(x[600:1000], detectors=[detector, "density"])
        assert guarded.__aimsec_guard__.calibration is None
    # an object of aimsec's own kind still calibrates and loads
    own_kind = aimsec_core.guard(model, sinks=[], mode="monitor")
    own_kind.calibrate(x[600:1000], detectors=[MarginDetector(), "density"])
    path = own_kind.save_calibration(tmp_path / "margin.npz")
    again = aimsec_core.guard(model, sinks=[], mode="monitor", calibration=path)
    own_kind.predict(x[1000:1100])
    again.predict(x[1000:1100])
    assert again.last_verdict.scores == own_kind.last_verdict.scores


def test_an_estimator_without_class_scores_cannot_be_calibrated_and_says_why(data):
    """A regressor has neither predict_proba nor decision_function: calibrate() let
    scikit-learn's AttributeError ('LinearRegression' object has no attribute
    'decision_function') out."""
    from sklearn.linear_model import LinearRegression

    x, y = data
    guarded = _guard(LinearRegression().fit(x[:600], y[:600]))
    with pytest.raises(CalibrationError, match="LinearRegression gives no class scores "
                       r"\(it has neither predict_proba nor decision_function\)"):
        guarded.calibrate(x[600:900], detectors=["sparsity", "density"])
    assert guarded.__aimsec_guard__.calibration is None
    guarded.predict(x[:3])  # still served, uncalibrated
