"""Alert emails over SMTP: ``smtplib`` with STARTTLS or implicit TLS, login and timeouts."""

from __future__ import annotations

import smtplib
import ssl

from .channel import DeliveryError
from .message import Alert
from .settings import SmtpSettings

#: SMTP reply codes after which retrying the same message cannot succeed (RFC 5321 5yz,
#: except 552 exceeded storage, which can clear).
_PERMANENT = range(500, 600)


class SmtpChannel:
    """Sends each alert as one email (subject: severity, threat, model, client, count).

    A connection is opened per message: alerts are rare by construction (grouped), and
    a long-lived connection would only go stale. The password is never logged or shown
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
        try:
            if s.security == "ssl":
                client: smtplib.SMTP = smtplib.SMTP_SSL(s.server, s.port, timeout=s.timeout_s,
                                                        context=self._tls())
            else:
                client = smtplib.SMTP(s.server, s.port, timeout=s.timeout_s)
            with client:
                client.ehlo()
                if s.security == "starttls":
                    client.starttls(context=self._tls())
                    client.ehlo()
                if s.username:
                    client.login(s.username, s.password or "")
                client.send_message(message, from_addr=s.sender, to_addrs=list(s.recipients))
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
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"SMTP server {s.server}:{s.port} refused every recipient: "
                                f"{sorted(exc.recipients)}", retryable=False) from None
        except (smtplib.SMTPException, OSError) as exc:  # refused, timed out, TLS, hung up
            raise DeliveryError(f"cannot send the alert through {s.server}:{s.port} "
                                f"({s.security}): {type(exc).__name__}: {exc}") from None


def _text(raw: bytes | str) -> str:
    return (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw))[:200]
