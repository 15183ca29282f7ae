"""The audit log: rotation keeps every line, raw inputs only on request, environment config."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import aimsec_core
from aimsec_core import AuditLog, ConfigurationError
from aimsec_core.adapter import HostArrays


def _guard(audit):
    return aimsec_core.Guard(None, HostArrays(None), name="audited", sinks=[audit])


def test_rotation_keeps_every_line(tmp_path):
    audit = AuditLog(tmp_path, max_bytes=2_000, backups=50)
    guard = _guard(audit)
    for i in range(60):
        guard.call({"x": np.full((1, 4), i / 60)}, lambda: None)
    audit.flush()
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert len(files) > 3  # it rotated
    assert all(f.stat().st_size <= 2_000 for f in files)
    lines = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(lines) == 60 and len({line["input_hash"] for line in lines}) == 60


def test_raw_inputs_are_written_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMSEC_LOG_INPUTS", "1")
    audit = AuditLog(tmp_path / "with")
    _guard(audit).call({"x": np.array([[0.25, 0.5]])}, lambda: None)
    audit.flush()
    line = json.loads(audit.file.read_text())
    assert line["inputs"] == {"x": [[0.25, 0.5]]}


def test_environment_settings_are_validated(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMSEC_LOG_MAX_BYTES", "lots")
    with pytest.raises(ConfigurationError, match="AIMSEC_LOG_MAX_BYTES"):
        AuditLog(tmp_path)
    monkeypatch.setenv("AIMSEC_MODE", "block")
    with pytest.raises(ConfigurationError, match="AIMSEC_MODE"):
        aimsec_core.Guard(None, HostArrays(None), sinks=[])


def test_a_failing_sink_loses_neither_the_prediction_nor_other_records(tmp_path, caplog):
    class Broken:
        def record(self, event):
            raise RuntimeError("disk full")

    audit = AuditLog(tmp_path)
    guard = aimsec_core.Guard(None, HostArrays(None), sinks=[Broken(), audit])
    assert guard.call({"x": np.ones((1, 2))}, lambda: "prediction") == "prediction"
    audit.flush()
    assert len(audit.file.read_text().splitlines()) == 1
    assert "failed to record" in caplog.text


def test_an_audit_folder_that_is_a_file_is_a_configuration_error(tmp_path):
    # it was accepted, and every line was then lost to the failing sink
    taken = tmp_path / "passwd"
    taken.write_text("root:x:0:0\n")
    with pytest.raises(ConfigurationError, match="is a file"):
        AuditLog(taken)
    AuditLog(tmp_path / "not-yet" / "made")  # a folder that can be made is fine


def test_an_audit_folder_that_would_be_made_under_a_file_is_a_configuration_error(tmp_path):
    # accepted: every call's line was then lost (NotADirectoryError, logged per call)
    taken = tmp_path / "passwd"
    taken.write_text("root:x:0:0\n")
    with pytest.raises(ConfigurationError, match="is a file"):
        AuditLog(taken / "logs" / "aimsec")
    assert taken.read_text() == "root:x:0:0\n"


@pytest.mark.parametrize("make", [
    lambda lock: lock.mkdir(),
    lambda lock: os.mkfifo(lock),
    lambda lock: os.symlink(lock.parent / "gone" / "lock", lock),
], ids=["folder", "fifo", "dangling-link"])
def test_a_lock_file_that_is_no_regular_file_is_a_configuration_error(tmp_path, make):
    # accepted: a folder or a link to nowhere failed every line (lost, one logged error
    # each); a FIFO took the lock but readers of the trail could not, and read it unlocked
    make(tmp_path / "audit.jsonl.lock")
    with pytest.raises(ConfigurationError, match="lock file .* is not a regular file"):
        AuditLog(tmp_path)


@pytest.mark.parametrize("folder", ["a\x00b", "x" * 5000, "loop"])
def test_an_audit_path_that_names_no_folder_is_a_configuration_error(tmp_path, folder):
    # a NUL raised ValueError, a too-long name OSError, a loop of links RuntimeError, all
    # raw from constructing the sink (or the guard that makes the default one)
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(ConfigurationError, match="audit log"):
        AuditLog(tmp_path / folder)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root may write to any folder")
def test_an_audit_folder_the_process_may_not_write_is_a_configuration_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(ConfigurationError, match="not writable"):
            AuditLog(locked / "logs")
    finally:
        locked.chmod(0o700)


def test_a_rotation_that_cannot_rename_keeps_every_line_in_the_live_file(tmp_path,
                                                                          monkeypatch, caplog):
    # A folder where files can no longer be renamed (permissions changed under a running
    # service, a read-only bind mount of the folder, a security module) while the trail
    # itself stays writable: the rotation failed, and every later line was lost with it.
    from aimsec_core.audit import verify_trail

    audit = AuditLog(tmp_path, max_bytes=2_000, backups=50)
    guard = _guard(audit)
    for i in range(5):
        guard.call({"x": np.full((1, 4), i)}, lambda: None)
    real_replace = os.replace

    def refused(source, target, **kwargs):
        raise PermissionError(13, "Permission denied", str(source))

    monkeypatch.setattr(os, "replace", refused)
    for i in range(5, 30):
        guard.call({"x": np.full((1, 4), i)}, lambda: None)
    assert verify_trail(tmp_path).lines == 30  # none lost ...
    assert audit.file.stat().st_size > 2_000  # ... the file past max_bytes instead
    assert "failed to record" not in caplog.text
    assert "cannot rotate" in caplog.text and caplog.text.count("cannot rotate") == 1
    monkeypatch.setattr(os, "replace", real_replace)
    for i in range(30, 40):  # renaming works again: rotation resumes
        guard.call({"x": np.full((1, 4), i)}, lambda: None)
    result = verify_trail(tmp_path)
    assert result.intact, result.reason
    assert result.lines == 40 and len(result.files) > 1


def test_retrying_a_rotation_whose_last_rename_fails_drops_no_rotated_file(tmp_path,
                                                                         monkeypatch, caplog):
    # Only the live file cannot be renamed (an append-only attribute on it, or a reader
    # holding it open where open files cannot be renamed): every retry shifted the
    # rotated files up once more, each time dropping the oldest, until one was left.
    audit = AuditLog(tmp_path, max_bytes=2_000, backups=4)
    guard = _guard(audit)
    for i in range(40):  # audit.jsonl.1 to .4 made
        guard.call({"x": np.full((1, 4), i)}, lambda: None)
    assert all((tmp_path / f"audit.jsonl.{k}").exists() for k in range(1, 5))
    real_replace = os.replace

    def live_file_stays(source, target, **kwargs):
        if os.fspath(source) == os.fspath(audit.file):
            raise PermissionError(1, "Operation not permitted", str(source))
        return real_replace(source, target, **kwargs)

    monkeypatch.setattr(os, "replace", live_file_stays)
    i = 40
    while "cannot rotate" not in caplog.text:  # the first failed rotation
        guard.call({"x": np.full((1, 4), i)}, lambda: None)
        i += 1
    rotated = {p.name: p.read_bytes() for p in tmp_path.glob("audit.jsonl.*")
               if not p.name.endswith(".lock")}
    assert len(rotated) == 3  # that rotation dropped the oldest, as any rotation does
    for j in range(i, i + 30):
        guard.call({"x": np.full((1, 4), j)}, lambda: None)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("audit.jsonl.*")
            if not p.name.endswith(".lock")} == rotated
