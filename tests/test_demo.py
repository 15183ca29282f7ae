"""``aimsec demo``: what a new user sees first."""

from __future__ import annotations

import json

from rich.console import Console

from aimsec_core import demo


def test_each_run_gets_its_own_folder_and_says_where_everything_went(tmp_path, capsys):
    from aimsec_core.cli import main

    assert main(["demo", "--calls", "40", "--framework", "sklearn",
                 "--out", str(tmp_path)]) == 0
    assert main(["demo", "--calls", "10", "--framework", "sklearn",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    folders = sorted(p for p in tmp_path.iterdir() if p.name.startswith("demo-"))
    assert len(folders) == 2
    first = (folders[0] / "audit.jsonl").read_text().splitlines()
    second = (folders[1] / "audit.jsonl").read_text().splitlines()
    assert (len(first), len(second)) == (40, 10)  # runs never append to each other
    assert {json.loads(line)["decision"] for line in first} == {"allowed", "rejected"}
    for folder in folders:
        assert str(folder) in out.replace("\n", "")


def test_progress_is_plain_lines_and_the_table_fits_80_columns(tmp_path):
    console = Console(width=80, record=True, force_terminal=False)
    demo.run(calls=30, frameworks=["sklearn"], console=console, out=tmp_path)
    text = console.export_text()
    assert "training the sklearn digits model ..." in text
    assert "replaying 30 calls" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text  # no header or cell cut short
    assert "\x1b[" not in text


def test_the_demo_attacker_is_refused_as_near_duplicates_and_hardly_anyone_else(tmp_path):
    result = demo.run(calls=200, frameworks=["sklearn"], console=Console(quiet=True),
                      out=tmp_path)
    lines = [json.loads(line) for line in result.audit_file.read_text().splitlines()]
    near = [r["client"] for r in lines
            if any(f["check"] == "near_duplicate" for f in r.get("findings", []))]
    probes = [r for r in lines if r["client"] == demo.PROBER]
    assert near.count(demo.PROBER) >= len(probes) - 2  # all but the walk's first steps
    # the ordinary clients send about 1,500 digits, and benign digits match each other
    # about once in 5,000 (a fresh fingerprint secret each run): measured over 70 runs,
    # 69 had no stray finding and one had two
    assert len(near) - near.count(demo.PROBER) <= 4


def test_warnings_become_one_note_after_the_progress_line(tmp_path, recwarn):
    console = Console(width=80, record=True, force_terminal=False)
    steps = demo._Steps(console)

    def warns() -> int:
        import warnings

        import aimsec_core

        # as aimsec's calibration raises it (the demo's own code in the stack)
        warnings.warn_explicit("calibrate on more clean data", UserWarning,
                               aimsec_core.__file__, 1)
        return 7

    def other_library_warns() -> int:
        import warnings

        warnings.warn_explicit("a library's own deprecation", DeprecationWarning,
                               "/site-packages/somelib/core.py", 1)
        return 8

    assert steps.run("calibrating", warns) == 7
    assert steps.run("calibrating again", warns) == 7
    lines = console.export_text().splitlines()
    assert lines[0].startswith("  calibrating ...") and lines[0].endswith(" s")
    assert [line for line in lines if "note:" in line] == [
        "    note: calibrate on more clean data"]
    assert len(recwarn) == 0  # nothing reaches stderr with a source line
    # another library's warning is not the demo's to reword: shown as usual
    assert steps.run("loading", other_library_warns) == 8
    assert [str(w.message) for w in recwarn] == ["a library's own deprecation"]
