"""The evaluation's loop and its JSON, without training: what it runs for a selection,
and a file written whole or not at all."""

from __future__ import annotations

import json
import resource
import signal

import pytest

from aimsec_core.evaluation import Row, report, run


def test_a_data_set_named_twice_is_measured_once(monkeypatch):
    # it was measured twice: every row twice in its table and in the JSON
    measured = []
    monkeypatch.setattr(run, "_evaluate", lambda dataset, *a, **k: measured.append(
        dataset.name) or [])
    run.evaluate(["sklearn"], datasets=["wine", "tabular", "wine"], only_attacks=["FGSM"])
    assert measured == ["wine", "tabular"]


def test_an_interrupted_write_leaves_the_previous_json_whole(tmp_path):
    # the JSON was written in place: a write cut short (a full disk, Ctrl-C) left the
    # previous file truncated to half a JSON document
    out = tmp_path / "e.json"
    out.write_text('{"previous": true}')
    rows = [Row("wine", "torch", f"FGSM {i}", "standard", 40, 20, 0.5, 0.5, 0.05, 0.9)
            for i in range(100)]
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limit[1]))  # writes past 4 KiB fail
    try:
        with pytest.raises(OSError):
            report.write_json(rows, out, seed=0)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert json.loads(out.read_text()) == {"previous": True}
    assert [p.name for p in tmp_path.iterdir()] == ["e.json"]  # no partial file left
    report.write_json(rows, out, seed=0)
    assert len(json.loads(out.read_text())["rows"]) == 100
