"""One call's audit line: bounded, escaped, without raw input unless opted in.

:func:`render` returns the line's body: an unclosed JSON object (the writer closes it with
the chain link, see :mod:`.chain`). Everything a client controls (identity, request id,
input names, error messages) is truncated and JSON-escaped (``\\n`` and control characters
as escapes; unpaired surrogates replaced), sample indices are a count and the first few,
and a line that would still exceed :data:`MAX_LINE_BYTES` is rendered again more tersely,
then minimally, so no call can write a line over the cap. The format is documented in the
README ("Reading the audit log").

Built by string assembly rather than ``json.dumps`` of a dict: this runs once per
prediction, and the fields are few and known.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from json import dumps
from json.encoder import encode_basestring_ascii as _quote  # type: ignore[attr-defined]
from typing import Any

from ..arrays import to_host
from ..sinks import CallRecord
from ..verdict import Finding

#: The most bytes any audit line takes, newline and chain link included.
MAX_LINE_BYTES = 8192
_LINK_BYTES = len(b',"prev":"') + 64 + len(b'"}\n')


@dataclass(frozen=True)
class _Limits:
    """How much of each unbounded field a line keeps (characters, items)."""

    name: int
    text: int
    error: int
    findings: int
    indices: int
    dims: int


_NORMAL = _Limits(name=256, text=256, error=512, findings=8, indices=10, dims=64)
_TERSE = _Limits(name=48, text=64, error=96, findings=3, indices=3, dims=8)


def render(event: CallRecord, *, version: str, include_inputs: bool,
           cap: int = MAX_LINE_BYTES) -> bytes:
    """The body of ``event``'s line, short enough that the closed line fits in ``cap``."""
    room = cap - _LINK_BYTES
    body = _render(event, version, include_inputs, _NORMAL, room)
    if len(body) <= room:
        return body
    body = _render(event, version, False, _TERSE, room)
    return body if len(body) <= room else _minimal(event, version)


def _render(event: CallRecord, version: str, include_inputs: bool, limits: _Limits,
            room: int) -> bytes:
    v = event.verdict
    parts = [
        '{"time":"', _iso(v.timestamp),
        '","model":', text(v.model, limits.name),
        ',"client":', text(v.client, limits.name),
        ',"request_id":', text(v.request_id, limits.name),
        ',"decision":"', event.outcome,
        '","input_hash":"', v.input_hash,
        '","input_type":', _maybe_text(v.input_type, limits.name),
        ',"shape":', _shape(v.shape, limits.dims),
        ',"dtype":', _maybe_text(v.dtype, limits.name),
        ',"batch_size":', str(v.batch_size),
        ',"flagged":', _flags(v.flags, limits.indices),
        ',"findings":', _findings(v.findings, limits, include_inputs),
        ',"latency_ms":', repr(round(event.latency_s * 1000, 4)),
    ]
    if event.error:
        parts += (',"error":', text(event.error, limits.error))
    if v.threshold is not None and v.scores.get("suspicion"):
        parts += (',"detection":', _detection(v.scores["suspicion"], v.threshold, v.fpr))
    if include_inputs and event.arrays:
        parts += (',"inputs":', _inputs(event.arrays, room // 2))
    parts += (',"version":', text(version, 32), ',"calibration":',
              _maybe_text(v.calibration_id, 80))
    return "".join(parts).encode("ascii")


def _minimal(event: CallRecord, version: str) -> bytes:
    """The last resort: fields of fixed size only (never above ~1 KB)."""
    v = event.verdict
    return ("".join((
        '{"time":"', _iso(v.timestamp), '","model":', text(v.model, 32),
        ',"client":', text(v.client, 32), ',"request_id":', text(v.request_id, 64),
        ',"decision":"', event.outcome, '","input_hash":"', v.input_hash[:64],
        '","batch_size":', str(v.batch_size),
        ',"flagged":', _flags(v.flags, 0), ',"findings":[]',
        ',"findings_omitted":', str(len(v.findings)),
        ',"latency_ms":', repr(round(event.latency_s * 1000, 4)),
        ',"version":', text(version, 32), ',"calibration":',
        _maybe_text(v.calibration_id, 80), ',"truncated":true'))).encode("ascii")


def text(value: str, limit: int) -> str:
    """``value`` as a JSON string literal of ASCII characters: at most ``limit``
    characters of it (then ``...[+N chars]``), control characters escaped, unpaired
    surrogates replaced by ``?``."""
    if len(value) <= limit and value.isascii():
        return _quote(value)
    return _quoted(value, limit)


def _quoted(value: str, limit: int) -> str:
    if len(value) > limit:
        value = f"{value[:limit]}...[+{len(value) - limit} chars]"
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    return _quote(value)


def _maybe_text(value: str | None, limit: int) -> str:
    return "null" if value is None else text(value, limit)


def _shape(shape: Sequence[int] | None, dims: int) -> str:
    if shape is None:
        return "null"
    return "[" + ",".join([str(int(d)) for d in shape[:dims]]) + "]"


def _indices(flagged: Sequence[int], shown: int) -> str:
    """``{"count":N,"first":[i,...]}``: how many indices, and the first ``shown``."""
    if not flagged:
        return '{"count":0,"first":[]}'
    first = ",".join([str(int(i)) for i in flagged[:shown]])
    return f'{{"count":{len(flagged)},"first":[{first}]}}'


def _flags(flags: tuple[bool, ...], shown: int) -> str:
    """Like :func:`_indices`, read from per-sample flags at C speed (batches can be huge)."""
    count = flags.count(True)
    if not count:
        return '{"count":0,"first":[]}'
    first, at = [], -1
    for _ in range(min(count, shown)):
        at = flags.index(True, at + 1)
        first.append(str(at))
    return f'{{"count":{count},"first":[{",".join(first)}]}}'


def _findings(findings: Sequence[Finding], limits: _Limits, include_inputs: bool) -> str:
    if not findings:
        return "[]"
    rendered = []
    for f in findings[:limits.findings]:
        item = (f'{{"check":{text(f.check, 64)},"severity":{_maybe_text(f.severity, 16)},'
                f'"reason":{text(f.reason, limits.text)}')
        if include_inputs and f.detail:
            item += f',"detail":{text(f.detail, limits.text)}'
        if f.samples:
            item += f',"samples":{_indices(f.samples, limits.indices)}'
        if f.score is not None:
            score = float(f.score)
            item += f',"score":{repr(score) if math.isfinite(score) else _quote(str(score))}'
        rendered.append(item + "}")
    out = "[" + ",".join(rendered) + "]"
    omitted = len(findings) - limits.findings
    return out if omitted <= 0 else f'{out},"findings_omitted":{omitted}'


def _inputs(arrays: dict[str, Any], room: int) -> str:
    """The raw inputs (opt-in), or a note saying why they were left out: nothing larger
    than the line's room is ever converted."""
    elements = sum(int(getattr(a, "size", 0) or 0) for a in arrays.values())
    if elements * 2 > room:
        return _quote(f"omitted: {elements} values do not fit in an audit line")
    try:
        rendered = "{" + ",".join(
            f"{text(name, 64)}:{_values(to_host(a).tolist())}"
            for name, a in arrays.items()) + "}"
    except Exception as exc:  # values that cannot be listed (object arrays, odd devices)
        return _quote(f"omitted: {type(exc).__name__}")
    if len(rendered) > room:
        return _quote(f"omitted: {len(rendered)} bytes do not fit in an audit line")
    return rendered


#: JSON without spaces, as the rest of the line is written; NaN is not JSON
_compact = partial(dumps, separators=(",", ":"), allow_nan=False)


def _values(values: Any) -> str:
    """Nested lists of numbers as JSON; NaN and infinities (not JSON) as strings."""
    try:
        return _compact(values)
    except ValueError:
        return _compact(_finite(values))


def _detection(suspicion: Sequence[float], threshold: float, fpr: float | None) -> str:
    """What reports need for calibration drift, without a per-sample list: the largest
    suspicion, the threshold and false-positive target it was judged by, and how many
    samples were above it."""
    top = max(suspicion)
    return _compact({"suspicion_max": round(top, 4) if math.isfinite(top) else str(top),
                     "threshold": threshold, "fpr": fpr,
                     "above": sum(s > threshold for s in suspicion)})


def _finite(value: Any) -> Any:
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


_second: tuple[int, str] = (-1, "")


def _iso(timestamp: float) -> str:
    """``2026-11-26T04:12:20.176559+00:00`` (UTC, microseconds), as ``datetime.isoformat``
    writes it; the date and time of day are formatted once per second."""
    global _second
    micros = round(timestamp * 1_000_000)
    second, fraction = divmod(micros, 1_000_000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{fraction:06d}+00:00"
