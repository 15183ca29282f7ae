"""The one-line entry points: ``guard`` and ``unguard``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .guard import Guard, _default_sinks
from .registry import adapter_for
from .signature import Constraints
from .sinks import Sink

GUARD_ATTRIBUTE = "__aimsec_guard__"


def guard(model: Any, *, name: str | None = None, mode: str | None = None,
          constraints: Constraints | Mapping[str, Any] | None = None,
          sinks: list[Sink] | None = None, calibration: str | Path | None = None,
          on_flagged: str = "call", incidents: Any = None, alerts: Any = None,
          policy: Mapping[str, Any] | bool | None = None, store: Any = None) -> Any:
    """Wrap ``model`` so every predict call is validated, screened and recorded.

    Returns an object of the framework's own shape (an ``nn.Module`` for torch, a model
    for Keras, an estimator for scikit-learn, a session for onnxruntime).

    ``mode`` is ``"enforce"`` (refuse bad calls with :class:`SecurityViolation`) or
    ``"monitor"`` (record and pass through); default from ``AIMSEC_MODE``, else enforce.
    ``sinks`` default to the audit log under ``SECURITY_LOG_PATH``. ``calibration`` is a
    file written by ``guarded.save_calibration`` and turns adversarial-input detection on.
    ``on_flagged`` says what a detector finding refuses: ``"call"`` (the whole call) or
    ``"samples"`` (only the flagged samples: the error carries ``allowed`` indices and
    their ``allowed_output``).

    ``incidents`` (``True``/``False``, a database path or an ``IncidentStore``) and
    ``alerts`` (``True``/``False`` or channel objects) choose the default sinks after the
    audit log; left ``None`` they follow ``AIMSEC_INCIDENTS``/``AIMSEC_ALERTS`` (both on by
    default: incidents in ``<SECURITY_LOG_PATH>/incidents.sqlite3``, alerts by SMTP if
    ``ALERT_SMTP_SERVER`` is set, else ``.eml`` files in ``<SECURITY_LOG_PATH>/outbox``).
    They cannot be combined with ``sinks``. ``guarded.close()`` delivers what is queued.
    ``policy`` sets request monitoring (a dict: the original ``SECURITY_CONFIG`` keys and
    aimsec's own, see the README; ``False`` turns monitoring off); ``store`` is where its
    state lives: ``"memory://"`` or a ``"redis://host:port/db"`` URL shared by replicas
    (default from ``AIMSEC_STORE_URL``, else memory).
    """
    if getattr(model, GUARD_ATTRIBUTE, None) is not None:
        raise ConfigurationError(
            f"{type(model).__name__} is already guarded; call aimsec_core.unguard() first "
            "or configure the existing guard")
    if sinks is not None and (incidents is not None or alerts is not None):
        raise ConfigurationError(
            "pass either sinks=[...] or incidents=/alerts=, not both; to combine them add "
            "aimsec_core.alerts.security_sinks(incidents=..., alerts=...) to your sinks")
    if incidents is not None or alerts is not None:
        sinks = _default_sinks(incidents=incidents, alerts=alerts)
    adapter = adapter_for(model)
    return adapter.wrap(Guard(model, adapter, name=name, mode=mode, constraints=constraints,
                              sinks=sinks, calibration=calibration, on_flagged=on_flagged,
                              policy=policy, store=store))


def guard_of(guarded: Any) -> Guard:
    """The :class:`Guard` behind a guarded object."""
    found = getattr(guarded, GUARD_ATTRIBUTE, None)
    if not isinstance(found, Guard):
        raise ConfigurationError(
            f"expected an object returned by aimsec_core.guard(); received "
            f"{type(guarded).__name__}")
    return found


def unguard(guarded: Any) -> Any:
    """The original model object behind ``guarded``."""
    return guard_of(guarded).model
