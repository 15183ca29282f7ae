"""Gradient checkpointing of a guarded module (imports torch).

``torch.utils.checkpoint.checkpoint(guarded, x)`` runs the guarded call in the forward
pass, keeps its inputs, and in the backward pass runs the module again on them to rebuild
the activations it did not keep. That second run replays a call the guard has screened,
on the very tensors it screened (autograd refuses them written since: their version is
checked when checkpointing reads them back), so it is the plain model's: screening it
again would record a second call per training step, count it against the client's quota,
take the detectors' passes again (in train mode on batch statistics the first call has
updated) and, where checkpointing stops the replay early with its own exception, record
an ``error`` or raise a finding in place of that exception.

And the detectors' own backward (the gradient detector's eval-mode pass in train mode)
must not be seen by checkpointing's hooks on saved tensors: it would count its tensors
among the call's, and reading them back for its own gradient would start a replay in the
middle of the forward pass (another train-mode pass: batch statistics updated twice).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch


@cache
def _replays() -> frozenset[Any]:
    """The code of the functions checkpointing replays a call from: the reentrant
    variant's backward and the non-reentrant variant's ``recompute_fn``."""
    from torch.utils import checkpoint

    codes = {checkpoint.CheckpointFunction.backward.__code__}
    generator = getattr(checkpoint, "_checkpoint_without_reentrant_generator", None)
    if generator is not None:
        codes.update(c for c in generator.__code__.co_consts
                     if getattr(c, "co_name", None) == "recompute_fn")
    return frozenset(codes)


def recomputing() -> bool:
    """Whether this call is ``torch.utils.checkpoint`` replaying a checkpointed call to
    rebuild its activations (reentrant or not). Looked for only where a replay can be:
    inside a backward pass, or under hooks on saved tensors."""
    if torch._C._current_graph_task_id() == -1 and not _saved_hooks_active():
        return False
    if "torch.utils.checkpoint" not in sys.modules:
        return False
    replays = _replays()
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code in replays:
            return True
        frame = frame.f_back
    return False


def _saved_hooks_active() -> bool:
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return True if top is None else top(True) is not None


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@contextmanager
def own_saved_tensors() -> Iterator[None]:
    """Inside, tensors autograd saves are kept as they are, past any hooks on saved
    tensors the caller set (checkpointing's, ``save_on_cpu``): for a detector's own pass
    and backward, which are no part of the caller's graph."""
    if not _saved_hooks_active():
        yield
        return
    with torch.autograd.graph.saved_tensors_hooks(_same, _same):
        yield
