"""Alert, incident and metrics settings: explicit argument, then environment, then default.

=================================  ==========================================  ===============
variable                           meaning                                     default
=================================  ==========================================  ===============
``AIMSEC_INCIDENTS``               ``0`` turns the incident sink off           ``1``
``AIMSEC_INCIDENT_DB``             the SQLite file                             log folder's
                                                                               ``incidents.sqlite3``
``AIMSEC_INCIDENT_SEVERITY``       least severity that makes an incident       ``medium``
``AIMSEC_INCIDENT_WINDOW``         seconds a repeat still joins an incident    ``3600``
``AIMSEC_INCIDENT_RETENTION_DAYS`` days resolved incidents and delivery        ``90``
                                   records are kept; ``0``: forever
``AIMSEC_INCIDENT_MAX_OPEN``       unresolved incidents before new ones roll   ``10000``
                                   up per (model, threat); ``0``: no cap
``AIMSEC_INCIDENT_MAX_DELIVERIES`` delivery records kept; ``0``: no cap        ``100000``
``AIMSEC_ALERTS``                  ``0`` turns alerts off                      ``1``
``AIMSEC_ALERT_SEVERITY``          least severity that alerts                  ``high``
``AIMSEC_ALERT_GROUP_WAIT``        seconds collected before a group's first    ``30``
``AIMSEC_ALERT_GROUP_INTERVAL``    least seconds between messages of a group   ``300``
``AIMSEC_ALERT_REPEAT_INTERVAL``   seconds between reminders of a firing group ``14400``
``AIMSEC_ALERT_MAX_CLIENTS``       clients of one (model, threat) with groups  ``3``
                                   of their own per repeat interval; ``0``: no
                                   cap
``AIMSEC_REDIS_URL``               Redis shared by replicas (one message per   ``AIMSEC_STORE_URL``
                                   group across them)                          if Redis, else none
``AIMSEC_METRICS``                 ``0`` turns the Prometheus sink off         ``1``
``ALERT_SMTP_SERVER``              SMTP host; unset: alerts go to the outbox   none
``ALERT_SMTP_PORT``                SMTP port                                   ``587``
``ALERT_SMTP_TLS``                 ``starttls``, ``ssl`` (implicit) or         ``starttls``
                                   ``none``                                    (``ssl`` on 465)
``ALERT_SMTP_USERNAME``            ASCII login, with ``ALERT_SMTP_PASSWORD``   none
``ALERT_SMTP_PASSWORD``            ASCII; never logged, never in a repr        none
``ALERT_SMTP_CAFILE``              CA bundle for a private mail server         system CAs
``ALERT_SMTP_TIMEOUT``             seconds for a whole SMTP exchange           ``10``
``ALERT_SENDER``                   From address                                ``aimsec@<host>``
``ALERT_RECIPIENTS``               comma-separated To addresses                required
``ALERT_WEBHOOK_URL``              JSON POST target (Slack-compatible)         none
``ALERT_WEBHOOK_SECRET``           HMAC-SHA256 key for the signature header    none
=================================  ==========================================  ===============
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..config import (parse_bool, parse_positive_int, parse_positive_seconds, parse_seconds,
                      parse_severity, redacted_url, resolve, resolve_store_url)
from ..errors import ConfigurationError

SMTP_SECURITY = ("starttls", "ssl", "none")


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to send alert emails. ``security``: ``starttls`` (upgrade a plain
    connection, port 587), ``ssl`` (implicit TLS, port 465) or ``none`` (a local relay)."""

    server: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    security: str = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    cafile: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.server, str) or not self.server.strip() \
                or _unusable_host(self.server):
            raise ConfigurationError("SMTP server (ALERT_SMTP_SERVER): expected a host name "
                                     "or an IP address (labels of 1 to 63 characters, no "
                                     "space, port or brackets: the port is ALERT_SMTP_PORT); "
                                     f"received {self.server!r:.60}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ConfigurationError(f"SMTP port (ALERT_SMTP_PORT) must be an integer in "
                                     f"1..65535; received {self.port!r:.40}")
        _check_timeout(self.timeout_s, "SMTP", "ALERT_SMTP_TIMEOUT")
        if self.security not in SMTP_SECURITY:
            raise ConfigurationError(f"SMTP security (ALERT_SMTP_TLS): expected one of "
                                     f"{SMTP_SECURITY}; received {self.security!r:.40}")
        if not self.recipients:
            raise ConfigurationError(
                "SMTP alerts need at least one recipient; set ALERT_RECIPIENTS (comma-"
                "separated) or alert_settings['email_recipients']")
        for variable, addresses in (("ALERT_SENDER", (self.sender,)),
                                    ("ALERT_RECIPIENTS", self.recipients)):
            for address in addresses:
                try:
                    _check_address(address)
                except ValueError as exc:
                    raise ConfigurationError(f"{variable}: {exc}") from None
        for part, value, variable in (("user name", self.username, "ALERT_SMTP_USERNAME"),
                                      ("password", self.password, "ALERT_SMTP_PASSWORD")):
            # smtplib sends every AUTH exchange as ASCII: any other character would fail
            # each alert with an error quoting it. The value itself is never shown.
            if isinstance(value, str) and not value.isascii():
                raise ConfigurationError(
                    f"the SMTP {part} ({variable}) holds characters outside ASCII, which "
                    "SMTP login (smtplib's AUTH) cannot send; use an ASCII login")
        if not 0 < self.port < 65536:
            raise ConfigurationError("SMTP port (ALERT_SMTP_PORT): expected an integer in "
                                     f"1..65535; received {self.port}")
        if self.cafile is not None and self.security != "none":
            # every alert would fail its TLS handshake, retried for minutes, then the outbox
            problem = "is not a file" if not os.path.isfile(self.cafile) else _unusable_ca(
                self.cafile)
            if problem:
                raise ConfigurationError(f"SMTP CA bundle {self.cafile!r} (ALERT_SMTP_CAFILE) "
                                         f"{problem}; expected a PEM file of CA certificates")

    @classmethod
    def from_env(cls, **explicit: Any) -> SmtpSettings | None:
        """Settings from ``ALERT_SMTP_*``, ``ALERT_SENDER`` and ``ALERT_RECIPIENTS``
        (keyword arguments win); ``None`` when no server is configured."""
        server = resolve(explicit.get("server"), "ALERT_SMTP_SERVER", "", str)
        if not server:
            return None
        port = resolve(explicit.get("port"), "ALERT_SMTP_PORT", 587, int)
        security = resolve(explicit.get("security"), "ALERT_SMTP_TLS",
                           "ssl" if port == 465 else "starttls", str).lower()
        return cls(
            server=server, port=port,
            sender=resolve(explicit.get("sender"), "ALERT_SENDER", _default_sender(), str),
            recipients=resolve(explicit.get("recipients"), "ALERT_RECIPIENTS", (),
                               parse_addresses),
            security=security,
            username=resolve(explicit.get("username"), "ALERT_SMTP_USERNAME", None, str),
            password=resolve(explicit.get("password"), "ALERT_SMTP_PASSWORD", None, str),
            timeout_s=resolve(explicit.get("timeout_s"), "ALERT_SMTP_TIMEOUT", 10.0,
                              parse_positive_seconds),
            cafile=resolve(explicit.get("cafile"), "ALERT_SMTP_CAFILE", None, str))

    @classmethod
    def from_alert_settings(cls, alert_settings: Mapping[str, Any]) -> SmtpSettings | None:
        """Settings from the original tool's ``alert_settings`` dictionary
        (``email_recipients`` and ``smtp_settings``: ``server``, ``port``, ``sender``,
        ``use_tls``, optional ``username``, ``password``); what it leaves out comes from
        the environment. ``None`` when neither names a server."""
        smtp = alert_settings.get("smtp_settings") or {}
        if not isinstance(smtp, Mapping):
            raise ConfigurationError("alert_settings['smtp_settings'] must be a dict with "
                                     f"server, port, sender, use_tls; received {smtp!r}")
        recipients = alert_settings.get("email_recipients")
        if isinstance(recipients, str):
            try:
                recipients = parse_addresses(recipients)
            except ValueError as exc:
                raise ConfigurationError(f"alert_settings['email_recipients']: {exc}; "
                                         "expected name@domain addresses") from None
        elif recipients is not None and not isinstance(recipients, (list, tuple, set)):
            raise ConfigurationError("alert_settings['email_recipients'] must be a list of "
                                     "addresses or a comma-separated string; received "
                                     f"{type(recipients).__name__}")
        port = _port(smtp.get("port"))
        use_tls = smtp.get("use_tls")
        if isinstance(use_tls, str):  # "false" is a true string: read it as the word it is
            try:  # blank (an unset variable's ""): false, as the original read it
                use_tls = parse_bool(use_tls) if use_tls.strip() else False
            except ValueError as exc:
                raise ConfigurationError(f"alert_settings['smtp_settings']['use_tls']: {exc}; "
                                         f"received {use_tls!r:.40}") from None
        elif isinstance(use_tls, np.bool_):  # from a numpy or pandas config
            use_tls = bool(use_tls)
        elif use_tls is not None and not isinstance(use_tls, (bool, int)):
            raise ConfigurationError("alert_settings['smtp_settings']['use_tls'] must be true "
                                     f"or false; received {type(use_tls).__name__}")
        security = None
        if use_tls is not None:
            security = "starttls" if use_tls else ("ssl" if port == 465 else "none")
        return cls.from_env(
            server=smtp.get("server"), port=port, sender=smtp.get("sender"),
            recipients=None if recipients is None else tuple(str(r) for r in recipients),
            security=security, username=smtp.get("username"), password=smtp.get("password"))


@dataclass(frozen=True)
class WebhookSettings:
    """Where webhook alerts go. ``url`` is a secret too (a Slack, Mattermost or Teams
    incoming-webhook URL carries its token in the path, a URL may carry a password or a
    ``?token=``): reprs, errors, logs and delivery records show only
    :attr:`display_url` (scheme, host and port)."""

    url: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        # urllib also opens file:// and ftp:// URLs: a file:// "webhook" read a local file
        # and recorded every alert as sent, while none went anywhere
        if not isinstance(self.url, str) or not self.url.lower().startswith(
                ("http://", "https://")):
            shown = self.url[:6] if isinstance(self.url, str) else type(self.url).__name__
            raise ConfigurationError("the webhook URL (ALERT_WEBHOOK_URL) must be an http(s) "
                                     f"URL; received one starting {shown!r}")  # may be secret
        problem = _unusable_url(self.url)
        if problem:  # every alert would fail (one with a raw traceback): refused now
            raise ConfigurationError(f"the webhook URL (ALERT_WEBHOOK_URL) {problem}; "
                                     "expected http(s)://host[:port]/path")
        if self.secret is not None and not isinstance(self.secret, str):
            raise ConfigurationError("the webhook secret (ALERT_WEBHOOK_SECRET) must be text; "
                                     f"received {type(self.secret).__name__}")
        try:  # the HMAC key is its UTF-8: a byte the environment could not decode (a lone
            (self.secret or "").encode()  # surrogate) failed every alert's signature
        except UnicodeEncodeError:
            raise ConfigurationError("the webhook secret (ALERT_WEBHOOK_SECRET) holds "
                                     "characters UTF-8 cannot encode (bytes the environment "
                                     "could not decode); expected text") from None
        _check_timeout(self.timeout_s, "webhook", "timeout_s")

    @property
    def display_url(self) -> str:
        return redacted_url(self.url)

    def __repr__(self) -> str:
        return (f"WebhookSettings(url={self.display_url!r}, signed={self.secret is not None}, "
                f"timeout_s={self.timeout_s})")

    @classmethod
    def from_env(cls, url: str | None = None, secret: str | None = None) -> WebhookSettings | None:
        url = resolve(url, "ALERT_WEBHOOK_URL", "", str)
        if not url:
            return None
        return cls(url, resolve(secret, "ALERT_WEBHOOK_SECRET", None, str))


@dataclass(frozen=True)
class GroupingPolicy:
    """Alertmanager's timers (seconds) and the least severity that alerts.

    ``group_wait``: how long a new group collects occurrences before its first message.
    ``group_interval``: the least time between two messages of a group; a group that has
    been quiet this long sends what it suppressed since its last message.
    ``repeat_interval``: a group still firing is reminded this often; a group quiet this
    long after its last message is forgotten (its next occurrence starts a new group).
    One below ``group_interval`` acts as ``group_interval``.
    A severity higher than the last message's is sent at once.
    ``max_clients``: clients of one (model, threat) that get groups of their own within a
    ``repeat_interval``; occurrences from further clients share one roll-up group, so an
    attacker rotating client ids (API keys identify, they do not authenticate) cannot turn
    one attack into a message per id. 0 lifts the cap.
    """

    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0
    floor: str = "high"
    max_clients: int = 3

    def __post_init__(self) -> None:
        # a NaN timer never came due (no alert, ever); a negative one sent at once; a zero
        # interval a message per round for a group that keeps firing (Alertmanager refuses
        # a zero group_interval and repeat_interval too)
        for name, least in (("group_wait", 0), ("group_interval", 1), ("repeat_interval", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value < math.inf or (least and value == 0):
                raise ConfigurationError(
                    f"alert {name} (AIMSEC_ALERT_{name.upper()}) must be a finite number of "
                    f"seconds {'> 0' if least else '>= 0'}; received {value!r:.40}")
        try:
            parse_severity(self.floor)
        except ValueError as exc:
            raise ConfigurationError(f"alert floor (AIMSEC_ALERT_SEVERITY): {exc}") from None
        if isinstance(self.max_clients, bool) or not isinstance(self.max_clients, int) \
                or self.max_clients < 0:
            raise ConfigurationError("alert max_clients (AIMSEC_ALERT_MAX_CLIENTS) must be a "
                                     f"whole number >= 0; received {self.max_clients!r:.40}")

    @classmethod
    def resolve(cls, group_wait: float | None = None, group_interval: float | None = None,
                repeat_interval: float | None = None, floor: str | None = None,
                max_clients: int | None = None) -> GroupingPolicy:
        return cls(
            resolve(group_wait, "AIMSEC_ALERT_GROUP_WAIT", cls.group_wait, parse_seconds),
            resolve(group_interval, "AIMSEC_ALERT_GROUP_INTERVAL", cls.group_interval,
                    parse_positive_seconds),
            resolve(repeat_interval, "AIMSEC_ALERT_REPEAT_INTERVAL", cls.repeat_interval,
                    parse_positive_seconds),
            resolve(floor, "AIMSEC_ALERT_SEVERITY", cls.floor, parse_severity),
            resolve(max_clients, "AIMSEC_ALERT_MAX_CLIENTS", cls.max_clients,
                    parse_positive_int))


def enabled(explicit: bool | None, env: str) -> bool:
    """Whether a switchable part (``AIMSEC_INCIDENTS``, ``AIMSEC_ALERTS``,
    ``AIMSEC_METRICS``) is on."""
    return resolve(explicit, env, True, parse_bool)


def incident_floor(explicit: str | None = None) -> str:
    """The least severity that makes an incident: ``explicit``, else
    ``AIMSEC_INCIDENT_SEVERITY``, else ``medium``; ConfigurationError for another word."""
    floor = resolve(explicit, "AIMSEC_INCIDENT_SEVERITY", "medium", parse_severity)
    try:
        return parse_severity(floor)
    except ValueError as exc:
        raise ConfigurationError(f"incident floor (AIMSEC_INCIDENT_SEVERITY): {exc}") from None


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def redis_url(explicit: str | None = None) -> str | None:
    """Where alert groups are shared across replicas: the argument, else
    ``AIMSEC_REDIS_URL``, else the monitoring store's ``AIMSEC_STORE_URL`` when it is a
    Redis URL (one Redis serves both), else ``None`` (groups are per process)."""
    found = resolve(explicit, "AIMSEC_REDIS_URL", None, str)
    if found is None:
        store = resolve_store_url(None)
        if store.startswith(REDIS_SCHEMES):
            found = store
    elif not found.startswith(REDIS_SCHEMES):
        source = "redis_url" if explicit is not None else "AIMSEC_REDIS_URL"
        raise ConfigurationError(
            f"{source} must be a redis://, rediss:// or unix:// URL; received one starting "
            f"{found[:6]!r}")
    return found


def _check_timeout(value: Any, what: str, source: str) -> None:
    """A timeout socket and timer can use: a number of seconds > 0 and at most
    ``threading.TIMEOUT_MAX`` (0 made a non-blocking socket, NaN or a negative one a
    ValueError at every alert, one beyond the bound an OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 < value <= threading.TIMEOUT_MAX:
        raise ConfigurationError(f"the {what} timeout ({source}) must be a finite number of "
                                 f"seconds > 0 and at most {threading.TIMEOUT_MAX:.0f} (what "
                                 f"a socket or timer can wait); received {value!r:.40}")


def _unusable_host(host: str) -> bool:
    """Whether no resolver can look ``host`` up: a space or control character, a port or
    brackets, or a name the idna codec refuses (a label empty or over 63 characters, a
    character no encoding holds), which raised UnicodeError out of every connection."""
    if not host.isprintable() or any(c.isspace() for c in host):
        return True
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        pass
    try:
        host.encode("idna")
    except UnicodeError:
        return True
    return any(c in host for c in ":[]/@")


def _unusable_ca(cafile: str) -> str | None:
    """Why TLS cannot take ``cafile`` as its CA bundle (no certificate in it, unreadable),
    or ``None``."""
    try:
        ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return f"cannot be loaded ({type(exc).__name__}: {str(exc)[:120]})"
    return None


def _unusable_url(url: str) -> str | None:
    """Why no request can be made to ``url`` (told without quoting it: a webhook URL may
    carry its token), or ``None``."""
    if not url.isprintable() or any(c.isspace() for c in url):
        return "holds a space or control character"
    try:
        parts = urlsplit(url)
        parts.port  # raises for a port that is not a number in 0..65535
    except ValueError:
        return "is malformed (a bracket or port that cannot be parsed)"
    if not parts.hostname:
        return "names no host"
    if _unusable_host(parts.hostname):
        return "names a host no resolver can look up (a label empty or over 63 characters)"
    return None


def _port(value: Any) -> int | None:
    """``alert_settings['smtp_settings']['port']`` as an integer (``None`` if absent)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value)
    raise ConfigurationError("alert_settings['smtp_settings']['port'] must be an integer "
                             f"in 1..65535; received {value!r:.40}")


def parse_addresses(raw: str) -> tuple[str, ...]:
    addresses = tuple(a.strip() for a in raw.split(",") if a.strip())
    for address in addresses:
        _check_address(address)
    return addresses


def _check_address(address: Any) -> None:
    """``ValueError`` unless ``address`` is printable text shaped like name@domain: a
    control or line-separator character (U+2028) in a header made the email library refuse
    every alert, its outbox copy included."""
    if not isinstance(address, str) or "@" not in address or not address.isprintable():
        raise ValueError(f"{address!r:.80} is not an email address; expected name@domain")


def _default_sender() -> str:
    return f"aimsec@{socket.gethostname() or 'localhost'}"


__all__ = ["GroupingPolicy", "SmtpSettings", "WebhookSettings", "enabled", "incident_floor",
           "redis_url"]
