"""Class probabilities and input gradients on the TensorFlow and torch backends.

One forward pass with the input watched, one backward pass of the cross-entropy, and
nothing else: no optimizer step, no gradient left in any variable, ``training=False``
unless the caller's own call asks otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from aimsec_core.detection import binary_probabilities, softmax_if_needed
from aimsec_core.errors import ConfigurationError

#: Below this a probability's log would be -inf; clipping there keeps the gradient finite.
_TINY = float(np.finfo(np.float32).tiny)


def class_probabilities(output: np.ndarray, sigmoid: bool = False) -> tuple[np.ndarray, bool]:
    """``output`` as class probabilities, and whether it held logits (then softmaxed).

    A single column, ``(n, 1)`` or ``(n,)``, is a binary classifier's: with ``sigmoid``
    (the model ends in a sigmoid, :func:`ends_in_sigmoid`) the probability ``p`` of
    class 1, giving ``[1 - p, p]``; otherwise a logit ``z``, giving ``softmax([0, z])``."""
    if output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1):
        return binary_probabilities(output, sigmoid), not sigmoid
    if output.ndim != 2:
        raise ConfigurationError(
            f"class scores need a model output of shape (batch, classes); received shape "
            f"{output.shape}. Guard a classifier, or turn off the gradient-based detectors")
    # The detectors' own rule: rows that already are probabilities are kept as they are.
    probabilities = softmax_if_needed(output)
    return probabilities, not np.array_equal(probabilities, output.astype(np.float64))


#: Layers whose output holds their input's values (reshaped; dropout is off at inference).
_VALUE_PRESERVING = frozenset({"Flatten", "Reshape", "Identity", "Dropout"})


def ends_in_sigmoid(model: Any) -> bool:
    """Whether ``model``'s output comes from a sigmoid activation (``Dense(1,
    activation="sigmoid")``, an ``Activation("sigmoid")`` layer), directly, through
    layers that only reshape it (``Flatten``, ``Reshape``, ``Identity``, ``Dropout``), or
    as the output of a nested model ending so: a single output column is then a
    probability, not a logit. The layer producing the (first) output is followed back;
    a model without symbolic outputs (subclassed) is judged by its last layer."""
    from ._features import activation_name

    layer = _output_layer(model)
    for _ in range(256):  # a bound, not a limit any real model reaches
        if layer is None:
            return False
        if activation_name(layer) == "sigmoid":
            return True
        if getattr(layer, "layers", None) and layer is not model:  # a nested model
            model, layer = layer, _output_layer(layer)
            continue
        if type(layer).__name__ not in _VALUE_PRESERVING:
            return False
        try:
            layer = layer.input._keras_history.operation
        except (AttributeError, ValueError, TypeError):
            return False
    return False


def _output_layer(model: Any) -> Any:
    """The layer producing ``model``'s first output, or its last layer."""
    try:
        return model.outputs[0]._keras_history.operation
    except (AttributeError, IndexError, ValueError, TypeError):  # subclassed, not built
        layers = getattr(model, "layers", None) or []
        return layers[-1] if layers else None


class Forward:
    """The guarded call run on a replacement input (the watched twin of ``x``).

    ``run(x, rebuilt)`` returns the model's output tensor; ``rebuilt`` maps the name of
    each other input the core copied to the copy it checked (``Guard.call(...,
    rebuilt=True)``), which the call hands the model in place of the caller's. With
    ``to_numpy`` the caller gets the output as numpy (``predict``), otherwise as that
    tensor (calling the model). ``source`` is the caller's own input where it is one
    tensor the caller may differentiate against (a TensorFlow tensor, perhaps on the
    caller's gradient tape; a torch tensor): the watched twin is then joined to it, so
    the output reaches the caller's input as the plain call's does."""

    def __init__(self, run: Callable[[Any, Mapping[str, Any]], Any], *,
                 to_numpy: bool = False, source: Any = None) -> None:
        self.run = run
        self.to_numpy = to_numpy
        self.source = source

    def __call__(self, x: Any, rebuilt: Mapping[str, Any] | None = None) -> Any:
        return self.run(x, rebuilt or {})


class OwnOutput:
    """The guarded call itself (``predict``, ``predict_on_batch``), run as it is on the
    copies the core checked (``run(rebuilt)``, see :class:`Forward`): its output is what
    the caller gets, bit for bit, and the gradient comes from a pass of its own, on the
    same copy, at the labels that output predicts. (``predict`` runs a compiled function
    on batches of its own size; an eager pass over the whole input rounds differently.)"""

    def __init__(self, run: Callable[[Mapping[str, Any]], Any],
                 batch_size: int | None = None) -> None:
        self.run = run
        #: the call's own batch size, which the gradient pass works in (Keras' default 32)
        self.batch_size = batch_size

    def __call__(self, rebuilt: Mapping[str, Any] | None = None) -> Any:
        return self.run(rebuilt or {})

    @staticmethod
    def within(call: Any) -> OwnOutput | None:
        """The :class:`OwnOutput` that ``call`` runs: ``call`` itself, or the one the guard
        bound its copies to (``functools.partial(own, rebuilt=...)``); else ``None``."""
        own = call.func if isinstance(call, functools.partial) else call
        return own if isinstance(own, OwnOutput) else None


def forward_backward(model: Any, x: Any, labels: Any = None,
                     call: Callable[[Any], Any] | None = None, *, chunk: int | None = None,
                     sigmoid: bool | None = None) -> tuple[Any, np.ndarray, Any]:
    """``(output, probabilities, d loss / d x)`` from one forward and one backward pass.

    The loss is the summed cross-entropy against ``labels`` (the predicted labels when
    ``None``), so each sample's gradient is its own, whatever the batch size. ``x`` may be
    one array or a list/dict of arrays (multi-input models); the gradient, numpy, has its
    structure. ``output`` is numpy for ``call=None`` (``model(x, training=False)``, the
    values ``predict`` returns) and for a :class:`Forward` with ``to_numpy``; otherwise it
    is what ``call`` returns.

    With ``call=None`` and ``chunk``, the passes run on ``chunk`` samples at a time (the
    results are concatenated), so the memory the pass holds (activations kept for the
    backward pass) is that of one chunk, not of the whole batch: a calibrated ``predict``
    on 50,000 rows stays within a small factor of the plain call's peak. Each sample's
    gradient does not depend on the others, so chunking changes no value.

    ``sigmoid``: whether a single output column is a probability (the adapter's
    ``sigmoid_output``); ``None`` reads it from the model (:func:`ends_in_sigmoid`).
    """
    if sigmoid is None:
        sigmoid = ends_in_sigmoid(model)
    total = batch_length(x)
    if call is not None or chunk is None or total is None or total <= chunk:
        return _one_pass(model, x, labels, call, sigmoid)
    parts = []
    for start in range(0, total, chunk):
        end = min(start + chunk, total)
        part = keras.tree.map_structure(lambda v: v[start:end], x)
        parts.append(_one_pass(model, part, None if labels is None
                               else np.asarray(labels)[start:end], None, sigmoid))
    values = np.concatenate([p[0] for p in parts])
    probabilities = np.concatenate([p[1] for p in parts])
    leaves = [keras.tree.flatten(p[2]) for p in parts]
    gradient = keras.tree.pack_sequence_as(
        x, [np.concatenate([leaf[i] for leaf in leaves]) for i in range(len(leaves[0]))])
    return values, probabilities, gradient


def batch_length(x: Any) -> int | None:
    """The number of samples in ``x`` (its leaves' first dimension), if it has one."""
    leaves = keras.tree.flatten(x)
    shape = getattr(leaves[0], "shape", None) if leaves else None
    return int(shape[0]) if shape is not None and len(shape) > 0 and shape[0] is not None \
        else None


def _one_pass(model: Any, x: Any, labels: Any, call: Callable[[Any], Any] | None,
              sigmoid: bool) -> tuple[Any, np.ndarray, Any]:
    """:func:`forward_backward` on all of ``x`` at once."""
    if call is None:
        call = Forward(lambda inputs, _: model(inputs, training=False), to_numpy=True)
    to_numpy = bool(getattr(call, "to_numpy", False))
    backend = keras.backend.backend()
    flat = [_leaf(v, backend) for v in keras.tree.flatten(x)]
    handed = _joined(call, flat, backend)  # what the model reads: flat, or joined to it
    inputs = keras.tree.pack_sequence_as(x, handed)
    if backend == "tensorflow":
        import tensorflow as tf

        # Watching only the inputs: no variable is recorded, nothing is kept for them.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(flat)
            output, values, probabilities, loss = _loss(call(inputs), labels, sigmoid)
        grads = tape.gradient(loss, flat)
    elif backend == "torch":
        import torch

        # A caller with grad mode on may backpropagate through the output it gets back:
        # keep its graph then. autograd.grad (not backward) accumulates nothing into the
        # parameters' ``.grad``.
        keep = torch.is_grad_enabled() and not to_numpy
        with torch.enable_grad():
            output, values, probabilities, loss = _loss(call(inputs), labels, sigmoid)
            grads = torch.autograd.grad(loss, flat, retain_graph=keep)
        if not keep:
            output = output.detach()
    else:
        raise NotImplementedError(
            f"input gradients are computed on the tensorflow and torch backends; this "
            f"process runs Keras on {backend!r}")
    gradient = keras.tree.pack_sequence_as(x, [ops.convert_to_numpy(g) for g in grads])
    return (values if to_numpy else output), probabilities, gradient


def _joined(call: Any, flat: list[Any], backend: str) -> list[Any]:
    """The watched leaves ``flat`` as the model is handed them: where ``call`` (a
    :class:`Forward`, perhaps with its copies bound) has the caller's one input as its
    ``source``, joined to that input's graph, so gradients reach it as from the plain
    call (a TensorFlow tensor, which cannot change once made, is watched itself: its
    values are those checked; a torch tensor requiring grad, with grad mode on, gets
    the twin's values and its gradient). Changes ``flat`` in place where the watched
    leaf is the caller's tensor."""
    own = call.func if isinstance(call, functools.partial) else call
    source = getattr(own, "source", None)
    if source is None or len(flat) != 1 or not keras.backend.is_float_dtype(
            keras.backend.standardize_dtype(source.dtype)):
        return flat
    if backend == "tensorflow":
        import tensorflow as tf

        if isinstance(source, tf.Tensor) and hasattr(source, "numpy"):  # eager
            flat[0] = source
    elif backend == "torch":
        import torch

        if isinstance(source, torch.Tensor) and torch.is_grad_enabled() \
                and source.requires_grad:
            from aimsec_torch import tensor_handed

            return [tensor_handed(source, flat[0])]
    return flat


def _leaf(value: Any, backend: str) -> Any:
    """A floating backend tensor holding ``value``, detached from any graph of the caller's."""
    tensor = ops.convert_to_tensor(value)
    if not keras.backend.is_float_dtype(tensor.dtype):
        tensor = ops.cast(tensor, keras.backend.floatx())
    if backend == "torch":
        # A detached view: requires_grad on it leaves the caller's own tensor as it was.
        tensor = tensor.detach().requires_grad_(True)
    return tensor


def _loss(output: Any, labels: Any, sigmoid: bool = False
          ) -> tuple[Any, np.ndarray, np.ndarray, Any]:
    """``(output, output as numpy, probabilities, summed cross-entropy tensor)``; a single
    column as :func:`class_probabilities` reads it."""
    if not ops.is_tensor(output):
        raise ConfigurationError(
            f"input gradients need a model with one output tensor of class scores; this "
            f"model returns a {type(output).__name__}")
    values = ops.convert_to_numpy(output)
    probabilities, logits = class_probabilities(values, sigmoid)
    scores = output
    if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1):  # binary: one column
        column = ops.reshape(output, (-1, 1))
        scores = (ops.concatenate([1.0 - column, column], axis=1) if sigmoid
                  else ops.concatenate([ops.zeros_like(column), column], axis=1))
    target = probabilities.argmax(axis=1) if labels is None else np.asarray(labels)
    index = ops.convert_to_tensor(target.astype(np.int64).reshape(-1, 1))
    if logits:
        log_p = ops.log_softmax(scores, axis=-1)
    else:
        # log of the probabilities themselves, unclipped above: Keras' own loss clips at
        # 1 - 1e-7, which zeroes the gradient of every confident prediction.
        log_p = ops.log(ops.maximum(scores, _TINY))
    loss = -ops.sum(ops.take_along_axis(log_p, index, axis=1))
    return output, values, probabilities, loss
