"""A call's arguments bound to the model's signature (torch's ``forward``, Keras'
``call``), and every array in them named by parameter: ``x``, ``mask``, ``inputs[0]``,
``batch['ids']``, ``args[1]``. Pure Python: the adapters pass their framework's array
types, and the core names a call's inputs one way for every framework.

Arguments that are not inputs (a batch size, a verbosity, callbacks, run options) are
checked before the model runs against declarative :class:`Rule` s: a bad one is a blocking
``format`` finding (:func:`argument_findings`), so the call is refused with
``InputFormatError`` and one ``rejected`` audit line, never the framework's own error.
"""

from __future__ import annotations

import copy
import inspect
import reprlib
from collections.abc import Callable, Mapping
from numbers import Integral
from typing import Any, NamedTuple

import numpy as np

from .errors import EmptyInputError, InputFormatError
from .verdict import Finding

#: Tensors screened in one call at most, and how deep containers are searched for them: a
#: call beyond either is refused (a list of a million tiny tensors costs a million checks).
MAX_TENSORS = 256
MAX_DEPTH = 4
#: Container items looked at per call, at most: a nested list of a million numbers is
#: refused after this many, never walked (numbers in lists are not a torch input anyway).
MAX_ITEMS = 4096
_KEY_CHARS = 40  # a container key shown in an input name, at most (keys may be hostile)

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class ArgumentsError(ValueError):
    """The arguments do not fit ``forward``, or hold too many tensors to screen."""


class Located(NamedTuple):
    """Where an argument sits in the call: ``position`` in ``args`` or ``keyword``."""

    position: int | None
    keyword: str | None

    def replaced(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                 value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.position is not None:
            return args[:self.position] + (value,) + args[self.position + 1:], kwargs
        return args, {**kwargs, self.keyword: value}  # type: ignore[dict-item]


class Binder:
    """``forward``'s signature, read once: binds calls and names their tensors."""

    def __init__(self, forward: Callable[..., Any]) -> None:
        try:
            self.signature: inspect.Signature | None = inspect.signature(forward)
        except (TypeError, ValueError):  # a builtin or C forward: no signature to bind to
            self.signature = None
        params = list(self.signature.parameters.values()) if self.signature else []
        self._params = params
        leading = []
        for p in params:
            if p.kind not in _POSITIONAL:
                break
            leading.append(p)
        self._leading = tuple(p.name for p in leading)
        self._at = tuple(Located(i, None) for i in range(len(leading)))
        self._required = sum(p.default is inspect.Parameter.empty for p in leading)
        self._fast = len(leading) == len(params) or (
            len(params) > len(leading)
            and all(p.default is not inspect.Parameter.empty or p.kind in (
                inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
                for p in params[len(leading):]))
        #: the parameters every call must pass, in order (positional ones, then
        #: keyword-only ones: ``(positional, keyword)``)
        self.required: tuple[tuple[str, ...], tuple[str, ...]] = (
            tuple(p.name for p in leading if p.default is inspect.Parameter.empty),
            tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY
                  and p.default is inspect.Parameter.empty))
        first = params[0] if params else None
        if self.signature is None:  # positional arguments are named as bind names them
            self.first_name = "args[0]"
        elif first is None or first.kind is inspect.Parameter.VAR_KEYWORD:
            self.first_name = "input"
        elif first.kind is inspect.Parameter.VAR_POSITIONAL:
            self.first_name = f"{first.name}[0]"
        else:
            self.first_name = first.name

    def describe(self) -> str:
        return f"forward{self.signature}" if self.signature else "forward(...)"

    def bind(self, args: tuple[Any, ...],
             kwargs: Mapping[str, Any]) -> list[tuple[str, Any, Located]]:
        """``(name, value, where)`` of every argument passed, in signature order.

        Raises :class:`ArgumentsError` when the arguments do not fit the signature."""
        if not kwargs and self._fast and self._required <= len(args) <= len(self._leading):
            return list(zip(self._leading, args, self._at))  # the common call: positional
        if self.signature is None:
            return ([(f"args[{i}]", v, Located(i, None)) for i, v in enumerate(args)]
                    + [(k, v, Located(None, k)) for k, v in kwargs.items()])
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ArgumentsError(f"the arguments do not fit {self.describe()}: {exc}") from None
        out: list[tuple[str, Any, Located]] = []
        for index, param in enumerate(self._params):  # index: the parameter's position
            if param.name not in bound.arguments:
                continue
            value = bound.arguments[param.name]
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                out.extend((f"{param.name}[{i}]", v, Located(index + i, None))
                           for i, v in enumerate(value))
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                out.extend((k, v, Located(None, k)) for k, v in value.items())
            elif param.kind in _POSITIONAL and param.name not in kwargs:
                out.append((param.name, value, Located(index, None)))
            else:
                out.append((param.name, value, Located(None, param.name)))
        return out


def tensors_in(bound: list[tuple[str, Any, Located]], tensor_type: type
               ) -> tuple[dict[str, Any], Located | None]:
    """Every tensor in the bound arguments by name, in call order, and where the first
    one (the primary input) sits when it is an argument itself (``None`` when it sits in
    a container).

    Where no argument holds a tensor, the first argument that is not ``None`` is returned
    as the one input, so the guard refuses it in the framework's terms.
    Raises :class:`ArgumentsError` past :data:`MAX_TENSORS` or :data:`MAX_DEPTH`."""
    found: dict[str, Any] = {}
    primary: Located | None = None
    budget = [MAX_ITEMS]
    for name, value, where in bound:
        if isinstance(value, tensor_type):
            if not found:
                primary = where
            _add(found, name, value)
        elif isinstance(value, (list, tuple, Mapping)):
            _search(found, name, value, tensor_type, 1, budget)
    if not found:
        fallback = next(((n, v, w) for n, v, w in bound if v is not None), None)
        if fallback is not None:
            return {fallback[0]: fallback[1]}, fallback[2]
    return found, primary


def substituted(bound: list[tuple[str, Any, Located]], given: Mapping[str, Any],
                replacements: Mapping[str, Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``args`` and ``kwargs`` (bound as ``bound``) with the tensor :func:`tensors_in`
    named ``name`` (``given[name]``) replaced by ``replacements[name]`` wherever it sits:
    an argument, or an item of a list, tuple or dict in one (rebuilt around it: a copy,
    never the caller's container changed). A container that cannot be rebuilt (a mapping
    without item assignment) keeps its tensors as they are."""
    by_id = {id(given[name]): new for name, new in replacements.items()}
    for _, value, where in bound:
        new = _substitute(value, by_id, 0)
        if new is not value:
            args, kwargs = where.replaced(args, kwargs, new)
    return args, kwargs


def replaced_in(value: Any, given: Mapping[str, Any], replacements: Mapping[str, Any]) -> Any:
    """``value`` (an argument, a call's ``args`` tuple or ``kwargs`` dict, or a list, tuple
    or dict holding inputs) with each object ``given[name]`` replaced by
    ``replacements[name]`` wherever it sits, as :func:`substituted` replaces them: the
    containers around it rebuilt, never the caller's changed; ``value`` itself where
    nothing in it is replaced."""
    if not replacements:
        return value
    return _substitute(value, {id(given[name]): new for name, new in replacements.items()}, 0)


def _substitute(value: Any, by_id: Mapping[int, Any], depth: int) -> Any:
    new = by_id.get(id(value))
    if new is not None:
        return new
    if depth >= MAX_DEPTH or not isinstance(value, (list, tuple, Mapping)) or isinstance(
            value, (str, bytes)):
        return value
    items = value.items() if isinstance(value, Mapping) else enumerate(value)
    changed = [(key, new) for key, item in items
               if (new := _substitute(item, by_id, depth + 1)) is not item]
    if not changed:
        return value
    if isinstance(value, tuple):
        items_now = list(value)
        for key, new in changed:
            items_now[key] = new
        make = getattr(type(value), "_make", None)  # a named tuple
        return (make(items_now) if make is not None else
                tuple(items_now) if type(value) is tuple else value)
    try:
        rebuilt = copy.copy(value)
        for key, new in changed:
            rebuilt[key] = new
    except Exception:  # noqa: BLE001 - a container that cannot be copied or assigned to
        return value
    return rebuilt


def _search(found: dict[str, Any], name: str, value: Any, tensor_type: type,
            depth: int, budget: list[int]) -> None:
    if depth > MAX_DEPTH:
        raise ArgumentsError(f"argument {name!r} nests containers more than {MAX_DEPTH} "
                             "deep; expected tensors at most that deep")
    budget[0] -= len(value)
    if budget[0] < 0:
        raise ArgumentsError(f"the call's arguments hold more than {MAX_ITEMS} items in "
                             f"lists, tuples or dicts (at {name!r}); expected tensors, or "
                             f"at most {MAX_ITEMS} items around them")
    items = (((f"[{_key(k)}]", v) for k, v in value.items()) if isinstance(value, Mapping)
             else ((f"[{i}]", v) for i, v in enumerate(value)))
    for suffix, item in items:
        if isinstance(item, tensor_type):
            _add(found, name + suffix, item)
        elif isinstance(item, (list, tuple, Mapping)) and not isinstance(item, (str, bytes)):
            _search(found, name + suffix, item, tensor_type, depth + 1, budget)


def first_leaf(values: Any, wanted: Callable[[Any], bool]) -> Any:
    """The first leaf of ``values`` (searched inside lists, tuples and dicts, as far as
    :data:`MAX_DEPTH` and :data:`MAX_ITEMS` allow) for which ``wanted`` is true, or
    ``None`` where there is none; a leaf for which ``wanted`` raises is returned too. Past
    the bounds the search stops with ``None``: a list holding itself costs no more than a
    list nested :data:`MAX_DEPTH` deep."""
    budget = [MAX_ITEMS]

    def walk(value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            return None
        if not isinstance(value, (list, tuple, Mapping)):
            try:
                return value if wanted(value) else None
            except Exception:  # a leaf that cannot be told apart (hostile) is reported
                return value
        budget[0] -= len(value)
        if budget[0] < 0:
            return None
        for item in (value.values() if isinstance(value, Mapping) else value):
            found = walk(item, depth + 1)
            if found is not None:
                return found
        return None

    return walk(values, 0)


def first_non_tensor(values: Any, is_tensor: Callable[[Any], bool]) -> Any:
    """The first leaf of ``values`` (:func:`first_leaf`) that is neither ``None`` nor a
    tensor by the framework's ``is_tensor`` (which the adapter gives: a ragged or sparse
    tensor is one), or ``None`` where every leaf is one: what a framework that takes only
    tensors by position (Keras) refuses. Past the bounds nothing is returned:
    :func:`tensors_in` refuses such a call."""
    return first_leaf(values, lambda v: v is not None and not is_tensor(v))


def _add(found: dict[str, Any], name: str, tensor: Any) -> None:
    if len(found) >= MAX_TENSORS:
        raise ArgumentsError(f"the call holds more than {MAX_TENSORS} tensors; expected at "
                             f"most {MAX_TENSORS} tensor arguments")
    if name in found:  # two keys shown alike (cut to _KEY_CHARS): each screened, numbered
        name = f"{name}#{len(found)}"
    found[name] = tensor


def _key(key: Any) -> str:
    text = repr(key) if isinstance(key, (str, int)) else f"<{type(key).__name__}>"
    return text if len(text) <= _KEY_CHARS else text[:_KEY_CHARS - 3] + "..."


# --- arguments that are not inputs: a batch size, a verbosity, callbacks ------------------

class Rule(NamedTuple):
    """What one argument that is not an input must be: ``expected`` says it in words (an
    error's "expected ..."), ``accepts`` tests a value. Build one with the helpers below."""

    expected: str
    accepts: Callable[[Any], bool]


def positive_int(*, optional: bool = True, at_most: int | None = None) -> Rule:
    """A positive integer (a numpy integer too; not a bool) no larger than ``at_most``
    where given (a framework storing it in 64 bits), or ``None`` if ``optional``."""
    return Rule("a positive integer" + (f" up to {at_most}" if at_most is not None else "")
                + (" or None" if optional else ""),
                lambda v: (v is None and optional) or (
                    isinstance(v, Integral) and not isinstance(v, (bool, np.bool_)) and v > 0
                    and (at_most is None or v <= at_most)))


def boolean(*, optional: bool = False) -> Rule:
    """``True`` or ``False`` (numpy's too), or ``None`` if ``optional``."""
    return Rule("True or False" + (" or None" if optional else ""),
                lambda v: isinstance(v, (bool, np.bool_)) or (v is None and optional))


def flag(*, optional: bool = True) -> Rule:
    """A flag as frameworks read one, by its truth value: ``True`` or ``False`` (numpy's
    too), ``0`` or ``1`` (numpy integers too), or ``None`` (read as false) if
    ``optional``."""
    return Rule("True, False, 0, 1" + (" or None" if optional else ""),
                lambda v: (v is None and optional) or isinstance(v, (bool, np.bool_)) or (
                    isinstance(v, Integral) and v in (0, 1)))


def instance_of(kinds: type | tuple[type, ...], what: str, *,
                optional: bool = True) -> Rule:
    """An instance of ``kinds`` (``what`` names them), or ``None`` if ``optional``."""
    return Rule(what + (" or None" if optional else ""),
                lambda v: (v is None and optional) or isinstance(v, kinds))


def sequence_of(kinds: type | tuple[type, ...], what: str, *, also: tuple[type, ...] = (),
                optional: bool = True, nested: bool = False) -> Rule:
    """A list or tuple of ``kinds`` (``what`` names the whole), an instance of ``also``, or
    ``None`` if ``optional``. With ``nested``, as frameworks that flatten the argument read
    it (Keras' callbacks): lists and tuples inside it (up to :data:`MAX_DEPTH` deep) hold
    ``kinds`` too, and a single instance of ``kinds`` is a sequence of one. At most
    :data:`MAX_ITEMS` items are looked at; a longer sequence is refused."""
    def holds_only(v: Any, depth: int, budget: list[int]) -> bool:
        budget[0] -= len(v)
        if budget[0] < 0 or depth > MAX_DEPTH:
            return False
        return all(isinstance(item, kinds) or (
            nested and isinstance(item, (list, tuple)) and holds_only(item, depth + 1, budget))
            for item in v)

    def accepts(v: Any) -> bool:
        if (v is None and optional) or isinstance(v, also) or (nested and isinstance(v, kinds)):
            return True
        return isinstance(v, (list, tuple)) and holds_only(v, 1, [MAX_ITEMS])
    return Rule(what + (" or None" if optional else ""), accepts)


def callable_value() -> Rule:
    """Something to call (a function, a bound method, an object with ``__call__``)."""
    return Rule("a callable", callable)


_SHOWN = reprlib.Repr()  # a refused value as an error shows it: bounded
_SHOWN.maxlevel, _SHOWN.maxstring, _SHOWN.maxother = 2, 40, 40
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 4


_SHOWN_CHARS = 100  # a refused value as shown, at most


def shown_value(value: Any) -> str:
    """A refused argument's repr, at most :data:`_SHOWN_CHARS` characters and bounded in
    the items of containers shown (a list of a million items costs no more to show than
    one of four); a value whose ``__repr__`` raises shows as its type's name in angle
    brackets."""
    try:
        text = _SHOWN.repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 3] + "..."


def argument_findings(method: str, values: Mapping[str, Any],
                      rules: Mapping[str, Rule]) -> tuple[Finding, ...]:
    """One blocking ``format`` finding per argument in ``values`` (name -> value, as the
    call passed them) that breaks its rule in ``rules``; names without a rule are not
    checked, and a value the rule cannot even test (its ``__eq__`` or ``__bool__`` raises) breaks
    it. ``method`` names the call in the message (``predict``). The reason names the
    argument, what it must be and the type received; the value itself is the finding's
    detail (errors show it; audit lines only where raw inputs are logged)."""
    out = []
    for name, value in values.items():
        rule = rules.get(name)
        if rule is None or _accepted(rule, value):
            continue
        kind = type(value).__name__
        out.append(Finding(
            "format", f"argument {name!r} of {method}: expected {rule.expected}; received "
            f"{kind}", expected=rule.expected, received=kind, blocking=True,
            detail=f"value {shown_value(value)}"))
    return tuple(out)


def _accepted(rule: Rule, value: Any) -> bool:
    """Whether ``rule`` accepts ``value``; a value whose comparisons, truth or ``__index__``
    raise while the rule tests it is none of the values a rule names: refused, so the
    call still gets its typed error and its one audit line."""
    try:
        return bool(rule.accepts(value))
    except Exception:
        return False


def unfit_finding(method: str, problem: str) -> Finding:
    """The blocking ``format`` finding for a call whose arguments do not fit ``method``'s
    signature (too many positional arguments, an unknown keyword); ``problem`` says how."""
    return Finding("format", f"the arguments do not fit {method}: {problem}",
                   expected=f"the arguments {method} takes", received=problem, blocking=True)


def arguments_error(findings: tuple[Finding, ...]) -> InputFormatError:
    """The typed error for a call refused for its arguments alone, before any input was
    read (a data pipeline's call, or arguments that do not fit): for ``Guard.refuse``,
    which records it and names the model. Named after the first finding."""
    first = findings[0]
    more = len(findings) - 1
    return InputFormatError(
        first.message + (f" (+{more} more finding{'s' if more > 1 else ''})" if more else ""),
        check="format", expected=first.expected, received=first.received)


def no_batches_error(source: str) -> EmptyInputError:
    """The typed error for data given as a pipeline (``source`` names its kind: a
    generator, a ``tf.data.Dataset``) that yields no batch: there is nothing to screen nor
    predict, as an empty array is refused. For ``Guard.refuse``, which records it and
    names the model."""
    return EmptyInputError(
        f"the {source} given as data yields no batch; expected at least one batch "
        "of samples", check="empty", expected="at least one batch", received="no batch")


#: What one batch of a data pipeline may hold: the inputs, optionally the labels and the
#: sample weights.
BATCH_LAYOUT = "(x,), (x, y) or (x, y, sample_weight)"


def batch_layout_error(source: str, number: int, received: str) -> InputFormatError:
    """The typed error for batch ``number`` (from 1) of a data pipeline (``source`` names
    its kind) that is not laid out as a batch (:data:`BATCH_LAYOUT`; ``received`` says what
    it was): the model cannot read it. For ``Guard.refuse``, which records it and names
    the model."""
    return InputFormatError(
        f"batch {number} of the {source} given as data is {received}; expected a tuple "
        f"{BATCH_LAYOUT}", check="format", expected=BATCH_LAYOUT, received=received)
