"""Regressions from a hostile-input review: each test is one reported defect."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import aimsec_core
from aimsec_core import AuditLog
from tests.cases import audit_lines, digits, digits_logistic

pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return digits_logistic()


def _self_containing() -> list:
    looped: list = []
    looped.append(looped)
    return looped


def _nested(depth: int) -> list:
    value: list = [0.5] * 64
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("make", [_self_containing, lambda: _nested(200)],
                         ids=["contains-itself", "nested-200-deep"])
def test_a_list_no_array_can_hold_is_a_format_refusal_not_a_hang(model, tmp_path, make):
    audit = AuditLog(tmp_path)
    guarded = aimsec_core.guard(model, sinks=[audit])
    with pytest.raises(aimsec_core.InputFormatError, match="nested deeper than 64"):
        guarded.predict(make())
    [line] = audit_lines(audit)
    assert line["decision"] == "rejected" and line["findings"][0]["check"] == "format"


@pytest.mark.parametrize("name", [5, "", b"digits", ["digits"]])
def test_a_model_name_that_is_not_a_string_is_refused_at_guard(model, tmp_path, name):
    # a non-string name was taken, and every audit line of the guard was then lost
    with pytest.raises(aimsec_core.ConfigurationError, match="name must be a non-empty"):
        aimsec_core.guard(model, name=name, sinks=[AuditLog(tmp_path)])


@pytest.mark.parametrize("constraints, match", [
    ({"min_value": "0"}, "'min_value' must be a finite number"),
    ({"max_value": 10 ** 400}, "'max_value' must be a finite number"),
    ({"sample_shape": "64"}, "'sample_shape' must be a tuple"),  # read as (6, 4) before
    ({"sample_shape": (-1,)}, "'sample_shape' must be a tuple"),
    ({"sample_shape": (64.0,)}, "'sample_shape' must be a tuple"),
    ({"sample_shape": 64}, "'sample_shape' must be a tuple"),
    ({"dtype": "nonsense"}, "'dtype' must name"),
    ({"dtype": 5}, "'dtype' must name"),
    ({"dtype": "datetime64[s]"}, "'dtype' must name"),
    ({"inputs": {"X": {"dtype": "floot32"}}}, "input 'X': constraint 'dtype' must name"),
])
def test_a_constraint_of_the_wrong_type_is_a_configuration_error(constraints, match):
    # each was taken and then raised a raw TypeError/OverflowError at the first call, or
    # refused every call as the caller's wrong shape or dtype
    with pytest.raises(aimsec_core.ConfigurationError, match=match):
        aimsec_core.Constraints.coerce(constraints)


@pytest.mark.parametrize("dtype", [np.float64, "f8", np.dtype("float64"), ">f8", "float64"])
def test_a_dtype_constraint_is_read_in_any_of_numpys_spellings(model, tmp_path, dtype):
    guarded = aimsec_core.guard(model, sinks=[AuditLog(tmp_path)], constraints={"dtype": dtype})
    assert aimsec_core.Constraints.coerce({"dtype": dtype}).dtype == "float64"
    x, _ = digits()
    # was refused: "the model declares <class 'numpy.float64'>"
    assert guarded.predict(x[:2].astype(np.float64)).shape == (2,)


def test_sample_shape_accepts_numpy_ints_and_none():
    shape = aimsec_core.Constraints(sample_shape=[np.int64(8), None]).sample_shape
    assert shape == (8, None) and type(shape[0]) is int


@pytest.mark.parametrize("store", ["redis://:notaport/0", "redis://h:99999/0",
                                   "redis://h/0?db=x", 5])
def test_a_store_url_redis_cannot_parse_is_a_configuration_error(model, tmp_path, store):
    pytest.importorskip("redis")
    with pytest.raises(aimsec_core.ConfigurationError, match="store"):
        aimsec_core.guard(model, sinks=[AuditLog(tmp_path)], store=store)


def test_a_refused_store_url_never_echoes_its_password(model, tmp_path):
    with pytest.raises(aimsec_core.ConfigurationError) as caught:
        aimsec_core.guard(model, sinks=[AuditLog(tmp_path)], store="http://user:s3cret@host/0")
    assert "s3cret" not in str(caught.value)


def test_a_near_duplicate_threshold_of_zero_is_refused():
    # 0 made every query a near-duplicate of any stored one: clients refused, locked out
    with pytest.raises(aimsec_core.ConfigurationError, match="suspicious_pattern_threshold"):
        aimsec_core.guard(LogisticRegression(), policy={"suspicious_pattern_threshold": 0})


def test_a_nested_torch_tensor_is_refused_by_its_name(tmp_path):
    torch = pytest.importorskip("torch")
    guarded = aimsec_core.guard(torch.nn.Linear(4, 2), sinks=[AuditLog(tmp_path)])
    # torch warns that nested tensors are a prototype, once per process: whether it does
    # here depends on which test made one first, so it is silenced, not expected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        nested = torch.nested.nested_tensor([torch.rand(2, 4), torch.rand(3, 4)])
    with pytest.raises(aimsec_core.InputFormatError, match="a nested tensor is not supported"):
        guarded(nested)  # was "a torch.strided tensor is not supported; expected ... strided"


def test_a_feed_key_of_a_megabyte_is_shown_bounded(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from tests.cases.onnx_case import CASE

    session = CASE.model()
    assert isinstance(session, ort.InferenceSession)
    guarded = aimsec_core.guard(session, sinks=[AuditLog(tmp_path)])
    name = session.get_inputs()[0].name
    x, _ = digits()
    x = x[:2].astype(np.float32)
    for feed in ({"k" * 10 ** 6: x}, {name: x, "k" * 10 ** 6: x}):
        with pytest.raises(aimsec_core.InputFormatError) as caught:
            guarded.run(None, feed)
        assert len(str(caught.value)) < 1000  # was the whole key, twice


@pytest.mark.parametrize("window", [0, -5, float("nan"), float("inf"), "60", None, True])
def test_request_analysis_refuses_a_window_that_is_not_a_positive_number(model, window):
    # NaN, inf, strings and None raised raw ValueError/TypeError; 0 reported a rate of 1e9
    guarded = aimsec_core.guard(model, sinks=[])
    with pytest.raises(aimsec_core.ConfigurationError, match="window_minutes"):
        guarded.request_analysis(window_minutes=window)


def test_request_analysis_past_the_kept_day_reports_the_day_it_read(model):
    guarded = aimsec_core.guard(model, sinks=[])
    x, _ = digits()
    guarded.predict(x[:2])
    week = guarded.request_analysis(window_minutes=7 * 24 * 60)
    assert week["window_minutes"] == 24 * 60 and week["total_requests"] == 1
    assert week["request_rate"] == pytest.approx(1 / (24 * 60))
    assert guarded.request_analysis(window_minutes=np.int64(5))["total_requests"] == 1


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize("columns", [["c", "b", "a"], ["z", "b", "c"], ["a", "b"]])
def test_a_frame_with_other_feature_names_is_a_format_refusal(tmp_path, columns):
    # scikit-learn's own ValueError came out of the model raw, recorded as an error
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    fitted = pd.DataFrame(rng.random((40, 3)), columns=["a", "b", "c"])
    audit = AuditLog(tmp_path)
    guarded = aimsec_core.guard(LogisticRegression(), sinks=[audit])
    guarded.fit(fitted, np.arange(40) % 2)  # the guarded estimator fits a clone
    assert guarded.predict(fitted[:2]).shape == (2,)
    assert guarded.predict(pd.DataFrame(fitted.to_numpy()[:2])).shape == (2,)  # by position
    with pytest.raises(aimsec_core.InputFormatError, match="not the feature names"):
        guarded.predict(pd.DataFrame(fitted.to_numpy()[:2, :len(columns)], columns=columns))
    assert [line["decision"] for line in audit_lines(audit)] == ["allowed", "allowed", "rejected"]


class _FailingPredict(LogisticRegression):
    """Scores (predict_proba) work, predict fails: a model that breaks mid-call."""

    def predict(self, X):
        if getattr(self, "failure", None) is not None:
            raise self.failure
        return super().predict(X)


@pytest.fixture(scope="module")
def calibrated_failing(tmp_path_factory):
    x, y = digits()
    model = _FailingPredict(max_iter=300).fit(x[:800], y[:800])
    audit = AuditLog(tmp_path_factory.mktemp("audit"))
    guarded = aimsec_core.guard(model, sinks=[audit], on_flagged="samples")
    guarded.calibrate(x[800:1300], fpr=0.05, detectors=["margin", "density"])
    return guarded, audit


def test_a_model_failing_after_samples_were_flagged_still_leaves_its_line(calibrated_failing):
    # with on_flagged="samples" the model's error escaped raw and the call left no line
    guarded, audit = calibrated_failing
    x, _ = digits()
    noisy = np.clip(x[1300:1304] + 0.45 * np.sign(np.random.default_rng(0).standard_normal(
        (4, 64))), 0, 1).astype(x.dtype)
    batch = np.vstack([x[1304:1306], noisy])
    before = len(audit_lines(audit))
    aimsec_core.unguard(guarded).failure = RuntimeError("model down")
    try:
        with pytest.raises(aimsec_core.AdversarialInputError) as caught:
            guarded.predict(batch)
    finally:
        aimsec_core.unguard(guarded).failure = None
    assert isinstance(caught.value.__cause__, RuntimeError)
    lines = audit_lines(audit)[before:]
    assert [line["decision"] for line in lines] == ["error"]
    assert "model down" in lines[0]["error"]


def test_an_interrupted_call_still_leaves_its_line(calibrated_failing):
    guarded, audit = calibrated_failing
    x, _ = digits()
    before = len(audit_lines(audit))
    aimsec_core.unguard(guarded).failure = KeyboardInterrupt()
    try:
        with pytest.raises(KeyboardInterrupt):
            guarded.predict(x[1304:1305])  # a clean digit: the model itself is interrupted
    finally:
        aimsec_core.unguard(guarded).failure = None
    assert [line["decision"] for line in audit_lines(audit)[before:]] == ["error"]


@pytest.mark.parametrize("sinks, match", [
    ("audit", "received str"),  # each letter became a sink failing every call
    ([5], "received int 5"),
    (5, "received int"),  # TypeError
])
def test_sinks_that_cannot_record_are_refused_at_guard(model, sinks, match):
    with pytest.raises(aimsec_core.ConfigurationError, match=match):
        aimsec_core.guard(model, sinks=sinks)


@pytest.mark.parametrize("calibration", [5, b"digits.npz", ["digits.npz"]])
def test_a_calibration_that_is_neither_a_file_nor_a_calibration_is_refused(model, calibration):
    # int and list raised TypeError from the file reader
    with pytest.raises(aimsec_core.ConfigurationError, match="calibration must be"):
        aimsec_core.guard(model, sinks=[], calibration=calibration)
