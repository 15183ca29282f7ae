"""Catalogues load and validate; the risk formula, hand-checked; assessments don't leak."""

from __future__ import annotations

import copy
import json

import pytest

from aimsec_core import ConfigurationError
from aimsec_core.threats import ThreatModeler, load_catalogue
from aimsec_core.threats.catalogue import parse_catalogue

TINY = {
    "format": "aimsec-threat-catalogue/1", "name": "tiny",
    "controls": {"a": {"name": "A", "description": "a"}, "b": {"name": "B", "description": "b"},
                 "c": {"name": "C", "description": "c"}},
    "threats": [
        {"id": "t1", "category": "T1", "severity": "critical", "likelihood": "high",
         "description": "d", "impact": "i", "controls": ["a", "b"], "owasp": ["ML01"],
         "atlas": {"techniques": ["AML.T0043"], "mitigations": ["AML.M0015"]}},
        {"id": "t2", "category": "T2", "severity": "low", "likelihood": "medium",
         "description": "d", "impact": "i", "controls": ["b", "c"], "owasp": ["ML05"],
         "atlas": {"techniques": ["AML.T0024.002"], "mitigations": ["AML.M0004"]}},
    ]}


def test_built_in_catalogues_load():
    endpoint, chatbot = load_catalogue("model-endpoint"), load_catalogue("chatbot")
    assert {t.id for t in endpoint.threats} == {
        "evasion", "model_extraction", "inversion_membership", "denial_of_service",
        "supply_chain", "feedback_poisoning", "output_integrity"}
    assert len(chatbot.controls) == 14 and len(chatbot.threats) == 3
    for threat in (*endpoint.threats, *chatbot.threats):
        assert threat.atlas_mitigations and (threat.owasp or threat.notes)
    with pytest.raises(TypeError):
        endpoint.controls["new"] = None  # read-only


def test_the_formula_by_hand():
    modeler = ThreatModeler(parse_catalogue(TINY))
    # weights: t1 = 3 (high) x 4 (critical) = 12, t2 = 2 (medium) x 1 (low) = 2
    only_a = modeler.assess({"a"})
    assert only_a.risk_score == round(100 * (12 * 1 / 2 + 2 * 2 / 2) / 14, 1)  # 57.1
    assert only_a.risk_level == "High"
    assert [m.id for m in only_a.missing_controls] == ["b", "c"]  # b: 12/2 + 2/2 = 7 points
    assert only_a.missing_controls[0].risk_reduction == round(100 * 7 / 14, 1)
    assert modeler.assess({"a", "b", "c"}).risk_score == 0
    assert modeler.assess(set()).risk_score == 100
    assert modeler.assess({"a", "b", "c"}).threats == []


def test_a_missing_control_is_listed_once():
    assessment = ThreatModeler(parse_catalogue(TINY)).assess({"a"})
    ids = [m.id for m in assessment.missing_controls]
    assert ids.count("b") == 1 and len(assessment.recommendations) == len(ids)


def test_unknown_ids_are_refused():
    modeler = ThreatModeler("chatbot")
    with pytest.raises(ConfigurationError, match=r"unknown control id \['rate_limitting'\]"):
        modeler.assess({"rate_limiting", "rate_limitting"})
    with pytest.raises(ValueError):
        modeler.assess("rate_limiting")  # a string is not a collection of ids


def test_two_assessments_do_not_leak():
    modeler = ThreatModeler("model-endpoint")
    everything = modeler.assess(set(modeler.catalogue.controls))
    nothing = modeler.assess(set())
    again = modeler.assess(set(modeler.catalogue.controls))
    assert everything.risk_score == again.risk_score == 0 and nothing.risk_score == 100
    assert [c.implemented for c in nothing.controls] == [False] * len(nothing.controls)


@pytest.mark.parametrize("damage, message", [
    (lambda c: c["threats"][0].update(controls=["a", "zz"]), "does not define"),
    (lambda c: c["threats"][0].update(owasp=["ML11"]), "owasp"),
    (lambda c: c["threats"][0].update(owasp=[]), "say why"),
    (lambda c: c["threats"][0]["atlas"].update(techniques=["T1059"]), "atlas techniques"),
    (lambda c: c["threats"][0].update(severity="severe"), "severity"),
    (lambda c: c["threats"][1].update(id="t1"), "twice"),
    (lambda c: c.update(format="v0"), "format"),
    (lambda c: c["controls"].update(d={"name": "D", "description": "d", "observed": "maybe"}),
     "observed"),
])
def test_bad_catalogue_files_are_refused(tmp_path, damage, message):
    broken = copy.deepcopy(TINY)
    damage(broken)
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ConfigurationError, match=message):
        load_catalogue(path)


def test_unreadable_catalogue_files_are_refused(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load_catalogue(tmp_path / "bad.json")
    with pytest.raises(ConfigurationError, match="built-in name"):
        load_catalogue(tmp_path / "absent.json")
