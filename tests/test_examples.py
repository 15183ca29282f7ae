"""The scripts in ``examples/`` run as the README says, and show what their docstrings say."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(name: str, tmp_path: Path) -> str:
    env = {**os.environ, "SECURITY_LOG_PATH": str(tmp_path / "logs"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "adapters"),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_torch_eval_loop_flags_only_the_glitched_batches(tmp_path):
    pytest.importorskip("torch")
    out = _run("torch_eval_loop.py", tmp_path)
    # batches 1 and 4 of 7 carry a glitch; no clean test digit is flagged (an eval job is
    # not watched as a black-box attacker)
    assert "2 of 7 calls flagged, none refused" in out
    assert "near_duplicate" not in out


@pytest.mark.slow
def test_sklearn_pipeline_calibrates_at_the_rate_it_states(tmp_path):
    out = _run("sklearn_pipeline.py", tmp_path)
    doc = (ROOT / "examples" / "sklearn_pipeline.py").read_text()
    assert "at 2% false positives" in doc
    assert "calibrated for 2.00% false positives" in out


#: import names whose distribution is named otherwise
DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_an_example_names_the_extras_that_bring_what_it_uses(name):
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "examples" / name).read_text()
    tree = ast.parse(text)
    said = re.search(r"pip install -e '\.\[([a-z,]+)\]'", ast.get_docstring(tree) or "")
    assert said, f"{name} does not say which extras it needs"
    extras = project["optional-dependencies"]
    brought = _requirement_names(project["dependencies"]).union(
        *(_requirement_names(extras[extra]) for extra in said.group(1).split(",")))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    needed = {DISTRIBUTIONS.get(m, m) for m in imported
              if m not in sys.stdlib_module_names and m != "aimsec_core"}
    if "max_requests_per_minute" in text:  # a rate limit runs on the limits library
        needed.add("limits")
    assert needed - brought == set()
