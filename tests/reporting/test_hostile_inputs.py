"""Damaged and hostile inputs to ``aimsec report``: each is counted or refused with a
clear error, never a traceback, and nothing injected reaches the page as markup."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import aimsec_core
from aimsec_core.errors import ConfigurationError
from aimsec_core.reporting import parse_line
from aimsec_core.reporting.aggregate import SUSPICION_BINS, Aggregator
from aimsec_core.reporting.period import parse_period
from aimsec_core.audit.snapshot import trail_files
from aimsec_core.reporting.reader import ReadStats, open_trail, read_entries

QUIET = Console(quiet=True)


def _line(**fields) -> str:
    return json.dumps({"time": "2026-09-21T10:00:00+00:00", "model": "m",
                       "decision": "allowed", **fields})


def _trail(folder: Path, *lines: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit.jsonl").write_text("".join(f"{line}\n" for line in lines))
    return folder


def test_a_line_nested_thousands_deep_is_malformed_not_fatal(tmp_path):
    deep = '{"time": "2026-09-21T10:00:00", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert parse_line("[" * 100_000) is None and parse_line(deep) is None
    files = aimsec_core.report(_trail(tmp_path / "logs", deep, _line()), out=tmp_path / "out",
                               incidents=[], console=QUIET)
    assert files.report.sources["malformed"] == 1 and files.report.calls == 1


@pytest.mark.parametrize("suspicion", ['"inf"', "1e308"])
def test_an_infinite_or_huge_suspicion_lands_in_the_last_bin(tmp_path, suspicion):
    # The writer spells a non-finite suspicion as "inf": int(inf) raised OverflowError.
    raw = _line().replace('"decision"', '"detection": {"suspicion_max": %s, "threshold": '
                          '2.0, "fpr": 0.05, "above": 1}, "decision"' % suspicion)
    entry = parse_line(raw)
    assert entry is not None and entry.detection is not None
    aggregator = Aggregator()
    aggregator.add(entry)
    histogram = aggregator.detection["m"].histogram
    assert histogram[SUSPICION_BINS] == 1 and sum(histogram) == 1
    files = aimsec_core.report(_trail(tmp_path / "logs", raw), out=tmp_path / "out",
                               incidents=[], console=QUIET)
    assert files.report.detection[0].histogram[-1] == 1


def test_a_rotated_name_with_a_non_decimal_digit_is_ignored(tmp_path):
    folder = _trail(tmp_path / "logs", _line())
    (folder / "audit.jsonl.\u00b2").write_text(_line() + "\n")  # "²".isdigit() is True
    (folder / "audit.jsonl.1").write_text(_line() + "\n")
    assert [p.name for p in trail_files(folder)] == ["audit.jsonl.1", "audit.jsonl"]


def test_a_file_rotated_away_before_it_is_read_is_noted(tmp_path, monkeypatch):
    from aimsec_core.audit import snapshot

    folder = _trail(tmp_path / "logs", _line())
    (folder / "audit.jsonl.1").write_text(_line() + "\n")
    files = trail_files(folder)
    real_open = snapshot.open_regular

    def drop_then_open(path):
        if path == files[0] and path.exists():
            path.unlink()  # a writer that does not lock rotated (and dropped) it meanwhile
        return real_open(path)

    monkeypatch.setattr(snapshot, "open_regular", drop_then_open)
    stats = ReadStats()
    with open_trail(folder) as trail:
        assert len(list(read_entries(trail, stats))) == 1
    assert stats.vanished == [str(files[0])] and stats.files == [str(files[1])]


@pytest.mark.parametrize("since", ["99999999999d", "9999-12-31T23:59:59-05:00",
                                   "0001-01-01T00:00:00+01:00", "9" * 400 + "w"])
def test_a_period_outside_the_calendar_is_a_configuration_error(since):
    with pytest.raises(ConfigurationError, match="outside the dates"):
        parse_period(since, None)


def test_the_command_reports_a_bad_period_in_one_line(tmp_path, capsys):
    from aimsec_core.cli import main

    folder = _trail(tmp_path / "logs", _line())
    assert main(["report", "--logs", str(folder), "--since", "99999999999d",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aimsec report: --since")


def _foreign(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("make", [
    lambda p: _foreign(p),                                     # someone else's database
    lambda p: (p.write_bytes(b""), p)[1],                      # an empty file
    lambda p: (p.write_bytes(b"not sqlite at all" * 64), p)[1],  # not SQLite
])
def test_a_foreign_incident_file_is_reported_and_left_unchanged(tmp_path, make):
    db = make(tmp_path / "other.sqlite3")
    before = db.read_bytes()
    files = aimsec_core.report(_trail(tmp_path / "logs", _line()), out=tmp_path / "out",
                               db=db, console=QUIET)
    section = files.report.incidents
    assert not section.available and str(db) in section.note
    assert db.read_bytes() == before  # no tables added, no WAL switch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "other.sqlite3", "out"]


def test_an_incident_folder_is_reported(tmp_path):
    files = aimsec_core.report(_trail(tmp_path / "logs", _line()), out=tmp_path / "out",
                               db=tmp_path, console=QUIET)
    assert not files.report.incidents.available and "not a file" in files.report.incidents.note


class _Markup(HTMLParser):
    """Collects the page's elements and attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


#: What the page and matplotlib's SVG are made of: nothing else may appear.
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "section", "div",
             "h1", "h2", "h3", "b", "span", "a", "p", "table", "tr", "th", "td", "ul", "li",
             "svg", "g", "path", "defs", "use", "clippath", "rect", "polyline", "line"}

HOSTILE = st.sampled_from([
    "</svg><script>document.title='pwned'</script>", "a-->b<img src=x onerror=alert(1)>",
    "$\\alpha^{x}$", "\\$", "x\\", "{{7*7}}", "]]><svg onload=alert(1)>", "\u202e\x00"])


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(names=st.lists(st.one_of(HOSTILE, st.text(max_size=30)), min_size=1, max_size=3))
def test_hostile_model_check_and_client_names_never_become_markup(tmp_path, names):
    lines = []
    for i, name in enumerate(names):
        for decision in ("rejected", "allowed"):
            lines.append(json.dumps({
                "time": f"2026-09-21T10:0{i}:00+00:00", "model": name, "client": name,
                "decision": decision, "findings": [{"check": name}], "latency_ms": 1.5,
                "detection": {"suspicion_max": 1.0, "threshold": 0.5, "fpr": 0.05,
                              "above": 1}}))
    incidents = [{"id": name, "model": name, "threat": name, "client": name,
                  "severity": "high", "status": "open", "owasp": [name]} for name in names]
    files = aimsec_core.report(_trail(tmp_path / "logs", *lines), out=tmp_path / "out",
                               incidents=incidents, console=QUIET)
    markup = _Markup()
    markup.feed(files.html_path.read_text())
    assert markup.tags <= PAGE_TAGS, markup.tags - PAGE_TAGS
    assert not {a for a in markup.attributes if a.startswith("on")}
    assert files.report.calls == 2 * len(names)
    assert all(math.isfinite(v) for v in files.report.latency.percentiles.values())


#: Any JSON value, lone surrogates included ("\ud800" parses to one).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.sampled_from(
        ["\ud800", "x\udfffy", "", "2026-09-21T10:00:00"]) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["count", "first", "check", "threshold", "suspicion_max", "fpr",
                         "above"]), inner, max_size=3), max_leaves=8)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(fields=st.dictionaries(st.sampled_from(
    ["model", "client", "decision", "batch_size", "flagged", "findings", "latency_ms",
     "detection"]), JSON_VALUES, min_size=1))
def test_any_json_value_in_any_field_is_read_or_counted_never_fatal(tmp_path, fields):
    # a decision that was an object raised TypeError (unhashable); a client or model
    # holding a lone surrogate raised UnicodeEncodeError writing the page
    line = json.dumps({"time": "2026-09-21T10:00:00+00:00", **fields})
    files = aimsec_core.report(_trail(tmp_path / "logs", line, _line()), out=tmp_path / "out",
                               incidents=[], console=QUIET)
    assert files.report.calls + files.report.sources["malformed"] == 2
    files.html_path.read_text(encoding="utf-8")


def test_a_client_id_with_terminal_escapes_does_not_reach_the_terminal(tmp_path):
    """A client id holding escape sequences, named as an attack source in a
    recommendation, used to be printed to the terminal raw (ESC c resets it)."""
    import io

    from .trail import write_screened

    hostile = "evil\x1bc\x1b]0;pwned\x07\x9b31m"
    write_screened(tmp_path / "logs", {**{f"10.0.0.{i}": 0.05 for i in range(6)},
                                       hostile: 0.6})
    shown = io.StringIO()
    files = aimsec_core.report(tmp_path / "logs", out=tmp_path / "out", incidents=[],
                               console=Console(file=shown, width=400, color_system=None))
    assert [s.client for s in files.report.detection[0].sources] == [hostile]
    text = shown.getvalue()
    assert "evil\\x1bc\\x1b]0;pwned\\x07\\x9b31m" in text
    assert not any(c in text for c in "\x1b\x07\x9b")


#: Characters that act rather than print: controls and bidirectional formatting.
ACTING = ("\x00\x07\x1b\x7f\x9b\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
          "\u2066\u2067\u2068\u2069")


def test_controls_and_bidi_overrides_are_shown_as_escapes_on_the_page(tmp_path):
    """A client id ``evil\\u202egnp.exe`` used to reach the page raw (it read as
    ``evilexe.png``), and NUL and ESC bytes with it."""
    hostile = "evil\u202egnp.exe\x00\x1b[31m\u2067x"
    lines = [json.dumps({"time": "2026-09-21T10:00:00+00:00", "model": hostile,
                         "client": hostile, "decision": "rejected",
                         "findings": [{"check": hostile}]})]
    incidents = [{"id": 1, "model": hostile, "threat": hostile, "client": hostile,
                  "severity": "high", "status": "open"}]
    files = aimsec_core.report(_trail(tmp_path / "logs", *lines), out=tmp_path / "out",
                               incidents=incidents, console=QUIET)
    page = files.html_path.read_text(encoding="utf-8")
    assert not set(page) & set(ACTING)
    assert "evil\\u202egnp.exe\\x00\\x1b[31m\\u2067x" in page
    assert files.report.top_clients.by_calls[0].client == hostile  # the data keeps it


def _acts_or_hides(c: str) -> bool:
    """Whether ``c`` acts (controls, bidi) or prints as nothing or a plain space."""
    import unicodedata

    return c in ACTING or (c != " " and unicodedata.category(c) in (
        "Cc", "Cf", "Cs", "Zl", "Zp", "Zs")) or "\ufe00" <= c <= "\ufe0f" or c in (
        "\u115f\u1160\u3164\uffa0\u2800\U000e0100")


@given(st.text())
def test_visible_text_holds_no_acting_character_and_keeps_the_rest(text):
    from aimsec_core.visible import visible

    shown = visible(text)
    assert not any(_acts_or_hides(c) for c in shown)
    if not any(_acts_or_hides(c) for c in text):
        assert shown == text


def test_the_escaping_modules_own_documentation_holds_what_it_escapes():
    """Its docstring spelled the escapes as Python reads them, so it held a lone
    surrogate, ESC, a right-to-left override and a zero-width space: ``help()`` on a
    UTF-8 terminal raised UnicodeEncodeError, and the text it showed reordered itself."""
    import aimsec_core.visible as module

    for text in (module.__doc__, module.visible.__doc__):
        lines = text.split("\n")
        assert [module.visible(line) for line in lines] == lines
        text.encode("utf-8")


@pytest.mark.parametrize("hidden", ["\u200b", "\u2060", "\ufeff", "\u00ad", "\u00a0",
                                    "\u2028", "\u3000", "\ufe0f", "\U000e0041", "\u3164"])
def test_a_client_id_with_an_invisible_character_does_not_read_as_another(tmp_path, hidden):
    """``10.0.0.1\\u200b`` (a zero-width space) showed on the page and in the terminal
    exactly as the client ``10.0.0.1``: two clients that look like one, or an attacker
    that looks like a known host."""
    from aimsec_core.visible import visible

    spoof = "10.0.0.1" + hidden
    lines = [json.dumps({"time": "2026-09-21T10:00:00+00:00", "model": "m", "client": c,
                         "decision": "rejected", "findings": [{"check": "range"}]})
             for c in ("10.0.0.1", spoof)]
    files = aimsec_core.report(_trail(tmp_path / "logs", *lines), out=tmp_path / "out",
                               incidents=[], console=QUIET)
    page = files.html_path.read_text(encoding="utf-8")
    escape = visible(hidden)
    assert escape.startswith("\\") and hidden not in page
    assert "10.0.0.1" + escape in page


def test_a_report_is_written_whatever_lies_at_a_fixed_temporary_name(tmp_path):
    """Every report went through ``report.html.partial``: a folder (or another report
    being written) at that name made the write fail or mixed two reports."""
    out = tmp_path / "out"
    (out / "report.html.partial").mkdir(parents=True)
    (out / "report.json.partial").mkdir()
    files = aimsec_core.report(_trail(tmp_path / "logs", _line()), out=out, incidents=[],
                               console=QUIET)
    assert files.report.calls == 1 and files.html_path.read_text().startswith("<!")
    assert {p.name for p in out.iterdir()} == {"report.html", "report.json",
                                               "report.html.partial", "report.json.partial"}


# run in a child, whose descriptors are its own: it leaves itself one to open
_NO_DESCRIPTOR_LEFT = r"""
import os, resource, sys
from aimsec_core.cli import main

small, folder, out, command = sys.argv[1:]
def argv(logs, where):
    return (["audit", "verify", logs] if command == "verify" else
            ["report", "--logs", logs, "--out", where, "--db", where + "/none.sqlite3"])
main(argv(small, out + "/first"))  # imports all it needs first
print("---", file=sys.stderr, flush=True)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
# the listing's own descriptor is counted, then closed: one is left, which lists the
# folder and opens the oldest file (held open); the next file is refused
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")), hard))
sys.exit(main(argv(folder, out + "/second")))
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
@pytest.mark.parametrize("command", ["report", "verify"])
def test_a_process_out_of_descriptors_gets_one_clear_line(tmp_path, command):
    # Both commands held one descriptor per trail file while reading: thousands of rotated
    # files ran into the process's open-file limit with a bare "[Errno 24] Too many open
    # files" naming one file. They now hold a bounded number (test_many_trail_files.py);
    # a process out of descriptors still gets one clear line.
    import subprocess
    import sys

    folder = _trail(tmp_path / "logs", _line())
    for index in range(1, 61):
        (folder / f"audit.jsonl.{index}").write_text(_line() + "\n")
    done = subprocess.run([sys.executable, "-c", _NO_DESCRIPTOR_LEFT,
                           str(_trail(tmp_path / "small", _line())), str(folder),
                           str(tmp_path / "out"), command],
                          capture_output=True, text=True, timeout=600)
    err = done.stderr.split("---\n", 1)[-1]
    assert done.returncode != 0 and len(err.strip().splitlines()) == 1, done.stderr
    assert err.startswith("aimsec audit verify: " if command == "verify" else "aimsec report: ")
    assert "cannot open the 61 files of the audit trail" in err and "ulimit -n" in err
    assert "Traceback" not in err and not (tmp_path / "out" / "second").exists()


def test_a_trail_folder_whose_name_is_not_utf8_gets_its_report(tmp_path):
    """A folder named with a byte UTF-8 cannot decode (``n\\xffname``, read by Python as
    the lone surrogate ``\\udcff``) made the page unwritable: ``aimsec report`` ended in a
    UnicodeEncodeError traceback after reading the whole trail."""
    import os

    logs = _trail(tmp_path / os.fsdecode(b"n\xffname"), _line())
    files = aimsec_core.report(logs, out=tmp_path / "out", incidents=[], console=QUIET)
    page = files.html_path.read_text(encoding="utf-8")
    assert "n\\udcffname" in page and files.report.calls == 1
    json.loads(files.json_path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_report_files_are_created_under_the_umask_as_any_new_file(tmp_path, umask):
    """They were written through ``mkstemp``, whose files only their owner can read: a
    web server or a colleague's account could not open the report it was made for."""
    previous = os.umask(umask)
    try:
        files = aimsec_core.report(_trail(tmp_path / "logs", _line()), out=tmp_path / "out",
                                   incidents=[], console=QUIET)
    finally:
        os.umask(previous)
    for path in (files.json_path, files.html_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("target", ["missing", "itself"])
def test_an_output_folder_that_is_a_link_to_nothing_is_named_as_such(tmp_path, target):
    """A symbolic link whose target is missing (or leads back to itself) was called "a
    file", and a link one level up was not named at all."""
    link = tmp_path / "reports"
    link.symlink_to(tmp_path / "missing" if target == "missing" else link)
    logs = _trail(tmp_path / "logs", _line())
    for out in (link, link / "today"):  # the folder, or one above it
        with pytest.raises(ConfigurationError, match="reports(: it)? is a symbolic link to nothing"
                           if target == "missing" or out == link else "symbolic links"):
            aimsec_core.report(logs, out=out, incidents=[], console=QUIET)
