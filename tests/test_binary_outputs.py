"""Binary classifiers with a single output column (one logit, or a sigmoid's probability).

Such a column is a two-class model, not a one-class one: the class probabilities are
``[1 - p, p]``, the gradient is that of the predicted class's cross-entropy, and the
detectors that read the margin (``boundary``, ``robust``) score it like any other model.
Before, a Keras ``Dense(1, activation="sigmoid")`` model was read as one class (every
probability 1, a zero gradient) and its confidence detectors scored 0 on every input.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aimsec_core
from aimsec_core.detection import binary_probabilities
from aimsec_core.monitoring.outputs import predicted_classes


def _data(n: int = 240, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, d)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 1.0).astype(np.int64)
    return x, y


def _torch_binary(sigmoid: bool):
    torch = pytest.importorskip("torch")
    from torch import nn

    x, y = _data()
    torch.manual_seed(0)
    layers = [nn.Linear(x.shape[1], 16), nn.ReLU(), nn.Linear(16, 1)]
    model = nn.Sequential(*(layers + [nn.Sigmoid()] if sigmoid else layers))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).float()
    loss_fn = nn.BCELoss() if sigmoid else nn.BCEWithLogitsLoss()
    for _ in range(150):
        optimiser.zero_grad()
        loss_fn(model(xt)[:, 0], yt).backward()
        optimiser.step()
    return model.eval(), x


@pytest.mark.parametrize("sigmoid", [False, True], ids=["logit", "nn.Sigmoid"])
def test_torch_single_column_reads_as_two_classes(sigmoid):
    torch = pytest.importorskip("torch")
    model, x = _torch_binary(sigmoid)
    adapter = aimsec_core.guard_of(aimsec_core.guard(model, sinks=[])).adapter
    with torch.no_grad():
        column = model(torch.from_numpy(x[:20]))[:, 0].double().numpy()
    p = column if sigmoid else 1 / (1 + np.exp(-column))
    scores = adapter.scores(x[:20])
    assert scores.shape == (20, 2)
    np.testing.assert_allclose(scores[:, 1], p, atol=1e-5)
    # the gradient of the predicted class's cross-entropy, not the zero of a one-class model
    labels = scores.argmax(axis=1)
    gradient = adapter.input_gradient(x[:20], labels).numpy()
    leaf = torch.from_numpy(x[:20]).requires_grad_(True)
    q = model(leaf)[:, 0] if sigmoid else torch.sigmoid(model(leaf)[:, 0])
    q = q.double()
    chosen = torch.where(torch.from_numpy(labels) == 1, q, 1 - q)
    (expected,) = torch.autograd.grad(-torch.log(chosen).sum(), leaf)
    np.testing.assert_allclose(gradient, expected.numpy(), rtol=1e-3, atol=1e-6)
    assert np.abs(gradient).sum() > 0


@pytest.mark.parametrize("sigmoid", [False, True], ids=["logit", "nn.Sigmoid"])
def test_torch_binary_model_is_screened_by_its_margin(sigmoid):
    torch = pytest.importorskip("torch")
    model, x = _torch_binary(sigmoid)
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor")
    guarded.calibrate(torch.from_numpy(x[:160]))
    with torch.no_grad():
        guarded(torch.from_numpy(x[160:]))
    scores = guarded.last_verdict.scores
    # one class would score 0 on every input: a two-class model's margins differ
    assert np.ptp(scores["boundary"]) > 0 and np.ptp(scores["robust"]) > 0


def test_keras_sigmoid_output_reads_as_two_classes():
    keras = pytest.importorskip("keras")
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((x.shape[1],)),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=5, verbose=0)
    adapter = aimsec_core.guard_of(aimsec_core.guard(model, sinks=[])).adapter
    p = np.asarray(model(x[:20], training=False), dtype=np.float64)[:, 0]
    scores = adapter.scores(x[:20])
    assert scores.shape == (20, 2)
    np.testing.assert_allclose(scores[:, 1], p, atol=1e-6)
    gradient = np.asarray(adapter.input_gradient(x[:20], scores.argmax(axis=1)))
    assert np.abs(gradient).sum(axis=1).min() > 0

    guarded = aimsec_core.guard(model, sinks=[], mode="monitor")
    guarded.calibrate(x[:160])
    guarded.predict(x[160:], verbose=0)
    scores = guarded.last_verdict.scores
    assert np.ptp(scores["boundary"]) > 0 and np.ptp(scores["robust"]) > 0


@pytest.mark.parametrize(("column", "expected"), [
    ([0.2, 0.7, 0.5, 0.9], [0, 1, 0, 1]),      # probabilities: threshold 0.5
    ([-2.0, 0.3, 1.5, -0.1], [0, 1, 1, 0]),    # logits: threshold 0
    ([0.0, 1.0, 2.0, 1.0], [0, 1, 2, 1]),      # labels as they are
])
def test_monitoring_reads_a_single_column_as_binary_classes(column, expected):
    output = np.asarray(column, dtype=np.float32)[:, None]
    assert predicted_classes(output, len(column)) == expected



class _Opaque:
    """An output object no array library reads (as onnxruntime's OrtValue)."""

    def __init__(self, values):
        self.values = values


def test_monitoring_reads_outputs_no_array_library_reads_through_the_adapter():
    scores = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    output = [_Opaque(scores)]
    assert predicted_classes(output, 2) is None  # nothing reads it: not learned from
    native = lambda value: value.values if isinstance(value, _Opaque) else None  # noqa: E731
    assert predicted_classes(output, 2, native) == [1, 0]

    def broken(value):
        raise TypeError("not ours")

    assert predicted_classes(output, 2, broken) is None  # the adapter's error: no class

def _onnx_binary(sigmoid: bool, tmp_path=None):
    """A linear binary classifier as an ONNX graph (MatMul, Add, then Sigmoid or not),
    opened from bytes or from a file."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([[3.0], [3.0], [0.5], [0.0], [0.0], [-0.5]], dtype=np.float32)
    b = np.array([-3.0], dtype=np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]),
             helper.make_node("Add", ["z", "b"], ["logit" if sigmoid else "score"])]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["logit"], ["score"]))
    graph = helper.make_graph(
        nodes, "binary", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if tmp_path is None:
        return ort.InferenceSession(model.SerializeToString()), w, b
    path = tmp_path / "binary.onnx"
    onnx.save(model, str(path))
    return ort.InferenceSession(str(path)), w, b


@pytest.mark.parametrize("sigmoid", [False, True], ids=["logit", "Sigmoid"])
@pytest.mark.parametrize("from_file", [False, True], ids=["bytes", "file"])
def test_onnx_single_column_reads_as_two_classes(sigmoid, from_file, tmp_path):
    session, w, b = _onnx_binary(sigmoid, tmp_path if from_file else None)
    x, _ = _data(40)
    adapter = aimsec_core.guard_of(aimsec_core.guard(session, sinks=[])).adapter
    scores = adapter.scores(x)
    z = (x.astype(np.float64) @ w.astype(np.float64) + b)[:, 0]
    assert scores.shape == (40, 2)
    np.testing.assert_allclose(scores[:, 1], 1 / (1 + np.exp(-z)), atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=4), st.booleans())
def test_a_logit_column_is_read_as_logits_whatever_its_values(logits, column):
    # a batch whose every logit is 1 gives rows [0, 1] that sum to 1: they were kept as
    # probabilities (class 1 certain) instead of [1 - sigmoid(1), sigmoid(1)]
    z = np.asarray(logits)
    probabilities = binary_probabilities(z[:, None] if column else z, probability=False)
    np.testing.assert_allclose(probabilities[:, 1], 1 / (1 + np.exp(-z)), rtol=1e-12)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_a_batch_of_logits_equal_to_one_is_not_certain():
    probabilities = binary_probabilities(np.ones((3, 1)), probability=False)
    np.testing.assert_allclose(probabilities[:, 1], 1 / (1 + np.exp(-1.0)))


def _onnx_session(nodes, output_shape, initializers=()):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([[3.0], [3.0], [0.5], [0.0], [0.0], [-0.5]], dtype=np.float32)
    b = np.array([-3.0], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]),
         helper.make_node("Add", ["z", "b"], ["logit"]), *nodes], "binary",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, output_shape)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
         *initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString()), w, b


def _squeeze(source):
    from onnx import helper, numpy_helper

    return ([helper.make_node("Squeeze", [source, "axis"], ["score"])],
            [numpy_helper.from_array(np.array([1], dtype=np.int64), "axis")])


@pytest.mark.parametrize("ending", ["Sigmoid, Identity", "Sigmoid, Squeeze", "Squeeze"])
def test_onnx_sigmoid_is_found_through_nodes_that_only_move_values(ending):
    # exporters often end a graph with Identity or a reshape after the Sigmoid: its
    # probability was read as a logit (sigmoid applied twice)
    from onnx import helper

    sigmoid = ending.startswith("Sigmoid")
    nodes = [helper.make_node("Sigmoid", ["logit"], ["p"])] if sigmoid else []
    source = "p" if sigmoid else "logit"
    if ending.endswith("Identity"):
        nodes.append(helper.make_node("Identity", [source], ["score"]))
        session, w, b = _onnx_session(nodes, ["N", 1])
    else:
        extra_nodes, initializers = _squeeze(source)
        session, w, b = _onnx_session(nodes + extra_nodes, ["N"], initializers)
    x, _ = _data(40)
    scores = aimsec_core.guard_of(aimsec_core.guard(session, sinks=[])).adapter.scores(x)
    z = (x.astype(np.float64) @ w.astype(np.float64) + b)[:, 0]
    assert scores.shape == (40, 2)
    np.testing.assert_allclose(scores[:, 1], 1 / (1 + np.exp(-z)), atol=1e-5)


def test_onnx_single_column_of_an_unreadable_graph_warns_it_is_taken_for_a_logit(tmp_path):
    session, _, _ = _onnx_binary(True, tmp_path)
    (tmp_path / "binary.onnx").unlink()  # the session runs on; its graph is gone
    adapter = aimsec_core.guard_of(aimsec_core.guard(session, sinks=[])).adapter
    x, _ = _data(4)
    with pytest.warns(RuntimeWarning, match="read as a logit"):
        adapter.scores(x)


def _keras_sigmoid_models():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inner = keras.Sequential([keras.Input((6,)), layers.Dense(4, activation="tanh"),
                              layers.Dense(1, activation="sigmoid")])
    inputs = keras.Input((6,))
    output = layers.Dropout(0.5)(layers.Activation("sigmoid")(layers.Dense(1)(inputs)))
    aux = layers.Dense(3)(inputs)  # built last: the model's last layer, not its output's
    return {
        "nested model": keras.Sequential([keras.Input((6,)), inner]),
        "then Flatten": keras.Sequential([keras.Input((6,)), layers.Dense(1, "sigmoid"),
                                          layers.Flatten()]),
        "shape (n,)": keras.Sequential([keras.Input((6,)), layers.Dense(1, "sigmoid"),
                                        layers.Reshape(())]),
        "functional, Activation then Dropout": keras.Model(inputs, [output, aux]),
    }


@pytest.mark.parametrize("kind", ["nested model", "then Flatten", "shape (n,)",
                                  "functional, Activation then Dropout"])
def test_keras_sigmoid_is_found_where_its_output_comes_from(kind):
    # the last layer alone was read: a sigmoid inside a nested model or before a reshape
    # had its probability read as a logit, and an (n,) output was refused
    model = _keras_sigmoid_models()[kind]
    adapter = aimsec_core.guard_of(aimsec_core.guard(model, sinks=[])).adapter
    x, _ = _data(8)
    output = model(x, training=False)
    p = np.asarray(output[0] if isinstance(output, list) else output, np.float64)
    scores = adapter.scores(x)
    assert scores.shape == (8, 2)
    np.testing.assert_allclose(scores[:, 1], p.reshape(-1), atol=1e-6)
    if kind != "functional, Activation then Dropout":  # gradients need one output
        gradient = np.asarray(adapter.input_gradient(x, scores.argmax(axis=1)))
        assert gradient.shape == x.shape and np.abs(gradient).sum(axis=1).min() > 0


def _sigmoid_in_forward(train: bool):
    """A torch model applying torch.sigmoid inside forward (no nn.Sigmoid module)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Probability(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = nn.Linear(6, 16)
            self.out = nn.Linear(16, 1)

        def forward(self, x):
            return torch.sigmoid(self.out(torch.relu(self.hidden(x))))

    torch.manual_seed(0)
    x, y = _data()
    model = Probability()
    if train:
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y).float()
        for _ in range(150):
            optimiser.zero_grad()
            nn.functional.binary_cross_entropy(model(xt)[:, 0], yt).backward()
            optimiser.step()
    return model.eval(), x, y


def test_a_sigmoid_inside_forward_is_found_at_calibration_and_kept(tmp_path):
    """Read as a logit, a sigmoid's probability put every sample in class 1 and the
    detectors that compare classes learned nothing. Calibration now sees the telltale
    (every logit within [0, 1]), reads the column as a probability, says so, and records
    it: the guard and any guard using the saved calibration read it the same way."""
    torch = pytest.importorskip("torch")
    model, x, y = _sigmoid_in_forward(train=True)
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor")
    adapter = aimsec_core.guard_of(guarded).adapter
    assert not adapter.sigmoid_output  # no nn.Sigmoid to see
    with pytest.warns(UserWarning, match="reads it as a probability from now on"):
        calibration = guarded.calibrate(torch.from_numpy(x[:160]))
    assert calibration.sigmoid_output
    assert not adapter.sigmoid_output  # the guard's own adapter keeps its reading
    adapter = aimsec_core.guard_of(guarded).scoring_adapter
    assert adapter.sigmoid_output
    with torch.no_grad():
        p = model(torch.from_numpy(x[160:]))[:, 0].double().numpy()
    scores = adapter.scores(x[160:])
    np.testing.assert_allclose(scores[:, 1], p, atol=1e-5)
    assert (scores.argmax(axis=1) == y[160:]).mean() > 0.9
    with torch.no_grad():
        guarded(torch.from_numpy(x[160:]))
    assert np.ptp(guarded.last_verdict.scores["boundary"]) > 0

    path = guarded.save_calibration(tmp_path / "c.npz")
    fresh = aimsec_core.guard(model, sinks=[])
    assert not aimsec_core.guard_of(fresh).scoring_adapter.sigmoid_output
    fresh.load_calibration(path)
    fresh_adapter = aimsec_core.guard_of(fresh).scoring_adapter
    assert fresh_adapter.sigmoid_output
    np.testing.assert_allclose(fresh_adapter.scores(x[160:]), scores, atol=1e-6)


def test_a_logit_model_keeps_its_reading():
    """A logit model's calibration logits leave [0, 1]: nothing is reread, nothing said."""
    torch = pytest.importorskip("torch")
    model, x = _torch_binary(sigmoid=False)
    guarded = aimsec_core.guard(model, sinks=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        calibration = guarded.calibrate(torch.from_numpy(x[:200]), fpr=0.05)
    assert not calibration.sigmoid_output
    assert "sigmoid_output" not in calibration.summary()
    assert not aimsec_core.guard_of(guarded).scoring_adapter.sigmoid_output


def test_a_model_of_one_class_either_way_is_still_reported():
    """Where neither reading gives two classes (an untrained model), the column keeps the
    adapter's reading and calibration warns that every sample got one class."""
    torch = pytest.importorskip("torch")
    model, x, _ = _sigmoid_in_forward(train=False)
    with torch.no_grad():  # the untrained model puts every sample on one side of 0.5
        q = model(torch.from_numpy(x[:160]))[:, 0].numpy()
    assert (q > 0.5).all() or (q < 0.5).all()
    guarded = aimsec_core.guard(model, sinks=[])
    with pytest.warns(UserWarning, match="predicts class 1 for all 160 calibration samples"):
        calibration = guarded.calibrate(torch.from_numpy(x[:160]))
    assert not calibration.sigmoid_output
    assert not aimsec_core.guard_of(guarded).scoring_adapter.sigmoid_output


def test_keras_sigmoid_the_adapter_cannot_see_is_found_at_calibration():
    """A sigmoid inside a Lambda layer carries no activation name: calibration finds it."""
    keras = pytest.importorskip("keras")
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((x.shape[1],)),
                              keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1),
                              keras.layers.Lambda(keras.ops.sigmoid)])
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=30, verbose=0)
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor")
    adapter = aimsec_core.guard_of(guarded).adapter
    assert not adapter.sigmoid_output
    with pytest.warns(UserWarning, match="reads it as a probability from now on"):
        calibration = guarded.calibrate(x[:160])
    assert calibration.sigmoid_output and not adapter.sigmoid_output
    adapter = aimsec_core.guard_of(guarded).scoring_adapter
    assert adapter.sigmoid_output
    p = np.asarray(model(x[160:], training=False), dtype=np.float64)[:, 0]
    np.testing.assert_allclose(adapter.scores(x[160:])[:, 1], p, atol=1e-6)
    guarded.predict(x[160:], verbose=0)
    assert np.ptp(guarded.last_verdict.scores["boundary"]) > 0


def test_a_hidden_sigmoid_is_found_again_at_every_calibration():
    """The second calibration of a guard whose first found a hidden sigmoid used to see
    the adapter already reading a probability, record that it found none, and switch the
    adapter back to logits: the detectors fitted on one reading then screened the other."""
    torch = pytest.importorskip("torch")
    model, x, _ = _sigmoid_in_forward(train=True)
    guarded = aimsec_core.guard(model, sinks=[], mode="monitor")
    guard = aimsec_core.guard_of(guarded)
    with pytest.warns(UserWarning, match="reads it as a probability from now on"):
        first = guarded.calibrate(torch.from_numpy(x[:160]))
    with pytest.warns(UserWarning, match="reads it as a probability from now on"):
        second = guarded.calibrate(torch.from_numpy(x[40:200]))
    assert first.sigmoid_output and second.sigmoid_output
    assert guard.scoring_adapter.sigmoid_output
    guard.calibration = None  # detection off: the adapter reads the model its own way
    assert not guard.scoring_adapter.sigmoid_output
    rebound = guard.copied_for(model)
    assert not rebound.scoring_adapter.sigmoid_output
    rebound.calibration = second
    assert rebound.scoring_adapter.sigmoid_output and not guard.scoring_adapter.sigmoid_output
    assert not guard.adapter.sigmoid_output and not rebound.adapter.sigmoid_output
