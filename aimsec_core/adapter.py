"""The adapter contract: what the core needs from a framework plugin, and nothing more.

An adapter translates between one framework and the core; it never decides. It tells the
core what the model declares (``signature``), turns the framework's call arguments into
arrays the core can screen (``native``), gives detectors class scores and input gradients
outside the guard, and builds the framework-shaped guarded object (``wrap``).

Plugins register under the entry-point group ``aimsec.adapters``::

    [project.entry-points."aimsec.adapters"]
    myframework = "aimsec_myframework:MyFrameworkAdapter"

``accepts`` must not import the framework: it looks the type up through ``sys.modules``, so
guarding a scikit-learn model never loads torch.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from .arrays import broadcast_index

if TYPE_CHECKING:
    from .guard import Guard
    from .signature import InputSpec


@dataclass(frozen=True)
class Capabilities:
    """What an adapter can do; detectors and checks ask for these instead of types."""

    gradients: bool = False  #: ``input_gradient`` and ``forward_with_gradient`` work
    probabilities: bool = False  #: ``scores`` returns class probabilities or logits
    device_arrays: bool = False  #: inputs may live on an accelerator; keep them there
    signature: bool = False  #: the model declares its inputs' dtype and shape
    host_sequences: bool = False  #: nested Python lists are valid model input
    features: bool = False  #: ``features`` gives the model's internal activations
    #: For a model declaring several inputs, ``scores``, ``input_gradient``,
    #: ``forward_with_gradient`` and ``features`` take its batch as a list of arrays, one
    #: per declared input in declared order, and give the gradient as such a list: the
    #: detectors then read the inputs joined (``detection/joined.py``)
    several_inputs: bool = False


class Adapter(ABC):
    """Base class of every framework plugin (one instance per guarded model)."""

    #: Short framework name used in audit lines and reports.
    framework: ClassVar[str] = "unknown"
    #: Top-level modules the framework needs (checked without importing them, to say in
    #: an error which frameworks are missing); empty: nothing beyond the adapter.
    requires: ClassVar[tuple[str, ...]] = ()
    #: What the framework's call accepts, for error messages ("torch.Tensor").
    input_types: ClassVar[str] = "an array"
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: False where the declared input can change after guarding (torch's ``.double()``):
    #: the guard then asks ``signature()`` on every call, so keep it cheap.
    static_signature: ClassVar[bool] = True
    #: False where the declared inputs' names are generated afresh for each copy of the
    #: same model (Keras names a ``Sequential`` input ``keras_tensor_7`` on one load and
    #: ``input_layer`` on the next): a calibration's model fingerprint then leaves them out.
    stable_input_names: ClassVar[bool] = True
    #: True where ``signature()`` names every input a call can carry (a scikit-learn
    #: estimator's ``X``, an ONNX session's feed): per-input constraints for any other
    #: name are then refused when the guard is built, since they would never apply.
    closed_signature: ClassVar[bool] = False
    #: Whether a binary classifier's single output column is the probability of class 1
    #: (a sigmoid's output) rather than a logit. Adapters that can read the model say so
    #: (torch: ``nn.Sigmoid`` last; Keras and ONNX: a sigmoid producing the output);
    #: calibration sets it on the instance where the model's answers show a sigmoid the
    #: adapter cannot see (:func:`read_single_column`).
    sigmoid_output: bool = False

    def __init__(self, model: Any) -> None:
        self.model = model

    @classmethod
    @abstractmethod
    def accepts(cls, model: Any) -> bool:
        """True when this adapter handles ``model``; must import nothing."""

    def signature(self) -> list[InputSpec] | None:
        """Declared inputs, in call order, or ``None`` where the model declares nothing."""
        return None

    def input_names(self) -> list[str] | None:
        """The names of the inputs every call of the model carries, in call order, where
        they are others than :meth:`signature`'s (a torch ``forward`` taking several
        required tensors, whose signature declares the first alone: its other arguments
        are validated as passed, never declared); ``None`` (the default): the declared
        inputs. A model of several is calibrated on all of them (where
        ``capabilities.several_inputs``), and its calls screened on them joined."""
        return None

    def undeclared_inputs(self) -> str | None:
        """Where the model's call declares no inputs the guard can read, so that it reads
        the model as one of a single input although it may take several: a sentence
        saying so and what to do (added to the error for calibration data given as one
        array per input). ``None`` (the default) where the inputs are declared."""
        return None

    @abstractmethod
    def native(self, value: Any) -> Any | None:
        """``value`` as an array the core can screen (array API), or ``None`` if ``value``
        is not an array type of this framework. Never copies device arrays to the host."""

    def declared_elements(self, value: Any) -> int | None:
        """Elements ``value`` declares by its shape, read without converting it, where
        :meth:`native` may allocate more than ``value`` holds to make its array (a sparse
        matrix converted, a sparse tensor made dense, a view's values resolved); at most
        what ``max_size`` counts of that array. The core refuses a value declaring more
        than ``max_size`` before :meth:`native` runs (in monitor mode too, as a nested list
        declaring more), so a tiny value claiming 10^12 elements costs nothing. ``None``
        (the default): :meth:`native` allocates nothing beyond ``value`` itself. Never
        called for numpy arrays."""
        return None

    @abstractmethod
    def wrap(self, guard: Guard) -> Any:
        """The framework-shaped guarded object; it must expose ``__aimsec_guard__``."""

    def scores(self, x: Any) -> Any:
        """Class scores for a batch, computed outside the guard (no audit, no limits).

        Here and in :meth:`features` and :meth:`input_gradient`, a model whose
        :meth:`signature` fixes the batch length is handed batches of exactly that length
        (the core pads and cuts them: ``aimsec_core.batches``)."""
        raise NotImplementedError(f"{type(self).__name__} gives no class scores")

    def input_gradient(self, x: Any, labels: Any) -> Any:
        """Gradient of the loss against ``labels`` with respect to ``x``, outside the guard.

        Only where ``capabilities.gradients``; must leave the model exactly as found."""
        raise NotImplementedError(f"{type(self).__name__} computes no gradients")

    def forward_with_gradient(self, call: Any, x: Any) -> tuple[Any, Any, Any]:
        """Run the real call once with autograd on ``x``: return ``(output, scores,
        gradient of the loss at the predicted label)``. Only where ``capabilities.gradients``."""
        raise NotImplementedError(f"{type(self).__name__} computes no gradients")

    def features(self, x: Any) -> list[np.ndarray]:
        """The model's internal activations for a batch, outside the guard: one float
        array (N, width) per hooked layer, earliest first, the class logits last; spatial
        maps averaged per channel (Lee et al. 2018). Only where ``capabilities.features``;
        must leave the model exactly as found."""
        raise NotImplementedError(f"{type(self).__name__} exposes no internal features")

    def forward_with_features(self, call: Any, x: Any) -> tuple[Any, Any, list[np.ndarray]]:
        """Run the real call once, capturing :meth:`features` on the way: ``(output, class
        scores, features)``. Adapters that cannot share the pass leave this unimplemented
        and the guard asks :meth:`features` separately."""
        raise NotImplementedError(f"{type(self).__name__} cannot share the feature pass")

    def parameters_digest(self) -> str | None:
        """A digest of the model's learned parameters (weights, fitted arrays, graph), or
        ``None`` where the framework exposes none; calibrations record it so a file made
        for one model is not silently used on another."""
        return None

    def snapshot(self, value: Any, array: Any) -> Any | None:
        """A copy of ``array`` (what :meth:`native` made of ``value``), of the same
        dtype, shape and device, that this adapter hands the model in place of ``value``
        (``Guard.call(..., rebuilt=True)``); ``None`` where the model must be handed
        ``value`` itself (a DataFrame whose column names the model reads, an array the
        copy would not stand for). Validation checks the copy, so the model reads exactly
        the values checked, whatever another thread writes into ``value`` meanwhile.
        Called only for inputs validation found within ``max_size``. The default:
        ``None`` (an adapter whose model reads the caller's objects)."""
        return None

    def host_bytes(self, array: Any) -> bytes | memoryview | None:
        """The exact bytes of ``array`` (its values in C order) on the host, for the content
        hash of arrays numpy cannot read in place (on an accelerator, or of a dtype numpy
        lacks); ``None`` to let the core convert it."""
        return None

    def from_host(self, array: Any) -> Any:
        """A host array-like (numpy) as this framework's input, for offline calibration:
        on the model's device, dtype unchanged (a wrong dtype stays a clear error). Returns
        ``array`` itself where there is nothing to convert or it cannot be converted."""
        return array


class HostArrays(Adapter):
    """Reads plain numpy arrays and nested lists and wraps nothing: for validating data
    with no model behind it (the original tool's ``AIModelProtector``)."""

    framework = "arrays"
    input_types = "an array or nested list of numbers"
    capabilities = Capabilities(host_sequences=True)

    @classmethod
    def accepts(cls, model: Any) -> bool:
        return False

    def native(self, value: Any) -> Any | None:
        return value if isinstance(value, np.ndarray) else None

    def wrap(self, guard: Guard) -> Any:
        raise NotImplementedError("HostArrays screens data; there is no model to wrap")


def host_snapshot(value: Any, array: Any) -> np.ndarray | None:
    """:meth:`Adapter.snapshot` for a framework that takes numpy arrays as they are: a
    copy of ``array`` in its memory layout where it is ``value`` itself (a plain
    ``np.ndarray``) or the plain array a numpy subclass ``value`` is read as (an
    ``np.memmap``, whose file any process may write; a masked array; a matrix), else
    ``None``. A broadcast axis (stride 0, ``np.broadcast_to``) is copied once and
    broadcast again (read-only, as ``np.broadcast_to`` gives it), never materialized at
    its full size."""
    if type(array) is np.ndarray and (array is value or isinstance(value, np.ndarray)):
        compact = broadcast_index(array.shape, array.strides)
        if compact is not None:
            return np.broadcast_to(array[compact].copy(order="K"), array.shape)
        return array.copy(order="K")
    return None


def read_single_column(adapter: Adapter, probability: bool) -> None:
    """Make ``adapter`` read a binary classifier's single output column as a probability
    (``probability=True``), or as its own reading of the model says (``False``)."""
    if probability:
        adapter.sigmoid_output = True
    else:  # forget the instance's setting: the class's reading (computed afresh) stands
        vars(adapter).pop("sigmoid_output", None)


class LaterAnswer:
    """What an adapter's ``predict`` returns when the model answers later, through a
    callback (onnxruntime's ``run_async``): the adapter calls :meth:`answer` with the
    model's outputs when they come, and the guard learns from them then (the extraction
    check needs the predicted classes). Thread-safe; an answer that comes before the guard
    listens is kept for it, and each listener hears one answer at most."""

    __slots__ = ("_lock", "_listener", "_outputs", "_answered")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listener: Callable[[Any], None] | None = None
        self._outputs: Any = None
        self._answered = False

    def listen(self, listener: Callable[[Any], None]) -> None:
        """Call ``listener(outputs)`` when the answer comes (now, if it came already)."""
        with self._lock:
            if not self._answered:
                self._listener = listener
                return
            outputs, self._outputs = self._outputs, None
        listener(outputs)

    def answer(self, outputs: Any) -> None:
        """The model's outputs (called by the adapter, from any thread); later calls are
        ignored."""
        with self._lock:
            if self._answered:
                return
            self._answered = True
            listener, self._listener = self._listener, None
            if listener is None:
                self._outputs = outputs
                return
        listener(outputs)
