"""The HTML report in headless Chromium: it renders its charts, hostile client ids run
nothing, and a screenshot can be taken."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

import aimsec_core

from .trail import HOSTILE_CLIENTS, write_trail

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                "(Debian package `chromium`; CI installs it)")

INCIDENT = {"id": "7", "model": "m-drift", "threat": "near_duplicate",
            "client": "<svg onload=document.title='pwned'>", "severity": "high",
            "status": "open", "first_seen": "2026-09-21T10:00:00+00:00",
            "last_seen": "2026-09-21T11:00:00+00:00", "count": 41, "evidence": {},
            "owasp": ["ML01"], "atlas_techniques": ["AML.T0043"],
            "atlas_mitigations": ["AML.M0015"]}


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("html")
    write_trail(folder / "logs", calls=300,
                clients=("203.0.113.7", "attacker-1", *HOSTILE_CLIENTS))
    files = aimsec_core.report(folder / "logs", out=folder / "out", incidents=[INCIDENT],
                               console=Console(quiet=True))
    return folder, files


def test_the_page_renders_with_its_charts(page):
    folder, files = page
    done = _chromium(folder, "--dump-dom", files.html_path.as_uri())
    dom = done.stdout
    assert "<h1>aimsec security report</h1>" in dom, done.stderr[-2000:]
    assert dom.count("<svg") >= 4  # timeline, refusals, drift, a suspicion histogram
    assert "AML.T0043" in dom and "ML01" in dom


def test_hostile_client_ids_run_nothing(page):
    folder, files = page
    html = files.html_path.read_text()
    for tag in ("<script", "<img", "<svg onload"):  # escaped, so never a tag
        assert tag not in html
    dom = _chromium(folder, "--dump-dom", files.html_path.as_uri()).stdout
    assert "<title>aimsec report" in dom and "pwned</title>" not in dom
    assert "data-pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]
    assert "<script" not in dom and "<img" not in dom
    # the ids are shown, as text
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom


def test_a_screenshot_is_taken(page):
    folder, files = page
    png = folder / "report.png"
    _chromium(folder, f"--screenshot={png}", "--window-size=1200,2000",
              files.html_path.as_uri())
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 2000)


def test_the_page_loads_nothing(page):
    _, files = page
    html = files.html_path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*[^#'\")\s]", html)  # only url(#clip-path) ids
    for marker in ("<link", "@import", "<script", "<iframe", "<object"):
        assert marker not in html, marker
    assert "default-src 'none'" in html  # and the page forbids loading anything else
