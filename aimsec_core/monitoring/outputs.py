"""The predicted class of each sample, read from whatever a model returned.

Extraction statistics are kept per predicted class. Guarded models return framework
objects (a torch tensor, a numpy array of probabilities or of labels, onnxruntime's list
of outputs); this reads the first array-like with one row per sample: a 2-D array gives
its argmax, a 1-D array its values, a single column of a binary classifier's scores the
side of its decision threshold (0.5 for probabilities, 0 for logits). An object no array
library reads (onnxruntime's ``OrtValue``) is read by the model's adapter (``native``).
Anything else gives ``None`` (no class: the sample is not learned from).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..arrays import to_host


def predicted_classes(output: Any, batch: int,
                      native: Callable[[Any], Any] | None = None) -> list[Any] | None:
    """One hashable class per sample, or ``None`` when ``output`` shows none. ``native``
    (an adapter's :meth:`~aimsec_core.adapter.Adapter.native`) reads what the array
    libraries cannot; its errors and ``None`` mean "not an array"."""
    if (type(output) is np.ndarray and output.ndim == 1 and output.dtype.kind in "iub"
            and output.shape[0] == batch):  # labels (scikit-learn's predict)
        return output.tolist()
    candidates = output if isinstance(output, (list, tuple)) else [output]
    for candidate in candidates[:4]:
        try:
            array = np.asarray(candidate if isinstance(candidate, np.ndarray)
                               else to_host(candidate))
        except Exception:  # not an array of any framework we can read: the adapter's?
            array = _native(candidate, native)
            if array is None:
                continue
        if array.ndim == 0 or array.shape[0] != batch:
            continue
        if array.ndim == 1:
            if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
                return [0] * batch  # a regression: one class for every answer
            return array.tolist()
        flat = array.reshape(batch, -1)
        if flat.shape[1] == 1:
            return _binary_classes(flat[:, 0])
        if flat.dtype.kind in "fiu":
            return np.argmax(flat, axis=1).tolist()
    return None


def _binary_classes(column: np.ndarray) -> list[Any]:
    """Classes from one column: labels as they are; a binary classifier's scores by side
    of its threshold, 0.5 where the batch's values all lie in [0, 1] (probabilities), 0
    otherwise (logits)."""
    if column.dtype.kind != "f" or np.all(np.mod(column, 1) == 0):
        return column.tolist()
    threshold = 0.5 if np.all((column >= 0) & (column <= 1)) else 0.0
    return (column > threshold).astype(np.int64).tolist()


def _native(candidate: Any, native: Callable[[Any], Any] | None) -> np.ndarray | None:
    """``candidate`` as numpy through the adapter's ``native``, or ``None``."""
    if native is None:
        return None
    try:
        array = native(candidate)
        return None if array is None else np.asarray(to_host(array))
    except Exception:  # the adapter does not read it either
        return None
