"""A calibration file changed after it was written does not load: every file carries a
digest of its contents, and with AIMSEC_CALIBRATION_KEY set it is signed and only signed
files load. Before, a threshold edited to its largest plausible value (detection off) or a
byte flipped inside a stored array loaded without a word."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

import aimsec_core
from aimsec_core import CalibrationError
from aimsec_core.detection import calibration_integrity
from tests.cases import digits

pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402

KEY = "calibration-signing-secret"


@pytest.fixture(scope="module")
def model():
    x, y = digits()
    return LogisticRegression(max_iter=300).fit(x[:900], y[:900])


@pytest.fixture(scope="module")
def calibrated(model):
    x, _ = digits()
    guarded = aimsec_core.guard(model, sinks=[])
    guarded.calibrate(x[900:1300], fpr=0.05)
    return guarded


def _save(guarded, path, monkeypatch, key=None):
    with monkeypatch.context() as m:
        if key:
            m.setenv(calibration_integrity.KEY_VARIABLE, key)
        else:
            m.delenv(calibration_integrity.KEY_VARIABLE, raising=False)
        return guarded.save_calibration(path)


def _load(model, path):
    return aimsec_core.guard(model, sinks=[]).load_calibration(path)


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _rewrite(path, members) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, raw in members.items():
            archive.writestr(name, raw)


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _edit_meta(path, change) -> None:
    members = _members(path)
    meta = json.loads(np.load(io.BytesIO(members["__meta__.npy"])).tobytes().decode())
    change(meta)
    members["__meta__.npy"] = _npy(np.frombuffer(json.dumps(meta).encode(), np.uint8))
    _rewrite(path, members)


def test_a_file_loads_as_written(tmp_path, monkeypatch, model, calibrated):
    monkeypatch.delenv(calibration_integrity.KEY_VARIABLE, raising=False)
    path = _save(calibrated, tmp_path / "c.npz", monkeypatch)
    assert _load(model, path).id == aimsec_core.guard_of(calibrated).calibration.id
    members = _members(path)
    meta = json.loads(np.load(io.BytesIO(members["__meta__.npy"])).tobytes().decode())
    assert set(meta["integrity"]) == {"sha256"}  # no key: a digest, no signature


@pytest.mark.parametrize("change", [
    lambda meta: meta.__setitem__("threshold", 1e6),  # detection switched off
    lambda meta: meta.__setitem__("achieved_fpr", 0.0),
    lambda meta: meta["detectors"].pop(next(iter(meta["detectors"]))),
], ids=["threshold", "achieved_fpr", "a detector dropped"])
def test_edited_metadata_does_not_load(tmp_path, monkeypatch, model, calibrated, change):
    monkeypatch.delenv(calibration_integrity.KEY_VARIABLE, raising=False)
    path = _save(calibrated, tmp_path / "c.npz", monkeypatch)
    _edit_meta(path, change)
    with pytest.raises(CalibrationError, match="changed after it was written"):
        _load(model, path)


def _flip_one_score(members) -> None:
    name = next(n for n in members if n.startswith("suite.") and n.endswith("clean_scores.npy"))
    scores = np.load(io.BytesIO(members[name]))
    scores[0] = np.nextafter(scores[0], np.inf)  # one ulp: finite, in range
    members[name] = _npy(scores)


def _drop_a_member(members) -> None:
    members.pop(next(n for n in members if n.startswith("density.")))


@pytest.mark.parametrize("damage", [_flip_one_score, _drop_a_member],
                         ids=["a value moved by one ulp", "a member dropped"])
def test_damaged_arrays_do_not_load(tmp_path, monkeypatch, model, calibrated, damage):
    monkeypatch.delenv(calibration_integrity.KEY_VARIABLE, raising=False)
    path = _save(calibrated, tmp_path / "c.npz", monkeypatch)
    members = _members(path)
    damage(members)
    _rewrite(path, members)
    with pytest.raises(CalibrationError, match="sha256 digest does not match"):
        _load(model, path)


def test_with_a_key_only_files_signed_with_it_load(tmp_path, monkeypatch, model, calibrated):
    signed = _save(calibrated, tmp_path / "signed.npz", monkeypatch, key=KEY)
    unsigned = _save(calibrated, tmp_path / "unsigned.npz", monkeypatch)
    other = _save(calibrated, tmp_path / "other.npz", monkeypatch, key="another-signing-key")
    assert KEY not in signed.read_bytes().decode("latin-1")  # the key is never written
    monkeypatch.setenv(calibration_integrity.KEY_VARIABLE, KEY)
    assert _load(model, signed).id == aimsec_core.guard_of(calibrated).calibration.id
    with pytest.raises(CalibrationError, match="is not signed"):
        _load(model, unsigned)
    with pytest.raises(CalibrationError, match="signed with another key"):
        _load(model, other)
    # an attacker without the key who edits the threshold and rewrites the plain digest
    forged = _save(calibrated, tmp_path / "forged.npz", monkeypatch, key=KEY)

    def lower(meta):
        meta["threshold"] = 1e6
        digest = calibration_integrity._digests(meta, _arrays(forged), None)["sha256"]
        meta["integrity"]["sha256"] = digest
    _edit_meta(forged, lower)
    with pytest.raises(CalibrationError, match="hmac_sha256 digest does not match"):
        _load(model, forged)


def test_without_a_key_a_signed_file_loads_on_its_digest(tmp_path, monkeypatch, model,
                                                          calibrated):
    signed = _save(calibrated, tmp_path / "signed.npz", monkeypatch, key=KEY)
    monkeypatch.delenv(calibration_integrity.KEY_VARIABLE, raising=False)
    assert _load(model, signed).id == aimsec_core.guard_of(calibrated).calibration.id


def test_a_file_from_before_digests_loads_without_a_key_only(tmp_path, monkeypatch, model,
                                                              calibrated):
    monkeypatch.delenv(calibration_integrity.KEY_VARIABLE, raising=False)
    path = _save(calibrated, tmp_path / "old.npz", monkeypatch)
    _edit_meta(path, lambda meta: meta.pop("integrity"))
    assert _load(model, path).id == aimsec_core.guard_of(calibrated).calibration.id
    monkeypatch.setenv(calibration_integrity.KEY_VARIABLE, KEY)
    with pytest.raises(CalibrationError, match="carries no signature"):
        _load(model, path)


def _arrays(path) -> dict[str, np.ndarray]:
    members = _members(path)
    return {name[:-4]: np.load(io.BytesIO(raw)) for name, raw in members.items()
            if name != "__meta__.npy"}


def test_nan_in_an_unchecked_field_is_refused_as_a_calibration_error(
        tmp_path, monkeypatch, model, calibrated):
    # NaN in a field no check reads (here a detector's config) used to pass the field
    # checks and then crash the digest with a raw ValueError (strict JSON has no NaN)
    monkeypatch.delenv(calibration_integrity.KEY_VARIABLE, raising=False)
    path = _save(calibrated, tmp_path / "c.npz", monkeypatch)
    _edit_meta(path, lambda meta: next(iter(meta["detectors"].values()))["config"]
               .__setitem__("extra", float("nan")))
    with pytest.raises(CalibrationError, match="NaN or Infinity"):
        _load(model, path)


@pytest.mark.parametrize("recorded", ["\u00e9" * 64, "\udce9"], ids=["non-ascii", "surrogate"])
def test_a_non_ascii_signature_is_refused_as_a_calibration_error(
        tmp_path, monkeypatch, model, calibrated, recorded):
    # hmac.compare_digest raises TypeError on non-ASCII text
    path = _save(calibrated, tmp_path / "c.npz", monkeypatch, key=KEY)
    members = _members(path)
    meta = json.loads(np.load(io.BytesIO(members["__meta__.npy"])).tobytes().decode())
    meta["integrity"]["hmac_sha256"] = recorded
    text = json.dumps(meta)  # ASCII escapes: a lone surrogate survives as \udce9
    members["__meta__.npy"] = _npy(np.frombuffer(text.encode(), np.uint8))
    _rewrite(path, members)
    monkeypatch.setenv(calibration_integrity.KEY_VARIABLE, KEY)
    with pytest.raises(CalibrationError, match="hex text"):
        _load(model, path)


def test_a_key_set_but_empty_is_an_error_not_no_key(tmp_path, monkeypatch, model, calibrated):
    # an empty secret (a deployment whose secret did not arrive) used to mean "no key":
    # unsigned files loaded and saved files went unsigned, silently
    unsigned = _save(calibrated, tmp_path / "u.npz", monkeypatch)
    monkeypatch.setenv(calibration_integrity.KEY_VARIABLE, "")
    with pytest.raises(CalibrationError, match="set but empty"):
        _load(model, unsigned)
    with pytest.raises(CalibrationError, match="set but empty"):
        calibrated.save_calibration(tmp_path / "v.npz")


@pytest.mark.parametrize("key", ["k", " " * 3, "fifteen-bytes!!"], ids=["one", "spaces", "15"])
def test_a_key_too_short_to_keep_a_secret_is_an_error(tmp_path, monkeypatch, model,
                                                      calibrated, key):
    # a one-byte key signed as readily as a long one, though anyone could find it by
    # trying 256 keys: at least 16 bytes, as the client-key secret already asks
    unsigned = _save(calibrated, tmp_path / "u.npz", monkeypatch)
    monkeypatch.setenv(calibration_integrity.KEY_VARIABLE, key)
    with pytest.raises(CalibrationError, match="at least 16 bytes"):
        calibrated.save_calibration(tmp_path / "v.npz")
    with pytest.raises(CalibrationError, match="at least 16 bytes"):
        _load(model, unsigned)


def test_a_non_ascii_key_signs_and_verifies(tmp_path, monkeypatch, model, calibrated):
    path = _save(calibrated, tmp_path / "c.npz", monkeypatch,
                 key="cl\u00e9-\u79d8\u5bc6-de-signature")
    monkeypatch.setenv(calibration_integrity.KEY_VARIABLE, "cl\u00e9-\u79d8\u5bc6-de-signature")
    assert _load(model, path).id == aimsec_core.guard_of(calibrated).calibration.id
    monkeypatch.setenv(calibration_integrity.KEY_VARIABLE, "cle-\u79d8\u5bc6-de-signature")
    with pytest.raises(CalibrationError, match="signed with another key"):
        _load(model, path)


@pytest.mark.parametrize("recorded", [{}, {"hmac_sha256": "0" * 64}], ids=["empty", "hmac only"])
def test_an_integrity_field_without_its_digest_does_not_load(
        tmp_path, monkeypatch, model, calibrated, recorded):
    # without a key such a field used to skip every comparison
    monkeypatch.delenv(calibration_integrity.KEY_VARIABLE, raising=False)
    path = _save(calibrated, tmp_path / "c.npz", monkeypatch)
    _edit_meta(path, lambda meta: meta.__setitem__("integrity", recorded))
    with pytest.raises(CalibrationError, match="no sha256 digest"):
        _load(model, path)
