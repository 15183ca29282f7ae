"""A feature whose optional dependencies are missing says which extra to install, as a
typed error (or one line from the ``aimsec`` command), never a bare ModuleNotFoundError
from deep inside it. A module set to ``None`` in ``sys.modules`` is one Python cannot
import: what an install without the extra looks like."""

from __future__ import annotations

import sys

import pytest
from rich.console import Console

from aimsec_core import AimsecError, MissingExtraError
from aimsec_core.adapter import HostArrays
from aimsec_core.extras import installed, require
from aimsec_core.guard import Guard
from tests.conftest import run_cli


def _uninstall(monkeypatch, *modules):
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra_and_the_missing_modules(monkeypatch):
    _uninstall(monkeypatch, "jinja2")
    assert not installed("jinja2")
    assert installed("json")
    with pytest.raises(MissingExtraError) as caught:
        require(("json", "jinja2"), "report", "the HTML report")
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, AimsecError)
    assert caught.value.name == "jinja2"
    assert str(caught.value) == ("the HTML report needs the 'report' extra (jinja2 is not "
                                 "installed): pip install 'aimsec[report]'")


def test_a_rate_limit_without_limits_is_refused_when_the_guard_is_built(monkeypatch):
    _uninstall(monkeypatch, "limits")
    # the default policy (no rate limit) and a minimum interval need no limits
    Guard(None, HostArrays(None), name="m", sinks=[])
    Guard(None, HostArrays(None), name="m", sinks=[],
          policy={"min_request_interval": 1.0})
    for policy in ({"max_requests_per_minute": 100},
                   {"tiers": {"internal": {"max_requests_per_minute": 10}}}):
        with pytest.raises(MissingExtraError, match=r"aimsec\[monitoring\]"):
            Guard(None, HostArrays(None), name="m", sinks=[], policy=policy)


@pytest.mark.parametrize("missing", ["redis", "limits"])
def test_a_redis_store_without_the_redis_extra_names_it(monkeypatch, missing):
    _uninstall(monkeypatch, missing)
    with pytest.raises(MissingExtraError, match=r"aimsec\[redis\]") as caught:
        Guard(None, HostArrays(None), name="m", sinks=[], store="redis://127.0.0.1:1/0")
    assert caught.value.name == missing


def test_alert_groups_on_redis_without_the_redis_extra_name_it(monkeypatch):
    from aimsec_core.alerts import RedisGroupState

    _uninstall(monkeypatch, "redis")
    with pytest.raises(MissingExtraError, match=r"aimsec\[redis\]"):
        RedisGroupState.from_url("redis://127.0.0.1:1/0")


@pytest.mark.parametrize("missing", ["jinja2", "matplotlib"])
def test_report_without_the_report_extra_is_one_line(tmp_path, capsys, monkeypatch, missing):
    (tmp_path / "audit.jsonl").write_text(
        '{"time": "2026-09-21T10:00:00", "model": "m", "decision": "allowed"}\n')
    _uninstall(monkeypatch, missing)
    status, err = run_cli(["report", "--logs", str(tmp_path), "--out", str(tmp_path / "o")],
                          capsys)
    assert status == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert missing in err and "pip install 'aimsec[report]'" in err
    assert not (tmp_path / "o").exists()  # refused before anything was read or written


def test_demo_without_scikit_learn_is_one_line_before_any_folder(tmp_path, capsys,
                                                                  monkeypatch):
    _uninstall(monkeypatch, "sklearn")
    status, err = run_cli(["demo", "--out", str(tmp_path / "runs")], capsys)
    assert status == 2 and err.count("\n") == 1
    assert "pip install 'aimsec[sklearn]'" in err
    assert not (tmp_path / "runs").exists()


def test_demo_of_frameworks_none_installed_names_their_extras(tmp_path, capsys, monkeypatch):
    _uninstall(monkeypatch, "torch", "keras")
    status, err = run_cli(["demo", "--framework", "torch", "--framework", "keras",
                           "--out", str(tmp_path / "runs")], capsys)
    assert status == 2 and err.count("\n") == 1
    assert "pip install 'aimsec[keras,torch]'" in err


def test_evaluate_without_art_names_the_eval_extra(tmp_path, capsys, monkeypatch):
    # the message once went through rich markup, which swallowed "[eval]"
    _uninstall(monkeypatch, "art")
    status, err = run_cli(["evaluate", "--quick", "--framework", "sklearn",
                           "--out", str(tmp_path / "e.json")], capsys)
    assert status == 2 and err.count("\n") == 1
    assert "pip install 'aimsec[eval]'" in err


@pytest.mark.parametrize("framework, missing", [("keras", "keras"), ("onnx", "onnxruntime")])
def test_evaluate_of_a_framework_not_installed_names_its_extra(tmp_path, capsys, monkeypatch,
                                                               framework, missing):
    # it trained the torch model, then ended in a ModuleNotFoundError traceback
    _uninstall(monkeypatch, missing)
    status, err = run_cli(["evaluate", "--framework", framework, "--dataset", "wine",
                           "--attack", "FGSM", "--out", str(tmp_path / "e.json")], capsys)
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{framework}: not installed (pip install 'aimsec[{framework}]')" in err
    assert list(tmp_path.iterdir()) == []


def test_the_demo_says_how_to_get_its_report(tmp_path, monkeypatch):
    from aimsec_core import demo

    _uninstall(monkeypatch, "matplotlib")
    console = Console(record=True, width=200)
    run = demo.DemoRun(tmp_path, tmp_path / "audit.jsonl", demo.Tally(), 0.0)
    demo._where_everything_went(run, console)
    assert "report:     not written (pip install 'aimsec[report]')" in console.export_text()
    assert run.report is None
