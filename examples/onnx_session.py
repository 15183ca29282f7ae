"""Guard an onnxruntime InferenceSession in one line.

Trains a small scikit-learn MLP on the bundled digits, exports it to ONNX with skl2onnx,
loads it into an InferenceSession, guards it, and sends it one clean feed and a handful of
malformed ones. The audit log goes to a temporary folder, printed at the end.

    pip install -e '.[onnx]'    # the extras it needs, from a checkout
    python examples/onnx_session.py
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
from skl2onnx import to_onnx
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

import aimsec_core


def main() -> None:
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)  # pixels in [0, 1], the dtype the exported model takes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a demo model, trained briefly
        model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, random_state=0).fit(x, y)

    workdir = Path(tempfile.mkdtemp(prefix="aimsec-onnx-"))
    onnx_file = workdir / "digits_mlp.onnx"
    # zipmap=False: probabilities come back as a plain (n, 10) array, not a list of dicts.
    onnx_file.write_bytes(
        to_onnx(model, x[:1], options={id(model): {"zipmap": False}}).SerializeToString())
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])

    audit = aimsec_core.AuditLog(workdir / "logs")
    guarded = aimsec_core.guard(session, name="digits-onnx", sinks=[audit],
                                constraints={"min_value": 0.0, "max_value": 1.0})
    print(f"guarded is an InferenceSession: {isinstance(guarded, onnxruntime.InferenceSession)}")
    print(f"declared inputs: {[(i.name, i.type, i.shape) for i in guarded.get_inputs()]}")

    labels, probabilities = guarded.run(None, {"X": x[:5]})
    print(f"clean batch -> labels {labels.tolist()} (true {y[:5].tolist()}), "
          f"verdict: {guarded.last_verdict.summary()}")

    out_of_range, not_finite = x[:4].copy(), x[:4].copy()
    out_of_range[2, 10] = 3.0  # one pixel out of range in sample 2
    not_finite[1, 5] = np.nan  # one NaN pixel in sample 1
    malformed = {
        "float64 batch": {"X": x[:4].astype(np.float64)},
        "wrong width": {"X": x[:4, :60]},
        "NaN pixel": {"X": not_finite},
        "out of range": {"X": out_of_range},
        "missing input": {},
        "misspelt input": {"x": x[:4]},
        "not a dict": x[:4],
    }
    for label, feed in malformed.items():
        try:
            guarded.run(None, feed)
        except aimsec_core.SecurityViolation as error:
            print(f"{label:>15}: {type(error).__name__}: {error}")
            print(f"{'':>15}  verdict: {error.verdict.summary()}")

    audit.flush()
    print(f"audit log: {audit.file} ({len(audit.file.read_text().splitlines())} lines)")


if __name__ == "__main__":
    main()
