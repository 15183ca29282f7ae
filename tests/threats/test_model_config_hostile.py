"""``aimsec threat-model --model-config`` with hostile files: every bad setting is one line
on standard error (exit status 2), never a traceback, and names from the file reach the
terminal and the Markdown export as visible escapes."""

from __future__ import annotations

import json
import os
import sys

import pytest

from aimsec_core.cli import main
from aimsec_core.threats import assess_guard


def _run(tmp_path, capsys, text, *extra):
    config = tmp_path / "guard.json"
    config.write_text(text, encoding="utf-8")
    status = main(["threat-model", "--model-config", str(config), *extra])
    return status, capsys.readouterr()


@pytest.mark.parametrize("settings, says", [
    ("[" * 5000, "nested too deep"),                                  # RecursionError
    ({"calibration": 5}, "calibration must be a file path"),          # TypeError
    ({"calibration": ["a"]}, "calibration must be a file path"),
    ({"calibration": "a\x00b"}, "calibration must be a file path"),   # embedded null byte
    ({"audit": {"path": 5}}, "audit path must be a file path"),       # TypeError
    ({"audit": {"path": "a\x00b"}}, "audit path must be a file path"),
    ({"audit": {"include_inputs": "yes"}}, "include_inputs must be true or false"),
    ({"guard": {"sinks": 5}}, "\"guard\" settings ['sinks']"),        # multiple values
    ({"guard": {"name": "x"}}, "\"guard\" settings ['name']"),
    ({"guard": {"clock": 5}}, "\"guard\" settings ['clock']"),
    ({"guard": [{}]}, "\"guard\" must be an object"),                 # unhashable
    ({"declared": ["x" * 100_000]}, "unknown control ids"),
])
def test_a_hostile_setting_is_one_line_not_a_traceback(tmp_path, capsys, settings, says):
    text = settings if isinstance(settings, str) else json.dumps({"audit": False, **settings}
                                                                 if "audit" not in settings
                                                                 else settings)
    status, captured = _run(tmp_path, capsys, text)
    assert status == 2
    assert says in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and len(captured.err) < 2000


def test_names_with_controls_bidi_and_surrogates_are_shown_as_escapes(tmp_path, capsys):
    """A name holding ESC reached the terminal raw, and a lone surrogate made writing the
    Markdown raise UnicodeEncodeError."""
    name = "a\x1b[2J\u202eb\n# injected\ud800"
    text = json.dumps({"name": name, "audit": False})
    status, captured = _run(tmp_path, capsys, text, "--markdown", str(tmp_path / "t.md"))
    assert status == 0
    markdown = (tmp_path / "t.md").read_text(encoding="utf-8")
    for shown in (captured.out, markdown):
        assert not set(shown) & {"\x1b", "\u202e"}
    # the escapes' backslashes and the markup characters are themselves backslash-escaped;
    # the surrogate is an escape too, not a lossy '?'
    assert markdown.startswith(
        "# Threat model: guard of a\\\\x1b\\[2J\\\\u202eb\\\\x0a\\# injected\\\\ud800\n")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX special files")
@pytest.mark.timeout(60)  # before the fix these hung: fail, do not hang
@pytest.mark.parametrize("where", ["config", "calibration"])
def test_a_fifo_or_device_for_a_file_is_refused(tmp_path, capsys, where):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    if where == "config":
        status = main(["threat-model", "--model-config", str(fifo)])
        err = capsys.readouterr().err
    else:
        status, captured = _run(tmp_path, capsys, json.dumps({"calibration": str(fifo),
                                                              "audit": False}))
        err = captured.err
    assert status == 2
    assert "is not a regular file (it is a FIFO)" in err


def test_declared_ids_of_mixed_types_are_refused_by_name(tmp_path):
    from aimsec_core import Guard
    from aimsec_core.adapter import HostArrays
    from aimsec_core.errors import ConfigurationError

    guard = Guard(None, HostArrays(None), name="g", sinks=[])
    with pytest.raises(ConfigurationError, match="unknown control ids"):
        assess_guard(guard, declared=[1, "nope"])  # sorting them raised TypeError


@pytest.mark.parametrize("name", [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "[click](javascript:alert(1))",
    "![x](http://tracker.invalid/p.png)",
    "\\<b>bold</b>",
    "a|b`code`*em*_u_~~s~~&amp;",
])
def test_markdown_shows_a_hostile_name_as_text_not_markup(tmp_path, capsys, name):
    """A name from the config file became raw HTML, a link or an image wherever the
    Markdown is rendered."""
    from markdown_it import MarkdownIt

    text = json.dumps({"name": name, "audit": False})
    status, _ = _run(tmp_path, capsys, text, "--markdown", str(tmp_path / "t.md"))
    assert status == 0
    rendered = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(
        (tmp_path / "t.md").read_text(encoding="utf-8"))
    title = rendered.split("</h1>")[0]
    for tag in ("<img", "<script", "<a ", "<b>", "<code", "<em", "<s>", "<strong"):
        assert tag not in title, title
    from html import unescape
    assert unescape(title).endswith(f"Threat model: guard of {name}")
