"""ONNX models exported by torch (not skl2onnx): a small CNN on digits with a dynamic batch,
and its variants (two outputs, a fixed batch of 1, float16, a sigmoid column, two inputs),
guarded as a user would guard them."""

from __future__ import annotations

import copy
import io
import pickle
import threading
from functools import lru_cache

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

import aimsec_core  # noqa: E402
from aimsec_core import (CalibrationError, EmptyInputError, InputFormatError,  # noqa: E402
                         NonFiniteInputError)
from tests.cases import digits  # noqa: E402


def _images() -> np.ndarray:
    return digits()[0].reshape(-1, 1, 8, 8)


class _CNN(torch.nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.hidden = torch.nn.Linear(4 * 4 * 4, 16)
        self.out = torch.nn.Linear(16, 1 if kind == "sigmoid" else 10)

    def forward(self, x, y=None):
        if y is not None:
            x = x + y
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1)
        embedding = torch.relu(self.hidden(h))
        z = self.out(embedding)
        if self.kind == "sigmoid":
            return torch.sigmoid(z)
        return (z, embedding) if self.kind == "two_outputs" else z


@lru_cache(maxsize=None)
def _trained(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = _CNN(kind)
    x, y = torch.tensor(_images()[:600]), torch.tensor(digits()[1][:600])
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(25):
        optimiser.zero_grad()
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        loss = (torch.nn.functional.binary_cross_entropy(out[:, 0], (y > 4).float())
                if kind == "sigmoid" else torch.nn.functional.cross_entropy(out, y))
        loss.backward()
        optimiser.step()
    return model.eval()


@lru_cache(maxsize=None)
def _exported(kind: str, batch: int = 1) -> bytes:
    """``kind``'s model as ONNX; ``"fixed"``: the ``"dynamic"`` model with its batch fixed
    at ``batch`` (torch.onnx.export's default, without ``dynamic_axes``)."""
    model = _trained("dynamic" if kind == "fixed" else kind)
    if kind == "float16":
        model = copy.deepcopy(model).half()
    sample = torch.tensor(_images()[:batch if kind == "fixed" else 2])
    sample = sample.half() if kind == "float16" else sample
    names = ["a", "b"] if kind == "two_inputs" else ["x"]
    outputs = ["logits", "embedding"] if kind == "two_outputs" else ["out"]
    file = io.BytesIO()
    torch.onnx.export(model, (sample, sample) if kind == "two_inputs" else (sample,), file,
                      input_names=names, output_names=outputs, opset_version=17,
                      dynamo=False, dynamic_axes=None if kind == "fixed" else {
                          name: {0: "batch"} for name in names + outputs})
    return file.getvalue()


def _session(kind: str, tmp_path=None, batch: int = 1) -> ort.InferenceSession:
    model = _exported(kind, batch)
    if tmp_path is not None:  # opened from a file
        (tmp_path / f"{kind}.onnx").write_bytes(model)
        model = str(tmp_path / f"{kind}.onnx")
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def _feed(session: ort.InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
    return {arg.name: x.astype(np.float16 if "float16" in arg.type else np.float32)
            for arg in session.get_inputs()}


def _same(got, want) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(getattr(a, "numpy", lambda: a)(), b)


KINDS = ["dynamic", "two_outputs", "fixed", "float16", "sigmoid", "two_inputs"]


@pytest.mark.parametrize("from_file", [False, True], ids=["bytes", "file"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_run_path_and_copy_gives_the_plain_outputs(kind, from_file, tmp_path, sink):
    session = _session(kind, tmp_path if from_file else None)
    guarded = aimsec_core.guard(session, sinks=[sink])
    feed = _feed(session, _images()[:1 if kind == "fixed" else 5])
    want = session.run(None, feed)
    _same(guarded.run(None, feed), want)
    _same(guarded.run_with_ort_values(None, {k: ort.OrtValue.ortvalue_from_numpy(v)
                                             for k, v in feed.items()}), want)
    done, got = threading.Event(), {}
    guarded.run_async(None, feed, lambda out, _, error: (got.update(out=out, error=error),
                                                         done.set()), None)
    assert done.wait(10) and not got["error"]
    _same(got["out"], want)
    for twin in (copy.deepcopy(guarded), pickle.loads(pickle.dumps(guarded))):
        _same(twin.run(None, feed), want)
    assert sink.outcomes.count("rejected") == 0


@pytest.mark.parametrize("kind", ["dynamic", "float16", "sigmoid", "two_inputs"])
def test_calibration_works_saves_and_travels(kind, tmp_path, sink):
    session = _session(kind)
    guarded = aimsec_core.guard(session, sinks=[sink], mode="monitor")
    data = _feed(session, _images()[1000:1300])
    guarded.calibrate(data["x"] if kind != "two_inputs" else data)  # both feeds, by name
    feed = _feed(session, _images()[:5])
    _same(guarded.run(None, feed), session.run(None, feed))
    path = guarded.save_calibration(tmp_path / "cnn.npz")
    loaded = aimsec_core.guard(_session(kind), sinks=[sink], mode="monitor",
                               calibration=path)
    loaded.run(None, feed)
    assert (loaded.last_verdict.scores["suspicion"]
            == guarded.last_verdict.scores["suspicion"])
    twin = pickle.loads(pickle.dumps(guarded))
    twin.run(None, feed)
    assert twin.last_verdict.scores["suspicion"] == guarded.last_verdict.scores["suspicion"]


@pytest.mark.parametrize("kind, says", [
    ("two_outputs", r"which output holds class probabilities.*'logits'.*'embedding'"
                    r".*output_names"),
    ("two_inputs", r"\['a', 'b'\].*one array per input; received a ndarray"),
])
def test_calibration_the_detectors_cannot_do_is_a_calibration_error(kind, says):
    session = _session(kind)
    with pytest.raises(CalibrationError, match=says):
        aimsec_core.guard(session, sinks=[]).calibrate(
            _feed(session, _images()[1000:1300])[session.get_inputs()[0].name])


def _bad_feeds(x: np.ndarray) -> dict:
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    return {"float64": ({"x": x.astype(np.float64)}, InputFormatError, "dtype float64"),
            "shape": ({"x": x.reshape(len(x), 64)}, InputFormatError, r"shape \(5, 64\)"),
            "missing": ({}, InputFormatError, "missing from input_feed"),
            "extra": ({"x": x, "y": x}, InputFormatError, "'y': no input"),
            "nan": ({"x": nan}, NonFiniteInputError, "NaN"),
            "none": ({"x": None}, EmptyInputError, "None"),
            "tuple": ({"x": tuple(x)}, InputFormatError, "tuple")}


@pytest.mark.parametrize("bad", list(_bad_feeds(np.zeros((5, 1, 8, 8), np.float32))))
def test_bad_feeds_are_typed_errors_not_onnxruntime_s(bad, sink):
    guarded = aimsec_core.guard(_session("dynamic"), sinks=[sink])
    feed, error, says = _bad_feeds(_images()[:5])[bad]
    with pytest.raises(error, match=says):
        guarded.run(None, feed)
    assert sink.outcomes == ["rejected"]


def test_a_fixed_batch_of_one_refuses_a_longer_batch_typed(sink):
    guarded = aimsec_core.guard(_session("fixed"), sinks=[sink])
    with pytest.raises(InputFormatError, match=r"\(2, 1, 8, 8\).*\(1, 1, 8, 8\).*"
                                               r"batches of exactly 1 sample \("):
        guarded.run(None, {"x": _images()[:2]})


#: detectors that ask the model about the batch itself and about transformed copies of it
#: (squeezed, noisy, interpolated towards neighbours), in batches of their own sizes
COPIES = ["margin", "squeeze", "noise", "neighbours", "robust"]


def _guarded_pair(batch: int, x: np.ndarray, sink, detectors=None, reference=None) -> list:
    """The same trained CNN exported with a batch fixed at ``batch`` and with a dynamic
    one, each guarded (monitor mode: verdicts, never refusals) and calibrated on ``x``."""
    pair = []
    for session in (_session("fixed", batch=batch), _session("dynamic")):
        guarded = aimsec_core.guard(session, sinks=[sink], mode="monitor")
        guarded.calibrate(x, detectors=detectors, reference=reference)
        pair.append(guarded)
    return pair


def _noisy(x: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(x + rng.normal(0, 0.5, x.shape), 0, 1).astype(np.float32)


def _same_verdicts(got, want) -> None:
    assert got.allowed == want.allowed and got.flags == want.flags
    assert got.scores.keys() == want.scores.keys()
    for name in want.scores:
        np.testing.assert_allclose(got.scores[name], want.scores[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("detectors", [None, COPIES], ids=["default", "copies"])
def test_a_fixed_batch_of_one_calibrates_and_screens_as_the_dynamic_export(
        detectors, tmp_path, sink):
    fixed, dynamic = _guarded_pair(1, _images()[1000:1300], sink, detectors)
    calibrations = [aimsec_core.guard_of(g).calibration for g in (fixed, dynamic)]
    np.testing.assert_allclose(calibrations[0].suite.threshold,
                               calibrations[1].suite.threshold, rtol=1e-6)
    assert calibrations[0].sample_shape == (1, 8, 8)
    loaded = aimsec_core.guard(_session("fixed"), sinks=[sink], mode="monitor",
                               calibration=fixed.save_calibration(tmp_path / "fixed.npz"))
    calls = np.concatenate([_images()[:3], _noisy(_images()[3:6])])
    flagged = 0
    for sample in calls:
        feed = {"x": sample[None]}
        want = dynamic.run(None, feed)
        for guarded in (fixed, loaded):
            _same(guarded.run(None, feed), want)
            _same_verdicts(guarded.last_verdict, dynamic.last_verdict)
        flagged += dynamic.last_verdict.flags[0]
    # the default detectors flag noisy samples (so refusals compare too); the copies'
    # detectors score them without flagging any
    assert flagged == (3 if detectors is None else 0)


@pytest.mark.filterwarnings("ignore:calibrated on 42 clean samples")
def test_a_fixed_batch_of_four_calibrates_on_samples_it_does_not_divide(sink):
    """42 calibration samples (ten batches of 4, then 2 padded to 4, whose padding's
    outputs are dropped) and 10 reference samples (two batches, then 2 padded)."""
    fixed, dynamic = _guarded_pair(4, _images()[1000:1042], sink,
                                   ["margin", "squeeze", "noise", "neighbours"],
                                   reference=_images()[1100:1110])
    calibrations = [aimsec_core.guard_of(g).calibration for g in (fixed, dynamic)]
    assert calibrations[0].samples == calibrations[1].samples == 42
    assert calibrations[0].reference_samples == 10
    np.testing.assert_allclose(calibrations[0].suite.threshold,
                               calibrations[1].suite.threshold, rtol=1e-6)
    for calls in (_images()[:4], _noisy(_images()[4:8])):
        want = dynamic.run(None, {"x": calls})
        _same(fixed.run(None, {"x": calls}), want)
        _same_verdicts(fixed.last_verdict, dynamic.last_verdict)
    with pytest.raises(InputFormatError, match=r"\(2, 1, 8, 8\).*\(4, 1, 8, 8\).*"
                                               r"batches of exactly 4 samples"):
        fixed.run(None, {"x": _images()[:2]})
    with pytest.raises(InputFormatError, match=r"\(4, 64\).*\(4, 1, 8, 8\)"):
        fixed.run(None, {"x": _images()[:4].reshape(4, 64)})
    assert fixed.last_verdict.findings[0].check == "shape"


def test_calibration_data_of_another_sample_shape_is_refused_for_a_fixed_batch():
    session = _session("fixed", batch=4)
    with pytest.raises(CalibrationError, match=r"shape \(10, 64\); the model expects "
                                               r"x: float32 \(N, 1, 8, 8\)"):
        aimsec_core.guard(session, sinks=[]).calibrate(_images()[:10].reshape(10, 64))


def test_session_options_travel_with_copies(sink):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(_exported("dynamic"), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    guarded = aimsec_core.guard(session, sinks=[sink])
    feed = {"x": _images()[:3]}
    for twin in (copy.deepcopy(guarded), pickle.loads(pickle.dumps(guarded))):
        got = twin.get_session_options()
        assert got.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        assert got.intra_op_num_threads == 1
        _same(twin.run(None, feed), session.run(None, feed))
