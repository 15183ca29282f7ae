"""Report numbers against an audit trail the test writes itself (rotated files included)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from rich.console import Console

import aimsec_core
from aimsec_core.reporting.model import drift_test

from .trail import FPR, T0, write_screened, write_trail

QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def trail(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trail")
    expected = write_trail(folder / "logs")
    current = folder / "logs" / "audit.jsonl"
    with current.open("a") as stream:  # the other line forms a reader meets
        stream.write("not json at all\n")
        stream.write('["a", "list"]\n')
        stream.write(json.dumps({"decision": "allowed"}) + "\n")  # no time
        stream.write(json.dumps({"time": "2026-09-21T00:00:00+00:00", "model": "m-new",
                                 "client": "203.0.113.7", "decision": "rejected",
                                 "flagged": {"count": 3, "first": [0, 1, 2]}, "batch_size": 3,
                                 "findings": [{"check": "range", "samples": {"count": 3}}],
                                 "request_id": "r-1", "prev": "abc", "version": "9"}) + "\n")
    return folder, expected


@pytest.fixture(scope="module")
def full(trail):
    return _report(trail[0])


def _report(folder, **kwargs):
    return aimsec_core.report(folder / "logs", out=folder / "out", console=QUIET,
                              incidents=[], **kwargs).report


def test_the_trail_rotated(trail):
    folder, _ = trail
    assert len(list((folder / "logs").glob("audit.jsonl.*"))) >= 3


def test_counts_per_decision_and_check(trail, full):
    folder, expected = trail
    report = full
    totals = dict(expected.decisions)
    totals["rejected"] += 1  # the hand-written new-format line
    assert {k: v for k, v in report.totals.items() if v} == totals
    checks = dict(expected.refusals_by_check)
    checks["range"] += 1
    assert report.refusals_by_check == checks
    assert report.sources["malformed"] == 3
    assert report.sources["used"] == sum(totals.values())
    assert report.flagged_samples >= 3
    assert report.by_model["m-new"] == {"rejected": 1}


def test_top_clients(trail, full):
    folder, expected = trail
    report = _report(folder, model="m-drift")  # one model: the new-format line drops out
    assert report.top_clients.exact
    report_all = full
    refusals = dict(expected.refusals_by_client)
    refusals["203.0.113.7"] += 1
    assert {c.client: c.count for c in report_all.top_clients.by_refusals} == refusals
    assert {c.client: c.count for c in report_all.top_clients.by_query_attacks} == dict(
        expected.query_attacks_by_client)
    top_pair = report_all.top_clients.by_refusing_check[0]
    assert (top_pair.client, top_pair.check) == ("attacker-1", "near_duplicate")
    assert top_pair.count == expected.refusals_by_pair[("attacker-1", "near_duplicate")]
    assert sum(report.totals.values()) == expected.by_model["m-drift"]


def test_drift_share_against_the_calibrated_rate(trail, full):
    folder, expected = trail
    report = full
    sections = {s.model: s for s in report.detection}
    for model in ("m-drift", "m-steady"):
        s = sections[model]
        assert (s.screened, s.above) == (expected.screened[model], expected.above[model])
        assert s.observed_rate == pytest.approx(expected.above[model] / expected.screened[model])
        assert s.fpr == FPR
    assert sections["m-drift"].drift and not sections["m-steady"].drift
    assert report.models_without_detection == {}


def test_recommendations_point_at_their_evidence(trail, full):
    folder, expected = trail
    report = full
    titles = [r.title for r in report.recommendations]
    count = expected.refusals_by_pair[("attacker-1", "near_duplicate")]
    assert f"client attacker-1 was refused {count} times by the near-duplicate check" in titles
    drift = next(r for r in report.recommendations if r.section == "detection")
    assert drift.title.startswith(f"{expected.above['m-drift'] / expected.screened['m-drift']:.1%}"
                                  " of clean calls to m-drift exceed the threshold, against 5.0%")
    assert drift.evidence["above_threshold"] == expected.above["m-drift"]
    assert any(r.title == "3 audit lines could not be read" for r in report.recommendations)


def test_period_filters(trail):
    folder, expected = trail
    middle = expected.times[300]
    since = datetime.fromtimestamp(middle, timezone.utc).isoformat()
    report = _report(folder, since=since, until=datetime.fromtimestamp(T0 + 60 * 10_000,
                                                                       timezone.utc))
    assert report.calls == len([t for t in expected.times if t >= middle])
    relative = _report(folder, since="1h", now=datetime.fromtimestamp(expected.times[-1] + 1,
                                                                      timezone.utc))
    assert relative.calls == len([t for t in expected.times if t >= expected.times[-1] + 1 - 3600])


def test_report_json_is_written(trail, full):
    folder, _ = trail
    data = json.loads((folder / "out" / "report.json").read_text())
    assert data["format"] == "aimsec-report/1" and data["totals"]["allowed"] > 0
    assert (folder / "out" / "report.html").stat().st_size > 10_000


def test_no_calibration_means_no_detection(tmp_path):
    guard = aimsec_core.Guard(None, aimsec_core.adapter.HostArrays(None), name="plain",
                              sinks=[aimsec_core.AuditLog(tmp_path / "logs")])
    import numpy as np

    for _ in range(3):
        guard.call({"x": np.ones((1, 2))}, lambda: None)
    report = aimsec_core.report(tmp_path / "logs", out=tmp_path, console=QUIET,
                                incidents=[]).report
    assert report.models_without_detection == {"plain": 3}
    assert any(r.title == "no calibration for plain: adversarial detection is off"
               for r in report.recommendations)


def test_drift_test_is_one_sided_and_needs_evidence():
    assert drift_test(1000, 120, 0.05)[2]
    assert not drift_test(1000, 55, 0.05)[2]       # within noise
    assert not drift_test(20, 10, 0.05)[2]         # too few samples
    assert drift_test(0, 0, 0.05) == (None, None, False)


def test_a_missing_trail_is_a_clear_error(tmp_path):
    with pytest.raises(aimsec_core.ConfigurationError, match="no audit trail"):
        aimsec_core.report(tmp_path / "nowhere", out=tmp_path, console=QUIET)
    (tmp_path / "audit.jsonl").write_text("")
    with pytest.raises(aimsec_core.ConfigurationError, match="--since"):
        aimsec_core.report(tmp_path, since="yesterday-ish", out=tmp_path, console=QUIET)


BENIGN = {f"10.0.0.{i}": FPR for i in range(1, 7)}


@pytest.mark.parametrize("attackers", [("attacker-1",), ("attacker-1", "attacker-2")])
def test_an_excess_from_few_clients_is_an_attack_not_drift(tmp_path, attackers):
    """Adversarial inputs from a few clients raise the share above the threshold; the
    rest of the traffic stays at the calibrated rate: the report names the clients and
    does not call it drift (recalibrating would only teach the threshold the attack)."""
    above = write_screened(tmp_path / "logs", {**BENIGN, **{a: 0.6 for a in attackers}})
    report = _report(tmp_path)
    (section,) = report.detection
    assert section.observed_rate > 2 * FPR and section.z_score > 3
    assert not section.drift
    assert [s.client for s in section.sources] == sorted(
        attackers, key=lambda a: (-above[a], a))
    assert all(s.above == above[s.client] and s.screened == 120 for s in section.sources)
    assert section.rest_rate == pytest.approx(
        sum(above[c] for c in BENIGN) / (120 * len(BENIGN)))
    (advice,) = [r for r in report.recommendations if r.section == "detection"]
    assert "attack from few sources, not calibration drift" in advice.action
    assert [c["client"] for c in advice.evidence["clients"]] == [
        s.client for s in section.sources]


def test_an_excess_from_every_client_is_drift(tmp_path):
    write_screened(tmp_path / "logs", {client: 0.25 for client in BENIGN})
    (section,) = _report(tmp_path).detection
    assert section.drift and not section.sources
    assert section.rest_rate == section.observed_rate


def test_an_attack_within_drift_is_drift(tmp_path):
    """Where the rest of the traffic drifts too, the excess is not the attacker's alone."""
    write_screened(tmp_path / "logs", {**{c: 0.2 for c in BENIGN}, "attacker-1": 0.8})
    (section,) = _report(tmp_path).detection
    assert section.drift and not section.sources


def test_a_busy_client_at_the_calibrated_rate_does_not_hide_an_attacker():
    """The busiest benign client has the most samples above the threshold (at the
    calibrated rate); the attacker, with fewer, used to go unnamed and the excess was
    called drift (whose advice, recalibrating, teaches the threshold the attack)."""
    from aimsec_core.reporting.aggregate import DetectionStats
    from aimsec_core.reporting.model import _detection

    stats = DetectionStats()
    stats.add(1.0, 2.0, 0.01, 1000, 100_000, "busy-benign")  # exactly the calibrated rate
    stats.add(9.0, 2.0, 0.01, 500, 500, "attacker")
    section = _detection("m", stats)
    assert [s.client for s in section.sources] == ["attacker"]
    assert not section.drift and section.rest_rate == pytest.approx(0.01)


def test_most_of_the_traffic_drifting_is_drift_whoever_sends_it(tmp_path):
    """Two busy clients sending most of the calls, both above the rate, and a small
    normal remainder: the traffic drifted; it is not an attack from a few sources."""
    rates = {"busy-1": 0.25, "busy-2": 0.25, "10.0.0.1": FPR}
    write_screened(tmp_path / "logs", rates, calls=150)
    write_screened(tmp_path / "logs", {"10.0.0.2": FPR}, calls=100, seed=1)
    (section,) = _report(tmp_path).detection
    assert section.drift and not section.sources


def test_a_client_that_already_is_an_api_key_is_told_to_revoke_it(tmp_path):
    write_screened(tmp_path / "logs", {"key:00ff00ff00ff00ff": 1.0, "198.51.100.9": 1.0})
    report = aimsec_core.report(tmp_path / "logs", out=tmp_path / "out", console=QUIET,
                                incidents=[]).report
    actions = {r.evidence["client"]: r.action for r in report.recommendations
               if r.section == "clients"}
    assert actions["key:00ff00ff00ff00ff"].startswith("revoke its API key or block it")
    assert actions["198.51.100.9"].startswith("block it or require an API key")


def test_a_trail_of_only_unreadable_lines_says_so(tmp_path):
    """Every line mangled leaves no call to count: the report still names the unreadable
    lines instead of reading as a quiet period."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "audit.jsonl").write_text("garbage\n" * 4 + '["a"]\n')
    report = _report(tmp_path)
    assert report.calls == 0
    unreadable = [r for r in report.recommendations if r.section == "sources"]
    assert [(r.priority, r.title) for r in unreadable] == [
        ("medium", "5 audit lines could not be read")]
    assert report.recommendations[0] is unreadable[0]  # before the low "no calls" one


def test_an_output_that_cannot_be_made_is_refused_before_the_trail_is_read(tmp_path,
                                                                        monkeypatch):
    # the whole trail (a gigabyte: minutes) was read before the folder was found unusable
    from aimsec_core.reporting import build

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "audit.jsonl").write_text("{}\n")
    (tmp_path / "file").write_text("")

    def read(*args, **kwargs):
        raise AssertionError("the trail was read")

    monkeypatch.setattr(build, "read_entries", read)
    with pytest.raises(aimsec_core.ConfigurationError, match="cannot create the report folder"):
        aimsec_core.report(tmp_path / "logs", out=tmp_path / "file" / "out", console=QUIET,
                           incidents=[])
