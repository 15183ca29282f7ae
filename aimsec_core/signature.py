"""Declared inputs and the user's constraints on them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import Any

import numpy as np

from .errors import ConfigurationError
from .indices import IndexBound

#: Elements per call refused by default: a request this large is a denial-of-service
#: attempt more often than a real batch. Raise it with ``max_size`` where it is not.
DEFAULT_MAX_SIZE = 100_000_000


@dataclass(frozen=True)
class InputSpec:
    """One declared model input.

    ``shape`` includes the batch axis. Each dimension is a length (``int``), ``None`` (any
    length) or a symbol (``str``, ONNX's ``dim_param``): any length, but every dimension
    sharing that symbol, in this input or another, must have the same one. ``None`` for the
    whole shape declares nothing (not even the rank).

    ``dtype`` is the dtype the model reads the input in. ``strict_dtype`` means the
    framework refuses any other dtype (ONNX, torch). Otherwise the framework casts any real
    numeric input (and bools) to ``dtype`` itself (Keras), and validation checks the values
    as that cast leaves them: a value the cast turns infinite or wraps around is a finding.
    ``"str"`` declares text: numpy ``str`` arrays or object arrays holding only ``str``.

    What else the framework takes for this input, beyond real numbers in a dense array:
    ``accepts_bool`` (booleans, cast to numbers), ``accepts_strings`` (strings, objects and
    categories: format checks apply, numeric content checks only to numeric values),
    ``accepts_sparse`` (sparse matrices, checked on their stored values) and ``allow_nan``
    (NaN marks a missing value; infinities stay refused).

    ``index_rows``: the model looks the input's values up as rows of a table of this many
    rows (torch's ``nn.Embedding`` as its first layer, Keras' reading the input: token
    ids). Each value must then be an index from 0 to ``index_rows - 1`` (a ``min_value``
    or ``max_value`` constraint narrows that range; only ``None`` in the input's own
    overrides lifts a bound) and, where no ``dtype`` is declared (the framework reads the
    input as given), int64 or int32: any other raises inside the framework (on CUDA, a
    device-side assert that leaves the process's GPU context unusable, for every later
    call). A float input where no ``dtype`` is declared is not indices (no framework
    takes a float index): the table is read from another input. ``negative_indices``: the
    framework also reads ``-index_rows`` to ``-1``, counting from the table's end (ONNX's
    ``Gather``), so those pass too. ``index_bounds``: further bounds on indices the
    ``index_rows`` cannot state (some of the input's values only, or a table fed with the
    call): see :class:`~aimsec_core.indices.IndexBound`.

    ``numeric_columns``: for a table taken column by column (``accepts_strings``: a
    scikit-learn ``ColumnTransformer`` that scales some columns and encodes others), the
    labels (as ``str``) of the columns the model reads as numbers; a column among them
    holding strings, dates or other objects that are not numbers is refused, as the part
    reading it would fail on it. ``string_columns``: likewise, the labels of the columns
    an encoder fitted on strings reads (scikit-learn's ``OneHotEncoder``,
    ``OrdinalEncoder``, ``TargetEncoder``): a column among them read as numbers,
    booleans, complex numbers, dates or durations is refused, as the encoder fails
    comparing those with the strings it was fitted on (strings, categories of strings and
    other objects, missing values among them, pass). ``imputed_columns``: likewise, the
    labels of the columns an imputer that replaces NaN reads first (scikit-learn's
    ``SimpleImputer``): missing values (``None``, NaN, NaT) pass there whatever
    ``allow_nan`` says (a ``Constraints.allow_nan`` of ``False`` still refuses them), and
    pandas' ``NA`` held as an object is refused, as the imputer fails comparing it.
    """

    name: str
    dtype: str | None = None
    shape: tuple[int | str | None, ...] | None = None
    strict_dtype: bool = False
    accepts_bool: bool = False
    accepts_strings: bool = False
    accepts_sparse: bool = False
    allow_nan: bool = False
    index_rows: int | None = None
    negative_indices: bool = False
    index_bounds: tuple[IndexBound, ...] = ()
    numeric_columns: frozenset[str] = frozenset()
    string_columns: frozenset[str] = frozenset()
    imputed_columns: frozenset[str] = frozenset()

    def describe(self) -> str:
        dims = "?" if self.shape is None else "(" + ", ".join(
            "N" if d is None else str(d) for d in self.shape) + ")"
        return f"{self.name}: {self.dtype or 'numeric'} {dims}"

    @cached_property
    def symbols(self) -> dict[str, list[int]]:
        """Symbol -> the axes that carry it (``{"N": [0]}`` for ``("N", 64)``)."""
        found: dict[str, list[int]] = {}
        for axis, dim in enumerate(self.shape or ()):
            if isinstance(dim, str):
                found.setdefault(dim, []).append(axis)
        return found


@dataclass(frozen=True)
class Constraints:
    """What a valid call looks like, beyond what the model declares.

    ``sample_shape`` (without the batch axis) and ``dtype`` give an explicit spec for
    models that declare none; they override a declared one. ``allow_nan`` lets NaN
    through as a missing value (``True``) or refuses it (``False``) whatever the model
    declares; ``None`` follows the model. ``allow_inf=True`` lets infinities through as
    values the model reads (an additive attention mask's ``-inf``, as torch's
    ``generate_square_subsequent_mask`` makes); ``min_value`` and ``max_value`` still
    apply to them. Set it for that input alone (``inputs``, below).

    Every constraint applies to every input of a call. ``inputs`` overrides them per input
    name, field by field: ``{"min_value": 0, "max_value": 1, "inputs": {"ids": {"max_value":
    30521}, "mask": {"sample_shape": None}}}`` (``None`` lifts a constraint for that input).
    ``max_size`` counts the whole call, so it is not set per input.
    """

    min_value: float | None = None
    max_value: float | None = None
    max_size: int | None = DEFAULT_MAX_SIZE
    max_gradient: float | None = None
    min_sparsity: float | None = None
    sample_shape: tuple[int | None, ...] | None = None
    dtype: str | None = None
    allow_nan: bool | None = None
    allow_inf: bool = False
    #: input name -> {constraint: value} overriding the ones above for that input
    inputs: Mapping[str, Mapping[str, Any]] | None = field(default=None, hash=False)
    _per_input: dict[str, Constraints] = field(init=False, repr=False, compare=False,
                                               hash=False, default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("min_value", "max_value", "max_gradient", "min_sparsity"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, (bool, str, bytes))
                                      or not _is_real(value)):
                raise ConfigurationError(
                    f"constraint {name!r} must be a finite number; received {value!r:.80}")
        if self.max_size is not None and (
                isinstance(self.max_size, bool) or not isinstance(self.max_size, int)
                or self.max_size < 1):
            raise ConfigurationError(
                f"constraint 'max_size' must be a positive integer; received {self.max_size!r}")
        if (self.min_value is not None and self.max_value is not None
                and self.min_value > self.max_value):
            raise ConfigurationError(
                f"constraint 'min_value' ({self.min_value}) exceeds 'max_value' "
                f"({self.max_value}); expected min_value <= max_value")
        if self.max_gradient is not None and self.max_gradient < 0:
            raise ConfigurationError(
                f"constraint 'max_gradient' must be >= 0; received {self.max_gradient}")
        if self.min_sparsity is not None and not 0 <= self.min_sparsity <= 1:
            raise ConfigurationError(
                f"constraint 'min_sparsity' is a share of non-zero values in [0, 1]; "
                f"received {self.min_sparsity}")
        if self.allow_nan is not None and not isinstance(self.allow_nan, bool):
            raise ConfigurationError(
                f"constraint 'allow_nan' must be True, False or None; received {self.allow_nan!r}")
        if not isinstance(self.allow_inf, bool):
            raise ConfigurationError(
                f"constraint 'allow_inf' must be True or False; received {self.allow_inf!r:.80}")
        if self.sample_shape is not None:
            object.__setattr__(self, "sample_shape", _sample_shape(self.sample_shape))
        if self.dtype is not None:
            object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        if self.inputs is not None:
            self._resolve_inputs()

    def _resolve_inputs(self) -> None:
        """Check ``inputs`` and build each named input's constraints once."""
        if not isinstance(self.inputs, Mapping):
            raise ConfigurationError(
                f"constraint 'inputs' must map input names to dicts of constraints; "
                f"received {type(self.inputs).__name__}")
        per_input = {f.name for f in fields(self) if f.init} - {"inputs", "max_size"}
        normalised: dict[str, dict[str, Any]] = {}
        for name, overrides in self.inputs.items():
            if not isinstance(name, str) or not isinstance(overrides, Mapping):
                raise ConfigurationError(
                    f"constraint 'inputs' must map input names (str) to dicts of "
                    f"constraints; received {name!r}: {type(overrides).__name__}")
            unknown = sorted(set(overrides) - per_input)
            if unknown:
                raise ConfigurationError(
                    f"unknown per-input constraint(s) {unknown} for input {name!r}; "
                    f"expected some of {sorted(per_input)}")
            normalised[name] = dict(overrides)
            try:
                self._per_input[name] = replace(self, inputs=None, **overrides)
            except ConfigurationError as exc:
                raise ConfigurationError(f"input {name!r}: {exc}") from None
        object.__setattr__(self, "inputs", normalised)

    def check_input_names(self, declared: list[InputSpec] | None, model: str) -> None:
        """Raise :class:`ConfigurationError` when ``inputs`` names an input that is not
        among ``declared`` (every input the model takes; ``None``: not known, no check).
        A misspelt name would otherwise leave that input checked by the general
        constraints only, silently."""
        if not self.inputs or declared is None:
            return
        names = [spec.name for spec in declared]
        unknown = sorted(set(self.inputs) - set(names))
        if unknown:
            raise ConfigurationError(
                f"{model}: constraint 'inputs' names {unknown!r:.200}, which the model does "
                f"not take; expected names among its inputs {names!r:.200}")

    def check_declared_shapes(self, declared: list[InputSpec] | None, model: str) -> None:
        """Raise :class:`ConfigurationError` when an explicit ``sample_shape`` contradicts
        the shape the model declares for that input (another rank, or another length
        where the model's is fixed: ``(5,)`` for an estimator fitted on 4 features). It
        wins over the declared one, so every call would otherwise be refused, the error
        naming the wrong shape as the model's."""
        for spec in declared or ():
            explicit = self.explicit_spec(spec.name)
            if explicit is None or explicit.shape is None or spec.shape is None:
                continue
            fits = len(explicit.shape) == len(spec.shape) and all(
                want is None or have is None or want == have
                for want, have in zip(explicit.shape[1:], spec.shape[1:]))
            if not fits:
                raise ConfigurationError(
                    f"{model}: constraint 'sample_shape' {tuple(explicit.shape[1:])} "
                    f"contradicts input {spec.name!r:.80}, which the model declares with "
                    f"samples of shape {tuple(spec.shape[1:])}; expected a shape that fits "
                    "it (None where any length goes), or no sample_shape")

    def for_input(self, name: str) -> Constraints:
        """The constraints input ``name`` is checked against (its overrides applied)."""
        return self._per_input.get(name, self) if self._per_input else self

    @classmethod
    def coerce(cls, value: Constraints | Mapping[str, Any] | None) -> Constraints:
        """Accept a ``Constraints``, a plain dict (the original tool's form) or ``None``."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"constraints must be a Constraints or a dict; received {type(value).__name__}")
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigurationError(
                f"unknown constraint(s) {unknown}; expected some of {sorted(known)}")
        return cls(**dict(value))

    def __repr__(self) -> str:
        set_ = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                         if f.init and getattr(self, f.name) != f.default)
        return f"Constraints({set_})"

    def with_(self, **changes: Any) -> Constraints:
        return replace(self, **changes)

    def explicit_spec(self, name: str) -> InputSpec | None:
        own = self.for_input(name)
        if own.sample_shape is None and own.dtype is None:
            return None
        shape = None if own.sample_shape is None else (None, *own.sample_shape)
        return InputSpec(name, own.dtype, shape, strict_dtype=own.dtype is not None)


def _is_real(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float's range
        return False


def _sample_shape(value: Any) -> tuple[int | None, ...]:
    """``value`` as a tuple of positive lengths or ``None`` (any length); raises
    :class:`ConfigurationError` for anything else (a string, negative or fractional
    lengths), which would otherwise refuse every call as the caller's wrong shape."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not (
            hasattr(value, "__iter__") and hasattr(value, "__len__")):
        raise ConfigurationError(f"constraint 'sample_shape' must be a tuple of lengths "
                                 f"(ints >= 1, or None for any); received {value!r:.80}")
    dims = tuple(value)
    for dim in dims:
        if dim is not None and (isinstance(dim, bool) or not hasattr(dim, "__index__")
                                or int(dim) < 1):
            raise ConfigurationError(
                f"constraint 'sample_shape' must be a tuple of lengths (ints >= 1, or None "
                f"for any); received {value!r:.80}")
    return tuple(None if dim is None else int(dim) for dim in dims)


#: Dtypes a framework has and numpy lacks, by the name a tensor of them reports.
_FRAMEWORK_DTYPES = frozenset({"bfloat16", "complex32", "float8_e4m3fn", "float8_e4m3fnuz",
                               "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"})


def _dtype_name(value: Any) -> str:
    """The name a ``dtype`` constraint is compared under (``"float32"`` for
    ``np.float32``, ``"f4"``, ``torch.float32`` or ``"float32"``); ``"str"`` declares text.
    Raises :class:`ConfigurationError` for a name no framework has."""
    if isinstance(value, str) and value in _FRAMEWORK_DTYPES | {"str"}:
        return value
    text = str(value)
    if text.startswith("torch."):  # a torch dtype (the core imports no framework)
        name = text.rsplit(".", 1)[-1]
        if name in _FRAMEWORK_DTYPES:
            return name
        value = name
    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in "biufcU":
        raise ConfigurationError(
            f"constraint 'dtype' must name a numeric, bool or text dtype ('float32', "
            f"np.float32, 'int64', 'bool', 'str'); received {value!r:.80}")
    return "str" if dtype.kind == "U" else dtype.name


def merge_specs(declared: Sequence[InputSpec] | None, constraints: Constraints,
                names: Sequence[str]) -> dict[str, InputSpec | None]:
    """The spec each input is checked against: an explicit one wins over a declared one."""
    by_name = {spec.name: spec for spec in declared or ()}
    merged: dict[str, InputSpec | None] = {}
    for name in names:
        spec = by_name.get(name)
        explicit = constraints.explicit_spec(name)
        if explicit is not None and spec is not None:
            # a dtype the user declares that no index has: the input is not indices
            indices = explicit.dtype is None or explicit.dtype in ("int64", "int32")
            spec = replace(spec, dtype=explicit.dtype or spec.dtype,
                           shape=explicit.shape or spec.shape,
                           strict_dtype=explicit.strict_dtype or spec.strict_dtype,
                           index_rows=spec.index_rows if indices else None,
                           negative_indices=spec.negative_indices and indices,
                           index_bounds=spec.index_bounds if indices else ())
        merged[name] = explicit if spec is None else spec
    return merged
