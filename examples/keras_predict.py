"""Guard a Keras model in one line.

Trains a small dense network on the bundled digits (a second or two on a CPU), guards it,
and sends it a clean batch, a handful of malformed ones, and a data pipeline with one bad
batch in it. Runs on whichever backend ``KERAS_BACKEND`` names (TensorFlow by default).
The audit log goes to a temporary folder, printed at the end.

    pip install -e '.[keras,sklearn]'    # the extras it needs, from a checkout
    python examples/keras_predict.py
    KERAS_BACKEND=torch python examples/keras_predict.py    # with the torch extra too
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads: no start-up chatter

import keras  # noqa: E402  (after the environment is set)
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import aimsec_core  # noqa: E402


def main() -> None:
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)  # pixels in [0, 1]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,), name="pixels"),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)

    audit = aimsec_core.AuditLog(Path(tempfile.mkdtemp(prefix="aimsec-keras-")) / "logs")
    guarded = aimsec_core.guard(model, name="digits-keras", sinks=[audit],
                                constraints={"min_value": 0.0, "max_value": 1.0})
    print(f"Keras {keras.__version__} on {keras.backend.backend()}; "
          f"guarded is a keras.Model: {isinstance(guarded, keras.Model)}")

    labels = guarded.predict(x[:5], verbose=0).argmax(axis=1)
    print(f"clean batch -> labels {labels.tolist()} (true {y[:5].tolist()}), "
          f"verdict: {guarded.last_verdict.summary()}")

    out_of_range, not_finite = x[:4].copy(), x[:4].copy()
    out_of_range[2, 10] = 3.0  # one pixel out of range in sample 2
    not_finite[1, 5] = np.nan  # one NaN pixel in sample 1
    malformed = {
        "wrong width": x[:4, :60],
        "one sample": x[0],
        "NaN pixel": not_finite,
        "out of range": out_of_range,
        "complex dtype": x[:4].astype(np.complex64),  # Keras would drop the imaginary part
        "nested lists": x[:4].tolist(),
        "nothing": None,
    }
    for label, batch in malformed.items():
        try:
            guarded.predict(batch, verbose=0)
        except aimsec_core.SecurityViolation as error:
            print(f"{label:>14}: {type(error).__name__}: {error}")
            print(f"{'':>14}  verdict: {error.verdict.summary()}")

    # A pipeline is screened batch by batch as Keras reads it; the bad batch stops it.
    def batches():
        for start in range(0, 40, 10):
            yield (out_of_range if start == 20 else x[start:start + 10],)

    with warnings.catch_warnings():
        # The guard ends the data at a refused batch; Keras notices and says so.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        try:
            guarded.predict(batches(), verbose=0)
        except aimsec_core.ValueRangeError as error:
            print(f"{'pipeline':>14}: {type(error).__name__} in the third batch: "
                  f"{error.verdict.summary()}")

    audit.flush()
    print(f"audit log: {audit.file} ({len(audit.file.read_text().splitlines())} lines)")


if __name__ == "__main__":
    main()
