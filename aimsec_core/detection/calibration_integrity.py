"""Integrity of a calibration file: a digest of everything it holds, signed where a key is set.

A calibration decides what the guard lets through, so a file changed after it was written
must not load. Every file gets a SHA-256 digest of its metadata (canonical JSON, without
the digests) and of each array member (name, dtype, shape, bytes, in name order): a byte
flipped on disk, a member dropped or a threshold edited no longer matches. A digest alone
stops accidents, not an attacker, who can write a matching one; with
``AIMSEC_CALIBRATION_KEY`` set (a secret shared by whoever writes and whoever loads
calibrations) files are also signed with HMAC-SHA256 (RFC 2104) under that key, and a
guard with the key set loads only files signed with it. The key is never written or
logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

import numpy as np

from ..config import MIN_SECRET_BYTES
from ..errors import CalibrationError

FIELD = "integrity"
KEY_VARIABLE = "AIMSEC_CALIBRATION_KEY"


def _key() -> bytes | None:
    """The key's bytes as the environment holds them (``os.fsencode``: a key that is not
    valid UTF-8 keeps its bytes); ``None`` where the variable is unset. Set but empty (a
    secret that did not arrive) is an error, not "no key": signing must not fail open;
    so is a key shorter than :data:`~aimsec_core.config.MIN_SECRET_BYTES`."""
    raw = os.environ.get(KEY_VARIABLE)
    if raw is None:
        return None
    if not raw:
        raise CalibrationError(f"{KEY_VARIABLE} is set but empty; set the signing key, or "
                               "unset the variable to use calibrations without signatures")
    key = os.fsencode(raw)
    if len(key) < MIN_SECRET_BYTES:  # a guessable key signs nothing an attacker can't
        raise CalibrationError(
            f"{KEY_VARIABLE} must be at least {MIN_SECRET_BYTES} bytes; received {len(key)} "
            "bytes. Generate one with `python -c 'import secrets; "
            "print(secrets.token_hex(32))'`")
    return key


def _feed(digest: Any, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    body = {k: v for k, v in meta.items() if k != FIELD}
    digest.update(json.dumps(body, sort_keys=True, allow_nan=False).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(memoryview(array).cast("B") if array.size else b"")


def _digests(meta: dict[str, Any], arrays: dict[str, np.ndarray],
             key: bytes | None) -> dict[str, str]:
    plain = hashlib.sha256()
    _feed(plain, meta, arrays)
    found = {"sha256": plain.hexdigest()}
    if key is not None:
        signed = hmac.new(key, digestmod=hashlib.sha256)
        _feed(signed, meta, arrays)
        found["hmac_sha256"] = signed.hexdigest()
    return found


def seal(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """``meta`` with its ``integrity`` field: the digest, and the signature where
    ``AIMSEC_CALIBRATION_KEY`` is set."""
    return {**meta, FIELD: _digests(meta, arrays, _key())}


def verify(meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Any) -> None:
    """Raise :class:`CalibrationError` unless the file at ``path`` is as it was written:
    its digest matches (files from before digests carry none and pass), and where
    ``AIMSEC_CALIBRATION_KEY`` is set, it is signed under that key."""
    key = _key()
    recorded = meta.get(FIELD)
    if recorded is None and key is None:
        return
    if not isinstance(recorded, dict) or not all(  # compare_digest takes ASCII text only
            isinstance(v, str) and v.isascii() for v in recorded.values()):
        raise CalibrationError(
            f"{path} carries no signature" if recorded is None else
            f"{path}: calibration field 'integrity' must map digest names to hex text")
    if "sha256" not in recorded:  # every file written since digests carries one
        raise CalibrationError(f"{path}: calibration field 'integrity' holds no sha256 "
                               "digest")
    if key is not None and "hmac_sha256" not in recorded:
        raise CalibrationError(
            f"{path} is not signed; {KEY_VARIABLE} is set, so only calibrations signed "
            "with it are loaded: calibrate again (or save it again) with the key set")
    found = _digests(meta, arrays, key)
    for name in ("sha256", "hmac_sha256"):
        if name in recorded and name in found and not hmac.compare_digest(
                recorded[name], found[name]):
            raise CalibrationError(
                f"{path} was changed after it was written (its {name} digest does not "
                "match its contents" + (", or it was signed with another key" if
                                        name == "hmac_sha256" else "") + ")")
