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
``AIMSEC_LOG_FSYNC``          ``1`` syncs every audit line to disk               ``0``
``AIMSEC_STORE_URL``          monitoring state: ``memory://`` or ``redis://...``   ``memory://``
============================  =================================================  ==================

Incidents, alerts and metrics (resolved in :mod:`aimsec_core.alerts.settings`, the table of
their variables is in its docstring and the README): ``AIMSEC_INCIDENTS``,
``AIMSEC_INCIDENT_DB``, ``AIMSEC_INCIDENT_SEVERITY``, ``AIMSEC_INCIDENT_WINDOW``,
``AIMSEC_INCIDENT_RETENTION_DAYS``, ``AIMSEC_INCIDENT_MAX_OPEN``,
``AIMSEC_INCIDENT_MAX_DELIVERIES`` (the last three in :mod:`aimsec_core.incidents.retention`),
``AIMSEC_ALERTS``, ``AIMSEC_ALERT_SEVERITY``, ``AIMSEC_ALERT_GROUP_WAIT``,
``AIMSEC_ALERT_GROUP_INTERVAL``, ``AIMSEC_ALERT_REPEAT_INTERVAL``,
``AIMSEC_ALERT_MAX_CLIENTS``, ``AIMSEC_REDIS_URL``,
``AIMSEC_METRICS``, ``ALERT_SMTP_*``, ``ALERT_SENDER``, ``ALERT_RECIPIENTS``,
``ALERT_WEBHOOK_URL``, ``ALERT_WEBHOOK_SECRET``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .errors import ConfigurationError

T = TypeVar("T")

#: Fewest bytes of a secret aimsec signs or keys with (the client-key HMAC, the
#: calibration signature): the 128-bit security level an HMAC key should give at least
#: (NIST SP 800-107, section 5.3.4).
MIN_SECRET_BYTES = 16

MODES = ("enforce", "monitor")
DEFAULT_LOG_PATH = "security_logs"
DEFAULT_LOG_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_LOG_BACKUPS = 10
INCIDENTS_FILE = "incidents.sqlite3"  #: the incident database, under SECURITY_LOG_PATH
OUTBOX_FOLDER = "outbox"  #: alerts kept as .eml files, under SECURITY_LOG_PATH


def resolve(explicit: T | None, env: str, default: T, parse: Callable[[str], T]) -> T:
    """``explicit`` if given, else the parsed environment variable ``env``, else ``default``."""
    if explicit is not None:
        return explicit
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return default
    try:
        reader: Callable[[str], T] = _NUMBERS.get(parse, parse)
        return reader(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"environment variable {env}={raw!r} is invalid: {exc}") from exc


def ascii_number(raw: Any) -> Any:
    """``raw`` for ``int()`` or ``float()``, text as an operator types a number: ASCII,
    no ``_`` (Python also reads ``1_0`` as 10 and other scripts' digits, ``٥٨٧`` as 587,
    so a mistyped setting took a value nobody wrote); ``ValueError`` otherwise."""
    if isinstance(raw, str) and (not raw.isascii() or "_" in raw):
        raise ValueError(raw)
    return raw


def parse_int(raw: str) -> int:
    """``raw`` as an integer in ASCII digits (``ValueError`` saying so, not Python's
    literal message)."""
    try:
        return int(ascii_number(raw))
    except ValueError:
        raise ValueError(f"expected an integer in ASCII digits, received {raw!r}") from None


def parse_float(raw: str) -> float:
    """``raw`` as a number in ASCII digits (``ValueError`` saying so, not Python's
    conversion message)."""
    try:
        return float(ascii_number(raw))
    except ValueError:
        raise ValueError(f"expected a number in ASCII digits, received {raw!r}") from None


#: ``resolve(..., int)`` and ``resolve(..., float)`` read through these.
_NUMBERS: dict[Any, Callable[[str], Any]] = {int: parse_int, float: parse_float}


def parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def parse_positive_int(raw: str) -> int:
    try:
        value = int(ascii_number(raw))
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"expected a non-negative integer, received {raw!r}")
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


def log_folder(explicit: str | Path | None = None) -> Path:
    """The folder of the audit log, incident database and outbox (``SECURITY_LOG_PATH``)."""
    return Path(resolve(explicit, "SECURITY_LOG_PATH", DEFAULT_LOG_PATH, str))


def parse_seconds(raw: Any) -> float:
    try:
        value = float(ascii_number(raw))
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"expected a finite number of seconds >= 0, received {raw!r}")
    return value


def parse_positive_seconds(raw: Any) -> float:
    """As :func:`parse_seconds`, for a duration that cannot be 0 (a timeout, an interval):
    the message states the bound that applies."""
    try:
        value = parse_seconds(raw)
    except ValueError:
        value = 0.0
    if value == 0:
        raise ValueError(f"expected a finite number of seconds > 0, received {raw!r}")
    return value


def parse_severity(raw: Any) -> str:
    from .severity import SEVERITIES

    if raw not in SEVERITIES:
        raise ValueError(f"expected one of {SEVERITIES}, received {raw!r}")
    return str(raw)


DEFAULT_STORE_URL = "memory://"


def redacted_url(url: str, *, path: bool = False) -> str:
    """``url`` as it may be shown (reprs, errors, logs, records): ``scheme://host[:port]``,
    then its path when ``path`` (a Redis database number) or ``/…`` (a webhook's path may
    be its token); never a user, password, query or fragment (``***@`` marks dropped
    credentials)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparsable URL>"
    if not parts.scheme:
        return "<unparsable URL>"
    if ":" in host:
        host = f"[{host}]"
    if "@" in parts.path:  # an unescaped "/" in a password: "redis://u:p/ss@h", "x://p/ss@h"
        return f"{parts.scheme}://***@…"
    credentials = "***@" if "@" in parts.netloc else ""
    return f"{parts.scheme}://{credentials}{host}{port}" + (parts.path if path else "/…")


def resolve_store_url(explicit: str | None) -> str:
    """The monitoring store: the argument, else ``AIMSEC_STORE_URL``, else ``memory://``."""
    return resolve(explicit, "AIMSEC_STORE_URL", DEFAULT_STORE_URL, str)
