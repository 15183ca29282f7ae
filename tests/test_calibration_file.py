"""Calibration files are untrusted input; calibration arguments are checked; a detector
finding can refuse only the flagged samples."""

from __future__ import annotations

import io
import json
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aimsec_core
from aimsec_core import CalibrationError, ConfigurationError
from aimsec_core.detection.calibration import per_sample_rate
from tests.cases import digits

pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402


@pytest.fixture(scope="module")
def data():
    x, y = digits()
    return x, y


@pytest.fixture(scope="module")
def model(data):
    x, y = data
    return LogisticRegression(max_iter=300).fit(x[:900], y[:900])


@pytest.fixture(scope="module")
def saved(tmp_path_factory, model, data):
    x, _ = data
    guarded = aimsec_core.guard(model, sinks=[], constraints={"min_value": 0, "max_value": 1})
    guarded.calibrate(x[900:1300], fpr=0.05)
    return guarded.save_calibration(tmp_path_factory.mktemp("cal") / "digits.npz")


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _write(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in members.items():
            archive.writestr(name, raw)
    return path


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _meta(members) -> dict:
    """The file's metadata without its digests: files edited by hand from it are checked
    as files from before digests are (``test_calibration_integrity`` covers the digests)."""
    meta = json.loads(np.load(io.BytesIO(members["__meta__.npy"])).tobytes().decode())
    meta.pop("integrity", None)
    return meta


def _with_meta(members, meta_text: str) -> dict[str, bytes]:
    return {**members, "__meta__.npy": _npy(np.frombuffer(meta_text.encode(), np.uint8))}


def _guard(model):
    return aimsec_core.guard(model, sinks=[], constraints={"min_value": 0, "max_value": 1})


def _load(model, path):
    return _guard(model).load_calibration(path)


def test_a_saved_calibration_loads_and_detects(model, saved):
    calibration = _load(model, saved)
    assert calibration.model_fingerprint and calibration.suite.threshold is not None


@pytest.mark.parametrize("field,value", [
    ("threshold", "NaN"), ("threshold", "Infinity"), ("threshold", "-Infinity"),
    ("threshold", "null"), ("threshold", '"high"'), ("fpr_target", "0"),
    ("fpr_target", "1.5"), ("top", "0"), ("top", "true"), ("sample_shape", "[-1]"),
    ("sample_shape", '"64"'), ("value_range", "[1, 0]"), ("fit_samples", "-3"),
    ("model", "7"), ("detectors", "[]"), ("detectors", "{}"), ("sigmoid_output", "1"),
    ("sigmoid_output", '"yes"'),
])
def test_metadata_of_the_wrong_type_or_range_is_refused(tmp_path, model, saved, field, value):
    members = _members(saved)
    text = json.dumps({**_meta(members), field: "__X__"}).replace('"__X__"', value)
    with pytest.raises(CalibrationError, match=field):
        _load(model, _write(tmp_path / "bad.npz", _with_meta(members, text)))


@pytest.mark.parametrize("counts", [
    {"samples": 0, "fit_samples": 0, "threshold_samples": 0},  # was a raw ValueError
    {"samples": 0, "threshold_samples": 0},
])
def test_a_file_of_no_samples_is_refused(tmp_path, model, saved, counts):
    members = _members(saved)
    text = json.dumps({**_meta(members), **counts})
    with pytest.raises(CalibrationError, match="'samples' and 'threshold_samples'"):
        _load(model, _write(tmp_path / "bad.npz", _with_meta(members, text)))


def test_a_file_claiming_a_huge_sample_count_loads_at_once(tmp_path, model, saved):
    """The count sets the false-positive interval, which summed one term per flagged
    sample: 2**40 samples at a rate of 0.5 asked for a 4 TiB array."""
    members = _members(saved)
    text = json.dumps({**_meta(members), "samples": 2**40, "achieved_fpr": 0.5})
    guarded = _guard(model)
    calibration = guarded.load_calibration(_write(tmp_path / "big.npz",
                                                  _with_meta(members, text)))
    low, high = calibration.fpr_interval
    assert 0.499 < low < 0.5 < high < 0.501
    assert calibration.id  # the summary (with the interval) names the calibration


@pytest.mark.parametrize("tail", ["NaN", "Infinity", "null", "0", "-1"])
def test_a_non_finite_tail_is_refused(tmp_path, model, saved, tail):
    members = _members(saved)
    meta = _meta(members)
    name = next(iter(meta["detectors"]))
    meta["detectors"][name]["tail"] = "__X__"
    text = json.dumps(meta).replace('"__X__"', tail)
    with pytest.raises(CalibrationError, match="tail"):
        _load(model, _write(tmp_path / "bad.npz", _with_meta(members, text)))


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04broken"])
def test_a_file_that_is_not_an_npz_is_refused(tmp_path, model, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(CalibrationError, match="npz"):
        _load(model, path)


def test_metadata_that_is_not_an_object_is_refused(tmp_path, model, saved):
    members = _with_meta(_members(saved), "[1, 2, 3]")
    with pytest.raises(CalibrationError, match="JSON object"):
        _load(model, _write(tmp_path / "bad.npz", members))


def test_absurd_detector_settings_are_refused(tmp_path, model, saved):
    members = _members(saved)
    meta = _meta(members)
    meta["detectors"]["neighbours"]["config"]["k"] = 10 ** 9
    with pytest.raises(CalibrationError, match="'k'"):
        _load(model, _write(tmp_path / "bad.npz", _with_meta(members, json.dumps(meta))))


@pytest.mark.parametrize("member,array", [
    ("neighbours.points.npy", np.zeros((10, 7), np.float32)),
    ("density.precision.npy", np.zeros((64, 3))),
    ("density.means.npy", np.full((10, 64), np.nan)),
    ("suite.density.clean_scores.npy", np.array([3.0, 1.0, 2.0])),
])
def test_arrays_that_do_not_fit_the_model_are_refused(tmp_path, model, saved, member, array):
    members = {**_members(saved), member: _npy(array)}
    with pytest.raises(CalibrationError):
        _load(model, _write(tmp_path / "bad.npz", members))


def _points_scaled(members, scale: float) -> bytes:
    points = np.load(io.BytesIO(members["neighbours.points.npy"])).astype(np.float64)
    return _npy((points * scale).astype(np.float32))


@pytest.mark.parametrize("change,match", [
    # finite float32, under the float64 magnitude cap: their float32 squares overflowed
    # and every call was flagged
    (lambda m: {"neighbours.points.npy": _points_scaled(m, 1e19)}, "points"),
    (lambda m: {"neighbours.points.npy": _npy(np.zeros((0, 64), np.float32)),
                "neighbours.labels.npy": _npy(np.zeros(0, np.int64))}, "points"),
    # no class at all: every call raised a raw ValueError (a minimum over no classes)
    (lambda m: {"density.means.npy": _npy(np.zeros((0, 64)))}, "means"),
], ids=["points-past-float32-squares", "no-points", "no-class-means"])
def test_well_formed_arrays_that_break_every_call_are_refused_by_name(tmp_path, model,
                                                                      saved, change, match):
    members = _members(saved)
    members = _with_meta(members, json.dumps(_meta(members)))  # as a file with no digest
    members.update(change(members))
    with pytest.raises(CalibrationError, match=match):
        _load(model, _write(tmp_path / "bad.npz", members))


@pytest.fixture(scope="module")
def saved_making_inputs(tmp_path_factory, model, data):
    """A calibration whose detectors make inputs of their own for the model."""
    x, _ = data
    guarded = aimsec_core.guard(model, sinks=[])
    guarded.calibrate(x[900:1300], fpr=0.05, detectors=["squeeze", "noise", "support",
                                                        "margin"], image_shape=(8, 8))
    return guarded.save_calibration(tmp_path_factory.mktemp("cal") / "making.npz")


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_scaled_arrays_load_refused_by_name_or_serve_without_raw_errors(
        tmp_path_factory, model, saved, saved_making_inputs, data):
    # every array member, scaled by anything that keeps it finite: either the file is
    # refused, or clean calls get verdicts (no numpy warning, no error from the model fed
    # a detector's input of NaN or past float32)
    x, _ = digits()
    source = data.draw(st.sampled_from([saved, saved_making_inputs]))
    members = _members(source)
    member = data.draw(st.sampled_from(sorted(m for m in members if m != "__meta__.npy")))
    scale = data.draw(st.sampled_from([1e-300, 1e-30, 1e19, 1e30, 1e38, 1e100, 1e149,
                                       -1e149]))
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    with np.errstate(all="ignore"):
        array = (np.load(io.BytesIO(members[member])).astype(np.float64) * scale).astype(dtype)
    if not np.isfinite(array).all():
        return
    members[member] = _npy(array)
    path = _write(tmp_path_factory.mktemp("scaled") / "s.npz", members)
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            guarded.load_calibration(path)
        except CalibrationError:
            return
        guarded.predict(x[1300:1310].astype(np.float32))
    assert guarded.last_verdict is not None


def test_members_the_metadata_does_not_name_are_never_read(tmp_path, model, saved):
    # an object array would need pickle to load: reading it would fail
    members = {**_members(saved), "extra.npy": _npy(np.array([{"x": 1}], dtype=object))}
    assert _load(model, _write(tmp_path / "extra.npz", members)).suite.threshold is not None


def test_an_object_array_where_numbers_belong_is_refused(tmp_path, model, saved):
    members = {**_members(saved),
               "density.means.npy": _npy(np.array([{"x": 1}], dtype=object))}
    with pytest.raises(CalibrationError):
        _load(model, _write(tmp_path / "bad.npz", members))


def test_a_member_larger_than_the_cap_is_refused_before_it_is_read(model, saved,
                                                                   monkeypatch):
    monkeypatch.setenv("AIMSEC_CALIBRATION_MAX_BYTES", "1000")
    with pytest.raises(CalibrationError, match="declares .* bytes"):
        _load(model, saved)


def test_members_each_under_the_cap_but_huge_together_are_refused_before_reading(
        tmp_path, model, saved, monkeypatch):
    # each member just under the cap was inflated in turn: a few MB of compressed zeros
    # under every name the metadata calls for made the loader allocate 512 MiB per name
    monkeypatch.setenv("AIMSEC_CALIBRATION_MAX_BYTES", str(2 ** 20))
    members = _members(saved)
    bomb = _npy(np.zeros(2 ** 20 // 8 - 16))
    named = [name for name in members if name != "__meta__.npy"][:6]
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, raw in members.items():
            archive.writestr(name, bomb if name in named else raw)
    with pytest.raises(CalibrationError, match="members declare .* bytes together"):
        _load(model, path)


@pytest.mark.parametrize("shape", [(10 ** 12,), (2 ** 20, 2 ** 20), (3, 64)])
def test_a_member_whose_header_claims_more_than_it_holds_is_refused_unallocated(
        tmp_path, model, saved, shape):
    # a few bytes claiming 8 TB raised MemoryError (numpy sized its buffer by the header)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape})
    members = {**_members(saved), "density.means.npy": header.getvalue() + bytes(16)}
    with pytest.raises(CalibrationError, match="declares an array of shape"):
        _load(model, _write(tmp_path / "claims.npz", members))


def test_a_corrupted_compressed_member_is_a_calibration_error(tmp_path, model, saved):
    # a deflate stream broken inside raised zlib.error
    raw = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("density.means.npy")
    assert info.compress_type == zipfile.ZIP_DEFLATED
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start:start + info.compress_size] = bytes([0xFF]) * info.compress_size
    broken = tmp_path / "broken.npz"
    broken.write_bytes(bytes(raw))
    with pytest.raises(CalibrationError, match="not a readable"):
        _load(model, broken)


def test_a_calibration_file_that_cannot_be_opened_says_why(tmp_path, model):
    """A path with no file said "it is not a readable .npz archive", as if the file were
    damaged; the error now says there is no such file (or what is there instead)."""
    missing = tmp_path / "digits.npz"
    with pytest.raises(CalibrationError, match="No such file or directory") as caught:
        aimsec_core.guard(model, sinks=[], calibration=missing)
    assert "not a readable" not in str(caught.value)
    assert str(missing) in str(caught.value)
    with pytest.raises(CalibrationError, match=r"is not a regular file \(it is a folder\)"):
        _load(model, tmp_path)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_calibration_for_another_model_is_refused_unless_forced(model, saved, data):
    x, y = data
    other = LogisticRegression(max_iter=50).fit(x[:300], y[:300])
    with pytest.raises(CalibrationError, match="another model"):
        _load(other, saved)
    guarded = _guard(other)
    with pytest.warns(RuntimeWarning, match="another model"):
        guarded.load_calibration(saved, force=True)
    assert aimsec_core.guard_of(guarded).calibration is not None


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("force", ["false", "no", 1, 0, None])
def test_force_is_a_bool(model, saved, data, force):
    """``force="false"`` is a non-empty string, so truthy: it loaded a calibration made
    for another model without a word but the warning."""
    x, y = data
    other = _guard(LogisticRegression(max_iter=50).fit(x[:300], y[:300]))
    with pytest.raises(ConfigurationError, match="force must be True or False"):
        other.load_calibration(saved, force=force)
    assert aimsec_core.guard_of(other).calibration is None


@pytest.mark.parametrize("path, error, match", [
    (None, ConfigurationError, "must be a str or a path object; received NoneType"),
    (7, ConfigurationError, "received int"),
    (b"c.npz", ConfigurationError, "received bytes"),
    ("c\0d.npz", CalibrationError, "embedded null byte"),
    ("/", CalibrationError, "empty name"),
])
def test_saving_to_a_path_that_names_no_file_is_a_typed_error(model, saved, path, error, match):
    guarded = _guard(model)
    guarded.load_calibration(saved)
    with pytest.raises(error, match=match):
        guarded.save_calibration(path)


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_tampered_files_load_or_fail_with_calibration_error(tmp_path_factory, model, saved,
                                                            data):
    members = _members(saved)
    meta = _meta(members)
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats()
        | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
    field = data.draw(st.sampled_from(sorted(meta)))
    meta[field] = data.draw(json_values)
    member = data.draw(st.sampled_from(sorted(members)))
    if member != "__meta__.npy" and data.draw(st.booleans()):
        shape = data.draw(st.lists(st.integers(0, 4), max_size=3))
        members[member] = _npy(np.full(shape, data.draw(st.floats()), dtype=np.float64))
    text = json.dumps(meta)  # NaN/Infinity may appear: they must be refused, not used
    path = _write(tmp_path_factory.mktemp("fuzz") / "t.npz", _with_meta(members, text))
    try:
        _load(model, path)
    except CalibrationError:
        pass


@pytest.mark.parametrize("fpr", [0, 0.0, -0.1, 1, 1.5, float("nan"), "0.05", None, True])
def test_calibration_arguments_out_of_range_are_clear_errors(model, data, fpr):
    x, _ = data
    with pytest.raises(ConfigurationError, match="fpr"):
        _guard(model).calibrate(x[900:1300], fpr=fpr)


@pytest.mark.parametrize("batch_size", [0, -2, 2.5, "32"])
def test_a_bad_batch_size_is_a_clear_error(model, data, batch_size):
    x, _ = data
    with pytest.raises(ConfigurationError, match="batch_size"):
        _guard(model).calibrate(x[900:1300], fpr=0.05, batch_size=batch_size)


def test_a_per_call_rate_sets_the_per_sample_target():
    assert per_sample_rate(0.05) == 0.05
    per_sample = per_sample_rate(0.05, 32)
    assert 1 - (1 - per_sample) ** 32 == pytest.approx(0.05)


def test_calibrating_for_a_batch_size_keeps_clean_calls_of_that_size(model, data):
    x, _ = data
    guarded = _guard(model)
    calibration = guarded.calibrate(x[900:1600], fpr=0.05, batch_size=32)
    assert calibration.suite.fpr_target == pytest.approx(per_sample_rate(0.05, 32))
    clean = x[1600:1600 + 32 * 6]
    refused = 0
    for batch in clean.reshape(6, 32, 64):
        try:
            guarded.predict(batch)
        except aimsec_core.AdversarialInputError:
            refused += 1
    assert refused <= 2  # per-sample calibration at 5% refused 9 of 12 such batches


def test_too_little_data_for_a_per_call_rate_names_the_batch_size(model, data):
    x, _ = data
    with pytest.raises(CalibrationError, match=r"fpr=0.05 per call of batch_size=32 .* at "
                                               r"least 625 clean samples.*received 400"):
        _guard(model).calibrate(x[900:1300], fpr=0.05, batch_size=32)


def test_refusing_only_the_flagged_samples_returns_the_others(model, data):
    x, _ = data
    guarded = aimsec_core.guard(model, sinks=[], on_flagged="samples",
                                constraints={"min_value": 0, "max_value": 1})
    guarded.calibrate(x[900:1300], fpr=0.05)
    batch = x[1400:1408].copy()
    rng = np.random.default_rng(0)
    batch[3] = rng.random(64)  # uniform noise: nothing like a digit
    with pytest.raises(aimsec_core.AdversarialInputError) as caught:
        guarded.predict(batch)
    error = caught.value
    assert 3 not in error.allowed and len(error.allowed) >= 1
    np.testing.assert_array_equal(error.allowed_output,
                                  model.predict(batch[list(error.allowed)]))
    assert error.verdict.flags[3]


def test_on_flagged_is_checked(model):
    with pytest.raises(ConfigurationError, match="on_flagged"):
        aimsec_core.guard(model, sinks=[], on_flagged="rows")


def test_large_batches_are_scored_in_chunks_with_the_same_result(model, data, monkeypatch):
    from aimsec_core.detection import suite as suite_module

    x, _ = data
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor")
    guarded.calibrate(x[900:1300], fpr=0.05)
    batch = x[1300:1797]
    guarded.predict(batch)
    whole = guarded.last_verdict.scores
    monkeypatch.setattr(suite_module, "SCORE_CHUNK", 64)
    guarded.predict(batch)
    chunked = guarded.last_verdict.scores
    assert set(whole) == set(chunked)
    for name in whole:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-5, atol=1e-5)  # float32 BLAS


@pytest.mark.parametrize("options, match", [
    ({"detectors": "margin"}, "received the string 'margin'"),  # was "unknown detector 'm'"
    ({"detectors": ["margin", "density", "margin"]}, "listed more than once"),
    ({"image_shape": "8x8"}, "must be two sizes"),
    # the squeeze and jump detectors reshaped with numpy's raw ValueError
    ({"detectors": ["margin", "squeeze"], "image_shape": (7, 7)}, "does not fit samples"),
    ({"detectors": ["margin", "jump"], "image_shape": (4, 4)}, "does not fit samples"),
])
def test_detector_choices_that_cannot_work_are_clear_errors(model, data, options, match):
    x, _ = data
    with pytest.raises(ConfigurationError, match=match):
        _guard(model).calibrate(x[900:1300], fpr=0.05, **options)


def test_a_name_with_another_suffix_gets_npz_appended_not_replaced(model, saved, tmp_path):
    # digits.v1 and digits.v2 were both written as digits.npz, the second over the first
    guarded = _guard(model)
    guarded.load_calibration(saved)
    first = guarded.save_calibration(tmp_path / "digits.v1")
    second = guarded.save_calibration(tmp_path / "digits.v2")
    assert (first.name, second.name) == ("digits.v1.npz", "digits.v2.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.v1.npz", "digits.v2.npz"]
    assert guarded.save_calibration(tmp_path / "digits.npz").name == "digits.npz"


def test_saving_to_a_folder_is_refused_not_written_beside_it(model, saved, tmp_path):
    # save_calibration(folder) wrote "<folder>.npz" beside the folder
    guarded = _guard(model)
    guarded.load_calibration(saved)
    folder = tmp_path / "calibrations"
    folder.mkdir()
    with pytest.raises(CalibrationError, match="it is a folder; expected a file path"):
        guarded.save_calibration(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrations"]


def test_saving_under_a_file_names_the_file(model, saved, tmp_path):
    """A path under a file was refused with "File exists", which named no culprit."""
    guarded = _guard(model)
    guarded.load_calibration(saved)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CalibrationError, match=r"its folder '.*notes\.txt' is a file; "
                                               r"expected a folder"):
        guarded.save_calibration(tmp_path / "notes.txt" / "digits.npz")


def _inflating(path, members, name, size):
    """``members`` as a zip at ``path`` with member ``name`` an ``.npy`` of ``size`` zero
    bytes of float64 data, deflated (about a thousandth of that on disk), written in
    pieces so the test itself never holds it."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (size // 8,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, raw in members.items():
            if member != name:
                archive.writestr(member, raw)
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w") as stream:
            stream.write(header.getvalue())
            zeros = bytes(1 << 20)
            for start in range(0, size, len(zeros)):
                stream.write(zeros[:min(len(zeros), size - start)])
    return path


def _claiming(path, members, name, size):
    """``members`` as a zip at ``path`` whose member ``name`` holds 16 bytes of float64 data
    while its header and the zip's directory declare ``size`` bytes (a damaged file)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (size // 8,)})
    raw = header.getvalue()
    _write(path, {**members, name: raw + bytes(16)})
    data = bytearray(path.read_bytes())
    entry = data.find(b"PK\x01\x02")  # the directory's entries (local headers: PK\3\4)
    while entry >= 0:
        length = int.from_bytes(data[entry + 28:entry + 30], "little")
        if data[entry + 46:entry + 46 + length] == name.encode():
            data[entry + 24:entry + 28] = (len(raw) + size).to_bytes(4, "little")
        entry = data.find(b"PK\x01\x02", entry + 4)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("craft", [_inflating, _claiming], ids=["zip bomb", "size lie"])
def test_a_file_declaring_far_more_than_it_holds_is_refused_in_bounded_memory(
        tmp_path, model, saved, craft):
    # each member under the 512 MiB cap, 2 GiB together, was allocated and inflated (twice
    # over: the zip member's readinto read the whole into a second buffer) before anything
    # could say that a few KB of file cannot hold a calibration of that size
    import tracemalloc

    from aimsec_core.detection import calibration_file

    members = _members(saved)
    size = 64 * 1024 * 1024
    path = craft(tmp_path / "bomb.npz", members, "density.precision.npy", size)
    assert path.stat().st_size * calibration_file.MAX_INFLATION < size  # a bomb, and
    assert calibration_file.INFLATION_ALLOWANCE < size  # larger than the allowance
    guard = _guard(model)
    tracemalloc.start()
    try:
        with pytest.raises(CalibrationError) as refused:
            guard.load_calibration(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < calibration_file.INFLATION_ALLOWANCE // 4
    message = str(refused.value)
    assert "bytes together" in message
    assert f"in a file of {path.stat().st_size} bytes" in message
    bound = max(calibration_file.INFLATION_ALLOWANCE,
                calibration_file.MAX_INFLATION * path.stat().st_size)
    assert f"at most {bound} are inflated" in message


def test_a_member_is_read_without_a_second_copy_of_it(tmp_path, model, saved):
    # the zip member's readinto read the whole member into bytes, then copied it
    import tracemalloc

    members = _members(saved)
    size = 8 * 1024 * 1024  # within the allowance: read, then refused for its shape
    path = _inflating(tmp_path / "big.npz", members, "density.precision.npy", size)
    guard = _guard(model)
    tracemalloc.start()
    try:
        with pytest.raises(CalibrationError):
            guard.load_calibration(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size * 3 // 2  # the member, a chunk, the file's small arrays
