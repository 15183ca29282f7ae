"""The one-line entry points: ``guard`` and ``unguard``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigurationError
from .guard import Guard
from .registry import adapter_for
from .signature import Constraints
from .sinks import Sink

GUARD_ATTRIBUTE = "__aimsec_guard__"


def guard(model: Any, *, name: str | None = None, mode: str | None = None,
          constraints: Constraints | Mapping[str, Any] | None = None,
          sinks: list[Sink] | None = None, calibration: str | Path | None = None,
          on_flagged: str = "call") -> Any:
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
    """
    if getattr(model, GUARD_ATTRIBUTE, None) is not None:
        raise ConfigurationError(
            f"{type(model).__name__} is already guarded; call aimsec_core.unguard() first "
            "or configure the existing guard")
    adapter = adapter_for(model)
    return adapter.wrap(Guard(model, adapter, name=name, mode=mode, constraints=constraints,
                              sinks=sinks, calibration=calibration, on_flagged=on_flagged))


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
