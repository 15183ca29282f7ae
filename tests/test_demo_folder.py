"""Where ``aimsec demo`` writes: a folder it cannot make there is a ConfigurationError
naming the folder and where its location came from, never a raw OSError."""

from __future__ import annotations

import pytest

from aimsec_core import ConfigurationError
from aimsec_core.demo import run_folder


def test_security_log_path_naming_a_file_is_named(tmp_path, monkeypatch):
    taken = tmp_path / "taken"
    taken.write_text("x")
    monkeypatch.setenv("SECURITY_LOG_PATH", str(taken))
    with pytest.raises(ConfigurationError) as caught:  # was NotADirectoryError
        run_folder()
    message = str(caught.value)
    assert "SECURITY_LOG_PATH" in message and str(taken) in message
    assert "Not a directory" in message and "expected" in message


def test_an_output_folder_under_a_file_is_named(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(ConfigurationError, match="the output folder"):
        run_folder(taken / "sub")


@pytest.mark.parametrize("base", [5, "a\x00b", ["x"]])
def test_an_output_folder_that_is_no_path_is_refused(base):
    with pytest.raises(ConfigurationError, match="must be a path"):  # "5" made a folder "5"
        run_folder(base)


def test_the_run_folder_is_made_under_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SECURITY_LOG_PATH", str(tmp_path / "logs"))
    folder = run_folder()
    assert folder.is_dir() and folder.parent == tmp_path / "logs"
    assert folder.name.startswith("demo-")
