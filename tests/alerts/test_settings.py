"""Alert settings: the original alert_settings, the environment, and secrets kept out of
reprs and logs."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from aimsec_core import ConfigurationError
from aimsec_core.alerts import GroupingPolicy, SmtpChannel, SmtpSettings, WebhookSettings
from aimsec_core.alerts.wiring import security_sinks


def test_from_the_environment(monkeypatch):
    assert SmtpSettings.from_env() is None
    monkeypatch.setenv("ALERT_SMTP_SERVER", "mail.example.org")
    monkeypatch.setenv("ALERT_SENDER", "ml@example.org")
    monkeypatch.setenv("ALERT_RECIPIENTS", "a@example.org, b@example.org,")
    monkeypatch.setenv("ALERT_SMTP_USERNAME", "ml")
    monkeypatch.setenv("ALERT_SMTP_PASSWORD", "hunter2")
    s = SmtpSettings.from_env()
    assert (s.server, s.port, s.security, s.recipients, s.username) == (
        "mail.example.org", 587, "starttls", ("a@example.org", "b@example.org"), "ml")
    monkeypatch.setenv("ALERT_SMTP_PORT", "465")
    assert SmtpSettings.from_env().security == "ssl"


def test_from_the_original_alert_settings_with_the_environment_filling_in(monkeypatch):
    monkeypatch.setenv("ALERT_SMTP_PASSWORD", "from-env")
    s = SmtpSettings.from_alert_settings({
        "email_recipients": ["soc@example.org"],
        "smtp_settings": {"server": "smtp.example.org", "port": 25,
                          "sender": "ml@example.org", "use_tls": False, "username": "u"}})
    assert (s.server, s.port, s.security, s.password) == ("smtp.example.org", 25, "none",
                                                          "from-env")
    assert SmtpSettings.from_alert_settings({"email_recipients": ["x@y.z"]}) is None


def test_the_password_is_never_shown(monkeypatch, caplog):
    s = SmtpSettings("h", 25, "a@b.c", ("d@e.f",), password="hunter2", username="u")
    assert "hunter2" not in repr(s) and "hunter2" not in repr(SmtpChannel(s))
    assert "hunter2" not in repr(WebhookSettings("https://h/x", secret="hunter2"))
    monkeypatch.setenv("ALERT_SMTP_SERVER", "127.0.0.1")
    monkeypatch.setenv("ALERT_SMTP_PORT", "1")
    monkeypatch.setenv("ALERT_RECIPIENTS", "d@e.f")
    monkeypatch.setenv("ALERT_SMTP_PASSWORD", "hunter2")
    with caplog.at_level(logging.DEBUG):
        sinks = security_sinks(metrics=False)
        assert "hunter2" not in repr(sinks)
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize("env, value, match", [
    ("ALERT_SMTP_PORT", "smtp", "ALERT_SMTP_PORT"),
    ("ALERT_RECIPIENTS", "not-an-address", "ALERT_RECIPIENTS"),
    ("ALERT_SMTP_TLS", "maybe", "ALERT_SMTP_TLS"),
])
def test_bad_settings_name_the_variable(monkeypatch, env, value, match):
    monkeypatch.setenv("ALERT_SMTP_SERVER", "mail.example.org")
    monkeypatch.setenv("ALERT_RECIPIENTS", "a@example.org")
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError, match=match):
        SmtpSettings.from_env()


def test_no_recipients_is_an_error(monkeypatch):
    monkeypatch.setenv("ALERT_SMTP_SERVER", "mail.example.org")
    with pytest.raises(ConfigurationError, match="ALERT_RECIPIENTS"):
        SmtpSettings.from_env()


def test_grouping_policy_from_the_environment(monkeypatch):
    assert GroupingPolicy.resolve() == GroupingPolicy(30, 300, 14400, "high")
    monkeypatch.setenv("AIMSEC_ALERT_GROUP_WAIT", "5")
    monkeypatch.setenv("AIMSEC_ALERT_SEVERITY", "medium")
    assert GroupingPolicy.resolve(group_interval=60) == GroupingPolicy(5, 60, 14400, "medium")
    monkeypatch.setenv("AIMSEC_ALERT_SEVERITY", "severe")
    with pytest.raises(ConfigurationError, match="AIMSEC_ALERT_SEVERITY"):
        GroupingPolicy.resolve()


def test_webhook_url_must_be_http(monkeypatch):
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "file:///etc/passwd")
    with pytest.raises(ConfigurationError, match="http"):
        WebhookSettings.from_env()


def test_redis_url_must_be_a_redis_url_and_is_not_echoed(monkeypatch):
    from aimsec_core.alerts.settings import redis_url

    monkeypatch.delenv("AIMSEC_STORE_URL", raising=False)
    monkeypatch.setenv("AIMSEC_REDIS_URL", "10.0.0.5:6379")
    with pytest.raises(ConfigurationError, match="AIMSEC_REDIS_URL") as caught:
        redis_url()
    assert "6379" not in str(caught.value)
    monkeypatch.setenv("AIMSEC_REDIS_URL", "redis://:s3cret@10.0.0.5:6379/0")
    assert redis_url() == "redis://:s3cret@10.0.0.5:6379/0"
    monkeypatch.delenv("AIMSEC_REDIS_URL")
    monkeypatch.setenv("AIMSEC_STORE_URL", "redis://10.0.0.6:6379/1")
    assert redis_url() == "redis://10.0.0.6:6379/1"


def test_an_unparsable_store_url_names_the_variable_it_came_from(monkeypatch):
    # the error named only an "alert group Redis URL" the operator never set
    from aimsec_core.alerts.state import RedisGroupState
    from aimsec_core.alerts.settings import redis_url

    monkeypatch.delenv("AIMSEC_REDIS_URL", raising=False)
    monkeypatch.setenv("AIMSEC_STORE_URL", "redis://:pw@[::1")
    with pytest.raises(ConfigurationError, match="AIMSEC_STORE_URL") as caught:
        RedisGroupState.from_url(redis_url())
    assert "pw" not in str(caught.value)


def test_a_ca_bundle_that_is_not_a_file_is_a_configuration_error(monkeypatch, tmp_path):
    # accepted: every alert then failed its TLS handshake, retried for minutes
    monkeypatch.setenv("ALERT_SMTP_SERVER", "mail.example.org")
    monkeypatch.setenv("ALERT_RECIPIENTS", "soc@example.org")
    monkeypatch.setenv("ALERT_SMTP_CAFILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigurationError, match="ALERT_SMTP_CAFILE"):
        SmtpSettings.from_env()
    monkeypatch.setenv("ALERT_SMTP_TLS", "none")  # no TLS: the bundle is never read
    assert SmtpSettings.from_env().cafile is not None


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_a_ca_bundle_that_holds_no_certificate_is_a_configuration_error(monkeypatch, tmp_path,
                                                                         tls_ca, security):
    """A file that is not a PEM bundle was taken: with ssl every alert then raised a bare
    ssl.SSLError out of the channel (to the outbox with a traceback), with starttls each
    was retried for minutes before the outbox."""
    monkeypatch.setenv("ALERT_SMTP_SERVER", "mail.example.org")
    monkeypatch.setenv("ALERT_RECIPIENTS", "soc@example.org")
    monkeypatch.setenv("ALERT_SMTP_TLS", security)
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    monkeypatch.setenv("ALERT_SMTP_CAFILE", str(tmp_path / "notes.txt"))
    with pytest.raises(ConfigurationError, match="ALERT_SMTP_CAFILE.*expected a PEM file of "
                       "CA certificates"):
        SmtpSettings.from_env()
    tls_ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("ALERT_SMTP_CAFILE", str(tmp_path / "ca.pem"))
    assert SmtpSettings.from_env().cafile == str(tmp_path / "ca.pem")


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://127.0.0.1/x", "hooks.example/x"])
def test_a_webhook_built_directly_must_be_http_too(url):
    # urllib opened a file:// "webhook" as a local file: every alert was recorded as sent
    with pytest.raises(ConfigurationError, match="http"):
        WebhookSettings(url)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "10", True, 1e10,
                                     1e308])
def test_a_timeout_no_socket_can_use_is_a_configuration_error(timeout):
    # accepted: every alert then raised ValueError (non-blocking socket, out of range), or
    # beyond what a socket or timer can wait (threading.TIMEOUT_MAX, about 292 years) an
    # OverflowError out of the channel, the alert sent nowhere but the outbox
    with pytest.raises(ConfigurationError, match="timeout"):
        SmtpSettings("mail.example.org", 25, "a@example.org", ("b@example.org",),
                     security="none", timeout_s=timeout)
    with pytest.raises(ConfigurationError, match="timeout"):
        WebhookSettings("https://hooks.example/x", timeout_s=timeout)


def test_a_zero_smtp_timeout_from_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("ALERT_SMTP_SERVER", "mail.example.org")
    monkeypatch.setenv("ALERT_RECIPIENTS", "a@example.org")
    monkeypatch.setenv("ALERT_SMTP_TIMEOUT", "0")
    with pytest.raises(ConfigurationError, match="ALERT_SMTP_TIMEOUT"):
        SmtpSettings.from_env()


@pytest.mark.parametrize("variable", ["ALERT_SMTP_TIMEOUT", "AIMSEC_ALERT_GROUP_INTERVAL",
                                      "AIMSEC_ALERT_REPEAT_INTERVAL"])
@pytest.mark.parametrize("value", ["-1", "0", "nan"])
def test_a_duration_that_cannot_be_zero_says_so_whatever_was_wrong(monkeypatch, variable, value):
    # -1 was answered "expected a finite number of seconds >= 0", and then 0 refused too
    monkeypatch.setenv("ALERT_SMTP_SERVER", "mail.example.org")
    monkeypatch.setenv("ALERT_RECIPIENTS", "a@example.org")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        SmtpSettings.from_env() if variable == "ALERT_SMTP_TIMEOUT" else GroupingPolicy.resolve()
    assert variable in str(caught.value) and "seconds > 0" in str(caught.value)
    assert ">= 0" not in str(caught.value)


@pytest.mark.parametrize("settings, match", [
    ({"email_recipients": 5, "smtp_settings": {"server": "x"}}, "email_recipients"),
    ({"email_recipients": "not-an-address", "smtp_settings": {"server": "x"}},
     "email_recipients"),
    ({"email_recipients": ["a@b.c"], "smtp_settings": {"server": "x", "port": "abc"}}, "port"),
    ({"email_recipients": ["a@b.c"], "smtp_settings": {"server": "x", "port": 25.5}}, "port"),
    ({"email_recipients": ["a@b.c"], "smtp_settings": {"server": 5}}, "SMTP server"),
    ({"email_recipients": ["a@b.c"], "smtp_settings": {"server": "x", "use_tls": "maybe"}},
     "use_tls"),
    ({"email_recipients": ["a@b.c"], "smtp_settings": {"server": "x", "use_tls": [1]}},
     "use_tls"),
])
def test_the_original_alert_settings_with_wrong_types_are_configuration_errors(
        monkeypatch, settings, match):
    # raw TypeError / ValueError tracebacks before
    monkeypatch.delenv("ALERT_SMTP_SERVER", raising=False)
    with pytest.raises(ConfigurationError, match=match):
        SmtpSettings.from_alert_settings(settings)


def test_the_original_alert_settings_take_a_port_given_as_text(monkeypatch):
    found = SmtpSettings.from_alert_settings(
        {"email_recipients": ["a@b.c"], "smtp_settings": {"server": "x", "port": "465"}})
    assert (found.port, found.security) == (465, "ssl")


@pytest.mark.parametrize("field, value", [
    ("group_wait", float("nan")),   # the timer never came due: no alert, ever
    ("group_interval", -5),
    ("repeat_interval", float("inf")),
    # zero: a message every round for a group that keeps firing (Alertmanager refuses it)
    ("group_interval", 0),
    ("repeat_interval", 0),
    ("floor", "severe"),
    ("max_clients", -1),
    ("max_clients", 2.5),
])
def test_a_grouping_policy_built_directly_is_checked_like_the_environment(field, value):
    with pytest.raises(ConfigurationError, match=field):
        GroupingPolicy(**{field: value})


@pytest.mark.parametrize("env, value", [
    ("ALERT_SMTP_PORT", "70000"), ("ALERT_SMTP_PORT", "0"), ("ALERT_SMTP_TLS", "maybe"),
    ("ALERT_SENDER", "nobody"), ("ALERT_RECIPIENTS", "a@example.org, nobody"),
    ("ALERT_SMTP_SERVER", "   "),
])
def test_each_bad_smtp_variable_is_named_with_what_was_expected_and_received(
        monkeypatch, env, value):
    """A port out of range, an unknown TLS mode or a sender without "@" said what was wrong
    but not which variable held it."""
    monkeypatch.setenv("ALERT_SMTP_SERVER", "mail.example.org")
    monkeypatch.setenv("ALERT_RECIPIENTS", "a@example.org")
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError) as error:
        SmtpSettings.from_env()
    text = str(error.value)
    assert env in text and "expected" in text and value.split(", ")[-1] in text, text


@pytest.mark.parametrize("server", ["a" * 64 + ".example.org", "mail..example.org",
                                    "mail\udcff.example.org", "mail example.org",
                                    "mail.example.org:587", "[::1]"])
def test_an_smtp_server_no_resolver_can_look_up_is_refused_at_startup(monkeypatch, server):
    """Such a host was taken: a label over 63 characters, an empty one or a byte the
    environment could not decode made every alert raise a bare UnicodeError (the idna
    codec) out of the channel, to the outbox with a traceback; a space, a port or brackets
    failed each alert's lookup, retried for minutes."""
    monkeypatch.setenv("ALERT_SMTP_SERVER", server)
    monkeypatch.setenv("ALERT_RECIPIENTS", "a@example.org")
    with pytest.raises(ConfigurationError, match="ALERT_SMTP_SERVER.*expected a host name"):
        SmtpSettings.from_env()


@pytest.mark.parametrize("server", ["mail.example.org", "mail.example.org.", "127.0.0.1",
                                    "::1", "b\u00fccher.example", "localhost"])
def test_an_smtp_server_a_resolver_can_look_up_is_taken(monkeypatch, server):
    monkeypatch.setenv("ALERT_SMTP_SERVER", server)
    monkeypatch.setenv("ALERT_RECIPIENTS", "a@example.org")
    assert SmtpSettings.from_env().server == server


@pytest.mark.parametrize("url", [
    "http://exa mple.org/hook", "http://[::1/hook", "http:///hook", "https://h:99999/x",
    "https://h:port/x", "http://h/x\r\nX-Injected: 1", "https://" + "a" * 64 + ".example/x",
    "https://hooks..example/x",
])
def test_a_webhook_url_no_request_can_use_is_refused_at_startup_without_echoing_it(
        monkeypatch, url):
    """Such a URL was accepted and failed every alert (each one then went to the outbox,
    one a raw OverflowError traceback from the socket layer)."""
    monkeypatch.setenv("ALERT_WEBHOOK_URL", url + "?token=s3cret")
    with pytest.raises(ConfigurationError, match="ALERT_WEBHOOK_URL") as error:
        WebhookSettings.from_env()
    assert "s3cret" not in str(error.value) and "expected" in str(error.value)


def test_a_webhook_secret_utf_8_cannot_encode_is_refused_at_startup(monkeypatch):
    """A secret holding a byte the environment could not decode (read as a lone
    surrogate) was taken: every alert then raised a bare UnicodeEncodeError out of the
    channel while signing, and went to the outbox with a traceback."""
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "https://hooks.example/x")
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", "s3cret\udcff")
    with pytest.raises(ConfigurationError, match="ALERT_WEBHOOK_SECRET.*UTF-8") as error:
        WebhookSettings.from_env()
    assert "s3cret" not in str(error.value)


@pytest.mark.parametrize("env", ["ALERT_SENDER", "ALERT_RECIPIENTS"])
@pytest.mark.parametrize("bad", ["\u2028", "\x0b", "\x1b", "\x85"])
def test_an_address_with_a_control_or_line_separator_character_is_refused(monkeypatch, env,
                                                                          bad):
    """Only CR and LF were refused: a U+2028 made the email library refuse every alert's
    header (the outbox copy too, built from the same addresses: every alert lost), and
    other control characters went into To:/From: raw."""
    monkeypatch.setenv("ALERT_SMTP_SERVER", "mail.example.org")
    monkeypatch.setenv("ALERT_RECIPIENTS", "a@example.org")
    monkeypatch.setenv(env, f"soc@example.org{bad}x")
    with pytest.raises(ConfigurationError, match=env):
        SmtpSettings.from_env()
    with pytest.raises(ConfigurationError, match="ALERT_RECIPIENTS"):
        SmtpSettings(server="h", port=25, sender="a@example.org",
                     recipients=(f"soc@example.org{bad}x",), security="none")


def test_a_zero_repeat_interval_from_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("AIMSEC_ALERT_REPEAT_INTERVAL", "0")
    with pytest.raises(ConfigurationError, match="AIMSEC_ALERT_REPEAT_INTERVAL.*> 0"):
        GroupingPolicy.resolve()
    monkeypatch.setenv("AIMSEC_ALERT_REPEAT_INTERVAL", "60")
    monkeypatch.setenv("AIMSEC_ALERT_GROUP_WAIT", "0")  # no wait before the first: fine
    assert GroupingPolicy.resolve().group_wait == 0


@pytest.mark.parametrize("word, security", [("false", "none"), ("no", "none"), ("true", "starttls"),
                                            ("1", "starttls"), (False, "none"),
                                            ("", "none"), ("  ", "none"),  # blank: false
                                            (np.bool_(True), "starttls"),
                                            (np.bool_(False), "none")])
def test_use_tls_given_as_a_word_is_read_as_the_word(monkeypatch, word, security):
    # "false" is a true string: it turned STARTTLS on
    monkeypatch.delenv("ALERT_SMTP_SECURITY", raising=False)
    settings = SmtpSettings.from_alert_settings({"email_recipients": ["a@b.c"], "smtp_settings": {
        "server": "mail.example.org", "port": 25, "sender": "s@example.org", "use_tls": word}})
    assert settings.security == security
