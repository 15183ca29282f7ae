"""Recommendations derived from what the report saw, each pointing at its evidence.

Every rule reads the finished :class:`~.model.Report` and yields nothing when its evidence
is absent, so a quiet period gives a short list. Rules, most urgent first:

- a client refused :data:`MIN_REFUSALS` or more times by an attack check (near-duplicate,
  repeat, extraction, lockout, rate limit, adversarial): block it or require an API key
  (revoke its key or block it, where the client already is an API key); by a validation
  check: a broken client or probing;
- calibration drift (see :func:`~.model.drift_test`): recalibrate;
- a model whose calls carried no detection summary: adversarial detection is off;
- a broken hash chain: the trail was changed, its numbers are not to be trusted;
- open high/critical incidents; damaged incident rows; incidents rolled up beyond the
  cap; calls let through in monitor mode; calls ending in error; unreadable audit lines;
  no incident store; no calls at all.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..severity import SEVERITIES
from .model import Recommendation, Report

#: Refusals of one client by one check before it earns a recommendation of its own.
MIN_REFUSALS = 10
#: Share of calls ending in error above which it is worth a look.
ERROR_SHARE = 0.01
ATTACK_CHECKS = {"near_duplicate": "near-duplicate", "repeat": "repeated-query",
                 "extraction": "extraction", "lockout": "lockout",
                 "rate_limit": "rate-limit", "adversarial": "adversarial-input"}
MAX_CLIENT_RECOMMENDATIONS = 5
#: Client ids that name an API key: the serving middleware's ``key:<16 hex>``, ``api-key:...``.
KEY_CLIENT_PREFIXES = ("key:", "api-key:")


def recommend(report: Report) -> list[Recommendation]:
    """The report's recommendations, most urgent first."""
    found = [*_chain(report), *_clients(report), *_detection(report), *_incidents(report),
             *_operations(report)]
    order = {p: i for i, p in enumerate(reversed(SEVERITIES))}
    return sorted(found, key=lambda r: order[r.priority])  # stable: rule order within a level


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "0%"


def _chain(report: Report) -> Iterator[Recommendation]:
    chain = report.sources["chain"]
    if chain["breaks"]:
        where = chain["first_break"]
        yield Recommendation(
            "critical", f"the audit trail's hash chain breaks {chain['breaks']} "
            f"time{'s' if chain['breaks'] > 1 else ''}, first at line {where['line']} of "
            f"{where['file']}",
            "lines were changed, removed, inserted or reordered (or the trail was rotated "
            "by another tool): run aimsec audit verify on it, and trust none of this "
            "report's numbers until it is explained",
            {"breaks": chain["breaks"], "first_break": where, "lines_checked": chain["checked"]},
            "sources")


def _clients(report: Report) -> Iterator[Recommendation]:
    made = 0
    for pair in report.top_clients.by_refusing_check:
        if pair.count < MIN_REFUSALS or made >= MAX_CLIENT_RECOMMENDATIONS:
            continue
        made += 1
        evidence = {"client": pair.client, "check": pair.check, "refusals": pair.count}
        if pair.check in ATTACK_CHECKS:
            yield Recommendation(
                "high", f"client {pair.client} was refused {pair.count} times by the "
                f"{ATTACK_CHECKS[pair.check]} check",
                ("revoke its API key or block it" if pair.client.startswith(KEY_CLIENT_PREFIXES)
                 else "block it or require an API key") + " (and look at what it sent)",
                evidence,
                "clients")
        else:
            yield Recommendation(
                "medium", f"client {pair.client} sent {pair.count} calls refused by the "
                f"{pair.check} check", "a broken client or probing: contact its owner, or "
                "block it if it keeps on", evidence, "clients")


def _detection(report: Report) -> Iterator[Recommendation]:
    for section in report.detection:
        if section.sources:
            names = ", ".join(s.client for s in section.sources[:5])
            yield Recommendation(
                "high", f"{len(section.sources)} client(s) send the samples above the "
                f"threshold on {section.model}: {names}",
                "an attack from few sources, not calibration drift (the rest of the traffic "
                "stays within the calibrated rate): review these clients' calls and "
                "incidents, and block them if it goes on",
                {"model": section.model, "calibrated_fpr": section.fpr,
                 "rate_without_them": section.rest_rate,
                 "clients": [{"client": s.client, "screened_samples": s.screened,
                              "above_threshold": s.above} for s in section.sources]},
                "detection")
        if section.drift and section.observed_rate is not None and section.fpr is not None:
            yield Recommendation(
                "high", f"{section.observed_rate:.1%} of clean calls to {section.model} "
                f"exceed the threshold, against {section.fpr:.1%} calibrated",
                "recalibrate on recent clean data (guarded.calibrate): no few clients "
                "account for it",
                {"model": section.model, "screened_samples": section.screened,
                 "above_threshold": section.above, "calibrated_fpr": section.fpr,
                 "z_score": section.z_score}, "detection")
    for model, calls in report.models_without_detection.items():
        yield Recommendation(
            "high", f"no calibration for {model}: adversarial detection is off",
            "calibrate it on held-out clean data (guarded.calibrate(x_clean, fpr=0.01)) and "
            "load the file with guard(..., calibration=...)",
            {"model": model, "calls_without_detection": calls}, "detection")


def _incidents(report: Report) -> Iterator[Recommendation]:
    section = report.incidents
    if not section.available:
        yield Recommendation("low", section.note or "no incident store",
                             "point --db at the guards' incident store, or configure one "
                             "(AIMSEC_INCIDENT_DB, guard(..., incidents=...)) so findings "
                             "become incidents",
                             {"incident_store": None}, "incidents")
        return
    serious = {s: n for s, n in section.open_by_severity.items() if s in ("high", "critical")}
    if serious:
        total = sum(serious.values())
        yield Recommendation(
            "critical" if "critical" in serious else "high",
            f"{total} open incident{'s' if total > 1 else ''} of high or critical severity",
            "triage them: acknowledge, block the clients behind them, resolve",
            {"open_by_severity": serious}, "incidents")
    if section.damaged:
        rows = "row" if section.damaged == 1 else "rows"
        yield Recommendation(
            "medium", f"{section.damaged:,} incident {rows} of the store could not be read "
                      "(damaged) and are not counted",
            "inspect them (sqlite3 FILE \"SELECT * FROM incidents WHERE id = ...\"), then "
            "delete or repair them; a disk error may have damaged more (sqlite3 FILE "
            "\"PRAGMA integrity_check\")",
            {"damaged_rows": section.damaged, "ids": section.damaged_ids}, "incidents")
    if section.rolled_up_rows:
        yield Recommendation(
            "medium", f"{section.rolled_up:,} clients' incidents rolled up into "
                      f"{section.rolled_up_rows} incident(s): the store held its most "
                      "unresolved incidents (AIMSEC_INCIDENT_MAX_OPEN)",
            "resolve the incidents already dealt with (aimsec incidents --resolve ID) so new "
            "clients get incidents of their own; a roll-up names a sample of its clients "
            "(aimsec incidents --json)",
            {"rolled_up_incidents": section.rolled_up_rows,
             "clients_rolled_up": section.rolled_up}, "incidents")


def _unreadable(report: Report) -> Iterator[Recommendation]:
    """Lines the reader could not use: said whether or not any call was read (a trail
    whose every line was mangled has no calls, and must not read as a quiet one)."""
    unreadable = report.sources["malformed"] + report.sources["oversized"]
    wrong = report.sources["wrong_type"]
    if unreadable or wrong:
        title = (f"{unreadable} audit {'lines' if unreadable != 1 else 'line'} could not be "
                 "read" if unreadable else "")
        if wrong:
            title += (", and " if title else "") + (
                f"{wrong} audit {'lines' if wrong != 1 else 'line'} had a field of the wrong "
                "type (counted, that field read as absent)")
        yield Recommendation(
            "medium", title,
            "check the trail's integrity: lines were cut, edited or written by something else",
            {"malformed": report.sources["malformed"],
             "oversized": report.sources["oversized"], "wrong_type": wrong}, "sources")


def _operations(report: Report) -> Iterator[Recommendation]:
    calls = report.calls
    if calls == 0:
        yield from _unreadable(report)
        yield Recommendation(
            "low", "no calls in the period", "check --logs, --since, --until and --model",
            {"lines_read": report.sources["lines"],
             "outside_period_or_model": report.sources["outside_period_or_model"]},
            "summary")
        return
    flagged = report.totals.get("flagged", 0)
    if flagged:
        yield Recommendation(
            "medium", f"{flagged} calls with findings were let through (monitor mode)",
            "switch to enforce mode once the findings are understood",
            {"flagged_calls": flagged, "share": _share(flagged, calls)}, "summary")
    errors = report.totals.get("error", 0)
    if errors and errors / calls > ERROR_SHARE:
        yield Recommendation(
            "medium", f"{_share(errors, calls)} of calls ended in an error",
            "read the audit lines' error field: the model or a detector failed",
            {"error_calls": errors, "calls": calls}, "summary")
    yield from _unreadable(report)
