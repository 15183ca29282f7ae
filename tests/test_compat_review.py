"""The original tool's classes called the way migrating callers do: client addresses as
``ipaddress`` objects, numpy numbers for windows, arrays where text was expected, text
where numbers were expected."""

from __future__ import annotations

import ipaddress
import json
from fractions import Fraction

import numpy as np
import pytest

from aimsec_core import AIModelProtector, AISecurityMonitor


@pytest.fixture
def monitor(tmp_path):
    made = AISecurityMonitor("m", {}, tmp_path, channels=[])
    yield made
    made.close()


def test_protector_clients_given_as_ip_address_objects_stay_apart(tmp_path):
    protector = AIModelProtector("m", log_file=str(tmp_path / "audit.jsonl"))
    one, other = ipaddress.ip_address("203.0.113.7"), ipaddress.ip_address("2001:db8::1")
    for _ in range(6):  # the sixth identical request of one client is refused...
        result = protector.protect([1.0, 2.0, 3.0], {"ip": one})
    assert result["allow_inference"] is False
    # ...for that client alone: they used to share the anonymous budget
    assert protector.protect([1.0, 2.0, 3.0], {"ip": other})["allow_inference"] is True
    clients = protector.analyze_requests()["rate_per_client"]
    assert set(clients) == {"203.0.113.7", "2001:db8::1"}
    refusal = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()
               if '"rejected"' in line]
    assert refusal and refusal[0]["client"] == "203.0.113.7"
    assert refusal[0]["findings"][0]["check"] == "repeat"


@pytest.mark.parametrize("ip", [None, "", b""])
def test_protector_without_a_client_is_anonymous(ip):
    protector = AIModelProtector("m")
    protector.protect([1.0, 2.0], {"ip": ip})
    assert set(protector.analyze_requests()["rate_per_client"]) == {"anonymous"}


@pytest.mark.parametrize("window", [np.int64(5), np.float32(5.0), Fraction(5, 1)])
def test_analysis_over_a_numpy_window_is_plain_json(window):
    protector = AIModelProtector("m")
    protector.protect([1.0, 2.0], {"ip": "a"})
    analysis = protector.analyze_requests(window)
    json.dumps(analysis)  # raised: "Object of type int64 is not JSON serializable"
    assert analysis["window_minutes"] == 5 and type(analysis["window_minutes"]) in (int, float)


def test_analysis_over_a_window_beyond_any_float_is_refused_clearly():
    from aimsec_core import ConfigurationError

    with pytest.raises(ConfigurationError, match="window_minutes"):
        AIModelProtector("m").analyze_requests(Fraction(10 ** 400, 3))


@pytest.mark.parametrize("incident", [
    {"type": np.array([1, 2])},
    {"type": "inference_error", "details": {"ip_address": np.array([1, 2])}},
    {"type": "inference_error", "ip_address": np.array(["a", "b"])},
    {"type": "inference_error", "severity": np.array(["high", "low"])},
])
def test_log_incident_takes_arrays_where_text_was_expected(monitor, incident):
    monitor.log_incident(incident)  # raised numpy's "truth value ... is ambiguous"
    assert monitor.get_incident_summary()["total_incidents"] == 1


def test_log_incident_without_a_type_names_what_it_expects(monitor):
    from aimsec_core import ConfigurationError

    for incident in ({"type": ""}, {"type": None}, {"details": 1}, None):
        with pytest.raises(ConfigurationError, match="expects {'type'"):
            monitor.log_incident(incident)


def test_log_incident_of_the_type_anonymous_is_kept(monitor):
    monitor.log_incident({"type": "anonymous", "ip_address": ipaddress.ip_address("10.0.0.1")})
    summary = monitor.get_incident_summary()
    assert summary["most_common_threats"] == {"anonymous": 1}


@pytest.mark.parametrize("data", [["1", "2", "3"], np.array(["1e7"]), [b"1", b"2"],
                                  np.array(["2020-01-01"], dtype="datetime64[D]"),
                                  np.array([1, 2], dtype="timedelta64[s]"), [1 + 1j],
                                  np.array(["1.5", "2"], dtype=object),  # a pandas column
                                  np.array([b"1", 2.0], dtype=object)])
def test_input_that_is_not_numbers_cannot_be_analysed(monitor, data):
    # text of digits was parsed as numbers and a time read as a count: no threat found
    result = monitor.detect_threat({"ip_address": "a", "input_data": data})
    assert result["threats_detected"] == ["analysis_error"] and result["severity"] == "high"
    assert "expected real numbers" in result["details"]["analysis_error"]["error"]


@pytest.mark.parametrize("data", [[True, False, True], np.array([1, 2], dtype=object),
                                  np.float32(3.0), np.arange(6, dtype=np.int8)])
def test_numbers_of_every_kind_are_still_analysed(monitor, data):
    result = monitor.detect_threat({"ip_address": "a", "input_data": data})
    assert result["threats_detected"] == [], result


def test_monitor_clients_given_as_ip_address_objects_are_their_address(monitor):
    monitor.detect_threat({"ip_address": ipaddress.ip_address("203.0.113.7"),
                           "input_data": [1e9]})
    monitor.detect_threat({"ip_address": "", "input_data": [1e9]})
    assert monitor.get_incident_summary()["unique_ips"] == 2
    assert {i.client for i in monitor.store.incidents()} == {"203.0.113.7", "anonymous"}


def test_monitor_logging_path_under_a_file_is_refused_at_once(tmp_path):
    from aimsec_core import ConfigurationError

    taken = tmp_path / "afile"
    taken.write_text("x")
    # it was accepted; the first incident and its alert were then lost in the background
    with pytest.raises(ConfigurationError, match="logging_path .*cannot be used"):
        AISecurityMonitor("m", {}, taken / "sub", channels=[])


def test_monitor_security_log_path_naming_a_file_is_named(tmp_path, monkeypatch):
    from aimsec_core import ConfigurationError

    taken = tmp_path / "afile"
    taken.write_text("x")
    monkeypatch.setenv("SECURITY_LOG_PATH", str(taken))
    with pytest.raises(ConfigurationError, match="SECURITY_LOG_PATH .*is not a folder"):
        AISecurityMonitor("m", {}, channels=[])


def test_monitor_makes_its_logging_path(tmp_path):
    made = AISecurityMonitor("m", {}, tmp_path / "a" / "b", channels=[])
    try:
        assert (tmp_path / "a" / "b").is_dir()
    finally:
        made.close()
