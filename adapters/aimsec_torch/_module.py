"""The guarded ``nn.Module`` (imports torch, so loaded on demand by ``TorchAdapter.wrap``)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from aimsec_core.guard import Guard
from aimsec_core.guarded import GuardedMixin

#: The original's dicts the guarded module uses as its own: same parameters, buffers and
#: submodules, so ``parameters()``, ``state_dict()``, optimisers and ``.to()`` see one model.
_SHARED = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set",
           "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
           "_load_state_dict_post_hooks")


class GuardedModule(GuardedMixin, nn.Module):
    """An ``nn.Module`` whose ``forward`` screens its input, then calls the original module.

    ``last_verdict``, ``calibrate(x_clean)`` and ``save_calibration(path)`` come from
    :class:`~aimsec_core.guarded.GuardedMixin`, as on every guarded object.

    The original is held outside ``_modules`` (it is not a submodule), so ``state_dict()``
    keys are exactly the original's and a checkpoint loads into either.
    """

    def __init__(self, guard: Guard) -> None:
        super().__init__()
        original = guard.model
        object.__setattr__(self, "_aimsec_original", original)
        object.__setattr__(self, "_aimsec_guard", guard)
        for name in _SHARED:
            object.__setattr__(self, name, original.__dict__[name])

    # -- the guarded call -----------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        original = self._aimsec_original
        if args:
            x, key = args[0], None
        else:  # called with keywords only: screen the first tensor among them
            key = next((k for k, v in kwargs.items() if isinstance(v, torch.Tensor)),
                       next(iter(kwargs), None))
            x = kwargs.get(key) if key is not None else None

        def predict() -> Any:
            return original(*args, **kwargs)

        joined = torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad

        def forward(replacement: Any) -> Any:  # the same call on x's autograd twin
            if joined and replacement is not x:  # the output must still reach x's graph
                replacement = _Joined.apply(x, replacement)
            if key is None:
                return original(replacement, *args[1:], **kwargs)
            return original(*args, **{**kwargs, key: replacement})

        return self._aimsec_guard.call({"input": x}, predict, forward)

    @property
    def __aimsec_guard__(self) -> Guard:
        return self._aimsec_guard

    # -- one model: mode, device, state ---------------------------------------------------

    @property  # type: ignore[override]
    def training(self) -> bool:
        original = self.__dict__.get("_aimsec_original")
        return True if original is None else original.training

    @training.setter
    def training(self, mode: bool) -> None:
        original = self.__dict__.get("_aimsec_original")
        if original is not None:  # nn.Module.__init__ sets it before the original is known
            original.training = mode

    @property  # type: ignore[override]
    def _version(self) -> int:
        return self._aimsec_original._version

    def train(self, mode: bool = True) -> GuardedModule:
        self._aimsec_original.train(mode)  # honours an original that overrides train()
        return self

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> GuardedModule:
        # .to() / .cuda() / .double() ...: the original's own _apply (RNNs re-flatten there);
        # the shared dicts make the result ours too.
        self._aimsec_original._apply(fn, *args, **kwargs)
        return self

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self._aimsec_original.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self._aimsec_original.load_state_dict(*args, **kwargs)

    def _save_to_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._aimsec_original._save_to_state_dict(*args, **kwargs)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._aimsec_original._load_from_state_dict(*args, **kwargs)

    # -- everything else reads through to the original ------------------------------------

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # shared parameters, buffers, submodules
        except AttributeError:
            original = self.__dict__.get("_aimsec_original")
            if original is None:
                raise
            return getattr(original, name)

    def __setattr__(self, name: str, value: Any) -> None:
        original = self.__dict__.get("_aimsec_original")
        if (original is not None and name not in self.__dict__ and name in original.__dict__
                and not hasattr(nn.Module, name)  # nn.Module's own (_compiled_call_impl)
                and not isinstance(value, (nn.Module, torch.Tensor))):
            setattr(original, name, value)  # a plain attribute of the model: one copy of it
            return
        super().__setattr__(name, value)

    # Containers (Sequential, ModuleList, ModuleDict) index, iterate and measure as before.
    def __getitem__(self, key: Any) -> Any:
        return self._aimsec_original[key]

    def __len__(self) -> int:
        return len(self._aimsec_original)

    def __iter__(self) -> Any:
        return iter(self._aimsec_original)

    def __bool__(self) -> bool:
        return bool(self._aimsec_original)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(dir(self._aimsec_original)))

    def __repr__(self) -> str:
        guard = self._aimsec_guard
        return f"GuardedModule[{guard.name!r}, mode={guard.mode!r}]({self._aimsec_original!r})"

    # -- copies ---------------------------------------------------------------------------

    def __deepcopy__(self, memo: dict[int, Any]) -> GuardedModule:
        """A guarded deep copy of the model, writing to the same sinks."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for name, value in self.__dict__.items():
            if name != "_aimsec_guard":  # the shared dicts stay shared through the memo
                object.__setattr__(new, name, copy.deepcopy(value, memo))
        object.__setattr__(new, "_aimsec_guard", _rebuilt(self._aimsec_guard,
                                                          new._aimsec_original))
        return new

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the guard's sinks (files, sockets): a loaded copy records to
        the default audit log; guard the unpickled ``unguard(m)`` again to configure it."""
        state = super().__getstate__()
        guard = state.pop("_aimsec_guard")
        state["_aimsec_guard_spec"] = (guard.name, guard.mode, guard.constraints)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        name, mode, constraints = state.pop("_aimsec_guard_spec")
        self.__dict__.update(state)
        super().__setstate__({})
        original = self._aimsec_original
        from . import TorchAdapter

        object.__setattr__(self, "_aimsec_guard", Guard(
            original, TorchAdapter(original), name=name, mode=mode, constraints=constraints))


def _rebuilt(guard: Guard, model: Any) -> Guard:
    return Guard(model, type(guard.adapter)(model), name=guard.name, mode=guard.mode,
                 constraints=guard.constraints, sinks=list(guard.sinks), clock=guard.clock)


class _Joined(torch.autograd.Function):
    """``x`` in value; backward sends the gradient to ``x``'s graph and to the detector's
    twin of ``x`` alike, so one forward pass serves the caller and the detector."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, twin: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad, grad
