"""Models that take batches of one size only, and running them on batches of any size.

A model may declare a fixed length for the batch axis of its input: ``torch.onnx.export``
without ``dynamic_axes`` (its default) gives the ONNX graph the batch it was traced with,
usually 1, and onnxruntime then refuses any other. That length is the model's batch size,
not a property of the samples: calls must have exactly that many samples (validation
checks the declared shape), while clean data for calibration may have any number, and the
detectors' own passes (calibration, the class scores of transformed copies at call time)
run the model on batches of any size. :func:`batched` runs such a model on them in
batches of its own size, the last one padded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .arrays import to_host
from .signature import InputSpec


def fixed_batch(declared: Sequence[InputSpec] | None) -> int | None:
    """The number of samples the model takes per run, where its first declared input
    fixes the length of the batch axis (axis 0 of a shape of rank 2 or more: a rank-1
    shape of fixed length may as well be one sample's features); ``None`` where the batch
    is free or nothing is declared."""
    spec = next(iter(declared or ()), None)
    if spec is None or spec.shape is None or len(spec.shape) < 2:
        return None
    batch = spec.shape[0]
    return batch if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0 \
        else None


def free_batch(spec: InputSpec | None) -> InputSpec | None:
    """``spec`` with a fixed batch (see :func:`fixed_batch`) freed: what data of any number
    of samples, each shaped as the model's, is checked against."""
    if spec is None or fixed_batch([spec]) is None:
        return spec
    return replace(spec, shape=(None, *spec.shape[1:]))  # type: ignore[misc]


def batched(run: Callable[..., Any], batch: int | None, chunk: int | None = None
            ) -> Callable[..., Any]:
    """``run`` (arrays with the samples along axis 0 -> an array, or a list of arrays, with
    one row per sample) made to take any number of samples: with a fixed ``batch``, it
    runs on batches of exactly that many, the last filled up with copies of its last
    sample and the outputs of those copies dropped; otherwise on chunks of at most
    ``chunk`` samples (``None``: all at once, ``run`` itself). Outputs of several runs are
    joined as numpy arrays; an empty input is handed to ``run`` as it is."""
    if batch is None and chunk is None:
        return run
    size: int = batch if batch is not None else chunk  # type: ignore[assignment]

    def in_batches(*arrays: Any) -> Any:
        n = len(arrays[0])
        if n == 0 or (n == size if batch is not None else n <= size):
            return run(*arrays)
        parts = []
        for start in range(0, n, size):
            part = [a[start:start + size] for a in arrays]
            rows = len(part[0])
            if batch is not None and rows < batch:
                part = [np.concatenate([a, np.repeat(a[-1:], batch - rows, axis=0)])
                        for a in (np.asarray(to_host(p)) for p in part)]
            parts.append(_first_rows(run(*part), rows))
        if isinstance(parts[0], (list, tuple)):  # one array per layer (features)
            return [np.concatenate(layer) for layer in zip(*parts)]
        return np.concatenate(parts)

    return in_batches


def _first_rows(output: Any, rows: int) -> Any:
    """The first ``rows`` rows of ``output`` (an array, or a list of arrays), on the
    host."""
    if isinstance(output, (list, tuple)):
        return [np.asarray(to_host(layer))[:rows] for layer in output]
    return np.asarray(to_host(output))[:rows]
