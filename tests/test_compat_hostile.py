"""Hostile arguments to the original tool's classes and to the detector choice: each is
a typed error naming what was wrong, never a raw Python exception."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimsec_core import (AIModelProtector, AISecurityMonitor, ChatbotThreatModeler,
                         ConfigurationError)
from aimsec_core.adapter import Capabilities
from aimsec_core.detection import select_detectors


@pytest.mark.parametrize("constraints", ["x", 5, [("max_value", 1.0)]])
def test_protector_constraints_that_are_not_a_dict_are_refused(constraints):
    # they raised ValueError / TypeError from dict()
    with pytest.raises(ConfigurationError, match="input_constraints must be a dict"):
        AIModelProtector("prod", constraints)


@pytest.mark.parametrize("thresholds, match", [
    ({"max_requests_per_minute": "abc"}, "whole number of at least 1"),
    ({"max_requests_per_minute": float("nan")}, "whole number of at least 1"),
    ({"max_requests_per_minute": 2.7}, "whole number of at least 1"),
    ({"max_requests_per_minute": True}, "whole number of at least 1"),
    ({"max_requests_per_minute": 0}, "whole number of at least 1"),
    ([1], "alert_thresholds'\\] must be a dict"),
])
def test_monitor_thresholds_of_the_wrong_kind_are_refused(tmp_path, thresholds, match):
    # 'abc' and NaN raised ValueError from int(), a list AttributeError; 2.7 became 2
    with pytest.raises(ConfigurationError, match=match):
        AISecurityMonitor("m", {"alert_thresholds": thresholds}, tmp_path)


def test_monitor_whole_float_threshold_still_works(tmp_path):
    monitor = AISecurityMonitor("m", {"alert_thresholds": {"max_requests_per_minute": 3.0}},
                                tmp_path)
    try:
        assert monitor.max_requests_per_minute == 3
    finally:
        monitor.close()


def test_monitor_logging_path_that_is_a_file_is_refused(tmp_path):
    # it was accepted, and every incident and alert written under it was then lost
    path = tmp_path / "afile"
    path.write_text("x")
    with pytest.raises(ConfigurationError, match="is not a folder"):
        AISecurityMonitor("m", {}, path)


@pytest.mark.parametrize("hours", [10 ** 400, -(10 ** 400)])
def test_summary_hours_beyond_any_float_are_refused(tmp_path, hours):
    # it raised OverflowError from math.isfinite
    monitor = AISecurityMonitor("m", {}, tmp_path)
    try:
        with pytest.raises(ConfigurationError, match="hours must be a positive number"):
            monitor.get_incident_summary(hours)
    finally:
        monitor.close()


@pytest.mark.parametrize("assessment, match", [
    (None, "assessment must be a dict"),
    ({}, "risk_score"),
    ({"risk_score": "x"}, "risk_score"),
    ({"risk_score": float("nan")}, "risk_score"),  # raised StopIteration
    ({"risk_score": 50, "missing_controls": "rate_limiting"}, "missing_controls"),
    ({"risk_score": 50, "missing_controls": [["x"]]}, "missing_controls"),
    ({"risk_score": 50, "threats": "ab"}, "threats"),
    ({"risk_score": 50, "threats": [{}]}, "threats"),
])
def test_a_report_of_a_malformed_assessment_is_refused(assessment, match):
    with pytest.raises(ConfigurationError, match=match):
        ChatbotThreatModeler().generate_report(assessment)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(["risk_score", "missing_controls", "threats"]),
                       st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=5),
                                 st.lists(st.one_of(st.text(max_size=5), st.integers(),
                                                    st.dictionaries(st.text(max_size=3),
                                                                    st.integers())),
                                          max_size=3))))
def test_any_assessment_reports_or_is_a_configuration_error(assessment):
    modeler = ChatbotThreatModeler()
    try:
        report = modeler.generate_report(assessment)
    except ConfigurationError:
        return
    assert report["risk_level"] in ("Critical", "High", "Medium", "Low")


def test_a_real_assessment_still_reports():
    modeler = ChatbotThreatModeler()
    report = modeler.generate_report(modeler.assess_implementation({"rate_limiting"}))
    assert report["risk_level"] == "Critical" and report["missing_controls"]


@pytest.mark.parametrize("detectors", [5, [{"name": "margin"}], [["margin"]],
                                       [np.array([1, 2])]])
def test_detector_lists_of_the_wrong_kind_are_refused(detectors):
    # they raised TypeError ('int' object is not iterable, unhashable type)
    with pytest.raises(ConfigurationError, match="detector"):
        select_detectors(detectors, Capabilities())


@pytest.mark.parametrize("junk", ["calibration.npz", 5, {"thresholds": {}}])
def test_a_guards_calibration_set_to_something_else_is_refused(junk):
    # it raised AttributeError (the setter read .sigmoid_output); the guard keeps its own
    import aimsec_core
    from aimsec_core import CalibrationError
    from tests.cases import digits_logistic

    guard = aimsec_core.guard_of(aimsec_core.guard(digits_logistic()))
    with pytest.raises(CalibrationError, match="Calibration .* or None; received"):
        guard.calibration = junk
    assert guard.calibration is None


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize("ip", [
    [[list(range(1000))] * 1000] * 10,  # ten million numbers, nested
    {"a": {"b": {"c": {"d": "x" * 10**6}}}},
    np.arange(3),  # an array: its truth value is an error
    _Unprintable(),
    b"\x00\xff" * 10**5,
])
def test_detect_threat_reads_any_ip_address_as_bounded_text(tmp_path, ip):
    monitor = AISecurityMonitor("m", {}, tmp_path)
    try:
        result = monitor.detect_threat({"ip_address": ip, "input_data": np.zeros(4)})
        assert set(result) >= {"timestamp", "severity", "threats_detected", "details"}
    finally:
        monitor.close()


def test_clip_keeps_plain_text_and_bounds_the_rest():
    from aimsec_core.incidents.model import clip

    assert clip("203.0.113.7") == "203.0.113.7"
    assert clip(42) == "42"
    assert len(clip([[0] * 10**5] * 10**3, 200)) <= 200
    assert clip(_Unprintable()) == "<_Unprintable>"
    # a small container shows whole, as its str did (not cut to reprlib's first 6 items)
    assert clip(list(range(10))) == str(list(range(10)))
    assert clip({f"k{i}": i for i in range(8)}) == str({f"k{i}": i for i in range(8)})


def test_export_report_writes_numpy_values_and_refuses_what_json_cannot_hold(tmp_path):
    import json
    from datetime import datetime, timezone

    modeler = ChatbotThreatModeler()
    report = {"risk_score": np.float64(12.5), "counts": np.arange(3), "tags": {"b", "a"},
              "when": datetime(2026, 1, 1, tzinfo=timezone.utc)}
    modeler.export_report(report, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "risk_score": 12.5, "counts": [0, 1, 2], "tags": ["a", "b"],
        "when": "2026-01-01T00:00:00+00:00"}
    cyclic: dict = {}
    cyclic["self"] = cyclic
    for bad in ({"x": object()}, cyclic):
        with pytest.raises(ConfigurationError, match="cannot be written as JSON"):
            modeler.export_report(bad, tmp_path / "bad.json")
    with pytest.raises(ConfigurationError, match="is a folder"):
        modeler.export_report({}, tmp_path)
