"""The guard core under hostile conditions: a disk that fills mid-line, an input another
thread changes between its check and the model reading it."""

from __future__ import annotations

import errno
from decimal import Decimal
import os
import sys

import numpy as np
import pytest

import aimsec_core
from aimsec_core import AuditLog
from aimsec_core.adapter import HostArrays
from aimsec_core.audit import verify_trail
from tests.cases import all_cases, digits
from tests.conftest import ListSink, write_after_check


def _guard(audit: AuditLog) -> aimsec_core.Guard:
    return aimsec_core.Guard(None, HostArrays(None), name="hostile", sinks=[audit],
                             policy=False)


def _call(guard: aimsec_core.Guard, i: int) -> None:
    guard.call({"x": np.full((1, 3), float(i))}, lambda: None)


def _disk_fills_once(monkeypatch, file, *, then_full: bool) -> list[int]:
    """``os.write`` to ``file`` takes half of the next line (the disk filled up); with
    ``then_full`` the write after that fails with ENOSPC as well. Returns the calls made."""
    real = os.write
    state = {"short": True, "full": then_full}
    calls = []

    def write(fd, data):
        if os.path.realpath(f"/proc/self/fd/{fd}") != str(file):
            return real(fd, data)
        calls.append(len(data))
        if state["short"]:
            state["short"] = False
            return real(fd, bytes(data[:len(data) // 2]))
        if state["full"]:
            state["full"] = False
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    return calls


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
@pytest.mark.parametrize("then_full", [True, False], ids=["disk-stays-full", "write-resumes"])
def test_a_line_the_disk_took_only_part_of_leaves_the_trail_verifiable(tmp_path, monkeypatch,
                                                                       caplog, then_full):
    """A short write (disk full, a signal) must not leave half a line in the trail: the
    writer completes the line or removes its start, so later lines chain on and
    ``aimsec audit verify`` still finds the trail intact."""
    audit = AuditLog(tmp_path / "logs")
    guard = _guard(audit)
    _call(guard, 0)
    calls = _disk_fills_once(monkeypatch, audit.file.resolve(), then_full=then_full)
    _call(guard, 1)  # its line fails (the sink error is logged; the call goes on)
    monkeypatch.undo()
    assert calls
    _call(guard, 2)
    result = verify_trail(audit.file)
    assert result.intact, result.reason
    lines = audit.file.read_bytes().splitlines()
    assert len(lines) == (2 if then_full else 3)
    assert all(line.startswith(b'{"time"') and line.endswith(b"}") for line in lines)


class _NoRepr:
    def __repr__(self) -> str:
        raise RuntimeError("this object has no text")


class _SurrogateRepr:
    def __repr__(self) -> str:
        return "\udcff"


@pytest.mark.parametrize("element", [_NoRepr(), _SurrogateRepr()], ids=["raising", "surrogate"])
def test_an_object_array_whose_elements_have_hostile_reprs_leaves_one_line(element):
    """Object arrays are hashed through their elements' text; an element whose ``repr``
    raises or is not encodable must neither crash the call nor cost it its audit line."""
    from aimsec_core.arrays import content_hash

    array = np.array([[element, "a"]], dtype=object)
    assert content_hash([array]) == content_hash([array.copy()])  # deterministic
    assert content_hash([array]) != content_hash([np.array([["b", "a"]], dtype=object)])

    sink = ListSink()
    guard = aimsec_core.Guard(None, HostArrays(None), name="objects", sinks=[sink],
                              policy=False)
    guard.specs_for = lambda names: {n: aimsec_core.InputSpec(n, accepts_strings=True)
                                     for n in names}
    assert guard.call({"x": array}, lambda: "read") == "read"
    assert sink.outcomes == ["allowed"]


CASES = all_cases()


def _writable_host_view(native):
    """The memory behind ``native`` as a writable numpy array (torch and TF tensors on the
    CPU share theirs)."""
    if isinstance(native, np.ndarray):
        return native
    if hasattr(native, "numpy") and type(native).__module__.startswith("torch"):
        return native.numpy()
    return None


def _written_after_check(case, name, write):
    """A guard of ``case``'s model checking values in [0, 1], whose ``write()`` runs after
    its checks and before the model reads the input; and its sink."""
    constraints = {"min_value": 0.0, "max_value": 1.0}
    if not case.declares_shape:
        constraints["sample_shape"] = case.sample_shape
    sink = ListSink()
    guarded = aimsec_core.guard(case.model(), name=name, sinks=[sink],
                                constraints=constraints, policy=False)
    write_after_check(guarded, write)
    return guarded, sink


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_model_reads_exactly_what_was_checked_when_another_thread_changes_the_input(case):
    """Another thread writes out-of-range values into the caller's array after the guard
    checked it and before the model reads it (deterministically: from the guard's clock,
    which stamps the verdict between the two). The model must answer for the checked
    values (or the call be refused), never for values no check saw."""
    x = digits()[0][:4].copy()
    native = case.to_native(x)
    memory = _writable_host_view(native)
    assert memory is not None
    expected = case.call_plain(case.model(), case.to_native(x.copy()))
    guarded, sink = _written_after_check(case, f"toctou-{case.id}",
                                         lambda: memory.__setitem__(..., 1e30))
    try:
        output = case.call_guarded(guarded, native)
    except aimsec_core.AimsecError:
        assert sink.outcomes == ["rejected"]
        return
    assert sink.outcomes == ["allowed"]
    np.testing.assert_array_equal(output, expected)


NUMPY_CASES = [c for c in CASES if isinstance(c.to_native(digits()[0][:1].copy()), np.ndarray)]


@pytest.mark.parametrize("case", NUMPY_CASES, ids=[c.id for c in NUMPY_CASES])
@pytest.mark.parametrize("kind", ["memmap", "masked"])
def test_a_numpy_subclass_is_read_as_checked_too(case, kind, tmp_path):
    """An np.memmap (whose file any process may write) or a masked array was handed to
    scikit-learn and onnxruntime as the caller's object, while the checks read the plain
    array it is read as: a write between the two reached the model unchecked."""
    x = case.to_native(digits()[0][:4].copy())
    expected = case.call_plain(case.model(), x.copy())
    if kind == "memmap":
        native = np.memmap(tmp_path / "x.dat", dtype=x.dtype, mode="w+", shape=x.shape)
        native[...] = x
    else:
        native = np.ma.masked_array(x.copy(), mask=np.zeros(x.shape, bool))
    guarded, sink = _written_after_check(case, f"toctou-{kind}-{case.id}",
                                         lambda: np.asarray(native).__setitem__(..., 1e30))
    output = case.call_guarded(guarded, native)
    assert sink.outcomes == ["allowed"]
    np.testing.assert_array_equal(output, expected)


def test_an_array_reshaped_in_place_before_its_snapshot_is_refused():
    """A numpy array's shape is settable in place: one reshaped by another thread after
    its format check and before the core's copy is refused, never checked or run in a
    shape no check saw."""
    from aimsec_core.adapter import host_snapshot
    from aimsec_core.signature import Constraints
    from aimsec_core.validation import validate

    class Reshaped(HostArrays):
        def snapshot(self, value, array):
            value.shape = (3, 4)  # the other thread's write, between check and copy
            return host_snapshot(value, array)

    out = validate({"x": np.zeros((2, 6), np.float32)}, Reshaped(None), {}, Constraints())
    assert [f.check for f in out.findings] == ["format"] and out.blocked
    assert "changed shape or dtype" in out.findings[0].reason


def test_an_input_too_large_to_copy_is_a_size_refusal_not_a_memory_error(tmp_path):
    """A memmap larger than memory (with max_size raised or off) reached the copy the
    checks read, and numpy's MemoryError came out of the guarded call untyped; it is a
    ``size`` refusal with one audit line, and the model never runs."""
    sink = ListSink()

    class Starved(HostArrays):
        def snapshot(self, value, array):
            raise MemoryError("Unable to allocate 1.19 GiB")  # as numpy says it

    guard = aimsec_core.Guard(None, Starved(None), name="starved", sinks=[sink],
                              policy=False, constraints={"max_size": None})
    native = np.memmap(tmp_path / "x.dat", dtype=np.float32, mode="w+", shape=(2, 6))
    ran = []
    with pytest.raises(aimsec_core.AimsecError, match="could not be copied") as info:
        guard.call({"x": native}, lambda: ran.append(1))
    assert info.value.check == "size" and not ran
    assert sink.outcomes == ["rejected"]


def _ragged_rows():
    tf = pytest.importorskip("tensorflow")
    return tf.ragged.constant([[0.1] * 64, [0.2] * 63])


def _sparse_frame():
    pandas = pytest.importorskip("pandas")
    return pandas.DataFrame(np.full((3, 64), 0.5, np.float32)).astype(
        pandas.SparseDtype("float32", 0))


@pytest.mark.parametrize("make", [_ragged_rows, _sparse_frame], ids=["tf-ragged", "sparse-frame"])
def test_keras_inputs_it_cannot_read_as_checked_are_typed_errors(make):
    """A ``tf.RaggedTensor`` (validation would read a zero-padded copy the model never
    sees) and a DataFrame of sparse columns (Keras refuses them) are refused as a format
    finding with one ``rejected`` line, never reaching the model for a framework error."""
    case = next((c for c in CASES if c.id == "keras"), None)
    if case is None:
        pytest.skip("the Keras adapter is not installed")
    value = make()
    sink = ListSink()
    guarded = aimsec_core.guard(case.model(), name="keras-hostile", sinks=[sink],
                                policy=False)
    with pytest.raises(aimsec_core.InvalidInputError) as caught:
        guarded.predict(value, verbose=0)
    assert caught.value.check == "format"
    assert sink.outcomes == ["rejected"]


def test_a_model_error_whose_message_cannot_be_printed_still_leaves_its_line():
    """A model raising an exception whose ``__str__`` raises: the call's error line is
    written (``<unprintable>`` in place of the message) and the model's error goes on."""
    from sklearn.linear_model import LogisticRegression

    class Unprintable(RuntimeError):
        def __str__(self) -> str:
            raise ValueError("no text for you")

    class Broken(LogisticRegression):
        def predict(self, x):  # type: ignore[no-untyped-def]
            raise Unprintable()

    rng = np.random.default_rng(0)
    model = Broken().fit(rng.random((20, 3)), np.arange(20) % 2)
    sink = ListSink()
    guarded = aimsec_core.guard(model, sinks=[sink])
    with pytest.raises(Unprintable):
        guarded.predict(rng.random((2, 3)))
    assert sink.outcomes == ["error"]
    assert sink.events[0].error == "Unprintable: <unprintable>"


def test_a_client_id_of_a_lying_str_subclass_is_read_as_the_text_it_holds():
    class Lying(str):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, item):  # type: ignore[no-untyped-def]
            return "x" * 100_000

        def __str__(self) -> str:
            return "someone else"

    with aimsec_core.client(Lying("a" * 300)):
        who = aimsec_core.current_client()
    assert type(who) is str and who == "a" * 300
    with pytest.raises(aimsec_core.ConfigurationError):
        with aimsec_core.client(Lying("")):
            pass


def test_an_audit_file_that_is_a_folder_is_refused_when_the_log_is_made(tmp_path):
    from aimsec_core import AIModelProtector

    with pytest.raises(aimsec_core.ConfigurationError, match="not a regular file"):
        AuditLog(file=tmp_path)
    with pytest.raises(aimsec_core.ConfigurationError, match="not a regular file"):
        AIModelProtector("m", log_file=str(tmp_path))


class _Float32WhoseValueRaises(np.float32):
    def __float__(self):
        raise RuntimeError("no value")


class _StrWhoseMethodsRaise(str):
    def __contains__(self, item):
        raise RuntimeError("no membership")

    def isascii(self):
        raise RuntimeError("no isascii")


class _PosingAsStr:
    """``isinstance(x, str)`` is true (through ``__class__``); it is no str at all."""

    __class__ = property(lambda self: str)  # type: ignore[assignment]


@pytest.mark.parametrize("element, spec", [
    (_Float32WhoseValueRaises("nan"), {"accepts_strings": True}),
    (_StrWhoseMethodsRaise("a"), {"dtype": "str"}),
    (_PosingAsStr(), {"dtype": "str"}),
], ids=["float-subclass-missing-check", "str-subclass-text-check", "posing-as-str"])
def test_an_object_whose_methods_raise_is_a_typed_refusal_with_one_line(element, spec):
    """Validation reads each element of an object array (for missing values, for text a
    runtime can read); an element whose own methods raise, or that poses as a ``str``,
    is a typed refusal of that input, recorded once, never the element's own exception
    escaping the guard with no line."""
    sink = ListSink()
    guard = aimsec_core.Guard(None, HostArrays(None), name="objects", sinks=[sink],
                              policy=False)
    guard.specs_for = lambda names: {n: aimsec_core.InputSpec(n, **spec) for n in names}
    with pytest.raises(aimsec_core.InvalidInputError, match="input 'x'") as caught:
        guard.call({"x": np.array([[element, "b"]], dtype=object)}, lambda: "read")
    assert sink.outcomes == ["rejected"]
    assert caught.value.verdict.findings[0].blocking


class _InterruptedWhileRead(Decimal):
    """Reading this element is where an interruption (Ctrl-C, a signal's handler) lands."""

    def is_nan(self):
        raise KeyboardInterrupt


def test_a_call_interrupted_while_its_input_is_screened_still_gets_its_line():
    """An interruption during screening goes on as it came (it is not the input's fault),
    after the call's ``error`` line is written: no call goes unrecorded."""
    sink = ListSink()
    guard = aimsec_core.Guard(None, HostArrays(None), name="objects", sinks=[sink],
                              policy=False)
    guard.specs_for = lambda names: {n: aimsec_core.InputSpec(n, accepts_strings=True)
                                     for n in names}
    with pytest.raises(KeyboardInterrupt):
        guard.call({"x": np.array([[_InterruptedWhileRead("nan")]], dtype=object)},
                   lambda: "read")
    assert sink.outcomes == ["error"]
    assert sink.events[0].error.startswith("KeyboardInterrupt")
    assert not sink.events[0].verdict.allowed


@pytest.mark.parametrize("dtype", ["float8_e5m2", "float8_e4m3fn", "bfloat16"])
def test_the_content_hash_reads_ml_dtypes_arrays_of_any_kind(dtype):
    """ml_dtypes' float8_e5m2 has kind 'f' (its other extra dtypes kind 'V'), and numpy's
    buffer protocol refuses it: the hash took it as a numpy dtype and raised numpy's
    ValueError ('cannot include dtype '5' in a buffer') out of the guarded call."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from aimsec_core.arrays import content_hash

    x = np.ones((3, 4), getattr(ml_dtypes, dtype))
    same, other = x.copy(), x.copy()
    other[0, 0] = 2
    assert content_hash([x]) == content_hash([same]) != content_hash([other])
    assert content_hash([x]) != content_hash([x.view(np.uint8)])  # the dtype is hashed
    if dtype == "float8_e5m2":  # a dtype the checks read: its inf is found, with a line
        sink = ListSink()
        guard = aimsec_core.Guard(None, HostArrays(None), name="f8", sinks=[sink],
                                  policy=False)
        x[1, 1] = np.inf
        with pytest.raises(aimsec_core.NonFiniteInputError):
            guard.call({"input": x}, lambda: None)
        assert len(sink.events) == 1
