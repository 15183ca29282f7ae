"""``aimsec audit verify`` on a trail with no lines: it says so, never prints 'None' where a
digest belongs."""

from __future__ import annotations

from aimsec_core.cli import main


def test_an_empty_trail_is_said_to_be_empty(tmp_path, capsys):
    (tmp_path / "audit.jsonl").write_bytes(b"")
    assert main(["audit", "verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "intact: 0 lines" in out and "empty" in out and "None" not in out


def test_an_emptied_trail_fails_a_recorded_head_without_saying_none(tmp_path, capsys):
    (tmp_path / "audit.jsonl").write_bytes(b"")
    assert main(["audit", "verify", str(tmp_path), "--head", "ab" * 32]) == 1
    out = capsys.readouterr().out
    assert "BROKEN" in out and "no lines" in out and "None" not in out


def test_without_a_path_it_reads_security_log_path(tmp_path, monkeypatch, capsys):
    # the README's commands read SECURITY_LOG_PATH (else ./security_logs) by default;
    # audit verify used to require its path
    (tmp_path / "audit.jsonl").write_bytes(b"")
    monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path))
    assert main(["audit", "verify"]) == 0
    assert "intact: 0 lines" in capsys.readouterr().out
    monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path / "elsewhere"))
    assert main(["audit", "verify"]) == 2
    assert "elsewhere" in capsys.readouterr().err
