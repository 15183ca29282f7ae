"""The original AISecurityMonitor: its quick start runs unchanged against a local SMTP
server; its dictionaries keep their keys; incidents survive a restart."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimsec_core import AISecurityMonitor, ConfigurationError

from tests.fakes import ListChannel
from .servers import SmtpServer


def quick_start(port: int, logging_path) -> AISecurityMonitor:
    """The original README's construction, argument for argument."""
    alert_settings = {
        "email_recipients": ["security@company.com"],
        "smtp_settings": {
            "server": "127.0.0.1",
            "port": port,
            "sender": "ai-security@company.com",
            "use_tls": True,
        },
        "alert_thresholds": {
            "max_requests_per_minute": 100,
            "suspicious_pattern_threshold": 0.8,
        },
    }
    return AISecurityMonitor("fraud_detection_v1", alert_settings, logging_path=logging_path)


def test_quick_start_flood_from_one_ip_sends_one_email(tmp_path, monkeypatch, tls_ca,
                                                       server_tls):
    tls_ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("ALERT_SMTP_CAFILE", str(tmp_path / "ca.pem"))  # the test's own CA
    server = SmtpServer(tls_context=server_tls, require_starttls=True).start()
    try:
        monitor = quick_start(server.port, tmp_path / "logs")
        rng = np.random.default_rng(0)
        results = [monitor.detect_threat({"ip_address": "198.51.100.9",
                                          "input_data": rng.random(20)}) for _ in range(150)]
        assert {r["severity"] for r in results[:100]} == {"low"}
        assert all(r["threats_detected"] == [] for r in results[:100])
        assert {r["severity"] for r in results[100:]} == {"medium"}
        assert all(r["threats_detected"] == ["rate_limit_exceeded"] for r in results[100:])
        assert set(results[0]) == {"timestamp", "severity", "threats_detected", "details"}
        summary = monitor.get_incident_summary()
        assert summary == {"total_incidents": 1,
                           "by_severity": {"low": 0, "medium": 1, "high": 0},
                           "unique_ips": 1, "most_common_threats": {"rate_limit_exceeded": 50}}
        assert monitor.close(30)
        [email] = server.inbox.messages
        assert email.tls
        assert email.rcpt_tos == ["security@company.com"]
        assert email.mail_from == "ai-security@company.com"
        assert "MEDIUM" in email.message["Subject"]
        assert "fraud_detection_v1" in email.message["Subject"]
        body = email.message.get_content()
        assert "Client:      198.51.100.9" in body and "Count:       50 occurrence(s)" in body
    finally:
        server.stop()


def test_incidents_survive_a_restart(tmp_path, clock):
    first = AISecurityMonitor("m", {}, tmp_path, clock=clock, channels=[ListChannel()])
    first.detect_threat({"ip_address": "1.1.1.1", "input_data": np.full(10, 5e6)})
    first.log_incident({"type": "inference_error", "details": {"error": "CUDA OOM",
                                                              "ip_address": "2.2.2.2"}})
    before = first.get_incident_summary()
    first.close()
    again = AISecurityMonitor("m", {}, tmp_path, clock=clock, channels=[ListChannel()])
    assert again.get_incident_summary() == before == {
        "total_incidents": 2, "by_severity": {"low": 0, "medium": 1, "high": 1},
        "unique_ips": 2, "most_common_threats": {"extreme_values": 1, "inference_error": 1}}
    clock.advance(25 * 3600)
    assert again.get_incident_summary()["total_incidents"] == 0
    assert again.get_incident_summary(hours=26)["total_incidents"] == 2


@pytest.mark.parametrize("data, threat", [
    (np.full((4, 4), 2e6), "extreme_values"),
    (np.zeros(1000), "suspicious_sparsity"),
    (np.arange(0, 10_000, 500.0), "potential_adversarial_pattern"),
    ("not numbers", "analysis_error"),
    ([[1, 2], [3]], "analysis_error"),
])
def test_input_patterns_are_high(tmp_path, data, threat):
    monitor = AISecurityMonitor("m", {}, tmp_path, channels=[ListChannel()])
    result = monitor.detect_threat({"ip_address": "10.0.0.1", "input_data": data})
    assert threat in result["threats_detected"] and result["severity"] == "high"
    assert threat in result["details"]
    monitor.close()


def test_alerts_are_grouped_per_ip_and_threat(tmp_path, clock):
    channel = ListChannel()
    monitor = AISecurityMonitor("m", {"alert_thresholds": {"max_requests_per_minute": 2}},
                                tmp_path, clock=clock, channels=[channel])
    for _ in range(40):
        monitor.detect_threat({"ip_address": "10.0.0.1", "input_data": np.zeros(500)})
    monitor.close()
    assert sorted((a.threat, a.count, a.severity) for a in channel.sent) == [
        ("rate_limit_exceeded", 38, "medium"), ("suspicious_sparsity", 40, "high")]


def test_bad_arguments_say_what_was_expected(tmp_path):
    with pytest.raises(ConfigurationError, match="alert_settings must be a dict"):
        AISecurityMonitor("m", ["not", "a", "dict"], tmp_path)
    monitor = AISecurityMonitor("m", {}, tmp_path, channels=[])
    with pytest.raises(ConfigurationError, match="ip_address"):
        monitor.detect_threat("1.2.3.4")
    with pytest.raises(ConfigurationError, match="type"):
        monitor.log_incident({"details": "no type"})
    monitor.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ip=st.one_of(st.text(max_size=300), st.none(), st.integers()),
       data=st.recursive(st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=5),
                                   st.integers()),
                         lambda inner: st.lists(inner, max_size=4), max_leaves=12))
def test_hostile_requests_never_raise(tmp_path, ip, data):
    monitor = _shared_monitor(tmp_path)
    result = monitor.detect_threat({"ip_address": ip, "input_data": data})
    assert result["severity"] in ("low", "medium", "high")
    assert set(result["threats_detected"]) == set(result["details"])


_monitors: dict[str, AISecurityMonitor] = {}


def _shared_monitor(path) -> AISecurityMonitor:
    key = str(path)
    if key not in _monitors:
        _monitors[key] = AISecurityMonitor("fuzz", {}, path, channels=[ListChannel()])
    return _monitors[key]


@pytest.mark.parametrize("hours", ["x", float("nan"), -1, 0, None])
def test_a_summary_window_that_is_not_a_positive_number_is_refused(tmp_path, clock, hours):
    # "x" raised ValueError; NaN and negative windows silently reported nothing
    monitor = AISecurityMonitor("m", {}, tmp_path, clock=clock, channels=[ListChannel()])
    try:
        with pytest.raises(ConfigurationError, match="hours must be a positive number"):
            monitor.get_incident_summary(hours=hours)
    finally:
        monitor.close()
