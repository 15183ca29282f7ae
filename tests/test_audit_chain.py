"""The hash chain, ``aimsec audit verify``, rotation, restarts and several processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

import numpy as np
import pytest
from rich.console import Console

import aimsec_core
from aimsec_core import AuditLog
from aimsec_core.adapter import HostArrays
from aimsec_core.audit import verify_trail
from aimsec_core.audit.chain import tail_digest
from aimsec_core.audit.writer import AuditWriter
from aimsec_core.cli import main


def _write(audit: AuditLog, calls: int, start: int = 0) -> None:
    guard = aimsec_core.Guard(None, HostArrays(None), name="chained", sinks=[audit],
                              policy=False)  # the trail, not the query checks, is tested
    for i in range(start, start + calls):
        guard.call({"x": np.full((1, 3), float(i))}, lambda: None)


@pytest.fixture
def trail(tmp_path):
    audit = AuditLog(tmp_path / "logs")
    _write(audit, 6)
    return audit.file


def _lines(file):
    return file.read_bytes().splitlines(keepends=True)


def test_an_intact_trail_verifies_and_each_line_names_the_one_before(trail, capsys):
    lines = _lines(trail)
    assert json.loads(lines[0])["prev"] is None
    import hashlib
    for before, after in zip(lines, lines[1:]):
        assert json.loads(after)["prev"] == hashlib.sha256(before[:-1]).hexdigest()
    assert main(["audit", "verify", str(trail)]) == 0
    out = capsys.readouterr().out
    assert "intact: 6 lines" in out and hashlib.sha256(lines[-1][:-1]).hexdigest() in out


def _broken_at(path, capsys) -> str:
    assert main(["audit", "verify", str(path)]) == 1
    return capsys.readouterr().out


def test_a_modified_line_is_found(trail, capsys):
    lines = _lines(trail)
    lines[2] = lines[2].replace(b'"decision":"allowed"', b'"decision":"rejected"')
    trail.write_bytes(b"".join(lines))
    assert "line 4:" in _broken_at(trail, capsys)


@pytest.mark.parametrize("prev", [[1], 7, "not a digest", "A" * 64, "0" * 63])
def test_a_first_line_linking_to_something_other_than_a_digest_is_found(trail, capsys, prev):
    """The first line's link is not checked against a line (those were rotated away),
    but it must still be one: null or a SHA-256 hex digest."""
    lines = _lines(trail)
    first = json.loads(lines[0])
    first["prev"] = prev
    lines[0] = json.dumps(first, separators=(",", ":")).encode() + b"\n"
    trail.write_bytes(b"".join(lines[:1]))
    assert "line 1:" in _broken_at(trail, capsys)


def test_a_first_line_linking_to_a_digest_starts_after_rotated_lines(trail):
    lines = _lines(trail)
    trail.write_bytes(b"".join(lines[2:]))
    result = verify_trail(trail)
    assert result.intact and not result.anchored


def test_a_deleted_line_is_found(trail, capsys):
    lines = _lines(trail)
    del lines[3]
    trail.write_bytes(b"".join(lines))
    assert "line 4:" in _broken_at(trail, capsys)


def test_a_reordered_line_is_found(trail, capsys):
    lines = _lines(trail)
    lines[1], lines[2] = lines[2], lines[1]
    trail.write_bytes(b"".join(lines))
    assert "line 2:" in _broken_at(trail, capsys)


def test_a_truncated_last_line_is_found(trail, capsys):
    data = trail.read_bytes()
    trail.write_bytes(data[:-40])
    out = _broken_at(trail, capsys)
    assert "line 6:" in out and "cut short" in out


def test_a_changed_last_line_is_found_against_a_recorded_head(trail, capsys):
    head = verify_trail(trail).head
    lines = _lines(trail)
    lines[-1] = lines[-1].replace(b'"model":"chained"', b'"model":"chainee"')
    trail.write_bytes(b"".join(lines))
    assert verify_trail(trail).intact  # nothing follows it: the chain alone cannot tell
    assert main(["audit", "verify", str(trail), "--head", head]) == 1
    assert "expected" in capsys.readouterr().out


def test_a_missing_trail_is_exit_status_two(tmp_path, capsys):
    assert main(["audit", "verify", str(tmp_path / "nothing")]) == 2
    assert "no audit trail" in capsys.readouterr().err


def test_the_chain_continues_across_rotation_and_a_deleted_rotated_line_is_named(tmp_path,
                                                                                  capsys):
    audit = AuditLog(tmp_path, max_bytes=2_000, backups=50)
    _write(audit, 40)
    files = verify_trail(tmp_path).files
    assert len(files) > 3 and files[-1].name == "audit.jsonl"
    assert verify_trail(tmp_path).lines == 40 and verify_trail(tmp_path).anchored
    assert main(["audit", "verify", str(tmp_path)]) == 0  # the folder: every file, in order
    capsys.readouterr()
    middle = files[len(files) // 2]
    lines = _lines(middle)
    middle.write_bytes(b"".join(lines[1:]))  # the first line of a rotated file
    out = _broken_at(tmp_path, capsys)
    assert f"{middle}, line 1:" in out


@pytest.mark.parametrize("backups", [50, 4])  # 4: the oldest file is dropped meanwhile
def test_a_rotation_while_the_trail_is_checked_is_no_false_break(tmp_path, monkeypatch,
                                                                   backups):
    # `aimsec audit verify` on a live service: another writer rotated the trail after the
    # check listed its files and before it opened the later ones, which then held other
    # lines than listed. The intact trail was reported BROKEN (or, with the oldest file
    # dropped, as missing).
    from aimsec_core.audit import verify as verify_module

    audit = AuditLog(tmp_path, max_bytes=2_000, backups=backups)
    _write(audit, 14)
    before = verify_trail(tmp_path)
    assert before.intact and len(before.files) > 3
    real_check = verify_module._check
    rotated = []

    def check_then_rotate(*args, **kwargs):
        if not rotated:  # another worker writes while the first line is checked
            rotated.append(True)
            _write(audit, 12, start=100)
        return real_check(*args, **kwargs)

    monkeypatch.setattr(verify_module, "_check", check_then_rotate)
    result = verify_trail(tmp_path)
    assert rotated and result.intact, result.reason
    assert result.lines == before.lines  # the trail as it was when the check began
    monkeypatch.undo()
    assert verify_trail(tmp_path).intact


def test_a_restarted_process_continues_the_chain(tmp_path):
    file = tmp_path / "audit.jsonl"
    AuditWriter(file, 0, 0, False).write(b'{"n":1')
    AuditWriter(file, 0, 0, False).write(b'{"n":2')  # a new writer: reads the last line
    assert verify_trail(file).intact and verify_trail(file).lines == 2
    # a line cut short by a crash stays visible: it is ended and chained to, and reported
    with open(file, "ab") as handle:
        handle.write(b'{"n":3,"pr')
    AuditWriter(file, 0, 0, False).write(b'{"n":4')
    result = verify_trail(file)
    assert not result.intact and result.broken_line == 3
    assert tail_digest(file)[1]  # the file ends with a whole line again


def _worker(folder: str, worker: int, calls: int) -> None:
    audit = AuditLog(folder, max_bytes=20_000, backups=100)
    with aimsec_core.client(f"worker-{worker}"):
        _write(audit, calls, start=worker * calls)


@pytest.mark.skipif(sys.platform == "win32", reason="processes coordinate through flock")
def test_several_processes_share_one_trail_without_breaking_it(tmp_path):
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, as a real worker
    workers, calls = 4, 150
    processes = [context.Process(target=_worker, args=(str(tmp_path), w, calls))
                 for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        assert process.exitcode == 0
    result = verify_trail(tmp_path)
    assert result.intact, result.reason
    assert result.lines == workers * calls and len(result.files) > 3
    clients = [json.loads(line)["client"] for f in result.files
               for line in f.read_text().splitlines()]
    assert sorted(set(clients)) == [f"worker-{w}" for w in range(workers)]


def _forked_worker(audit: AuditLog, worker: int, calls: int) -> None:
    _write(audit, calls, start=worker * calls)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_forked_children_of_a_writing_process_keep_the_trail_whole(tmp_path):
    audit = AuditLog(tmp_path, max_bytes=8_000, backups=100)
    _write(audit, 5)  # the parent's writer is open (and its lock file) before the fork
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_forked_worker, args=(audit, w, 60))
                 for w in range(1, 4)]
    for process in processes:
        process.start()
    _write(audit, 60, start=1000)
    for process in processes:
        process.join()
        assert process.exitcode == 0
    result = verify_trail(tmp_path)
    assert result.intact, result.reason
    assert result.lines == 5 + 60 * 4


def test_an_audit_log_opened_while_another_process_rotates_the_trail_is_not_refused(
        tmp_path):
    """The trail's file is moved to ``.1`` and made again by a rotation at any moment: a
    log opened meanwhile must not mistake the moved file for one that is not regular (it
    asked "exists?" and then "a file?", and the rotation fell in between: a worker
    process failed at start with ConfigurationError)."""
    import threading

    file = tmp_path / "audit.jsonl"
    file.write_bytes(b"")
    stop = threading.Event()

    def rotating() -> None:
        while not stop.is_set():
            os.replace(file, tmp_path / "audit.jsonl.1")
            file.write_bytes(b"")

    mover = threading.Thread(target=rotating)
    mover.start()
    refused = []
    try:
        for _ in range(3000):
            try:
                AuditLog(file=file)
            except aimsec_core.ConfigurationError as error:
                refused.append(str(error))
    finally:
        stop.set()
        mover.join()
    assert refused == []


def test_a_guard_folder_read_mid_rotation_is_its_trail_not_several(tmp_path):
    # Between renaming audit.jsonl to audit.jsonl.1 and making the new one, a writer's
    # folder holds no audit.jsonl: the folder was then read as holding several trails
    # (the rotated files' and the incident database's), and verify and report failed.
    from aimsec_core.reporting.reader import open_trail

    audit = AuditLog(tmp_path, max_bytes=2_000, backups=50)
    guard = aimsec_core.Guard(None, HostArrays(None), name="audited", sinks=[audit])
    for i in range(30):
        guard.call({"x": np.full((1, 4), i)}, lambda: None)
    (tmp_path / "incidents.sqlite3").write_bytes(b"")
    lines = verify_trail(tmp_path).lines
    # the moment inside a rotation: the newest file renamed, its successor not yet made
    for index in range(50, 0, -1):
        source = tmp_path / ("audit.jsonl" + (f".{index - 1}" if index > 1 else ""))
        if source.exists():
            os.replace(source, tmp_path / f"audit.jsonl.{index}")
    result = verify_trail(tmp_path)
    assert result.intact and result.lines == lines
    with open_trail(tmp_path) as files:
        assert [file.path.name for file in files][-1] == "audit.jsonl.1"


def _prev_first(line: bytes) -> bytes:
    fields = json.loads(line)
    return json.dumps({"prev": fields.pop("prev"), **fields},
                      separators=(",", ":")).encode() + b"\n"


@pytest.mark.parametrize("rewrite", [
    lambda line: line.replace(b',"prev":', b',"prev": '),
    lambda line: line.replace(b',"prev":', b', "prev" : '),
    _prev_first,
], ids=["space", "spaces", "prev-first"])
def test_a_link_not_written_as_the_writer_writes_it_is_a_break_for_verify_and_report(
        trail, capsys, tmp_path, rewrite):
    """The writer puts the link last, as ``,"prev":...}``: a line whose link is elsewhere
    or spaced was rewritten. ``aimsec audit verify`` and ``aimsec report`` read the link
    the same way, so the report's "critical: the chain breaks, run aimsec audit verify"
    is never answered by verify with "intact" (a rewritten last line has no successor to
    expose it otherwise)."""
    lines = _lines(trail)
    lines[-1] = rewrite(lines[-1])
    assert json.loads(lines[-1])["prev"] == json.loads(_lines(trail)[-1])["prev"]
    trail.write_bytes(b"".join(lines))
    assert "line 6:" in _broken_at(trail, capsys)
    files = aimsec_core.report(trail.parent, out=tmp_path / "out",
                               console=Console(quiet=True),
                               db=tmp_path / "none.sqlite3")
    assert files.report.sources["chain"]["first_break"]["line"] == 6


def test_a_line_longer_than_any_writer_writes_is_a_break_for_verify_and_report(
        trail, capsys, tmp_path):
    """A last line padded to 100 KB with its link intact: verify named it (no writer
    writes a line over 8 KB), while the report's chain check called the trail intact."""
    lines = _lines(trail)
    pad = b',"pad":"' + b"A" * 100_000 + b'"'
    lines[-1] = lines[-1].replace(b',"prev":', pad + b',"prev":')
    trail.write_bytes(b"".join(lines))
    assert "line 6:" in _broken_at(trail, capsys)
    files = aimsec_core.report(trail.parent, out=tmp_path / "out",
                               console=Console(quiet=True), db=tmp_path / "none.sqlite3")
    chain = files.report.sources["chain"]
    assert chain["breaks"] == 1 and chain["first_break"]["line"] == 6
    assert files.report.sources["used"] == 6  # still read and counted


def test_a_line_as_long_as_verify_allows_is_no_break_for_either(trail, capsys, tmp_path):
    from aimsec_core.audit.verify import LONGEST_LINE

    lines = _lines(trail)
    body = lines[-1][:lines[-1].rindex(b',"prev":')]
    pad = b',"pad":"' + b"A" * (LONGEST_LINE + 1 - len(lines[-1]) - 9) + b'"'
    lines[-1] = body + pad + lines[-1][len(body):]
    assert len(lines[-1]) == LONGEST_LINE + 1  # the newline included
    trail.write_bytes(b"".join(lines))
    assert main(["audit", "verify", str(trail)]) == 0
    files = aimsec_core.report(trail.parent, out=tmp_path / "out",
                               console=Console(quiet=True), db=tmp_path / "none.sqlite3")
    assert files.report.sources["chain"]["breaks"] == 0


def test_a_rotated_file_cut_mid_line_is_a_break_for_verify_and_report(tmp_path, capsys):
    """The end of a rotated file cut away mid-line (its last lines removed): verify named
    it, while the report counted one unreadable line and called the chain intact."""
    audit = AuditLog(tmp_path / "logs", max_bytes=2_000, backups=50)
    _write(audit, 40)
    files = verify_trail(tmp_path / "logs").files
    middle = files[len(files) // 2]
    data = middle.read_bytes()
    middle.write_bytes(data[:data.rindex(b"\n", 0, len(data) - 1) - 30])
    cut_at = len(_lines(middle))
    assert f"{middle}, line {cut_at}:" in _broken_at(tmp_path / "logs", capsys)
    files = aimsec_core.report(tmp_path / "logs", out=tmp_path / "out",
                               console=Console(quiet=True), db=tmp_path / "none.sqlite3")
    chain = files.report.sources["chain"]
    assert chain["first_break"] == {"file": str(middle), "line": cut_at}
    assert files.report.sources["malformed"] == 1


def test_the_newest_file_ending_mid_line_is_no_chain_break_in_the_report(trail, tmp_path):
    """Its last line may still be being written where writers do not lock: the report
    counts it as unreadable, not as a break (verify, a check of the trail, names it)."""
    trail.write_bytes(trail.read_bytes()[:-40])
    files = aimsec_core.report(trail.parent, out=tmp_path / "out",
                               console=Console(quiet=True), db=tmp_path / "none.sqlite3")
    assert files.report.sources["chain"]["breaks"] == 0
    assert files.report.sources["malformed"] == 1


@pytest.mark.parametrize("body", [b'{"time":"2026-11-26T04:12:20+00:00",,,',
                                  b'["time"', b'{"time":"2026-11-26T04:12:20+00:00"]'])
def test_a_line_that_is_no_json_object_but_keeps_its_link_is_a_break_for_both(
        trail, capsys, tmp_path, body):
    """The last line's body replaced by text that is no JSON object, its link kept: verify
    named it, the report counted it unreadable but called the chain intact."""
    lines = _lines(trail)
    lines[-1] = body + lines[-1][lines[-1].rindex(b',"prev":'):]
    trail.write_bytes(b"".join(lines))
    assert "line 6:" in _broken_at(trail, capsys)
    files = aimsec_core.report(trail.parent, out=tmp_path / "out",
                               console=Console(quiet=True), db=tmp_path / "none.sqlite3")
    assert files.report.sources["chain"]["first_break"] == {"file": str(trail), "line": 6}
    assert files.report.sources["malformed"] == 1


@pytest.mark.skipif(sys.platform == "win32", reason="processes coordinate through flock")
def test_a_writer_whose_folder_was_removed_and_made_again_locks_the_new_lock_file(
        tmp_path, monkeypatch):
    """The trail's folder removed under a running writer (a clean-up) and made again by
    another process: the writer must write under the lock file that process and every
    later one takes, not the removed one it still holds (two writers each under its own
    lock fork the chain)."""
    import fcntl
    import shutil

    from aimsec_core.audit.writer import lock_path

    folder = tmp_path / "logs"
    file = folder / "audit.jsonl"
    first = AuditWriter(file, 0, 0, False)
    first.write(b'{"n":1')
    shutil.rmtree(folder)
    other = AuditWriter(file, 0, 0, False)  # a worker started after the clean-up
    other.write(b'{"n":2')
    other.close()
    held, real = [], os.write

    def append(fd, data):
        if not held:  # while the first writer appends: may anyone else take the lock?
            probe = os.open(lock_path(file), os.O_RDWR)
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
            except BlockingIOError:
                held.append(True)
            finally:
                os.close(probe)
        return real(fd, data)

    monkeypatch.setattr(os, "write", append)
    first.write(b'{"n":3')
    monkeypatch.undo()
    first.close()
    assert held == [True]
    result = verify_trail(folder)
    assert result.intact and result.lines == 2, result.reason


def test_lowering_the_backups_kept_leaves_no_false_break(tmp_path, monkeypatch, caplog):
    """A service restarted with fewer backups (AIMSEC_LOG_BACKUPS 8, then 2) left the
    files numbered above 2 in place: older than `.2` and separated from it by the lines
    rotation dropped, they made `aimsec audit verify` report the trail as changed."""
    from aimsec_core.audit import writer as writer_module

    _write(AuditLog(tmp_path, max_bytes=2_000, backups=8), 40)
    assert (tmp_path / "audit.jsonl.8").exists()
    assert verify_trail(tmp_path).intact
    writer_module._writers.pop(tmp_path / "audit.jsonl").close()  # the restart
    with caplog.at_level("WARNING", logger="aimsec.audit"):
        _write(AuditLog(tmp_path, max_bytes=2_000, backups=2), 10)
    assert sorted(p.name for p in tmp_path.glob("audit.jsonl.*[0-9]")) == [
        "audit.jsonl.1", "audit.jsonl.2"]
    result = verify_trail(tmp_path)
    assert result.intact, result.reason
    assert "removed 6 rotated audit file(s) numbered above 2" in caplog.text
