"""A worker forked while its parent compiles the monitoring kernels.

The child holds a copy of numba's compiler caught mid-work (its compiler lock held by a
thread that does not exist there, the kernels' module half imported): compiling again
there failed with a traceback ("partially initialized module ... no attribute
'warm_up'") in every worker or hung its compiling thread. The child now runs the numpy
forms and says so once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

_SCRIPT = """
import logging, os, sys, threading
from aimsec_core.monitoring import kernels

logging.basicConfig(stream=sys.stdout, format="%(message)s")
started, release = threading.Event(), threading.Event()
compiles = []

def compiling():  # stands for numba at work: its state is what a fork copies mid-way
    compiles.append(os.getpid())
    started.set()
    release.wait()
    return None

kernels._compile = compiling
assert kernels.load() is None
assert started.wait(60)
pid = os.fork()
if pid == 0:
    answer = kernels.load()
    again = [t.name for t in threading.enumerate() if t.name == "aimsec-kernels"]
    print("child", answer, compiles == [os.getppid()], again, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
release.set()
"""


def test_a_child_forked_mid_compile_runs_the_numpy_forms_and_says_so(tmp_path):
    env = {**os.environ, "AIMSEC_JIT": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_SCRIPT)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # no second compile started in the child (it would use the copied, mid-work compiler)
    assert "child None True []" in out, out
    assert "forked while the monitoring kernels compiled" in out
    assert "numpy forms" in out
