"""The original tool's ``AISecurityMonitor``, on the incident store and alert dispatcher.

Its API is unchanged: ``AISecurityMonitor(model_name, alert_settings, logging_path=None)``,
``detect_threat({"ip_address", "input_data"})``, ``log_incident({"type", "details"})`` and
``get_incident_summary(hours=24)`` return the original dictionaries. Its defects are gone:
it configures no logging; per-IP request counts live in a moving-window limiter that
forgets idle clients; alert emails are grouped (one per IP and threat, with the count of
what was suppressed) and sent by a background thread, never inside ``detect_threat``;
incidents are kept in SQLite under ``logging_path`` and survive a restart.

The checks are the original's: ``rate_limit_exceeded`` (more than
``max_requests_per_minute`` from one IP, severity medium), and the input patterns
``extreme_values`` (a value beyond ±1e6), ``suspicious_sparsity`` (under 1% non-zero),
``potential_adversarial_pattern`` (every finite difference of the input above 100; a
property of the input alone, not of the model: the guard's calibrated detectors are the
real adversarial-input check) and ``analysis_error`` (the input is not numeric: text,
even text of digits, times, complex numbers, as the original, whose checks failed on
them; or it holds NaN, against which every comparison is false), severity high.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from ..alerts.dispatcher import Dispatcher
from ..alerts.grouping import Grouper
from ..alerts.outbox import OutboxChannel
from ..alerts.settings import GroupingPolicy, SmtpSettings
from ..alerts.smtp import SmtpChannel
from ..config import INCIDENTS_FILE, OUTBOX_FOLDER, log_folder
from ..context import ANONYMOUS
from ..errors import ConfigurationError
from ..files import as_path
from ..incidents.model import MAX_TEXT, Evidence, Occurrence, clip
from ..incidents.store import IncidentStore
from ..severity import SEVERITIES, highest, severity_of
from .identity import client_name, given

EXTREME_VALUE = 1e6
MIN_NON_ZERO_SHARE = 0.01
MAX_DIFFERENCE = 100.0
DEFAULT_MAX_REQUESTS_PER_MINUTE = 100
#: dtype kinds the input checks read: bool, integers, floats, and objects holding numbers
NUMERIC_KINDS = "biufO"
#: the original's threat names and the severity each gives
SEVERITY = {"rate_limit_exceeded": "medium", "extreme_values": "high",
            "suspicious_sparsity": "high", "potential_adversarial_pattern": "high",
            "analysis_error": "high"}

#: ip -> (admitted, requests seen in the last minute, counting this one)
Limiter = Callable[[str], tuple[bool, int]]


def per_minute_limiter(max_requests: int, clock: Callable[[], float] = time.time,
                       store: Any = "memory://") -> Limiter:
    """A moving-window limit of ``max_requests`` per IP per minute on aimsec's request
    monitoring (the ``limits`` library's moving window; ``store`` may be a ``redis://``
    URL shared by replicas). Returns ``admit(ip) -> (admitted, requests counted)``: the
    count is at least ``max_requests + 1`` for a refused call."""
    from ..monitoring import build_monitor

    monitor = build_monitor("AISecurityMonitor", {
        "max_requests_per_minute": max_requests, "max_failed_attempts": 0,
        "max_repeats": 0, "near_duplicate": False, "extraction": False,
        "watch_anonymous": True}, store, clock)
    assert monitor is not None

    def admit(ip: str) -> tuple[bool, int]:
        refused = any(f.check == "rate_limit" for f in monitor.admit_client(ip))
        return not refused, max_requests + 1 if refused else 0

    return admit


class AISecurityMonitor:
    """Per-request threat checks with incidents and grouped alert emails.

    ``alert_settings``: ``{"email_recipients": [...], "smtp_settings": {"server", "port",
    "sender", "use_tls", optional "username", "password"}, "alert_thresholds":
    {"max_requests_per_minute", "suspicious_pattern_threshold", optional
    "failed_attempts_threshold"}}``; SMTP fields it leaves out come from ``ALERT_SMTP_*``.
    Without an SMTP server alerts go to ``<logging_path>/outbox`` as ``.eml`` files.
    ``logging_path`` defaults to ``SECURITY_LOG_PATH``; incidents are kept in
    ``<logging_path>/incidents.sqlite3``. Medium and high incidents alert, grouped per
    (model, threat, IP) with ``AIMSEC_ALERT_GROUP_WAIT`` etc. (see the README).

    Keyword-only extras for tests and services: ``clock``, ``limiter``, ``channels``.
    """

    def __init__(self, model_name: str, alert_settings: Mapping[str, Any] | None,
                 logging_path: str | Path | None = None, *,
                 clock: Callable[[], float] = time.time, limiter: Limiter | None = None,
                 channels: list[Any] | None = None) -> None:
        if alert_settings is not None and not isinstance(alert_settings, Mapping):
            raise ConfigurationError(
                "alert_settings must be a dict with email_recipients, smtp_settings and "
                f"alert_thresholds; received {type(alert_settings).__name__}")
        self.model_name = clip(model_name)
        self.alert_settings = dict(alert_settings or {})
        self.logging_path = log_folder(None if logging_path is None
                                       else str(as_path(logging_path, "logging_path")))
        _make_folder(self.logging_path, "logging_path" if logging_path is not None
                     else "SECURITY_LOG_PATH" if os.environ.get("SECURITY_LOG_PATH")
                     else "the default logging_path")
        self.max_requests_per_minute = _max_requests(self.alert_settings)
        self.clock = clock
        self._admit = limiter or per_minute_limiter(self.max_requests_per_minute, clock)
        smtp = SmtpSettings.from_alert_settings(self.alert_settings)
        if channels is None:
            channels = [SmtpChannel(smtp)] if smtp is not None else []
        self.store = IncidentStore(self.logging_path / INCIDENTS_FILE, clock=clock)
        outbox = OutboxChannel(self.logging_path / OUTBOX_FOLDER,
                               **({"sender": smtp.sender, "recipients": smtp.recipients}
                                  if smtp is not None else {}))
        self._dispatcher = Dispatcher(
            self.store, Grouper(GroupingPolicy.resolve(floor="medium"), clock=clock),
            channels, fallback=outbox, clock=clock)

    # -- the original API ----------------------------------------------------------------

    def detect_threat(self, request_data: Mapping[str, Any]) -> dict[str, Any]:
        """Check one request; returns ``{"timestamp", "severity", "threats_detected",
        "details"}``. Detected threats become incidents (and alerts) in the background."""
        if not isinstance(request_data, Mapping):
            raise ConfigurationError("detect_threat expects {'ip_address': str, "
                                     f"'input_data': array}}; received "
                                     f"{type(request_data).__name__}")
        now = self.clock()
        ip = clip(client_name(request_data.get("ip_address")))
        details: dict[str, Any] = {}
        admitted, seen = self._admit(ip)
        if not admitted:
            details["rate_limit_exceeded"] = {"requests_last_minute": seen,
                                              "max_requests_per_minute":
                                              self.max_requests_per_minute}
        details.update(_input_threats(request_data.get("input_data")))
        threats = list(details)
        for threat in threats:
            self._raise(threat, SEVERITY[threat], ip, now, details[threat])
        return {"timestamp": datetime.fromtimestamp(now).isoformat(),
                "severity": highest([SEVERITY[t] for t in threats]) or "low",
                "threats_detected": threats, "details": details}

    def log_incident(self, incident: Mapping[str, Any]) -> None:
        """Record an incident the caller found (``{"type": str, "details": ...}``, optional
        ``"severity"`` and ``"ip_address"``), e.g. an inference error."""
        kind = incident.get("type") if isinstance(incident, Mapping) else None
        if not given(kind):
            raise ConfigurationError("log_incident expects {'type': str, 'details': ...}; "
                                     f"received {clip(incident, MAX_TEXT)}")
        threat = clip(kind)
        severity = incident.get("severity")
        if not isinstance(severity, str) or severity not in SEVERITIES:
            severity = severity_of(threat)
        details = incident.get("details")
        ip = client_name(incident.get("ip_address"))
        if ip == ANONYMOUS and isinstance(details, Mapping):
            ip = client_name(details.get("ip_address"))
        self._raise(threat, severity, clip(ip), self.clock(), details)

    def get_incident_summary(self, hours: float = 24) -> dict[str, Any]:
        """``{"total_incidents", "by_severity": {"low", "medium", "high"}, "unique_ips",
        "most_common_threats": {threat: occurrences, most first}}`` over the last
        ``hours``, read from the incident database (so it survives a restart). A repeat of
        the same threat from the same IP within the incident window is one incident with a
        count; ``most_common_threats`` counts occurrences. Raises
        :class:`ConfigurationError` unless ``hours`` is a positive finite number."""
        if isinstance(hours, bool) or not isinstance(hours, Real) \
                or not _finite(hours) or hours <= 0:
            raise ConfigurationError(f"hours must be a positive number; received "
                                     f"{hours!r:.80}")
        self._dispatcher.ingest()
        return self.store.summary(self.clock() - float(hours) * 3600, model=self.model_name)

    # -- lifecycle -----------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Send the pending alerts now, without waiting for their group timers."""
        return self._dispatcher.flush(timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Flush, stop the background worker and close the database (also done at
        interpreter exit)."""
        done = self._dispatcher.close(timeout)
        self.store.close()
        return done

    def _raise(self, threat: str, severity: str, ip: str, now: float, details: Any) -> None:
        evidence = Evidence()
        evidence.add(reason=f"{threat}: {_details_text(details)}")
        self._dispatcher.submit(Occurrence(self.model_name, threat, ip, severity, now, now, 1,
                                           evidence))


def _make_folder(folder: Path, named: str) -> None:
    """Make ``folder`` now, so that a path where none can be made (a file, under a file, no
    permission) is refused here: found at the first incident, the incident and its
    alert would be lost. Raises :class:`ConfigurationError` naming ``named`` and the
    folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "it is not a folder" if isinstance(exc, FileExistsError) else \
            exc.strerror or str(exc)
        raise ConfigurationError(
            f"{named} {str(folder)!r:.200} cannot be used: {reason}; expected a folder "
            "(or a path where one can be made) for the incident database and the alert "
            "outbox") from exc


def _details_text(details: Any) -> str:
    """``details`` as JSON text, or, for what JSON cannot hold (keys that are not text, a
    reference cycle, nesting thousands deep), as bounded text (:func:`clip`)."""
    try:
        return json.dumps(details, default=str)
    except (TypeError, ValueError, RecursionError):
        return clip(details, MAX_TEXT)


def _finite(value: Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def _max_requests(alert_settings: Mapping[str, Any]) -> int:
    """``alert_thresholds['max_requests_per_minute']``: an integer of at least 1 (default
    100). Raises :class:`ConfigurationError` for anything else."""
    thresholds = alert_settings.get("alert_thresholds") or {}
    if not isinstance(thresholds, Mapping):
        raise ConfigurationError("alert_settings['alert_thresholds'] must be a dict such as "
                                 "{'max_requests_per_minute': 100}; received "
                                 f"{type(thresholds).__name__}")
    value = thresholds.get("max_requests_per_minute", DEFAULT_MAX_REQUESTS_PER_MINUTE)
    if isinstance(value, bool) or not isinstance(value, Real) or not _finite(value) \
            or value != int(value) or value < 1:
        raise ConfigurationError("alert_thresholds['max_requests_per_minute'] must be a "
                                 f"whole number of at least 1; received {value!r:.80}")
    return int(value)


def _input_threats(input_data: Any) -> dict[str, Any]:
    """The original's input checks: threat name -> details, for those that fire."""
    if input_data is None:  # read as an array it is one NaN, and the error would say so
        return {"analysis_error": {"error": "the request has no 'input_data' (or it is "
                                            "None); expected an array of real numbers"}}
    try:
        raw = np.asarray(input_data)
        if raw.dtype.kind not in NUMERIC_KINDS or (raw.dtype.kind == "O" and any(
                isinstance(item, (str, bytes, bytearray)) for item in raw.flat)):
            # text read as numbers (astype parses an object array's text too), times,
            # complex numbers
            raise TypeError(f"the input has dtype {raw.dtype}; expected real numbers")
        x = raw.astype(np.float64)  # an object array: its items as floats, or an error
        if x.size == 0:
            raise ValueError("the input is empty")
    except (TypeError, ValueError, OverflowError) as exc:
        return {"analysis_error": {"error": clip(f"{type(exc).__name__}: {exc}", 200)}}
    found: dict[str, Any] = {}
    nan = int(np.count_nonzero(np.isnan(x)))
    if nan:  # every comparison with NaN is false: one would switch the checks below off
        found["analysis_error"] = {"error": f"the input holds {nan} NaN value(s) of "
                                            f"{x.size}, which no check can judge"}
    with np.errstate(invalid="ignore", over="ignore"):
        magnitude = np.abs(x)
        if np.any(magnitude > EXTREME_VALUE):
            found["extreme_values"] = {"max_abs_value": float(np.nanmax(magnitude))}
        share = np.count_nonzero(x) / x.size
        if share < MIN_NON_ZERO_SHARE:
            found["suspicious_sparsity"] = {"non_zero_share": float(share)}
        if x.ndim and min(x.shape) >= 2:
            steps = np.gradient(x)
            steps = steps if isinstance(steps, (list, tuple)) else [steps]
            smallest = min(float(np.min(np.abs(s))) for s in steps)
            if smallest > MAX_DIFFERENCE:
                found["potential_adversarial_pattern"] = {"min_abs_difference": smallest}
    return found
