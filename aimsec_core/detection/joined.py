"""Several inputs of one model, read by the detectors as one flat row per sample.

A model that declares several inputs (a Keras model on two ``keras.Input``) is calibrated
and screened on the per-sample concatenation of its inputs, each flattened, in declared
order. The detectors that read the input (``density``, ``neighbours``, ``sparsity`` ...)
see that row; those that read the model's answer see the model's own on all its inputs
(the ``gradient`` and ``boundary`` detectors: the gradient of each input, flattened and
concatenated alike). Their passes on transformed copies (``squeeze``, ``noise``) split the
rows back into the model's inputs, each in its shape and dtype. Adapters that run such a
model for the detectors (``Capabilities.several_inputs``) take its batch as a list of
arrays, one per declared input in declared order, and give its gradient as such a list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arrays import to_host


@dataclass(frozen=True)
class JoinedInputs:
    """The layout of a model's inputs in a joined row: each one's per-sample shape and
    dtype, in declared order."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype, ...]

    @classmethod
    def of(cls, arrays: Sequence[np.ndarray]) -> JoinedInputs:
        """The layout of ``arrays`` (host arrays, ``(n, ...)`` each)."""
        return cls(tuple(tuple(int(d) for d in a.shape[1:]) for a in arrays),
                   tuple(np.dtype(a.dtype) for a in arrays))

    @property
    def integer(self) -> bool:
        """Whether an input holds integers (token ids have no gradient)."""
        return any(dtype.kind in "biu" for dtype in self.dtypes)

    def split(self, rows: Any) -> list[np.ndarray]:
        """Joined ``rows`` ``(n, total)`` as the model's inputs: a list of ``(n, *shape)``
        host arrays, each in its dtype (integers rounded from transformed float rows)."""
        rows = np.asarray(to_host(rows))
        n, start, parts = len(rows), 0, []
        for shape, dtype in zip(self.shapes, self.dtypes):
            width = math.prod(shape)
            part = rows[:, start:start + width].reshape(n, *shape)
            if dtype.kind in "biu" and part.dtype.kind == "f":
                part = np.rint(part)
            parts.append(part.astype(dtype, copy=False))
            start += width
        return parts


def join(arrays: Sequence[Any]) -> np.ndarray:
    """Per sample, ``arrays`` (``(n, ...)`` each, on the host or a device) flattened and
    concatenated in order: one ``(n, total)`` host array, of their common dtype."""
    host = [np.asarray(to_host(a)) for a in arrays]
    n = len(host[0])
    return np.concatenate([a.reshape(n, -1) for a in host], axis=1)


def model_passes(adapter: Any, layout: JoinedInputs | None
                 ) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """``adapter``'s ``scores``, ``input_gradient`` and ``features`` reading batches of
    joined rows of ``layout`` (split into the list of the model's inputs; the gradient
    joined alike); the adapter's own methods where ``layout`` is ``None`` (one input)."""
    if layout is None:
        return adapter.scores, adapter.input_gradient, adapter.features

    def scores(x: np.ndarray) -> Any:
        return adapter.scores(layout.split(x))

    def gradient(x: np.ndarray, labels: Any) -> np.ndarray:
        return join(adapter.input_gradient(layout.split(x), labels))

    def features(x: np.ndarray) -> Any:
        return adapter.features(layout.split(x))
    return scores, gradient, features
