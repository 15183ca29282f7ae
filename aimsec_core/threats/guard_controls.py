"""Which controls a live guard implements, read from its actual configuration.

:data:`GUARD_CONTROLS` is the one table from a control of the model-endpoint catalogue
(``observed: "guard"``) to the part of the guard's configuration that implements it, and
to the setting that turns it on. Nothing here takes a user's word: every answer comes from
the :class:`~aimsec_core.guard.Guard` object (its constraints, mode, calibration, sinks,
monitoring policy and store), except API-key identity, which lives in front of the guard
(the serving middleware sets ``guard.api_key_identity``; callers may pass it).

Monitoring (``guard.monitor``: its policy's base rules and its store) and incidents and
alerts (an ``IncidentSink`` among the sinks) are optional parts of a guard; a part a
guard lacks reads as "off" or "not configured".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..audit import AuditLog
from ..config import redacted_url
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


def _rules(guard: Guard) -> Any:
    """The base tier's monitoring rules, or ``None`` when monitoring is off
    (``guard(model, policy=False)``)."""
    monitor = getattr(guard, "monitor", None)
    return None if monitor is None else monitor.policy.rules


def _monitoring(read: Callable[[Any], tuple[bool, str]],
                what: str) -> Callable[[Guard, bool | None], Observation]:
    def observe(guard: Guard, _: bool | None) -> Observation:
        rules = _rules(guard)
        if rules is None:
            return Observation(False, f"off: request monitoring is disabled (policy=False), "
                                      f"so no {what}")
        return Observation(*read(rules))
    return observe


def _rate(rules: Any) -> tuple[bool, str]:
    rate, gap = rules.max_requests_per_minute, rules.min_request_interval
    on = bool(rate) or gap > 0
    return on, (f"max_requests_per_minute = {rate}, min_request_interval = {gap:g} s"
                if on else "no rate limit: policy max_requests_per_minute is not set")


def _lockout(rules: Any) -> tuple[bool, str]:
    on = rules.max_failed_attempts > 0
    return on, (f"locked out for {rules.session_timeout:g} s after "
                f"{rules.max_failed_attempts} refused calls" if on
                else "off: policy max_failed_attempts = 0")


def _queries(rules: Any) -> tuple[bool, str]:
    on = rules.near_duplicate
    return on, (f"near-duplicate fingerprints (threshold "
                f"{rules.suspicious_pattern_threshold:.0%}), repeats up to {rules.max_repeats}"
                if on else "off: policy near_duplicate = False")


def _extraction(rules: Any) -> tuple[bool, str]:
    return rules.extraction, ("PRADA distance test on identified clients" if rules.extraction
                              else "off: policy extraction = False")


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
    low, high = calibration.fpr_interval
    return Observation(True, f"calibrated for {target:.1%} false positives "
                             f"(measured {calibration.achieved_fpr:.1%} on "
                             f"{calibration.samples or calibration.threshold_samples} clean "
                             f"samples; on new clean data {low:.1%}-{high:.1%}, 95% "
                             "interval)")


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
    monitor = getattr(guard, "monitor", None)
    if monitor is None:
        return Observation(False, "off: request monitoring is disabled (policy=False)")
    url = str(monitor.store.url)
    shared = url.startswith(("redis://", "rediss://", "unix://"))
    shown = redacted_url(url, path=True)  # a Redis URL may carry a user and password
    return Observation(shared, f"{shown} (shared across replicas)" if shared else
                       f"{shown}: in-process, each replica counts alone")


def _alerts(guard: Guard, _: bool | None) -> Observation:
    from ..incidents import IncidentSink

    sinks = [s for s in guard.sinks if isinstance(s, IncidentSink)]
    if not sinks:
        return Observation(False, "not configured (no incident sink among the guard's sinks)")
    channels = sorted({getattr(c, "name", type(c).__name__)
                       for s in sinks for c in getattr(s.dispatcher, "channels", ())})
    return Observation(True, f"incidents stored; alerts via {', '.join(channels) or 'the outbox'}")


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
        _monitoring(_rate, "rate limit")),
    "client_lockout": GuardControl(
        "policy max_failed_attempts > 0", "guard(model, policy={'max_failed_attempts': 5})",
        _monitoring(_lockout, "lockout")),
    "query_monitoring": GuardControl(
        "policy near_duplicate on (the default for identified clients)",
        "guard(model, policy={'near_duplicate': True})", _monitoring(_queries, "query checks")),
    "extraction_monitoring": GuardControl(
        "policy extraction on (the default for identified clients)",
        "guard(model, policy={'extraction': True})", _monitoring(_extraction, "extraction")),
    "shared_state": GuardControl(
        "the monitoring store is Redis (not in-process memory)",
        "guard(model, store='redis://...') or AIMSEC_STORE_URL", _store),
    "audit_logging": GuardControl("an AuditLog among guard.sinks",
                                  "keep the default sinks, or pass sinks=[AuditLog(), ...]",
                                  _audit),
    "inputs_not_logged": GuardControl("no AuditLog with include_inputs",
                                      "AIMSEC_LOG_INPUTS=0 (the default)", _inputs_not_logged),
    "security_alerts": GuardControl(
        "an IncidentSink among guard.sinks (the default sinks have one) and its channels",
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
