"""The tensors a guarded module hands its model: the core's snapshots of the caller's.

The core checks a copy of each tensor argument the caller could still change (another
thread's write after the check must not reach the model); this hands the model those
copies in the caller's places (:func:`with_snapshots`), runs it and copies back what the
model wrote into them in place, as into the caller's own tensors in the plain call
(:func:`run_then_write_back`, :func:`write_back`), and gives back the caller's own tensor
where the model returned an argument as it is (:func:`as_given`). A copy stays in the
caller's autograd graph through :class:`Joined`.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from contextlib import nullcontext, suppress
from typing import Any, NamedTuple

import torch
from torch import nn

from aimsec_core.arrays import broadcast_index
from aimsec_core.call_arguments import substituted


def with_snapshots(original: nn.Module, bound: list[Any], given: dict[str, Any],
                   rebuilt: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                   ) -> tuple[tuple[Any, ...], dict[str, Any], list[Written]]:
    """The call's arguments with each tensor the core took a snapshot of (``rebuilt``:
    name -> the values it checked) replaced by it: a boolean mask as ``bool`` again (it
    was screened as bytes), and joined to the caller's tensor's graph where that one
    requires grad (its gradient flows back to it as from the plain call). Also what
    each was replaced by, with its version, for :func:`write_back`."""
    if not rebuilt:
        return args, kwargs, []
    grad = torch.is_grad_enabled()
    replacements = {}
    for name, checked in rebuilt.items():
        tensor = given.get(name)
        if not isinstance(tensor, torch.Tensor) or _own_state(original, tensor):
            continue
        if tensor.dtype is torch.bool and checked.dtype is not torch.bool:
            checked = checked.view(torch.bool)
        replacements[name] = checked
    _share_overlaps(given, replacements, joined=grad)
    written = []
    for name, checked in replacements.items():
        tensor = given[name]
        if grad and tensor.requires_grad:
            checked = replacements[name] = Joined.apply(tensor, checked)
        if not checked.is_inference():  # an inference tensor has no version counter
            written.append(Written(tensor, checked, checked._version, checked.grad_fn))
    a, k = substituted(bound, given, replacements, args, kwargs)
    return a, k, written


def _share_overlaps(given: dict[str, torch.Tensor], copies: dict[str, torch.Tensor], *,
                    joined: bool) -> None:
    """Make the copies (name -> checked values) of arguments that are overlapping views
    of one memory (``t[:2]`` and ``t[1:3]``, a cache and a slice of it) views of one
    buffer laid out as the caller's memory, so a write through one shows through the
    other, as in the plain call. Each buffer spans the group's memory from its first to
    its last element, and is made only where that is at most twice the group's elements
    (no copy of a huge tensor's untouched middle); arguments requiring grad (``joined``:
    their copies are joined to the caller's graph one by one), broadcast or negative
    strides keep copies of their own."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, copy_ in copies.items():
        tensor = given[name]
        if (tensor.numel() == 0 or (joined and tensor.requires_grad)
                or any(stride <= 0 for stride in tensor.stride()) or copy_.is_inference()):
            continue
        try:
            key = (tensor.device, tensor.dtype, tensor.untyped_storage().data_ptr())
        except RuntimeError:  # no storage to share
            continue
        groups.setdefault(key, []).append(name)
    for (device, dtype, _), names in groups.items():
        if len(names) < 2:
            continue
        spans = {name: _extent(given[name]) for name in names}
        low = min(span[0] for span in spans.values())
        high = max(span[1] for span in spans.values())
        ordered = sorted(spans.values())
        if (all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:]))  # none overlap
                or high - low > 2 * sum(given[name].numel() for name in names)):
            continue
        with torch.inference_mode(False):  # versions counted, as the copies' are
            buffer = torch.empty(high - low, dtype=dtype, device=device)
            for name in names:  # in argument order: the last copy of an overlap wins
                tensor = given[name]
                view = buffer.as_strided(tensor.shape, tensor.stride(),
                                         tensor.storage_offset() - low)
                view.copy_(copies[name])
                copies[name] = view


def _extent(tensor: torch.Tensor) -> tuple[int, int]:
    """The elements of its storage ``tensor`` spans, first to last + 1."""
    start = tensor.storage_offset()
    return start, start + sum((size - 1) * stride
                              for size, stride in zip(tensor.shape, tensor.stride())) + 1


#: model -> its parameters and buffers when first asked (see :func:`_own_state`).
_OWN: weakref.WeakKeyDictionary[nn.Module, weakref.WeakValueDictionary[int, torch.Tensor]] = (
    weakref.WeakKeyDictionary())


def _own_state(original: nn.Module, tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` (or the tensor it is a view of) is a parameter or buffer of
    ``original``: handed to the model as it is, not as a copy, since the model reads it
    through ``self`` too (a copy would hide from ``self.state`` what the model writes
    through the argument), and no copy keeps another thread's writes from the state it
    reads there. Asked of a set taken once per model (a membership test per call); a hit
    is confirmed against the model's state now, so a tensor it no longer holds is copied."""
    known = _OWN.get(original)
    if known is None:
        known = _OWN[original] = weakref.WeakValueDictionary(
            (id(t), t) for t in _state_of(original))
    base = tensor._base
    if known.get(id(tensor)) is not tensor and (base is None or known.get(id(base)) is not base):
        return False
    return any(t is tensor or t is base for t in _state_of(original))


def _state_of(original: nn.Module) -> Any:
    return itertools.chain(original.parameters(), original.buffers())


class Written(NamedTuple):
    """A snapshot handed to the model in place of the caller's ``tensor``, and the
    snapshot's version counter and autograd node then (an in-place write moves the
    counter; one autograd records replaces the node)."""

    tensor: torch.Tensor
    snapshot: torch.Tensor
    version: int
    grad_fn: Any


def run_then_write_back(original: Callable[..., Any], args: tuple[Any, ...],
                        kwargs: dict[str, Any], written: list[Written]) -> Any:
    """``original(*args, **kwargs)``, then :func:`write_back` (also where the model
    raised, as its writes would have reached the caller's tensors before it did)."""
    try:
        result = original(*args, **kwargs)
    except BaseException:
        with suppress(Exception):  # the model's own error is what the caller gets
            write_back(written)
        raise
    write_back(written)
    return result


def as_given(result: Any, handed: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """``result`` with each copy the model was handed in place of a caller's tensor, and
    returned as it is (an identity model, ``return out, cache``: at the top, or in a tuple,
    list or dict; also detached, as a detector's pass returns it), as the caller's tensor
    again: the plain call returns the caller's own object (``out is x``), which the
    caller's later writes reach. Its values are the copy's, written back (see
    :func:`write_back`)."""
    if not handed:
        return result
    if isinstance(result, torch.Tensor):
        return next((given for copy, given in handed  # (not one reshaped in place)
                     if _same_tensor(result, copy, given) and given.shape == result.shape),
                    result)
    if type(result) in (tuple, list):
        items = [as_given(item, handed) for item in result]
        if any(a is not b for a, b in zip(items, result)):
            return type(result)(items)
    elif isinstance(result, tuple) and hasattr(result, "_make"):  # a named tuple
        items = [as_given(item, handed) for item in result]
        if any(a is not b for a, b in zip(items, result)):
            return result._make(items)
    elif type(result) is dict:
        items = {key: as_given(value, handed) for key, value in result.items()}
        if any(items[key] is not value for key, value in result.items()):
            return items
    return result


def _same_tensor(a: torch.Tensor, b: torch.Tensor, given: torch.Tensor) -> bool:
    """Whether ``a`` is ``b``, or the same values in the same memory as ``b`` and as
    ``given`` in requiring grad (``b`` detached by a detector's pass; not ``x.detach()``
    of an ``x`` requiring grad, which the plain call returns detached too)."""
    if a is b:
        return True
    try:
        return (a.numel() > 0 and a.requires_grad == given.requires_grad
                and a.device == b.device and a.dtype == b.dtype
                and a.shape == b.shape and a.stride() == b.stride()
                and a.data_ptr() == b.data_ptr())
    except RuntimeError:  # a tensor without storage (a functorch wrapper)
        return False


def write_back(written: list[Written]) -> None:
    """Copy into the caller's tensors what the model wrote in place into their snapshots
    (a cache or recurrent state the model updates: ``cache[:, pos] = k``), so the
    caller's tensor ends as after the plain call. A write autograd recorded (the
    snapshot's node changed) is copied back recorded too, so gradients through the
    written values reach the model's graph (a leaf requiring grad refuses it, as it
    refuses the plain model's write); a write the model made under ``torch.no_grad()``
    is copied back unrecorded, as the plain write was (a leaf requiring grad takes it)."""
    for entry in written:
        # (a snapshot resized or transposed in place, x.t_(), keeps its values to itself)
        if (entry.snapshot._version != entry.version
                and entry.snapshot.shape == entry.tensor.shape):
            recorded = entry.snapshot.grad_fn is not entry.grad_fn
            tensor, snapshot = entry.tensor, entry.snapshot
            # a broadcast argument (stride 0, its snapshot broadcast alike): the write
            # went into the compact values, which are copied into the caller's (copying
            # into the broadcast whole raises, as several elements share one place)
            index = broadcast_index(tensor.shape, tensor.stride())
            if index is not None and index == broadcast_index(snapshot.shape,
                                                              snapshot.stride()):
                tensor, snapshot = tensor[index], snapshot[index]
            with nullcontext() if recorded else torch.no_grad():
                tensor.copy_(snapshot)


class Joined(torch.autograd.Function):
    """``twin``'s values (what was checked); backward sends the gradient to ``x``'s graph
    and to ``twin`` alike: the caller's input gets its gradient as from the plain call,
    and one forward pass serves the caller and the detector (whose leaf ``twin`` is)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, twin: torch.Tensor) -> torch.Tensor:
        return twin.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad, grad
