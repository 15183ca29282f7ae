"""Hostile catalogues and arguments to the threat modeler: each is a ConfigurationError
naming what was wrong, never a raw TypeError, AttributeError or RecursionError."""

from __future__ import annotations

import copy
import json
from importlib import resources

import pytest

from aimsec_core import ConfigurationError
from aimsec_core.threats import ThreatModeler, load_catalogue
from aimsec_core.threats.catalogue import parse_catalogue
from aimsec_core.threats.modeler import ControlStatus


def _chatbot() -> dict:
    text = resources.files("aimsec_core.threats").joinpath("catalogues", "chatbot.json")
    return json.loads(text.read_text(encoding="utf-8"))


def _edited(edit) -> dict:
    raw = copy.deepcopy(_chatbot())
    edit(raw)
    return raw


@pytest.mark.parametrize("edit, match", [
    (lambda r: r["threats"][0].update(controls=[["rate_limiting"]]), "control ids"),
    (lambda r: r["threats"][0].update(controls=[{"id": 1}]), "control ids"),
    (lambda r: r["controls"].update({"evil\n": {"name": "n", "description": "d"}}),
     "lower_snake_case"),
    (lambda r: r["threats"][0].update(id="prompt_injection\n"), "lower_snake_case"),
    (lambda r: r["threats"][0].update(owasp=["ML01\n"]), "owasp"),
    (lambda r: r["threats"][0]["atlas"].update(mitigations=["AML.M0015\n"]), "mitigations"),
], ids=["list-ref", "dict-ref", "id-newline", "threat-id-newline", "owasp-newline",
        "mitigation-newline"])
def test_a_catalogue_with_malformed_ids_is_refused(edit, match):
    with pytest.raises(ConfigurationError, match=match):
        parse_catalogue(_edited(edit))


def test_the_built_in_catalogues_still_load():
    assert len(parse_catalogue(_chatbot()).controls) == 14
    assert load_catalogue("model-endpoint").threats


def test_a_catalogue_nested_thousands_deep_is_refused(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigurationError, match="nested too deep"):
        load_catalogue(deep)


@pytest.mark.parametrize("source", ["a\x00b", 5, None, ["chatbot"]])
def test_a_catalogue_source_that_is_no_path_is_refused(source):
    with pytest.raises(ConfigurationError, match="threat catalogue"):
        ThreatModeler(source)


@pytest.mark.parametrize("implemented", [None, 5, [["rate_limiting"]], 1.5])
def test_implemented_controls_that_are_no_collection_of_ids_are_refused(implemented):
    with pytest.raises(ConfigurationError, match="control ids"):
        ThreatModeler("chatbot").assess(implemented)


@pytest.mark.parametrize("value", [True, "yes", 1, None])
def test_a_status_mapping_with_values_that_are_no_status_is_refused(value):
    with pytest.raises(ConfigurationError, match="ControlStatus"):
        ThreatModeler("chatbot").assess({"rate_limiting": value})


def test_a_status_mapping_still_scores():
    status = ControlStatus("rate_limiting", "Rate limiting", True)
    by_mapping = ThreatModeler("chatbot").assess({"rate_limiting": status})
    by_ids = ThreatModeler("chatbot").assess({"rate_limiting"})
    assert by_mapping.risk_score == by_ids.risk_score < 100


def test_a_failed_write_names_the_file_it_could_not_write(tmp_path, capsys, monkeypatch):
    import errno
    from pathlib import Path

    from aimsec_core.cli import main

    def full(self, *args, **kwargs):  # as /dev/full: the error carries no file name
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    target = tmp_path / "tm.json"
    status = main(["threat-model", "--chatbot", "rate_limiting", "--json", str(target)])
    error = capsys.readouterr().err
    assert status == 2 and str(target) in error and "No space left" in error
    assert "None" not in error
