"""The torch adapter: a guarded model stays an nn.Module, and detectors' passes leave the
model exactly as found. The behaviours every adapter shares live in the conformance suite."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aimsec_core  # noqa: E402
from aimsec_core import InputFormatError  # noqa: E402
from aimsec_torch import TorchAdapter  # noqa: E402
from tests.conftest import ListSink  # noqa: E402

W = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0]], dtype=np.float32)
B = np.array([0.1, -0.2], dtype=np.float32)
X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [-1.0, 0.0, 0.25]], dtype=np.float32)


def linear() -> nn.Linear:
    """Logits W x + b with hand-set weights: every expectation below is computed by hand."""
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(W))
        model.bias.copy_(torch.from_numpy(B))
    return model


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def hand_gradient(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """d/dx of sum_i CE(W x_i + b, y_i) = W^T (softmax(z_i) - onehot(y_i)) per sample."""
    p = softmax(x @ W.T + B)
    return (p - np.eye(2)[labels]) @ W


def bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(8, 2))


def guarded(model: nn.Module, sink: ListSink | None = None, **kw):
    return aimsec_core.guard(model, name="t", sinks=[sink] if sink is not None else [], **kw)


def state_of(model: nn.Module):
    """Everything a detector pass must leave alone."""
    return ([(n, p.grad, p.requires_grad) for n, p in model.named_parameters()],
            [(n, m.training) for n, m in model.named_modules()],
            {k: v.clone() for k, v in model.state_dict().items()})


def assert_unchanged(model: nn.Module, before) -> None:
    params, modes, state = state_of(model)
    assert params == before[0]  # .grad still None, requires_grad as it was
    assert modes == before[1]
    for key, value in state.items():
        assert torch.equal(value, before[2][key]), key  # BatchNorm statistics included


# -- the adapter -------------------------------------------------------------------------


def test_accepts_modules_only_and_never_a_guarded_one(monkeypatch):
    model = linear()
    assert TorchAdapter.accepts(model)
    assert not TorchAdapter.accepts(guarded(model))
    assert not TorchAdapter.accepts(np.zeros(3))
    monkeypatch.setitem(sys.modules, "torch", None)
    assert not TorchAdapter.accepts(model)


def test_keras_models_on_the_torch_backend_are_left_to_the_keras_adapter():
    code = ("import os; os.environ['KERAS_BACKEND'] = 'torch'\n"
            "import keras, torch\n"
            "from aimsec_torch import TorchAdapter\n"
            "model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n"
            "assert isinstance(model, torch.nn.Module)\n"
            "assert not TorchAdapter.accepts(model)\n")
    pytest.importorskip("keras")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_importing_the_adapter_does_not_import_torch():
    code = "import sys, aimsec_torch; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_signature_is_the_first_floating_parameter_dtype():
    assert TorchAdapter(linear()).signature()[0].dtype == "float32"
    spec = TorchAdapter(linear().double()).signature()[0]
    assert (spec.name, spec.dtype, spec.shape, spec.strict_dtype) == (
        "input", "float64", None, True)
    # no floating-point parameter, or integer indices first: the input, without a dtype
    for model in (nn.ReLU(), nn.Sequential(nn.Embedding(5, 3))):
        spec = TorchAdapter(model).signature()[0]
        assert (spec.name, spec.dtype, spec.strict_dtype) == ("input", None, False)
    # indices into the first embedding's table (or bag's): their number declared
    assert TorchAdapter(nn.Sequential(nn.Embedding(5, 3))).signature()[0].index_rows == 5
    assert TorchAdapter(nn.EmbeddingBag(7, 3)).signature()[0].index_rows == 7
    assert TorchAdapter(nn.ReLU()).signature()[0].index_rows is None
    assert TorchAdapter(Net()).signature()[0].name == "x"  # named after forward's parameter


def test_native_detaches_without_copying():
    x = torch.rand(2, 3, requires_grad=True)
    out = TorchAdapter(linear()).native(x)
    assert not out.requires_grad and out.data_ptr() == x.data_ptr()
    assert TorchAdapter(linear()).native(np.zeros(3)) is None


# -- the guarded module ------------------------------------------------------------------


def test_the_guarded_object_is_an_nn_module_giving_the_same_output(sink):
    model = linear()
    g = guarded(model, sink)
    assert isinstance(g, nn.Module)
    x = torch.from_numpy(X)
    assert torch.equal(g(x), model(x))
    assert g.last_verdict.allowed and sink.outcomes == ["allowed"]
    assert aimsec_core.unguard(g) is model


def test_no_grad_and_inference_mode():
    model = linear()
    g = guarded(model)
    x = torch.from_numpy(X)
    with torch.no_grad():
        out = g(x)
    assert not out.requires_grad and torch.equal(out, model(x).detach())
    with torch.inference_mode():
        inner = torch.from_numpy(X).clone()  # an inference tensor
        out = g(inner)
    assert out.is_inference() and torch.equal(out, model(x).detach())
    attached = g(x)  # grad mode on: the same graph the plain call builds
    assert attached.grad_fn is not None


def test_train_and_eval_set_the_originals_mode():
    model = bn_net()
    g = guarded(model)
    assert g.eval() is g
    assert not model.training and not any(m.training for m in model.modules())
    g.train()
    assert model.training and all(m.training for m in model.modules())
    model.eval()  # and the other way round: one mode, read from the original
    assert not g.training


def test_to_and_double_after_guarding(sink):
    model = linear()
    g = guarded(model, sink)
    assert g.to("cpu") is g
    assert g.double() is g
    assert model.weight.dtype == torch.float64  # through the shared parameters
    x = torch.from_numpy(X).double()
    assert torch.equal(g(x), model(x))
    with pytest.raises(InputFormatError, match="float32.*float64") as caught:
        g(torch.from_numpy(X))
    assert isinstance(caught.value, ValueError)
    assert sink.outcomes == ["allowed", "rejected"]


def test_float64_into_a_float32_model_is_a_format_error_not_a_torch_error(sink):
    g = guarded(linear(), sink, mode="monitor")  # refused even in monitor mode
    with pytest.raises(InputFormatError, match="float64") as caught:
        g(torch.from_numpy(X).double())
    assert caught.value.expected == "float32" and caught.value.received == "float64"
    assert sink.outcomes == ["rejected"]


def test_a_wrong_dtype_is_told_how_to_convert_in_torch_words(sink):
    """The hint was numpy's ``x.astype('float32')``, which a torch tensor does not have."""
    with pytest.raises(InputFormatError, match=r"x\.to\(torch\.float32\)") as caught:
        guarded(linear(), sink)(torch.from_numpy(X).double())
    assert "astype" not in str(caught.value)
    torch.zeros(1).to(getattr(torch, caught.value.expected))  # the hint is real torch


def test_parameters_and_buffers_are_the_originals_objects():
    model = bn_net()
    g = guarded(model)
    assert [id(p) for p in g.parameters()] == [id(p) for p in model.parameters()]
    assert [n for n, _ in g.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert [id(b) for b in g.buffers()] == [id(b) for b in model.buffers()]
    assert g[1] is model[1] and len(g) == len(model)  # containers index as before


def test_state_dict_keys_equal_and_checkpoints_load_both_ways():
    model = bn_net()
    g = guarded(model)
    assert list(g.state_dict()) == list(model.state_dict())
    other = bn_net()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    g.load_state_dict(other.state_dict())
    assert torch.equal(model[0].weight, other[0].weight)
    fresh = bn_net()
    fresh.load_state_dict(g.state_dict())  # strict: same keys, nothing extra
    assert torch.equal(fresh[0].weight, other[0].weight)
    # nested inside a bigger model, the keys are still those of the plain model
    outer, plain = nn.ModuleDict({"net": g}), nn.ModuleDict({"net": bn_net()})
    assert list(outer.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(outer.state_dict())
    outer.load_state_dict(plain.state_dict())


def test_a_training_step_through_the_guarded_module_updates_the_original():
    torch.manual_seed(0)
    model = bn_net()
    g = guarded(model)
    g.train()
    before = model[0].weight.detach().clone()
    optimizer = torch.optim.SGD(g.parameters(), lr=0.1)
    x, y = torch.rand(16, 3), torch.randint(0, 2, (16,))
    optimizer.zero_grad()
    nn.functional.cross_entropy(g(x), y).backward()
    optimizer.step()
    assert model[0].weight.grad is not None
    assert not torch.equal(model[0].weight, before)


def test_hooks_on_the_original_and_on_the_guarded_module_fire_once():
    model = linear()
    calls: list[str] = []
    model.register_forward_pre_hook(lambda m, args: calls.append("pre"))
    model.register_forward_hook(lambda m, args, out: calls.append("post"))
    g = guarded(model)
    g.register_forward_hook(lambda m, args, out: calls.append("guarded"))
    with torch.no_grad():
        g(torch.from_numpy(X))
    assert calls == ["pre", "post", "guarded"]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = linear()
        self.temperature = 1.0

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.fc(x) * scale / self.temperature

    def describe(self) -> str:
        return "net"


def test_attributes_read_and_write_through_to_the_original(sink):
    model = Net()
    g = guarded(model, sink)
    assert g.fc is model.fc and g.describe() == "net"
    g.temperature = 2.0
    assert model.temperature == 2.0
    x = torch.from_numpy(X)
    with torch.no_grad():
        assert torch.equal(g(x, scale=3.0), model(x, scale=3.0))
        assert torch.equal(g(x=x), model(x=x))  # keyword input is screened too
        with pytest.raises(InputFormatError):
            g(x=x.double())
    assert sink.outcomes == ["allowed", "allowed", "rejected"]


def test_a_tensor_requiring_grad_is_validated_without_building_a_graph():
    saved: list[int] = []

    def pack(t):
        saved.append(1)
        return t

    x = torch.rand(4, 3, requires_grad=True)
    g = guarded(linear(), constraints={"min_value": 0, "max_value": 1, "max_gradient": 5,
                                       "min_sparsity": 0.1})
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        x.amin(dim=1)  # the probe works: a reduction on x itself saves tensors
        assert saved
        saved.clear()
        g.__aimsec_guard__.screen({"input": x})
    assert saved == [] and x.grad is None and x.grad_fn is None


def test_unusable_tensors_are_format_errors():
    g = guarded(linear())
    for bad in (torch.from_numpy(X).to_sparse(), torch.empty(2, 3, device="meta")):
        with pytest.raises(InputFormatError, match="expected"):
            g(bad)


@pytest.mark.parametrize("dtype", ["complex32", "float4_e2m1fn_x2"])
def test_tensors_of_dtypes_numpy_lacks_beyond_bfloat16_are_refused_by_their_dtype(dtype):
    """numpy has neither torch's complex32 nor float4: reading such a tensor through DLPack
    (for the content hash) raised torch's RuntimeError ("Unsupported dtype in DLTensor")
    out of the guarded call instead of the dtype refusal."""
    if not hasattr(torch, dtype):
        pytest.skip(f"this torch has no {dtype}")
    sink = ListSink()
    g = guarded(linear(), sink)
    x = torch.zeros(3, 3, dtype=getattr(torch, dtype))
    with pytest.raises(InputFormatError, match=f"dtype {dtype}"):
        g(x)
    assert sink.outcomes == ["rejected"]


def test_bfloat16_model():
    model = linear().to(torch.bfloat16)
    g = guarded(model)
    x = torch.from_numpy(X).to(torch.bfloat16)
    assert torch.equal(g(x), model(x))


def test_deepcopy_and_pickle_keep_one_guarded_model():
    sink = ListSink()
    model = bn_net()
    g = guarded(model, sink)
    twin = copy.deepcopy(g)
    inner = aimsec_core.unguard(twin)
    assert inner is not model and twin[0] is inner[0]
    assert [id(p) for p in twin.parameters()] == [id(p) for p in inner.parameters()]
    twin.eval()(torch.rand(2, 3))
    assert sink.outcomes == ["allowed"]  # the copy writes to the same sinks
    loaded = pickle.loads(pickle.dumps(g))
    assert loaded.__aimsec_guard__.name == "t"
    assert list(loaded.state_dict()) == list(model.state_dict())
    assert loaded[0].weight is aimsec_core.unguard(loaded)[0].weight


# -- detector support: scores and gradients ----------------------------------------------


def test_scores_are_softmax_probabilities_in_eval_mode():
    model = nn.Sequential(linear(), nn.Dropout(0.9)).train()
    before = state_of(model)
    scores = TorchAdapter(model).scores(torch.from_numpy(X))
    np.testing.assert_allclose(scores, softmax(X @ W.T + B), rtol=1e-6)
    assert_unchanged(model, before)
    np.testing.assert_allclose(TorchAdapter(model).scores(X), scores)  # numpy input too


@pytest.mark.parametrize("context", ["grad", "no_grad", "inference_mode"])
def test_input_gradient_by_hand(context):
    model = linear()
    model.bias.requires_grad_(False)  # a frozen parameter must stay frozen
    before = state_of(model)
    labels = np.array([0, 1, 1])
    scope = {"grad": torch.enable_grad, "no_grad": torch.no_grad,
             "inference_mode": torch.inference_mode}[context]
    with scope():
        x = torch.from_numpy(X).clone()
        grad = TorchAdapter(model).input_gradient(x, labels)
    assert grad.device == x.device and grad.shape == x.shape
    np.testing.assert_allclose(grad.numpy(), hand_gradient(X, labels), rtol=1e-5, atol=1e-6)
    assert_unchanged(model, before)
    assert all(p.grad is None for p in model.parameters())


def test_input_gradient_uses_eval_mode_and_restores_mixed_modes():
    model = bn_net().train()
    model[1].eval()  # a frozen BatchNorm inside a training model
    before = state_of(model)
    x = torch.rand(6, 3)
    adapter = TorchAdapter(model)
    first = adapter.input_gradient(x, torch.tensor([0, 1, 0, 1, 0, 1]))
    second = adapter.input_gradient(x, torch.tensor([0, 1, 0, 1, 0, 1]))
    assert torch.equal(first, second)  # dropout off: eval mode during the pass
    assert_unchanged(model, before)


class _Marked(torch.Tensor):
    """A tensor subclass (its own __torch_function__ may take calls over)."""


@pytest.mark.parametrize("path", ["tensor", "subclass"])
def test_forward_with_gradient_is_one_forward_and_one_backward_at_the_prediction(path):
    model = linear().eval()
    forwards: list[int] = []
    model.register_forward_hook(lambda m, a, o: forwards.append(1))
    before = state_of(model)
    x = torch.from_numpy(X)
    if path == "subclass":
        x = x.as_subclass(_Marked)
    with torch.no_grad():
        output, scores, grad = TorchAdapter(model).forward_with_gradient(model, x)
        plain = model(x)
    assert forwards == [1, 1]  # ours, then the plain call above
    assert torch.equal(output, plain) and not output.requires_grad
    logits = X @ W.T + B
    np.testing.assert_allclose(scores, softmax(logits), rtol=1e-6)
    np.testing.assert_allclose(grad.numpy(), hand_gradient(X, logits.argmax(axis=1)),
                               rtol=1e-5, atol=1e-6)
    assert_unchanged(model, before)
    assert not x.requires_grad


def test_forward_with_gradient_under_inference_mode():
    model = linear()
    with torch.inference_mode():
        x = torch.from_numpy(X).clone()
        output, _, grad = TorchAdapter(model).forward_with_gradient(model, x)
    logits = X @ W.T + B
    np.testing.assert_allclose(output.numpy(), logits, rtol=1e-6)
    np.testing.assert_allclose(grad.numpy(), hand_gradient(X, logits.argmax(axis=1)),
                               rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_forward_with_gradient_while_training_keeps_the_graph_to_the_parameters():
    model, reference = bn_net().train(), bn_net().train()
    x, y = torch.rand(8, 3), torch.randint(0, 2, (8,))
    torch.manual_seed(1)
    output, _, grad = TorchAdapter(model).forward_with_gradient(model, x)
    assert output.grad_fn is not None and grad.shape == x.shape
    assert all(p.grad is None for p in model.parameters())  # autograd.grad, not .backward
    nn.functional.cross_entropy(output, y).backward()  # the caller's own training step
    torch.manual_seed(1)  # same dropout mask
    nn.functional.cross_entropy(reference(x), y).backward()
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad)
    assert torch.equal(model[1].running_mean, reference[1].running_mean)  # one forward


def test_forward_with_gradient_keeps_the_callers_input_graph():
    model = linear()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.from_numpy(X).requires_grad_(True)
    output, _, grad = TorchAdapter(model).forward_with_gradient(model, x)
    assert x.grad is None
    output.sum().backward()  # the caller's attack step reaches x
    np.testing.assert_allclose(x.grad.numpy(), np.tile(W.sum(axis=0), (3, 1)), rtol=1e-6)


def test_gradients_refuse_integer_input():
    with pytest.raises(TypeError, match="floating-point"):
        TorchAdapter(linear()).input_gradient(torch.zeros(2, 3, dtype=torch.int64), [0, 1])


# -- the content hash: SHA-256 over the exact bytes, wherever the tensor lives ------------


def test_host_bytes_are_the_exact_values_in_c_order():
    adapter = TorchAdapter(linear())
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert bytes(adapter.host_bytes(x.t())) == x.t().contiguous().numpy().tobytes()
    b = torch.tensor([1.0, -2.5, 3.0e38], dtype=torch.bfloat16)
    assert bytes(adapter.host_bytes(b)) == b.view(torch.int16).numpy().tobytes()  # no widening
    neg = torch.tensor([0.5, 0.25])._neg_view()
    assert bytes(adapter.host_bytes(neg)) == np.array([-0.5, -0.25], np.float32).tobytes()


def test_one_content_hashes_the_same_whichever_path_reads_it():
    """The core reads CPU float tensors itself; other tensors come through host_bytes
    (what a CUDA tensor takes): both are SHA-256 over the same bytes."""
    from aimsec_core.arrays import content_hash

    adapter = TorchAdapter(linear())
    x = torch.rand(4, 300, generator=torch.Generator().manual_seed(0))
    read_by_core = content_hash([adapter.native(x)], adapter.host_bytes)
    forced = content_hash([_OffHost(x)], adapter.host_bytes)
    assert read_by_core == forced
    y = x.clone()
    y[3, 299] = -y[3, 299]  # one sign bit
    assert content_hash([y], adapter.host_bytes) != read_by_core
    b = x.to(torch.bfloat16)
    c = b.clone()
    c.view(torch.int16)[0, 0] ^= 1  # one mantissa bit, lost if bfloat16 were widened
    assert content_hash([b], adapter.host_bytes) != content_hash([c], adapter.host_bytes)


class _OffHost:
    """A CPU tensor presented to the core as if it lived on an accelerator."""

    def __init__(self, tensor):
        self.tensor, self.dtype, self.shape = tensor, tensor.dtype, tensor.shape

    def __getattr__(self, name):
        return getattr(self.tensor, name)


# -- detectors on the real call ----------------------------------------------------------


def test_a_calibrated_guard_shares_one_forward_pass_with_the_gradient_detector(sink):
    from tests.cases import digits
    from tests.cases.torch_case import CASE

    model = copy.deepcopy(CASE.model())
    x = CASE.to_native(digits()[0])
    g = aimsec_core.guard(model, name="t", mode="monitor", sinks=[sink],
                          constraints={"min_value": 0, "max_value": 1})
    g.calibrate(x[:400], detectors=["gradient", "margin"])
    forwards: list[int] = []
    model.register_forward_hook(lambda m, a, o: forwards.append(1))
    before = state_of(model)
    with torch.no_grad():
        out = g(x[400:432])
    assert forwards == [1]  # the prediction and the gradient came from one forward pass
    assert not out.requires_grad and torch.equal(out, model(x[400:432]))
    assert set(g.last_verdict.scores) >= {"gradient", "margin", "suspicion"}
    assert_unchanged(model, before)
    g.train()  # while training, the output still reaches the parameters
    loss = nn.functional.cross_entropy(g(x[:16]), torch.zeros(16, dtype=torch.long))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_a_calibrated_guard_keeps_the_callers_graph_exactly():
    """Frozen model: the output reaches x only when x requires grad, as the plain call's."""
    model = linear()
    for p in model.parameters():
        p.requires_grad_(False)
    g = guarded(model)
    rng = np.random.default_rng(0)
    g.calibrate(torch.from_numpy(rng.random((60, 3), dtype=np.float32)),
                detectors=["gradient"])
    x = torch.from_numpy(X)
    assert not g(x).requires_grad  # grad mode on, nothing requires grad: detached
    attack = torch.from_numpy(X).requires_grad_(True)
    out = g(attack)
    assert "gradient" in g.last_verdict.scores and attack.grad is None
    out.sum().backward()
    np.testing.assert_allclose(attack.grad.numpy(), np.tile(W.sum(axis=0), (3, 1)), rtol=1e-6)


def test_overlapping_eval_passes_in_two_threads_restore_train_mode():
    """Two threads' detector passes overlap on a model in train mode: each used to save
    the modes it found, so the second saved eval mode and, leaving last, left the model
    in eval mode for good (dropout off in training). The passes now share one switch."""
    import threading

    from aimsec_torch import _evaluating

    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    inside: list[bool] = []  # the mode the second pass saw, twice

    def first() -> None:
        with _evaluating(model):
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with _evaluating(model):
            inside.append(model.training)
            second_in.set()
            first_out.wait(5)
            inside.append(model.training)  # still inside this pass

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert inside == [False, False]
    assert model.training and all(m.training for m in model.modules())


@pytest.mark.xfail(strict=True, reason="known gap: the detectors' passes run the model with "
                   "its hooks, so a module's backward hook fires for the gradient detector's "
                   "backward (under no_grad too) and, in train mode, forward hooks fire for "
                   "the detectors' own eval-mode passes; whether those passes should fire the "
                   "user's hooks (pruning and reparametrisations are hooks) is a core decision")
def test_user_hooks_see_only_the_callers_passes_with_a_calibrated_guard():
    model = bn_net().eval()
    g = guarded(model, mode="monitor")
    rng = np.random.default_rng(0)
    g.calibrate(torch.from_numpy(rng.random((60, 3), dtype=np.float32)),
                detectors=["gradient"])
    seen: list[str] = []
    model[0].register_forward_hook(lambda m, a, o: seen.append("forward"))
    model[0].register_full_backward_hook(lambda m, gi, go: seen.append("backward"))
    x = torch.from_numpy(X)
    with torch.no_grad():
        g(x)  # an eval loop: the plain model runs no backward here
    g.train()
    nn.functional.cross_entropy(g(x), torch.tensor([0, 1, 0])).backward()
    assert seen == ["forward", "forward", "backward"]
