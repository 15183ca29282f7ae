"""Hand-edited audit lines with values no writer produces, and report outputs at hostile
paths: each gives a sensible report or a one-line error, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

import aimsec_core
from aimsec_core.reporting import parse_line

QUIET = Console(quiet=True)
TIME = "2026-11-26T04:12:20+00:00"


def _line(**fields) -> str:
    line = {"time": TIME, "model": "m", "client": "c", "decision": "allowed",
            "batch_size": 1, "findings": [], "latency_ms": 0.4}
    line.update(fields)
    return json.dumps(line)


def _report(tmp_path: Path, *lines: str):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "audit.jsonl").write_text("".join(f"{line}\n" for line in lines))
    return aimsec_core.report(logs, out=tmp_path / "out", console=QUIET,
                              db=tmp_path / "none.sqlite3")


HUGE = 10**400  # valid JSON, and Python reads it, but no float holds it


@pytest.mark.parametrize("fields", [
    {"batch_size": HUGE}, {"latency_ms": HUGE}, {"latency_ms": -HUGE},
    {"flagged": {"count": HUGE}},
    {"detection": {"suspicion_max": HUGE, "threshold": 2, "fpr": 0.05, "above": 0}},
    {"detection": {"suspicion_max": 1, "threshold": HUGE, "fpr": 0.05, "above": 0}},
    {"detection": {"suspicion_max": 1, "threshold": 2, "fpr": HUGE, "above": 0}},
    {"detection": {"suspicion_max": 1, "threshold": 2, "fpr": 0.05, "above": HUGE}},
], ids=["batch", "latency", "latency-neg", "flagged", "suspicion", "threshold", "fpr", "above"])
def test_an_integer_too_large_for_a_float_is_read_as_absent(tmp_path, fields):
    entry = parse_line(_line(**fields))
    assert entry is not None and entry.time > 0
    files = _report(tmp_path, _line(), _line(**fields))
    assert files.report.totals["allowed"] == 2
    assert files.report.samples < 10  # never a 400-digit sample count
    assert json.loads(files.json_path.read_text())["totals"]["allowed"] == 2


@pytest.mark.parametrize("fpr", [1e307, -1e307, 1.5, -0.01])
def test_a_false_positive_rate_outside_zero_to_one_is_no_rate(tmp_path, fpr):
    detection = {"suspicion_max": 1.0, "threshold": 2.0, "fpr": fpr, "above": 0}
    files = _report(tmp_path, _line(detection=detection))
    section, = files.report.detection
    assert section.fpr is None and section.drift is False
    assert len(files.html_path.read_text()) < 200_000  # no 300-digit percentage


def test_a_count_beyond_any_batch_is_read_as_absent(tmp_path):
    files = _report(tmp_path, _line(batch_size=1e308), _line(flagged={"count": 2.0**60}),
                    _line(batch_size=3))
    assert files.report.samples == 1 + 3 and files.report.flagged_samples == 0


@pytest.mark.parametrize("name", ["out[/]", "out[red]x", "out[bold"])
def test_an_output_folder_named_like_terminal_markup_is_printed_as_named(tmp_path, name):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "audit.jsonl").write_text(_line() + "\n")
    console = Console(record=True, width=400, color_system=None)
    files = aimsec_core.report(logs, out=tmp_path / name, console=console,
                               db=tmp_path / "none.sqlite3")
    assert files.html_path == tmp_path / name / "report.html"
    assert str(files.html_path) in console.export_text()


def test_a_period_far_wider_than_the_data_keeps_the_timeline_fine(tmp_path):
    # two hours of calls, asked for since 2020: the bars follow the data, not the period
    lines = [_line(time=f"2026-11-26T{4 + i // 60:02d}:{i % 60:02d}:00+00:00")
             for i in range(120)]
    files = _report(tmp_path, *lines)
    wide = aimsec_core.report(tmp_path / "logs", since="2020-01-01", out=tmp_path / "wide",
                              console=QUIET, db=tmp_path / "none.sqlite3")
    assert wide.report.timeline_bucket_seconds == files.report.timeline_bucket_seconds <= 3600
    assert len(wide.report.timeline) >= 2
    assert sum(sum(b.decisions.values()) for b in wide.report.timeline) == 120


def test_the_incident_limit_applies_to_the_model_asked_for(tmp_path):
    from aimsec_core.incidents import IncidentStore
    from aimsec_core.incidents.model import Occurrence
    from aimsec_core.reporting.incidents import load_incidents, summarise_incidents

    path = tmp_path / "incidents.sqlite3"
    store = IncidentStore(path)
    store.record([Occurrence("busy", "extraction", f"c{i}", "critical", 1.7e9, 1.7e9, 1)
                  for i in range(3)])
    store.record([Occurrence("quiet", "repeat", "c", "low", 1.7e9, 1.7e9, 1)])
    store.close()
    # more severe incidents of another model filled the limit before the model was chosen
    source, note = load_incidents(path, model="quiet", limit=2)
    section = summarise_incidents(source, model="quiet", note=note)
    assert section.total == 1 and section.listed[0].threat == "repeat" and note == ""


def test_incidents_of_a_model_with_a_long_name_are_found_by_that_name(tmp_path):
    from aimsec_core.incidents import IncidentStore
    from aimsec_core.incidents.model import Occurrence

    name = "m" * 300
    store = IncidentStore(tmp_path / "incidents.sqlite3")
    store.record([Occurrence(name, "extraction", "c", "high", 1.7e9, 1.7e9, 1)])
    store.close()
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "audit.jsonl").write_text(_line(model=name) + "\n")
    files = aimsec_core.report(logs, model=name, out=tmp_path / "out", console=QUIET,
                               db=tmp_path / "incidents.sqlite3")
    assert files.report.calls == 1
    assert files.report.incidents.total == 1  # the store keeps the name cut short


def test_the_demo_prints_a_folder_named_like_terminal_markup_as_named(tmp_path):
    pytest.importorskip("sklearn")
    from aimsec_core import demo

    console = Console(record=True, width=1000, color_system=None)
    result = demo.run(calls=5, frameworks=["sklearn"], console=console,
                      out=tmp_path / "runs[/]")  # a MarkupError before
    text = console.export_text()
    assert str(result.folder) in text and f"report:     {result.report}" in text


@pytest.mark.parametrize("inserted", [b"", b"   ", b"\t"], ids=["empty", "spaces", "tab"])
def test_a_blank_line_inserted_in_the_trail_breaks_the_chain_as_verify_says(tmp_path,
                                                                           inserted):
    from aimsec_core.audit.verify import verify_trail

    from .trail import write_trail

    logs = tmp_path / "logs"
    write_trail(logs, calls=20, max_bytes=10**9)
    trail = logs / "audit.jsonl"
    lines = trail.read_bytes().split(b"\n")
    trail.write_bytes(b"\n".join([*lines[:5], inserted, *lines[5:]]))
    verdict = verify_trail(logs)
    assert not verdict.intact and verdict.broken_line == 6
    files = aimsec_core.report(logs, out=tmp_path / "out", console=QUIET,
                               db=tmp_path / "none.sqlite3")
    chain = files.report.sources["chain"]
    assert chain["breaks"] >= 1 and chain["first_break"] == {"file": str(trail), "line": 6}
    assert files.report.calls == 20 and files.report.sources["lines"] == 20


@pytest.mark.parametrize("times", [
    ("2026-10-27T00:00:00", "2026-11-26T00:00:00"),
    ("1970-01-01T00:00:00", "2026-01-01T00:00:00", "9000-06-01T00:00:00"),
], ids=["a-month-apart", "millennia-apart"])
def test_calls_far_apart_get_bars_wide_enough_to_see(tmp_path, times):
    from datetime import datetime, timezone

    files = _report(tmp_path, *(_line(time=t) for t in times))
    seconds = [datetime.fromisoformat(t).replace(tzinfo=timezone.utc).timestamp()
               for t in times]
    width = files.report.timeline_bucket_seconds
    assert (max(seconds) - min(seconds)) / width <= 200  # minute-wide bars before
    assert sum(sum(b.decisions.values()) for b in files.report.timeline) == len(times)


WRONG_TYPES = [
    {"model": {"a": 1}}, {"model": ["m"]}, {"model": 7}, {"client": True},
    {"client": {"ip": "x"}}, {"decision": ["allowed"]}, {"decision": 1},
    {"batch_size": "3"}, {"batch_size": True}, {"batch_size": -1}, {"batch_size": 1.5},
    {"batch_size": HUGE}, {"flagged": "0"}, {"flagged": 3}, {"flagged": {"count": "2"}},
    {"findings": {"check": "range"}}, {"findings": "range"}, {"findings": [3]},
    {"findings": [{"check": ["range"]}]}, {"latency_ms": "0.4"}, {"latency_ms": -5},
    {"latency_ms": HUGE}, {"latency_ms": float("nan")}, {"latency_ms": float("inf")},
    {"detection": "high"}, {"detection": {"threshold": "2", "suspicion_max": 1}},
    # thresholds no calibration holds (they are 0 to 1e6)
    {"detection": {"threshold": 1e308, "suspicion_max": 1}},
    {"detection": {"threshold": -1.0, "suspicion_max": 1}},
]


@pytest.mark.parametrize("fields", WRONG_TYPES, ids=lambda f: json.dumps(f)[:40])
def test_a_field_of_the_wrong_type_is_counted_not_read_silently(tmp_path, fields):
    # a line no writer produces: its call is counted (its time is readable), but the
    # report says how many lines had a field it could not read, so a forged or damaged
    # line never passes for an ordinary call with made-up defaults
    files = _report(tmp_path, _line(), _line(**fields))
    sources = files.report.sources
    assert sources["used"] == 2 and sources["wrong_type"] == 1
    assert json.loads(files.json_path.read_text())["sources"]["wrong_type"] == 1
    assert any(r.section == "sources" and r.evidence.get("wrong_type") == 1
               for r in files.report.recommendations)
    assert "1 with a field of the wrong type" in files.html_path.read_text()


def test_fields_as_the_writer_writes_them_are_not_counted_as_wrong(tmp_path):
    files = _report(tmp_path, _line(), _line(model=None, client=None, detection=None),
                    _line(flagged=[0], findings=[{"check": "range"}], latency_ms=0),
                    _line(flagged={"count": 1, "first": [0]}, batch_size=2),
                    _line(detection={"suspicion_max": "inf", "threshold": 2.0,
                                     "fpr": 0.05, "above": 1}),
                    # a detector's NaN or -inf, as the writer spells them: not readable as a
                    # suspicion, but no damage either
                    _line(detection={"suspicion_max": "nan", "threshold": 2.0,
                                     "fpr": 0.05, "above": 0}),
                    _line(detection={"suspicion_max": "-inf", "threshold": 2.0,
                                     "fpr": None, "above": 0}))
    assert files.report.sources["wrong_type"] == 0
    assert not any(r.section == "sources" for r in files.report.recommendations)


def test_a_threshold_beyond_any_calibration_leaves_the_charts_drawable(tmp_path):
    """A forged threshold of 1e308 stretched the suspicion chart's axis until matplotlib
    overflowed (RuntimeWarnings on the terminal, an unreadable chart)."""
    import warnings

    forged = {"suspicion_max": 1.0, "threshold": 1e308, "fpr": 0.05, "above": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        files = _report(tmp_path, _line(detection=forged))
    assert files.report.calls == 1 and files.report.detection == []
