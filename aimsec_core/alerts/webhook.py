"""Alerts as JSON POSTs: Slack-compatible ``text``, the full alert, an optional signature.

The body is ``{"text": "<one line>", "alert": {...}}``: Slack and Mattermost incoming
webhooks show ``text`` (escaped: a client id cannot mention a channel or make a link) and
ignore the rest; other receivers read ``alert``, which holds the names as recorded. With a secret,
two headers let the receiver check origin and freshness (the scheme of Stripe's and
Slack's request signing): ``X-Aimsec-Timestamp`` (Unix seconds) and
``X-Aimsec-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from .channel import DeliveryError
from .deadline import Deadline
from .message import Alert
from ..config import redacted_url
from .settings import WebhookSettings


def chat_text(text: str) -> str:
    """``text`` as a chat receiver should show it, not act on it: ``&``, ``<`` and ``>``
    escaped as Slack's message formatting asks (``<!channel>``, ``<https://…|link>`` in a
    client id would otherwise notify everyone or show a link), and ``@`` kept from starting
    a mention (``@channel``, ``@all`` in Mattermost) by a zero-width joiner after it."""
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("@", "@\u2060"))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are failed deliveries: urllib would resend a POST answered 301-303 as a
    bodiless GET (an alert recorded as sent that never arrived) and carry the signature
    and credentials to wherever the answer points."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class _Watched:
    """Opens HTTP(S) connections through ``urllib`` (proxies and all) and keeps them, so a
    :class:`~aimsec_core.alerts.deadline.Deadline` can reach their sockets."""

    def __init__(self) -> None:
        self.connections: list[http.client.HTTPConnection] = []

    def sockets(self) -> list[Any]:
        return [c.sock for c in list(self.connections)]

    def opener(self) -> urllib.request.OpenerDirector:
        kept = self.connections

        def keep(kind: type[http.client.HTTPConnection]) -> Callable[..., Any]:
            def make(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
                kept.append(kind(*args, **kwargs))
                return kept[-1]
            return make

        class Http(urllib.request.HTTPHandler):
            def http_open(self, req: urllib.request.Request) -> Any:
                return self.do_open(keep(http.client.HTTPConnection), req)

        class Https(urllib.request.HTTPSHandler):
            def https_open(self, req: urllib.request.Request) -> Any:
                return self.do_open(keep(http.client.HTTPSConnection), req,
                                    context=self._context)

        return urllib.request.build_opener(_NoRedirects, Http, Https)

TIMESTAMP_HEADER = "X-Aimsec-Timestamp"
SIGNATURE_HEADER = "X-Aimsec-Signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float,
           tolerance_s: float = 300.0) -> bool:
    """For receivers: whether ``signature`` is ``body``'s and ``timestamp`` is within
    ``tolerance_s`` of ``now`` (a replayed old request fails).

    ``body`` is the request body exactly as received (``bytes``); ``timestamp`` and
    ``signature`` are the headers' values as ``str``. Raises ``TypeError`` naming the
    argument for any other type (a parsed or decoded body would never match)."""
    for name, value, expected in (("secret", secret, str), ("timestamp", timestamp, str),
                                  ("body", body, (bytes, bytearray, memoryview)),
                                  ("signature", signature, str)):
        if not isinstance(value, expected):
            wanted = "bytes, the request body exactly as received" if name == "body" \
                else "str"
            raise TypeError(f"webhook.verify: {name} must be {wanted}; received "
                            f"{type(value).__name__}")
    body = bytes(body)
    try:
        fresh = abs(now - float(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def _split_credentials(url: str) -> tuple[str, bytes | None]:
    """``url`` without its ``user:password@`` part, and that part (percent-decoded) for a
    Basic ``Authorization`` header; ``urllib`` would take it for part of the host name."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    return (urllib.parse.urlunsplit(parts._replace(netloc=netloc)),
            f"{user}:{password}".encode("utf-8"))


def _scrubbed(exc: BaseException, url: str) -> str:
    """``exc``'s text with the secret parts of ``url`` taken out. An error about the URL
    itself (``ValueError``: an unknown URL type; ``InvalidURL``: a space or control
    character) quotes the URL or its path, escaped in ways a replacement cannot follow, so
    its text is not shown at all."""
    if isinstance(exc, (ValueError, http.client.InvalidURL)):
        return ("the URL is malformed (expected http(s)://host[:port]/path with no spaces "
                "or control characters)")
    return str(exc).replace(url, redacted_url(url))[:300]


class WebhookChannel:
    """POSTs each alert to ``settings.url``. 5xx, 408, 429 and network errors are retried
    by the dispatcher; other 4xx answers are not (the receiver rejects the request).
    ``settings.timeout_s`` bounds the whole request (connect to the answer's first KiB),
    not only each read: a receiver that stalls or trickles fails the attempt (retried).
    A 2xx status line is a delivery, whatever the body after it does."""

    name = "webhook"

    def __init__(self, settings: WebhookSettings, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock

    def __repr__(self) -> str:
        return (f"WebhookChannel({self.settings.display_url!r}, "
                f"signed={self.settings.secret is not None})")

    def send(self, alert: Alert) -> None:
        body = json.dumps({"text": chat_text(alert.summary()),
                           "alert": alert.as_dict()}).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "aimsec-alerts"}
        if self.settings.secret:
            timestamp = str(int(self.clock()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self.settings.secret, timestamp, body)
        try:  # urllib quotes a URL it cannot use in its error: the URL is the secret
            target, credentials = _split_credentials(self.settings.url)
            if credentials is not None:
                headers["Authorization"] = ("Basic "
                                            + base64.b64encode(credentials).decode("ascii"))
            request = urllib.request.Request(target, data=body, headers=headers,
                                             method="POST")
        except ValueError as exc:
            raise DeliveryError(f"cannot reach the webhook {self.settings.display_url}: "
                                f"{type(exc).__name__}: {_scrubbed(exc, self.settings.url)}",
                                retryable=False) from None
        watched = _Watched()
        deadline = Deadline(self.settings.timeout_s, watched.sockets)
        try:
            with deadline, watched.opener().open(request,
                                                 timeout=self.settings.timeout_s) as answer:
                try:
                    answer.read(1024)
                except (http.client.HTTPException, OSError, ValueError):
                    pass  # a 2xx status line: the receiver took the alert, whatever the
                    # body does after it (a retry would post it again)
        except urllib.error.HTTPError as exc:
            moved = " (a redirect, not followed: configure the final URL)" if (
                300 <= exc.code < 400) else ""
            raise DeliveryError(
                f"webhook {self.settings.display_url} answered HTTP {exc.code} "
                f"{str(exc.reason)[:100]}{moved}",
                retryable=exc.code >= 500 or exc.code in (408, 429)) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError,
                ValueError) as exc:  # HTTPException: an answer that is not HTTP
            malformed = isinstance(exc, (ValueError, http.client.InvalidURL))
            raise DeliveryError(f"cannot reach the webhook {self.settings.display_url}: "
                                f"{type(exc).__name__}: {_scrubbed(exc, self.settings.url)}"
                                f"{deadline.note()}", retryable=not malformed) from None
