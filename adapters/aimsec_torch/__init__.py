"""PyTorch adapter: a guarded model is still an ``nn.Module``.

    >>> import torch
    >>> from torch import nn
    >>> import aimsec_core
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    >>> guarded = aimsec_core.guard(model, name="digits-torch", sinks=[],
    ...                             constraints={"min_value": 0, "max_value": 1})
    >>> isinstance(guarded, nn.Module)
    True
    >>> x = torch.rand(4, 1, 8, 8)
    >>> with torch.no_grad():
    ...     bool(torch.equal(guarded(x), model(x)))
    True
    >>> guarded(x.double())  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    aimsec_core.errors.InputFormatError: digits-torch: input 'input' has dtype float64; ...

``forward`` is guarded: the call's arguments are bound to the original's ``forward``
signature and every tensor in them is screened under its parameter's name (``x``, ``mask``,
``inputs[0]``), then the original module runs on the original arguments with each plain
tensor in them replaced by the copy the guard checked (taken at the check, on the tensor's
device: another thread writing into the caller's tensor meanwhile changes nothing the
model reads; joined to the caller's autograd graph where the tensor requires grad, so its
gradient is the plain call's; what the model writes into the copy in place, a cache or
state it updates, is copied back into the caller's tensor after the call), so its hooks
fire once and a valid call returns exactly what the plain model returns. With calibrated
detectors, the gradient detector reuses that one forward pass on the first (primary) input;
on every input where ``forward`` requires several (``forward(self, image, meta)``: see
``TorchAdapter.input_names``), each input's copy requiring grad.
The guarded module shares the original's parameters, buffers and submodules (same objects,
same ``state_dict`` keys), so optimisers, checkpoints, ``.to(device)``, ``.double()``,
``.train()``/``.eval()``, ``torch.no_grad()`` and ``torch.inference_mode()`` work unchanged.
Compiled, transformed, traced calls and custom methods: see ``_module``.

The primary input's dtype is declared from the model's first floating-point parameter and
checked on every call (so ``.double()`` after guarding is seen); its shape is not declared,
so pass ``constraints={"sample_shape": (1, 28, 28)}`` to have wrong shapes refused by the
guard. Tensors are screened where they live: only per-sample summaries of a CUDA input
leave the device, and its bytes are copied to the host once for the SHA-256 content hash.

This module never imports torch at import time: installed adapters are loaded whenever
any model is guarded, and guarding a scikit-learn model must not load torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from aimsec_core.adapter import Adapter, Capabilities
from aimsec_core.signature import InputSpec

from ._features import own_passes
from ._modes import evaluating as _evaluating

if TYPE_CHECKING:
    import numpy as np
    import torch

    from aimsec_core.guard import Guard

    from aimsec_core.call_arguments import Binder

__all__ = ["TorchAdapter", "tensor_elements", "tensor_handed", "tensor_input",
           "tensor_snapshot"]


_NO_FLOAT: Any = (None, None)


def _first_float_parameter(model: Any) -> Any:
    """``(module, parameter name)`` of the model's first floating-point parameter."""
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None and param.dtype.is_floating_point:
                return module, name
    return _NO_FLOAT


class TorchAdapter(Adapter):
    framework = "torch"
    requires = ("torch",)
    input_types = "a torch.Tensor"
    capabilities = Capabilities(gradients=True, probabilities=True, device_arrays=True,
                                signature=True, host_sequences=False, several_inputs=True)
    static_signature = False  # model.double() after guarding changes the declared dtype

    @classmethod
    def accepts(cls, model: Any) -> bool:
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(model, torch.nn.Module):
            return False
        kind = type(model)
        # Keras 3 layers are nn.Modules on its torch backend: the Keras adapter guards those.
        return not hasattr(kind, "__aimsec_guard__") and not any(
            c.__module__.partition(".")[0] == "keras" for c in kind.__mro__)

    def signature(self) -> list[InputSpec] | None:
        """The forward's first parameter, with the dtype of the first floating-point
        parameter, strictly (torch does not cast); no dtype where the model has no
        floating-point parameter, and where an embedding's comes first the input is
        integer indices into its table (``index_rows``: the core refuses others, which
        would fail inside torch, on CUDA with a device-side assert).

        Read on every call (``.double()`` may come after guarding), so the parameter is
        found once and only its current dtype is looked up afterwards."""
        name = self.binder().first_name
        found = self.__dict__.get("_first_float")
        if found is None or (found is not _NO_FLOAT and (
                found[1] not in found[0]._parameters or found[0]._parameters[found[1]] is None)):
            found = self._first_float = _first_float_parameter(self.model)
        dtype = rows = None
        if found is not _NO_FLOAT:
            module, param = found
            torch = sys.modules["torch"]
            if isinstance(module, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
                rows = module.num_embeddings  # the input is indices into its table
            else:
                dtype = module._parameters[param].dtype
                if not dtype.is_floating_point:
                    self._first_float = None  # converted to integers: look again next call
                    dtype = None
        specs = self.__dict__.setdefault("_specs", {})
        spec = specs.get((name, dtype, rows))
        if spec is None:
            spec = specs[(name, dtype, rows)] = [InputSpec(
                name, None if dtype is None else _dtype_name(dtype), None,
                strict_dtype=dtype is not None, index_rows=rows)]
        return spec

    def input_names(self) -> list[str] | None:
        """Every parameter ``forward`` requires, in order (positional ones, then
        keyword-only ones), where it requires several: ``forward(self, image, meta)``
        takes its batch as both tensors, passed positionally or by keyword. ``None`` (the
        declared first parameter alone) where it requires one; optional arguments (a
        ``mask=None``) are validated as passed, never read by the detectors."""
        positional, keyword = self.binder().required
        return [*positional, *keyword] if len(positional) + len(keyword) > 1 else None

    def undeclared_inputs(self) -> str | None:
        """A traced module (``torch.jit.trace``) has a ``forward`` without a Python
        signature: the guard cannot tell that it takes several tensors, and reads its first
        argument as its one input. Says so, with the parameters its compiled schema lists
        where it has them; ``None`` for other modules, and for a traced one whose schema
        lists a single parameter."""
        torch = sys.modules["torch"]
        if self.binder().signature is not None or not isinstance(
                self.model, torch.jit.TracedModule):
            return None
        try:
            names = [a.name for a in self.model.forward.schema.arguments][1:]  # not self
        except Exception:  # noqa: BLE001 - no schema to read: the parameters go unnamed
            names = []
        if len(names) == 1:
            return None  # one input indeed
        takes = f" (its compiled forward takes {names})" if names else ""
        return (f"this traced module (torch.jit.trace) declares no signature for forward"
                f"{takes}, so the guard cannot tell that it takes several inputs and reads "
                "the first argument as its only one; guard the module itself, not its trace "
                "(aimsec_core.guard(model), the plain nn.Module), or a scripted one "
                "(aimsec_core.guard(torch.jit.script(model)), whose forward keeps its "
                "parameters), to calibrate on several inputs")

    def binder(self) -> Binder:
        """The model's ``forward`` signature, read once per forward function."""
        target = self.model
        dynamo = sys.modules.get("torch._dynamo.eval_frame")
        if dynamo is not None and isinstance(target, dynamo.OptimizedModule):
            target = target._orig_mod  # torch.compile(model): the compiled model's forward
        forward = target.forward
        key = getattr(forward, "__func__", forward)
        cached = self.__dict__.get("_binder")
        if cached is None or cached[0] is not key:
            from aimsec_core.call_arguments import Binder

            cached = self._binder = (key, Binder(forward))
        return cached[1]

    def declared_elements(self, value: Any) -> int | None:
        return tensor_elements(value)

    def native(self, value: Any) -> Any | None:
        return tensor_input(value)

    def snapshot(self, value: Any, array: Any) -> Any | None:
        """A clone of the checked values of a plain tensor, on its device, in its memory
        format (see ``Adapter.snapshot``); the guarded module hands it to the model, joined
        to the caller's tensor's graph where that one requires grad. ``None`` for tensor
        subclasses and tensors under ``torch.func`` transforms, read as given."""
        return tensor_snapshot(value, array)

    def host_bytes(self, array: Any) -> Any:
        return _helpers().exact_bytes(array)

    def parameters_digest(self) -> str | None:
        """SHA-256 over the ``state_dict`` (parameters and buffers): each key, dtype, shape
        and exact bytes (read once from the device)."""
        import hashlib

        digest = hashlib.sha256()
        for key, tensor in self.model.state_dict().items():
            digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(_helpers().exact_bytes(tensor.detach()))
        return digest.hexdigest()[:32]

    def from_host(self, array: Any) -> Any:
        """A numpy array (or anything ``np.asarray`` takes) as a tensor on the model's
        device, dtype unchanged; a tensor as is."""
        import numpy as np
        import torch

        if isinstance(array, torch.Tensor):
            return array
        try:
            host = np.asarray(array)
            if host.dtype.kind not in "biufc":
                return array  # not numbers: validation says what was expected
            if (not host.dtype.isnative or any(s < 0 for s in host.strides)
                    or not host.flags.writeable):
                host = np.ascontiguousarray(host, dtype=host.dtype.newbyteorder("="))
            tensor = torch.from_numpy(host)
        except (TypeError, ValueError, RuntimeError):
            return array
        device = next((t.device for t in self.model.parameters()), None) or next(
            (t.device for t in self.model.buffers()), torch.device("cpu"))
        return tensor.to(device)

    def wrap(self, guard: Guard) -> Any:
        from ._module import GuardedModule

        return GuardedModule(guard)

    # -- detector support: forward/backward passes outside the guard ----------------------

    def scores(self, x: Any) -> np.ndarray:
        """Softmax class probabilities for ``x`` (numpy), computed in eval mode.

        The model is switched to eval mode for the pass and each module's own mode is
        restored after it; guarded calls running the model in train mode wait for the
        pass (``_modes``). Do not run it while the unguarded model trains in another
        thread."""
        import torch

        x = self._as_tensor(x)
        with _evaluating(self.model), torch.no_grad(), own_passes():
            logits = _class_logits(self.run_on(x), self)
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    def run_on(self, x: Any) -> Any:
        """The model's output for ``x``: a tensor, or a list of one per input of
        :meth:`input_names` (each passed as ``forward`` takes it: positionally, then by
        keyword)."""
        if not isinstance(x, list):
            return self.model(x)
        positional, keyword = self.binder().required
        return self.model(*x[:len(positional)], **dict(zip(keyword, x[len(positional):])))

    def input_gradient(self, x: Any, labels: Any) -> Any:
        """d(sum of cross-entropy against ``labels``)/dx, a tensor on x's device; for a
        list of one tensor per input (:meth:`input_names`), a list of each one's gradient
        (zeros for an integer input, which has none).

        Summed, not averaged, so each sample's gradient is that of its own loss. Runs in
        eval mode; parameters' ``.grad``, ``requires_grad`` and every module's mode are left
        exactly as found, and it works under ``torch.no_grad()`` and ``inference_mode``.
        Raises ``TypeError`` for a single input that is not floating-point.
        """
        import torch
        import torch.nn.functional as F

        from ._checkpoint import own_saved_tensors

        x = self._as_tensor(x)
        several = isinstance(x, list)
        if not several:
            _require_float(x)
        with _evaluating(self.model), torch.inference_mode(False), torch.enable_grad(), \
                own_passes(), own_saved_tensors():
            leaves = [_leaf(t) for t in (x if several else [x])]
            logits = _class_logits(self.run_on(leaves if several else leaves[0]), self).float()
            target = torch.as_tensor(labels, device=logits.device)
            if target.is_inference():
                target = target.clone()  # inference tensors cannot be saved for backward
            if not target.is_floating_point():
                target = target.long()  # class indices; float targets are probabilities
            loss = F.cross_entropy(logits, target, reduction="sum")
            grads = _gradients(loss, leaves)
        return grads if several else grads[0]

    def forward_with_gradient(self, call: Callable[[Any], Any],
                              x: Any) -> tuple[Any, np.ndarray, Any]:
        """Run ``call`` once with autograd on ``x``: ``(output, softmax scores, gradient of
        the cross-entropy at the predicted label w.r.t. x)``. ``x`` may be a list of one
        tensor per input (:meth:`input_names`): ``call`` then takes the list, and the
        gradient is a list of each one's (zeros for an integer input).

        ``output`` is what ``call(x)`` returns in the caller's mode: detached when grad mode
        is off or nothing in the call requires grad, still attached to the parameters' (and
        ``x``'s) graph when the caller trains. The model's mode is not changed: this is the
        real call, not a second forward.
        """
        import torch

        several = isinstance(x, list)
        given = x if several else [x]
        if not several:
            _require_float(x)
        grad_mode = torch.is_grad_enabled()  # False under no_grad and inference_mode
        inference = torch.is_inference_mode_enabled()
        with torch.inference_mode(False), torch.enable_grad(), own_passes(always=False):
            # keep the caller's graph where a tensor requires grad: the output must reach
            # its history
            targets = [t if grad_mode and t.requires_grad else _leaf(t) for t in given]
            output = call(targets if several else targets[0])
            logits = _class_logits(output, self)
            probabilities = torch.softmax(logits.detach().float(), dim=-1)
            # d(sum of cross-entropy at the predicted labels)/d(logits) = softmax - one-hot:
            # seeding the backward with it skips building the loss's own graph.
            predicted = probabilities.argmax(dim=-1, keepdim=True)
            seed = probabilities.scatter_add(1, predicted, torch.full(
                predicted.shape, -1.0, dtype=probabilities.dtype, device=predicted.device))
            # The plain call's output is attached when x requires grad or the graph reaches
            # any other leaf (a parameter): keep the graph for the caller's backward then.
            keep_graph = grad_mode and (
                any(t is g for t, g in zip(targets, given))
                or _reaches_other_leaves(_output_tensors(output), targets))
            shared = not (keep_graph and self._donates_buffers)
            if shared:
                try:
                    grads = _gradients(logits, targets, grad_outputs=seed.to(logits.dtype),
                                       retain_graph=keep_graph)
                except RuntimeError as exc:
                    if not (keep_graph and "donated buffer" in str(exc)):
                        raise
                    self._donates_buffers, shared = True, False  # found out once
        if not shared:
            # a compiled backward that frees what it saved (torch.compile's donated
            # buffers) cannot run and keep the caller's graph: the gradient from an
            # eval-mode pass of its own (one more forward), the call's graph untouched
            detached = [t.detach() for t in targets]
            grads = self.input_gradient(detached if several else detached[0],
                                        predicted.squeeze(-1))
            grads = grads if several else [grads]
        if not keep_graph:
            output = (output.detach() if isinstance(output, torch.Tensor)
                      else _output_detached(output))
        if inference:  # the caller's inference_mode gets inference tensors, as plainly
            with torch.inference_mode():
                output = _output_detached(output, clone=True)
        return output, probabilities.cpu().numpy(), grads if several else grads[0]

    #: Whether the model's backward refuses to keep its graph (``torch.compile``'s donated
    #: buffers), found on the first call that needed it kept.
    _donates_buffers = False

    @cached_property
    def sigmoid_output(self) -> bool:
        """Whether the model's single output column is a probability (it ends in
        ``nn.Sigmoid``), found once: walking every module on each call would cost a large
        model's binary classifier on its hot path."""
        return _ends_in_sigmoid(self.model)

    def _as_tensor(self, x: Any) -> Any:
        """A tensor as is; anything else (numpy) onto the model's device and float dtype;
        a list (one per input) item by item."""
        import torch

        if isinstance(x, list):  # one per input
            return [self._as_tensor(part) for part in x]
        if isinstance(x, torch.Tensor):
            return x
        tensor = torch.as_tensor(x)
        param = next((p for p in self.model.parameters() if p.dtype.is_floating_point), None)
        if param is None:
            return tensor
        dtype = param.dtype if tensor.is_floating_point() else None
        return tensor.to(device=param.device, dtype=dtype)

    # -- internal features for the detectors (see _features.py) ---------------------------
    from ._features import features, forward_with_features  # noqa: E402
    capabilities = Capabilities(**{**capabilities.__dict__, "features": True})


def tensor_elements(value: Any) -> int | None:
    """``Adapter.declared_elements`` for a torch tensor (any adapter reading torch
    tensors): its elements where reading it copies it (a view whose sign or conjugate bit
    is set, a batch under ``vmap`` whose levels are merged: an expanded view of one value
    may claim 10^12 elements), else ``None``."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, torch.Tensor):
        return None
    if value.is_neg() or value.is_conj():
        return value.numel()
    if torch._C._functorch.is_functorch_wrapped_tensor(value):
        return _helpers().wrapped_elements(value)
    return None


def tensor_input(value: Any) -> Any | None:
    """``Adapter.native`` for a torch tensor (any adapter reading torch tensors): the
    values the model reads, as a plain tensor on their device; ``None`` for anything but
    a tensor. Raises ``TypeError`` for tensors whose values cannot be read in place:
    nested, sparse, quantized, meta (and those ``_tensors.readable`` names)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, torch.Tensor):
        return None
    if value.is_nested:  # its layout may read torch.strided: name it by what it is
        raise TypeError("a nested tensor is not supported; expected a dense (strided) "
                        "tensor. Pad it first (x.to_padded_tensor(0.0))")
    if value.layout is not torch.strided:
        raise TypeError(f"a {value.layout} tensor is not supported; expected a dense "
                        "(strided) tensor. Convert it first (x.to_dense())")
    if value.is_quantized:
        raise TypeError("a quantized tensor is not supported; expected a float or "
                        "integer tensor. Convert it first (x.dequantize())")
    if value.device.type == "meta":
        raise TypeError("a meta tensor holds no values; expected a tensor with data")
    return _helpers().readable(value)  # the values the model reads, on their device


def tensor_snapshot(value: Any, array: Any) -> Any | None:
    """``Adapter.snapshot`` for a torch tensor (any adapter reading torch tensors): a
    clone of ``array`` (:func:`tensor_input` of ``value``), on its device, in its memory
    format, broadcast axes broadcast again; ``None`` for tensor subclasses and tensors
    under ``torch.func`` transforms (their wrappers are what the model reads)."""
    return _helpers().snapshot(value, array)


def tensor_handed(value: Any, checked: Any) -> Any:
    """The copy ``checked`` (:func:`tensor_snapshot`) as a model is handed it in place of
    the caller's tensor ``value``: booleans again where ``value`` is a boolean mask (the
    core screened it as bytes), and joined to ``value``'s autograd graph where grad mode
    is on and ``value`` requires grad, so gradients reach ``value`` as from the plain
    call."""
    import torch

    from ._snapshots import Joined

    if value.dtype is torch.bool and checked.dtype is not torch.bool:
        checked = checked.view(torch.bool)
    if torch.is_grad_enabled() and value.requires_grad:
        checked = Joined.apply(value, checked)
    return checked


def _helpers() -> Any:
    """The tensor helpers (they import torch), loaded on first use."""
    return sys.modules.get(f"{__name__}._tensors") or importlib.import_module("._tensors",
                                                                              __name__)


def _dtype_name(dtype: Any) -> str:
    return str(dtype).rsplit(".", 1)[-1]  # torch.float32 -> "float32", as the core names it


def _require_float(x: Any) -> None:
    if not x.is_floating_point():
        raise TypeError(f"input gradients need a floating-point input; received dtype "
                        f"{_dtype_name(x.dtype)}. Detectors using gradients do not apply to "
                        "models taking integer inputs")


def _leaf(x: Any) -> Any:
    """A leaf of ``x``'s values for a gradient of its own (requiring grad where it is
    floating-point; an inference tensor cloned, as those cannot be saved for backward)."""
    leaf = x.clone() if x.is_inference() else x.detach()
    return leaf.requires_grad_(True) if leaf.is_floating_point() else leaf


def _gradients(output: Any, leaves: list[Any], **kwargs: Any) -> list[Any]:
    """d``output``/d each of ``leaves``, detached (``kwargs``: ``torch.autograd.grad``'s):
    zeros where a leaf takes no gradient (integers) or the output does not depend on it,
    float32 for integers."""
    import torch

    wanted = [t for t in leaves if t.requires_grad]
    found = iter(torch.autograd.grad(output, wanted, allow_unused=True, **kwargs)
                 if wanted else ())
    grads = []
    for t in leaves:
        grad = next(found) if t.requires_grad else None
        grads.append(grad.detach() if grad is not None else torch.zeros(
            t.shape, device=t.device,
            dtype=t.dtype if t.is_floating_point() else torch.float32))
    return grads


def _output_tensors(output: Any) -> list[Any]:
    """The tensors in a model's output (a tensor, or a tuple, dict... holding some)."""
    import torch
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]


def _output_detached(output: Any, clone: bool = False) -> Any:
    """A model's output (a tensor, or a tuple, dict... of tensors) with every tensor
    detached (with ``clone``, cloned: under ``inference_mode``, into inference tensors)."""
    import torch
    from torch.utils._pytree import tree_map_only

    return tree_map_only(torch.Tensor, (lambda t: t.clone()) if clone else
                         (lambda t: t.detach()), output)


def _reaches_other_leaves(outputs: list[Any], leaves: list[Any]) -> bool:
    """Whether autograd can reach a leaf other than ``leaves`` from ``outputs``: stops at
    the first one (a parameter, usually a step or two from the output)."""
    ours = {id(leaf) for leaf in leaves}
    stack = [t.grad_fn for t in outputs if t.requires_grad]
    seen = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf
        if variable is not None and id(variable) not in ours:
            return True
        stack.extend(child for child, _ in node.next_functions)
    return any(t.requires_grad and t.grad_fn is None and id(t) not in ours for t in outputs)


def _class_logits(output: Any, adapter: Any = None) -> torch.Tensor:
    """The (N, C) class logits in a model's output: a tensor; a mapping's (a dict, a
    ``ModelOutput``) ``"logits"`` entry, or its only tensor (several and no ``"logits"``:
    ``NotImplementedError``, calibration's ``CalibrationError``); a namedtuple's or other
    object's ``logits``; a plain tuple's or list's first item.

    A single column is a binary classifier's: a logit ``z`` becomes ``[0, z]``
    (``softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]``); where the ``adapter``'s model
    ends in ``nn.Sigmoid`` (its last registered module) the column is the probability ``p`` of
    class 1, whose log-odds ``log p - log(1 - p)`` (``p`` kept within float32's
    resolution of 0 and 1) stands in for ``z``.
    """
    import torch

    if isinstance(output, Mapping):
        if "logits" in output:
            output = output["logits"]
        else:
            tensors = [k for k, v in output.items() if isinstance(v, torch.Tensor)]
            if len(tensors) != 1:  # the first of several may be a hidden state
                raise NotImplementedError(
                    f"cannot tell which output holds class scores among the keys "
                    f"{[str(k) for k in output][:10]} of the {type(output).__name__} the "
                    "model returned; expected a 'logits' key or a single tensor (return the "
                    "class scores under 'logits')")
            output = output[tensors[0]]
    elif isinstance(output, tuple) and "logits" in getattr(type(output), "_fields", ()):
        output = output.logits  # a namedtuple: its field, wherever it sits
    elif isinstance(output, (tuple, list)):
        output = output[0]
    elif not isinstance(output, torch.Tensor) and hasattr(output, "logits"):
        output = output.logits
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the model returned a {type(output).__name__}; expected class logits "
                        "as a tensor of shape (N, C)")
    if output.ndim == 1:
        output = output[:, None]
    if output.ndim != 2:
        raise ValueError(f"the model returned shape {tuple(output.shape)}; expected class "
                         "logits of shape (N, C)")
    if output.shape[1] == 1:
        if adapter is not None and adapter.sigmoid_output:
            tiny = torch.finfo(torch.float32).eps
            p = output.float().clamp(tiny, 1 - tiny)
            output = torch.log(p) - torch.log1p(-p)
        output = torch.cat([torch.zeros_like(output), output], dim=1)
    return output


def _ends_in_sigmoid(model: Any) -> bool:
    """Whether the last module ``model`` registers is an ``nn.Sigmoid``: its single
    output column is then a probability, not a logit."""
    import torch

    last = None
    for last in model.modules():
        pass
    return isinstance(last, torch.nn.Sigmoid)
