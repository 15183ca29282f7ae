"""The guarded ``nn.Module`` (imports torch, so loaded on demand by ``TorchAdapter.wrap``).

Every way to run the model through the guarded module is screened or refused:

- ``guarded(x)``, ``guarded.forward(...)``, positional, keyword or mixed arguments: the
  arguments are bound to the original's ``forward`` signature and every tensor in them is
  screened under its parameter's name;
- ``torch.compile(guarded)``: the guard runs outside the graph (a graph break), every call;
  ``guarded.compile()`` compiles the original model and keeps the guard outside it;
- ``torch.func`` transforms (``vmap``, ``grad``, ``jacrev``...), over the input or only
  over the parameters (``functional_call`` inside them): the real values under the
  transform's wrappers are screened;
- tracers that would record the model without the guard (``torch.jit.trace``,
  ``torch.jit.script``, ``torch.fx.symbolic_trace``, ``torch.export``) raise
  ``UnguardedCallError``: trace the plain model, then guard what the tracer returns;
- methods of the original (a custom ``predict``) run bound to the guarded module, so their
  ``self(x)`` is screened; a direct call of the model or one of its submodules from such a
  method, which would bypass the guard, raises ``UnguardedCallError``.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import types
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from aimsec_core.errors import UnguardedCallError
from aimsec_core.guard import Guard
from aimsec_core.guarded import GuardedMixin
from aimsec_core.validation import Refused

from aimsec_core.arrays import masks_as_bytes
from aimsec_core.call_arguments import ArgumentsError, tensors_in
from ._checkpoint import recomputing
from ._global_hooks import SharedHook
from ._modes import own_mode, own_modes, own_training, set_modes
from ._snapshots import Joined, Written, as_given, run_then_write_back, with_snapshots
from ._tensors import inside_transforms, outside_transforms, transforming

#: The original's dicts the guarded module uses as its own: same parameters, buffers and
#: submodules, so ``parameters()``, ``state_dict()``, optimisers and ``.to()`` see one model.
_SHARED = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set",
           "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
           "_load_state_dict_post_hooks")

_HOW_TO_TRACE = ("trace or export the plain model and guard the result instead: traced = "
                 "torch.jit.trace(aimsec_core.unguard(guarded), example); guarded = "
                 "aimsec_core.guard(traced)")


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
            object.__setattr__(self, name, getattr(original, name))  # traced: delegated

    # -- the guarded call -----------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():  # traced by dynamo (torch.compile or export)
            if torch.compiler.is_exporting():
                raise UnguardedCallError(f"torch.export would record the model without its "
                                         f"guard; {_HOW_TO_TRACE}")
            return _outside_graph(self, args, kwargs)
        tracer = _active_tracer()
        if tracer is not None:
            raise UnguardedCallError(f"{tracer} would record the model without its guard; "
                                     f"{_HOW_TO_TRACE}")
        if recomputing():  # checkpointing replays a screened call: the plain model's
            return self._aimsec_replayed(args, kwargs)
        return self._aimsec_screened(args, kwargs)

    def _aimsec_replayed(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``torch.utils.checkpoint`` rebuilding the activations of a call it took in the
        forward pass, which the guard screened: the model runs on the same arguments (the
        ones checkpointing kept, refused by autograd if written since), unscreened and
        unrecorded, exactly as the plain model's replay (see ``_checkpoint``)."""
        original = self._aimsec_original
        with own_mode(original) if own_training(original) else nullcontext():
            return original(*args, **kwargs)

    def _aimsec_screened(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Screen every tensor argument by name; run the original on the arguments with
        each tensor replaced by the core's snapshot of the values it checked, and copy
        what it wrote into a snapshot in place back into the caller's tensor."""
        guard, original = self._aimsec_guard, self._aimsec_original
        binder = guard.adapter.binder()
        bound: list[Any] = []
        try:
            bound = binder.bind(args, kwargs)
            inputs, where = tensors_in(bound, torch.Tensor)
        except ArgumentsError as exc:
            inputs, where = {binder.first_name: Refused(str(exc))}, None
        given = inputs  # the caller's tensors, by name
        if not inputs:
            inputs = {binder.first_name: None}
        elif len(inputs) > 1:
            inputs = masks_as_bytes(inputs)

        if transforming():
            return self._aimsec_transformed(inputs, bound, given, args, kwargs)

        # the mode the user set, whatever another thread's detector pass switched it to
        training = own_training(original)

        handed: list[tuple[torch.Tensor, torch.Tensor]] = []  # (model's copy, caller's)

        def predict(rebuilt: dict[str, Any]) -> Any:
            a, k, written = with_snapshots(original, bound, given, rebuilt, args, kwargs)
            handed.extend((w.snapshot, w.tensor) for w in written)
            if training:  # the model's own train mode, never a detector's eval switch
                with own_mode(original):
                    return run_then_write_back(original, a, k, written)
            return run_then_write_back(original, a, k, written)

        forward = None
        x = next(iter(inputs.values()))
        # In train mode (dropout, batch statistics) the caller's pass is not the function
        # the detectors were calibrated on: they take their own eval-mode pass instead.
        if where is not None and isinstance(x, torch.Tensor) and not training:
            grad_mode = torch.is_grad_enabled()
            first = next(iter(inputs))
            located = {name: at for name, _, at in bound}  # the arguments themselves

            def on_twins(replacement: Any, rebuilt: dict[str, Any]) -> Any:
                # the same call on the autograd twins of the inputs the detectors read
                # (the checked values: the primary one, or, for a model of several inputs,
                # a list of one per input in its order); the output must still reach the
                # caller's tensors' graphs
                several = isinstance(replacement, list)
                names = guard.adapter.input_names() if several else [first]
                twins = dict(zip(names, replacement if several else [replacement]))
                others = {name: t for name, t in rebuilt.items() if name not in twins}
                a, k, written = with_snapshots(original, bound, given, others, args, kwargs)
                handed.extend((w.snapshot, w.tensor) for w in written)
                for name, twin in twins.items():
                    caller = given[name]
                    if grad_mode and caller.requires_grad and twin is not caller:
                        twin = Joined.apply(caller, twin)
                    handed.append((twin, caller))
                    a, k = located[name].replaced(a, k, twin)
                    if (twin is not caller and isinstance(twin, torch.Tensor)
                            and not twin.is_inference()):  # written back too
                        written.append(Written(caller, twin, twin._version, twin.grad_fn))
                return run_then_write_back(original, a, k, written)

            forward = on_twins
        return as_given(_screened_call(guard, inputs, predict, forward), handed)

    def _aimsec_transformed(self, inputs: dict[str, Any], bound: list[Any],
                            given: dict[str, Any], args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> Any:
        """Under ``torch.func`` transforms: screen the real values with the transforms
        suspended, run the model under them (detectors use their own passes) on the
        snapshots of plain tensors that require no grad (the transforms' own wrappers,
        and tensors a custom autograd function could not join under them, as given)."""
        original = self._aimsec_original
        with outside_transforms() as stack:

            def predict(rebuilt: dict[str, Any]) -> Any:
                plain = {name: t for name, t in rebuilt.items()
                         if not given[name].requires_grad}
                a, k, written = with_snapshots(original, bound, given, plain, args, kwargs)

                def transformed(*a: Any, **k: Any) -> Any:
                    with inside_transforms(stack), (
                            own_mode(original) if own_training(original) else nullcontext()):
                        return original(*a, **k)

                # written back outside the transforms
                return run_then_write_back(transformed, a, k, written)

            return _screened_call(self._aimsec_guard, inputs, predict)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile the original model in place (``nn.Module.compile``); the guard stays
        outside the compiled graph and screens every call."""
        self._aimsec_original.compile(*args, **kwargs)

    def __prepare_scriptable__(self) -> Any:
        raise UnguardedCallError("torch.jit.script would compile the model without its "
                                 "guard; script the plain model and guard the result "
                                 "instead: aimsec_core.guard(torch.jit.script("
                                 "aimsec_core.unguard(guarded)))")

    @property
    def __aimsec_guard__(self) -> Guard:
        return self._aimsec_guard

    # -- one model: mode, device, state ---------------------------------------------------

    # The mode the user set, read and changed past a detector's eval-mode pass in another
    # thread (see ``_modes``): changed during the pass, its restore would undo the change.
    @property  # type: ignore[override]
    def training(self) -> bool:
        original = self.__dict__.get("_aimsec_original")
        return True if original is None else own_training(original)

    @training.setter
    def training(self, mode: bool) -> None:
        original = self.__dict__.get("_aimsec_original")
        if original is not None:  # nn.Module.__init__ sets it before the original is known
            with own_mode(original):
                original.training = mode

    @property  # type: ignore[override]
    def _version(self) -> int:
        return self._aimsec_original._version

    def train(self, mode: bool = True) -> GuardedModule:
        original = self._aimsec_original
        with own_mode(original):
            original.train(mode)  # honours an original that overrides train()
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
            value = getattr(original, name)
            if isinstance(value, types.MethodType) and value.__self__ is original:
                return _guarded_method(self, value)  # a custom predict(): screened
            return value

    def __setattr__(self, name: str, value: Any) -> None:
        original = self.__dict__.get("_aimsec_original")
        if (original is not None and name not in self.__dict__
                and not hasattr(nn.Module, name)  # nn.Module's own (_compiled_call_impl)
                and not isinstance(getattr(type(self), name, None), property)
                and (name in original.__dict__ or isinstance(value, torch.Tensor))):
            # A plain attribute of the model (a number, a tensor; pruning's masked weight):
            # one copy of it, the one its forward reads. A parameter or module given in its
            # place is registered by the model's own __setattr__, into the dicts both share.
            # A property (a parametrized weight's) takes the value itself: right_inverse.
            setattr(original, name, value)
            return
        super().__setattr__(name, value)
        if name == "parametrizations" and original is not None:
            _reads_parametrizations(original, type(self))

    def __delattr__(self, name: str) -> None:
        original = self.__dict__.get("_aimsec_original")
        if (original is not None and name not in self.__dict__ and name in original.__dict__
                and name not in self._parameters and name not in self._buffers
                and name not in self._modules):
            delattr(original, name)  # the plain attribute __setattr__ put there
            return
        super().__delattr__(name)

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
        """A guarded deep copy of the model, writing to the same sinks, in the modes the
        user set (not eval mode, where another thread's detector pass has switched it)."""
        modes = own_modes(self._aimsec_original)
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for name, value in self.__dict__.items():
            if name != "_aimsec_guard":  # the shared dicts stay shared through the memo
                object.__setattr__(new, name, copy.deepcopy(value, memo))
        set_modes(new._aimsec_original, modes)
        object.__setattr__(new, "_aimsec_guard",
                           self._aimsec_guard.copied_for(new._aimsec_original))
        return new

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_aimsec_modes"] = own_modes(self._aimsec_original)  # as in __deepcopy__
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        modes = state.pop("_aimsec_modes", None)
        super().__setstate__(state)
        # a copy.copy shares the live model: one a pass has switched reads as its own
        # modes already, and is never switched back under the pass
        if modes is not None and modes != own_modes(self._aimsec_original):
            set_modes(self._aimsec_original, modes)

    # Pickling (``pickle``, ``torch.save``) carries the guard whole: ``Guard.__getstate__``
    # takes its settings, calibration, policy and sinks (re-opened in the loading process).


def _reads_parametrizations(original: nn.Module, guarded_type: type) -> None:
    """Let ``original`` read the tensors parametrized on the guarded module.

    ``torch.nn.utils.parametrize`` (``spectral_norm``, ``orthogonal``, ``weight_norm``
    applied to the guarded module) moves a parameter of the shared dicts into
    ``parametrizations`` (a submodule both share) and computes it in a property of the
    guarded module's class; the original's forward, reading ``self.weight``, would find
    nothing. Its class gains the guarded class's parametrized properties as a fallback."""
    base = type(original)
    if getattr(base, "_aimsec_parametrized_by", None) is guarded_type:
        return

    def __getattr__(self: nn.Module, name: str) -> Any:
        attribute = vars(guarded_type).get(name)
        if isinstance(attribute, property):  # the parametrized tensor, computed
            return attribute.__get__(self, type(self))
        return base.__getattr__(self, name)

    original.__class__ = type(base.__name__, (base,), {
        "__getattr__": __getattr__, "_aimsec_parametrized_by": guarded_type,
        "__module__": base.__module__, "__qualname__": base.__qualname__})


def _active_tracer() -> str | None:
    """The tracer recording this call, if any: it would keep the model, not the guard."""
    if torch._C._is_tracing():  # torch.jit.is_tracing() without its scripting check
        return "torch.jit.trace"
    if torch.fx._symbolic_trace._is_fx_tracing_flag:
        return "torch.fx.symbolic_trace"
    return None


@torch.compiler.disable
def _outside_graph(module: GuardedModule, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
    """The guarded call run eagerly, as a graph break in a compiled caller: screening reads
    real values and every call is screened, whatever the compiled graph caches."""
    return module._aimsec_screened(args, kwargs)


# -- methods of the original, called through the guarded module ---------------------------

#: True while a guarded call runs: the model's own submodule calls are the screened call.
_SCREENING: contextvars.ContextVar[bool] = contextvars.ContextVar("aimsec_torch_screening",
                                                                  default=False)


def _screened_call(guard: Guard, inputs: dict[str, Any], predict: Callable[[Any], Any],
                   forward: Callable[[Any, Any], Any] | None = None) -> Any:
    token = _SCREENING.set(True)
    try:
        return guard.call(inputs, predict, forward, rebuilt=True)
    finally:
        _SCREENING.reset(token)


@dataclass
class _Watch:
    guarded: GuardedModule
    method: str
    parts: set[int] | None = field(default=None)  # ids of the model's modules, when needed


_WATCH: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar("aimsec_torch_watch",
                                                                      default=None)


def _guarded_method(guarded: GuardedModule, method: types.MethodType) -> Callable[..., Any]:
    """``method`` of the original, run bound to ``guarded`` (so ``self(x)`` and
    ``self.forward(x)`` are screened; a function using ``super()`` stays bound to the
    original) under a watch that refuses direct calls of the model's modules."""
    func = method.__func__
    uses_super = "__class__" in getattr(func, "__code__", types.SimpleNamespace(
        co_freevars=())).co_freevars
    bound = method if uses_super else types.MethodType(func, guarded)

    @functools.wraps(func)
    def screened(*args: Any, **kwargs: Any) -> Any:
        token = _WATCH.set(_Watch(guarded, func.__name__))
        try:
            with _REFUSING.active():
                return bound(*args, **kwargs)
        finally:
            _WATCH.reset(token)

    return screened


def _refuse_bypass(module: nn.Module, args: Any) -> None:
    watch = _WATCH.get()
    if watch is None or _SCREENING.get() or module is watch.guarded:
        return
    if watch.parts is None:
        watch.parts = {id(m) for m in watch.guarded._aimsec_original.modules()}
    if id(module) in watch.parts:
        raise UnguardedCallError(
            f"{watch.method}() calls {type(module).__name__} of the guarded model directly, "
            f"which would run it without screening its input; call self(x) in the method, "
            f"or aimsec_core.unguard(guarded).{watch.method}(...) to run it unguarded")


#: While a method of a guarded model runs: refuses direct calls of its modules.
_REFUSING = SharedHook(lambda: [nn.modules.module.register_module_forward_pre_hook(
    _refuse_bypass)])
