"""What a report must say about the trail it read: numbers checked against trails of known
content, and damage to the trail (a broken hash chain) stated, not hidden."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

import aimsec_core
from aimsec_core.audit.verify import verify_trail

from .trail import write_trail

QUIET = Console(quiet=True)


def _report(folder: Path, out: Path, **kwargs):
    return aimsec_core.report(folder, out=out, console=QUIET, db=out / "none.sqlite3",
                              **kwargs)


def _edit(path: Path, number: int, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` on line ``number`` (1-based) of ``path``."""
    lines = path.read_bytes().split(b"\n")
    assert old.encode() in lines[number - 1]
    lines[number - 1] = lines[number - 1].replace(old.encode(), new.encode(), 1)
    path.write_bytes(b"\n".join(lines))


def test_an_intact_trail_says_its_chain_holds(tmp_path):
    write_trail(tmp_path / "logs", calls=200)
    assert verify_trail(tmp_path / "logs").intact
    files = _report(tmp_path / "logs", tmp_path / "out")
    chain = files.report.sources["chain"]
    assert chain["breaks"] == 0 and chain["first_break"] is None
    assert chain["checked"] == 200 and chain["anchored"] is True
    assert not [r for r in files.report.recommendations if r.section == "sources"]


def test_a_chain_broken_mid_way_is_said_in_the_report(tmp_path):
    logs = tmp_path / "logs"
    write_trail(logs, calls=200)
    newest = logs / "audit.jsonl"
    _edit(newest, 3, '"decision":"', '"decision":"x')  # an edited decision
    broken = verify_trail(logs)
    assert not broken.intact and broken.broken_line == 4
    files = _report(logs, tmp_path / "out")
    chain = files.report.sources["chain"]
    assert chain["breaks"] == 1
    assert chain["first_break"] == {"file": str(newest), "line": 4}
    warning = [r for r in files.report.recommendations if r.section == "sources"
               and "chain" in r.title]
    assert warning and warning[0].priority in ("critical", "high")
    assert json.loads(files.json_path.read_text())["sources"]["chain"]["breaks"] == 1
    page = files.html_path.read_text()
    assert "hash chain" in page and "line 4" in page


def test_a_removed_line_and_a_period_that_excludes_it_still_break_the_chain(tmp_path):
    logs = tmp_path / "logs"
    write_trail(logs, calls=200, max_bytes=10**9)
    path = logs / "audit.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:10] + lines[11:]))  # the 11th call removed
    files = _report(logs, tmp_path / "out", since="2026-09-21T12:00:00+00:00")
    assert files.report.sources["chain"]["breaks"] == 1
    assert files.report.sources["chain"]["first_break"]["line"] == 11


def test_a_trail_written_before_the_chain_is_unchained_not_broken(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "audit.jsonl").write_text("".join(
        json.dumps({"time": f"2026-09-21T10:00:0{i}+00:00", "model": "m",
                    "decision": "allowed"}) + "\n" for i in range(5)))
    chain = _report(logs, tmp_path / "out").report.sources["chain"]
    assert chain == {"checked": 0, "breaks": 0, "first_break": None, "unchained": 5,
                     "anchored": None}
