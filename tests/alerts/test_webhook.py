"""Webhook alerts against a real local HTTP server: the body, the HMAC signature, and a
500 answer retried with backoff until delivered."""

from __future__ import annotations

import base64
import json

import pytest

from aimsec_core import ConfigurationError
from aimsec_core.alerts import (Backoff, DeliveryError, Dispatcher, Grouper, GroupingPolicy,
                                WebhookChannel, WebhookSettings)
from aimsec_core.alerts.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, verify
from aimsec_core.incidents import IncidentStore, Occurrence

from .servers import TrickleServer
from .test_smtp import alert


def test_body_is_slack_compatible_and_signed(hook_server, clock):
    server = hook_server()
    WebhookChannel(WebhookSettings(server.url, secret="k3y"), clock=clock).send(alert())
    [(headers, body)] = server.hook.requests
    payload = json.loads(body)
    assert payload["text"].startswith("aimsec HIGH: adversarial on model digits-torch from "
                                      "203.0.113.7: 12 occurrence(s), 11 suppressed")
    assert payload["alert"]["severity"] == "high" and payload["alert"]["count"] == 12
    assert payload["alert"]["taxonomy"]["atlas_techniques"] == ["AML.T0043", "AML.T0015"]
    assert headers["Content-Type"] == "application/json"
    timestamp, signature = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert timestamp == str(int(clock()))
    assert verify("k3y", timestamp, body, signature, now=clock())
    assert not verify("other", timestamp, body, signature, now=clock())
    assert not verify("k3y", timestamp, body + b" ", signature, now=clock())
    assert not verify("k3y", timestamp, body, signature, now=clock() + 301)  # replayed late
    assert signature == sign("k3y", timestamp, body)


@pytest.mark.parametrize("argument", ["body", "timestamp", "signature"])
def test_verify_names_an_argument_of_the_wrong_type(argument):
    timestamp, body = "1700000000", b'{"text": "x"}'
    given = {"timestamp": timestamp, "body": body,
             "signature": sign("k3y", timestamp, body)}
    assert verify("k3y", **given, now=1700000000.0)
    assert verify("k3y", timestamp, bytearray(body), given["signature"], now=1700000000.0)
    # a body decoded to str (or headers read as bytes) used to fail deep inside hmac
    given[argument] = given[argument].decode() if argument == "body" \
        else given[argument].encode()
    with pytest.raises(TypeError, match=f"{argument} must be .*; received "
                                        f"{type(given[argument]).__name__}"):
        verify("k3y", **given, now=1700000000.0)


def test_unsigned_without_a_secret(hook_server):
    server = hook_server()
    WebhookChannel(WebhookSettings(server.url)).send(alert())
    [(headers, _)] = server.hook.requests
    assert SIGNATURE_HEADER not in headers


def test_a_500_is_retried_with_backoff_until_delivered(tmp_path, hook_server, clock):
    server = hook_server([500, 503])
    store = IncidentStore(tmp_path / "db.sqlite3", clock=clock)
    dispatcher = Dispatcher(store, Grouper(GroupingPolicy(group_wait=0, floor="medium"),
                                           clock=clock),
                            [WebhookChannel(WebhookSettings(server.url), clock=clock)],
                            backoff=Backoff(base_s=2), clock=clock, start=False)
    dispatcher.submit(Occurrence("m", "extraction", "key:9", "high", clock(), clock()))
    tried_at = []
    for second in range(10):
        before = len(server.hook.requests)
        dispatcher.pump()
        tried_at += [second] * (len(server.hook.requests) - before)
        clock.advance(1)
    assert tried_at == [0, 2, 6]  # waits of 2 and 4 seconds
    assert [(d["status"], d["attempt"]) for d in store.deliveries()] == [
        ("retrying", 1), ("retrying", 2), ("sent", 3)]
    assert "HTTP 500" in store.deliveries()[0]["error"]
    bodies = [json.loads(body) for _, body in server.hook.requests]
    assert all(b["alert"]["threat"] == "extraction" for b in bodies)


def test_a_4xx_is_not_retried(hook_server):
    from aimsec_core.alerts import DeliveryError

    server = hook_server([404])
    try:
        WebhookChannel(WebhookSettings(server.url)).send(alert())
    except DeliveryError as exc:
        assert not exc.retryable and "404" in str(exc)
    else:
        raise AssertionError("a 404 must raise DeliveryError")


def test_a_redirect_is_a_failed_delivery_and_nothing_reaches_its_target(hook_server):
    # urllib would follow it: a POST answered 302 became a bodiless GET (an alert recorded
    # as sent that never arrived), with the signature and credentials sent to the target
    from aimsec_core.alerts import DeliveryError

    target = hook_server()
    for status in (301, 302, 303, 307, 308):
        server = hook_server([status])
        server.hook.location = target.url
        settings = WebhookSettings(server.url.replace("http://", "http://u:p@"),
                                   secret="s3cret")
        try:
            WebhookChannel(settings).send(alert())
        except DeliveryError as exc:
            assert not exc.retryable and str(status) in str(exc) and "redirect" in str(exc)
        else:
            raise AssertionError(f"a {status} must raise DeliveryError")
    assert target.hook.requests == []


def test_the_webhook_url_stays_out_of_errors_records_and_reprs(tmp_path, hook_server, clock):
    # an incoming-webhook URL carries its token in the path (Slack: /services/T../B../<token>)
    token = "XyZ5ecretT0ken"
    server = hook_server([500, 503])
    url = server.url.rstrip("/") + f"/services/T0/B0/{token}?key={token}"
    host_url = url.replace("http://", f"http://user:{token}@", 1)
    store = IncidentStore(tmp_path / "db.sqlite3", clock=clock)
    channel = WebhookChannel(WebhookSettings(host_url, secret="k3y"), clock=clock)
    dispatcher = Dispatcher(store, Grouper(GroupingPolicy(group_wait=0, floor="medium"),
                                           clock=clock), [channel],
                            backoff=Backoff(base_s=1), clock=clock, start=False)
    dispatcher.submit(Occurrence("m", "extraction", "key:9", "high", clock(), clock()))
    for _ in range(3):
        dispatcher.pump()
        clock.advance(2)
    errors = [d["error"] for d in store.deliveries() if d["error"]]
    [(headers, _)] = server.hook.requests[2:]  # the third attempt got through, logged in
    assert headers["Authorization"] == "Basic " + base64.b64encode(
        f"user:{token}".encode()).decode()
    assert len(errors) == 2 and "HTTP 500" in errors[0] and "HTTP 503" in errors[1]
    shown = [*errors, repr(channel), repr(channel.settings), str(channel.settings)]
    unreachable = WebhookChannel(WebhookSettings(f"http://127.0.0.1:1/hook/{token}"))
    try:
        unreachable.send(alert())
    except DeliveryError as exc:
        shown.append(str(exc))
    try:  # a URL no request can use is refused when configured, not at each alert
        WebhookSettings(f"http://[::1/{token}")
    except ConfigurationError as exc:
        shown.append(str(exc))
    assert len(shown) == 7
    assert not [text for text in shown if token in text]
    assert all("127.0.0.1" in text for text in shown[:5])


def test_a_webhook_url_that_is_not_http_is_refused_without_echoing_it(monkeypatch):
    import pytest

    from aimsec_core import ConfigurationError

    monkeypatch.setenv("ALERT_WEBHOOK_URL", "hooks.example/services/T0/B0/XyZ5ecret")
    with pytest.raises(ConfigurationError, match="ALERT_WEBHOOK_URL") as info:
        WebhookSettings.from_env()
    assert "XyZ5ecret" not in str(info.value)


def test_a_client_id_cannot_ping_a_channel_or_make_a_link_in_chat(hook_server):
    # Slack acts on <!channel> and <url|label>, Mattermost on @channel: a client id (from
    # a request) reached the text as it was
    server = hook_server()
    hostile = "<!channel> <https://evil.example|click> @channel & co"
    WebhookChannel(WebhookSettings(server.url)).send(alert(client=hostile))
    [(_, body)] = server.hook.requests
    payload = json.loads(body)
    text = payload["text"]
    assert "<" not in text and ">" not in text and "@channel" not in text
    assert "&lt;!channel&gt;" in text and "&amp; co" in text
    assert payload["alert"]["client"] == hostile  # the data keeps the id as recorded


def test_a_receiver_trickling_its_answer_cannot_hold_the_delivery_thread():
    # the status line itself trickles: cut short, it is no answer at all
    server = TrickleServer(b"HTTP/1.1" + b" " * 400 + b"200 OK\r\n\r\n")
    try:
        with pytest.raises(DeliveryError, match="whole exchange took over 1 s") as stalled:
            WebhookChannel(WebhookSettings(f"http://127.0.0.1:{server.port}/hook",
                                           timeout_s=1.0)).send(alert())
        assert stalled.value.retryable
        assert server.done.wait(10) and server.sent < 400
    finally:
        server.stop()


def test_an_answer_that_is_not_http_is_a_retryable_delivery_error():
    # http.client raises BadStatusLine (an HTTPException, not an OSError) for it: before,
    # it escaped the channel, which the dispatcher took for a bug and never retried
    server = TrickleServer(b"SSH-2.0-OpenSSH_9.6\r\n", interval_s=0)
    try:
        with pytest.raises(DeliveryError, match="BadStatusLine") as garbled:
            WebhookChannel(WebhookSettings(f"http://127.0.0.1:{server.port}/hook")
                           ).send(alert())
        assert garbled.value.retryable
    finally:
        server.stop()


def test_an_alert_the_receiver_answered_2xx_is_sent_even_if_its_body_never_ends():
    """The status line says the receiver took the alert; a body cut short or stalled
    after it (here: 10 of 5000 bytes, then silence until the deadline) failed the
    delivery as retryable, and every retry posted the alert again."""
    server = TrickleServer(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 10,
                           interval_s=0)
    try:
        WebhookChannel(WebhookSettings(f"http://127.0.0.1:{server.port}/hook",
                                       timeout_s=1.0)).send(alert())
    finally:
        server.stop()
