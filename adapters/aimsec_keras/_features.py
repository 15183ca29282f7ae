"""Internal features of a Keras model for the detectors: one intermediate-output model
(built once per guarded model) returns what chosen layers computed, with the output.

Which layers: those with a non-linear activation (``Dense(..., activation="relu")``,
``Conv2D``, ``Activation``/``ReLU`` layers), the output layer excepted, at most
:data:`MAX_LAYERS` of them, evenly spaced and always including the last. Spatial maps
(N, ..., C) are averaged per channel, as Lee et al. (NeurIPS 2018) do; the model's
output comes last, as log-probabilities where it ends in a softmax (the logits up to a
per-sample constant). A model whose layers cannot be read (a subclassed model without
``inputs``) gives its output alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_LAYERS = 4
_LINEAR = ("linear", "softmax", None)


def activation_name(layer: Any) -> str | None:
    """The name of ``layer``'s activation ("relu-like" for the activation layers)."""
    if type(layer).__name__ in ("ReLU", "LeakyReLU", "ELU", "PReLU"):
        return "relu-like"
    activation = getattr(layer, "activation", None)
    return None if activation is None else getattr(activation, "__name__", str(activation))


def _extractor(model: Any) -> tuple[Any, bool]:
    """``(intermediate-output model or None, whether the output is a softmax)``."""
    import keras

    layers = list(getattr(model, "layers", []))
    softmax = bool(layers) and activation_name(layers[-1]) == "softmax"
    try:
        inputs = model.inputs
        inputs = inputs[0] if len(inputs) == 1 else inputs  # one input: as Keras expects
        chosen = [l for l in layers[:-1] if activation_name(l) not in _LINEAR]
        if len(chosen) > MAX_LAYERS:
            step = len(chosen) / MAX_LAYERS
            chosen = [chosen[min(len(chosen) - 1, int(round((i + 1) * step)) - 1)]
                      for i in range(MAX_LAYERS)]
        outputs = [layer.output for layer in chosen] + [model.outputs[0]]
        return keras.Model(inputs=inputs, outputs=outputs), softmax
    except (AttributeError, ValueError, TypeError):  # subclassed or not built
        return None, softmax


def features(self: Any, x: Any) -> list[np.ndarray]:
    """The model's features for ``x`` (see module doc), outside the guard; ``x`` is an
    array, or a list of one per declared input (the intermediate-output model takes the
    model's inputs as a list)."""
    import keras

    cached = self.__dict__.get("_feature_extractor")
    if cached is None:
        cached = self._feature_extractor = _extractor(self.model)
    extractor, softmax = cached
    if extractor is None:
        outputs = [self.model(self.model_input(x), training=False)]
    else:
        outputs = extractor(x, training=False)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    arrays = [np.asarray(keras.ops.convert_to_numpy(o), dtype=np.float32) for o in outputs]
    if softmax:
        arrays[-1] = np.log(np.maximum(arrays[-1], 1e-12))
    return [a.reshape(len(a), -1, a.shape[-1]).mean(axis=1) if a.ndim > 2 else
            a.reshape(len(a), -1) for a in arrays]
