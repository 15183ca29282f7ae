"""Settings resolve once, in one place: explicit argument, then environment, then default.

Environment variables (the original tool's names still work):

============================  =================================================  ==================
variable                      meaning                                            default
============================  =================================================  ==================
``SECURITY_LOG_PATH``         folder of the audit log (``audit.jsonl``)          ``./security_logs``
``AIMSEC_MODE``               ``enforce`` (refuse) or ``monitor`` (record only)  ``enforce``
``AIMSEC_LOG_MAX_BYTES``      audit file size before it rotates                  ``52428800``
``AIMSEC_LOG_BACKUPS``        rotated audit files kept                           ``10``
``AIMSEC_LOG_INPUTS``         ``1`` writes raw inputs into audit lines           ``0``
``AIMSEC_STORE_URL``          monitoring state: ``memory://`` or ``redis://...``   ``memory://``
============================  =================================================  ==================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import ConfigurationError

T = TypeVar("T")

MODES = ("enforce", "monitor")
DEFAULT_LOG_PATH = "security_logs"
DEFAULT_LOG_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_LOG_BACKUPS = 10


def resolve(explicit: T | None, env: str, default: T, parse: Callable[[str], T]) -> T:
    """``explicit`` if given, else the parsed environment variable ``env``, else ``default``."""
    if explicit is not None:
        return explicit
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"environment variable {env}={raw!r} is invalid: {exc}") from exc


def parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a non-negative integer")
    return value


def parse_mode(raw: Any) -> str:
    if raw not in MODES:
        raise ValueError(f"expected one of {MODES}, received {raw!r}")
    return str(raw)


def resolve_mode(explicit: str | None) -> str:
    mode = resolve(explicit, "AIMSEC_MODE", "enforce", parse_mode)
    try:
        return parse_mode(mode)
    except ValueError as exc:
        raise ConfigurationError(f"mode: {exc}") from exc


DEFAULT_STORE_URL = "memory://"


def resolve_store_url(explicit: str | None) -> str:
    """The monitoring store: the argument, else ``AIMSEC_STORE_URL``, else ``memory://``."""
    return resolve(explicit, "AIMSEC_STORE_URL", DEFAULT_STORE_URL, str)
