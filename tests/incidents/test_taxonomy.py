"""The OWASP ML Top 10 / MITRE ATLAS table covers every check and is well-formed."""

from __future__ import annotations

import re

import pytest

from aimsec_core.incidents.taxonomy import ALIASES, NAMES, TAXONOMY, UNMAPPED, mapping_for
from aimsec_core.severity import DEFAULT_SEVERITY


def test_every_check_with_a_severity_has_a_row():
    assert set(DEFAULT_SEVERITY) <= set(TAXONOMY)


def test_ids_are_well_formed_and_named():
    for check, row in TAXONOMY.items():
        assert all(re.fullmatch(r"ML(0[1-9]|10)", i) for i in row.owasp), check
        assert all(re.fullmatch(r"AML\.T\d{4}(\.\d{3})?", i) for i in row.techniques), check
        assert all(re.fullmatch(r"AML\.M\d{4}", i) for i in row.mitigations), check
        for i in (*row.owasp, *row.techniques, *row.mitigations):
            assert i in NAMES, i


@pytest.mark.parametrize("check, owasp, techniques, mitigations", [
    ("adversarial", ("ML01",), ("AML.T0043", "AML.T0015"), "AML.M0015"),
    ("extraction", ("ML05",), ("AML.T0024.002",), "AML.M0004"),
    ("rate_limit", (), ("AML.T0029", "AML.T0034"), "AML.M0004"),
])
def test_published_mappings(check, owasp, techniques, mitigations):
    row = mapping_for(check)
    assert row.owasp == owasp and row.techniques == techniques
    assert mitigations in row.mitigations


def test_the_original_threat_names_map_through_aliases():
    for name, check in ALIASES.items():
        assert mapping_for(name) is TAXONOMY[check]
    assert mapping_for("potential_adversarial_pattern").owasp == ("ML01",)


def test_an_unknown_check_is_unmapped_not_an_error():
    assert mapping_for("third_party_check") is UNMAPPED
