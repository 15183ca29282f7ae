"""The original ChatbotThreatModeler's flow and keys, without its defects."""

from __future__ import annotations

import json
import logging

import pytest

from aimsec_core import ChatbotThreatModeler, ConfigurationError

CONTROLS = {"api_authentication", "api_key_rotation", "rate_limiting", "input_sanitization",
            "output_filtering", "prompt_validation", "cost_monitoring", "data_encryption",
            "audit_logging", "user_authentication", "session_management", "content_filtering",
            "error_handling", "backup_fallback"}


def test_the_original_example_flow(tmp_path):
    handlers = list(logging.getLogger().handlers)
    modeler = ChatbotThreatModeler()
    assert set(modeler.security_controls) == CONTROLS
    assert all(set(c) >= {"name", "description"} for c in modeler.security_controls.values())
    implemented = {"api_authentication", "rate_limiting", "input_sanitization", "audit_logging"}
    assessment = modeler.assess_implementation(implemented)
    assert set(assessment) == {"threats", "missing_controls", "risk_score", "timestamp"}
    # 10 of 14 missing, plus prompt injection (critical, validation and filtering missing)
    # and exposed credentials (critical, rotation missing)
    assert assessment["risk_score"] == pytest.approx(min(100, 100 * 10 / 14 + 20), abs=0.1)
    report = modeler.generate_report(assessment)
    assert set(report) == {"timestamp", "risk_score", "risk_level", "threats",
                           "missing_controls", "recommendations"}
    assert report["risk_level"] == "Critical"
    assert {t["category"] for t in report["threats"]} == {
        "Prompt Injection", "API Credential Exposure", "Cost Exploitation"}
    for threat in report["threats"]:
        assert set(threat) == {"category", "severity", "description", "impact", "likelihood",
                               "recommended_controls"}
    assert all(set(m) == {"name", "description"} for m in report["missing_controls"])
    modeler.export_report(report, tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert logging.getLogger().handlers == handlers  # no logging configured


@pytest.mark.parametrize("score, level", [(75, "Critical"), (74.9, "High"), (50, "High"),
                                          (25, "Medium"), (24.9, "Low"), (0, "Low")])
def test_risk_levels(score, level):
    report = ChatbotThreatModeler().generate_report(
        {"threats": [], "missing_controls": [], "risk_score": score, "timestamp": "t"})
    assert report["risk_level"] == level


def test_assessments_do_not_leak_into_each_other():
    modeler = ChatbotThreatModeler()
    full = modeler.assess_implementation(CONTROLS)
    empty = modeler.assess_implementation(set())
    full_again = modeler.assess_implementation(CONTROLS)
    assert full["risk_score"] == full_again["risk_score"] == 0 and full["threats"] == []
    assert empty["risk_score"] == 100 and len(empty["threats"]) == 3
    empty["threats"][0]["recommended_controls"].append("tampered")
    assert "tampered" not in modeler.assess_implementation(set())["threats"][0][
        "recommended_controls"]
    assert "tampered" not in ChatbotThreatModeler().threats[0]["recommended_controls"]


def test_a_control_shared_by_two_threats_is_listed_once():
    modeler = ChatbotThreatModeler()
    modeler.threats[1]["recommended_controls"].append("rate_limiting")  # this instance only
    assessment = modeler.assess_implementation({"api_authentication"})
    assert assessment["missing_controls"].count("rate_limiting") == 1
    report = modeler.generate_report(assessment)
    names = [m["name"] for m in report["missing_controls"]]
    assert len(names) == len(set(names))
    assert "rate_limiting" not in ChatbotThreatModeler().threats[1]["recommended_controls"]


def test_unknown_control_ids_are_refused():
    with pytest.raises(ConfigurationError, match="unknown control id") as caught:
        ChatbotThreatModeler().assess_implementation({"rate_limiting", "firewall"})
    assert isinstance(caught.value, ValueError) and "firewall" in str(caught.value)
