"""Train/eval mode of a guarded module shared by threads (imports no torch).

A module's mode is state of the module itself, not of a call. The detectors take their
own eval-mode passes (the function they were calibrated on) by switching the model to
eval mode and back; a guarded call on a model in train mode runs the model in train mode.
When both happen at once in different threads on one model, the switch would make the
other thread's training call run in eval mode (no dropout, batch statistics not updated).
So per model the two never overlap: eval-mode passes share one switch (the first saves
every submodule's mode, the last restores them), calls in the model's own mode share the
mode as set, and each kind waits while the other is in. A waiting eval-mode pass goes
first, so calls in train mode cannot keep passes out; a new pass joins one that is in, so
passes overlapping without a break (several threads calibrating, or calls that the
detectors refuse, which end without a model call) keep train-mode calls waiting until
they pause. A guarded train-mode call takes its passes before its model call and waits
there, so threads calling the guarded model alone always get through. A model in eval
mode is never switched, and its calls take no part in this.

What the user sees is the mode the user set: ``guarded.training`` and copies or pickles
taken during a pass read it (:func:`own_modes`), and a ``train()``/``eval()`` of the
guarded model waits for the passes (:func:`own_mode`): made during one, the pass's
restore at its end would undo it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Modes:
    __slots__ = ("evaluating", "waiting", "own", "saved")

    def __init__(self) -> None:
        self.evaluating = 0  #: eval-mode passes in
        self.waiting = 0  #: eval-mode passes waiting for the calls in own mode to leave
        self.own = 0  #: calls in the model's own (train) mode in
        #: (module, its mode) for every submodule, the model first, saved by the first pass
        self.saved: list[tuple[Any, bool]] = []


_MODES: weakref.WeakKeyDictionary[Any, _Modes] = weakref.WeakKeyDictionary()
_CHANGED = threading.Condition()


def _state(model: Any) -> _Modes:
    """``model``'s entry (under ``_CHANGED``); it goes with the model."""
    state = _MODES.get(model)
    if state is None:
        state = _MODES[model] = _Modes()
    return state


@contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """Eval mode inside; afterwards every submodule's own mode exactly as it was. Passes
    that overlap in several threads share one switch (each saving its own would let a
    later one restore eval mode for good); a pass waits for the calls running the model
    in its own mode to finish, and they wait for it."""
    with _CHANGED:
        state = _state(model)
        if state.own:
            state.waiting += 1
            try:
                _CHANGED.wait_for(lambda: not state.own)
            finally:
                state.waiting -= 1
        if not state.evaluating:
            state.saved = [(module, module.training) for module in model.modules()]
            model.eval()
        state.evaluating += 1
    try:
        yield
    finally:
        with _CHANGED:
            state.evaluating -= 1
            if not state.evaluating:
                for module, training in state.saved:
                    module.training = training
                state.saved = []
                _CHANGED.notify_all()


def own_training(model: Any) -> bool:
    """Whether ``model`` is in train mode as its user set it (not as a detector's pass in
    another thread has switched it for the moment)."""
    with _CHANGED:
        state = _MODES.get(model)
        if state is not None and state.evaluating:
            return state.saved[0][1]
        return bool(model.training)


def own_modes(model: Any) -> list[bool]:
    """Every submodule's mode (``model.modules()`` order) as the user set it, whatever a
    detector's pass in another thread has switched meanwhile."""
    with _CHANGED:
        state = _MODES.get(model)
        if state is not None and state.evaluating:
            return [training for _, training in state.saved]
        return [module.training for module in model.modules()]


def set_modes(model: Any, modes: list[bool]) -> None:
    """Give ``model``'s submodules ``modes`` (from :func:`own_modes` of the model it is a
    copy of); left as they are where the two differ in structure."""
    modules = list(model.modules())
    if len(modules) == len(modes):
        for module, training in zip(modules, modes):
            module.training = training


@contextmanager
def own_mode(model: Any) -> Iterator[None]:
    """Run ``model`` in its own mode: waits while a detector's eval-mode pass has it
    switched (or waits to), and keeps new passes out until the call is done."""
    with _CHANGED:
        state = _state(model)
        _CHANGED.wait_for(lambda: not (state.evaluating or state.waiting))
        state.own += 1
    try:
        yield
    finally:
        with _CHANGED:
            state.own -= 1
            if not state.own:
                _CHANGED.notify_all()
