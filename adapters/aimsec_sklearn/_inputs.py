"""``X`` as scikit-learn reads it, for the core's checks (numpy only; scipy and pandas
are looked up through ``sys.modules``, so they are never imported here).

- numpy arrays: as they are (``np.matrix``, which scikit-learn refuses, raises
  ``TypeError``); an object array of numbers becomes float64 for an estimator
  that takes only numbers (``check_array`` does the same);
- anything else with ``__array__`` (a tensor, an xarray, a lazy array): ``np.asarray``
  once, and the estimator gets that array (so it is converted exactly once);
- scipy sparse matrices and arrays: their stored values, never densified (formats other
  than CSR/CSC are converted to CSR, and duplicate entries are summed as the estimator
  will sum them, once the core found the arrays that place the values inside the matrix:
  scipy's compiled conversions trust them); a DataFrame whose columns are all pandas
  ``SparseDtype`` likewise, as the sparse matrix ``check_array`` makes of it
  (``frame.sparse.to_coo()``; fill value 0 only);
- pandas DataFrames and Series: their values converted by scikit-learn's rules (one
  common numeric dtype, nullable columns as float with NaN, object columns as float64
  where they hold numbers); a frame whose columns differ in kind becomes column blocks.
  Complex, datetime and timedelta columns are never read as numbers (``check_array``
  refuses them; pandas would hand over real parts and nanosecond counts). Column labels
  scikit-learn refuses (duplicates, strings mixed with other types, string names that
  are not the fitted ``feature_names_in_`` in order) raise ``ValueError``. A model whose
  first step is a ``ColumnTransformer`` fitted on a DataFrame picks a DataFrame's columns
  by name: they are read in the fitted order, whatever their order, without the others,
  and only those it reads must be there.
  The estimator gets the frame itself, feature names and all.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import numpy as np

from aimsec_core.arrays import ColumnBlocks, SparseValues


def model_input(value: Any, takes_strings: bool) -> Any:
    """What the estimator is handed for ``value``: the value itself, or the array it
    would convert it to where converting twice could differ or cost twice."""
    if isinstance(value, np.ndarray):
        return _numeric_objects(value, takes_strings)
    if _is_sparse(value):
        return _crossing(value) if value.format == "dia" else value
    if _is_pandas(value) or not hasattr(value, "__array__"):
        return value
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 - the core reports the value it cannot read
        return value
    return _numeric_objects(array, takes_strings)


def read(value: Any, takes_strings: bool, fitted_names: Any = None,
         numeric: frozenset[str] = frozenset(), by_name: bool = False,
         strings: frozenset[str] = frozenset(),
         objects: frozenset[str] = frozenset(), selection: Any = None) -> Any | None:
    """``value`` as the core reads it: an ndarray, ``SparseValues``, ``ColumnBlocks``, or
    ``None`` for Python lists and scalars (the core converts those itself).
    ``fitted_names`` (the estimator's ``feature_names_in_``) are the column names a
    DataFrame must carry, in that order, when its columns are named. ``numeric``: the
    labels of the columns the model reads as numbers (``InputSpec.numeric_columns``),
    whose objects are read as the float64 they convert to where they all do. ``strings``:
    the labels of the columns an encoder fitted on strings reads
    (``InputSpec.string_columns``); a frame holding one is always column blocks, each
    column's kind as the encoder reads it named (``ColumnBlocks.kinds``). ``objects``: the
    labels of the columns an imputer fitted on strings reads (``_spec.object_columns``),
    which it converts to objects whatever their dtype: a frame holding one is column
    blocks, those columns among the objects as it reads them (a nullable column's
    missing values as pandas' ``NA``).
    ``by_name``: the model picks columns by label (``_spec.selects_by_name``), so anything
    but a DataFrame whose labels are all ``str`` raises ``ValueError``. ``selection``
    (``_spec.LabelSelection``, where the model picks a DataFrame's columns by label
    whatever their order): a DataFrame is read as the model reads it, its columns in
    the fitted order without the others (see ``_selected``); ``fitted_names`` then
    checks no order."""
    if by_name:
        _check_named(value, fitted_names)
    if type(value) is np.ndarray and value.dtype.kind != "O":
        return value  # the common case, first
    if _is_sparse(value):
        return _sparse(value)
    if _is_pandas(value):
        if selection is not None and isinstance(value, sys.modules["pandas"].DataFrame):
            value = _selected(value, selection)
        elif fitted_names is not None:
            _check_feature_names(value, fitted_names)
        if _all_sparse_columns(value):
            return _sparse_frame(value)
        return _frame(value, takes_strings, numeric, strings, objects)
    if isinstance(value, np.matrix):  # check_array refuses it: so does the guard
        raise TypeError("np.matrix is not supported, as scikit-learn refuses it; convert "
                        "it first (np.asarray(X))")
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        return model_input(np.asarray(value), takes_strings)
    return None


def declared_elements(value: Any) -> int | None:
    """The rows of a sparse matrix or of a DataFrame of sparse columns, read from its shape
    alone (the core counts at least those): converting it allocates one pointer per row,
    however few values it stores. ``None`` for anything else (its conversion allocates
    no more than it holds)."""
    if _is_sparse(value) or (_is_pandas(value) and _all_sparse_columns(value)):
        return int(value.shape[0])
    return None


def _numeric_objects(array: np.ndarray, takes_strings: bool) -> np.ndarray:
    if array.dtype.kind != "O" or takes_strings:
        return array
    try:
        _refuse_complex(array)
        return array.astype(np.float64)
    except Exception:  # noqa: BLE001 - not numbers, or an element whose __float__ raises:
        return array  # the dtype check refuses it


def _refuse_complex(values: Any) -> None:
    """Raise ``ValueError`` where ``values`` (an object array or column) hold a complex
    number: numpy's and pandas' casts to float drop its imaginary part with a mere warning,
    where ``check_array`` refuses complex data. (A scan, not a warnings filter: filters are
    process-wide, and one set here could outlive this call in another thread's.)"""
    if any(isinstance(v, (complex, np.complexfloating)) for v in np.asarray(values).ravel()):
        raise ValueError("Complex data not supported")


def _is_sparse(value: Any) -> bool:
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(value)


def _is_pandas(value: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series))


def _all_sparse_columns(frame: Any) -> bool:
    """Whether ``check_array`` reads ``frame`` as a sparse matrix: a DataFrame with
    columns, every one of them of pandas' ``SparseDtype``."""
    pandas = sys.modules["pandas"]
    return (isinstance(frame, pandas.DataFrame) and frame.shape[1] > 0
            and all(isinstance(d, pandas.SparseDtype) for d in frame.dtypes))


def _sparse_frame(frame: Any) -> SparseValues:
    """The sparse matrix scikit-learn makes of a DataFrame of sparse columns
    (``frame.sparse.to_coo()``), as its stored values; ``ValueError`` where pandas cannot
    make one (a fill value other than 0)."""
    _check_labels(frame.columns)
    fills = {d.fill_value for d in frame.dtypes}
    if any(not (isinstance(f, (int, float, np.number)) and f == 0) for f in fills):
        shown = sorted(map(repr, fills))[:5]
        raise ValueError(f"the DataFrame's sparse columns have fill values {shown}; "
                         "scikit-learn reads sparse columns as a sparse matrix, which needs "
                         "fill value 0 (X.sparse.to_dense() gives a dense frame)")
    values = _sparse(frame.sparse.to_coo())
    return dataclasses.replace(values, format="DataFrame of sparse columns",
                               densify="X.sparse.to_dense()")


def _sparse(matrix: Any) -> SparseValues:
    if matrix.ndim != 2:
        raise ValueError(f"a sparse input must be 2-D (n_samples, n_features); received "
                         f"shape {matrix.shape}")
    given = _as_given(matrix)
    if given is not None and given.misplaced() is not None:
        return given  # refused by the core's checks before any scipy routine reads it
    if matrix.format == "dia":
        matrix = _crossing(matrix)
    # COO's conversion sums duplicate entries; LIL's and BSR's keep them, as may a CSR or
    # CSC given: summed here, as the estimator's arithmetic sums them
    canonical = matrix if matrix.format in ("csr", "csc") else matrix.tocsr()
    if not canonical.has_canonical_format:
        canonical = canonical.copy()
        canonical.sum_duplicates()
    shape = (int(matrix.shape[0]), int(matrix.shape[1]))
    parts = (canonical.indices, canonical.indptr)
    if canonical.format == "csr":
        return SparseValues(matrix.format, shape, canonical.data, parts, indptr=canonical.indptr)
    return SparseValues(matrix.format, shape, canonical.data, parts, row=canonical.indices)


def _as_given(matrix: Any) -> SparseValues | None:
    """The arrays that place ``matrix``'s values, as it holds them (compressed or
    coordinate form; a block matrix by its blocks), for the core to check before scipy's
    compiled routines read them: they trust these arrays, and one that points outside the
    matrix (possible after the matrix was built: its arrays can be changed in place, and
    scipy's constructors check few of them) crashes the process. ``None`` for formats
    whose conversion reads them in Python (DOK). A list-of-lists matrix is read in Python,
    as coordinates (its compiled conversion trusts one list of columns and one of values
    per row, of equal lengths), a diagonal one by its diagonals and offsets."""
    shape = (int(matrix.shape[0]), int(matrix.shape[1]))
    form = matrix.format
    if form == "coo":
        return SparseValues(form, shape, np.asarray(matrix.data), (matrix.row, matrix.col),
                            row=matrix.row, col=matrix.col)
    if form == "dia":
        offsets = np.asarray(matrix.offsets)
        return SparseValues(form, shape, np.asarray(matrix.data), (offsets,), offsets=offsets)
    if form == "lil":
        return _lists(matrix, shape)
    if form not in ("csr", "csc", "bsr"):
        return None
    indices, indptr, data = matrix.indices, matrix.indptr, np.asarray(matrix.data)
    if form == "bsr":  # placed block by block: one value per block stands for it
        rows, cols = matrix.blocksize
        if data.ndim != 3 or data.shape[1:] != (rows, cols):
            raise ValueError(f"a block sparse matrix's data must be (blocks, {rows}, {cols});"
                             f" received shape {data.shape}")
        return SparseValues(form, (shape[0] // rows, shape[1] // cols), data[:, 0, 0],
                            (indices, indptr), indptr=indptr)
    if form == "csr":
        return SparseValues(form, shape, data, (indices, indptr), indptr=indptr)
    return SparseValues(form, shape, data, (indices, indptr), row=indices)


def _crossing(matrix: Any) -> Any:
    """A diagonal matrix without its diagonals that miss it (they place nothing): scipy's
    compiled conversion casts the offsets to its index type, where a far one (2^40) wraps
    onto a diagonal of the matrix, stored twice into a buffer sized for once.
    The estimator is handed this matrix too. One whose offsets do not match its diagonals
    is given back as it is, for the core to refuse."""
    rows, cols = int(matrix.shape[0]), int(matrix.shape[1])
    offsets, data = np.asarray(matrix.offsets), np.asarray(matrix.data)
    if not (offsets.dtype.kind in "iu" and offsets.ndim == 1 and data.ndim == 2
            and data.shape[0] == offsets.size):
        return matrix
    keep = [i for i, k in enumerate(offsets.tolist()) if -rows < k < cols]
    if len(keep) == offsets.size:
        return matrix
    return type(matrix)((data[keep], offsets[keep]), shape=(rows, cols))


def _lists(matrix: Any, shape: tuple[int, int]) -> SparseValues:
    """A list-of-lists matrix's coordinates and values, read in Python; ``ValueError``
    where it does not hold one list of columns and one of values for each row."""
    rows, values = matrix.rows, matrix.data
    if not (isinstance(rows, np.ndarray) and isinstance(values, np.ndarray)
            and rows.shape == values.shape == (shape[0],)):
        raise ValueError(f"a list-of-lists sparse matrix of shape {shape} holds one list of "
                         f"columns and one of values per row; received {np.shape(rows)} "
                         f"columns and {np.shape(values)} values")
    row = np.repeat(np.arange(shape[0]), [len(r) for r in rows])
    col = np.asarray([c for r in rows for c in r]) if row.size else row.copy()
    data = np.asarray([v for d in values for v in d])
    return SparseValues("lil", shape, data, (row, col), row=row, col=col)


def _frame(frame: Any, takes_strings: bool, numbers: frozenset[str] = frozenset(),
           strings: frozenset[str] = frozenset(), objects: frozenset[str] = frozenset()
           ) -> Any:
    pandas = sys.modules["pandas"]
    if isinstance(frame, pandas.Series):
        frame = frame.to_frame()
        one_d = True
    else:
        one_d = False
        _check_labels(frame.columns)
    dtypes = list(frame.dtypes)
    numeric = [str(label) not in objects and (  # an imputer reading objects: objects
                   _numeric(d) or (takes_strings and str(label) in numbers
                                   and _converts(frame.iloc[:, i], d)))
               for i, (label, d) in enumerate(zip(frame.columns, dtypes))]
    encoded = any(str(label) in strings or str(label) in objects for label in frame.columns)
    if (all(numeric) and not encoded) or not takes_strings:
        values = None  # strings, objects, dates: refused below unless the model takes them
        if all(_kind(d) in "biufO" for d in dtypes):  # complex, dates: never numbers
            try:
                for i, dtype in enumerate(dtypes):
                    if _kind(dtype) == "O":
                        _refuse_complex(frame.iloc[:, i].to_numpy())
                values = _as_numbers(frame, dtypes)
            except (TypeError, ValueError, OverflowError):
                pass
        if values is not None:
            return values.ravel() if one_d else values
    if one_d:
        return frame.iloc[:, 0].to_numpy(dtype=object)
    kinds = np.asarray(numeric)
    blocks, columns, read_as, names = [], [], [], []
    for is_numeric in (True, False):
        chosen = frame.loc[:, kinds == is_numeric]
        if chosen.shape[1]:
            blocks.append(_as_numbers(chosen, list(chosen.dtypes)) if is_numeric
                          else chosen.to_numpy(dtype=object) if takes_strings
                          else chosen.to_numpy())  # its own dtype, named in the refusal
            columns.extend(str(c) for c in chosen.columns)
            read_as.extend(_read_kind(d) for d in chosen.dtypes)
            names.extend(str(d) for d in chosen.dtypes)
    return ColumnBlocks((int(frame.shape[0]), int(frame.shape[1])), tuple(blocks),
                        tuple(columns), kinds=tuple(read_as), dtypes=tuple(names))


def _read_kind(dtype: Any) -> str:
    """The kind a column of ``dtype`` is read as column by column (scikit-learn's encoders
    convert each column with ``check_array(dtype=None)``): a categorical column as its
    categories' kind, a datetime column with a time zone as objects (its ``Timestamp``s),
    pandas' nullable ones as their numbers, any other as its dtype's kind."""
    categories = getattr(dtype, "categories", None)
    if categories is not None:
        return _kind(categories.dtype)
    if getattr(dtype, "tz", None) is not None:
        return "O"
    return _kind(dtype)


def _converts(column: Any, dtype: Any) -> bool:
    """Whether a column of objects (strings, categories, ``Decimal``) converts to float64
    as a scikit-learn scaler converts it; never one of dates, durations or complex numbers
    (``check_array`` refuses those)."""
    if _kind(dtype) != "O":
        return False
    try:
        _refuse_complex(column.to_numpy())
        column.to_numpy(dtype=np.float64, na_value=np.nan)
    except Exception:  # noqa: BLE001 - text, an int past float's range, a hostile __float__
        return False
    return True


def _kind(dtype: Any) -> str:
    """A column dtype's kind; pandas' own dtypes (nullable Int64, Float64, boolean, tz-aware
    datetimes, categories, strings) report one too, ``"O"`` where they hold objects."""
    return getattr(dtype, "kind", "O")


def _numeric(dtype: Any) -> bool:
    return _kind(dtype) in "biuf"


def _check_labels(columns: Any) -> None:
    """Raise ``ValueError`` for column labels scikit-learn refuses in any frame it reads
    (``sklearn.utils.validation._get_feature_names``): duplicates, or strings mixed with
    labels of other types."""
    if columns.is_unique:
        types = {type(c) for c in columns}
        if len(types) <= 1 or str not in types:
            return
        names = sorted(t.__name__ for t in types)
        raise ValueError(f"the DataFrame's column labels mix strings with {names}; "
                         "scikit-learn takes all-string labels (X.columns = "
                         "X.columns.astype(str)) or none")
    repeated = columns[columns.duplicated()].unique()[:5].tolist()
    raise ValueError(f"the DataFrame has duplicate column labels {repeated}; expected "
                     "each column label once")


def _check_named(value: Any, fitted: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a DataFrame whose column labels are all
    ``str`` (scikit-learn reads no other labels as names, not even ``np.str_``), which a
    model picking columns by label needs."""
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, pandas.DataFrame):
        odd = sorted({type(c).__name__ for c in value.columns if type(c) is not str})
        if not odd:
            return
        received = f"a DataFrame with column labels of type {odd}"
    else:
        received = f"a {type(value).__name__}"
    wanted = [str(name)[:40] for name in fitted[:5]] if fitted is not None else []
    raise ValueError(f"the model picks its columns by name (a ColumnTransformer fitted on "
                     f"named columns), so it reads only a DataFrame whose column labels are "
                     f"str; expected a DataFrame with the columns {wanted}"
                     f"{' ...' if fitted is not None and len(fitted) > 5 else ''}; "
                     f"received {received}")


def _selected(frame: Any, selection: Any) -> Any:
    """``frame`` as a model picking its columns by label reads it
    (``ColumnTransformer.transform`` on a frame, fitted on one): the fitted columns in
    their fitted order, whatever their order in ``frame``, without the columns it was
    not fitted with (never read). The fitted columns only dropped transformers read are
    columns of zeros here, for the checks (the model never reads them, and they may be
    missing).
    ``ValueError`` where scikit-learn raises: labels that are not all ``str`` (it then
    has no names to pick by), a column the model reads missing."""
    _check_labels(frame.columns)
    columns = list(frame.columns)
    if not columns or not all(isinstance(c, str) for c in columns):
        odd = sorted({type(c).__name__ for c in columns if not isinstance(c, str)})
        received = f"labels of type {odd}" if odd else "no columns"
        raise ValueError(f"the model picks the columns of a DataFrame by name (a "
                         f"ColumnTransformer fitted on a DataFrame), so it reads only one "
                         f"whose column labels are str; expected the columns "
                         f"{_shown(selection.names)}; received a DataFrame with {received}")
    missing = sorted(selection.needed - set(columns))
    if missing:
        raise ValueError(f"the DataFrame lacks columns the model reads: "
                         f"{[m[:40] for m in missing[:5]]}{' ...' if len(missing) > 5 else ''}"
                         f"; expected the columns {_shown(selection.names)} (in any order, "
                         f"others ignored); received {_shown(columns)}")
    if columns == list(selection.names) and len(selection.needed) == len(columns):
        return frame
    pandas = sys.modules["pandas"]
    zeros = np.zeros(len(frame), dtype=np.int64)
    return pandas.DataFrame({name: frame[name] if name in selection.needed else zeros
                             for name in selection.names}, index=frame.index)


def _shown(names: Any) -> list[str]:
    return [str(n)[:40] for n in names[:5]] + (["..."] if len(names) > 5 else [])


def _check_feature_names(frame: Any, fitted: Any) -> None:
    """Raise ``ValueError`` where scikit-learn would (``BaseEstimator._check_feature_names``):
    a DataFrame whose columns are all strings and are not the fitted feature names in
    their order. Frames with other labels are read by position, as scikit-learn does."""
    pandas = sys.modules["pandas"]
    if not isinstance(frame, pandas.DataFrame):
        return
    columns = list(frame.columns)
    if not columns or not all(isinstance(c, str) for c in columns):
        return
    fitted = [str(name) for name in fitted]
    if columns == fitted:
        return
    unseen = [c for c in columns if c not in set(fitted)][:5]
    missing = [f for f in fitted if f not in set(columns)][:5]
    shown = [c[:40] for c in columns[:5]] + (["..."] if len(columns) > 5 else [])
    what = (f"unseen at fit: {[c[:40] for c in unseen]}; missing: {missing}"
            if unseen or missing else "the same names in another order")
    raise ValueError(f"the DataFrame's columns {shown} are not the feature names the "
                     f"estimator was fitted with ({what}); expected the columns "
                     f"{fitted[:5]}{' ...' if len(fitted) > 5 else ''} in that order")


def _as_numbers(frame: Any, dtypes: list[Any]) -> np.ndarray:
    """A frame's values as ``check_array`` makes them: numpy dtypes to their common type;
    pandas' nullable ones to float64 with NaN for missing values; objects to float64."""
    if dtypes and all(isinstance(d, np.dtype) and d.kind in "biuf" for d in dtypes):
        return frame.to_numpy(dtype=np.result_type(*dtypes))
    return frame.to_numpy(dtype=np.float64, na_value=np.nan)
