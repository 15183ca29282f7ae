"""The original tool's AIModelProtector keeps its API and dictionaries."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from aimsec_core import AIModelProtector, ConfigurationError


def test_protect_returns_the_original_keys(tmp_path):
    protector = AIModelProtector("prod", {"max_value": 1.0, "min_value": -1.0},
                                 log_file=str(tmp_path / "legacy.log"))
    report = protector.protect(np.full((2, 4), 0.5))
    assert set(report) == {"timestamp", "validation_result", "request_analysis",
                           "allow_inference"}
    assert report["allow_inference"] is True
    assert report["validation_result"] == {"valid": True, "issues": []}
    line = json.loads((tmp_path / "legacy.log").read_text().splitlines()[0])
    assert line["model"] == "prod" and line["decision"] == "allowed"


def test_validate_input_lists_issues():
    protector = AIModelProtector("prod", {"max_value": 1.0})
    assert protector.validate_input(None) == {"valid": False, "issues": [
        "input 'input' is None; expected an array or nested list of numbers"]}
    result = protector.validate_input([[0.5, 3.0, 0.2]])
    assert not result["valid"] and "expected every value in" in result["issues"][0]
    assert not protector.validate_input({"a": 1})["valid"]
    # the old default sparsity floor still applies: an all-zero input is unusual
    assert not protector.validate_input(np.zeros((2, 8)))["valid"]


def test_repeated_inputs_are_flagged_by_content():
    protector = AIModelProtector("prod")
    same = np.ones((1000,))
    for _ in range(7):
        protector.log_request(same)
    analysis = protector.analyze_requests()
    assert analysis["total_requests"] == 7 and analysis["unique_inputs"] == 1
    assert analysis["suspicious_patterns"][0]["type"] == "repeated_inputs"
    assert protector.protect(same)["allow_inference"] is False


def test_large_inputs_that_print_alike_are_different_requests():
    protector = AIModelProtector("prod")
    a = np.zeros(5000)
    b = a.copy()
    b[2500] = 1.0
    assert str(a) == str(b)
    protector.log_request(a)
    protector.log_request(b)
    assert protector.analyze_requests()["unique_inputs"] == 2


def test_no_logging_configuration_is_touched():
    root = logging.getLogger()
    before = list(root.handlers)
    AIModelProtector("prod").protect([[0.5]])
    assert root.handlers == before


@pytest.mark.parametrize("metadata", [["ip"], "203.0.113.7", 5])
def test_metadata_that_is_not_a_dict_is_a_configuration_error(tmp_path, metadata):
    # it raised AttributeError ('list' object has no attribute 'get')
    protector = AIModelProtector("prod", {"max_value": 1.0},
                                 log_file=str(tmp_path / "legacy.log"))
    with pytest.raises(ConfigurationError, match="metadata must be a dict"):
        protector.protect(np.full((2, 4), 0.5), metadata)
    assert protector.protect(np.full((2, 4), 0.5), None)["allow_inference"] is True
