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
and ``include_inputs``; ``guard`` holds further ``guard()`` keywords (``policy``, ``store``,
``on_flagged``): one this version's guard lacks, one with a top-level key of its own, or
one JSON cannot express (``clock``) is refused. ``calibration`` is loaded and validated as
the guard would load it; with no model there, it is not checked against one.
``api_key_identity`` and ``declared`` state what lies in front of and around the guard.
The file is read only when it is a regular file of at most 1 MB.
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
from ..files import read_bounded
from ..guard import Guard

KEYS = ("name", "mode", "constraints", "calibration", "audit", "guard", "api_key_identity",
        "declared")
#: The longest model config read: settings take a few hundred bytes.
MAX_CONFIG_BYTES = 1 << 20


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
        raw = json.loads(read_bounded(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except RecursionError:  # arrays nested thousands deep
        raise ConfigurationError(f"cannot read the model config {path}: JSON nested too "
                                 "deep; expected a JSON object of guard settings") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the model config {path}: {exc}; expected a "
                                 "UTF-8 JSON object of guard settings") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(f"model config {path}: expected a JSON object with keys "
                                 f"among {list(KEYS)}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigurationError(f"model config {path}: unknown keys {unknown}; expected keys "
                                 f"among {list(KEYS)}")
    extra = raw.get("guard") or {}
    accepted = _guard_keywords()
    if not isinstance(extra, dict):
        raise ConfigurationError(f"model config {path}: \"guard\" must be an object of "
                                 f"settings among {sorted(accepted)}; received a JSON "
                                 f"{type(extra).__name__}")
    if set(extra) - accepted:
        raise ConfigurationError(
            f"model config {path}: \"guard\" settings {sorted(set(extra) - accepted)} are not "
            f"settings of this aimsec's guard a file can give; it accepts {sorted(accepted)} "
            f"(and {list(KEYS[:5])} at the top level)")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"model config {path}: name must be a non-empty string; "
                                 f"received {_shown(name)}")
    try:
        guard = Guard(None, HostArrays(None), name=name, mode=raw.get("mode"),
                      constraints=raw.get("constraints"),
                      sinks=_sinks(raw.get("audit", True), path), **extra)
    except ConfigurationError as exc:  # the guard's own words, and the file they concern
        if str(exc).startswith(f"model config {path}"):
            raise
        raise ConfigurationError(f"model config {path}: {exc}") from exc
    if raw.get("calibration"):
        location = _path(raw["calibration"], "calibration", path)
        try:
            guard.calibration = Calibration.load((path.parent / location).resolve())
        except (CalibrationError, OSError, ValueError) as exc:
            raise ConfigurationError(f"model config {path}: {exc}") from exc
    identity = raw.get("api_key_identity")
    declared = raw.get("declared", [])
    if identity is not None and not isinstance(identity, bool):
        raise ConfigurationError(f"model config {path}: api_key_identity must be true or "
                                 f"false; received {_shown(identity)}")
    if not isinstance(declared, list) or not all(isinstance(d, str) for d in declared):
        raise ConfigurationError(f"model config {path}: declared must be a list of control "
                                 f"ids; received {_shown(declared)}")
    return DescribedGuard(guard, identity, declared)


def _guard_keywords() -> set[str]:
    """The ``guard()`` keywords the ``"guard"`` object may hold: those without a top-level
    key of their own (``audit`` gives the sinks) and that JSON can express (no clock)."""
    return (set(inspect.signature(Guard.__init__).parameters)
            - {"self", "model", "adapter", "clock", "sinks"} - set(KEYS))


def _path(value: Any, what: str, config: Path) -> str:
    """``value`` when it is a usable path string; :class:`ConfigurationError` otherwise."""
    if not isinstance(value, str) or "\x00" in value:
        raise ConfigurationError(f"model config {config}: {what} must be a file path (text "
                                 f"without NUL characters); received {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """``value``'s repr, at most 80 characters (a config may hold megabytes)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:80]}...[+{len(text) - 80} chars]"


def _sinks(audit: Any, path: Path) -> list[Any]:
    if audit is False:
        return []
    if audit is True:
        return [AuditLog()]
    if not isinstance(audit, dict) or set(audit) - {"path", "include_inputs"}:
        raise ConfigurationError(f"model config {path}: audit must be true, false or "
                                 f"{{\"path\": ..., \"include_inputs\": ...}}; "
                                 f"received {_shown(audit)}")
    folder = audit.get("path")
    if folder is not None:
        folder = _path(folder, "audit path", path)
    include = audit.get("include_inputs")
    if include is not None and not isinstance(include, bool):
        raise ConfigurationError(f"model config {path}: audit include_inputs must be true or "
                                 f"false; received {_shown(include)}")
    try:
        return [AuditLog(folder, include_inputs=include)]
    except (OSError, ValueError, ConfigurationError) as exc:
        raise ConfigurationError(f"model config {path}: cannot open the audit folder "
                                 f"{audit.get('path')}: {exc}") from exc
