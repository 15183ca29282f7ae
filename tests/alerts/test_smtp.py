"""Alert emails against a real SMTP server (aiosmtpd on a loopback port): plain, STARTTLS
with login, implicit TLS; a server that is down, then back."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from aimsec_core.alerts import settings as alert_settings
from aimsec_core.alerts import (Alert, DeliveryError, Dispatcher, Grouper, GroupingPolicy,
                                SmtpChannel, SmtpSettings)
from aimsec_core.incidents import IncidentStore, Occurrence

from .servers import Inbox, SmtpServer, TrickleServer, authenticator

T0 = 1_800_000_000.0
settings_doc = alert_settings.__doc__  # the variables the settings read


def alert(**overrides) -> Alert:
    fields = dict(kind="new", model="digits-torch", threat="adversarial",
                  client="203.0.113.7", severity="high", count=12, suppressed=11,
                  first_seen=T0, last_seen=T0 + 20, sent_at=T0 + 30,
                  reasons=("sample 0: suspicion 9.1",), incident_id=7)
    fields.update(overrides)
    return Alert(**fields)


def settings(server, **overrides) -> SmtpSettings:
    fields = dict(server="127.0.0.1", port=server.port, sender="aimsec@example.org",
                  recipients=("soc@example.org", "oncall@example.org"), security="none",
                  timeout_s=10)
    fields.update(overrides)
    return SmtpSettings(**fields)


def test_the_email_names_model_severity_threat_client_and_count(smtp_server):
    SmtpChannel(settings(smtp_server)).send(alert())
    [got] = smtp_server.inbox.messages
    assert got.mail_from == "aimsec@example.org"
    assert got.rcpt_tos == ["soc@example.org", "oncall@example.org"]
    subject = got.message["Subject"]
    assert "HIGH" in subject and "digits-torch" in subject
    body = got.message.get_content()
    for expected in ("Model:       digits-torch", "Severity:    high",
                     "Threat:      adversarial", "Client:      203.0.113.7",
                     "Count:       12 occurrence(s)", "Suppressed:  11", "Incident:    #7",
                     "AML.T0043 Craft Adversarial Data", "ML01 Input Manipulation Attack",
                     "sample 0: suspicion 9.1"):
        assert expected in body
    assert got.message["To"] == "soc@example.org, oncall@example.org"


def test_a_message_for_one_occurrence_says_nothing_of_suppressed_duplicates():
    body = alert(count=1, suppressed=0).text()
    assert "Suppressed" not in body and "Count:       1 occurrence(s)" in body
    lines = alert().text().splitlines()
    assert lines[lines.index("Count:       12 occurrence(s)") + 1].startswith("Suppressed:  11")


def test_starttls_and_login(tls_ca, server_tls, client_tls):
    server = SmtpServer(tls_context=server_tls, require_starttls=True,
                        authenticator=authenticator(b"alerts", b"s3cret"),
                        auth_require_tls=True).start()
    try:
        channel = SmtpChannel(settings(server, security="starttls", username="alerts",
                                       password="s3cret"), ssl_context=client_tls)
        channel.send(alert())
        [got] = server.inbox.messages
        assert got.tls and got.login == b"alerts"
        with pytest.raises(DeliveryError) as refused:
            SmtpChannel(settings(server, security="starttls", username="alerts",
                                 password="wrong"), ssl_context=client_tls).send(alert())
        assert not refused.value.retryable and "wrong" not in str(refused.value)
    finally:
        server.stop()


def test_starttls_with_the_ca_file_from_the_environment(tmp_path, monkeypatch, tls_ca,
                                                        server_tls):
    server = SmtpServer(tls_context=server_tls, require_starttls=True).start()
    try:
        tls_ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        monkeypatch.setenv("ALERT_SMTP_SERVER", "127.0.0.1")
        monkeypatch.setenv("ALERT_SMTP_PORT", str(server.port))
        monkeypatch.setenv("ALERT_RECIPIENTS", "soc@example.org")
        monkeypatch.setenv("ALERT_SMTP_CAFILE", str(tmp_path / "ca.pem"))
        SmtpChannel(SmtpSettings.from_env()).send(alert())
        assert server.inbox.messages[0].tls
    finally:
        server.stop()


def test_implicit_tls(server_tls, client_tls):
    server = SmtpServer(ssl_context=server_tls).start()
    try:
        SmtpChannel(settings(server, security="ssl"), ssl_context=client_tls).send(alert())
        assert server.inbox.messages[0].message["Subject"].startswith("aimsec HIGH: adversarial")
    finally:
        server.stop()


def test_an_untrusted_certificate_is_refused_and_retryable(server_tls):
    server = SmtpServer(tls_context=server_tls).start()
    try:
        with pytest.raises(DeliveryError, match="starttls"):
            SmtpChannel(settings(server, security="starttls")).send(alert())
    finally:
        server.stop()


def test_hostile_client_names_cannot_inject_headers(smtp_server):
    SmtpChannel(settings(smtp_server)).send(
        alert(client="x\r\nBcc: victim@example.org\r\n", model="m\nX-Evil: 1"))
    [got] = smtp_server.inbox.messages
    assert got.message["Bcc"] is None and got.message["X-Evil"] is None
    assert got.rcpt_tos == ["soc@example.org", "oncall@example.org"]


@pytest.mark.parametrize("field", ["client", "model"])
def test_an_encoded_word_cannot_smuggle_headers_into_the_subject(smtp_server, field):
    # "=?utf-8?b?...?=" was decoded when the subject was set: its CR LF and "Bcc:" became
    # a header of the message (in the outbox's .eml files as in the mail sent)
    smuggled = "=?utf-8?b?eA0KQmNjOiB2aWN0aW1AZXhhbXBsZS5vcmcNClgtRXZpbDogMQ0K?="
    sent = alert(**{field: smuggled})
    email = sent.email("aimsec@example.org", ["soc@example.org"])
    assert email["Bcc"] is None and email["X-Evil"] is None
    assert b"\nBcc:" not in email.as_bytes() and b"\nX-Evil:" not in email.as_bytes()
    SmtpChannel(settings(smtp_server)).send(sent)
    [got] = smtp_server.inbox.messages
    assert got.message["Bcc"] is None and got.message["X-Evil"] is None
    assert "victim@example.org" not in str(got.message["Subject"])
    assert smuggled in got.message.get_content()  # the body names it as it was sent


def test_a_non_ascii_client_id_travels_as_seven_bit_text(smtp_server):
    # an 8-bit body needs 8BITMIME, which a strict server may not offer
    sent = alert(client="münchen-Ω-客户", reasons=("naïve: ✓",))
    raw = sent.email("aimsec@example.org", ["soc@example.org"]).as_bytes()
    assert max(raw) < 128
    SmtpChannel(settings(smtp_server)).send(sent)
    [got] = smtp_server.inbox.messages
    assert "münchen-Ω-客户" in got.message.get_content()


def test_server_down_then_back(tmp_path, clock, caplog):
    """Predictions go on while the mail server is down; the failure is recorded; the alert
    arrives once the server is back."""
    import aimsec_core
    from sklearn.linear_model import LogisticRegression

    server = SmtpServer()  # not started: nothing listens on its port
    store = IncidentStore(tmp_path / "incidents.sqlite3", clock=clock)
    dispatcher = Dispatcher(store, Grouper(GroupingPolicy(group_wait=30), clock=clock),
                            [SmtpChannel(settings(server, timeout_s=5))], clock=clock,
                            start=False)
    model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    guarded = aimsec_core.guard(model, name="lr", constraints={"max_value": 1.0},
                                sinks=[aimsec_core.IncidentSink(dispatcher, floor="medium")],
                                policy=False)  # no lockout after the refused calls below
    adversarial = Occurrence("lr", "adversarial", "203.0.113.7", "high", clock(), clock())
    dispatcher.submit(adversarial)
    with aimsec_core.client("203.0.113.7"):
        for _ in range(5):
            with pytest.raises(aimsec_core.ValueRangeError):
                guarded.predict(np.eye(4) * 3)
        assert guarded.predict(np.eye(4)).tolist() == model.predict(np.eye(4)).tolist()
    clock.advance(30)
    with caplog.at_level(logging.WARNING, logger="aimsec.alerts"):
        dispatcher.pump()
    [failure] = store.deliveries()
    assert (failure["channel"], failure["status"]) == ("smtp", "retrying")
    assert "Connection refused" in failure["error"] or "refused" in failure["error"].lower()
    server.start()
    try:
        clock.advance(1)
        dispatcher.pump()
        [got] = server.inbox.messages
        assert "adversarial" in got.message["Subject"]
        assert store.deliveries()[-1]["status"] == "sent"
        assert [i.threat for i in store.incidents()] == ["adversarial", "range"]
    finally:
        server.stop()


class Greylisting(Inbox):
    """Refuses ``oncall@`` with a temporary 450 at RCPT TO, as greylisting servers do."""

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if address.startswith("oncall@"):
            return "450 4.2.0 greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def greylisting_server():
    server = SmtpServer()
    server.inbox = Greylisting()
    yield server.start()
    server.stop()


def test_a_temporary_refusal_of_every_recipient_is_retried(greylisting_server):
    with pytest.raises(DeliveryError, match="450") as refused:
        SmtpChannel(settings(greylisting_server, recipients=("oncall@example.org",))
                    ).send(alert())
    assert refused.value.retryable
    assert greylisting_server.inbox.messages == []


def test_a_recipient_refused_while_others_got_it_is_not_silently_sent(greylisting_server):
    with pytest.raises(DeliveryError, match="1 of 2 recipients.*oncall@example.org") as part:
        SmtpChannel(settings(greylisting_server)).send(alert())
    assert not part.value.retryable  # a retry would send the others a second copy
    assert [m.rcpt_tos for m in greylisting_server.inbox.messages] == [["soc@example.org"]]


def test_a_server_trickling_its_greeting_cannot_hold_the_delivery_thread():
    server = TrickleServer(b"220 " + b"x" * 400 + b"\r\n")  # 20 s at one byte per 50 ms
    try:
        with pytest.raises(DeliveryError, match="whole exchange took over 1 s") as stalled:
            SmtpChannel(settings(server, timeout_s=1.0)).send(alert())
        assert stalled.value.retryable
        assert server.done.wait(10) and server.sent < 400
    finally:
        server.stop()


class _QuitRefused(Inbox):
    """Accepts every message, then answers QUIT with ``reply`` instead of 221."""

    def __init__(self, reply: str) -> None:
        super().__init__()
        self.reply = reply

    async def handle_QUIT(self, server, session, envelope):  # noqa: N802
        return self.reply


@pytest.mark.parametrize("reply", ["421 shutting down", "500 what"])
def test_a_message_the_server_accepted_is_sent_whatever_it_answers_to_quit(reply):
    """smtplib raises for a QUIT answered with anything but 221: a message the server had
    already taken (250 after DATA) was recorded as failed and sent again (421, retried)
    or copied to the outbox as undelivered (5xx)."""
    server = SmtpServer()
    server.inbox = _QuitRefused(reply)
    server.start()
    try:
        SmtpChannel(SmtpSettings(server="127.0.0.1", port=server.port, sender="a@example.org",
                                 recipients=("soc@example.org",), security="none")
                    ).send(alert())
    finally:
        server.stop()
    assert len(server.inbox.messages) == 1


class _Refusing(Inbox):
    """Refuses every message with a multi-line reply that holds control characters."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        return "554-no\r\n554 aimsec alert via smtp sent (attempt 1) \x1b[2J"


def test_a_servers_reply_reaches_errors_and_logs_as_one_printable_line():
    """A multi-line reply (or one holding escape sequences) went into the error, hence
    the log, as several lines: a mail server could forge log lines."""
    server = SmtpServer()
    server.inbox = _Refusing()
    server.start()
    try:
        with pytest.raises(DeliveryError) as refused:
            SmtpChannel(SmtpSettings(server="127.0.0.1", port=server.port,
                                     sender="a@example.org", recipients=("soc@example.org",),
                                     security="none")).send(alert())
    finally:
        server.stop()
    text = str(refused.value)
    assert "554" in text and "no" in text and text.isprintable(), text


@pytest.mark.parametrize("overrides", [
    {"security": "starttls"},  # a server offering no STARTTLS
    {"username": "alerts", "password": "secret"},  # nor AUTH
    {"sender": "al\u00e9rtes@example.org"},  # nor SMTPUTF8, for a non-ASCII sender
])
def test_a_server_lacking_an_extension_the_settings_need_is_not_retried(overrides):
    """Each was retried with backoff for about 17 minutes, though no retry can give the
    server an extension: the alert now goes to the fallback at once, saying why."""
    server = SmtpServer(enable_SMTPUTF8=False).start()
    try:
        with pytest.raises(DeliveryError) as refused:
            SmtpChannel(settings(server, **overrides)).send(alert())
        assert not refused.value.retryable
        assert "does not support" in str(refused.value)
        assert "secret" not in str(refused.value)
        # it names the settings to change by the variables that exist (ALERT_SMTP_TLS;
        # there is no ALERT_SMTP_SECURITY)
        named = set(re.findall(r"ALERT_[A-Z_]+", str(refused.value)))
        assert named and named <= set(re.findall(r"ALERT_[A-Z_]+", settings_doc)), named
        assert server.inbox.messages == []
    finally:
        server.stop()
