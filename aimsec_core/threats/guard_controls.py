"""Which controls a live guard implements, read from its actual configuration.

:data:`GUARD_CONTROLS` is the one table from a control of the model-endpoint catalogue
(``observed: "guard"``) to the part of the guard's configuration that implements it, and
to the setting that turns it on. Nothing here takes a user's word: every answer comes from
the :class:`~aimsec_core.guard.Guard` object (its constraints, mode, calibration, sinks,
monitoring policy and store), except API-key identity, which lives in front of the guard
(the serving middleware sets ``guard.api_key_identity``; callers may pass it).

Monitoring, the state store and alerts are optional parts of a guard; they are read
defensively (attributes or mapping keys, whichever the guard has), and a part a guard
lacks reads as "not configured".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..audit import AuditLog
from ..guard import Guard


@dataclass(frozen=True)
class Observation:
    implemented: bool
    detail: str


@dataclass(frozen=True)
class GuardControl:
    reads: str   #: the configuration that decides it (the README's mapping table)
    how: str     #: the setting that turns it on
    observe: Callable[[Guard, bool | None], Observation]


_MISSING = object()


def _lookup(root: Any, path: str) -> Any:
    """``root.a.b`` (attributes or mapping keys), or None when any step is absent."""
    value = root
    for part in path.split("."):
        if value is None:
            return None
        if isinstance(value, dict):
            value = value.get(part)
        else:
            value = getattr(value, part, None)
    return value


def _first(guard: Guard, *paths: str) -> tuple[str, Any]:
    for path in paths:
        value = _lookup(guard, path)
        if value is not None:
            return path, value
    return "", None


def _enabled(value: Any) -> bool:
    """A setting counts as on when it is true, a positive number, or an object/mapping
    whose ``enabled`` is not false."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)):
        return value > 0
    flag = value.get("enabled", True) if isinstance(value, dict) else getattr(
        value, "enabled", True)
    return bool(flag)


_POLICY = ("policy", "monitor.policy", "monitoring.policy")


def _policy_setting(guard: Guard, *names: str) -> tuple[str, Any]:
    return _first(guard, *(f"{p}.{n}" for p in _POLICY for n in names))


def _monitoring(names: tuple[str, ...], what: str) -> Callable[[Guard, bool | None], Observation]:
    def observe(guard: Guard, _: bool | None) -> Observation:
        path, value = _policy_setting(guard, *names)
        if value is None:
            return Observation(False, f"not configured (the guard has no {what} setting)")
        if _enabled(value):
            return Observation(True, f"{path} = {value!r}")
        return Observation(False, f"off ({path} = {value!r})")
    return observe


def _validation(guard: Guard, _: bool | None) -> Observation:
    c = guard.constraints
    declared = guard.adapter.signature()
    shape = "declared signature" if declared else (
        "sample_shape" if c.sample_shape is not None else None)
    value_range = [n for n in ("min_value", "max_value") if getattr(c, n) is not None]
    parts = [p for p in (shape, *value_range) if p]
    parts += [n for n in ("max_gradient", "min_sparsity") if getattr(c, n) is not None]
    if c.max_size is not None:
        parts.append(f"max_size={c.max_size:,}")
    implemented = bool(shape and value_range)
    missing = [] if shape else ["a shape (the model declares none: set sample_shape)"]
    if not value_range:
        missing.append("a value range (min_value/max_value)")
    detail = ", ".join(parts) if parts else "no constraints"
    return Observation(implemented, detail if implemented else f"{detail}; missing "
                       + " and ".join(missing))


def _mode(guard: Guard, _: bool | None) -> Observation:
    return Observation(guard.mode == "enforce", f"mode = {guard.mode!r}")


def _calibration(guard: Guard, _: bool | None) -> Observation:
    calibration = guard.calibration
    if calibration is None:
        return Observation(False, "no calibration loaded: detection is off")
    target = calibration.suite.fpr_target
    return Observation(True, f"calibrated for {target:.1%} false positives "
                             f"(measured {calibration.achieved_fpr:.1%} on "
                             f"{calibration.samples or calibration.threshold_samples} clean "
                             "samples)")


def _audit_logs(guard: Guard) -> list[AuditLog]:
    return [s for s in guard.sinks if isinstance(s, AuditLog)]


def _audit(guard: Guard, _: bool | None) -> Observation:
    logs = _audit_logs(guard)
    if not logs:
        return Observation(False, "no AuditLog among the guard's sinks")
    return Observation(True, ", ".join(str(log.file) for log in logs))


def _inputs_not_logged(guard: Guard, _: bool | None) -> Observation:
    raw = [log for log in _audit_logs(guard) if log.include_inputs]
    if raw:
        return Observation(False, "raw inputs written to " + ", ".join(str(l.file) for l in raw))
    return Observation(True, "audit lines hold content hashes only" if _audit_logs(guard)
                       else "no audit log writes inputs")


def _store(guard: Guard, _: bool | None) -> Observation:
    path, store = _first(guard, "store", "monitor.store", "monitoring.store", "policy.store")
    if store is None:
        return Observation(False, "not configured (no state store)")
    url = store if isinstance(store, str) else str(getattr(store, "url", "") or "")
    kind = type(store).__name__
    shared = url.startswith(("redis://", "rediss://", "unix://")) or "redis" in kind.lower()
    where = url or kind
    return Observation(shared, f"{where} (shared across replicas)" if shared else
                       f"{where}: in-process, each replica counts alone")


def _alerts(guard: Guard, _: bool | None) -> Observation:
    path, alerts = _first(guard, "alerts", "alerting", "dispatcher")
    if alerts is not None and _enabled(alerts):
        return Observation(True, f"{path}: {type(alerts).__name__}")
    sinks = [type(s).__name__ for s in guard.sinks
             if type(s).__module__.startswith(("aimsec_core.alerts", "aimsec_core.incidents"))
             or getattr(s, "channels", None)]
    if sinks:
        return Observation(True, "sinks: " + ", ".join(sinks))
    return Observation(False, "not configured (no incident or alert sink)")


def _api_key(guard: Guard, given: bool | None) -> Observation:
    if given is not None:
        return Observation(given, f"stated by the caller (api_key_identity={given})")
    value = getattr(guard, "api_key_identity", None)
    if value is None:
        return Observation(False, "not known: no API-key middleware registered itself on the "
                                  "guard (pass api_key_identity=True if one is in front)")
    return Observation(bool(value), f"set by the serving middleware ({bool(value)})")


#: control id -> what decides it and how to turn it on. The README's
#: "control → configuration" table is this table.
GUARD_CONTROLS: dict[str, GuardControl] = {
    "input_validation": GuardControl(
        "guard.constraints (min_value/max_value) and the model's declared shape or "
        "sample_shape", "guard(model, constraints={'min_value': ..., 'max_value': ...})",
        _validation),
    "enforce_mode": GuardControl("guard.mode == 'enforce'",
                                 "guard(model, mode='enforce') or AIMSEC_MODE=enforce", _mode),
    "adversarial_detection": GuardControl(
        "guard.calibration is loaded (its fpr_target and achieved_fpr are shown)",
        "guarded.calibrate(x_clean, fpr=0.01), or guard(model, calibration='file.npz')",
        _calibration),
    "rate_limiting": GuardControl(
        "policy max_requests_per_minute (or min_request_interval) > 0",
        "guard(model, policy={'max_requests_per_minute': 100})",
        _monitoring(("max_requests_per_minute", "rate_limit", "requests_per_minute",
                     "min_request_interval"), "rate-limit")),
    "client_lockout": GuardControl(
        "policy max_failed_attempts > 0", "guard(model, policy={'max_failed_attempts': 5})",
        _monitoring(("max_failed_attempts", "lockout"), "lockout")),
    "query_monitoring": GuardControl(
        "policy near-duplicate (or repeat) monitoring on",
        "guard(model, policy={'near_duplicates': True})",
        _monitoring(("near_duplicates", "near_duplicate", "near_duplicate_threshold",
                     "repeats", "max_repeats"), "near-duplicate")),
    "extraction_monitoring": GuardControl(
        "policy extraction monitoring on", "guard(model, policy={'extraction': True})",
        _monitoring(("extraction", "extraction_monitoring", "extraction_threshold"),
                    "extraction")),
    "shared_state": GuardControl(
        "the monitoring store is Redis (not in-process memory)",
        "guard(model, store='redis://...') or AIMSEC_STORE_URL", _store),
    "audit_logging": GuardControl("an AuditLog among guard.sinks",
                                  "keep the default sinks, or pass sinks=[AuditLog(), ...]",
                                  _audit),
    "inputs_not_logged": GuardControl("no AuditLog with include_inputs",
                                      "AIMSEC_LOG_INPUTS=0 (the default)", _inputs_not_logged),
    "security_alerts": GuardControl(
        "guard.alerts, or an incident/alert sink among guard.sinks",
        "configure incidents and alert channels (ALERT_SMTP_SERVER, a webhook)", _alerts),
    "api_key_identity": GuardControl(
        "guard.api_key_identity (set by the API-key middleware) or the caller's statement",
        "serve through the API-key middleware, or pass api_key_identity=True", _api_key),
}


def observe_guard(guard: Guard, api_key_identity: bool | None = None
                  ) -> dict[str, Observation]:
    """Every guard-observed control's state, from ``guard``'s configuration."""
    return {cid: control.observe(guard, api_key_identity)
            for cid, control in GUARD_CONTROLS.items()}
