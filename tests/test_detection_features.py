"""The ``features`` detector (class-conditional Gaussians on the model's internal features)
and the adapters' ``features`` contract."""

from __future__ import annotations

import numpy as np
import pytest

import aimsec_core
from aimsec_core import ConfigurationError, digits
from aimsec_core.adapter import Capabilities
from aimsec_core.detection import FeatureDensityDetector, Probe, select_detectors
from aimsec_core.detection.calibration import Calibration


def _probe(features, labels, classes=2):
    probabilities = np.eye(classes)[labels]
    return Probe(np.zeros((len(labels), 1)), probabilities, ask=None,
                 given_features=[np.asarray(f, dtype=np.float64) for f in features])


def test_the_score_is_the_distance_to_the_predicted_class_not_the_nearest():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    early = rng.normal(0, 1, (400, 2)) + np.where(labels[:, None] == 0, -4.0, 4.0)
    late = rng.normal(0, 1, (400, 2)) + np.where(labels[:, None] == 0, -4.0, 4.0)
    detector = FeatureDensityDetector()
    detector.fit(_probe([early, late], labels), (0, 1))
    # early features of class 0, late ones of class 1, predicted 1: an adversarial pattern
    mixed = _probe([[[-4.0, -4.0]], [[4.0, 4.0]]], np.array([1]))
    agreeing = _probe([[[4.0, 4.0]], [[4.0, 4.0]]], np.array([1]))
    assert detector.score(mixed)[0] > detector.score(agreeing)[0] + 1.0


def test_features_need_an_adapter_that_gives_them():
    with pytest.raises(ConfigurationError, match="internal features"):
        select_detectors(["features"], Capabilities(probabilities=True))


def test_torch_features_come_from_the_real_call_and_survive_a_calibration_file(tmp_path):
    torch = pytest.importorskip("torch")
    data = digits.load()
    model = digits.torch_cnn(data, epochs=2)
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor",
                                constraints=digits.constraints("torch"))
    adapter = aimsec_core.guard_of(guarded).adapter
    assert adapter.capabilities.features
    x = digits.as_model_input("torch", data.x_test[:8])
    layers = adapter.features(x)
    assert [f.shape for f in layers] == [(8, 16), (8, 32), (8, 64), (8, 10)]
    with torch.no_grad():
        np.testing.assert_allclose(layers[-1], model(x).numpy(), rtol=1e-5, atol=1e-5)
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed

    guarded.calibrate(digits.as_model_input("torch", data.x_calibration), fpr=0.05,
                      detectors=["features", "margin"])
    asked = []
    original = adapter.features
    adapter.features = lambda batch: (asked.append(1), original(batch))[1]
    try:
        with torch.no_grad():
            out = guarded(x)
    finally:
        del adapter.features
    assert asked == []  # the features came with the prediction: no second forward pass
    with torch.no_grad():
        assert torch.equal(out, model(x))
    scores = guarded.last_verdict.scores["features"]

    path = aimsec_core.guard_of(guarded).calibration.save(tmp_path / "features.npz")
    restored = aimsec_core.guard(model, sinks=[], mode="monitor", calibration=path,
                                 constraints=digits.constraints("torch"))
    with torch.no_grad():
        restored(x)
    np.testing.assert_allclose(restored.last_verdict.scores["features"], scores)
    loaded = Calibration.load(path)
    assert loaded.suite.detectors[0].name == "features"


def test_keras_features_come_from_an_intermediate_output_model():
    pytest.importorskip("keras")
    data = digits.load()
    model = digits.keras_cnn(data, epochs=1)
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor",
                                constraints=digits.constraints("keras"))
    adapter = aimsec_core.guard_of(guarded).adapter
    assert adapter.capabilities.features
    layers = adapter.features(data.x_test[:8])
    # conv blocks averaged per channel, the dense layer, the log-probabilities last
    assert [f.shape for f in layers] == [(8, 16), (8, 32), (8, 64), (8, 10)]
    np.testing.assert_allclose(np.exp(layers[-1]), model.predict(data.x_test[:8], verbose=0),
                               rtol=1e-4, atol=1e-6)
    guarded.calibrate(data.x_calibration, fpr=0.05, detectors=["features", "margin"])
    guarded.predict(data.x_test[:16], verbose=0)
    assert len(guarded.last_verdict.scores["features"]) == 16


def test_torch_concurrent_calls_each_capture_their_own_features():
    """Threads calling one guarded model at once: each call's features are its own. With
    hooks on the model's modules, a call captured the other threads' tensors too (a raw
    ``ValueError: cannot reshape array`` or another sample's score); the capture is now
    per call and the model carries no hook."""
    import threading

    torch = pytest.importorskip("torch")
    data = digits.load()
    model = digits.torch_cnn(data, epochs=1)
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor", policy=False,
                                constraints=digits.constraints("torch"))
    guarded.calibrate(digits.as_model_input("torch", data.x_calibration), fpr=0.05,
                      detectors=["features", "margin"])
    batches = [digits.as_model_input("torch", data.x_test[i:i + 1 + i % 3]) for i in range(8)]
    alone = []
    with torch.no_grad():
        for x in batches:
            guarded(x)
            alone.append(np.asarray(guarded.last_verdict.scores["features"]))
    problems: list[str] = []
    start = threading.Barrier(4)

    def caller(t: int) -> None:
        start.wait()
        for k in range(40):
            i = (t + k) % len(batches)
            try:
                with torch.no_grad():
                    guarded(batches[i])
                scores = np.asarray(guarded.last_verdict.scores["features"])
                if not np.allclose(scores, alone[i], rtol=1e-4):
                    problems.append(f"call {i}: {scores} != {alone[i]}")
            except Exception as exc:
                problems.append(repr(exc))

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert problems == []
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_torch_global_hooks_register_again_after_a_registration_that_failed():
    """A registration that raised left its block counted as in: no later block registered
    the hooks again, so every later capture came back empty."""
    pytest.importorskip("torch")
    from aimsec_torch._global_hooks import SharedHook

    attempts, removed = [], []

    class Handle:
        def remove(self) -> None:
            removed.append(self)

    def register() -> list[Handle]:
        attempts.append(None)
        if len(attempts) == 2:
            raise RuntimeError("cannot register")
        return [Handle()]

    hook = SharedHook(register)
    with hook.active():
        pass
    with pytest.raises(RuntimeError), hook.active():
        pass
    with hook.active():
        assert len(attempts) == 3  # registered again
    assert len(removed) == 2


def test_torch_a_guarded_model_inside_another_keeps_the_outer_calls_features():
    """A guarded backbone inside a guarded model: the backbone's own feature capture
    replaced the outer call's, which then lost the layers inside the backbone (a raw
    ``ValueError``: 'the model gives 10 features; the detector was calibrated on 58')."""
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    x = torch.rand(304, 64)
    backbone = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
    inner = aimsec_core.guard(backbone, sinks=[], mode="monitor", policy=False)
    outer = aimsec_core.guard(nn.Sequential(inner, nn.Linear(16, 10)), sinks=[],
                              mode="monitor", policy=False)
    outer.calibrate(x[:300], detectors=["features", "margin"])
    with torch.no_grad():
        outer(x[300:])
    alone = outer.last_verdict.scores["features"]
    inner.calibrate(x[:300], detectors=["features", "margin"])  # now it captures too
    with torch.no_grad():
        outer(x[300:])
    assert np.allclose(outer.last_verdict.scores["features"], alone)
    assert len(inner.last_verdict.scores["features"]) == 4


def test_torch_layers_a_model_runs_in_a_worker_thread_are_captured():
    """A model whose forward hands a layer to a thread pool: that layer runs in a thread
    without the call's context, and its capture was lost (a raw ``ValueError``: 'the model
    gives 42 features; the detector was calibrated on 58' once the layer ran there)."""
    import concurrent.futures

    torch = pytest.importorskip("torch")
    from torch import nn

    pool = concurrent.futures.ThreadPoolExecutor(1)

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Sequential(nn.Linear(64, 32), nn.ReLU())
            self.second = nn.Sequential(nn.Linear(32, 16), nn.ReLU())
            self.head = nn.Linear(16, 10)
            self.threaded = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.first(x)
            h = pool.submit(self.second, h).result() if self.threaded else self.second(h)
            return self.head(h)

    torch.manual_seed(0)
    x = torch.rand(304, 64)
    model = Pooled()
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor", policy=False)
    guarded.calibrate(x[:300], detectors=["features", "margin"])
    with torch.no_grad():
        guarded(x[300:])
    alone = guarded.last_verdict.scores["features"]
    model.threaded = True
    try:
        with torch.no_grad():
            guarded(x[300:])
    finally:
        pool.shutdown()
    assert np.allclose(guarded.last_verdict.scores["features"], alone)



@pytest.mark.parametrize("pass_", ["scores", "input_gradient"])
def test_torch_detector_passes_in_another_thread_stay_out_of_a_capture(pass_):
    """A detector's or calibration's own pass of the model in one thread, while a guarded
    call captures the same layers in another: the pass's layers were taken for the model's
    own worker thread and joined that capture (the call was then refused: 'the model
    gives 34 internal features; ... made for 18'; seen recalibrating while other threads
    called the guarded model)."""
    import threading

    torch = pytest.importorskip("torch")
    from torch import nn

    from aimsec_torch._features import _capturing, _points

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    adapter = aimsec_core.guard_of(aimsec_core.guard(model, sinks=[])).adapter
    x = torch.rand(5, 8)
    with _capturing(_points(adapter)) as captured:  # a guarded call under way, here
        worker = threading.Thread(target=lambda: (
            adapter.scores(x) if pass_ == "scores" else adapter.input_gradient(x, [0] * 5)))
        worker.start()
        worker.join(30)
        assert captured == []  # nothing of the other thread's pass
        model(x)  # this thread's own call is captured as before
    assert len(captured) == 1

def test_a_features_calibration_for_other_layers_is_a_calibration_error_by_name():
    """Features of another width than the calibration's (a file made for another model, or
    layers changed since) are a ``CalibrationError`` saying to recalibrate, not numpy's or
    a raw ``ValueError`` from inside the detector."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    detector = FeatureDensityDetector()
    detector.fit(_probe([rng.normal(0, 1, (200, 4))], labels), (0, 1))
    with pytest.raises(aimsec_core.CalibrationError, match="6 internal features.*made for 4"):
        detector.score(_probe([rng.normal(0, 1, (3, 6))], np.array([0, 1, 0])))
