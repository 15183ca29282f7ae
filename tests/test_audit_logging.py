"""The audit trail does not depend on the logging module's global state."""

from __future__ import annotations

import json
import logging
import logging.config

import numpy as np
import pytest

import aimsec_core
from aimsec_core import AuditLog
from aimsec_core.adapter import HostArrays


@pytest.fixture(autouse=True)
def _restore_logging():
    """dictConfig/fileConfig change process-wide state: put it back for other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = {name: (lg.disabled, lg.level, lg.handlers[:])
               for name, lg in logging.root.manager.loggerDict.items()
               if isinstance(lg, logging.Logger)}
    yield
    root.handlers[:], root.level = handlers, level
    for name, (disabled, lvl, hs) in loggers.items():
        logger = logging.getLogger(name)
        logger.disabled, logger.level, logger.handlers[:] = disabled, lvl, hs


def _guard(audit: AuditLog) -> aimsec_core.Guard:
    return aimsec_core.Guard(None, HostArrays(None), name="logged", sinks=[audit],
                             constraints={"max_value": 1.0})


def _calls(guard: aimsec_core.Guard) -> None:
    guard.call({"x": np.full((1, 3), 0.5)}, lambda: None)
    try:
        guard.call({"x": np.full((1, 3), 5.0)}, lambda: None)
    except aimsec_core.ValueRangeError:
        pass


def _count(audit: AuditLog) -> list[str]:
    return [json.loads(line)["decision"] for line in audit.file.read_text().splitlines()]


def test_dict_config_after_guarding_silences_nothing(tmp_path):
    audit = AuditLog(tmp_path)
    guard = _guard(audit)
    _calls(guard)
    logging.config.dictConfig({"version": 1, "root": {"level": "CRITICAL"}})
    logging.disable(logging.CRITICAL)  # the bluntest switch the logging module has
    try:
        _calls(guard)
    finally:
        logging.disable(logging.NOTSET)
    assert _count(audit) == ["allowed", "rejected"] * 2


def test_file_config_after_guarding_silences_nothing(tmp_path):
    audit = AuditLog(tmp_path / "logs")
    guard = _guard(audit)
    ini = tmp_path / "logging.ini"
    ini.write_text("[loggers]\nkeys=root\n[handlers]\nkeys=null\n[formatters]\nkeys=\n"
                   "[logger_root]\nlevel=CRITICAL\nhandlers=null\n"
                   "[handler_null]\nclass=NullHandler\nargs=()\n")
    logging.config.fileConfig(ini)  # disable_existing_loggers defaults to true
    _calls(guard)
    assert _count(audit) == ["allowed", "rejected"]


def test_the_logging_hook_is_an_optional_extra_destination(tmp_path, caplog):
    audit = AuditLog(tmp_path, also_log_to="aimsec.audit.extra")
    with caplog.at_level(logging.INFO, logger="aimsec.audit.extra"):
        _calls(_guard(audit))
    file_lines = audit.file.read_text().splitlines()
    assert [r.getMessage() for r in caplog.records] == file_lines
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.WARNING]
    plain = AuditLog(tmp_path / "plain")
    with caplog.at_level(logging.DEBUG):
        caplog.clear()
        _calls(_guard(plain))
    assert not [r for r in caplog.records if r.name.startswith("aimsec.audit")]


def test_every_audit_log_of_one_file_shares_one_chain(tmp_path):
    first, second = AuditLog(tmp_path), AuditLog(tmp_path)
    _calls(_guard(first))
    _calls(_guard(second))
    assert aimsec_core.audit.verify_trail(tmp_path).intact
    assert len(first.file.read_text().splitlines()) == 4


def test_a_pickled_audit_log_writes_to_the_same_trail(tmp_path):
    import copy
    import pickle

    audit = AuditLog(tmp_path, max_bytes=10_000, backups=3)
    restored = pickle.loads(pickle.dumps(audit))
    duplicate = copy.deepcopy(audit)
    for sink in (audit, restored, duplicate):
        _calls(_guard(sink))
    assert restored.file == audit.file and restored.max_bytes == 10_000
    assert len(audit.file.read_text().splitlines()) == 6
    assert aimsec_core.audit.verify_trail(audit.file).intact
