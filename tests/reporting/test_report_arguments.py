"""``aimsec_core.report(...)`` called from Python with the argument forms a caller reaches
for (a timedelta, a date, a naive ``now``) and with ones of the wrong kind: each is read as
meant or refused with a ConfigurationError naming the argument, never a raw TypeError."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from rich.console import Console

import aimsec_core
from aimsec_core import ConfigurationError
from aimsec_core.cli import main
from aimsec_core.reporting.period import parse_period

QUIET = Console(quiet=True)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def logs(tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    lines = [{"time": f"2026-11-{day}T12:00:00+00:00", "model": "m", "client": "c",
              "decision": "allowed", "batch_size": 1} for day in (20, 25, 27)]
    (folder / "audit.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return folder


def _calls(logs, tmp_path, **kwargs) -> int:
    return aimsec_core.report(logs, out=tmp_path / "out", console=QUIET, now=NOW,
                              db=tmp_path / "none.sqlite3", **kwargs).report.calls


def test_a_timedelta_is_an_age_and_a_date_is_its_midnight_utc(logs, tmp_path):
    assert _calls(logs, tmp_path, since=timedelta(days=3)) == _calls(logs, tmp_path,
                                                                     since="3d") == 2
    assert _calls(logs, tmp_path, since=date(2026, 11, 25)) == 2
    assert _calls(logs, tmp_path, until=date(2026, 11, 25)) == 1


@pytest.mark.parametrize("value", [86400, 1.5, b"24h", ["24h"], float("nan"),
                                   timedelta(days=-1)],
                         ids=["int", "float", "bytes", "list", "nan", "negative-age"])
def test_a_moment_of_the_wrong_kind_is_refused(logs, tmp_path, value):
    with pytest.raises(ConfigurationError, match="--since"):
        _calls(logs, tmp_path, since=value)


def test_a_naive_now_is_utc():
    start, end = parse_period("24h", "2026-11-27", now=datetime(2026, 11, 27, 12))
    assert start == datetime(2026, 11, 26, 12, tzinfo=timezone.utc)
    assert start.tzinfo is not None and end.tzinfo is not None


@pytest.mark.parametrize("kwargs, match", [
    ({"out": None}, "out"), ({"out": 5}, "out"), ({"out": "a\x00b"}, "out"),
    ({"db": "a\x00b"}, "db"), ({"db": 5.5}, "db"), ({"incidents": 5}, "incidents"),
    # a raw TypeError from the incident summary; text and one mapping read as no incidents
    ({"model": 5}, "model must be a model's name"), ({"incidents": "abc"}, "incidents"),
    ({"incidents": {"id": 1, "model": "m"}}, "incidents"),
], ids=["out-none", "out-int", "out-nul", "db-nul", "db-float", "incidents-int", "model-int",
        "incidents-str", "incidents-one-mapping"])
def test_paths_and_incidents_of_the_wrong_kind_are_refused(logs, tmp_path, kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        aimsec_core.report(logs, console=QUIET, **{"out": tmp_path / "out",
                                                   "db": tmp_path / "none.sqlite3",
                                                   **kwargs})


def test_an_empty_model_name_is_refused_not_read_as_a_model_without_calls(logs, tmp_path):
    """``--model ""`` (a shell variable left unset) selected no call, and the page, which
    hides an empty model name, read as a trail with nothing in the period."""
    with pytest.raises(ConfigurationError, match="model must be a model's name .*''"):
        _calls(logs, tmp_path, model="")
    assert main(["report", "--logs", str(logs), "--out", str(tmp_path / "cli"),
                 "--model", ""]) == 2
    assert not (tmp_path / "cli").exists()


@pytest.mark.parametrize("value", [5, b"logs", "lo\x00gs"], ids=["int", "bytes", "nul"])
def test_a_trail_location_of_the_wrong_kind_is_refused_by_name(logs, tmp_path, value):
    """str() of it was taken as the folder: bytes read "no audit trail at b'logs'"."""
    with pytest.raises(ConfigurationError, match=r"^logs must be a path"):
        aimsec_core.report(value, out=tmp_path / "out", console=QUIET, incidents=[])
