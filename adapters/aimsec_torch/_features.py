"""Internal features of a torch model for the detectors: forward hooks capture what its
activation modules computed, during the real call where the guard shares it.

Which layers: every activation module (``nn.ReLU``, ``nn.GELU`` ...; not softmax), at most
:data:`MAX_LAYERS` of them, evenly spaced and always including the last; a model with
no activation modules (functional activations) gives the input of its last
``nn.Linear`` instead. Spatial maps (N, C, ...) are averaged per channel, as Lee et al.
(NeurIPS 2018) do for their Mahalanobis scores; the class logits come last.

The capture is torch's global module hooks, each call's layers going to the captures of
its own thread (see ``_global_hooks``): other threads' calls of the same model, at the
same time, capture their own tensors, and the model itself carries no hook. A layer the
model runs in a thread of its own (a pool inside its forward) goes to the captures of the
one thread watching that layer, and is not captured where calls in several threads watch
it at once (the detector then refuses the call's feature count with a
``CalibrationError``). aimsec's own passes (detectors', calibration's) register their
thread (:func:`own_passes`) and stay out of other threads' captures; the cost that
remains: an unguarded call of the same modules in another thread, during a guarded call,
is taken for the model's own worker (its layers join the guarded call's capture, which is
then refused alike).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from aimsec_core.forks import renew_after_fork

from ._global_hooks import SharedHook

MAX_LAYERS = 4


def _feature_points(model: Any) -> list[tuple[Any, bool]]:
    """``(module, on_input)`` pairs to hook, in execution order for sequential models."""
    from torch import nn

    activations = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU,
                   nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Tanh, nn.Sigmoid, nn.Softplus)
    found = [m for m in model.modules() if isinstance(m, activations)]
    if len(found) > MAX_LAYERS:
        step = len(found) / MAX_LAYERS
        found = [found[min(len(found) - 1, int(round((i + 1) * step)) - 1)]
                 for i in range(MAX_LAYERS)]
    if found:
        return [(m, False) for m in found]
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return [(linear[-1], True)] if linear else []


def _points(adapter: Any) -> list[tuple[Any, bool]]:
    cached = adapter.__dict__.get("_feature_points")
    if cached is None:
        cached = adapter._feature_points = _feature_points(adapter.model)
    return cached


#: Every capture under way, in any thread, innermost last: (thread id, the hooked
#: modules (by id; True where the input is taken), the list the captured tensors join in
#: the order the layers ran). A guarded model called inside another's call (a guarded
#: backbone) adds its own; the outer call's goes on meanwhile. Replaced whole under the
#: lock, read without it.
_RUNNING: tuple[tuple[int, dict[int, bool], list[Any]], ...] = ()
_RUNNING_LOCK = threading.Lock()
renew_after_fork(sys.modules[__name__], "_RUNNING_LOCK")  # a child forked while it was held


def _captures(module: Any) -> list[tuple[dict[int, bool], list[Any]]]:
    """This thread's captures; in a thread without any (a model's own worker thread),
    those watching ``module`` when they all come from one thread, else none."""
    running = _RUNNING
    if not running:
        return []
    me = threading.get_ident()
    mine = [(points, captured) for thread, points, captured in running if thread == me]
    if mine:
        return mine
    key = id(module)
    watching = [run for run in running if key in run[1]]
    if len({thread for thread, _, _ in watching}) != 1:
        return []  # nobody's, or concurrent calls': whose it is cannot be told
    return [(points, captured) for _, points, captured in watching]


def _on_input(module: Any, inputs: Any) -> None:
    for points, captured in _captures(module):
        if points.get(id(module)) is True:
            captured.append(inputs[0].detach())


def _on_output(module: Any, inputs: Any, output: Any) -> None:
    for points, captured in _captures(module):
        if points.get(id(module)) is False:
            captured.append(output.detach())


def _register() -> list[Any]:
    from torch.nn.modules import module

    return [module.register_module_forward_pre_hook(_on_input),
            module.register_module_forward_hook(_on_output)]


_HOOKS = SharedHook(_register)


@contextmanager
def _capturing(points: list[tuple[Any, bool]]) -> Iterator[list[Any]]:
    """Captures ``points`` of this call (this thread) for the duration; yields the list
    the captured tensors join, in the order the layers ran."""
    captured: list[Any] = []
    with _registered({id(m): before for m, before in points}, captured), _HOOKS.active():
        yield captured


@contextmanager
def own_passes(*, always: bool = True) -> Iterator[None]:
    """aimsec's own passes of the model in this thread (a detector's or calibration's
    pass, the guarded call itself): registered as this thread's capture of nothing, so a
    capture under way in another thread does not take their layers for the model's own
    worker thread's (it was then refused with a ``CalibrationError``). Without
    ``always``, only while some capture is under way when the pass starts (one read: the
    guarded call's path, where a capture starting meanwhile is the documented cost)."""
    if not always and not _RUNNING:
        yield
        return
    with _registered({}, []):
        yield


@contextmanager
def _registered(points: dict[int, bool], captured: list[Any]) -> Iterator[None]:
    """``(this thread, points, captured)`` among the captures under way, for the duration."""
    global _RUNNING
    run = (threading.get_ident(), points, captured)
    with _RUNNING_LOCK:
        _RUNNING = (*_RUNNING, run)
    try:
        yield
    finally:
        with _RUNNING_LOCK:
            _RUNNING = tuple(other for other in _RUNNING if other is not run)


def _reduced(tensors: list[Any], logits: Any) -> list[np.ndarray]:
    out = []
    for t in [*tensors, logits]:
        t = t.float()
        if t.ndim > 2:
            t = t.flatten(2).mean(dim=2)  # per-channel average of a spatial map
        out.append(t.reshape(len(t), -1).cpu().numpy())
    return out


def features(self: Any, x: Any) -> list[np.ndarray]:
    """The model's features for ``x`` (a tensor, or a list of one per input: see
    ``TorchAdapter.run_on``), in eval mode, outside the guard (see module doc)."""
    import torch

    from . import _class_logits, _evaluating

    x = self._as_tensor(x)
    with _evaluating(self.model), torch.no_grad(), _capturing(_points(self)) as captured:
        logits = _class_logits(self.run_on(x), self)
    return _reduced(captured, logits)


def forward_with_features(self: Any, call: Callable[[Any], Any],
                          x: Any) -> tuple[Any, np.ndarray, list[np.ndarray]]:
    """Run ``call(x)`` once with the hooks on: ``(output, softmax scores, features)``.
    The output is the real call's, in the caller's mode and grad mode."""
    import torch

    from . import _class_logits

    with _capturing(_points(self)) as captured:
        output = call(x)
    logits = _class_logits(output, self).detach()
    scores = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return output, scores, _reduced(captured, logits)
