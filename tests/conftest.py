from __future__ import annotations

import importlib
import os

import pytest

from tests.fakes import FakeClock, ListChannel

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter out

# IBM ART configures logging when imported (logging.config.dictConfig), which closes every
# handler that exists then. TensorFlow's absl handler, made while a test's captured stream
# was sys.stderr, closes that stream on close: pytest's own capture, which then fails the
# run ("I/O operation on closed file") whenever a test imports ART after one imported
# TensorFlow. Imported first, ART finds no handler to close.
try:
    importlib.import_module("art")
except ImportError:
    pass


class ListSink:
    """Keeps every call record, for assertions."""

    def __init__(self) -> None:
        self.events = []

    def record(self, event) -> None:
        self.events.append(event)

    @property
    def outcomes(self) -> list[str]:
        return [e.outcome for e in self.events]


def write_after_check(guarded, write) -> None:
    """Run ``write()`` whenever the guard of ``guarded`` stamps a verdict: after its checks
    read the input, before the model reads it. Another thread's write between check and
    use, made deterministic."""
    import aimsec_core

    guard = aimsec_core.guard_of(guarded)
    clock = guard.clock

    def stamp_then_write() -> float:
        write()
        return clock()

    guard.clock = stamp_then_write


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture(autouse=True)
def _audit_into_tmp(tmp_path, monkeypatch):
    """Guards built without explicit sinks write their audit log under the test's tmp dir."""
    monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path / "security_logs"))


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand."""
    return FakeClock()


@pytest.fixture
def channel() -> ListChannel:
    """An alert channel that keeps what it is sent."""
    return ListChannel()


def run_cli(argv, capsys):
    """``aimsec`` with ``argv``: its exit status (argparse's own refusals included) and what
    it wrote to stderr."""
    from aimsec_core.cli import main

    try:
        status = main(argv)
    except SystemExit as exc:  # argparse refuses the argument itself
        status = exc.code
    return status, capsys.readouterr().err
