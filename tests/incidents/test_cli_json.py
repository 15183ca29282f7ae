"""Every ``aimsec incidents --json`` form prints one JSON object of a fixed shape (``--ack``,
``--resolve`` and some ``--prune`` runs printed text)."""

from __future__ import annotations

import json
import time

import pytest

from aimsec_core.cli import main
from aimsec_core.incidents import IncidentStore, Occurrence

INCIDENT_KEYS = {"id", "model", "threat", "client", "severity", "status", "first_seen",
                 "last_seen", "count", "evidence", "taxonomy"}
PRUNE_KEYS = {"database", "incidents", "findings", "deliveries", "retention_days",
              "max_deliveries", "vacuum"}


@pytest.fixture
def db(tmp_path):
    store = IncidentStore(tmp_path / "incidents.sqlite3")
    now = time.time()
    store.record([Occurrence("m", "adversarial", "c1", "high", now, now, 3),
                  Occurrence("m", "range", "c2", "medium", now, now)])
    store.close()
    return store.path


def _json(capsys, argv):
    status = main(argv)
    captured = capsys.readouterr()
    return status, json.loads(captured.out), captured.err


@pytest.mark.parametrize("flag, status", [("--ack", "acknowledged"), ("--resolve", "resolved")])
def test_a_status_change_prints_the_changed_incident(db, capsys, flag, status):
    code, found, err = _json(capsys, ["incidents", "--db", str(db), flag, "1", "--json"])
    assert (code, err) == (0, "")
    assert set(found) == {"database", "incident"} and found["database"] == str(db)
    assert set(found["incident"]) == INCIDENT_KEYS
    assert (found["incident"]["id"], found["incident"]["status"]) == (1, status)


def test_a_listing_is_one_object(db, capsys):
    code, found, _ = _json(capsys, ["incidents", "--db", str(db), "--json", "--limit", "1"])
    assert code == 0 and set(found) == {"database", "incidents", "more", "damaged"}
    assert [set(i) for i in found["incidents"]] == [INCIDENT_KEYS]
    assert found["more"] is True
    assert found["damaged"] == {"count": 0, "ids": [], "reason": None}


@pytest.mark.parametrize("environment", [
    {},
    {"AIMSEC_INCIDENT_RETENTION_DAYS": "0", "AIMSEC_INCIDENT_MAX_DELIVERIES": "0"},
])
def test_pruning_prints_one_object_whatever_it_did(db, capsys, monkeypatch, environment):
    """With retention keeping everything, ``--prune --json`` printed a sentence."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    code, found, err = _json(capsys, ["incidents", "--db", str(db), "--prune", "--json"])
    assert (code, err) == (0, "") and set(found) == PRUNE_KEYS
    assert (found["incidents"], found["deliveries"], found["vacuum"]) == (0, 0, None)


def test_pruning_without_a_database_prints_one_object(tmp_path, capsys):
    """``--prune --json`` without a database printed "no incident database at ..."."""
    missing = tmp_path / "none.sqlite3"
    code, found, _ = _json(capsys, ["incidents", "--db", str(missing), "--prune", "--json"])
    assert code == 0 and set(found) == PRUNE_KEYS and found["incidents"] == 0
    assert not missing.exists()


@pytest.mark.parametrize("argv, status", [
    (["--ack", "99"], 1),
    (["--ack", "1", "--resolve", "2"], 2),
    (["--resolve", "1", "--prune"], 2),
    (["--vacuum"], 2),
])
def test_an_error_under_json_prints_nothing_on_standard_output(db, capsys, argv, status):
    assert main(["incidents", "--db", str(db), "--json", *argv]) == status
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("aimsec incidents: ")
