"""Validation on hand-checkable inputs, independent of any framework."""

from __future__ import annotations

import numpy as np
import pytest

from aimsec_core import ConfigurationError, Constraints
from aimsec_core.arrays import declared_size
from aimsec_core.adapter import HostArrays
from aimsec_core.signature import InputSpec
from aimsec_core.validation import validate


def _run(value, spec=None, **constraints):
    return validate({"x": value}, HostArrays(None), {"x": spec}, Constraints(**constraints))


def test_clean_batch_has_no_findings():
    out = _run(np.ones((3, 4)), min_value=0, max_value=1)
    assert out.findings == [] and out.batch_size == 3 and not out.flags.any()


def test_nan_and_range_are_told_apart_per_sample():
    x = np.zeros((4, 3))
    x[1, 0] = np.nan
    x[2, 2] = 7.0
    out = _run(x, max_value=5)
    by_check = {f.check: f for f in out.findings}
    assert by_check["finite"].samples == (1,)
    assert by_check["range"].samples == (2,)  # NaN sample is not also reported as out of range
    assert out.flags.tolist() == [False, True, True, False]


def test_integers_are_range_checked_without_a_float_copy():
    out = _run(np.array([[1, 2], [3, 400]], dtype=np.int16), max_value=255)
    assert [f.check for f in out.findings] == ["range"] and out.flags.tolist() == [False, True]


def test_max_gradient_is_the_largest_neighbour_jump_on_every_axis():
    image = np.zeros((1, 3, 3))
    image[0, 1, 1] = 0.6  # jumps of 0.6 both along rows and along columns
    assert _run(image, max_gradient=0.7).findings == []
    finding, = _run(image, max_gradient=0.5).findings
    assert finding.check == "max_gradient" and finding.received == pytest.approx(0.6)


def test_min_sparsity_is_the_share_of_non_zero_values():
    x = np.array([[0, 0, 0, 1.0], [1, 1, 0, 1.0]])
    finding, = _run(x, min_sparsity=0.5).findings
    assert finding.samples == (0,) and finding.received == pytest.approx(0.25)


def test_structural_checks_run_on_numpy_without_the_astype_function(monkeypatch):
    # numpy before 2.1 has only the ndarray.astype method, not the array API's function
    monkeypatch.delattr(np, "astype", raising=False)
    ints = np.array([[0, 0, 0, 9], [1, 1, 2, 1]], dtype=np.int64)
    out = _run(ints, min_sparsity=0.5, max_gradient=3)
    by_check = {f.check: f for f in out.findings}
    assert by_check["min_sparsity"].samples == (0,)
    assert by_check["max_gradient"].samples == (0,)
    assert by_check["max_gradient"].received == pytest.approx(9)


def test_a_vector_without_a_spec_is_one_sample():
    assert _run(np.arange(5.0)).batch_size == 1


def test_shape_against_spec_with_a_hint_for_a_missing_batch_axis():
    out = _run(np.zeros(64), InputSpec("x", None, (None, 64)))
    assert out.blocked and "add the batch axis" in out.findings[0].reason


def test_strict_dtype_names_expected_and_received():
    out = _run(np.zeros((1, 2), np.float64), InputSpec("x", "float32", (None, 2), True))
    finding, = out.findings
    assert (finding.check, finding.expected, finding.received) == ("dtype", "float32", "float64")


def test_a_dtype_constraint_is_not_said_to_be_the_models():
    """constraints={"dtype": "float32"} on an estimator that declares no dtype refused
    float64 with "the model declares float32": the model declares nothing, the caller's
    constraint asked for it."""
    import aimsec_core
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).random((20, 4))
    model = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    guarded = aimsec_core.guard(model, sinks=[], constraints={"dtype": "float32"})
    with pytest.raises(aimsec_core.InputFormatError) as caught:
        guarded.predict(x)
    assert "has dtype float64; expected float32. Convert it first" in str(caught.value)
    assert "declares" not in str(caught.value)


@pytest.mark.parametrize("value", [np.array([[True, False]]), np.array([["a", "b"]]),
                                   np.array([[1 + 2j]]), np.array([[None]], dtype=object)])
def test_non_numeric_dtypes_are_refused(value):
    out = _run(value)
    assert out.blocked and out.findings[0].check == "dtype"


class _NeverIterated(list):
    """A list that fails the test if anything walks its elements (as conversion would)."""

    def __iter__(self):
        raise AssertionError("the nested list was converted")


def test_a_huge_nested_list_is_refused_before_conversion():
    row = [0.0] * 10_000
    huge = _NeverIterated([row] * 100_000)  # declares 10^9 elements while holding one row
    out = _run(huge, max_size=10_000_000)
    assert out.blocked and out.findings[0].check == "size"
    assert "refused before conversion" in out.findings[0].reason


def test_declared_size_reads_only_first_elements():
    assert declared_size([[1, 2, 3]] * 4, 100) == 12
    assert declared_size([[1, 2, 3]] * 4, 3) == 4  # stops once past the limit


def test_ragged_lists_are_a_format_finding():
    out = _run([[1.0, 2.0], [3.0]])
    assert out.blocked and out.findings[0].check == "format"
    assert "ragged" in out.findings[0].reason


@pytest.mark.parametrize("bad", [{"min_value": 2, "max_value": 1}, {"max_size": 0},
                                 {"min_sparsity": 1.5}, {"max_gradient": -1},
                                 {"max_value": "high"}, {"unknown": 1}, {"min_value": np.nan}])
def test_bad_constraints_are_configuration_errors(bad):
    with pytest.raises(ConfigurationError):
        Constraints.coerce(bad)


def test_constraints_repr_shows_only_what_was_set():
    assert repr(Constraints(max_value=1.0)) == "Constraints(max_value=1.0)"


def _csr(indices, indptr, shape=(2, 3), data=None):
    from aimsec_core.arrays import SparseValues

    indices, indptr = np.asarray(indices), np.asarray(indptr)
    data = np.ones(len(indices)) if data is None else data
    return SparseValues("csr", shape, data, (indices, indptr), indptr=indptr)


def _coo(row, col, shape=(2, 3)):
    from aimsec_core.arrays import SparseValues

    row, col = np.asarray(row), np.asarray(col)
    return SparseValues("coo", shape, np.ones(len(row)), (row, col), row=row, col=col)


def _csc(indices, indptr, shape=(2, 3)):
    from aimsec_core.arrays import SparseValues

    indices, indptr = np.asarray(indices), np.asarray(indptr)
    return SparseValues("csc", shape, np.ones(len(indices)), (indices, indptr), row=indices)


@pytest.mark.parametrize("matrix, wrong", [
    (_csr([0, 3], [0, 1, 2]), "index 3 outside [0, 3)"),  # a column past the last
    (_csr([0, -1], [0, 1, 2]), "index -1 outside [0, 3)"),
    (_csr([0, 1], [0, 3, 2]), "decreases"),
    (_csr([0, 1], [0, 1, 5]), "ends at 5"),
    (_csr([0, 1], [1, 1, 2]), "starts at 1"),
    (_csr([0, 1], [0, 2]), "2 entries; expected 3"),
    (_csr(np.array([0.0, 1.0]), [0, 1, 2]), "float64"),
    (_csc([0, 2], [0, 1, 1, 2]), "index 2 outside [0, 2)"),  # a row past the last
    (_coo([0, 2], [0, 1]), "row index 2 outside [0, 2)"),
    (_coo([0, 1], [-4, 1]), "column index -4 outside [0, 3)"),
    (_coo([0, 1, 1], [0, 1]), "2 column indices for 3 stored values"),
    (_coo([0.0, 1.0], [0, 1]), "row indices are float64"),
], ids=["csr-column-past-end", "csr-negative", "pointer-decreases", "pointer-past-data",
        "pointer-start", "pointer-length", "float-indices", "csc-row-past-end",
        "coo-row-past-end", "coo-negative-column", "coo-lengths", "coo-float-rows"])
def test_a_sparse_matrix_whose_indices_point_outside_it_is_refused(matrix, wrong):
    """Sparse kernels trust a matrix's indices: one past its shape reads memory outside
    it (other values, or a crash of the process). Such a matrix is a format finding,
    told apart from its values, before anything reads it."""
    class SparseArrays(HostArrays):  # hands a sparse matrix on as an adapter reads it
        def native(self, value):
            return value

    def run(value):
        return validate({"x": value}, SparseArrays(None),
                        {"x": InputSpec("x", accepts_sparse=True)}, Constraints())

    out = run(matrix)
    assert [f.check for f in out.findings] == ["format"] and out.blocked
    assert wrong in out.findings[0].reason and "sparse" in out.findings[0].reason
    assert run(_csr([0, 2], [0, 1, 2])).findings == []  # a valid one passes


def test_a_guarded_estimator_never_reads_a_sparse_matrix_pointing_outside_it():
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    import aimsec_core
    from tests.conftest import ListSink

    x = np.random.default_rng(0).random((20, 4))
    model = LogisticRegression().fit(x, np.arange(20) % 2)
    sink = ListSink()
    guarded = aimsec_core.guard(model, name="sparse", sinks=[sink])
    matrix = sp.csr_matrix(x[:2])
    matrix.indices = matrix.indices.copy()
    matrix.indices[0] = 4  # one column past the last: the model would read past its weights
    with pytest.raises(aimsec_core.InputFormatError, match="outside"):
        guarded.predict(matrix)
    assert sink.outcomes == ["rejected"]


_BROKEN_SPARSE = """
import sys
import numpy as np, scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
import aimsec_core

x = np.random.default_rng(0).random((20, 5))
guarded = aimsec_core.guard(LogisticRegression().fit(x, np.arange(20) % 2), sinks=[])
d = sp.csr_matrix(x[:2])
def changed(matrix, part, at, value):
    getattr(matrix, part)[at] = value  # the arrays of a built matrix, changed in place
    return matrix
cases = {
    "csr built with a pointer past its values": lambda: sp.csr_matrix(
        (d.data, d.indices, np.array([0, 10**8, d.nnz])), shape=d.shape),
    "csr pointer": lambda: changed(sp.csr_matrix(x[:2]), "indptr", 1, 10**8),
    "csc pointer": lambda: changed(sp.csc_matrix(x[:2]), "indptr", 1, 10**8),
    "bsr pointer": lambda: changed(sp.bsr_matrix(x[:2]), "indptr", 1, 10**8),
    "coo row": lambda: changed(sp.coo_matrix(x[:2]), "row", 0, 10**8),
    "coo column": lambda: changed(sp.coo_matrix(x[:2]), "col", 0, -10**8),
}
for name, make in cases.items():
    try:
        guarded.predict(make())
    except aimsec_core.InputFormatError as exc:
        print(name, "|", exc)
    else:
        print(name, "| served")
    sys.stdout.flush()
"""


def _in_child(script: str, cases: str = "") -> dict[str, str]:
    """Run ``script`` (with ``cases`` in place of its ``cases = {}``) in a child process,
    so a crash of the process fails the test instead of the test run; its lines
    ``name | said``, by name."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), str(root / "adapters"), os.environ.get("PYTHONPATH", "")])}
    if cases:
        script = script.replace("cases = {\n", "cases = {\n" + cases, 1)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    return dict(line.split(" | ", 1) for line in done.stdout.splitlines())


def test_sparse_arrays_pointing_outside_the_matrix_are_refused_before_scipy_reads_them():
    # scipy's compiled conversions (COO to CSR, summing a CSR's duplicates, asking
    # whether its format is canonical) trust these arrays: each case crashed the process
    # with a segmentation fault before the core's checks ran
    lines = _in_child(_BROKEN_SPARSE)
    assert len(lines) == 6
    for name, said in lines.items():
        assert "place values outside it" in said, (name, said)
        # the hint names a check scipy has for the compressed formats only (a COO matrix
        # has no check_format: following it ended in an AttributeError)
        assert ("check_format()" in said) == (not name.startswith("coo")), (name, said)


_BROKEN_DIAGONALS_AND_LISTS = """
    "dia with more diagonals than offsets": lambda: changed(
        sp.dia_matrix(x[:2]), "offsets", slice(None), None, sp.dia_matrix(x[:2]).offsets[:1]),
    "dia with offsets that are not integers": lambda: changed(
        sp.dia_matrix(x[:2]), "offsets", slice(None), None,
        sp.dia_matrix(x[:2]).offsets.astype(float) + 0.5),
    "dia with an offset repeated": lambda: changed(
        sp.dia_matrix(x[:2]), "offsets", slice(None), None, sp.dia_matrix(x[:2]).offsets * 0),
    "lil with more values than columns in a row": lambda: changed(
        changed(sp.lil_matrix(x[:2]), "rows", 0, [0]), "data", 0, [1.0, 2.0, 3.0]),
    "lil with fewer rows than its shape": lambda: changed(
        changed(sp.lil_matrix(x[:2]), "rows", slice(None), None, sp.lil_matrix(x[:1]).rows),
        "data", slice(None), None, sp.lil_matrix(x[:1]).data),
"""


def test_diagonal_and_list_of_lists_matrices_are_checked_before_scipy_converts_them():
    """scipy's compiled DIA and LIL conversions trust one offset per stored diagonal and
    one list of values per list of columns, per row: a DIA matrix with fewer offsets than
    diagonals crashed the process (segmentation fault), one with float offsets and a LIL
    matrix with more values than columns in a row corrupted its heap (abort), and one with
    fewer rows than its shape had the conversion read memory never written. Each is now
    refused as a format error before scipy reads it; so is a repeated offset, which
    scipy's own constructor refuses and whose conversion stored one entry twice."""
    lines = _in_child(_BROKEN_SPARSE.replace(
        "def changed(matrix, part, at, value):\n    getattr(matrix, part)[at] = value",
        "def changed(matrix, part, at, value, whole=None):\n"
        "    if whole is not None:\n        setattr(matrix, part, whole)\n"
        "    else:\n        getattr(matrix, part)[at] = value"), _BROKEN_DIAGONALS_AND_LISTS)
    assert len(lines) == 11, lines
    assert "served" not in lines.values()  # every case raised InputFormatError
    said = {name: lines[name] for name in lines if name.startswith(("dia", "lil"))}
    assert "for 1 offsets" in said["dia with more diagonals than offsets"]
    assert "expected a vector of integers" in said["dia with offsets that are not integers"]
    assert "an offset repeated" in said["dia with an offset repeated"]
    assert "6 row indices for 8 stored values" in said["lil with more values than columns in a row"]
    assert "one list of columns and one of values per row" in said[
        "lil with fewer rows than its shape"]
    assert not any("check_format" in text for text in said.values())  # scipy has none


_DIAGONALS_BESIDE = """
import numpy as np, scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
import aimsec_core

x = np.random.default_rng(0).random((20, 4))
model = LogisticRegression().fit(x, np.arange(20) % 2)
guarded = aimsec_core.guard(model, sinks=[])
inside = sp.dia_matrix((x[:1], [0]), shape=(4, 4))
expected = model.predict_proba(inside).tolist()
for name, offset in (("next to it", 4), ("below it", -4), ("far", 1 << 40)):
    matrix = sp.dia_matrix((x[:2], [0, 1]), shape=(4, 4))
    matrix.offsets = np.array([0, offset])  # one diagonal inside, one missing the matrix
    served = guarded.predict_proba(matrix).tolist()
    print(name, "|", "same" if served == expected else served)
"""


def test_a_diagonal_matrix_with_a_diagonal_missing_it_is_served_as_scipy_reads_it():
    """scipy builds diagonal matrices whose bands miss them (``spdiags`` with a band wider
    than the matrix) and reads them without those diagonals; the guard refused them as
    values placed outside. Such a diagonal is now left out before any conversion, also of
    the matrix the estimator is handed: scipy's compiled one casts offsets to its index
    type, where a far one (2^40) wrapped onto diagonal 0 and corrupted the heap."""
    assert _in_child(_DIAGONALS_BESIDE) == {"next to it": "same", "below it": "same",
                                            "far": "same"}


_DECLARING_MORE_THAN_THEY_HOLD = """
import resource, sys
import numpy as np, pandas as pd, scipy.sparse as sp, torch
from sklearn.linear_model import LogisticRegression
import aimsec_core

x = np.random.default_rng(0).random((20, 5))
estimator = aimsec_core.guard(LogisticRegression().fit(x, np.arange(20) % 2), sinks=[])
module = aimsec_core.guard(torch.nn.Linear(5, 2), sinks=[])
size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (size + 4 * 2**30,) * 2)  # a bomb fails, not swaps
one = (np.ones(1), (np.zeros(1, int), np.zeros(1, int)))
cases = {
    "coo": lambda: (estimator.predict, sp.coo_matrix(one, shape=(10**12, 5))),
    "dok": lambda: (estimator.predict, sp.dok_matrix((10**12, 5))),
    "dia": lambda: (estimator.predict, sp.dia_matrix((np.ones((1, 5)), [0]), shape=(10**12, 5))),
    "frame of sparse columns": lambda: (estimator.predict, pd.DataFrame({
        f"c{i}": pd.arrays.SparseArray.from_spmatrix(sp.csc_matrix((10**10, 1)))
        for i in range(5)})),
    "negative view of one value": lambda: (module, torch.zeros(
        1, dtype=torch.complex64).expand(10**12, 5).conj().imag),
    "vmapped view of one value": lambda: (torch.func.vmap(module),
                                          torch.zeros(1, 5).expand(10**12, 5)),
}
for name, make in cases.items():
    call, value = make()
    try:
        call(value)
    except aimsec_core.AimsecError as exc:
        print(name, "|", type(exc).__name__, exc)
    else:
        print(name, "| served")
    sys.stdout.flush()
"""


def test_a_value_declaring_more_elements_than_max_size_is_refused_before_it_is_converted():
    """A sparse matrix storing one value in a shape of 10^12 rows, or a negative view of
    one value expanded to 10^12 (or such a view as vmap's batch), holds a few bytes;
    converting it (scipy's CSR pointers, one per row; torch resolving the sign bit or
    merging vmap's levels) allocated for every declared element
    before the core counted them (a MemoryError here, under a memory limit; without
    one, gigabytes written). The core now asks the adapter what the value declares and
    refuses it from its shape, as it refuses a large array."""
    lines = _in_child(_DECLARING_MORE_THAN_THEY_HOLD)
    assert len(lines) == 6, lines
    for name, said in lines.items():
        assert said.startswith("InputTooLargeError") and "before it was read" in said, (
            name, said)


def test_a_list_holding_an_array_counts_the_arrays_elements_before_converting_it():
    """A list holding a broadcast view of one value declared one element per list item:
    numpy's conversion then copied the view whole (a list holding a (3 * 10^8, 4) view
    took 11 s and 4.6 GB before its shape was refused; this one asks for petabytes)."""
    huge = [np.broadcast_to(np.float32(0), (10**15, 4))]
    out = _run(huge, max_size=10**6)
    assert [f.check for f in out.findings] == ["size"] and "declares more than" in (
        out.findings[0].reason)
    assert _run([np.zeros(4), np.ones(4)], max_size=10).findings == []  # 8 elements


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn"])
def test_nan_and_inf_are_found_in_bfloat16_and_float8_numpy_arrays(dtype):
    """ml_dtypes' numpy arrays (what Keras and TensorFlow hand over for bfloat16, and a
    caller may feed a model declaring it) have kind "V", not "f": with no range
    constraint their values were never read, so NaN and inf reached the model."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.ones((3, 4), getattr(ml_dtypes, dtype))
    x[1, 2], x[2, 0] = np.nan, np.inf if dtype == "bfloat16" else np.nan
    out = _run(x, InputSpec("x", dtype=dtype))
    assert [(f.check, f.samples) for f in out.findings] == [("finite", (1, 2))]
    assert _run(np.ones((3, 4), getattr(ml_dtypes, dtype)), InputSpec("x", dtype=dtype)
                ).findings == []


@pytest.mark.parametrize("value, shown", [
    (np.array([["abc"]]), "<U3"), (np.array([[b"abc"]]), "|S3"),
    (np.zeros((1, 2), [("a", "<f4"), ("b", "<i2")]), "[('a', '<f4'), ('b', '<i2')]"),
    (np.zeros((1, 2), "V4"), "|V4"),
], ids=["str", "bytes", "structured", "void"])
def test_a_refused_text_or_record_dtype_is_named_as_numpy_spells_it(value, shown):
    """numpy's ``dtype.name`` gives these by their size in bits (``str96`` for ``<U3``,
    ``void48`` for a record of a float32 and an int16): the message names the dtype as
    the caller wrote it, with its fields."""
    finding, = _run(value).findings
    assert finding.check == "dtype" and f"has dtype {shown} (" in finding.reason


def _missing_spellings():
    from decimal import Decimal

    import pandas as pd

    return [None, float("nan"), np.float64("nan"), np.float32("nan"), np.float16("nan"),
            Decimal("NaN"), pd.NA, pd.NaT, np.datetime64("NaT"), np.timedelta64("NaT")]


@pytest.mark.parametrize("missing", _missing_spellings(), ids=repr)
def test_a_missing_value_among_objects_is_found_however_it_is_spelled(missing):
    """A model taking strings and objects refuses missing values (the null check): numpy's
    float32 NaN, Decimal's, pandas' NA and NaT, numpy's NaT mark one as None does."""
    value = np.array([["a", "b"], ["c", missing]], dtype=object)
    out = _run(value, InputSpec("x", accepts_strings=True))
    assert [(f.check, f.samples) for f in out.findings] == [("null", (1,))]
    assert _run(np.array([["a", "nan"], [0.5, np.float32(2)]], dtype=object),
                InputSpec("x", accepts_strings=True)).findings == []  # values, not missing


@pytest.mark.parametrize("sample_shape, fits", [
    ((5,), False), ((4, 1), False), ((), False), ((4,), True), ((None,), True),
], ids=["other-length", "other-rank", "no-axes", "same", "any-length"])
def test_a_sample_shape_contradicting_the_model_is_refused_when_the_guard_is_built(
        sample_shape, fits):
    """A sample_shape wins over the shape the model declares: (5,) for an estimator
    fitted on 4 features was accepted, then every call was refused, the error naming
    (N, 5) as what the model expects."""
    import aimsec_core
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).random((20, 4))
    model = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    constraints = {"sample_shape": sample_shape}
    if not fits:
        with pytest.raises(ConfigurationError, match=r"contradicts input 'X'.*\(4,\)"):
            aimsec_core.guard(model, sinks=[], constraints=constraints)
        return
    guarded = aimsec_core.guard(model, sinks=[], constraints=constraints)
    np.testing.assert_array_equal(guarded.predict(x), model.predict(x))


def test_infinities_pass_only_where_allowed_and_ranges_still_judge_them():
    mask = np.array([[0.0, -np.inf], [0.0, 0.0]])  # an additive attention mask
    refused = _run(mask)
    assert [f.check for f in refused.findings] == ["finite"]
    assert "allow_inf" in refused.findings[0].reason  # says how to let them through
    assert _run(mask, allow_inf=True).findings == []
    bounded = _run(mask, allow_inf=True, min_value=0)
    assert [f.check for f in bounded.findings] == ["range"] and bounded.flags.tolist() == [
        True, False]
    with_nan = _run(np.array([[np.nan, -np.inf]]), allow_inf=True)
    assert [f.check for f in with_nan.findings] == ["finite"]  # NaN stays refused
    assert "NaN values" in with_nan.findings[0].reason
    with pytest.raises(ConfigurationError, match="allow_inf"):
        Constraints(allow_inf=1)
