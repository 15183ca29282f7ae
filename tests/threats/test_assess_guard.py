"""assess_guard reads a live guard's configuration: turning a control off raises the risk
and names that control missing; nothing comes from a hand-typed list."""

from __future__ import annotations

import json

import pytest

import aimsec_core
from aimsec_core import ConfigurationError, assess_guard, guard_of
from aimsec_core.cli import main
from aimsec_core.monitoring import build_monitor
from aimsec_core.threats import load_catalogue
from aimsec_core.threats.guard_controls import GUARD_CONTROLS


@pytest.fixture(scope="module")
def digits_model():
    pytest.importorskip("sklearn")
    from sklearn.naive_bayes import GaussianNB

    from aimsec_core import digits

    data = digits.load(0)
    return GaussianNB().fit(data.x_train, data.y_train), data


@pytest.fixture
def guarded(digits_model, tmp_path):
    model, data = digits_model
    guarded = aimsec_core.guard(model, name="digits-nb", mode="enforce",
                                constraints={"min_value": 0.0, "max_value": 1.0},
                                sinks=[aimsec_core.AuditLog(tmp_path)],
                                policy={"max_requests_per_minute": 100,
                                        "max_failed_attempts": 5})
    guarded.calibrate(data.x_calibration, fpr=0.05, detectors=["sparsity"])
    return guarded


def _repoliced(guard, **policy):
    """The guard's monitoring rebuilt with ``policy``, as ``guard(model, policy=...)``
    would build it."""
    guard.monitor = build_monitor(guard.name, policy, "memory://", guard.clock)


def _implemented(assessment):
    return {c.id for c in assessment.controls if c.implemented}


def test_the_table_covers_exactly_the_guard_observed_controls():
    catalogue = load_catalogue("model-endpoint")
    observed = {c.id for c in catalogue.controls.values() if c.observed == "guard"}
    assert set(GUARD_CONTROLS) == observed


def test_controls_come_from_the_configuration(guarded):
    assessment = assess_guard(guarded)
    assert {"input_validation", "enforce_mode", "adversarial_detection", "rate_limiting",
            "client_lockout", "audit_logging", "inputs_not_logged"} <= _implemented(assessment)
    details = {c.id: c.detail for c in assessment.controls}
    assert "5.0% false positives" in details["adversarial_detection"]
    assert "PRADA" in details["extraction_monitoring"]  # on by default
    assert "memory://" in details["shared_state"] and "shared_state" not in _implemented(
        assessment)
    assert all(c.source == "guard" for c in assessment.controls
               if c.id in GUARD_CONTROLS)


@pytest.mark.parametrize("switch_off, control", [
    (lambda g: _repoliced(g, max_failed_attempts=5), "rate_limiting"),
    (lambda g: _repoliced(g, max_requests_per_minute=100, max_failed_attempts=0),
     "client_lockout"),
    (lambda g: _repoliced(g, max_requests_per_minute=100, near_duplicate=False),
     "query_monitoring"),
    (lambda g: setattr(g, "mode", "monitor"), "enforce_mode"),
    (lambda g: setattr(g, "calibration", None), "adversarial_detection"),
    (lambda g: g.sinks.clear(), "audit_logging"),
    (lambda g: setattr(g.sinks[0], "include_inputs", True), "inputs_not_logged"),
    (lambda g: setattr(g, "constraints", aimsec_core.Constraints()), "input_validation"),
])
def test_switching_a_control_off_raises_the_risk(guarded, switch_off, control):
    before = assess_guard(guarded)
    switch_off(guard_of(guarded))
    after = assess_guard(guarded)
    assert after.risk_score > before.risk_score
    assert control in after.missing_ids and control not in before.missing_ids
    assert after.missing_ids.count(control) == 1


def test_two_assessments_in_a_row_do_not_leak(guarded):
    first = assess_guard(guarded, api_key_identity=True, declared={"artifact_verification"})
    second = assess_guard(guarded)
    assert {"api_key_identity", "artifact_verification"} <= set(second.missing_ids)
    assert not {"api_key_identity", "artifact_verification"} & set(first.missing_ids)
    assert second.risk_score > first.risk_score


def test_identity_from_the_middleware_flag(guarded):
    guard_of(guarded).api_key_identity = True
    assert "api_key_identity" in _implemented(assess_guard(guarded))
    assert "api_key_identity" not in _implemented(assess_guard(guarded, api_key_identity=False))


def test_bad_requests_are_refused(guarded):
    with pytest.raises(ConfigurationError, match="unknown control ids"):
        assess_guard(guarded, declared={"firewall"})
    with pytest.raises(ConfigurationError, match="cannot be declared"):
        assess_guard(guarded, declared={"rate_limiting"})
    with pytest.raises(ConfigurationError, match="aimsec_core.guard"):
        assess_guard(object())


def test_threat_model_command_from_a_config_file(tmp_path, capsys):
    config = tmp_path / "endpoint.json"
    config.write_text(json.dumps({
        "name": "fraud", "mode": "monitor", "constraints": {"min_value": 0, "max_value": 1,
                                                            "sample_shape": [30]},
        "audit": {"path": str(tmp_path / "logs"), "include_inputs": False},
        "api_key_identity": True, "declared": ["artifact_verification"]}))
    out_json, out_md = tmp_path / "tm.json", tmp_path / "tm.md"
    assert main(["threat-model", "--model-config", str(config), "--json", str(out_json),
                 "--markdown", str(out_md)]) == 0
    data = json.loads(out_json.read_text())
    missing = [m["id"] for m in data["missing_controls"]]
    assert "enforce_mode" in missing and "adversarial_detection" in missing
    assert "api_key_identity" not in missing and "artifact_verification" not in missing
    assert "input_validation" not in missing
    assert data["risk_level"] in ("Low", "Medium", "High", "Critical")
    markdown = out_md.read_text()
    assert markdown.startswith("# Threat model: guard of fraud") and "| Enforce mode | no |" in markdown
    assert "risk" in capsys.readouterr().out
    config.write_text(json.dumps({"name": "x", "firewall": True}))
    assert main(["threat-model", "--model-config", str(config)]) == 2
    config.write_text(json.dumps({"guard": {"turbo": True}}))
    assert main(["threat-model", "--model-config", str(config)]) == 2
    assert "not settings of this aimsec's guard" in capsys.readouterr().err
    # an audit "folder" that is a file: the guard could not write there
    config.write_text(json.dumps({"name": "x", "audit": {"path": str(config)}}))
    assert main(["threat-model", "--model-config", str(config)]) == 2
    assert "cannot open the audit folder" in capsys.readouterr().err


def test_threat_model_command_for_a_chatbot(tmp_path, capsys):
    out_json = tmp_path / "chatbot.json"
    assert main(["threat-model", "--chatbot", "api_authentication, rate_limiting",
                 "--json", str(out_json)]) == 0
    data = json.loads(out_json.read_text())
    assert data["catalogue"] == "chatbot" and "prompt_validation" in [
        m["id"] for m in data["missing_controls"]]
    assert "original ChatbotThreatModeler's score: 100" in capsys.readouterr().out
    assert main(["threat-model", "--chatbot", "firewall"]) == 2


def test_threat_model_command_for_the_demo_guard(digits_model, monkeypatch, capsys, tmp_path):
    from aimsec_core import digits

    monkeypatch.setattr(digits, "sklearn_mlp", lambda data, seed=0: digits_model[0])  # fast
    assert main(["threat-model", "--demo", "--json", str(tmp_path / "demo.json")]) == 0
    assert "guard of digits-sklearn" in capsys.readouterr().out
    data = json.loads((tmp_path / "demo.json").read_text())
    missing = {m["id"] for m in data["missing_controls"]}
    assert "adversarial_detection" in missing and "input_validation" not in missing
    assert "client_lockout" in missing  # the demo turns lockout off; its threat model says so


@pytest.mark.parametrize("keywords, match", [
    ({"declared": "artifact_verification"}, "received the string"),  # was read letter by letter
    ({"declared": 5}, "received int"),  # TypeError
    ({"api_key_identity": "yes"}, "api_key_identity must be True, False or None"),
])
def test_declared_controls_and_identity_of_the_wrong_type_are_refused(guarded, keywords,
                                                                       match):
    with pytest.raises(aimsec_core.ConfigurationError, match=match):
        aimsec_core.assess_guard(guarded, **keywords)
    assert aimsec_core.assess_guard(guarded, declared=None).risk_score > 0


@pytest.mark.parametrize("implemented", [None, 5, [{}]])
def test_the_original_modeler_refuses_what_is_not_a_set_of_ids(implemented):
    with pytest.raises(aimsec_core.ConfigurationError, match="must be a set of control ids"):
        aimsec_core.ChatbotThreatModeler().assess_implementation(implemented)
