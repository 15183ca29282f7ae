"""Every bad argument of the ``aimsec`` commands ends in one line on standard error and a
nonzero exit status, never a traceback."""

from __future__ import annotations

import os
import sqlite3

import pytest

from aimsec_core.cli import main
from tests.conftest import run_cli


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "audit.jsonl").write_text(
        '{"time": "2026-09-21T10:00:00", "model": "m", "decision": "allowed"}\n')
    (tmp_path / "text.txt").write_text("not a database\n")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")  # resolves to itself
    os.mkfifo(tmp_path / "fifo")  # nobody reads it
    (tmp_path / "loop.json").write_text('{"calibration": "loop"}')
    conn = sqlite3.connect(tmp_path / "foreign.sqlite3")
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    return tmp_path


BAD = [
    (["incidents", "--limit", "-1"], "--limit"),
    (["incidents", "--limit", "0"], "--limit"),
    (["incidents", "--limit", "9223372036854775807"], "--limit"),  # OverflowError binding it
    (["incidents", "--ack", "99999999999999999999"], "--ack"),
    (["incidents", "--resolve", "0"], "--resolve"),
    (["incidents", "--db", "{tmp}"], "not a file"),
    (["incidents", "--db", "{tmp}/text.txt"], "text.txt"),
    (["incidents", "--db", "{tmp}/foreign.sqlite3"], "not an incident database"),
    (["evaluate", "--fpr", "2"], "--fpr"),
    (["evaluate", "--fpr", "-0.1"], "--fpr"),
    (["evaluate", "--out", "{tmp}/fifo"], "FIFO nobody is reading"),  # it used to hang
    (["evaluate", "--attack", ""], "is empty"),  # it used to select every attack
    (["evaluate", "--attack", "Boundary"], "names none of the attacks"),
    # it trained every model, then ended in a traceback from the adaptive attacks
    (["evaluate", "--adaptive", "--quick", "--detector", "squeeze", "--detector", "margin"],
     "--detector squeeze with --adaptive: the adaptive attacks have no differentiable copy"),
    # each trained the models, measured nothing and ended with status 0 and an empty table
    (["evaluate", "--dataset", "wine", "--framework", "sklearn", "--attack", "FGSM eps=0.5",
      "--out", "{tmp}/e.json"], "'FGSM eps=0.5' starts the name of none of the attacks"),
    (["evaluate", "--dataset", "digits", "--framework", "sklearn", "--attack", "HopSkipJump",
      "--out", "{tmp}/e.json"], "'HopSkipJump' starts the name of none of the attacks"),
    (["incidents", "--db", "{tmp}/loop"], "symbolic links"),
    (["report", "--logs", "{tmp}/logs", "--out", "{tmp}/o", "--db", "{tmp}/loop"],
     "symbolic links"),
    (["threat-model", "--model-config", "{tmp}/loop.json"], "symbolic links"),
    (["threat-model", "--model-config", "{tmp}/loop"], "cannot read the model config"),
    (["audit", "verify", "{tmp}/fifo"], "not a regular file"),
    (["demo", "--calls", "0"], "--calls"),
    (["demo", "--calls", "many"], "--calls"),
    # it replayed for ever (a quarter of an hour per 100,000 calls and model)
    (["demo", "--calls", "99999999999999999999"], "expected a number from 1 to 100000"),
    # a scikit-learn InvalidParameterError traceback from the data split
    (["demo", "--seed", "-1"], "--seed: expected a number from 0 to 4294967295"),
    (["demo", "--seed", "4294967296"], "--seed: expected a number from 0 to 4294967295"),
    (["incidents", "--prune", "--since", "1h"], "--since selects the incidents"),
    (["report", "--logs", "{tmp}/logs", "--since", "99999999999d", "--out", "{tmp}/o"],
     "--since"),
    (["report", "--logs", "{tmp}/logs", "--out", "{tmp}/text.txt"], "report folder"),
    # it said "[Errno 17] File exists", naming no culprit
    (["report", "--logs", "{tmp}/logs", "--out", "{tmp}/text.txt"],
     "text.txt: it is a file; expected a folder"),
    (["report", "--logs", "{tmp}/missing"], "no audit trail"),
    (["threat-model", "--chatbot", "rate_limiting", "--json", "{tmp}"], "cannot write"),
    (["threat-model", "--chatbot", "rate_limiting", "--markdown", "{tmp}/no/such/x.md"],
     "cannot write"),
    (["threat-model", "--model-config", "{tmp}"], "cannot read the model config"),
    (["threat-model", "--model-config", "{tmp}/text.txt"], "cannot read the model config"),
    (["threat-model", "--chatbot", "firewall"], "unknown control id"),
    (["threat-model", "--chatbot", "rate_limiting", "--api-key-identity"],
     "--api-key-identity"),
    (["audit", "verify", "{tmp}/missing"], "no audit trail"),
    (["audit", "verify", "{tmp}/logs", "--head", "zz"], "--head"),
]


@pytest.mark.timeout(30)  # a check that blocks (opening a FIFO) fails instead of hanging
@pytest.mark.parametrize("argv, says", BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_a_bad_argument_is_one_line_and_a_nonzero_status(paths, capsys, argv, says):
    status, err = run_cli([a.format(tmp=paths) for a in argv], capsys)
    assert status not in (0, None)
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"aimsec {argv[0]}") and says in last, err
    assert "Traceback" not in err


def test_listing_a_foreign_database_leaves_it_unchanged(paths, capsys):
    db = paths / "foreign.sqlite3"
    before = db.read_bytes()
    status, _ = run_cli(["incidents", "--db", str(db)], capsys)
    assert status == 2 and db.read_bytes() == before
    assert sorted(p.name for p in paths.iterdir()) == [
        "fifo", "foreign.sqlite3", "logs", "loop", "loop.json", "text.txt"]


def test_a_damaged_incident_row_is_skipped_not_a_traceback(tmp_path, capsys):
    from aimsec_core.incidents import IncidentStore

    db = tmp_path / "incidents.sqlite3"
    store = IncidentStore(db)
    store.incidents()  # creates the schema
    store.close()
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO incidents (model, threat, client, severity, severity_rank, "
                 "first_seen, last_seen, count, evidence) VALUES "
                 "('m', 't', 'c', 'high', 2, 'x', 'y', 1, 'not json')")
    conn.commit()
    conn.close()
    status = main(["incidents", "--db", str(db), "--status", "all"])
    captured = capsys.readouterr()
    assert status == 0 and captured.err == ""
    assert "1 damaged incident row skipped (id 1: could not convert string to float: 'x')" \
        in captured.out


def test_file_names_in_an_error_cannot_drive_the_terminal(tmp_path, capsys):
    """A folder of two trails is refused naming both; a name holding ESC sequences
    reached the terminal raw."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.jsonl").write_text("")
    (logs / "b\x1b]0;owned\x07\u202e.jsonl").write_text("")
    status, err = run_cli(["audit", "verify", str(logs)], capsys)
    status_report, err_report = run_cli(["report", "--logs", str(logs), "--out",
                                      str(tmp_path / "o")], capsys)
    assert (status, status_report) == (2, 2)
    for text in (err, err_report):
        assert "holds several trails" in text and "b\\x1b]0;owned\\x07\\u202e.jsonl" in text
        assert not set(text) & {"\x1b", "\x07", "\u202e"}


def test_the_commands_point_at_the_latest_demo_run(tmp_path, capsys, monkeypatch):
    logs = tmp_path / "security_logs"
    for run in ("demo-20261130-100000-000000", "demo-20261130-110000-000000"):
        (logs / run).mkdir(parents=True)
        (logs / run / "audit.jsonl").write_text("")
    latest = logs / "demo-20261130-110000-000000"
    monkeypatch.setenv("SECURITY_LOG_PATH", str(logs))
    monkeypatch.delenv("AIMSEC_INCIDENT_DB", raising=False)

    status, err = run_cli(["report", "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and f"--logs {latest}" in err
    status, err = run_cli(["audit", "verify", str(logs)], capsys)
    assert status == 2 and f"aimsec audit verify {latest}" in err
    assert main(["incidents"]) == 0
    out = "".join(capsys.readouterr().out.split())  # the table's console wraps lines
    assert f"--db{latest / 'incidents.sqlite3'}" in out

    status, err = run_cli(["report", "--since", "bogus"], capsys)  # another error: no hint
    assert status == 2 and "demo run" not in err


@pytest.mark.parametrize("folder", ["runs[/]x", "runs[bold]", "runs\x1b]0;owned\x07"])
@pytest.mark.parametrize("argv", [[], ["--status", "resolved"]])
def test_an_incident_database_in_a_folder_named_like_markup_is_listed(tmp_path, capsys,
                                                                      folder, argv):
    """A path holding rich markup ('[/]') was a MarkupError traceback after the listing;
    one holding ESC sequences reached the terminal raw."""
    import time

    from aimsec_core.incidents import IncidentStore
    from aimsec_core.incidents.model import Occurrence

    db = tmp_path / folder / "incidents.sqlite3"
    db.parent.mkdir(parents=True)  # "runs[/]x" is "runs[" holding "]x": a closing tag
    store = IncidentStore(db)
    now = time.time()
    store.record([Occurrence(model="m", threat="query_attack", client="c", severity="high",
                             first_seen=now, last_seen=now)])
    store.close()
    status = main(["incidents", "--db", str(db), *argv])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "Traceback" not in captured.err and "\x1b" not in captured.out
    assert "incidents.sqlite3" in captured.out.replace("\n", "")


def test_evaluate_prints_an_output_named_like_markup_as_named(tmp_path, capsys, monkeypatch):
    # after minutes of evaluation, a --out holding '[/]' ended in a MarkupError traceback
    from aimsec_core import evaluation

    out = tmp_path / "x[/]y.json"  # in a folder "x[", a closing tag
    out.parent.mkdir()
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: [])
    monkeypatch.setattr(evaluation, "tables", lambda rows, fpr: [])
    monkeypatch.setattr(evaluation, "write_json", lambda rows, path, **k: path)
    status = main(["evaluate", "--framework", "sklearn", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "x[/]y.json" in captured.out.replace("\n", "")


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    # `aimsec incidents --json | head`: the pipe closed under the command printed
    # "aimsec incidents: [Errno 32] Broken pipe" (whenever the reader left first)
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "AIMSEC_INCIDENTS_DB": str(tmp_path / "incidents.db"),
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: every write fails
    try:
        done = subprocess.run([sys.executable, "-m", "aimsec_core.cli", "incidents", "--json"],
                              stdout=write, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=120)
    finally:
        os.close(write)
    assert done.stderr == "" and done.returncode == 1


def test_version_names_the_release(capsys):
    import aimsec_core

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"aimsec {aimsec_core.__version__}"


def test_evaluate_writes_through_an_output_link_and_keeps_it(tmp_path, capsys, monkeypatch):
    # --out a link to a file not yet written: the check of the path created the link's
    # file, then removed the link itself, leaving an empty file beside a regular one
    import json

    from aimsec_core import evaluation

    (tmp_path / "runs").mkdir()
    link, target = tmp_path / "latest.json", tmp_path / "runs" / "e.json"
    link.symlink_to(target)
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: [])
    monkeypatch.setattr(evaluation, "tables", lambda rows, fpr: [])
    status = main(["evaluate", "--framework", "sklearn", "--dataset", "wine", "--dataset",
                   "wine", "--out", str(link)])
    assert status == 0, capsys.readouterr().err
    assert link.is_symlink() and os.readlink(link) == str(target)
    written = json.loads(target.read_text())
    assert written["rows"] == [] and written["datasets"] == ["wine"]  # named twice, once
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["e.json", "latest.json", "runs"]


def test_evaluate_keeps_tensorflows_advice_to_other_libraries_off_its_output(
        tmp_path, caplog, monkeypatch):
    # every ART attack on the Keras model printed TensorFlow's "Calling
    # GradientTape.gradient on a persistent tape ... less efficient" to standard error
    import logging

    from aimsec_core import evaluation

    logger = logging.getLogger("tensorflow")
    level = logger.level

    def evaluate(*args, **kwargs):  # as TensorFlow logs it; the record reaches caplog
        import tensorflow

        tensorflow.get_logger().warning(
            "Calling GradientTape.gradient on a persistent tape inside its context")
        return []

    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    monkeypatch.setattr(evaluation, "tables", lambda rows, fpr: [])
    try:
        status = main(["evaluate", "--framework", "keras", "--out", str(tmp_path / "e.json")])
    finally:
        logger.setLevel(level)
    assert status == 0 and "GradientTape" not in caplog.text


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.timeout(30)
def test_evaluate_writes_to_an_output_pipe_named_by_its_descriptor(capsys, monkeypatch):
    # `aimsec evaluate --out /dev/stdout | jq`: /dev/stdout on a pipe leads to
    # /proc/<pid>/fd/pipe:[...], no file, which the check and the write were handed:
    # refused up front as "cannot write there (No such file or directory)"
    import json

    from aimsec_core import evaluation

    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: [])
    monkeypatch.setattr(evaluation, "tables", lambda rows, fpr: [])
    read, write = os.pipe()
    with os.fdopen(read) as pipe:
        try:
            status = main(["evaluate", "--framework", "sklearn", "--dataset", "wine",
                           "--out", f"/proc/self/fd/{write}"])
        finally:
            os.close(write)
        assert status == 0, capsys.readouterr().err
        assert json.loads(pipe.read())["rows"] == []


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.parametrize("case", [
    pytest.param("read-only folder, file there", marks=pytest.mark.skipif(
        _as_root(), reason="root may create files in a read-only folder")),
    pytest.param("read-only folder, new file", marks=pytest.mark.skipif(
        _as_root(), reason="root may create files in a read-only folder")),
    pytest.param("folder not searchable", marks=pytest.mark.skipif(
        _as_root(), reason="root may search any folder")),
    "no such folder", "folder is a file", "out is a folder"])
def test_evaluate_refuses_an_output_it_could_not_write_before_it_trains(
        tmp_path, capsys, monkeypatch, case):
    # the JSON is written whole through a temporary file beside it: a writable file in a
    # read-only folder passed the check, and the write failed once the run had ended
    from aimsec_core import evaluation

    def evaluate(*args, **kwargs):
        raise AssertionError("the evaluation ran though its output cannot be written")

    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    folder = tmp_path / "out"
    folder.mkdir()
    out = {"read-only folder, file there": folder / "e.json",
           "read-only folder, new file": folder / "e.json",
           "folder not searchable": folder / "e.json",
           "no such folder": folder / "missing" / "e.json",
           "folder is a file": folder / "e.json" / "x.json",
           "out is a folder": folder}[case]
    if case in ("read-only folder, file there", "folder is a file"):
        (folder / "e.json").write_text("previous")
    mode = {"read-only folder, file there": 0o500, "read-only folder, new file": 0o500,
            "folder not searchable": 0o000}.get(case)
    if mode is not None:
        folder.chmod(mode)
    try:
        status, err = run_cli(["evaluate", "--framework", "sklearn", "--out", str(out)],
                              capsys)
    finally:
        folder.chmod(0o700)
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aimsec evaluate: --out {out}"), err
    assert "expected" in lines[0] and "Traceback" not in err
    left = sorted(p.name for p in folder.iterdir())
    assert left == (["e.json"] if case in ("read-only folder, file there",
                                           "folder is a file") else [])
    if left:
        assert (folder / "e.json").read_text() == "previous"
