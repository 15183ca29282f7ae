"""Checks for detector settings, which also arrive from calibration files (untrusted).

Each raises :class:`~aimsec_core.errors.ConfigurationError` naming the setting, the range
it must lie in and what was received.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigurationError


def whole(name: str, value: Any, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigurationError(f"detector setting {name!r} must be an integer in "
                                 f"[{low}, {high}]; received {value!r}")
    if not low <= value <= high:
        raise ConfigurationError(f"detector setting {name!r} must lie in [{low}, {high}]; "
                                 f"received {value}")
    return int(value)


def real(name: str, value: Any, low: float, high: float, *, open_low: bool = False) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ConfigurationError(f"detector setting {name!r} must be a number; "
                                 f"received {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an integer past float range (a file's JSON may hold one)
        value = math.inf if value > 0 else -math.inf
    below = value <= low if open_low else value < low
    if not math.isfinite(value) or below or value > high:
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise ConfigurationError(f"detector setting {name!r} must lie in {interval}; "
                                 f"received {value}")
    return value


def image_shape(value: Any) -> tuple[int, int] | None:
    """``None`` or two positive sizes, as a tuple."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigurationError(f"detector setting 'image_shape' must be two sizes "
                                 f"(height, width); received {value!r}")
    return (whole("image_shape", value[0], 1, 1 << 16), whole("image_shape", value[1], 1, 1 << 16))


def as_images(x: np.ndarray, shape: tuple[int, int], *, channels: bool) -> np.ndarray:
    """Flat samples ``x`` (n, d) as images of ``shape`` (``(n, c, h, w)`` with
    ``channels``, else ``(n, h, w)``); raises :class:`ConfigurationError` when ``d`` values
    do not make such images (an ``image_shape`` that does not fit the data)."""
    per_sample = x[0].size if len(x) else 0
    pixels = shape[0] * shape[1]
    fits = per_sample % pixels == 0 if channels else per_sample == pixels
    if not fits:
        wanted = f"a multiple of {pixels}" if channels else str(pixels)
        raise ConfigurationError(f"detector setting 'image_shape' {shape} does not fit samples "
                                 f"of {per_sample} values; expected {wanted} values per sample")
    return x.reshape(len(x), -1, *shape) if channels else x.reshape(len(x), *shape)


#: Largest magnitude a detector's stored value may have: the detectors square and sum
#: these (distances, variances), which must stay finite in float64 (about 1.8e308).
MAX_MAGNITUDE = 1e150
#: Largest finite float32 (detectors computing in float32, models reading it).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def array(state: dict[str, Any], key: str, ndim: int, *, rows: int | None = None,
          columns: int | None = None, finite: bool = True) -> np.ndarray:
    """``state[key]`` as a real-valued numpy array of ``ndim`` dimensions (and the given
    leading/trailing sizes), finite and within :data:`MAX_MAGNITUDE`; ``ValueError``
    naming the member otherwise."""
    if key not in state:
        raise ValueError(f"member {key!r} is missing")
    value = np.asarray(state[key])
    if value.dtype.kind not in "fiu" or value.ndim != ndim:
        raise ValueError(f"member {key!r} must be a {ndim}-d real array; received "
                         f"dtype {value.dtype} with shape {value.shape}")
    if rows is not None and value.shape[0] != rows:
        raise ValueError(f"member {key!r} has {value.shape[0]} rows; expected {rows}")
    if columns is not None and value.shape[-1] != columns:
        raise ValueError(f"member {key!r} has width {value.shape[-1]}; expected {columns}")
    if finite and value.size and not np.isfinite(value).all():
        raise ValueError(f"member {key!r} holds NaN or infinite values")
    if finite and value.dtype.kind == "f":
        bounded(key, value, MAX_MAGNITUDE, "the detectors square and sum these values, "
                "which must stay finite")
    return value


def bounded(key: str, value: np.ndarray, limit: float, why: str) -> None:
    """``ValueError`` naming member ``key`` when a value of ``value`` (a finite real array)
    exceeds ``limit`` in magnitude; ``why`` says what the limit protects."""
    if value.size:
        largest = float(np.abs(value, dtype=np.float64).max())
        if largest > limit:
            raise ValueError(f"member {key!r} holds a value of magnitude {largest:.3g}; "
                             f"expected at most {limit:.3g} ({why})")
