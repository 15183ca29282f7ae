"""A trail of more rotated files than the process may hold open is read whole: ``aimsec
report`` and ``aimsec audit verify`` hold a bounded number of descriptors, and the report
is the one an unlimited process writes. Rotations while the trail is read move files, and
a file is found under its new name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aimsec_core.audit import snapshot as snapshots
from aimsec_core.audit.writer import AuditWriter
from tests.reporting.trail import write_trail

# run in a child: it lowers its own open-file limit below the trail's file count
_CHILD = r"""
import json, os, resource, sys
from datetime import datetime, timezone
import aimsec_core
from aimsec_core.audit.verify import verify_trail
from rich.console import Console
QUIET = Console(quiet=True)

logs, out = sys.argv[1], sys.argv[2]
now = datetime(2026, 10, 1, tzinfo=timezone.utc)
def report(folder):
    return aimsec_core.report(logs, out=folder, incidents=[], now=now, since="2026-09-01",
                              console=QUIET)
report(out + "/unlimited")  # everything it imports is loaded first
files = len([n for n in os.listdir(logs) if not n.endswith(".lock")])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
limit = len(os.listdir("/proc/self/fd")) + 20
assert limit < files, (limit, files)
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
report(out + "/limited")
print(json.dumps({"files": files, "limit": limit, "verified": verify_trail(logs).intact}))
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_a_trail_of_more_files_than_may_be_open_reports_as_an_unlimited_process_does(
        tmp_path):
    logs = tmp_path / "logs"
    write_trail(logs, calls=300, max_bytes=1_200)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(logs), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["files"] > found["limit"] and found["verified"]
    for name in ("report.json", "report.html"):
        limited = (tmp_path / "limited" / name).read_bytes()
        assert limited == (tmp_path / "unlimited" / name).read_bytes(), name
    sources = json.loads((tmp_path / "limited" / "report.json").read_text())["sources"]
    assert len(sources["files"]) == found["files"] and sources["used"] == 300
    assert sources["chain"]["breaks"] == 0 and not sources["files_rotated_away"]


def _chained_trail(folder: Path, files: int) -> AuditWriter:
    folder.mkdir()
    writer = AuditWriter(folder / "audit.jsonl", max_bytes=1, backups=10_000, fsync=False)
    for i in range(files):  # one line per file: each line rotates the one before
        writer.write(b'{"time":%d,"model":"m","decision":"allowed"' % (1_790_000_000 + i))
    return writer


def _lines(files) -> list[bytes]:
    read = []
    for file in files:
        assert not file.vanished
        while line := file.readline(1 << 20):
            read.append(line)
    return read


def test_files_not_held_open_are_found_after_rotations_renamed_them(tmp_path):
    writer = _chained_trail(tmp_path / "logs", snapshots.HELD_OPEN + 6)
    expected = b"".join((tmp_path / "logs" / f"audit.jsonl.{i}").read_bytes()
                        for i in range(snapshots.HELD_OPEN + 5, 0, -1))
    expected += (tmp_path / "logs" / "audit.jsonl").read_bytes()
    with snapshots.snapshot(tmp_path / "logs") as files:
        for _ in range(3):  # every name shifts by three while the snapshot is held
            writer.write(b'{"time":1,"model":"m","decision":"allowed"')
        assert b"".join(_lines(files)) == expected
    writer.close()


def test_a_file_gone_before_it_is_read_is_vanished_not_another_file(tmp_path):
    # past those held open, a file rotated away before it is read reads as vanished; one
    # whose inode now holds another file (an inode number reused) is never read instead
    folder = tmp_path / "logs"
    _chained_trail(folder, snapshots.HELD_OPEN + 3).close()
    with snapshots.snapshot(folder) as files:
        held = snapshots.HELD_OPEN
        gone, reused = files[held], files[held + 1]  # neither held open
        gone.path.unlink()
        reused.path.write_bytes(b'{"time":2,"model":"other","decision":"allowed"}\n')
        assert gone.vanished and gone.readline(100) == b""
        assert reused.vanished and reused.readline(100) == b""
        assert not files[-1].vanished and files[-1].readline(1000).startswith(b"{")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc")
def test_an_empty_file_read_to_its_end_leaves_no_descriptor_open(tmp_path):
    # a file not held open was opened when it was reached and closed once a read met its
    # end; one with nothing to read (emptied, or empty when rotated) was opened and never
    # closed, so a trail of many empty files ran into the open-file limit again
    folder = tmp_path / "logs"
    _chained_trail(folder, snapshots.HELD_OPEN + 1).close()
    for index in range(snapshots.HELD_OPEN + 1, snapshots.HELD_OPEN + 41):
        (folder / f"audit.jsonl.{index}").write_bytes(b"")
    with snapshots.snapshot(folder) as files:
        before = len(os.listdir("/proc/self/fd"))
        _lines(files[snapshots.HELD_OPEN:])
        assert len(os.listdir("/proc/self/fd")) <= before


def test_files_removed_while_read_cost_one_folder_scan_not_one_each(tmp_path, monkeypatch):
    # each file not found where it was nor where the last scan saw it scanned the whole
    # folder again: a trail of thousands of files whose old files were removed while it
    # was read (a clean-up) scanned it once per removed file, quadratic in the files;
    # the folder is scanned again only when it changed since the last scan
    folder = tmp_path / "logs"
    _chained_trail(folder, snapshots.HELD_OPEN + 41).close()
    scans = []
    real_scan = snapshots._Finder._scan
    monkeypatch.setattr(snapshots._Finder, "_scan",
                        lambda self: scans.append(1) or real_scan(self))
    with snapshots.snapshot(folder) as files:
        removed = files[snapshots.HELD_OPEN:-1]
        for file in removed:
            file.path.unlink()
        assert all(file.vanished for file in removed)
        assert not files[-1].vanished and files[-1].readline(1000).startswith(b"{")
    assert len(scans) == 1
