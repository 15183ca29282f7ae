"""The audit trail: one JSON line per call, written through ``logging`` to a rotating file.

Each distinct file gets one logger (``aimsec.audit.<n>``) with one handler, shared by every
guard writing there; the handler's lock keeps lines whole across threads. The logger does
not propagate, so audit lines never land in the application's own log unless it adds a
handler to :attr:`AuditLog.logger`. The library never calls ``logging.basicConfig``.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import math
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import to_host
from .config import (DEFAULT_LOG_BACKUPS, DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_PATH,
                     parse_bool, parse_positive_int, resolve)
from .errors import ConfigurationError
from .sinks import CallRecord

AUDIT_FILE = "audit.jsonl"

_loggers: dict[Path, logging.Logger] = {}
_loggers_lock = threading.Lock()


class AuditLog:
    """A sink writing one JSON line per call to ``<path>/audit.jsonl`` (or to ``file``).

    Arguments left ``None`` come from ``SECURITY_LOG_PATH``, ``AIMSEC_LOG_MAX_BYTES``,
    ``AIMSEC_LOG_BACKUPS`` and ``AIMSEC_LOG_INPUTS``. Raw inputs are written only when
    ``include_inputs`` is true.
    """

    def __init__(self, path: str | Path | None = None, *, file: str | Path | None = None,
                 max_bytes: int | None = None, backups: int | None = None,
                 include_inputs: bool | None = None) -> None:
        if file is None:
            folder = Path(resolve(path, "SECURITY_LOG_PATH", DEFAULT_LOG_PATH, str))
            file = folder / AUDIT_FILE
        self.file = Path(file).resolve()
        self.include_inputs = resolve(include_inputs, "AIMSEC_LOG_INPUTS", False, parse_bool)
        self.logger = _logger_for(
            self.file,
            resolve(max_bytes, "AIMSEC_LOG_MAX_BYTES", DEFAULT_LOG_MAX_BYTES, parse_positive_int),
            resolve(backups, "AIMSEC_LOG_BACKUPS", DEFAULT_LOG_BACKUPS, parse_positive_int))

    def record(self, event: CallRecord) -> None:
        v = event.verdict
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(v.timestamp, timezone.utc).isoformat(),
            "model": v.model,
            "client": v.client,
            "decision": event.outcome,
            "input_hash": v.input_hash,
            "shape": v.shape,
            "dtype": v.dtype,
            "batch_size": v.batch_size,
            "flagged": v.flagged,
            "findings": [f.as_dict() for f in v.findings],
            "latency_ms": round(event.latency_s * 1000, 4),
        }
        if event.error:
            line["error"] = event.error
        if v.threshold is not None and v.scores.get("suspicion"):
            suspicion = v.scores["suspicion"]  # what reports need for drift: no per-sample list
            line["detection"] = {"suspicion_max": _finite(max(suspicion)),
                                 "threshold": v.threshold, "fpr": v.fpr,
                                 "above": sum(s > v.threshold for s in suspicion)}
        if self.include_inputs and event.arrays:
            line["inputs"] = {k: to_host(a).tolist() for k, a in event.arrays.items()}
        level = logging.INFO if event.outcome == "allowed" else logging.WARNING
        # makeRecord + handle skips findCaller's stack walk: the audit line needs no caller.
        record = self.logger.makeRecord(self.logger.name, level, __file__, 0,
                                        json.dumps(line, default=_jsonable), None, None)
        self.logger.handle(record)

    def flush(self) -> None:
        for handler in self.logger.handlers:
            handler.flush()


def _logger_for(file: Path, max_bytes: int, backups: int) -> logging.Logger:
    with _loggers_lock:
        logger = _loggers.get(file)
        if logger is not None:
            handler = logger.handlers[0]
            if (handler.maxBytes, handler.backupCount) != (max_bytes, backups):
                raise ConfigurationError(
                    f"the audit log {file} is already open with max_bytes="
                    f"{handler.maxBytes}, backups={handler.backupCount}; received "
                    f"max_bytes={max_bytes}, backups={backups}. One file has one rotation "
                    "policy: use the same settings or another folder")
        else:
            file.parent.mkdir(parents=True, exist_ok=True)
            logger = logging.getLogger(f"aimsec.audit.{len(_loggers)}")
            logger.setLevel(logging.INFO)
            logger.propagate = False
            logger.addHandler(_AuditFileHandler(file, max_bytes, backups))
            _loggers[file] = logger
        return logger


class _AuditFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file handler that counts the bytes it writes.

    The stock handler stats and seeks the file before every line to decide on rotation;
    the audit trail writes a line per prediction, so it keeps the count itself. Every line
    is flushed: a crash loses no recorded call.
    """

    def __init__(self, file: Path, max_bytes: int, backups: int) -> None:
        super().__init__(file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._written = file.stat().st_size if file.exists() else 0

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 (stdlib name)
        return 0 < self.maxBytes < self._written + len(record.getMessage()) + 1

    def doRollover(self) -> None:  # noqa: N802 (stdlib name)
        super().doRollover()
        self._written = 0

    def emit(self, record: logging.LogRecord) -> None:
        # One frame instead of the stock chain (rotating -> file -> stream handler): this
        # runs once per prediction.
        try:
            line = record.getMessage() + "\n"
            if self.shouldRollover(record):
                self.doRollover()
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(line)
            self.stream.flush()
            self._written += len(line)  # ASCII JSON: characters are bytes
        except Exception:
            self.handleError(record)


def _finite(value: float) -> float | str:
    return round(value, 4) if math.isfinite(value) else str(value)  # JSON has no inf/NaN


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
