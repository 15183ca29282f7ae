"""The core imports no ML framework, and guarding one framework's model loads no other."""

from __future__ import annotations

import subprocess
import sys
import textwrap

HEAVY = ("torch", "tensorflow", "keras", "sklearn", "onnxruntime")


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_core_imports_no_ml_framework():
    out = _run(f"""
        import sys, aimsec_core
        print(",".join(m for m in {HEAVY!r} if m in sys.modules))
    """)
    assert out == ""


def test_guarding_a_sklearn_model_loads_no_other_framework(tmp_path):
    out = _run(f"""
        import os, sys
        os.environ["SECURITY_LOG_PATH"] = {str(tmp_path)!r}
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        import aimsec_core
        model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
        aimsec_core.guard(model).predict(np.eye(4))
        print(",".join(m for m in ("torch", "tensorflow", "keras", "onnxruntime")
                       if m in sys.modules))
    """)
    assert out == ""
