"""The values a model reads from a tensor, as a plain tensor the core can screen, and their
exact bytes for the content hash (imports torch: loaded on demand).

A tensor's logical values are not always its memory: a negative or conjugate bit flips
signs on read (``x._neg_view()``, ``x.conj()``), and under ``torch.func`` transforms
(``vmap``, ``grad``, ``jacrev``) a tensor is a wrapper around the real one. ``np.from_dlpack``
reads a negative view's raw memory (the values with the wrong sign), so such bits are
resolved (copied) before anything reads the tensor.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch._C import _functorch
from torch._subclasses.fake_tensor import is_fake
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from aimsec_core.arrays import broadcast_index


def readable(value: torch.Tensor) -> torch.Tensor:
    """``value``'s logical values as a plain, detached tensor on its device (no copy unless
    a sign bit must be resolved or a transform's batch levels merged).

    Under ``vmap`` each batch level is moved in front and merged into the first axis, so a
    logical ``(n, *rest)`` read by the model for each of ``b`` vmapped entries is screened as
    one ``(b * n, *rest)`` batch: every value the model reads, the logical rank kept.
    Raises ``TypeError`` for tensors that hold no readable values."""
    if _functorch.is_functorch_wrapped_tensor(value):
        value = _unwrapped(value)
    elif torch._is_functional_tensor(value):
        value = torch._from_functional_tensor(value)
    if type(value) is not torch.Tensor and not isinstance(value, torch.nn.Parameter):
        if is_fake(value):
            raise TypeError("a fake tensor (tracing with FakeTensorMode or torch.export) "
                            "holds no values to screen; call the guarded model on real "
                            "tensors")
        if is_traceable_wrapper_subclass(value):
            raise TypeError(f"a {type(value).__name__} wraps other tensors and cannot be "
                            "read in place; convert it to a plain tensor first (e.g. "
                            "x.full_tensor() for a DTensor)")
        value = value.as_subclass(torch.Tensor)
    value = value.detach()  # same storage, same device; reductions build no graph
    if value.is_neg():
        value = value.resolve_neg()
    if value.is_conj():
        value = value.resolve_conj()
    return value


def snapshot(value: torch.Tensor, array: torch.Tensor) -> torch.Tensor | None:
    """A copy of ``array`` (:func:`readable` of ``value``) that the model can be handed in
    place of ``value``: for a plain tensor (or a parameter), on its device and in its
    memory format (broadcast axes broadcast again), detached; ``None`` for a subclass (the model would get another type)
    and a tensor under transforms or functionalization (its wrappers are what the model
    reads)."""
    if (type(value) not in (torch.Tensor, torch.nn.Parameter)
            or _functorch.is_functorch_wrapped_tensor(value)
            or torch._is_functional_tensor(value)):
        return None
    # a broadcast axis (stride 0: an attention mask expanded over heads and queries) is
    # copied once and broadcast again, as the caller's tensor is: never materialized
    broadcast = broadcast_index(array.shape, array.stride())
    with torch.inference_mode(False):  # a tensor with a version counter, which tells
        # whether the model wrote into it in place
        if broadcast is not None:
            return array[broadcast].clone().expand(array.shape)
        return array.clone()


def wrapped_elements(value: torch.Tensor) -> int:
    """Elements of the plain tensor under ``value``'s transform levels, which
    :func:`readable` reads (merging vmapped axes copies an expanded view)."""
    while _functorch.is_functorch_wrapped_tensor(value):
        value = _functorch.get_unwrapped(value)
    return value.numel()


def _unwrapped(value: torch.Tensor) -> torch.Tensor:
    """The plain tensor under every transform level, each vmapped axis merged into the
    logical first one. Call it with the transforms' interpreter stack cleared
    (:func:`outside_transforms`): ops on plain tensors must not be wrapped again."""
    axes = []  # each vmap level's axis, in the logical shape of the level below, outermost first
    while _functorch.is_functorch_wrapped_tensor(value):
        if _functorch.is_batchedtensor(value):
            axes.append(_functorch.maybe_get_bdim(value))
        value = _functorch.get_unwrapped(value)  # grad/jvp/functionalize: same values
    for front, axis in enumerate(reversed(axes)):  # innermost first
        value = value.movedim(front + axis, front)
    if axes:
        logical = value.shape[len(axes):]
        value = value.reshape(-1, *logical[1:])  # (b1 * b2 * ... * n, *rest)
    return value


@contextmanager
def outside_transforms() -> Iterator[list[Any]]:
    """Suspend active ``torch.func`` transforms (yields their stack, for
    :func:`inside_transforms`): tensor ops then act on plain values and stay plain."""
    from torch._functorch.pyfunctorch import temporarily_clear_interpreter_stack

    with temporarily_clear_interpreter_stack() as stack:
        yield stack


def inside_transforms(stack: list[Any]) -> Any:
    """The transforms suspended by :func:`outside_transforms`, active again (the model's
    own call must run under them)."""
    from torch._functorch.pyfunctorch import temporarily_restore_interpreter_stack

    return temporarily_restore_interpreter_stack(stack)


def transforming() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, ...) is active: its wrappers are on
    the input, or only on the parameters (per-example gradients, a vmapped ensemble), where
    every tensor op, reading a plain input's values included, still goes through them."""
    return _functorch.peek_interpreter_stack() is not None


def exact_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's values in C order as host bytes, copied off an accelerator once.

    Dtypes numpy lacks (bfloat16, float8) are read through a byte view, so nothing is
    widened or rounded: the SHA-256 of the core's content hash sees the exact bits."""
    flat = readable(tensor).contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).cpu().numpy()).cast("B")
