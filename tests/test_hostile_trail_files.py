"""A FIFO, a device or a socket where an audit file should be: ``aimsec audit verify``
and ``aimsec report`` refuse it in one line (exit status 2) instead of blocking forever
on a FIFO or reading ``/dev/zero`` without end."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from aimsec_core.audit import verify_trail
from aimsec_core.cli import main

pytestmark = [pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files"),
              pytest.mark.timeout(60)]  # before the fix these hung: fail, do not hang


def _fifo(folder: Path, name: str = "audit.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / name)
    return folder


@pytest.mark.parametrize("command", ["verify", "report"])
def test_a_fifo_in_the_trails_place_is_refused(tmp_path, capsys, command):
    logs = _fifo(tmp_path / "logs")
    argv = (["audit", "verify", str(logs)] if command == "verify" else
            ["report", "--logs", str(logs), "--out", str(tmp_path / "out"),
             "--db", str(tmp_path / "none.sqlite3")])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not a regular file (it is a FIFO)" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "report.html").exists()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize("command", ["verify", "report"])
def test_a_device_named_as_the_trail_is_refused(tmp_path, capsys, command):
    argv = (["audit", "verify", "/dev/zero"] if command == "verify" else
            ["report", "--logs", "/dev/zero", "--out", str(tmp_path / "out"),
             "--db", str(tmp_path / "none.sqlite3")])
    assert main(argv) == 2
    assert "(it is a character device)" in capsys.readouterr().err


def test_verify_trail_raises_a_value_error_naming_the_file(tmp_path):
    logs = _fifo(tmp_path / "logs")
    with pytest.raises(ValueError, match="audit.jsonl is not a regular file"):
        verify_trail(logs)


def test_a_forged_link_of_kilobytes_is_named_in_a_bounded_line(tmp_path, capsys):
    """A "prev" of 60 KB was printed whole in the BROKEN line."""
    import json

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "audit.jsonl").write_text('{"time":"2026-11-26T04:12:20+00:00","prev":null}\n'
                                      + json.dumps({"prev": "A" * 60_000}) + "\n")
    assert main(["audit", "verify", str(logs)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN:") and "line 2" in out and len(out) < 1000


def _audited_call(audit) -> object:
    import numpy as np

    import aimsec_core
    from aimsec_core.adapter import HostArrays

    guard = aimsec_core.Guard(None, HostArrays(None), name="fifo", sinks=[audit], policy=False)
    return guard.call({"x": np.ones((1, 2))}, lambda: "prediction")


def test_a_fifo_as_the_newest_rotated_file_does_not_hang_the_writer(tmp_path):
    # The writer reads the newest rotated file's last line to continue the chain when
    # the trail is empty; a FIFO there blocked that read, with the writer's lock held:
    # every guarded call of every thread hung.
    from aimsec_core import AuditLog

    _fifo(tmp_path, "audit.jsonl.1")
    audit = AuditLog(tmp_path)
    assert _audited_call(audit) == "prediction"
    assert len(audit.file.read_bytes().splitlines()) == 1


def test_a_fifo_swapped_in_for_the_trail_fails_the_sink_without_hanging(tmp_path, caplog):
    # AuditLog refuses a FIFO when it is built; one put in the file's place later was
    # opened for writing, which blocks until a reader comes: the call hung.
    from aimsec_core import AuditLog

    audit = AuditLog(tmp_path)
    assert _audited_call(audit) == "prediction"
    audit.file.unlink()
    os.mkfifo(audit.file)
    assert _audited_call(audit) == "prediction"
    assert "failed to record" in caplog.text and "not a regular file" in caplog.text
