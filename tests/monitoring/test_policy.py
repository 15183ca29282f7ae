"""The monitoring policy: the original SECURITY_CONFIG as-is, one meaning per key."""

from __future__ import annotations

import pytest

import aimsec_core
from aimsec_core import ConfigurationError
from aimsec_core.monitoring import Policy

SECURITY_CONFIG = {"max_requests_per_minute": 100, "suspicious_pattern_threshold": 0.8,
                   "max_failed_attempts": 5, "session_timeout": 3600,
                   "min_request_interval": 1.0}


def test_the_original_security_config_is_accepted_as_is():
    policy = Policy.coerce(SECURITY_CONFIG)
    rules = policy.rules
    assert rules.max_requests_per_minute == 100 and rules.min_request_interval == 1.0
    assert rules.max_failed_attempts == 5 and rules.session_timeout == 3600
    assert rules.suspicious_pattern_threshold == 0.8


def test_defaults_limit_nothing_that_a_training_loop_does():
    rules = Policy.coerce(None).rules
    assert rules.max_requests_per_minute is None and rules.min_request_interval == 0
    assert rules.watch_anonymous is False


def test_unknown_keys_name_the_valid_ones():
    with pytest.raises(ConfigurationError) as caught:
        Policy.coerce({"max_request_per_minute": 10})
    message = str(caught.value)
    assert "max_request_per_minute" in message and "max_requests_per_minute" in message
    assert "near_duplicate_window" in message and "tiers" in message


@pytest.mark.parametrize("key,value", [
    ("max_requests_per_minute", -1), ("max_requests_per_minute", 2.5),
    ("min_request_interval", float("nan")), ("session_timeout", 0),
    ("suspicious_pattern_threshold", 1.5), ("near_duplicate", "yes"),
    ("store_failure", "fail_sometimes"), ("near_duplicate_window", 0),
    ("extraction_delta", -0.1), ("max_failed_attempts", True),
    ("extraction_test_every", 0), ("extraction_test_every", 2.5),
    ("near_duplicate_hashes", 10**30), ("near_duplicate_window", 10**9),
    # subnormal: the reciprocal the fingerprint scales by is inf, and 0 * inf is NaN
    ("near_duplicate_step", 1e-320), ("near_duplicate_unit", 1e-320),
    # a store given no time to answer is down at every call; one retried every 1e300 s
    # (or 1000, meant as milliseconds: 17 minutes) stays unused after one blip
    ("store_timeout", 1e-300), ("store_timeout", 0.0005), ("store_retry", 1e300),
    ("store_retry", 3601), ("store_retry", 0),
])
def test_bad_values_are_configuration_errors(key, value):
    with pytest.raises(ConfigurationError, match=key):
        Policy.coerce({key: value})


def test_a_refused_rate_limit_names_the_zero_that_turns_it_off():
    """-1 was told "must be an integer >= 1", though 0 (no limit) is taken as well."""
    with pytest.raises(ConfigurationError, match=r">= 1 and <= 2147483647, or 0 or None "
                       r"for no limit; received -1"):
        Policy.coerce({"max_requests_per_minute": -1})
    assert Policy.coerce({"max_requests_per_minute": 0}).rules.max_requests_per_minute is None


def test_a_first_extraction_test_past_the_window_is_a_configuration_error():
    # the test reads at most the window's distances: it would never run, silently
    with pytest.raises(ConfigurationError, match="extraction_min_queries.*extraction_window"):
        Policy.coerce({"extraction_min_queries": 300, "extraction_window": 200})
    assert Policy.coerce({"extraction_min_queries": 200, "extraction_window": 200})


def test_tiers_override_per_client_rules_only():
    policy = Policy.coerce({"max_requests_per_minute": 10,
                            "tiers": {"internal": {"max_requests_per_minute": 1000}}})
    assert policy.rules_for(None).max_requests_per_minute == 10
    assert policy.rules_for("internal").max_requests_per_minute == 1000
    assert policy.rules_for("unknown-tier").max_requests_per_minute == 10
    with pytest.raises(ConfigurationError, match="near_duplicate_window"):
        Policy.coerce({"tiers": {"internal": {"near_duplicate_window": 4}}})
    with pytest.raises(ConfigurationError, match="tier"):
        Policy.coerce({"tiers": {"internal": 5}})


def test_store_url_comes_from_the_argument_then_the_environment(monkeypatch, digits_model):
    with pytest.raises(ConfigurationError, match="redis://"):
        aimsec_core.guard(digits_model, sinks=[], store="postgres://nowhere")
    monkeypatch.setenv("AIMSEC_STORE_URL", "bogus://x")
    with pytest.raises(ConfigurationError, match="bogus"):
        aimsec_core.guard(digits_model, sinks=[])
    guarded = aimsec_core.guard(digits_model, sinks=[], store="memory://")
    assert aimsec_core.guard_of(guarded).monitor.store.url == "memory://"


def test_policy_false_turns_monitoring_off(digits_model):
    guarded = aimsec_core.guard(digits_model, sinks=[], policy=False)
    assert aimsec_core.guard_of(guarded).monitor is None
    with pytest.raises(ConfigurationError, match="off"):
        guarded.request_analysis()


def test_numpy_numbers_are_taken_as_python_numbers():
    import numpy as np

    policy = Policy.coerce({"max_requests_per_minute": np.int64(100),
                            "min_request_interval": np.float32(0.5),
                            "near_duplicate": np.bool_(False),
                            "tiers": {"internal": {"max_requests_per_minute": np.int32(7)}}})
    assert policy.rules.max_requests_per_minute == 100
    assert type(policy.rules.max_requests_per_minute) is int
    assert policy.rules.min_request_interval == 0.5 and policy.rules.near_duplicate is False
    assert type(policy.tiers["internal"].max_requests_per_minute) is int
    with pytest.raises(ConfigurationError, match="max_requests_per_minute"):
        Policy.coerce({"max_requests_per_minute": np.float64(2.5)})
