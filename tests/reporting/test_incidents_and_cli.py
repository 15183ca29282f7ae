"""Incidents through the source interface, the audit line's detection summary, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

import aimsec_core
from aimsec_core.cli import main
from aimsec_core.reporting.incidents import MAX_LISTED, load_incidents, summarise_incidents


def _incident(i, **kw):
    return {"id": str(i), "model": "m", "threat": "range", "client": f"c{i}",
            "severity": "medium", "status": "open", "first_seen": "2026-09-21T10:00:00+00:00",
            "last_seen": "2026-09-21T11:00:00+00:00", "count": i, "evidence": {},
            "owasp": ["ML01"], "atlas_techniques": ["AML.T0043"],
            "atlas_mitigations": ["AML.M0015"], **kw}


def test_incidents_from_plain_dicts_are_counted_filtered_and_ranked():
    items = [_incident(i) for i in range(200)]
    items += [_incident(900, severity="critical", count=1),
              _incident(901, status="resolved", severity="critical"),
              _incident(902, model="other", severity="critical"),
              _incident(903, last_seen="2020-01-01T00:00:00+00:00",
                        first_seen="2020-01-01T00:00:00+00:00")]
    section = summarise_incidents(iter(items), model="m", since=1_700_000_000)
    assert section.available and section.total == 202 and section.open == 201
    assert section.by_status == {"open": 201, "resolved": 1}
    assert section.open_by_severity == {"critical": 1, "medium": 200}
    assert len(section.listed) == MAX_LISTED
    assert section.listed[0].id == "900" and section.listed[1].count == 199


def test_no_store_says_so(tmp_path):
    section = summarise_incidents(None, note="no incident store")
    assert not section.available and section.note == "no incident store"
    missing = tmp_path / "none.sqlite3"
    source, note = load_incidents(missing)
    assert source is None and note.startswith("no incident store at")
    assert "nothing recorded yet" in note  # the file appears with a guard's first incident
    assert not missing.exists()  # reading a report never creates a database


def test_incidents_come_from_the_real_store_with_their_taxonomy(tmp_path):
    from aimsec_core.incidents import IncidentStore
    from aimsec_core.incidents.model import Occurrence

    path = tmp_path / "incidents.sqlite3"
    store = IncidentStore(path)
    store.record([Occurrence("digits", "extraction", "<b>x</b>", "high",
                             1_700_000_000.0, 1_700_000_060.0, count=3)])
    store.close()
    source, note = load_incidents(path)
    assert note == "" and len(source) == 1
    section = summarise_incidents(source)
    row = section.listed[0]
    assert (row.threat, row.client, row.severity) == ("extraction", "<b>x</b>", "high")
    assert "ML05" in row.owasp and "AML.T0024.002" in row.atlas_techniques


def test_audit_lines_carry_the_detection_summary(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.naive_bayes import GaussianNB

    from aimsec_core import digits

    data = digits.load(0)
    model = GaussianNB().fit(data.x_train, data.y_train)  # trains in milliseconds
    audit = aimsec_core.AuditLog(tmp_path)
    guarded = aimsec_core.guard(model, name="lr", sinks=[audit], mode="monitor",
                                constraints={"min_value": 0.0, "max_value": 1.0})
    calibration = guarded.calibrate(data.x_calibration, fpr=0.05,
                                    detectors=["density", "sparsity"])
    guarded.predict(data.x_test[:40])
    noisy = np.clip(data.x_test[:40] + np.random.default_rng(0).normal(0, 0.3, (40, 64)),
                    0, 1).astype(np.float32)
    guarded.predict(noisy)
    audit.flush()
    lines = [json.loads(line) for line in audit.file.read_text().splitlines()]
    verdict = aimsec_core.guard_of(guarded).last_verdict
    summary = lines[-1]["detection"]
    suspicion = verdict.scores["suspicion"]
    assert summary["threshold"] == calibration.suite.threshold and summary["fpr"] == 0.05
    assert summary["above"] == sum(s > summary["threshold"] for s in suspicion) > 0
    assert summary["suspicion_max"] == pytest.approx(max(suspicion), abs=1e-4)
    report = aimsec_core.report(tmp_path, out=tmp_path / "out", incidents=[],
                                console=__import__("rich.console").console.Console(quiet=True))
    section = report.report.detection[0]
    assert section.screened == 80 and section.above == lines[0]["detection"]["above"] + summary["above"]


def test_the_report_command(tmp_path, capsys):
    audit = aimsec_core.AuditLog(tmp_path / "logs")
    guard = aimsec_core.Guard(None, aimsec_core.adapter.HostArrays(None), name="cli",
                              sinks=[audit], constraints={"max_value": 1.0})
    for value in (0.5, 2.0, 0.1):
        try:
            guard.call({"x": np.full((1, 3), value)}, lambda: None)
        except aimsec_core.ValueRangeError:
            pass
    audit.flush()
    out = tmp_path / "out"
    assert main(["report", "--logs", str(tmp_path / "logs"), "--out", str(out),
                 "--since", "7d", "--model", "cli"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["totals"]["allowed"] == 2 and data["totals"]["rejected"] == 1
    assert data["refusals_by_check"] == {"range": 1}
    assert "report.html" in capsys.readouterr().out
    assert main(["report", "--logs", str(tmp_path / "logs"), "--since", "last tuesday"]) == 2
    assert "--since" in capsys.readouterr().err  # errors go to standard error


def test_old_severe_incidents_cannot_crowd_the_periods_out_of_the_report(tmp_path):
    """The report read the store's most severe incidents of all time (at most ``limit``)
    and filtered them by period afterwards: an attacker's older critical incidents pushed
    the period's own out, silently."""
    from rich.console import Console

    from aimsec_core.incidents import IncidentStore
    from aimsec_core.incidents.model import Occurrence

    from .trail import T0, write_trail

    write_trail(tmp_path / "logs", calls=5)
    path = tmp_path / "logs" / "incidents.sqlite3"
    store = IncidentStore(path)
    store.record([Occurrence("m", "extraction", f"old-{i}", "critical", T0 - 86400 * 30,
                             T0 - 86400 * 30) for i in range(5)]
                 + [Occurrence("m", "range", "now", "medium", T0 + 60, T0 + 60)])
    store.close()
    source, note = load_incidents(path, since=T0 - 3600, limit=3)
    assert note == "" and [row["client"] for row in source] == ["now"]
    source, note = load_incidents(path, limit=3)
    assert len(source) == 3 and "only the 3 most severe and recent incidents" in note
    files = aimsec_core.report(tmp_path / "logs", since="2026-09-21", out=tmp_path / "out",
                               console=Console(quiet=True))
    assert files.report.incidents.total == 1


def test_the_report_reads_the_incident_store_a_few_rows_at_a_time(tmp_path, monkeypatch):
    """The store's incidents were read into one list first: 100,000 of them with their
    evidence held 580 MB, where the rest of the report stays in a few MB."""
    from aimsec_core.incidents import IncidentStore
    from aimsec_core.incidents import store as store_module
    from aimsec_core.incidents.model import Occurrence

    path = tmp_path / "incidents.sqlite3"
    store = IncidentStore(path)
    store.record([Occurrence("m", "range", f"c{i}", "medium", 1.7e9, 1.7e9, 1)
                  for i in range(1_000)])
    store.close()
    built = []
    real = store_module._incident
    monkeypatch.setattr(store_module, "_incident", lambda row: built.append(1) or real(row))
    source, note = load_incidents(path)
    assert note == "" and len(source) == 1_000 and not built
    next(iter(source))
    assert len(built) <= 256  # one batch of rows, not every incident
    section = summarise_incidents(source)
    assert (section.total, section.open, len(section.listed)) == (1_000, 1_000, MAX_LISTED)
    # a store that cannot be read to the end is said so, not counted short
    path.write_bytes(b"not a database" * 100)
    broken = summarise_incidents(source)
    assert not broken.available and "could not be read" in broken.note


def test_open_incidents_of_an_unknown_severity_are_counted_by_severity_too():
    """A mapping whose severity aimsec does not know was counted open but in no severity:
    "3 open (1 critical)"."""
    items = [_incident(1, severity="critical"), _incident(2, severity="urgent"),
             _incident(3, severity=None), _incident(4, severity="urgent", status="resolved")]
    section = summarise_incidents(items)
    assert section.open == 3 and section.open_by_severity == {"critical": 1, "unknown": 2}
    assert sum(section.open_by_severity.values()) == section.open


@pytest.mark.parametrize("content, reason", [
    (b"", "schema version 0"), (b"not a database" * 100, "file is not a database")])
def test_an_unreadable_store_is_said_with_the_reason(tmp_path, content, reason):
    """The page said only "could not be read (IncidentStoreError)", dropping the store's
    own words on what the file is not."""
    path = tmp_path / "incidents.sqlite3"
    path.write_bytes(content)
    source, note = load_incidents(path)
    assert source is None and "could not be read" in note and reason in note


def test_an_empty_db_argument_is_refused_not_read_as_the_current_folder(tmp_path, capsys):
    """``aimsec report --db ""`` (an unset variable) read the current folder as the store
    and reported "no incident store", as ``aimsec incidents`` refuses it."""
    from .trail import write_trail

    write_trail(tmp_path / "logs", calls=3)
    with pytest.raises(SystemExit) as stop:
        main(["report", "--logs", str(tmp_path / "logs"), "--out", str(tmp_path / "out"),
              "--db", ""])
    assert stop.value.code == 2 and "expected the path of an SQLite file" in \
        capsys.readouterr().err
    assert not (tmp_path / "out").exists()
