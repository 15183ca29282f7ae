"""Hostile checks of the severity scale and the threat table: every check name a guard can
record has a severity and a row, the floors hold exactly at their boundary, an unknown
check gets the safe default, and an escalation is alerted once."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import aimsec_core
from aimsec_core import errors
from aimsec_core.errors import InvalidInputError, StructuralAnomalyError
from aimsec_core.alerts import Grouper, GroupingPolicy
from aimsec_core.incidents import Occurrence
from aimsec_core.incidents.taxonomy import TAXONOMY, UNMAPPED, mapping_for
from aimsec_core.severity import (DEFAULT_SEVERITY, FALLBACK_SEVERITY, SEVERITIES, at_least,
                                  severity_of)

#: the findings request monitoring records (aimsec_core/monitoring/monitor.py)
MONITOR_CHECKS = ("store_unavailable", "lockout", "rate_limit", "min_interval", "repeat",
                  "near_duplicate", "extraction")


def _error_classes(root: type) -> list[type]:
    found = [root]
    for sub in root.__subclasses__():
        found += _error_classes(sub)
    return found


def _emitted_checks() -> set[str]:
    """Every check name a guard can put on a finding: the checks that refuse calls, the
    monitor's, the detectors', and the default ``check`` of each input error class (what
    ``refuse(error)`` records for an error built without ``check=``)."""
    defaults = {cls.check for cls in _error_classes(errors.InvalidInputError)}
    return set(errors.ERROR_FOR_CHECK) | set(MONITOR_CHECKS) | {"adversarial"} | defaults


@pytest.mark.parametrize("check", sorted(_emitted_checks()))
def test_every_emitted_check_has_a_severity_and_a_taxonomy_row(check):
    assert check in DEFAULT_SEVERITY
    assert check in TAXONOMY and mapping_for(check) is not UNMAPPED


@pytest.mark.parametrize("error, severity", [
    (errors.InvalidInputError("request body is not JSON"), "low"),
    (errors.StructuralAnomalyError("neighbouring values jump"), "medium"),
])
def test_a_refused_request_without_a_check_is_ranked_like_its_kind(error, severity):
    model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    guarded = aimsec_core.guard(model, name="m", sinks=[], policy=False)
    refused = aimsec_core.guard_of(guarded).refuse(error)
    (finding,) = refused.verdict.findings
    assert finding.severity == severity
    assert mapping_for(finding.check).owasp == ("ML01",)


def test_an_unknown_check_gets_the_fallback_and_no_mapping():
    assert severity_of("third_party_check") == FALLBACK_SEVERITY == "medium"
    assert mapping_for("third_party_check") is UNMAPPED


@pytest.mark.parametrize("floor", SEVERITIES)
def test_floors_include_exactly_their_boundary(floor):
    for severity in SEVERITIES:
        assert at_least(severity, floor) == (SEVERITIES.index(severity)
                                             >= SEVERITIES.index(floor))


@pytest.mark.parametrize("floor", SEVERITIES)
def test_an_occurrence_exactly_at_the_alert_floor_alerts_and_one_below_does_not(floor):
    grouper = Grouper(GroupingPolicy(group_wait=0, floor=floor), clock=lambda: 1000.0)
    level = SEVERITIES.index(floor)
    grouper.observe(Occurrence("m", "t", "at", floor, 1000.0, 1000.0))
    if level:
        grouper.observe(Occurrence("m", "t", "below", SEVERITIES[level - 1], 1000.0, 1000.0))
    assert [a.client for a in grouper.due(1000.0)] == ["at"]


def test_an_escalation_is_alerted_once():
    now = [1000.0]
    grouper = Grouper(GroupingPolicy(group_wait=0, group_interval=300, floor="high"),
                      clock=lambda: now[0])
    grouper.observe(Occurrence("m", "adversarial", "c", "high", now[0], now[0]))
    assert [a.kind for a in grouper.due()] == ["new"]
    now[0] += 1
    grouper.observe(Occurrence("m", "adversarial", "c", "critical", now[0], now[0]))
    sent = grouper.due()
    assert [(a.kind, a.severity) for a in sent] == [("escalation", "critical")]
    for _ in range(3):  # more of the same severity: counted, not escalated again
        now[0] += 1
        grouper.observe(Occurrence("m", "adversarial", "c", "critical", now[0], now[0]))
        assert grouper.due() == []
    now[0] += 301
    assert [(a.kind, a.count, a.suppressed) for a in grouper.due()] == [("update", 5, 3)]


class _ThirdPartyError(InvalidInputError):
    check = "third_party_check"


class _OwnArguments(InvalidInputError):
    check = "own_arguments"

    def __init__(self, field: str) -> None:
        super().__init__(f"field {field!r} is missing")


@pytest.mark.parametrize("error, kind, status", [
    (InvalidInputError("request body is not JSON"), InvalidInputError, 422),
    (StructuralAnomalyError("neighbouring values jump"), StructuralAnomalyError, 422),
    (_ThirdPartyError("a field of our own is wrong"), _ThirdPartyError, 422),
    (_OwnArguments("amount"), InvalidInputError, 422),
])
def test_a_refused_request_comes_back_as_the_kind_of_error_it_was(error, kind, status):
    """refuse(InvalidInputError(...)) without a check of aimsec's table came back as an
    AdversarialInputError: the middleware answered the client's malformed request 403
    'refused' instead of 422, and an ``except InvalidInputError`` missed it."""
    from aimsec_core.serving import refusal_for

    model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    guarded = aimsec_core.guard(model, name="m", sinks=[], policy=False)
    refused = aimsec_core.guard_of(guarded).refuse(error)
    assert type(refused) is kind and refused.check == error.check
    assert refusal_for(refused).status == status
