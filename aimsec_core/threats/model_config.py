"""A guard described by a JSON file, for assessing a deployment without its model.

The file holds the settings the deployment passes to :func:`aimsec_core.guard`, not a list
of controls; the guard they describe is built for real (over no model) and then read by
:func:`~.assess.assess_guard` like any other::

    {
      "name": "fraud-scorer",
      "mode": "enforce",
      "constraints": {"min_value": 0, "max_value": 1, "sample_shape": [30]},
      "calibration": "fraud.npz",
      "audit": {"path": "/var/log/aimsec", "include_inputs": false},
      "guard": {"policy": {"max_requests_per_minute": 100}, "store": "redis://cache:6379"},
      "api_key_identity": true,
      "declared": ["artifact_verification"]
    }

``audit`` is ``true`` (the default audit log), ``false`` (none) or an object with ``path``
and ``include_inputs``; ``guard`` holds further ``guard()`` keywords, refused when this
version's guard has no such setting. ``calibration`` is loaded and validated as the guard
would load it; with no model there, it is not checked against one. ``api_key_identity``
and ``declared`` state what lies in front of and around the guard.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapter import HostArrays
from ..audit import AuditLog
from ..detection.calibration import Calibration
from ..errors import CalibrationError, ConfigurationError
from ..guard import Guard

KEYS = ("name", "mode", "constraints", "calibration", "audit", "guard", "api_key_identity",
        "declared")


@dataclass
class DescribedGuard:
    guard: Guard
    api_key_identity: bool | None
    declared: list[str]


def load_model_config(path: str | Path) -> DescribedGuard:
    """Build the guard ``path`` describes. Raises :class:`ConfigurationError` for a file
    that cannot be read, an unknown key, or a setting the guard refuses."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the model config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(f"model config {path}: expected a JSON object with keys "
                                 f"among {list(KEYS)}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigurationError(f"model config {path}: unknown keys {unknown}; expected keys "
                                 f"among {list(KEYS)}")
    extra = raw.get("guard") or {}
    accepted = set(inspect.signature(Guard.__init__).parameters) - {"self", "model", "adapter"}
    if not isinstance(extra, dict) or set(extra) - accepted:
        raise ConfigurationError(
            f"model config {path}: \"guard\" settings {sorted(set(extra) - accepted)} are not "
            f"settings of this aimsec's guard; it accepts {sorted(accepted)}")
    guard = Guard(None, HostArrays(None), name=str(raw.get("name", path.stem)),
                  mode=raw.get("mode"), constraints=raw.get("constraints"),
                  sinks=_sinks(raw.get("audit", True), path), **extra)
    if raw.get("calibration"):
        location = (path.parent / raw["calibration"]).resolve()
        try:
            guard.calibration = Calibration.load(location)
        except CalibrationError as exc:
            raise ConfigurationError(f"model config {path}: {exc}") from exc
    identity = raw.get("api_key_identity")
    declared = raw.get("declared", [])
    if identity is not None and not isinstance(identity, bool):
        raise ConfigurationError(f"model config {path}: api_key_identity must be true or "
                                 f"false; received {identity!r}")
    if not isinstance(declared, list) or not all(isinstance(d, str) for d in declared):
        raise ConfigurationError(f"model config {path}: declared must be a list of control "
                                 f"ids; received {declared!r}")
    return DescribedGuard(guard, identity, declared)


def _sinks(audit: Any, path: Path) -> list[Any]:
    if audit is False:
        return []
    if audit is True:
        return [AuditLog()]
    if not isinstance(audit, dict) or set(audit) - {"path", "include_inputs"}:
        raise ConfigurationError(f"model config {path}: audit must be true, false or "
                                 f"{{\"path\": ..., \"include_inputs\": ...}}; received {audit!r}")
    try:
        return [AuditLog(audit.get("path"), include_inputs=audit.get("include_inputs"))]
    except (OSError, ConfigurationError) as exc:
        raise ConfigurationError(f"model config {path}: cannot open the audit folder "
                                 f"{audit.get('path')}: {exc}") from exc
