"""The original tool's classes called with values their callers do send by mistake or on
purpose: one NaN in an input, incident details JSON cannot hold, inputs nested thousands
deep, reports holding NaN, SMTP settings of the wrong kind."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aimsec_core import (AIModelProtector, AISecurityMonitor, ChatbotThreatModeler,
                         ConfigurationError)


def _nested(depth: int) -> list:
    value: list = [1.0]
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture
def monitor(tmp_path):
    made = AISecurityMonitor("m", {}, tmp_path, channels=[])
    yield made
    made.close()


def test_one_nan_does_not_hide_an_adversarial_pattern(monitor):
    steep = np.arange(25.0).reshape(5, 5) * 1000.0
    assert "potential_adversarial_pattern" in monitor.detect_threat(
        {"ip_address": "a", "input_data": steep})["threats_detected"]
    steep[0, 0] = np.nan  # made every check compare against NaN: nothing fired
    result = monitor.detect_threat({"ip_address": "b", "input_data": steep})
    assert result["severity"] == "high"
    assert "analysis_error" in result["threats_detected"]
    assert "NaN" in result["details"]["analysis_error"]["error"]


def test_a_request_without_input_data_cannot_be_analysed(monitor):
    result = monitor.detect_threat({"ip_address": "a"})  # read as a 0-d NaN: no threat
    assert result["severity"] == "high" and result["threats_detected"] == ["analysis_error"]
    # it said "the input holds 1 NaN value(s) of 1", of a request that held no input
    error = result["details"]["analysis_error"]["error"]
    assert "no 'input_data'" in error and "NaN" not in error


def test_clean_input_still_draws_nothing(monitor):
    result = monitor.detect_threat({"ip_address": "a", "input_data": np.ones((4, 4))})
    assert result == {**result, "severity": "low", "threats_detected": [], "details": {}}


@pytest.mark.parametrize("details", [{(1, 2): "tuple key"}, "cycle", _nested(5000)],
                         ids=["tuple-key", "cycle", "nested"])
def test_log_incident_takes_details_json_cannot_hold(monitor, details):
    if details == "cycle":
        details = {"a": 1}
        details["self"] = details
    monitor.log_incident({"type": "inference_error", "details": details})  # raised before
    summary = monitor.get_incident_summary()
    assert summary["total_incidents"] == 1
    assert summary["most_common_threats"] == {"inference_error": 1}


def test_log_request_of_an_input_nested_thousands_deep(tmp_path):
    protector = AIModelProtector("p", None, str(tmp_path / "audit.jsonl"))
    protector.log_request(_nested(5000), {"ip": "1"})  # RecursionError from repr before
    assert protector.analyze_requests()["total_requests"] == 1
    assert protector.protect(_nested(5000), {"ip": "1"})["allow_inference"] is False


@pytest.mark.parametrize("value", [float("nan"), float("inf"), np.float64("-inf")])
def test_export_report_refuses_what_is_not_json(tmp_path, value):
    modeler = ChatbotThreatModeler()
    report = modeler.generate_report(modeler.assess_implementation({"rate_limiting"}))
    target = tmp_path / "report.json"
    with pytest.raises(ConfigurationError, match="cannot be written as JSON"):
        modeler.export_report({**report, "extra": value}, target)  # wrote bare NaN before
    assert not target.exists()
    modeler.export_report(report, target)
    assert json.loads(target.read_text())["risk_score"] == report["risk_score"]


@pytest.mark.parametrize("settings", [
    {"smtp_settings": {"server": "mail", "port": "abc", "sender": "s@example.org"},
     "email_recipients": ["a@example.org"]},
    {"smtp_settings": {"server": "mail", "port": 25.7, "sender": "s@example.org"},
     "email_recipients": ["a@example.org"]},
    {"smtp_settings": {"server": "mail", "port": 25, "sender": "s@example.org"},
     "email_recipients": 5},
], ids=["port-text", "port-fraction", "recipients-int"])
def test_smtp_settings_of_the_wrong_kind_are_a_configuration_error(tmp_path, settings):
    with pytest.raises(ConfigurationError):
        AISecurityMonitor("m", settings, tmp_path)


@pytest.mark.parametrize("path", ["a\x00b", 5, ["x"]], ids=["nul", "int", "list"])
def test_paths_that_are_no_paths_are_refused_by_name(tmp_path, path):
    modeler = ChatbotThreatModeler()
    report = modeler.generate_report(modeler.assess_implementation(set()))
    with pytest.raises(ConfigurationError, match="filename must be a path"):
        modeler.export_report(report, path)
    with pytest.raises(ConfigurationError, match="logging_path must be a path"):
        AISecurityMonitor("m", {}, path)
    with pytest.raises(ConfigurationError, match="log_file must be a path"):
        AIModelProtector("p", None, path)
