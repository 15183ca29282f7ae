"""Alert emails over SMTP: ``smtplib`` with STARTTLS or implicit TLS, login and timeouts."""

from __future__ import annotations

import smtplib
import ssl

from .channel import DeliveryError
from .deadline import Deadline
from .message import Alert
from .settings import SmtpSettings

#: SMTP reply codes after which retrying the same message cannot succeed (RFC 5321 5yz,
#: except 552 exceeded storage, which can clear).
_PERMANENT = range(500, 600)


class SmtpChannel:
    """Sends each alert as one email (subject: severity, threat, model, client, count).

    A connection is opened per message: alerts are rare by construction (grouped), and
    a long-lived connection would only go stale. ``settings.timeout_s`` bounds the whole
    exchange (connect to QUIT), not only each read: a server that stalls or trickles its
    replies fails the attempt (retried) instead of holding the delivery thread. The password is never logged or shown
    in ``repr`` (see :class:`~aimsec_core.alerts.settings.SmtpSettings`).
    """

    name = "smtp"

    def __init__(self, settings: SmtpSettings, *, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        self.settings = settings
        self._context = ssl_context

    def __repr__(self) -> str:
        s = self.settings
        return f"SmtpChannel({s.server}:{s.port}, {s.security}, to={list(s.recipients)})"

    def _tls(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = ssl.create_default_context(cafile=self.settings.cafile)
        return self._context

    def send(self, alert: Alert) -> None:
        s = self.settings
        message = alert.email(s.sender, s.recipients)
        if s.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(timeout=s.timeout_s, context=self._tls())
        else:
            client = smtplib.SMTP(timeout=s.timeout_s)
        # built unconnected, so that the deadline covers the greeting too; STARTTLS checks
        # the certificate against the host given to the constructor, which is set here
        client._host = s.server
        deadline = Deadline(s.timeout_s, lambda: [getattr(client, "sock", None)])
        try:
            with deadline:
                try:
                    client.connect(s.server, s.port)
                    client.ehlo()
                    if s.security == "starttls":
                        client.starttls(context=self._tls())
                        client.ehlo()
                    if s.username:
                        client.login(s.username, s.password or "")
                    refused = client.send_message(message, from_addr=s.sender,
                                                  to_addrs=list(s.recipients))
                finally:
                    _hang_up(client)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(f"SMTP server {s.server}:{s.port} refused the login of "
                                f"{s.username!r} (code {exc.smtp_code}); check "
                                "ALERT_SMTP_USERNAME/ALERT_SMTP_PASSWORD",
                                retryable=False) from None  # the reply may echo credentials
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP server {s.server}:{s.port} answered {exc.smtp_code} "
                f"{_text(exc.smtp_error)}",
                retryable=exc.smtp_code not in _PERMANENT or exc.smtp_code == 552) from None
        except smtplib.SMTPNotSupportedError as exc:
            # an extension this configuration needs and the server does not offer
            # (STARTTLS, AUTH, SMTPUTF8 for a non-ASCII address): no retry brings it
            raise DeliveryError(f"SMTP server {s.server}:{s.port} does not support what "
                                f"the settings need ({exc}); expected a server offering "
                                "it, or other ALERT_SMTP_TLS/ALERT_SMTP_USERNAME "
                                "settings", retryable=False) from None
        except smtplib.SMTPRecipientsRefused as exc:
            # a 4yz per recipient is temporary (greylisting, a full mailbox): try again
            raise DeliveryError(f"SMTP server {s.server}:{s.port} refused every recipient: "
                                f"{_refusals(exc.recipients)}",
                                retryable=_temporary(exc.recipients)) from None
        except (smtplib.SMTPException, OSError) as exc:  # refused, timed out, TLS, hung up
            raise DeliveryError(f"cannot send the alert through {s.server}:{s.port} "
                                f"({s.security}): {type(exc).__name__}: {exc}"
                                f"{deadline.note()}") from None
        if refused:
            # the others have it: sending again would duplicate it for them, so the alert
            # goes to the fallback (the outbox) instead, and the refusal is recorded
            raise DeliveryError(f"SMTP server {s.server}:{s.port} delivered the alert to "
                                f"{len(s.recipients) - len(refused)} of "
                                f"{len(s.recipients)} recipients; refused "
                                f"{_refusals(refused)}", retryable=False)


def _hang_up(client: smtplib.SMTP) -> None:
    """QUIT, whatever the answer: ``with smtplib.SMTP()`` raised for a QUIT answered with
    anything but 221, so a message the server had already accepted was retried (sent
    twice) or copied to the outbox as undelivered; and a failure before the message
    must not be replaced by the hang-up's own."""
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        client.close()


def _text(raw: bytes | str) -> str:
    return (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw))[:200]


def _temporary(refusals: dict[str, tuple[int, bytes]]) -> bool:
    return any(not 500 <= code < 600 for code, _ in refusals.values())


def _refusals(refusals: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{address} ({code} {_text(reply)[:80]})"
                     for address, (code, reply) in sorted(refusals.items()))
