"""Settings from environment variables: a value that does not parse names the variable and
what it expects, never Python's own conversion message."""

import pytest

from aimsec_core.config import resolve
from aimsec_core.errors import ConfigurationError


@pytest.mark.parametrize("variable, raw, expected", [
    ("AIMSEC_LOG_MAX_BYTES", "abc", "expected a non-negative integer, received 'abc'"),
    ("AIMSEC_LOG_BACKUPS", "2.5", "expected a non-negative integer, received '2.5'"),
    ("AIMSEC_INCIDENT_WINDOW", "1h", "expected a finite number of seconds >= 0, received '1h'"),
    ("AIMSEC_ALERT_GROUP_INTERVAL", "x", "expected a finite number of seconds > 0"),
    ("AIMSEC_ALERT_MAX_CLIENTS", "three", "expected a non-negative integer, received 'three'"),
    ("ALERT_SMTP_PORT", "smtp", "expected an integer in ASCII digits, received 'smtp'"),
])
def test_an_unparsable_number_says_what_the_variable_expects(monkeypatch, tmp_path, variable,
                                                              raw, expected):
    import aimsec_core

    monkeypatch.chdir(tmp_path)  # nothing is written, but never into the checkout
    monkeypatch.setenv(variable, raw)
    monkeypatch.setenv("ALERT_SMTP_SERVER", "mail.example.invalid")
    monkeypatch.setenv("ALERT_RECIPIENTS", "security@example.invalid")
    with pytest.raises(ConfigurationError) as info:
        if variable.startswith("AIMSEC_LOG_"):
            aimsec_core.AuditLog()
        elif variable == "AIMSEC_INCIDENT_WINDOW":
            from aimsec_core.incidents import IncidentStore
            IncidentStore()
        elif variable == "ALERT_SMTP_PORT":
            from aimsec_core.alerts.settings import SmtpSettings
            SmtpSettings.from_env()
        else:
            from aimsec_core.alerts.settings import GroupingPolicy
            GroupingPolicy.resolve()
    message = str(info.value)
    assert message.startswith(f"environment variable {variable}={raw!r} is invalid")
    assert expected in message
    assert "literal" not in message and "could not convert" not in message


@pytest.mark.parametrize("parse, raw, expected", [(int, "7", 7), (float, "0.5", 0.5)])
def test_plain_numbers_still_parse(monkeypatch, parse, raw, expected):
    monkeypatch.setenv("AIMSEC_TEST_NUMBER", raw)
    assert resolve(None, "AIMSEC_TEST_NUMBER", 0, parse) == expected
    monkeypatch.setenv("AIMSEC_TEST_NUMBER", "seven")
    with pytest.raises(ConfigurationError, match="expected an integer|expected a number"):
        resolve(None, "AIMSEC_TEST_NUMBER", 0, parse)


@pytest.mark.parametrize("variable, raw", [
    ("ALERT_SMTP_PORT", "\u0665\u0668\u0667"),  # Arabic-Indic digits: int() reads 587
    ("ALERT_SMTP_PORT", "5_87"),  # int() reads 587
    ("AIMSEC_LOG_MAX_BYTES", "1_000"),
    ("AIMSEC_INCIDENT_WINDOW", "\uff13\uff10"),  # full-width digits: float() reads 30.0
    ("AIMSEC_ALERT_GROUP_INTERVAL", "1_0"),
])
def test_a_number_not_in_ascii_digits_is_refused_not_read_as_another(monkeypatch, tmp_path,
                                                                       variable, raw):
    """Python reads underscores and other scripts' digits as numbers: a setting nobody
    typed as a number took one."""
    import aimsec_core
    from aimsec_core.alerts.settings import GroupingPolicy, SmtpSettings
    from aimsec_core.incidents import IncidentStore

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, raw)
    monkeypatch.setenv("ALERT_SMTP_SERVER", "mail.example.invalid")
    monkeypatch.setenv("ALERT_RECIPIENTS", "security@example.invalid")
    build = {"ALERT_SMTP_PORT": SmtpSettings.from_env,
             "AIMSEC_LOG_MAX_BYTES": aimsec_core.AuditLog,
             "AIMSEC_INCIDENT_WINDOW": IncidentStore,
             "AIMSEC_ALERT_GROUP_INTERVAL": GroupingPolicy.resolve}[variable]
    with pytest.raises(ConfigurationError, match=variable):
        build()


@pytest.mark.parametrize("parse, raw, expected", [
    (int, " 42 ", 42), (int, "-3", -3), (float, "1e3", 1000.0), (float, "+2.5", 2.5)])
def test_ascii_numbers_with_signs_exponents_and_spaces_still_parse(monkeypatch, parse, raw,
                                                                  expected):
    monkeypatch.setenv("AIMSEC_TEST_NUMBER", raw)
    assert resolve(None, "AIMSEC_TEST_NUMBER", 0, parse) == expected


def test_retention_days_and_the_calibration_size_cap_refuse_other_digits(monkeypatch):
    from aimsec_core.detection.calibration_file import _member_cap
    from aimsec_core.errors import CalibrationError
    from aimsec_core.incidents.retention import parse_days

    with pytest.raises(ValueError, match="days"):
        parse_days("\u0663\u0660")  # Arabic-Indic 30
    assert parse_days("30") == 30.0
    monkeypatch.setenv("AIMSEC_CALIBRATION_MAX_BYTES", "1_000_000")
    with pytest.raises(CalibrationError, match="AIMSEC_CALIBRATION_MAX_BYTES"):
        _member_cap()
