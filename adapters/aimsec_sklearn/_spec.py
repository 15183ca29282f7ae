"""What a scikit-learn estimator takes as ``X``, read from its own tags.

scikit-learn describes an estimator's input in ``get_tags(est).input_tags`` (``string``,
``categorical``, ``two_d_array``, ``sparse``, ``allow_nan``); a composite (``Pipeline``,
``ColumnTransformer``, ``FeatureUnion``) does not pass every tag of its parts up, so the
parts are read too:

- strings: the estimators that first read ``X`` (a pipeline's first step, a column
  transformer's transformers) take strings or categories;
- NaN: every part allows it (a conservative rule: a step that keeps NaN would hand it to
  a later step that refuses it, and no tag says which steps impute);
- sparse: the estimator's own tag (``Pipeline`` already requires every step's);
- the cast: no tag says which dtype an estimator casts ``X`` to, so this is the one
  table kept here: a fitted scikit-learn decision tree (a ``sklearn.tree._tree.Tree``)
  reads ``X`` as float32 (its documentation: "Internally, it will be converted to
  ``dtype=np.float32``"). A model holding one (trees, forests, gradient boosting,
  isolation forests, a pipeline or ensemble containing one) declares float32, so float64
  values beyond float32's range are refused instead of becoming infinite inside it. Trees
  are scikit-learn 1.9's only narrowing cast (``HistGradientBoosting*`` reads float64).
- numbers by column: a fitted ``ColumnTransformer`` that reads ``X`` first sends each
  column to one transformer; the columns whose transformer first reads them with one of
  scikit-learn's scalers, polynomial or spline features, discretizers or decompositions
  (``NUMERIC_READERS``: these convert ``X`` to float, so a column of strings or dates
  fails inside them) are the spec's ``numeric_columns``. No tag says this (an imputer or
  a ``FunctionTransformer`` tags itself as taking no strings, and takes them), so the
  other columns are taken as they are. A ``FunctionTransformer`` whose function is
  scikit-learn's ``check_array`` with a float dtype (a ``HistGradientBoosting*`` model's
  own branch for its numeric columns, beside its categorical encoder) reads its columns
  as numbers too.
- strings by column: the columns an encoder fitted on strings reads first (its fitted
  ``categories_`` are strings) are the spec's ``string_columns`` (see ``string_columns``).
- imputers: a ``SimpleImputer`` fitted on objects (its ``statistics_`` are objects:
  ``most_frequent`` or ``constant`` on strings) takes strings, reading every column it is
  handed as objects (so the encoder after it is handed objects, and fails on none of
  them). One that computes a mean or median, and the other imputers, read numbers; a
  ``most_frequent`` or ``constant`` one keeps what it is handed, so the step after it
  says whether its columns must be numbers. The columns an imputer replacing NaN reads
  first are the spec's ``imputed_columns``: missing values pass there, and where every
  column of ``X`` is one, anywhere (``allow_nan``).
- pass-through: a ``FunctionTransformer`` without a function or validation hands ``X``
  on unchanged, so the step after it reads ``X`` first.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from aimsec_core.signature import InputSpec

#: The dtype scikit-learn's decision trees convert ``X`` to (``sklearn/tree/_classes.py``).
TREE_DTYPE = "float32"
#: Modules whose estimators convert every column they read to float (``validate_data``
#: with float dtypes): scalers, polynomial and spline features, discretizers, decompositions.
NUMERIC_READERS = ("sklearn.preprocessing._data", "sklearn.preprocessing._polynomial",
                   "sklearn.preprocessing._discretization", "sklearn.decomposition.")
_MAX_DEPTH = 4  # composites nest a few levels at most; bounds the walk on odd objects


def input_spec(model: Any) -> InputSpec:
    """The ``InputSpec`` of ``X`` for a (fitted or not) scikit-learn estimator."""
    readers = _first_readers(model, 0)
    first = [_tags(part) for part in readers]
    strings = any(t.string or t.categorical for t in first) or any(
        imputes_objects(part) for part in readers)
    documents = strings and not any(t.two_d_array for t in first)  # TfidfVectorizer
    n_features = getattr(model, "n_features_in_", None)
    if documents:
        shape: tuple[int | None, ...] | None = (None,)
    elif isinstance(n_features, (int, np.integer)):
        shape = (None, int(n_features))
    else:
        shape = (None, None) if all(t.two_d_array for t in first) else None
    own = _tags(model)
    imputed = imputed_columns(model)
    return InputSpec(
        "X", _tree_dtype(model, 0), shape, accepts_bool=True, accepts_strings=strings,
        accepts_sparse=bool(own.sparse),
        allow_nan=all(_tags(part).allow_nan for part in _leaves(model, 0)) or (
            bool(imputed) and imputed >= _all_labels(model)),
        numeric_columns=numeric_columns(model) if strings else frozenset(),
        string_columns=string_columns(model) if strings else frozenset(),
        imputed_columns=imputed)


def _column_transformer(model: Any) -> Any:
    """The fitted ``ColumnTransformer`` that reads ``X`` first (a pipeline's first step,
    however nested), or ``None``."""
    reader = model
    for _ in range(_MAX_DEPTH):
        steps = _steps(reader)
        if not steps:
            reader = _encoding_step(reader) or reader
            break
        reader = steps[0]
    fitted = getattr(reader, "transformers_", None)
    return reader if isinstance(fitted, list) and isinstance(
        getattr(reader, "_transformer_to_input_indices", None), dict) else None


def selects_by_name(model: Any) -> bool:
    """Whether the fitted ``ColumnTransformer`` reading ``X`` first picks a column by its
    label (``["age", "city"]``): it then reads only a DataFrame whose labels are all
    ``str`` (scikit-learn reads no other labels as names)."""
    reader = _column_transformer(model)
    if reader is None:
        return False
    for entry in reader.transformers_:
        if isinstance(entry, tuple) and len(entry) > 2 and entry[2] is not None:
            columns = entry[2]
            if isinstance(columns, str) or (isinstance(columns, (list, tuple)) and any(
                    isinstance(c, str) for c in columns)):
                return True
    return False


@dataclasses.dataclass(frozen=True)
class LabelSelection:
    """How a model picks the columns of a DataFrame by label: ``names``, the labels it
    was fitted with, in their order; ``needed``, those it reads (the others, dropped, may
    be missing)."""

    names: tuple[str, ...]
    needed: frozenset[str]


def label_selection(model: Any) -> LabelSelection | None:
    """How the model reads a DataFrame by label, or ``None`` where it reads one by
    position (in the order of its ``feature_names_in_``, which scikit-learn then checks).
    A fitted ``ColumnTransformer`` reading ``X`` first (the model, or a pipeline's first
    step, or a ``HistGradientBoosting*`` model's own encoding its categorical features,
    which the model hands ``X`` to unchecked) that was fitted on a DataFrame selects each
    column of a DataFrame it is handed by its label (``ColumnTransformer.transform``):
    the columns may come in any order, with others it ignores, and only those its
    dropped transformers read may be missing."""
    reader = _column_transformer(model)
    names = getattr(reader, "feature_names_in_", None) if reader is not None else None
    if names is None:
        return None
    named = getattr(reader, "named_transformers_", {})
    needed = {str(names[i]) for key, positions in reader._transformer_to_input_indices.items()
              if key in named and not (isinstance(named[key], str) and named[key] == "drop")
              for i in positions}
    return LabelSelection(tuple(str(n) for n in names), frozenset(needed))


def numeric_columns(model: Any) -> frozenset[str]:
    """The labels (as ``str``; positions where it was fitted without names) of the
    columns the fitted ``ColumnTransformer`` reading ``X`` first hands to a transformer
    that reads them as numbers (see ``NUMERIC_READERS``); empty where there is none."""
    numeric: set[str] = set()
    for labels, _, branch in _column_readers(model, whole=False):
        if _reading(branch, 1) == _NUMBERS:
            numeric.update(labels)
    return frozenset(numeric)


def imputed_columns(model: Any) -> frozenset[str]:
    """The labels (as ``numeric_columns`` gives them) of the columns that only imputers
    replacing NaN (scikit-learn's ``sklearn.impute`` estimators whose ``missing_values``
    is NaN) read first, whether a ``ColumnTransformer`` reading ``X`` first hands them
    over or the imputer is the model's first step: every missing value (``None``, NaN,
    NaT) there is replaced, or passed on as the imputer found it, before another step
    reads the column."""
    imputed: set[str] = set()
    for labels, readers, _ in _column_readers(model, whole=True):
        if readers and all(_imputes_nan(r) for r in readers):
            imputed.update(labels)
    return frozenset(imputed)


def object_columns(model: Any) -> frozenset[str]:
    """The labels of the columns an imputer fitted on objects reads first
    (``imputes_objects``): it reads each as objects, pandas' ``NA`` of a nullable column
    among them."""
    found: set[str] = set()
    for labels, readers, _ in _column_readers(model, whole=True):
        if readers and all(imputes_objects(r) for r in readers):
            found.update(labels)
    return frozenset(found)


def imputes_objects(estimator: Any) -> bool:
    """Whether ``estimator`` is a fitted ``SimpleImputer`` fitted on objects (strings):
    its ``statistics_`` are objects (scikit-learn then converts what it is handed to
    objects, numbers and dates included, before imputing)."""
    statistics = estimator.__dict__.get("statistics_") if _is_imputer(estimator) else None
    return getattr(statistics, "dtype", None) == np.dtype("O")


def _is_imputer(estimator: Any) -> bool:
    module = sys.modules.get("sklearn.impute")
    imputer = getattr(module, "SimpleImputer", None)
    return imputer is not None and isinstance(estimator, imputer)


def _imputes_nan(estimator: Any) -> bool:
    if not type(estimator).__module__.startswith("sklearn.impute"):
        return False
    missing = getattr(estimator, "missing_values", None)
    return isinstance(missing, float) and missing != missing


#: What a part does with the columns it reads (see ``_reading``).
_NUMBERS, _KEEPS, _OTHER = "numbers", "keeps", "other"


def _reading(part: Any, depth: int) -> str:
    """``_NUMBERS`` where ``part`` converts the columns it reads to float (see
    ``NUMERIC_READERS``; an imputer computing a mean or median, ``KNNImputer``,
    ``IterativeImputer``; a ``FunctionTransformer`` checking floats (``_checks_floats``);
    a pipeline whose first step that does not keep its input's kind
    does; a union all of whose parts do), ``_KEEPS`` where it hands them on as it got
    them (a ``most_frequent`` or ``constant`` ``SimpleImputer`` not fitted on objects, a
    pass-through ``FunctionTransformer``), ``_OTHER`` otherwise."""
    if depth < _MAX_DEPTH:
        steps = _steps(part)
        if steps:
            for step in steps:
                found = _reading(step, depth + 1)
                if found != _KEEPS:
                    return found
            return _KEEPS
        transformers = _transformers(part)
        if transformers:
            return _NUMBERS if all(_reading(t, depth + 1) == _NUMBERS
                                   for t in transformers) else _OTHER
    if _passes_through(part):
        return _KEEPS
    if _checks_floats(part):
        return _NUMBERS
    if _is_imputer(part):
        if getattr(part, "strategy", None) in ("mean", "median"):
            return _NUMBERS
        return _OTHER if imputes_objects(part) else _KEEPS
    module = type(part).__module__
    if module.startswith(NUMERIC_READERS) or (
            module.startswith("sklearn.impute") and type(part).__name__ in (
                "KNNImputer", "IterativeImputer")):
        return _NUMBERS
    return _OTHER


def _passes_through(step: Any) -> bool:
    """A ``FunctionTransformer`` with neither a function nor validation: it hands ``X``
    on unchanged."""
    module = sys.modules.get("sklearn.preprocessing")
    kind = getattr(module, "FunctionTransformer", None)
    return (kind is not None and isinstance(step, kind) and step.func is None
            and not step.validate)


def _checks_floats(step: Any) -> bool:
    """A ``FunctionTransformer`` whose function is scikit-learn's ``check_array`` with a
    float ``dtype`` (as a ``HistGradientBoosting*`` model fitted with categorical features
    reads its other columns): it converts each column it reads to float, and fails
    (``ValueError``) on strings there; its ``ensure_all_finite`` says whether NaN passes,
    which the model's own ``allow_nan`` tag already tells."""
    module = sys.modules.get("sklearn.preprocessing")
    kind = getattr(module, "FunctionTransformer", None)
    func = getattr(step, "func", None)
    if kind is None or not isinstance(step, kind) or not isinstance(func, functools.partial):
        return False
    validation = sys.modules.get("sklearn.utils.validation")
    if validation is None or func.func is not getattr(validation, "check_array", None):
        return False
    dtype = func.keywords.get("dtype")
    dtypes = dtype if isinstance(dtype, (list, tuple)) else [dtype]
    try:
        return bool(dtypes) and all(
            d is not None and np.dtype(d).kind == "f" for d in dtypes)
    except TypeError:  # "numeric" and other names numpy does not read as a dtype
        return False


def string_columns(model: Any) -> frozenset[str]:
    """The labels (as ``numeric_columns`` gives them) of the columns a fitted encoder
    (``OneHotEncoder``, ``OrdinalEncoder``, ``TargetEncoder``: scikit-learn's
    ``_BaseEncoder``) fitted on strings reads first: one a ``ColumnTransformer`` reading
    ``X`` first hands them to (alone, as a nested pipeline's first step or in a union),
    or the model's own first step. Its ``categories_`` say what each column held at fit
    time; the columns whose categories are strings (``str``/``bytes`` arrays, or objects
    among which a ``str`` or ``bytes``) are these. The encoder compares what it is given
    with those strings, and fails on numbers (``TypeError``), booleans, complex numbers,
    dates and durations (``ValueError``), whatever its ``handle_unknown``."""
    encoders = sys.modules.get("sklearn.preprocessing._encoders")
    base = getattr(encoders, "_BaseEncoder", None)
    if base is None:
        return frozenset()
    strings: set[str] = set()
    for labels, readers, _ in _column_readers(model, whole=True):
        for reader in readers:
            categories = reader.__dict__.get("categories_") if isinstance(reader, base) else None
            if isinstance(categories, list) and len(categories) == len(labels):
                strings.update(label for label, fitted in zip(labels, categories)
                               if _holds_strings(fitted))
    return frozenset(strings)


def _holds_strings(categories: Any) -> bool:
    kind = getattr(categories, "dtype", np.dtype("O")).kind
    return kind in "US" or (kind == "O" and any(
        isinstance(value, (str, bytes)) for value in categories))


def _column_readers(model: Any, whole: bool
                    ) -> Iterator[tuple[list[str], list[Any], Any]]:
    """``(labels, readers, branch)`` for the columns of ``X``: the labels (as ``str``;
    positions where fitted without names) of the columns the fitted ``ColumnTransformer``
    reading ``X`` first hands to one of its transformers (``branch``), in the order it
    hands them over, and the estimators that read them first. ``whole``: where no
    ``ColumnTransformer`` reads ``X`` first, the estimator that does (not a composite),
    every column of ``X`` and the model."""
    reader = _column_transformer(model)
    if reader is None:
        first = _first_readers(model, 0)
        width = getattr(first[0], "n_features_in_", None)
        if whole and len(first) == 1 and isinstance(width, (int, np.integer)):
            yield _labels(first[0], range(int(width))), first, model
        return
    positions = reader._transformer_to_input_indices
    for entry in reader.transformers_:
        if isinstance(entry, tuple) and len(entry) > 1 and _is_estimator(entry[1]):
            # (not "drop", "passthrough")
            yield (_labels(reader, positions.get(entry[0], ())),
                   _first_readers(entry[1], 1), entry[1])


def _all_labels(model: Any) -> frozenset[str]:
    """The labels of every column of ``X`` (as ``numeric_columns`` gives them); where the
    model does not say how many it reads, one label no column has (so no set of imputed
    columns covers them)."""
    width = getattr(model, "n_features_in_", None)
    if not isinstance(width, (int, np.integer)):
        return frozenset({""})  # never a subset of the imputed labels
    names = getattr(model, "feature_names_in_", None)
    return frozenset(str(names[i]) if names is not None else str(i) for i in range(width))


def _labels(reader: Any, positions: Any) -> list[str]:
    names = getattr(reader, "feature_names_in_", None)
    return [str(names[i]) if names is not None else str(i) for i in positions]


def _tags(estimator: Any) -> Any:
    from sklearn.utils import get_tags
    from sklearn.utils._tags import InputTags

    try:
        return get_tags(estimator).input_tags
    except Exception:  # an object that is not a scikit-learn estimator: the defaults
        return InputTags()


def _is_estimator(step: Any) -> bool:
    return step is not None and not isinstance(step, str) and hasattr(step, "get_params")


def _steps(model: Any) -> list[Any] | None:
    steps = getattr(model, "steps", None)
    if isinstance(steps, list):
        return [s[1] for s in steps if isinstance(s, tuple) and len(s) > 1 and _is_estimator(s[1])]
    return None


def _transformers(model: Any) -> list[Any] | None:
    for attribute in ("transformers_", "transformers", "transformer_list"):  # fitted first
        found = getattr(model, attribute, None)
        if isinstance(found, list):
            return [t[1] for t in found if isinstance(t, tuple) and len(t) > 1
                    and _is_estimator(t[1])]
    return None


def _encoding_step(model: Any) -> Any:
    """The fitted ``ColumnTransformer`` a ``HistGradientBoosting*`` model fitted with
    categorical features reads ``X`` through (its ``_preprocessor``: an ``OrdinalEncoder``
    on the categorical columns, which takes strings and categories, numbers on the
    others), or ``None``."""
    if not type(model).__module__.startswith("sklearn.ensemble._hist_gradient_boosting"):
        return None
    found = getattr(model, "__dict__", {}).get("_preprocessor")
    return found if isinstance(getattr(found, "transformers_", None), list) else None


def _first_readers(model: Any, depth: int) -> list[Any]:
    """The estimators that read ``X`` as the caller passed it."""
    if depth < _MAX_DEPTH:
        encoding = _encoding_step(model)
        if encoding is not None:
            return _first_readers(encoding, depth + 1)
        steps = _steps(model)
        if steps:  # the first that does not hand X on unchanged (or the last)
            doing = [step for step in steps if not _passes_through(step)]
            return _first_readers((doing or steps)[0], depth + 1)
        transformers = _transformers(model)
        if transformers:
            return [r for t in transformers for r in _first_readers(t, depth + 1)]
    return [model]


def _leaves(model: Any, depth: int) -> list[Any]:
    """Every estimator the data goes through (the composites' parts, not the composites)."""
    if depth < _MAX_DEPTH:
        parts = _steps(model) or _transformers(model)
        if parts:
            return [leaf for part in parts for leaf in _leaves(part, depth + 1)]
    return [model]


def _members(model: Any) -> Iterator[Any]:
    """Fitted parts of a composite or an ensemble."""
    yield from _steps(model) or ()
    yield from _transformers(model) or ()
    for attribute in ("estimators_", "estimator_", "best_estimator_", "final_estimator_"):
        found = model.__dict__.get(attribute) if hasattr(model, "__dict__") else None
        if isinstance(found, np.ndarray):
            yield from found.ravel().tolist()
        elif isinstance(found, (list, tuple)):
            yield from found
        elif found is not None:
            yield found


def _tree_dtype(model: Any, depth: int) -> str | None:
    """``TREE_DTYPE`` where a fitted decision tree reads the input, else ``None``."""
    trees = sys.modules.get("sklearn.tree._tree")
    if trees is None:
        return None
    if isinstance(getattr(model, "__dict__", {}).get("tree_"), trees.Tree):
        return TREE_DTYPE
    if depth >= _MAX_DEPTH:
        return None
    for member in _members(model):
        found = _tree_dtype(member, depth + 1)
        if found is not None:
            return found
    return None
