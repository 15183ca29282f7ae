"""Small digits models for the demo, the evaluation and the benchmarks.

scikit-learn's bundled ``load_digits`` (1,797 real 8x8 handwritten digits, no download),
scaled to [0, 1]. Each builder imports its framework only when called and trains in
seconds on a CPU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import MissingExtraError

FRAMEWORKS = ("sklearn", "torch", "keras", "onnx")
_REQUIRES = {"sklearn": ("sklearn",), "torch": ("torch",), "keras": ("keras",),
             "onnx": ("onnxruntime", "skl2onnx", "sklearn")}


@dataclass(frozen=True)
class DigitsSplit:
    """Training data for the model, clean data to calibrate detectors on (never seen in
    training), and test data seen by neither."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_calibration: np.ndarray
    y_calibration: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load(seed: int = 0) -> DigitsSplit:
    """Digits as float32 (n, 64) in [0, 1] (multiples of 1/16), split 50/25/25, stratified."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return split((x / 16.0).astype(np.float32), y.astype(np.int64), seed)


def split(x: np.ndarray, y: np.ndarray, seed: int = 0) -> DigitsSplit:
    """``x`` (n, d) and labels ``y`` split 50/25/25 into train, calibration and test,
    stratified by label, shuffled with ``seed``."""
    from sklearn.model_selection import train_test_split

    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.5, stratify=y,
                                                  random_state=seed)
    x_cal, x_te, y_cal, y_te = train_test_split(x_rest, y_rest, test_size=0.5,
                                                stratify=y_rest, random_state=seed)
    return DigitsSplit(x_tr, y_tr, x_cal, y_cal, x_te, y_te)


def available() -> list[str]:
    """Frameworks whose packages are installed (checked without importing them)."""
    return [f for f in FRAMEWORKS
            if all(importlib.util.find_spec(m) is not None for m in _REQUIRES[f])]


def not_installed(missing: list[str]) -> MissingExtraError:
    """The :class:`MissingExtraError` for the frameworks ``missing`` (each is the name of
    its extra): "keras, onnx: not installed (pip install 'aimsec[keras,onnx]')"."""
    return MissingExtraError(f"{', '.join(missing)}: not installed (pip install "
                             f"'aimsec[{','.join(missing)}]')", name=missing[0])


def sklearn_mlp(data: DigitsSplit, seed: int = 0, max_iter: int = 400) -> Any:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier(hidden_layer_sizes=(64,), max_iter=max_iter,
                             random_state=seed).fit(data.x_train, data.y_train)


def torch_cnn(data: DigitsSplit, seed: int = 0, epochs: int = 30, width: int = 1) -> Any:
    """A small CNN taking (N, 1, 8, 8) float32, returning logits; ``width`` multiplies its
    channels (the cost benchmark uses wider ones)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    a, b = 16 * width, 32 * width
    return _train_torch(nn.Sequential(
        nn.Conv2d(1, a, 3, padding=1), nn.ReLU(), nn.Conv2d(a, b, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(b * 16, 64), nn.ReLU(), nn.Linear(64, 10)),
        data, seed, epochs)


def _train_torch(model: Any, data: DigitsSplit, seed: int, epochs: int,
                 shape: tuple[int, ...] = (1, 8, 8)) -> Any:
    import torch
    from torch import nn

    x = torch.from_numpy(data.x_train).reshape(-1, *shape)
    y = torch.from_numpy(data.y_train)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(64):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimiser.step()
    return model.eval()


def torch_mlp(data: DigitsSplit, seed: int = 0, epochs: int = 30) -> Any:
    """One hidden layer of 64 units, returning logits. It flattens its input, so it takes
    digits as (N, 1, 8, 8) float32 like the CNN, and any other features as (N, d)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    width, classes = _widths(data)
    return _train_torch(nn.Sequential(nn.Flatten(), nn.Linear(width, 64), nn.ReLU(),
                                      nn.Linear(64, classes)), data, seed, epochs, (width,))


def _widths(data: DigitsSplit) -> tuple[int, int]:
    """Features per sample and number of classes of ``data``."""
    return int(data.x_train.shape[1]), int(data.y_train.max()) + 1


def keras_cnn(data: DigitsSplit, seed: int = 0, epochs: int = 30) -> Any:
    """The torch CNN's layers in Keras, taking (N, 64) float32, returning softmax
    probabilities."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    return _train_keras(keras.Sequential([
        keras.Input((64,), name="pixels"), layers.Reshape((8, 8, 1)),
        layers.Conv2D(16, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax")]), data, epochs)


def keras_mlp(data: DigitsSplit, seed: int = 0, epochs: int = 40) -> Any:
    """One hidden layer of 64 units, taking (N, d) float32 (d = 64 for digits), returning
    softmax probabilities."""
    import keras

    keras.utils.set_random_seed(seed)
    width, classes = _widths(data)
    return _train_keras(keras.Sequential([keras.Input((width,), name="pixels"),
                                          keras.layers.Dense(64, activation="relu"),
                                          keras.layers.Dense(classes, activation="softmax")]),
                        data, epochs)


def _train_keras(model: Any, data: DigitsSplit, epochs: int) -> Any:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def onnx_session(data: DigitsSplit, seed: int = 0, sklearn_model: Any = None) -> Any:
    """The scikit-learn MLP exported with skl2onnx and loaded into onnxruntime."""
    import onnxruntime
    from skl2onnx import to_onnx

    model = sklearn_model if sklearn_model is not None else sklearn_mlp(data, seed)
    exported = to_onnx(model, data.x_train[:1], options={id(model): {"zipmap": False}},
                       target_opset=17)
    return onnxruntime.InferenceSession(exported.SerializeToString(),
                                        providers=["CPUExecutionProvider"])


BUILDERS: dict[str, Callable[..., Any]] = {
    "sklearn": sklearn_mlp, "torch": torch_cnn, "keras": keras_cnn, "onnx": onnx_session,
}

#: The same two architectures in both frameworks with autograd; "cnn" is the default.
ARCHITECTURES: dict[str, dict[str, Callable[..., Any]]] = {
    "torch": {"cnn": torch_cnn, "mlp": torch_mlp},
    "keras": {"cnn": keras_cnn, "mlp": keras_mlp},
}


def build(framework: str, data: DigitsSplit, seed: int = 0, architecture: str = "cnn") -> Any:
    """A trained digits model; ``architecture`` applies where the framework has both."""
    return ARCHITECTURES.get(framework, {}).get(architecture, BUILDERS[framework])(data, seed)


def constraints(framework: str, **extra: Any) -> dict[str, Any]:
    """Constraints for a digits model: pixels in [0, 1]; torch modules declare no input
    shape, so theirs is given explicitly."""
    shape = {"sample_shape": (1, 8, 8)} if framework == "torch" else {}
    return {"min_value": 0.0, "max_value": 1.0, **shape, **extra}


def as_model_input(framework: str, x: np.ndarray,
                   sample_shape: tuple[int, ...] = (1, 8, 8)) -> Any:
    """A float32 (n, d) batch in the form each framework's model takes: torch models take
    samples shaped ``sample_shape`` (digits images by default), the others (n, d)."""
    if framework == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(x)).reshape(-1, *sample_shape)
    return x


def caller(framework: str) -> Callable[[Any, Any], Any]:
    """How each framework's users call a model: ``call(model, x)``."""
    if framework == "torch":
        import torch

        def run_torch(model: Any, x: Any) -> Any:
            with torch.no_grad():
                return model(x)
        return run_torch
    if framework == "keras":
        return lambda model, x: model.predict(x, verbose=0)
    if framework == "onnx":
        return lambda session, x: session.run(None, {session.get_inputs()[0].name: x})
    return lambda model, x: model.predict(x)
