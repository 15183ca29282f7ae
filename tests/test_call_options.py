"""The arguments of a guarded call that are not inputs (Keras' ``batch_size``,
``verbose``, ``steps``, ``callbacks``, ``return_dict``, ``training``; onnxruntime's
``run_options`` and ``run_async``'s ``callback``): a bad one is refused before the model
runs with ``InputFormatError`` naming the argument and one ``rejected`` audit line, never
the framework's own error; a good one gives the plain model's answer.

Keras data given as a pipeline that yields no batch (a generator, a ``tf.data.Dataset``,
a ``keras.utils.PyDataset``) is refused as empty with one ``rejected`` line."""

from __future__ import annotations

import functools

import keras
import numpy as np
import onnxruntime
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aimsec_core
from aimsec_core import AimsecError, EmptyInputError, InputFormatError
from tests.cases.onnx_case import session
from tests.conftest import ListSink

tf = pytest.importorskip("tensorflow") if keras.backend.backend() == "tensorflow" else None
RNG = np.random.default_rng(0)
X = RNG.random((6, 3)).astype("float32")
Y = RNG.random((6, 2)).astype("float32")
FEED = {"X": RNG.random((2, 64)).astype("float32")}

#: Anything a caller might pass for an option, right or wrong.
OPTION_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 12), st.sampled_from([0, 10 ** 6, -(10 ** 6)]),
    st.floats(allow_nan=True, width=32), st.sampled_from(["auto", "", "1", "x"]),
    st.builds(np.int64, st.integers(-2, 8)), st.lists(st.integers(0, 2), max_size=2),
    st.just(keras.callbacks.History()), st.just([keras.callbacks.History()]),
    st.just(object()))


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,), name="features"), keras.layers.Dense(2)])
    model.compile(loss="mse")
    return model


@pytest.fixture(scope="module")
def plain() -> keras.Model:
    return _model()


@pytest.fixture
def guarded(plain, sink):
    return aimsec_core.guard(plain, name="options", sinks=[sink])


#: (call, option, bad value): each a way Keras itself fails, or a documented type broken.
KERAS_BAD = [
    ("predict", "batch_size", -1), ("predict", "batch_size", 0), ("predict", "batch_size", 1.5),
    ("predict", "batch_size", "8"), ("predict", "batch_size", True),
    ("predict", "batch_size", 2 ** 63), ("evaluate", "batch_size", 10 ** 30),
    ("predict", "steps", -1), ("predict", "steps", "a"), ("predict", "steps", 1.5),
    ("predict", "verbose", 1.0), ("predict", "verbose", "loud"), ("predict", "verbose", [0]),
    ("predict", "callbacks", 5), ("predict", "callbacks", [5]),
    ("predict", "callbacks", [[keras.callbacks.History(), 5]]),
    ("predict", "callbacks", {"a": keras.callbacks.History()}),
    ("evaluate", "batch_size", -1), ("evaluate", "steps", 0), ("evaluate", "callbacks", [1]),
    ("evaluate", "return_dict", 5), ("test_on_batch", "return_dict", "yes"),
]


def _keras_call(guarded_or_plain, method: str, **options):
    if method == "predict":
        return guarded_or_plain.predict(X, **{"verbose": 0, **options})
    if method == "evaluate":
        return guarded_or_plain.evaluate(X, Y, **{"verbose": 0, **options})
    return getattr(guarded_or_plain, method)(X, Y, **options)


@pytest.mark.parametrize("method,name,value", KERAS_BAD,
                         ids=[f"{m}-{n}={v!r}" for m, n, v in KERAS_BAD])
def test_a_bad_keras_option_is_refused_by_name_before_the_model_runs(guarded, sink, method,
                                                                      name, value, monkeypatch):
    ran = []
    original = getattr(keras.Model, method)

    @functools.wraps(original)  # the same signature and module: only the running is seen
    def spy(*args, **kwargs):
        ran.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(type(guarded.__aimsec_guard__.model), method, spy)
    with pytest.raises(InputFormatError, match=f"argument '{name}' of {method}") as info:
        _keras_call(guarded, method, **{name: value})
    assert info.value.check == "format" and info.value.expected
    assert [e.outcome for e in sink.events] == ["rejected"]
    assert not ran


@pytest.mark.parametrize("call", [
    lambda g: g.predict(X, verbose=0, colour="red"),
    lambda g: g.predict(X, 8, 0, None, None, "extra"),
    lambda g: g.evaluate(X, Y, verbose=0, colour="red"),
    lambda g: g.test_on_batch(X, Y, None, False, "extra"),
    lambda g: g.predict_on_batch(X, 8),
    lambda g: g.predict_on_batch(X, verbose=0),
], ids=["predict-unknown-keyword", "predict-too-many", "evaluate-unknown-keyword",
        "test_on_batch-too-many", "predict_on_batch-too-many",
        "predict_on_batch-unknown-keyword"])
def test_keras_arguments_that_do_not_fit_the_method_are_refused(guarded, sink, call):
    with pytest.raises(InputFormatError, match="do not fit"):
        call(guarded)
    assert [e.outcome for e in sink.events] == ["rejected"]


def test_a_bad_training_flag_is_refused_and_a_good_one_runs(guarded, plain, sink):
    with pytest.raises(InputFormatError, match="argument 'training' of call"):
        guarded(X, training="no")
    expected = keras.ops.convert_to_numpy(plain(X, training=False))
    assert np.array_equal(keras.ops.convert_to_numpy(guarded(X, training=np.bool_(False))),
                          expected)
    assert [e.outcome for e in sink.events] == ["rejected", "allowed"]


@pytest.mark.parametrize("flag", [0, 1, np.int64(0), True, None,
                                  "tensor-true", "tensor-false"])
def test_every_training_flag_keras_reads_as_a_bool_runs_as_plain_keras_does(
        guarded, plain, sink, flag):
    """Keras reads ``training`` by truth value: 0 and 1, and a boolean scalar tensor (the
    flag of code traced by tf.function), are flags, not bad arguments."""
    if isinstance(flag, str):
        flag = keras.ops.convert_to_tensor(flag == "tensor-true")
    expected = keras.ops.convert_to_numpy(plain(X, training=flag))
    assert np.array_equal(keras.ops.convert_to_numpy(guarded(X, training=flag)), expected)
    assert [e.outcome for e in sink.events] == ["allowed"]


@pytest.mark.parametrize("verbose", [None, 3, -1, np.int64(0), False, "auto"])
def test_every_verbosity_keras_takes_runs(guarded, plain, sink, verbose):
    assert np.array_equal(guarded.predict(X, verbose=verbose), plain.predict(X, verbose=0))
    assert [e.outcome for e in sink.events] == ["allowed"]


@pytest.mark.parametrize("flag", [2, -1, 0.5, "yes", [True]])
def test_a_training_flag_that_is_no_bool_is_refused(guarded, sink, flag):
    with pytest.raises(InputFormatError, match="argument 'training' of call"):
        guarded(X, training=flag)
    assert [e.outcome for e in sink.events] == ["rejected"]


class Forwarding(keras.Sequential):
    """A model whose own ``predict`` forwards its options to Keras' by ``**kwargs``."""

    def predict(self, x, **options):
        return super().predict(x, **options)


def test_options_an_override_forwards_by_keyword_are_checked_by_name(sink):
    keras.utils.set_random_seed(0)
    model = Forwarding([keras.Input((3,)), keras.layers.Dense(2)])
    guarded = aimsec_core.guard(model, name="forwarding", sinks=[sink])
    with pytest.raises(InputFormatError, match="argument 'batch_size' of predict"):
        guarded.predict(X, batch_size=-1, verbose=0)
    assert np.array_equal(guarded.predict(X, batch_size=2, verbose=0),
                          model.predict(X, batch_size=2, verbose=0))
    assert [e.outcome for e in sink.events] == ["rejected", "allowed"]


def _gen(n: int):
    for _ in range(n):
        yield X


@pytest.mark.parametrize("method", ["predict", "evaluate"])
def test_a_bad_option_with_a_pipeline_is_refused_before_a_batch_is_read(guarded, sink,
                                                                        method):
    pulled = []

    def source():
        for batch in _gen(3):
            pulled.append(1)
            yield (batch, Y) if method == "evaluate" else batch

    with pytest.raises(InputFormatError, match="argument 'steps'"):
        getattr(guarded, method)(source(), steps=-2, verbose=0)
    assert [e.outcome for e in sink.events] == ["rejected"]
    assert not pulled


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["predict", "evaluate", "test_on_batch"]),
       name=st.sampled_from(["batch_size", "verbose", "steps", "callbacks", "return_dict"]),
       value=OPTION_VALUES)
def test_every_keras_option_value_is_a_typed_refusal_or_the_plain_answer(plain, method,
                                                                         name, value):
    """Whatever an option holds: exactly one audit line, and either the plain model's
    answer or a typed refusal that names the argument; never Keras' own error."""
    if name not in _parameters(plain, method):
        return
    sink = ListSink()
    guarded = aimsec_core.guard(plain, name="options", sinks=[sink])
    try:
        got = _keras_call(guarded, method, **{name: value})
    except AimsecError as exc:
        assert [e.outcome for e in sink.events] == ["rejected"], exc
        assert name in str(exc)
        return
    assert [e.outcome for e in sink.events] == ["allowed"]
    expected = _keras_call(plain, method, **{name: value})
    assert keras.tree.map_structure(lambda a, b: bool(np.array_equal(a, b)), got, expected)


def _parameters(model, method: str) -> set[str]:
    import inspect

    return set(inspect.signature(getattr(model, method)).parameters)


# --- Keras data pipelines that yield no batch -----------------------------------------

class _Empty(keras.utils.PyDataset):
    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int):
        raise IndexError(index)


def _empty_pipelines() -> dict[str, object]:
    pipelines = {"generator": lambda method: _gen(0), "PyDataset": lambda method: _Empty()}
    if tf is not None:
        def sliced(method):
            data = (X, Y) if method == "evaluate" else X
            return tf.data.Dataset.from_tensor_slices(data).batch(2)

        pipelines["tf.data"] = lambda method: sliced(method).take(0)
        # a length TensorFlow cannot know before reading: found empty only by reading it
        pipelines["tf.data-filtered"] = lambda method: sliced(method).filter(
            lambda *batch: False)
    return pipelines


EMPTY = _empty_pipelines()


@pytest.mark.parametrize("method", ["predict", "evaluate"])
@pytest.mark.parametrize("kind", list(EMPTY))
def test_a_pipeline_yielding_no_batch_is_refused_as_empty_with_one_line(guarded, sink, kind,
                                                                        method):
    with pytest.raises(EmptyInputError, match="yields no batch") as info:
        getattr(guarded, method)(EMPTY[kind](method), verbose=0)
    assert info.value.check == "empty"
    assert [e.outcome for e in sink.events] == ["rejected"]
    assert sink.events[0].verdict.findings[0].check == "empty"


class _Broken(keras.utils.PyDataset):
    """A data set whose reading fails before its first batch (the caller's own bug)."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise _SourceError("the caller's data source failed")


class _SourceError(RuntimeError):
    pass


def _raising_generator():
    raise _SourceError("the caller's data source failed")
    yield X  # a generator that raises on its first next()


@pytest.mark.parametrize("method", ["predict", "evaluate"])
@pytest.mark.parametrize("source", [_raising_generator, _Broken], ids=["generator", "PyDataset"])
def test_a_pipeline_that_fails_before_its_first_batch_leaves_one_error_line(
        guarded, sink, source, method):
    """Nothing was screened, yet the call happened: the source's own error goes on to the
    caller as from plain Keras, and the audit trail has its one ``error`` line."""
    with pytest.raises(_SourceError):
        getattr(guarded, method)(source(), verbose=0)
    assert [e.outcome for e in sink.events] == ["error"]
    assert "data source failed" in sink.events[0].error


# --- onnxruntime ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ort_session():
    return session()


ORT_CALLS = {
    "run": lambda s, **k: s.run(None, FEED, **k),
    "run_with_ort_values": lambda s, **k: s.run_with_ort_values(
        None, {"X": onnxruntime.OrtValue.ortvalue_from_numpy(FEED["X"])}, **k),
    "run_async": lambda s, **k: s.run_async(None, FEED, k.pop("callback", _ignore), None,
                                            **k),
}


def _ignore(*args) -> None:
    pass


ORT_BAD = [(method, "run_options", value) for method in ORT_CALLS
           for value in (5, "fast", {"log": 1}, onnxruntime.SessionOptions())] + [
    ("run_async", "callback", value) for value in (None, 5, "print")]


@pytest.mark.parametrize("method,name,value", ORT_BAD,
                         ids=[f"{m}-{n}={type(v).__name__}" for m, n, v in ORT_BAD])
def test_a_bad_onnxruntime_option_is_refused_by_name(ort_session, sink, method, name, value):
    guarded = aimsec_core.guard(ort_session, name="ort-options", sinks=[sink])
    with pytest.raises(InputFormatError, match=f"argument '{name}' of {method}"):
        ORT_CALLS[method](guarded, **{name: value})
    assert [e.outcome for e in sink.events] == ["rejected"]


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(value=st.one_of(OPTION_VALUES, st.builds(onnxruntime.RunOptions)))
def test_every_run_options_value_is_a_typed_refusal_or_the_plain_answer(ort_session, value):
    sink = ListSink()
    guarded = aimsec_core.guard(ort_session, name="ort-options", sinks=[sink])
    try:
        got = guarded.run(None, FEED, run_options=value)
    except AimsecError as exc:
        assert [e.outcome for e in sink.events] == ["rejected"], exc
        assert "run_options" in str(exc)
        return
    assert [e.outcome for e in sink.events] == ["allowed"]
    expected = ort_session.run(None, FEED, run_options=value)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))


# --- scikit-learn ---------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda g, x: g.predict(x, 5), lambda g, x: g.predict(x, colour="red"),
    lambda g, x: g.predict_proba(x, None), lambda g, x: g.decision_function(x, check=True),
], ids=["predict-too-many", "predict-unknown-keyword", "predict_proba-too-many",
        "decision_function-unknown-keyword"])
def test_sklearn_arguments_that_do_not_fit_the_method_are_refused(sink, call):
    from sklearn.linear_model import LogisticRegression

    x = RNG.random((20, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    guarded = aimsec_core.guard(model, name="sk-options", sinks=[sink])
    with pytest.raises(InputFormatError, match="do not fit"):
        call(guarded, x)
    np.testing.assert_array_equal(guarded.predict(x), model.predict(x))
    assert [e.outcome for e in sink.events] == ["rejected", "allowed"]


@pytest.mark.parametrize("call", [
    lambda g, x: g.predict(x, colour="red"),
    lambda g, x: g.predict_proba(x, logisticregression__colour=1),
    lambda g, x: g.score(x, None, weights=[1]),
], ids=["predict", "predict_proba", "score"])
def test_pipeline_keywords_its_last_step_does_not_take_are_refused(sink, call):
    """A Pipeline takes ``**params`` and, with metadata routing off, hands them to its
    last step's method, which raised scikit-learn's own TypeError or ValueError past
    the guard; refused now, naming the step, before anything runs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = RNG.random((20, 3))
    y = (x[:, 0] > 0.5).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    guarded = aimsec_core.guard(model, name="sk-pipeline", sinks=[sink])
    with pytest.raises(InputFormatError, match="last step LogisticRegression"):
        call(guarded, x)
    assert [e.outcome for e in sink.events] == ["rejected"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # the regressor's fit on 20 points
def test_pipeline_keywords_its_last_step_takes_run_as_in_scikit_learn(sink):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = RNG.random((20, 3))
    model = make_pipeline(StandardScaler(), GaussianProcessRegressor()).fit(x, x[:, 0])
    guarded = aimsec_core.guard(model, name="sk-pipeline", sinks=[sink])
    mean, std = guarded.predict(x, return_std=True)
    expected_mean, expected_std = model.predict(x, return_std=True)
    np.testing.assert_array_equal(mean, expected_mean)
    np.testing.assert_array_equal(std, expected_std)
    assert [e.outcome for e in sink.events] == ["allowed"]


class _Raising:
    """An argument whose comparisons, truth value, ``__index__`` and repr raise."""

    def _raise(self, *args):
        raise RuntimeError("hostile argument")

    __eq__ = __bool__ = __index__ = __repr__ = __gt__ = _raise
    __hash__ = object.__hash__


HOSTILE_OPTIONS = [(method, name, value)
                   for method, name in [("predict", "verbose"), ("predict", "batch_size"),
                                        ("predict", "steps"), ("predict", "callbacks"),
                                        ("evaluate", "return_dict"),
                                        ("evaluate", "verbose")]
                   for value in (_Raising(), np.array([0, 1]))]


@pytest.mark.parametrize("method,name,value", HOSTILE_OPTIONS,
                         ids=[f"{m}-{n}-{type(v).__name__}" for m, n, v in HOSTILE_OPTIONS])
def test_an_option_whose_comparisons_raise_is_refused_with_one_line(guarded, sink, method,
                                                                    name, value):
    with pytest.raises(InputFormatError, match=f"argument '{name}' of {method}"):
        _keras_call(guarded, method, **{name: value})
    assert [e.outcome for e in sink.events] == ["rejected"]


@pytest.mark.parametrize("flag", [_Raising(), np.array([True, False])],
                         ids=["raising", "array"])
def test_a_training_flag_whose_truth_raises_is_refused_with_one_line(guarded, sink, flag):
    with pytest.raises(InputFormatError, match="argument 'training' of call"):
        guarded(X, training=flag)
    assert [e.outcome for e in sink.events] == ["rejected"]


@pytest.mark.parametrize("method", ["evaluate", "test_on_batch"])
@pytest.mark.parametrize("value", [0, 1, None, np.int64(1), np.bool_(True)],
                         ids=["0", "1", "None", "int64-1", "bool_-True"])
def test_every_return_dict_keras_reads_as_a_flag_runs_as_plain_keras_does(
        guarded, plain, sink, method, value):
    """Keras reads ``return_dict`` by truth value (``None`` as false), as ``training``."""
    expected = _keras_call(plain, method, return_dict=value)
    assert _keras_call(guarded, method, return_dict=value) == pytest.approx(expected)
    assert [e.outcome for e in sink.events] == ["allowed"]


def _holding_itself():
    loop = [keras.callbacks.History()]
    loop.append(loop)
    return loop


@pytest.mark.parametrize("callbacks", [
    lambda: keras.callbacks.History(), lambda: [[keras.callbacks.History()], ()],
    lambda: ([keras.callbacks.History()], keras.callbacks.History()),
], ids=["bare-callback", "nested-lists", "tuple-of-list-and-callback"])
def test_callbacks_keras_flattens_run_as_in_plain_keras(guarded, plain, sink, callbacks):
    """Keras flattens ``callbacks`` (a bare Callback is a list of one, lists in the list
    are read through): those run, each callback called as plain Keras calls it."""
    assert np.array_equal(guarded.predict(X, verbose=0, callbacks=callbacks()),
                          plain.predict(X, verbose=0, callbacks=callbacks()))
    assert [e.outcome for e in sink.events] == ["allowed"]


def test_callbacks_holding_themselves_are_refused_with_one_line(guarded, sink):
    with pytest.raises(InputFormatError, match="argument 'callbacks' of predict"):
        guarded.predict(X, verbose=0, callbacks=_holding_itself())
    assert [e.outcome for e in sink.events] == ["rejected"]
