"""The calibration file: one ``.npz`` (a zip of ``.npy`` members, never pickle) holding a
JSON document (``__meta__``) and the detectors' arrays.

A calibration file is untrusted input: it decides what the guard lets through. Reading
one therefore opens only the members the metadata names for known detectors, checks each
member's declared size against a cap, and their sizes together against what a file of its
size can hold (:data:`MAX_INFLATION`), before anything is decompressed, reads arrays
without pickle and only where the array header's shape matches the member's size, checks
the metadata's types and values (finite thresholds, sane counts), and checks the file's
digest (and signature, where ``AIMSEC_CALIBRATION_KEY`` is set:
:mod:`.calibration_integrity`) before any of it is used. Every problem is a
:class:`CalibrationError`.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ascii_number
from ..errors import CalibrationError
from ..files import open_regular
from .calibration_integrity import seal, verify

FORMAT = "aimsec-calibration/1"
META = "__meta__"
#: Largest member read (bytes, uncompressed); raise it with
#: ``AIMSEC_CALIBRATION_MAX_BYTES`` for detectors of very wide inputs.
MAX_MEMBER_BYTES = 512 * 1024 * 1024
#: The members read together may declare this many times the member cap (a default
#: calibration of 224x224x3 images holds about 1.2 GB): each one under the cap, a few MB of
#: zip-compressed zeros made the loader allocate and inflate 512 MiB per member it names.
MEMBERS_TOTAL_FACTOR = 4
MAX_META_BYTES = 1024 * 1024
#: The array members read may inflate to at most this many times the file's own size
#: (bytes on disk), or to :data:`INFLATION_ALLOWANCE`, whichever is more. What a
#: calibration holds in bulk is float64 learnt from data: random projections of wide
#: inputs (width x 256), the robust detector's weights (width x hidden), neighbour points
#: (up to 100,000 x 1,024), precision matrices; deflate shrinks those about 1.05 times
#: (projections, weights), 5 to 15 times (8-bit images) and at most about 50 times (sparse
#: 0/1 images), while a deflated run of zeros shrinks about 1,030 times: a few KB of file
#: declaring hundreds of MB is a zip bomb or a damaged file, refused before anything is
#: allocated or inflated, instead of up to the 2 GiB the member caps allow.
MAX_INFLATION = 100
#: What the members read may inflate to whatever the file's size: small calibrations of
#: repetitive arrays (integer labels, clean scores with ties) compress beyond
#: :data:`MAX_INFLATION` times, and 16 MiB is more than a calibration of narrow inputs
#: holds in all (a default one of 8x8 digits: about 330 KB).
INFLATION_ALLOWANCE = 16 * 1024 * 1024
#: Bytes inflated per read of a member: the array's buffer is all it holds in memory.
READ_CHUNK = 1024 * 1024
#: Largest plausible threshold: a suspicion is the sum of two rarities (-log10 p-values
#: of clean scores, about 3 each for a thousand samples); far beyond it nothing is flagged.
MAX_THRESHOLD = 1e6


def write(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    """Write the calibration file at ``path`` whole: into a new file beside it (created
    as any new file, under the process's umask), then renamed over ``path``. A reader
    meanwhile sees the old file or the new one, never a half-written archive, and two
    writers at once leave one of the two files, not a mix."""
    try:
        meta = seal(meta, arrays)
        encoded = np.frombuffer(json.dumps(meta, allow_nan=False).encode(), dtype=np.uint8)
    except ValueError as exc:  # a NaN or infinity: strict JSON has none, nor would a load
        raise CalibrationError(f"cannot write the calibration file {path}: its metadata "
                               f"holds a NaN or infinite number ({exc}); expected finite "
                               "thresholds and tails") from exc
    try:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # "File exists" named no culprit: the folder is a file
            raise CalibrationError(f"cannot write the calibration file {str(path)!r:.200}: "
                                   f"its folder {str(path.parent)!r:.200} is a file; "
                                   "expected a folder (or a path where one can be made)"
                                   ) from None
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez_compressed(out, **{META: encoded}, **arrays)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path, no file name
        raise CalibrationError(f"cannot write the calibration file {str(path)!r:.200}: "
                               f"{getattr(exc, 'strerror', None) or exc}; expected a "
                               "writable file path in an existing or creatable "
                               "folder") from exc
    return path


def read(path: str | Path, members_for: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(metadata, arrays)`` from the file at ``path``.

    ``members_for(meta)`` names the array members the metadata calls for; no other member
    is read. Raises :class:`CalibrationError` for anything that is not a well-formed
    calibration file within the size caps.
    """
    cap = _member_cap()
    try:
        # a FIFO here blocked forever and /dev/zero was read without end: regular files only
        opened = open_regular(Path(path))
    except ValueError as exc:  # not a regular file: the error names what it is
        raise CalibrationError(f"cannot open calibration file: {exc}") from exc
    except OSError as exc:  # missing, a folder, not allowed
        raise CalibrationError(f"cannot open calibration file {path}: "
                               f"{exc.strerror or exc}; expected a file that "
                               "save_calibration wrote") from exc
    try:
        with opened as stream, zipfile.ZipFile(stream) as archive:
            sizes = {info.filename: info.file_size for info in archive.infolist()}
            meta = _meta(_read_member(archive, META, sizes, MAX_META_BYTES), path)
            names = [name for name in members_for(meta) if f"{name}.npy" in sizes]
            _check_total(names, sizes, cap)
            _check_inflation(names, sizes, os.fstat(stream.fileno()).st_size)
            arrays = {name: _read_member(archive, name, sizes, cap) for name in names}
    except CalibrationError:
        raise
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError,
            NotImplementedError, RuntimeError,  # RuntimeError: encrypted members
            zlib.error) as exc:  # a corrupted deflate stream
        raise CalibrationError(f"cannot read calibration file {path}: it is not a readable "
                               f".npz archive ({type(exc).__name__}: {exc})") from exc
    verify(meta, arrays, path)
    return meta, arrays


def _member_cap() -> int:
    raw = os.environ.get("AIMSEC_CALIBRATION_MAX_BYTES")
    if not raw:
        return MAX_MEMBER_BYTES
    try:
        value = int(ascii_number(raw))
    except ValueError:
        value = 0
    if value <= 0:
        raise CalibrationError(f"AIMSEC_CALIBRATION_MAX_BYTES={raw!r}; expected a positive "
                               "number of bytes")
    return value


def _check_total(names: list[str], sizes: dict[str, int], cap: int) -> None:
    """Refuse, before any of them is inflated, a member that declares more than ``cap``
    bytes, and members that declare more together than :data:`MEMBERS_TOTAL_FACTOR`
    times that."""
    for name in names:
        _check_size(name, sizes[f"{name}.npy"], cap)
    total = sum(sizes[f"{name}.npy"] for name in names)
    if total > MEMBERS_TOTAL_FACTOR * cap:
        raise CalibrationError(
            f"the calibration file's {len(names)} members declare {total} bytes together; "
            f"at most {MEMBERS_TOTAL_FACTOR * cap} are read ({MEMBERS_TOTAL_FACTOR} times "
            "AIMSEC_CALIBRATION_MAX_BYTES, which raises the cap for trusted files)")


def _check_inflation(names: list[str], sizes: dict[str, int], file_bytes: int) -> None:
    """Refuse, before any of them is inflated, members that declare more bytes together
    than the file's ``file_bytes`` could hold as a calibration (:data:`MAX_INFLATION`,
    :data:`INFLATION_ALLOWANCE`): what the loader allocates and inflates stays within
    that bound, whatever the file declares."""
    total = sum(sizes[f"{name}.npy"] for name in names)
    bound = max(INFLATION_ALLOWANCE, MAX_INFLATION * file_bytes)
    if total > bound:
        raise CalibrationError(
            f"the calibration file's {len(names)} members declare {total} bytes together "
            f"in a file of {file_bytes} bytes; at most {bound} are inflated "
            f"({MAX_INFLATION} times the file's size, at least {INFLATION_ALLOWANCE}): a "
            "calibration's arrays compress far less, so this is a damaged file or a zip bomb")


def _check_size(name: str, size: int, cap: int) -> None:
    if size > cap:
        raise CalibrationError(
            f"member {name!r} declares {size} bytes; at most {cap} are read "
            "(AIMSEC_CALIBRATION_MAX_BYTES raises the cap for trusted files)")


def _read_member(archive: zipfile.ZipFile, name: str, sizes: dict[str, int],
                 cap: int) -> np.ndarray:
    member = f"{name}.npy"
    if member not in sizes:
        raise CalibrationError(f"the calibration file has no member {name!r}")
    _check_size(name, sizes[member], cap)
    with archive.open(member) as stream:  # yields at most the declared size
        shape, fortran, dtype = _npy_header(stream)
        if dtype.kind not in "biuf" or dtype.hasobject:
            raise CalibrationError(f"member {name!r} has dtype {dtype}; expected numbers")
        # The header's shape, not the member's size, sizes numpy's buffer: a member of a
        # few bytes claiming terabytes must be refused before anything is allocated.
        claimed = math.prod(shape) * dtype.itemsize
        if claimed != sizes[member] - stream.tell():
            raise CalibrationError(
                f"member {name!r} declares an array of shape {shape} ({claimed} bytes) but "
                f"holds {sizes[member] - stream.tell()} bytes of data")
        data = bytearray(claimed)  # writable, as read_array's arrays are
        got = _read_into(stream, data)
    if got != claimed:
        raise CalibrationError(f"member {name!r} ends early ({got} of {claimed} bytes)")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _read_into(stream: Any, data: bytearray) -> int:
    """Fill ``data`` from ``stream`` :data:`READ_CHUNK` bytes at a time; the bytes read.
    (A zip member's ``readinto`` reads the whole size asked for into a second buffer
    first, doubling what a member holds in memory.)"""
    view, got = memoryview(data), 0
    with view:
        while got < len(data):
            chunk = stream.read(min(READ_CHUNK, len(data) - got))
            if not chunk:
                break
            view[got:got + len(chunk)] = chunk
            got += len(chunk)
    return got


def _npy_header(stream: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from an ``.npy`` stream's header, the stream left
    at the first data byte."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"unsupported .npy format version {version}")


def _meta(raw: np.ndarray, path: str | Path) -> dict[str, Any]:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CalibrationError(f"{path}: the metadata member is not JSON text")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))  # NaN/Infinity: refused per field
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise CalibrationError(f"{path}: the metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CalibrationError(f"{path}: the metadata is a {type(meta).__name__}; expected "
                               "a JSON object")
    if meta.get("format") != FORMAT:
        raise CalibrationError(f"{path} is not an aimsec calibration (format "
                               f"{str(meta.get('format'))[:40]!r}; expected {FORMAT!r})")
    check_meta(meta)  # names the field where a checked field holds NaN or Infinity
    try:  # ... and none may appear anywhere else: the digest is over strict JSON
        json.dumps(meta, allow_nan=False)
    except ValueError as exc:
        raise CalibrationError(f"{path}: the metadata holds NaN or Infinity, which are not "
                               "JSON numbers") from exc
    return meta


def check_meta(meta: dict[str, Any]) -> None:
    """Types and ranges of every metadata field the guard relies on."""
    _number(meta, "threshold", low=0.0, high=MAX_THRESHOLD)  # a sum of two rarities
    _number(meta, "fpr_target", low=0.0, high=1.0, open_ends=True)
    _number(meta, "achieved_fpr", low=0.0, high=1.0)
    for key in ("fit_samples", "threshold_samples"):
        _count(meta, key)
    for key in ("samples", "reference_samples"):
        if key in meta:
            _count(meta, key)
    if not (meta.get("samples") or meta["threshold_samples"]):  # sets fpr_interval's n
        raise CalibrationError("calibration fields 'samples' and 'threshold_samples' are 0; "
                               "expected the number of clean samples calibrated on")
    if not isinstance(meta.get("sigmoid_output", False), bool):
        raise CalibrationError("calibration field 'sigmoid_output' must be true or false")
    top = meta.get("top")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise CalibrationError(f"calibration field 'top' is {top!r}; expected a positive "
                               "integer or null")
    for key in ("model", "framework", "created", "data_hash"):
        if not isinstance(meta.get(key), str):
            raise CalibrationError(f"calibration field {key!r} must be a string; "
                                   f"received {type(meta.get(key)).__name__}")
    value_range = meta.get("value_range")
    if (not isinstance(value_range, list) or len(value_range) != 2
            or not all(_is_finite(v) for v in value_range) or value_range[0] > value_range[1]):
        raise CalibrationError(f"calibration field 'value_range' is {value_range!r:.80}; "
                               "expected [low, high], finite, low <= high")
    shape = meta.get("sample_shape")
    if not _is_shape(shape) or math.prod(shape) > 1 << 32:
        raise CalibrationError(f"calibration field 'sample_shape' is {shape!r:.80}; expected "
                               "a list of at most 8 positive sizes")
    _check_input_shapes(meta.get("input_shapes", []), shape)
    detectors = meta.get("detectors")
    if not isinstance(detectors, dict) or not detectors or len(detectors) > 32:
        raise CalibrationError("calibration field 'detectors' must map 1 to 32 detector "
                               "names to their settings")
    for name, info in detectors.items():
        if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
            raise CalibrationError(f"detector {name[:40]!r}: expected an object with a "
                                   "'config' object")
        tail = info.get("tail")
        if not (_is_finite(tail) and tail > 0):
            raise CalibrationError(f"detector {name[:40]!r}: 'tail' is {tail!r:.40}; "
                                   "expected a finite positive number")


def _check_input_shapes(shapes: Any, sample_shape: list[int]) -> None:
    """``input_shapes`` (a model of several inputs: each one's per-sample shape) must be
    empty, or 2 to 64 lists of at most 8 positive sizes whose values make the joined row
    of ``sample_shape``."""
    if isinstance(shapes, list) and not shapes:
        return
    if (not isinstance(shapes, list) or not 2 <= len(shapes) <= 64
            or not all(_is_shape(s) for s in shapes)
            or len(sample_shape) != 1
            or sum(math.prod(s) for s in shapes) != sample_shape[0]):
        raise CalibrationError(f"calibration field 'input_shapes' is {shapes!r:.80}; "
                               "expected 2 to 64 per-input sample shapes whose values "
                               f"make the joined sample_shape {sample_shape!r:.40}")


def _is_shape(value: Any) -> bool:
    """A list of at most 8 positive sizes, each at most 2**24."""
    return isinstance(value, list) and len(value) <= 8 and all(
        isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 24 for d in value)


def _is_finite(value: Any) -> bool:
    """A JSON number that is a finite float (an integer past float range, such as
    ``10**400``, is valid JSON but no float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number(meta: dict[str, Any], key: str, *, finite: bool = True, low: float | None = None,
            high: float | None = None, open_ends: bool = False) -> None:
    value = meta.get(key)
    ok = _is_finite(value)
    if ok and low is not None:
        ok = value > low if open_ends else value >= low
    if ok and high is not None:
        ok = value < high if open_ends else value <= high
    if not ok:
        bounds = "" if low is None else f" in {'(' if open_ends else '['}{low}, {high}" \
            f"{')' if open_ends else ']'}"
        raise CalibrationError(f"calibration field {key!r} is {value!r:.40}; expected a "
                               f"finite number{bounds}")


def _count(meta: dict[str, Any], key: str) -> None:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1 << 40:
        raise CalibrationError(f"calibration field {key!r} is {value!r:.40}; expected a "
                               "non-negative integer")
