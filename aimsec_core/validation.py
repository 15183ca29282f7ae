"""Input validation: turn one call's raw inputs into arrays and findings.

Cheap checks run first and a check that makes the input unusable stops the rest. The
content checks read each sample once for its minimum and maximum, which decide finiteness
and range together; the structural checks run only when configured.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .adapter import Adapter
from .arrays import (declared_size, dtype_kind, dtype_name, host_view, largest_jump, namespace,
                     to_host)
from .signature import Constraints, InputSpec
from .verdict import Finding

_NUMERIC_KINDS = frozenset("fiu")
_KIND_NAMES = {"b": "bool", "c": "complex", "O": "object", "U": "str", "S": "bytes",
               "V": "void", "M": "datetime", "m": "timedelta"}


_NO_FLAGS = np.zeros(0, dtype=bool)
_NO_FLAGS.flags.writeable = False  # shared default: never written to


@dataclass(frozen=True)
class Refused:
    """Put in place of an input an adapter cannot hand to the model (a name missing from
    the call, a name the model does not know): validation records ``reason`` as a
    blocking finding of ``check`` for that input."""

    reason: str
    check: str = "format"
    received: Any = None


@dataclass
class Validated:
    """Arrays ready for detectors and the findings validation raised on the way."""

    arrays: dict[str, Any] = field(default_factory=dict)
    #: the same arrays as zero-copy numpy views where they live on the host
    views: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    batch_size: int = 0
    flags: np.ndarray = field(default_factory=lambda: _NO_FLAGS)

    @property
    def blocked(self) -> bool:
        return any(f.blocking for f in self.findings)


def validate(raw: Mapping[str, Any], adapter: Adapter, specs: Mapping[str, InputSpec | None],
             constraints: Constraints) -> Validated:
    out = Validated()
    for name, value in raw.items():
        array = _coerce(name, value, adapter, specs.get(name), constraints, out)
        if array is None:
            return out
        if not _check_format(name, array, specs.get(name), out):
            return out
        out.arrays[name] = array
    batched = _batched_inputs(out.arrays, specs)
    sizes = {name: _batch_size(out.arrays[name], specs.get(name)) for name in batched}
    if len(set(sizes.values())) > 1:
        _block(out, "shape", f"inputs disagree on the batch size: {sizes}; expected one "
               "batch size shared by every input", expected="equal batch sizes", received=sizes)
        return out
    out.batch_size = next(iter(sizes.values()), 1)
    out.flags = np.zeros(out.batch_size, dtype=bool)
    total = sum(math.prod(a.shape) for a in out.arrays.values())
    if constraints.max_size is not None and total > constraints.max_size:
        _add(out, Finding("size", f"input has {total} elements; expected at most "
                          f"{constraints.max_size} (max_size)",
                          expected=constraints.max_size, received=total))
    for name, array in out.arrays.items():
        view = host_view(array)
        out.views[name] = array = array if view is None else view
        own = constraints.for_input(name)  # the call's constraints with this input's own
        if name in batched:
            _check_content(name, array, out.batch_size, own, out)
        else:  # a call-level input (no batch axis): its findings concern the whole call
            whole = Validated(flags=np.zeros(1, dtype=bool))
            _check_content(name, array, 1, own, whole)
            for finding in whole.findings:
                _add(out, dataclasses.replace(finding, samples=()))
    return out


def _coerce(name: str, value: Any, adapter: Adapter, spec: InputSpec | None,
            constraints: Constraints, out: Validated) -> Any | None:
    """``value`` as an array, or ``None`` after recording why it cannot be one."""
    if isinstance(value, Refused):
        _block(out, value.check, f"input {name!r}: {value.reason}",
               expected=spec.describe() if spec else adapter.input_types,
               received=value.received)
        return None
    if value is None:
        _block(out, "null", f"input {name!r} is None; expected {adapter.input_types}",
               expected=adapter.input_types, received=None)
        return None
    try:
        array = adapter.native(value)
    except Exception as exc:  # an adapter refusing a value is a format finding, not a crash
        _block(out, "format", f"input {name!r} could not be read as {adapter.input_types}: "
               f"{exc}", expected=adapter.input_types, received=type(value).__name__)
        return None
    if array is not None:
        if isinstance(array, np.ndarray) and type(array) is not np.ndarray:
            # masked arrays and other subclasses: check the values the model will read
            array = np.asarray(array)
        return array
    is_sequence = isinstance(value, (list, tuple))
    if not (adapter.capabilities.host_sequences and (is_sequence or np.isscalar(value))):
        _block(out, "format", f"input {name!r} is a {type(value).__name__}; expected "
               f"{adapter.input_types}", expected=adapter.input_types,
               received=type(value).__name__)
        return None
    limit = constraints.max_size
    if is_sequence and limit is not None:
        declared = declared_size(value, limit)
        if declared > limit:
            _block(out, "size", f"input {name!r} declares more than {limit} elements; "
                   f"refused before conversion (max_size={limit})", expected=limit,
                   received=f">{limit}")
            return None
    try:
        if spec is not None and spec.strict_dtype and spec.dtype:
            try:  # Python numbers become the declared dtype, as the framework would do
                return np.asarray(value, dtype=spec.dtype)
            except (ValueError, TypeError, OverflowError):
                pass  # not numbers of that kind: convert as is and let the dtype check say so
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        _block(out, "format", f"input {name!r} is a ragged or non-numeric nested sequence "
               f"({exc}); expected a rectangular array of numbers",
               expected="rectangular numeric array", received=type(value).__name__)
        return None


def _check_format(name: str, array: Any, spec: InputSpec | None, out: Validated) -> bool:
    shape = tuple(array.shape)
    if 0 in shape:
        _block(out, "empty", f"input {name!r} is empty (shape {shape}); expected at least "
               "one sample with at least one value", expected="non-empty", received=shape)
        return False
    kind = dtype_kind(array)
    received = dtype_name(array)
    if kind not in _NUMERIC_KINDS and not (spec is not None and spec.dtype == received):
        _block(out, "dtype", f"input {name!r} has dtype {received} "
               f"({_KIND_NAMES.get(kind, kind)}); expected real numbers (float or int)",
               expected=spec.dtype if spec and spec.dtype else "real numeric",
               received=received)
        return False
    if spec is None:
        return True
    if spec.dtype and spec.strict_dtype and received != spec.dtype:
        _block(out, "dtype", f"input {name!r} has dtype {received}; the model declares "
               f"{spec.dtype}. Convert it first (e.g. x.astype('{spec.dtype}'))",
               expected=spec.dtype, received=received)
        return False
    if spec.shape is not None:
        expected = spec.shape
        fits = len(shape) == len(expected) and all(
            e is None or e == r for e, r in zip(expected, shape))
        if not fits:
            hint = (" For a single sample, add the batch axis (x.reshape(1, -1) or x[None])."
                    if len(shape) == len(expected) - 1 else "")
            _block(out, "shape", f"input {name!r} has shape {shape}; the model expects "
                   f"{spec.describe()}.{hint}", expected=spec.describe(), received=shape)
            return False
    return True


def _batched_inputs(arrays: Mapping[str, Any], specs: Mapping[str, InputSpec | None]
                    ) -> list[str]:
    """Inputs that carry the batch axis. Where some inputs declare a free first dimension,
    inputs with a fixed one (or none at all) are per-call parameters and stay out; where
    some inputs are declared, undeclared ones (a torch model's extra arguments) stay out."""
    ranked = [name for name, a in arrays.items() if a.ndim > 0]
    if len(ranked) > 1 and any(specs.get(name) is not None for name in ranked):
        ranked = [name for name in ranked if specs.get(name) is not None]
    free = [name for name in ranked if (spec := specs.get(name)) is None
            or spec.shape is None or not spec.shape or spec.shape[0] is None]
    return free or ranked


def _batch_size(array: Any, spec: InputSpec | None) -> int:
    if spec is None and array.ndim <= 1:
        return 1  # no declared batch axis: a vector or scalar is one sample
    return int(array.shape[0])


def _extremes(xp: Any, flat: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample minimum and maximum, as host arrays; NaN propagates into both."""
    if xp is np:
        return flat.min(axis=1), flat.max(axis=1)  # methods skip numpy's dispatch layer
    return to_host(xp.min(flat, axis=1)), to_host(xp.max(flat, axis=1))


def _check_content(name: str, array: Any, n: int, c: Constraints, out: Validated) -> None:
    xp = namespace(array)
    flat = xp.reshape(array, (n, -1))
    if dtype_kind(array) == "f" or c.min_value is not None or c.max_value is not None:
        lows = highs = None
        # .item(): Python ints for integer inputs, so bounds compare exactly beyond 2**53
        if xp is np:  # one min and one max over everything; per sample only if needed
            low, high = flat.min().item(), flat.max().item()
        else:  # on a device: per-sample summaries are all that come back to the host
            lows, highs = _extremes(xp, flat)
            low, high = lows.min().item(), highs.max().item()
        within = (math.isfinite(low) and math.isfinite(high)
                  and (c.min_value is None or low >= c.min_value)
                  and (c.max_value is None or high <= c.max_value))
        if not within:  # the common clean case stops here, without per-sample masks
            if lows is None:
                lows, highs = _extremes(xp, flat)
            _report_extremes(name, lows, highs, c, out)  # integers stay exact
    if c.max_gradient is not None:
        jumps = largest_jump(array, n)
        steep = jumps > c.max_gradient
        if steep.any():
            _add(out, Finding(
                "max_gradient", f"input {name!r}, {_which(steep)}: neighbouring values "
                f"jump by up to {np.nanmax(jumps):.6g}; expected at most "
                f"{c.max_gradient} (max_gradient)", samples=_indices(steep),
                expected=c.max_gradient, received=float(np.nanmax(jumps))))
    if c.min_sparsity is not None:
        density = to_host(xp.sum(xp.astype(flat != 0, xp.float32), axis=1)) / flat.shape[1]
        sparse = density < c.min_sparsity
        if sparse.any():
            _add(out, Finding(
                "min_sparsity", f"input {name!r}, {_which(sparse)}: only "
                f"{density.min():.3g} of values are non-zero; expected at least "
                f"{c.min_sparsity} (min_sparsity)", samples=_indices(sparse),
                expected=c.min_sparsity, received=float(density.min())))


def _report_extremes(name: str, lows: np.ndarray, highs: np.ndarray, c: Constraints,
                     out: Validated) -> None:
    finite = np.isfinite(lows) & np.isfinite(highs)
    if not finite.all():
        _add(out, Finding("finite", f"input {name!r}, {_which(~finite)}: NaN or infinite "
                          "values; expected finite numbers", samples=_indices(~finite),
                          expected="finite", received="NaN/Inf"))
    outside = np.zeros(len(lows), dtype=bool)
    if c.min_value is not None:
        outside |= finite & (lows < c.min_value)
    if c.max_value is not None:
        outside |= finite & (highs > c.max_value)
    if outside.any():
        i = int(np.argmax(outside))
        _add(out, Finding(
            "range", f"input {name!r}, {_which(outside)}: values span "
            f"[{lows[i]:.6g}, {highs[i]:.6g}] (sample {i}); expected every value in "
            f"[{_fmt(c.min_value, '-inf')}, {_fmt(c.max_value, 'inf')}]",
            samples=_indices(outside), expected=(c.min_value, c.max_value),
            received=(float(lows[i]), float(highs[i]))))


def _add(out: Validated, finding: Finding) -> None:
    out.findings.append(finding)
    if finding.samples and len(out.flags):
        out.flags[list(finding.samples)] = True
    elif len(out.flags):
        out.flags[:] = True


def _block(out: Validated, check: str, reason: str, *, expected: Any, received: Any) -> None:
    out.findings.append(Finding(check, reason, expected=expected, received=received,
                                blocking=True))


def _indices(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.flatnonzero(mask))


def _which(mask: np.ndarray, shown: int = 5) -> str:
    """``"sample 3"`` or ``"samples 0, 4, 9 and 12 more"``."""
    idx = np.flatnonzero(mask)
    if len(idx) == 1:
        return f"sample {idx[0]}"
    listed = ", ".join(str(i) for i in idx[:shown])
    more = f" and {len(idx) - shown} more" if len(idx) > shown else ""
    return f"samples {listed}{more}"


def _fmt(bound: float | None, unbounded: str) -> str:
    return unbounded if bound is None else f"{bound:g}"
