from __future__ import annotations

import numpy as np

from . import AdapterCase, digits


def _build():
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = digits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a test model, trained briefly
        return MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(x, y)


#: Every dtype scikit-learn casts to float itself.
VALID_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                np.uint8, np.uint16, np.bool_, ">f8", ">i4"]


class ArrayLike:
    """A container that is not an ndarray but converts to one (as a tensor or xarray does)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def __array__(self, dtype=None, copy=None):
        return self._array if dtype is None else self._array.astype(dtype)


def _forms(array: np.ndarray):
    """The same values in every container and layout scikit-learn takes."""
    import pandas as pd
    import scipy.sparse as sp
    from hypothesis import strategies as st

    numeric = array.dtype.kind != "b"
    forms = [
        st.just(array),
        st.just(np.asfortranarray(array)),
        st.just(np.repeat(array, 2, axis=0)[::2]),  # a strided view
        st.just(array.tolist()),
        st.just(ArrayLike(array)),
        st.just(pd.DataFrame(array)),  # integer column labels: no feature names
        st.just(array.astype(object)),
    ]
    if numeric and array.dtype.isnative and array.dtype != np.float16:  # scipy lacks float16
        forms += [st.just(kind(array)) for kind in (sp.csr_matrix, sp.csc_matrix,
                                                    sp.coo_matrix, sp.csr_array)]
    return st.one_of(forms)


def valid_inputs():
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    def arrays(dtype):
        dtype = np.dtype(dtype)
        if dtype.kind == "f":
            elements = hnp.from_dtype(dtype, min_value=-1000, max_value=1000,
                                      allow_nan=False, allow_infinity=False)
        else:
            elements = hnp.from_dtype(dtype)
        return hnp.arrays(dtype, st.tuples(st.integers(1, 6), st.just(64)), elements=elements)

    return st.sampled_from(VALID_DTYPES).flatmap(arrays).flatmap(_forms)


CASE = AdapterCase(
    id="sklearn",
    build=_build,
    to_native=lambda x: x,
    call_plain=lambda model, x: np.asarray(model.predict_proba(x)),
    call_guarded=lambda guarded, x: np.asarray(guarded.predict_proba(x)),
    from_numpy_any=lambda a: a,
    valid_inputs=valid_inputs,
)
