"""The original tool's ``AIModelProtector`` API, kept working on top of the new core.

The dictionaries it returns keep their old keys. Two old defects are fixed underneath:
requests are hashed by content (bytes, dtype, shape) instead of ``str(array)``, and the
library no longer calls ``logging.basicConfig`` (lines go to the audit log instead).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .adapter import HostArrays
from .arrays import content_hash
from .audit import AuditLog
from .guard import Guard
from .signature import Constraints
from .sinks import CallRecord, deliver
from .verdict import Verdict

#: The original tool applied these two structural checks even when not configured.
_LEGACY_DEFAULTS = {"max_gradient": 100.0, "min_sparsity": 0.01}


class AIModelProtector:
    """Validate, log and analyse requests to a model, the original tool's way."""

    def __init__(self, model_name: str, input_constraints: dict[str, Any] | None = None,
                 log_file: str | None = None) -> None:
        self.model_name = model_name
        self.input_constraints = dict(input_constraints or {})
        self.request_history: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        constraints = Constraints.coerce({**_LEGACY_DEFAULTS, **self.input_constraints})
        audit = AuditLog(file=Path(log_file)) if log_file else AuditLog()
        self._guard = Guard(None, HostArrays(None), name=model_name, mode="enforce",
                            constraints=constraints, sinks=[audit])

    def validate_input(self, input_data: Any) -> dict[str, Any]:
        """``{"valid": bool, "issues": [str, ...]}`` for ``input_data``."""
        return _as_result(self._screen(input_data))

    def _screen(self, input_data: Any) -> Verdict | None:
        if isinstance(input_data, dict):
            return None
        return self._guard.screen({"input": input_data})[1]

    def log_request(self, input_data: Any, metadata: dict[str, Any] | None = None) -> None:
        """Remember the request (by content hash) for :meth:`analyze_requests`."""
        entry = {
            "timestamp": datetime.now().isoformat(),
            "input_hash": _request_hash(input_data),
            "input_shape": _shape(input_data),
            "metadata": metadata or {},
        }
        with self._lock:
            self.request_history.append(entry)

    def analyze_requests(self, window_minutes: int = 60) -> dict[str, Any]:
        """Counts and repeated inputs over the last ``window_minutes``."""
        with self._lock:
            history = list(self.request_history)
        if not history:
            return {}
        cutoff = time.time() - window_minutes * 60
        recent = [r for r in history
                  if datetime.fromisoformat(r["timestamp"]).timestamp() > cutoff]
        counts = Counter(r["input_hash"] for r in recent)
        threshold = max(5, len(recent) * 0.1)
        repeated = {h: c for h, c in counts.items() if c > threshold}
        analysis: dict[str, Any] = {
            "total_requests": len(recent),
            "unique_inputs": len(counts),
            "request_rate": len(recent) / window_minutes,
            "suspicious_patterns": [],
        }
        if repeated:
            analysis["suspicious_patterns"].append({"type": "repeated_inputs",
                                                    "details": repeated})
        return analysis

    def protect(self, input_data: Any, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Validate, analyse and log one request; ``allow_inference`` is the decision."""
        verdict = self._screen(input_data)
        report = {
            "timestamp": datetime.now().isoformat(),
            "validation_result": _as_result(verdict),
            "request_analysis": self.analyze_requests(),
            "allow_inference": False,
        }
        self.log_request(input_data, metadata)
        report["allow_inference"] = bool(
            report["validation_result"]["valid"]
            and not report["request_analysis"].get("suspicious_patterns"))
        if verdict is not None:
            outcome = "allowed" if report["allow_inference"] else "rejected"
            deliver(self._guard.sinks, CallRecord(verdict, outcome, 0.0))
        return report


def _as_result(verdict: Verdict | None) -> dict[str, Any]:
    if verdict is None:
        return {"valid": False,
                "issues": ["Input is a dict; expected an array or nested list of numbers"]}
    return {"valid": verdict.clean, "issues": [f.reason for f in verdict.findings]}


def _request_hash(input_data: Any) -> str:
    try:
        array = np.asarray(input_data)
        if array.dtype.kind in "biufc":
            return content_hash([array])
    except (ValueError, TypeError):
        pass
    text = json.dumps(input_data, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _shape(input_data: Any) -> tuple[int, ...] | None:
    try:
        return tuple(np.shape(input_data))
    except (ValueError, TypeError):
        return None
