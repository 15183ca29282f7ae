from __future__ import annotations

import numpy as np

from . import AdapterCase, digits


def _build():
    import torch
    from torch import nn

    torch.manual_seed(0)
    x, y = digits()
    inputs = torch.from_numpy(x).reshape(-1, 1, 8, 8)
    labels = torch.from_numpy(y)
    model = nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    order = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is faster and never oversubscribed
    try:
        for _ in range(8):
            for batch in torch.randperm(len(inputs), generator=order).split(64):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    optimizer.zero_grad(set_to_none=True)  # hand over a model with no .grad left on it
    return model.eval()


def _to_native(x: np.ndarray):
    import torch

    return torch.tensor(x.reshape(-1, 1, 8, 8))


def _from_numpy_any(a: np.ndarray):
    import torch

    try:
        return torch.from_numpy(np.ascontiguousarray(a))
    except (TypeError, RuntimeError):
        return a  # a dtype torch has no tensor for (object, str, ...)


def _call(model, x) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(x).numpy()


def valid_inputs():
    """Float32 batches as torch reads them, in the layouts torch takes: contiguous,
    strided and transposed views, broadcast (expanded) views and negative-bit views."""
    import torch
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    elements = hnp.from_dtype(np.dtype(np.float32), min_value=-1000, max_value=1000,
                              allow_nan=False, allow_infinity=False)
    batches = hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.just(64)),
                         elements=elements)

    def forms(array: np.ndarray):
        x = torch.from_numpy(array.reshape(-1, 1, 8, 8))
        return st.sampled_from([
            x,
            x.repeat(2, 1, 1, 1)[::2],  # a strided view
            x.transpose(2, 3).contiguous().transpose(2, 3),  # non-contiguous, same values
            x[:1].expand(len(x), -1, -1, -1),  # a broadcast view: one row's memory
            (-x)._neg_view(),  # values x, memory -x
        ])

    return batches.flatmap(forms)


CASE = AdapterCase(
    id="torch",
    build=_build,
    to_native=_to_native,
    call_plain=_call,
    call_guarded=_call,
    from_numpy_any=_from_numpy_any,
    sample_shape=(1, 8, 8),
    declares_shape=False,
    valid_inputs=valid_inputs,
)
