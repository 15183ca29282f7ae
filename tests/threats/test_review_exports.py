"""Threat-model inputs a user controls (a catalogue file's name, a model config's values)
reach the Markdown export as text, never as markup, and every refusal of a model config
names the file."""

from __future__ import annotations

import json
import os
import re

import pytest

from aimsec_core import ConfigurationError
from aimsec_core.threats import ThreatModeler
from aimsec_core.threats.export import to_markdown
from aimsec_core.threats.model_config import load_model_config

EVIL = "x` <img src=x onerror=alert(1)> [c](javascript:alert(1))\n# injected"


def _catalogue(tmp_path, name):
    document = {"format": "aimsec-threat-catalogue/1", "name": name,
                "controls": {"c1": {"name": "C1", "description": "d"}},
                "threats": [{"id": "t1", "category": "c", "severity": "high",
                             "likelihood": "high", "description": "d", "impact": "i",
                             "controls": ["c1"], "owasp": ["ML01"],
                             "atlas": {"techniques": ["AML.T0043"],
                                       "mitigations": ["AML.M0015"]}}]}
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def test_a_catalogue_name_is_text_in_the_markdown(tmp_path):
    markdown = to_markdown(ThreatModeler(_catalogue(tmp_path, EVIL)).assess(set(),
                                                                            subject="s"))
    # it sat in a code span, which a backtick closes: raw HTML and a heading followed
    assert not re.search(r"(?<!\\)<img|(?<!\\)\]\(javascript|(?<!\\)`", markdown)
    assert "\n# injected" not in markdown
    assert r"\<img src=x onerror=alert(1)\>" in markdown


def test_the_built_in_catalogue_name_still_reads_plainly():
    markdown = to_markdown(ThreatModeler("model-endpoint").assess(set()))
    assert "Catalogue model-endpoint," in markdown


@pytest.mark.parametrize("name", [5, ["a"], {"a": 1}, "", True])
def test_a_name_that_is_not_text_is_refused(tmp_path, name):
    path = tmp_path / "guard.json"
    path.write_text(json.dumps({"name": name, "audit": False}), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="name must be a non-empty string") as caught:
        load_model_config(path)  # was str(name): a guard named "[1, 2]"
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("settings, says", [
    ({"mode": "bogus"}, "mode: expected one of"),
    ({"constraints": {"min_value": "a"}}, "constraint 'min_value' must be a finite number"),
    ({"constraints": [1]}, "constraints must be a Constraints or a dict"),
    ({"guard": {"policy": {"max_requests_per_minute": "x"}}}, "max_requests_per_minute"),
    ({"guard": {"store": "ftp://x"}}, "store must be"),
    ({"guard": {"on_flagged": "x"}}, "on_flagged must be one of"),
])
def test_a_setting_the_guard_refuses_names_the_file(tmp_path, settings, says):
    path = tmp_path / "guard.json"
    path.write_text(json.dumps({"audit": False, **settings}), encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        load_model_config(path)
    assert says in str(caught.value)
    assert str(caught.value).startswith(f"model config {path}: ")  # the guard's words alone


@pytest.mark.parametrize("text", ["name: x\nmode: enforce\n", "", "{'name': 'x'}"])
def test_a_file_that_is_not_json_says_what_was_expected(tmp_path, text):
    path = tmp_path / "guard.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError, match="expected a UTF-8 JSON object"):
        load_model_config(path)


# -- the original ChatbotThreatModeler -------------------------------------------------

def test_a_dict_of_control_states_counts_only_those_in_place():
    from aimsec_core import ChatbotThreatModeler

    modeler = ChatbotThreatModeler()
    every = dict.fromkeys(modeler.security_controls, False)
    # iterated as it was, every control mapped to False counted as implemented: score 0
    assessment = modeler.assess_implementation(every)
    assert assessment["risk_score"] == 100.0 and len(assessment["missing_controls"]) == 9
    assert modeler.assess_implementation({**every, "rate_limiting": True})["missing_controls"] \
        == modeler.assess_implementation({"rate_limiting"})["missing_controls"]
    with pytest.raises(ConfigurationError, match="True/False"):
        modeler.assess_implementation({"rate_limiting": "no"})


def test_a_declared_dict_counts_only_the_controls_marked_true():
    from aimsec_core.threats.catalogue import control_ids

    assert control_ids({"artifact_verification": False, "feedback_review": True},
                       "declared") == {"feedback_review"}


@pytest.mark.parametrize("score", [10 ** 400, -(10 ** 400)])
def test_a_score_beyond_any_float_is_refused_clearly(score):
    from aimsec_core import ChatbotThreatModeler

    with pytest.raises(ConfigurationError, match="risk_score"):  # was OverflowError
        ChatbotThreatModeler().generate_report({"risk_score": score})


def test_a_numpy_score_gives_a_report_json_can_write():
    import numpy as np

    from aimsec_core import ChatbotThreatModeler

    report = ChatbotThreatModeler().generate_report({"risk_score": np.int64(80)})
    assert report["risk_level"] == "Critical"
    json.dumps(report)  # np.int64 was copied into the report


@pytest.mark.parametrize("where", ["missing/report.json", "x" * 300 + ".json"])
def test_export_to_a_file_that_cannot_be_made_names_it(tmp_path, where):
    from aimsec_core import ChatbotThreatModeler

    modeler = ChatbotThreatModeler()
    report = modeler.generate_report(modeler.assess_implementation(set()))
    with pytest.raises(ConfigurationError, match="cannot write .*report|cannot write .*xxx"):
        modeler.export_report(report, tmp_path / where)  # was a raw FileNotFoundError


# -- catalogue files ----------------------------------------------------------------------

def test_a_catalogue_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    from aimsec_core.threats import load_catalogue

    fifo = tmp_path / "catalogue.json"
    os.mkfifo(fifo)
    with pytest.raises(ConfigurationError, match="not a regular file .*FIFO"):
        load_catalogue(str(fifo))  # read_text blocked until a writer came


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_catalogue_that_never_ends_is_refused():
    from aimsec_core.threats import ThreatModeler

    with pytest.raises(ConfigurationError, match="not a regular file"):
        ThreatModeler("/dev/zero")  # read_text filled memory


def test_a_catalogue_too_long_is_refused(tmp_path, monkeypatch):
    from aimsec_core.threats import catalogue, load_catalogue

    monkeypatch.setattr(catalogue, "MAX_CATALOGUE_BYTES", 64)
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"format": "x", "pad": "y" * 100}), encoding="utf-8")
    with pytest.raises(ConfigurationError, match="longer than 64 bytes"):
        load_catalogue(str(path))


def test_a_report_from_iterators_lists_every_missing_control():
    from aimsec_core import ChatbotThreatModeler

    modeler = ChatbotThreatModeler()
    assessment = modeler.assess_implementation(set())
    report = modeler.generate_report({**assessment,
                                      "missing_controls": iter(assessment["missing_controls"]),
                                      "threats": iter(assessment["threats"])})
    # the check used the iterator up: the report listed no missing control at all
    assert len(report["missing_controls"]) == len(assessment["missing_controls"]) == 9
    assert len(report["recommendations"]) == 9 and len(report["threats"]) == 3


def test_a_report_of_values_nested_too_deep_is_refused_clearly():
    from aimsec_core import ChatbotThreatModeler

    modeler = ChatbotThreatModeler()
    assessment = modeler.assess_implementation(set())
    deep: list = [1]
    for _ in range(20_000):
        deep = [deep]
    threat = {**assessment["threats"][0], "impact": deep}
    with pytest.raises(ConfigurationError, match="nested too deep"):  # was RecursionError
        modeler.generate_report({**assessment, "threats": [threat]})


# -- where the exports go -----------------------------------------------------------------

def test_json_and_markdown_to_one_file_are_refused_before_either_is_written(tmp_path,
                                                                            capsys):
    """``--json tm --markdown tm`` wrote the JSON, then the Markdown over it, and said
    "written" twice; a link to the other path did the same."""
    from aimsec_core.cli import main
    from aimsec_core.threats.export import write

    (tmp_path / "link.md").symlink_to(tmp_path / "tm.md")
    for other in ("tm.md", "link.md"):
        assert main(["threat-model", "--chatbot", "rate_limiting", "--json",
                     str(tmp_path / "tm.md"), "--markdown", str(tmp_path / other)]) == 2
        assert "expected two different files" in capsys.readouterr().err
        assert not (tmp_path / "tm.md").exists()
    assessment = ThreatModeler("chatbot").assess(set())
    with pytest.raises(ConfigurationError, match="no path|without NUL"):
        write(assessment, tmp_path / "a.json", "b\x00.md")  # a raw ValueError
    assert not (tmp_path / "a.json").exists()


def test_an_export_over_the_model_config_it_was_read_from_is_refused(tmp_path, capsys):
    """``--model-config endpoint.json --json endpoint.json`` replaced the settings with
    the assessment."""
    from aimsec_core.cli import main

    config = tmp_path / "endpoint.json"
    settings = json.dumps({"name": "fraud", "audit": False})
    config.write_text(settings)
    for option in ("--json", "--markdown"):
        assert main(["threat-model", "--model-config", str(config), option,
                     str(tmp_path / "." / "endpoint.json")]) == 2
        assert "which the assessment was read from" in capsys.readouterr().err
        assert config.read_text() == settings


@pytest.mark.parametrize("option", ["--json", "--markdown"])
def test_an_empty_export_path_is_refused_not_skipped(tmp_path, option, capsys):
    """``--markdown ""`` (an unset variable) wrote nothing and exited 0."""
    from aimsec_core.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["threat-model", "--chatbot", "rate_limiting", option, " "])
    assert stop.value.code == 2
    assert "expected the path of a file to write" in capsys.readouterr().err
