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


def _plain_trail(folder: Path, lines: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "audit.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def _at(second: int) -> str:
    return f"2026-09-21T10:{second // 60:02d}:{second % 60:02d}+00:00"


def test_errors_at_exactly_one_percent_earn_no_recommendation(tmp_path):
    """The page promises a recommendation for *more than* 1% of calls ending in error."""
    lines = [{"time": _at(i), "model": "m", "decision": "error" if i < k else "allowed"}
             for k, n in ((1, 100),) for i in range(n)]
    quiet = _report(_plain_trail(tmp_path / "a", lines), tmp_path / "a-out").report
    assert quiet.totals["error"] == 1 and quiet.calls == 100
    assert not [r for r in quiet.recommendations if "error_calls" in r.evidence]
    lines[1]["decision"] = "error"  # 2%
    loud = _report(_plain_trail(tmp_path / "b", lines), tmp_path / "b-out").report
    assert [r for r in loud.recommendations if "error_calls" in r.evidence]


def test_exactly_ten_refusals_earn_a_recommendation_nine_do_not(tmp_path):
    lines = [{"time": _at(i), "model": "m", "client": client, "decision": "rejected",
              "findings": [{"check": "repeat"}]}
             for client, n in (("ten", 10), ("nine", 9)) for i in range(n)]
    recs = _report(_plain_trail(tmp_path / "logs", lines), tmp_path / "out").report
    named = [r.evidence.get("client") for r in recs.recommendations if r.section == "clients"]
    assert named == ["ten"]


def test_a_model_name_longer_than_the_report_keeps_is_still_selected_by_its_name(tmp_path):
    """The guard writes model names up to 256 characters; --model with the name as
    written must select its calls."""
    name = "digits-" + "x" * 240
    lines = [{"time": _at(i), "model": model, "decision": "allowed"}
             for i, model in enumerate((name, name, "other-model"))]
    found = _report(_plain_trail(tmp_path / "logs", lines), tmp_path / "out", model=name)
    assert found.report.calls == 2


def test_a_rotation_while_the_report_reads_is_no_false_break(tmp_path, monkeypatch):
    # `aimsec report` on a live service: a guard rotated the trail after the report listed
    # its files and before it opened the later ones, which then held other lines than
    # listed: lines were skipped or read twice and the intact trail was reported broken.
    from aimsec_core.reporting import reader

    logs = tmp_path / "logs"
    write_trail(logs, calls=200, max_bytes=20_000)
    listed = sorted(p.name for p in logs.iterdir())
    before = _report(logs, tmp_path / "before").report
    assert len(before.sources["files"]) >= 3 and before.sources["chain"]["breaks"] == 0
    real_parse = reader.parse_line
    rotated = []

    def parse_then_rotate(line):
        if not rotated:  # another worker writes while the first line is read
            rotated.append(True)
            write_trail(logs, calls=120, seed=1, max_bytes=20_000)
        return real_parse(line)

    monkeypatch.setattr(reader, "parse_line", parse_then_rotate)
    during = _report(logs, tmp_path / "during").report
    assert rotated and sorted(p.name for p in logs.iterdir()) != listed  # it rotated
    chain = during.sources["chain"]
    assert chain["breaks"] == 0 and chain["first_break"] is None, chain
    assert chain["checked"] == 200 and chain["anchored"] is True
    assert not [r for r in during.recommendations if r.section == "sources"]
    # the trail as it was when the report began: no line lost, none counted twice
    assert during.sources["lines"] == before.sources["lines"] == 200
    assert during.totals == before.totals and during.by_model == before.by_model
    assert during.sources["files"] == before.sources["files"]
    assert during.sources["files_rotated_away"] == []
