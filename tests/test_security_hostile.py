"""Secrets stay out of what the product shows, and misconfigured secrets fail without being
echoed: webhook URLs (their path is the token), Redis URLs (user and password), SMTP
logins. Real local servers where a delivery is attempted."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import aimsec_core
from aimsec_core import ConfigurationError
from aimsec_core.alerts import SmtpSettings, WebhookSettings
from aimsec_core.alerts.message import Alert

from tests.alerts.servers import SmtpServer, authenticator
from tests.servers import RedisServer

TOKEN = "XyZ5ecretT0ken"


def _alert() -> Alert:
    return Alert(kind="new", model="m", threat="extraction", client="key:9", severity="high",
                 count=1, suppressed=0, first_seen=0.0, last_seen=0.0, sent_at=0.0)


# -- webhook URLs ------------------------------------------------------------------------

def test_a_webhook_url_without_a_scheme_is_refused_without_echoing_it():
    # WebhookSettings built in code (not from ALERT_WEBHOOK_URL) with the scheme left off:
    # urllib's "unknown url type" quoted the whole URL into logs and delivery records; it
    # is now refused when the settings are built, showing only its first characters
    with pytest.raises(ConfigurationError, match="http") as raised:
        WebhookSettings(f"hooks.example/services/T0/B0/{TOKEN}")
    assert TOKEN not in str(raised.value)


@pytest.mark.parametrize("bad", [" ", "\x01", "\x7f"])
def test_a_webhook_url_with_a_space_or_control_character_is_not_echoed(bad):
    # http.client's InvalidURL quotes the request path, which is the token; such a URL is
    # refused when the settings are built (no request could use it)
    url = f"http://127.0.0.1:1/services/T0/B0/{TOKEN[:4]}{bad}{TOKEN[4:]}"
    with pytest.raises(ConfigurationError, match="ALERT_WEBHOOK_URL") as raised:
        WebhookSettings(url)
    assert TOKEN[:4] not in str(raised.value) and TOKEN[4:] not in str(raised.value)


# -- Redis URLs ----------------------------------------------------------------------------

def _estimator():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    return LogisticRegression().fit(rng.random((20, 3)), np.arange(20) % 2)


def test_the_threat_model_never_shows_the_redis_password(tmp_path):
    redis = RedisServer().start()
    try:
        url = f"redis://default:{TOKEN}@127.0.0.1:{redis.port}/0"
        guarded = aimsec_core.guard(_estimator(), store=url, incidents=False, alerts=False)
        assessment = aimsec_core.assess_guard(guarded)
        shown = json.dumps(assessment.as_dict(), default=str)
        assert f"127.0.0.1:{redis.port}/0" in shown  # the store is still named
        assert TOKEN not in shown and "default:" not in shown
        assert "shared_state" not in assessment.missing_ids
    finally:
        redis.stop()


def test_the_threat_model_command_never_shows_the_redis_password(tmp_path, capsys):
    from aimsec_core.cli import main

    config = tmp_path / "endpoint.json"
    config.write_text(json.dumps({
        "name": "fraud", "guard": {"store": f"redis://:{TOKEN}@127.0.0.1:1/0?password={TOKEN}"}}))
    code = main(["threat-model", "--model-config", str(config), "--json",
                 str(tmp_path / "tm.json"), "--markdown", str(tmp_path / "tm.md")])
    out = capsys.readouterr()
    assert code == 0, out.err
    written = (tmp_path / "tm.json").read_text() + (tmp_path / "tm.md").read_text()
    assert "127.0.0.1:1" in written
    for text in (out.out, out.err, written):
        assert TOKEN not in text


def test_a_pickled_guard_rebuilds_environment_alerts_without_carrying_their_secrets(
        tmp_path, monkeypatch):
    # the README says which secrets a pickle carries (a store URL, channels passed in
    # code) and which it does not: alert settings read from the environment are read
    # again where the pickle is loaded
    smtp = SmtpServer(authenticator=authenticator(b"alerts", TOKEN.encode()),
                      auth_require_tls=False).start()
    try:
        monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path))
        monkeypatch.setenv("ALERT_SMTP_SERVER", "127.0.0.1")
        monkeypatch.setenv("ALERT_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("ALERT_SMTP_TLS", "none")
        monkeypatch.setenv("ALERT_SMTP_USERNAME", "alerts")
        monkeypatch.setenv("ALERT_SMTP_PASSWORD", TOKEN)
        monkeypatch.setenv("ALERT_RECIPIENTS", "soc@example.org")
        monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:1/services/T0/B0/{TOKEN}X")
        monkeypatch.setenv("ALERT_WEBHOOK_SECRET", f"{TOKEN}Y")
        guarded = aimsec_core.guard(_estimator())
        try:
            data = pickle.dumps(guarded)
        finally:
            guarded.close()
    finally:
        smtp.stop()
    assert TOKEN.encode() not in data


# -- SMTP logins -------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["username", "password"])
def test_an_smtp_login_smtplib_cannot_send_is_refused_without_echoing_it(field):
    # smtplib sends AUTH as ASCII: a non-ASCII login raised UnicodeEncodeError from the
    # channel at every alert (not a DeliveryError: logged with its traceback, quoting a
    # character of the login and its position), and could never have worked
    login = {"username": "alerts", "password": "s3cret", field: "pässwörd-" + TOKEN}
    with pytest.raises(ConfigurationError) as raised:
        SmtpSettings(server="127.0.0.1", port=25, sender="a@example.org",
                     recipients=("soc@example.org",), security="none", **login)
    message = str(raised.value)
    assert TOKEN not in message and "ä" not in message and "position" not in message
    assert ("ALERT_SMTP_USERNAME" if field == "username" else "ALERT_SMTP_PASSWORD") in message


def test_an_ascii_smtp_login_still_reaches_the_server():
    server = SmtpServer(authenticator=authenticator(b"alerts", TOKEN.encode()),
                        auth_require_tls=False).start()
    try:
        from aimsec_core.alerts import SmtpChannel

        SmtpChannel(SmtpSettings(server="127.0.0.1", port=server.port, sender="a@example.org",
                                 recipients=("soc@example.org",), security="none",
                                 username="alerts", password=TOKEN)).send(_alert())
        [got] = server.inbox.messages
    finally:
        server.stop()
    assert got.login == b"alerts"


@pytest.fixture
def environment_redis(monkeypatch, tmp_path):
    """A local Redis named by ``AIMSEC_STORE_URL`` with a password in the URL."""
    redis = RedisServer().start()
    try:
        monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path))
        monkeypatch.setenv("AIMSEC_STORE_URL",
                           f"redis://default:{TOKEN}@127.0.0.1:{redis.port}/0")
        yield redis
    finally:
        redis.stop()


def test_a_store_url_from_the_environment_is_not_carried_by_a_pickle(environment_redis,
                                                                       monkeypatch):
    guarded = aimsec_core.guard(_estimator(), incidents=False, alerts=False)
    data = pickle.dumps(guarded)
    assert TOKEN.encode() not in data
    # where it is loaded, the copy reads AIMSEC_STORE_URL again: the same shared store
    restored = aimsec_core.guard_of(pickle.loads(data))
    assert restored.monitor.store.url == aimsec_core.guard_of(guarded).monitor.store.url
    # a store given in code travels by its URL, as the README says
    explicit = aimsec_core.guard(_estimator(), incidents=False, alerts=False,
                                 store=f"redis://127.0.0.1:{environment_redis.port}/0")
    copy = aimsec_core.guard_of(pickle.loads(pickle.dumps(explicit)))
    monkeypatch.delenv("AIMSEC_STORE_URL")
    assert copy.monitor.store.url.endswith(f":{environment_redis.port}/0")


def test_a_store_url_from_the_environment_stays_out_of_pickles_of_refits_and_clones(
        environment_redis):
    # a refit or clone rebuilds the guard around the same store object: it still came
    # from AIMSEC_STORE_URL, so a pickle of it must not carry the URL either
    from sklearn.base import clone

    guarded = aimsec_core.guard(_estimator(), incidents=False, alerts=False)
    x, y = np.random.default_rng(1).random((20, 3)), np.arange(20) % 2
    guarded.fit(x, y)
    guarded.predict(x[:2])  # the guard is rebound to the refitted model
    assert TOKEN.encode() not in pickle.dumps(guarded)
    assert TOKEN.encode() not in pickle.dumps(clone(guarded).fit(x, y))
