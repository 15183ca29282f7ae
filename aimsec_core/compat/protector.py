"""The original tool's ``AIModelProtector`` API, on the guard's pipeline and monitoring.

The dictionaries it returns keep their old keys. What changed underneath:

- requests are hashed by content (bytes, dtype, shape) instead of ``str(array)``;
- history is the monitor's bounded per-minute counters, not a list of every request
  re-read on every call (constant time per call, bounded memory);
- repeats are judged per client: one client sending the same input a sixth time within
  the hour is refused for that input, and nobody else is; the client is the ``ip`` (or
  ``ip_address``, ``client``) named in the request's metadata;
- every refusal is an audit line naming its finding and its client;
- the library no longer calls ``logging.basicConfig``.
"""

from __future__ import annotations

import reprlib
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from numbers import Integral, Real
from typing import Any

import numpy as np

from ..adapter import HostArrays
from ..arrays import content_hash
from ..audit import AuditLog
from ..context import ANONYMOUS, client, unidentified
from ..errors import ConfigurationError, SecurityViolation
from ..files import as_path
from ..guard import Guard
from ..monitoring import Store
from ..signature import Constraints
from ..verdict import Verdict
from .identity import client_name

#: The original tool applied these two structural checks even when not configured.
_LEGACY_DEFAULTS = {"max_gradient": 100.0, "min_sparsity": 0.01}
#: The original judged every request, named or not, by repeats alone.
_LEGACY_POLICY = {"watch_anonymous": True, "near_duplicate": False, "extraction": False}
_MONITORING_CHECKS = frozenset({"rate_limit", "min_interval", "lockout", "repeat",
                                "near_duplicate", "extraction", "store_unavailable"})
_IDENTITY_KEYS = ("ip", "ip_address", "client", "client_id")


class AIModelProtector:
    """Validate, log and analyse requests to a model, the original tool's way.

    ``policy`` and ``store`` (new, optional) are the guard's monitoring settings; by
    default every request is watched for repeats (five identical requests per client
    within an hour, the original's threshold).
    """

    def __init__(self, model_name: str, input_constraints: dict[str, Any] | None = None,
                 log_file: str | None = None, *, policy: Mapping[str, Any] | None = None,
                 store: str | Store | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.model_name = model_name
        if input_constraints is not None and not isinstance(input_constraints, Mapping):
            raise ConfigurationError(
                "input_constraints must be a dict such as {'max_value': 1.0}; received "
                f"{type(input_constraints).__name__}")
        self.input_constraints = dict(input_constraints or {})
        constraints = Constraints.coerce({**_LEGACY_DEFAULTS, **self.input_constraints})
        audit = AuditLog(file=as_path(log_file, "log_file")) if log_file else AuditLog()
        self._guard = Guard(None, HostArrays(None), name=model_name, mode="enforce",
                            constraints=constraints, sinks=[audit], clock=clock,
                            policy=({**_LEGACY_POLICY, **policy} if isinstance(policy, Mapping)
                                    else _LEGACY_POLICY if policy is None else policy),
                            store=store)

    def validate_input(self, input_data: Any) -> dict[str, Any]:
        """``{"valid": bool, "issues": [str, ...]}`` for ``input_data``."""
        if isinstance(input_data, dict):
            return _as_result(None)
        return _as_result(self._guard.screen({"input": input_data})[1])

    def log_request(self, input_data: Any, metadata: dict[str, Any] | None = None) -> None:
        """Count the request (by content hash, for its client) in :meth:`analyze_requests`."""
        monitor = self._guard.monitor
        if monitor is not None:
            monitor.note(_identity(metadata), _request_hash(input_data))

    def analyze_requests(self, window_minutes: int = 60) -> dict[str, Any]:
        """Counts, rates and suspicious patterns over the last ``window_minutes``
        (``{}`` before the first request, as the original)."""
        monitor = self._guard.monitor
        if monitor is None:
            return {}
        analysis = monitor.request_analysis(_plain_number(window_minutes))
        return analysis if analysis["total_requests"] else {}

    def protect(self, input_data: Any, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Validate, check and log one request; ``allow_inference`` is the decision."""
        timestamp = datetime.now().isoformat()
        name = _identity(metadata)
        with unidentified() if name == ANONYMOUS else client(name):
            try:
                self._guard.call({"input": input_data}, lambda: None)
                allowed = True
            except SecurityViolation:
                allowed = False
            verdict = self._guard.last_verdict
        return {
            "timestamp": timestamp,
            "validation_result": _as_result(verdict, validation_only=True),
            "request_analysis": self.analyze_requests(),
            "allow_inference": allowed,
        }


def _identity(metadata: dict[str, Any] | None) -> str:
    """The client a request's metadata names (the original's callers pass ``ip``, as text
    or an ``ipaddress`` object: see :func:`.identity.client_name`). Raises
    :class:`ConfigurationError` for metadata that is not a dict."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ConfigurationError(f"metadata must be a dict such as {{'ip': '203.0.113.7'}}; "
                                 f"received {type(metadata).__name__}")
    for key in _IDENTITY_KEYS:
        name = client_name((metadata or {}).get(key))
        if name != ANONYMOUS:
            return name
    return ANONYMOUS


def _plain_number(value: Any) -> Any:
    """A number of another type (``np.int64(5)``, a ``Fraction``) as the ``int`` or
    ``float`` it holds, so the result it is copied into stays JSON-writable; anything
    else as it is (the monitor refuses it)."""
    if isinstance(value, bool) or type(value) in (int, float) or not isinstance(value, Real):
        return value
    try:
        return int(value) if isinstance(value, Integral) else float(value)
    except OverflowError:  # a Fraction beyond any float
        return float("inf")


def _as_result(verdict: Verdict | None, validation_only: bool = False) -> dict[str, Any]:
    if verdict is None:
        return {"valid": False,
                "issues": ["Input is a dict; expected an array or nested list of numbers"]}
    findings = [f for f in verdict.findings
                if not (validation_only and f.check in _MONITORING_CHECKS)]
    return {"valid": not findings, "issues": [f.reason for f in findings]}


def _request_hash(input_data: Any) -> str:
    try:
        array = np.asarray(input_data)
        if array.dtype.kind in "biufc":
            return content_hash([array])
    except (ValueError, TypeError):
        pass
    try:
        text = repr(input_data)
    except RecursionError:  # nested thousands deep: hashed by a bounded view of it
        text = reprlib.repr(input_data)
    return content_hash([np.frombuffer(text.encode()[:1 << 20], np.uint8)])
