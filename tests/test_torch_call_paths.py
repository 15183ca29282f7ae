"""Every way to run a torch model through its guarded module is screened or refused.

Screened (exactly one audit record, a verdict, NaN refused before the model reads it):

- ``guarded(x)``, ``guarded(x=x)``, ``guarded(x, mask=m)``, ``guarded(mask=m, x=x)``
  (arguments bound to ``forward``'s signature; every tensor screened by name);
- ``guarded.forward(x)``, ``guarded.__call__(x)``;
- a custom method of the model calling ``self(x)`` or ``self.forward(x)``;
- ``torch.compile(guarded)`` and ``guarded.compile()`` (the guard runs outside the graph);
- ``torch.func.vmap``, ``grad``, ``jacrev`` and ``functional_call`` (the real values under
  the transform's wrappers are screened);
- ``torch.no_grad()``, ``torch.inference_mode()``, ``nn.DataParallel`` (CPU);
- forward hooks on the guarded module and on the original (each fires once);
- a guarded ``torch.jit.trace``/``torch.jit.script`` module and a guarded
  ``ExportedProgram.module()`` (trace the plain model, then guard the result).

Refused with ``UnguardedCallError`` (the tracer would record the model without its guard):

- ``torch.jit.trace(guarded)``, ``torch.jit.script(guarded)``, ``torch.fx.symbolic_trace``,
  ``torch.export.export(guarded)``; with ``strict=True`` torch's own tracer wraps the error
  (its message still names ``UnguardedCallError`` and the fix);
- a custom method that calls the model's submodules directly (``self.fc(x)``).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aimsec_core  # noqa: E402
from aimsec_core import (InputFormatError, NonFiniteInputError, UnguardedCallError,  # noqa: E402
                         ValueRangeError)
from tests.conftest import ListSink  # noqa: E402

LIMITS = {"min_value": 0.0, "max_value": 1.0}


class Masked(nn.Module):
    """``fc(x * mask)``; remembers every ``x`` it reads (outside transforms)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 2)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not torch.compiler.is_compiling() and type(x) is torch.Tensor:
            self.seen.append(x.detach().clone())
        if mask is not None:
            x = x * mask
        return self.fc(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(dim=1)

    def predict_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).argmax(dim=1)

    def bypass(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)

    def describe(self) -> str:
        return "masked"


def make(sink: ListSink, **constraints):
    model = Masked().eval()
    return model, aimsec_core.guard(model, name="paths", sinks=[sink],
                                    constraints={**LIMITS, **constraints})


X = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
NAN = X.clone()
NAN[1, 2] = math.nan


# -- the input checked is the model's input ---------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, 2.0, -1.0])
def test_keyword_order_does_not_choose_the_screened_input(sink, bad):
    model, g = make(sink)
    x = X.clone()
    x[0, 0] = bad
    with pytest.raises((NonFiniteInputError, ValueRangeError), match="'x'"):
        g(mask=torch.ones(1, 4), x=x)
    assert model.seen == [] and sink.outcomes == ["rejected"]


def test_every_tensor_argument_is_screened_by_name(sink):
    model, g = make(sink)
    with pytest.raises(NonFiniteInputError, match="'mask'"):
        g(X, mask=NAN)
    with pytest.raises(NonFiniteInputError, match=r"'args\[1\]'|'batch\['m'\]'|mask"):
        g(X, NAN)  # positional mask
    assert model.seen == []
    out = g(X, mask=torch.ones(2, 4))
    assert torch.equal(out, model.fc(X)) and g.last_verdict.allowed


def test_tensors_inside_containers_are_screened(sink):
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, inputs: list, extra: dict) -> torch.Tensor:
            return self.fc(inputs[0] + extra["b"])

    g = aimsec_core.guard(Pair(), sinks=[sink], constraints=LIMITS)
    g([X], {"b": X})
    with pytest.raises(NonFiniteInputError, match=r"extra\['b'\]"):
        g([X], {"b": NAN})
    with pytest.raises(ValueRangeError, match=r"inputs\[0\]"):
        g([X + 5], {"b": X})
    assert sink.outcomes == ["allowed", "rejected", "rejected"]


def test_per_input_constraints_and_integer_indices():
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(100, 4)
            self.fc = nn.Linear(4, 2)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.fc((self.emb(ids) * mask[..., None]).sum(1))

    sink = ListSink()
    g = aimsec_core.guard(Tagger(), sinks=[sink], constraints={
        "min_value": 0, "max_value": 1, "inputs": {"ids": {"max_value": 99}}})
    ids, mask = torch.tensor([[1, 50, 99]]), torch.tensor([[1.0, 1.0, 0.0]])
    g(ids, mask)  # int64 ids are not refused for not being float
    g(ids, mask.bool())  # a boolean mask, as torch takes it
    with pytest.raises(ValueRangeError, match="'ids'"):
        g(torch.tensor([[1, 100, 2]]), mask)
    with pytest.raises(ValueRangeError, match="'mask'"):
        g(ids, mask * 3)
    assert sink.outcomes == ["allowed", "allowed", "rejected", "rejected"]


def test_the_declared_dtype_applies_to_the_primary_input_only(sink):
    model, g = make(sink)
    with pytest.raises(InputFormatError, match="'x' has dtype float64"):
        g(X.double())
    g(X, mask=torch.ones(2, 4, dtype=torch.float64).float())
    g(X, mask=torch.ones(1, 4, dtype=torch.int64))  # torch promotes x * int mask
    assert sink.outcomes == ["rejected", "allowed", "allowed"]


def test_arguments_that_do_not_fit_forward_are_refused_and_recorded(sink):
    model, g = make(sink)
    with pytest.raises(InputFormatError, match="do not fit forward"):
        g(X, mask=X, other=X)
    assert sink.outcomes == ["rejected"] and model.seen == []


def test_extra_arguments_keep_their_own_leading_dimension(sink):
    """An LSTM's (h0, c0) lead with the layer count, not the batch: not a batch mismatch."""
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 3, num_layers=2, batch_first=True)
    g = aimsec_core.guard(lstm, sinks=[sink])
    x, h = torch.rand(5, 7, 4), (torch.zeros(2, 5, 3), torch.zeros(2, 5, 3))
    out, _ = g(x, h)
    assert torch.equal(out, lstm(x, h)[0]) and sink.outcomes == ["allowed"]
    with pytest.raises(NonFiniteInputError, match=r"hx\[0\]"):
        g(x, (torch.full((2, 5, 3), math.nan), h[1]))



class _DictBatch(nn.Module):
    """Takes one dict: features (N, 4) and a per-sample mask or weight vector (N,)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.fc(batch["x"]) * batch["w"][:, None]


def test_a_vector_per_sample_beside_the_batch_in_a_dict_is_per_sample(sink):
    """A vector as long as the batch (a mask, lengths, labels) beside it in a dict was
    taken as one sample and the valid call refused for disagreeing batch sizes."""
    model = _DictBatch().eval()
    g = aimsec_core.guard(model, sinks=[sink], constraints=LIMITS)
    w = torch.tensor([1.0, 0.0])
    with torch.no_grad():
        assert torch.equal(g({"x": X, "w": w}), model({"x": X, "w": w}))
    bad = w.clone()
    bad[1] = math.nan
    with pytest.raises(NonFiniteInputError, match=r"batch\['w'\]") as caught:
        g({"x": X, "w": bad})
    assert caught.value.verdict.flags == (False, True)  # the sample the NaN belongs to
    assert sink.outcomes == ["allowed", "rejected"]


def test_a_vector_of_another_length_beside_the_batch_concerns_the_whole_call(sink):
    class Biased(nn.Module):
        def forward(self, batch: dict) -> torch.Tensor:
            return batch["x"] + batch["bias"]

    g = aimsec_core.guard(Biased(), sinks=[sink], constraints=LIMITS)
    bias = torch.tensor([0.0, 0.1, 0.0, 0.1])  # one value per feature, not per sample
    assert torch.equal(g({"x": X, "bias": bias}), X + bias)
    with pytest.raises(ValueRangeError) as caught:
        g({"x": X, "bias": bias * 30})
    assert caught.value.verdict.flags == (True, True)
    with pytest.raises(InputFormatError, match="disagree on the batch size"):
        g({"x": X, "bias": torch.zeros(3, 4)})  # two batches: still refused
    assert sink.outcomes == ["allowed", "rejected", "rejected"]

# -- every call path ---------------------------------------------------------------------


def _vmapped(g, x):
    return torch.func.vmap(g)(x[:, None])[:, 0]


def _grad(g, x):
    return torch.func.grad(lambda v: g(v).sum())(x)


def _jacrev(g, x):
    return torch.func.jacrev(g)(x)


def _functional_call(g, x):
    return torch.func.functional_call(g, dict(g.named_parameters()), (x,))


def _compiled(g, x):
    return torch.compile(g, backend="eager")(x)


def _compiled_in_place(g, x):
    g.compile(backend="eager")
    return g(x)


def _data_parallel(g, x):
    return nn.DataParallel(g)(x)


def _no_grad(g, x):
    with torch.no_grad():
        return g(x)


def _inference_mode(g, x):
    with torch.inference_mode():
        return g(x.clone())


SCREENED = {
    "positional": lambda g, x: g(x),
    "keyword": lambda g, x: g(x=x),
    "mixed": lambda g, x: g(x, mask=torch.ones_like(x)),
    "keywords-reversed": lambda g, x: g(mask=torch.ones_like(x), x=x),
    "forward": lambda g, x: g.forward(x),
    "__call__": lambda g, x: g.__call__(x),
    "method-self-call": lambda g, x: g.predict(x),
    "method-self-forward": lambda g, x: g.predict_forward(x),
    "torch.compile": _compiled,
    "module.compile": _compiled_in_place,
    "vmap": _vmapped,
    "grad": _grad,
    "jacrev": _jacrev,
    "functional_call": _functional_call,
    "no_grad": _no_grad,
    "inference_mode": _inference_mode,
    "DataParallel": _data_parallel,
}


@pytest.mark.parametrize("path", list(SCREENED))
def test_each_call_path_is_screened(path):
    sink = ListSink()
    model, g = make(sink)
    call = SCREENED[path]
    call(g, X)
    assert sink.outcomes == ["allowed"], sink.outcomes  # exactly one record
    assert g.last_verdict is not None and g.last_verdict.allowed
    if path not in ("vmap", "grad", "jacrev", "torch.compile", "module.compile"):
        assert len(model.seen) == 1
    model.seen.clear()
    with pytest.raises(NonFiniteInputError):
        call(g, NAN)
    assert sink.outcomes == ["allowed", "rejected"]
    assert not g.last_verdict.allowed and model.seen == []  # the model never read it
    assert call(g, X) is not None and sink.outcomes[-1] == "allowed"  # and again (caches)


def test_a_compiled_guarded_model_returns_the_plain_output_and_screens_every_call():
    sink = ListSink()
    model, g = make(sink)
    compiled = torch.compile(g, backend="aot_eager")
    for _ in range(3):
        assert torch.allclose(compiled(X), model.fc(X))
    with pytest.raises(ValueRangeError):
        compiled(X + 1)
    assert sink.outcomes == ["allowed"] * 3 + ["rejected"]


def test_transforms_screen_the_real_values_of_every_vmapped_entry():
    sink = ListSink()
    model, g = make(sink)
    batch = torch.stack([X, X, X.clone().fill_(0.5)])
    batch[2, 1, 3] = 7.0  # one value in one vmapped entry
    with pytest.raises(ValueRangeError):
        torch.func.vmap(g)(batch)
    verdict = g.last_verdict
    assert verdict.shape == (6, 4)  # the vmapped axis merged into the batch axis
    out = torch.func.vmap(g)(torch.stack([X, X]))
    assert torch.allclose(out[1], model.fc(X))
    grads = torch.func.grad(lambda v: g(v).sum())(X)
    assert torch.allclose(grads, model.fc.weight.sum(0).expand(2, 4))


def test_transforms_over_the_parameters_screen_a_plain_input(sink):
    """torch.func over the parameters (per-example gradients, model ensembles) with a plain
    input: the input is not wrapped, the transforms are active all the same."""
    model, g = make(sink)
    params = {k: v.detach() for k, v in g.named_parameters()}

    def loss(p, module):
        return torch.func.functional_call(module, p, (X,)).square().sum()

    grads = torch.func.grad(loss)(params, g)
    expected = torch.func.grad(loss)(params, model)
    assert grads.keys() == expected.keys()
    assert all(torch.equal(grads[k], expected[k]) for k in grads)

    stacked = {k: torch.stack([v, 2 * v]) for k, v in params.items()}
    ensemble = torch.func.vmap(lambda p, x: torch.func.functional_call(g, p, (x,)),
                               in_dims=(0, None))(stacked, X)
    assert torch.equal(ensemble, torch.func.vmap(
        lambda p, x: torch.func.functional_call(model, p, (x,)), in_dims=(0, None))(stacked, X))
    with pytest.raises(NonFiniteInputError):
        torch.func.grad(lambda p: torch.func.functional_call(g, p, (NAN,)).sum())(params)
    assert sink.outcomes == ["allowed", "allowed", "rejected"]


def test_hooks_fire_once_on_each_module(sink):
    model, g = make(sink)
    fired: list[str] = []
    model.register_forward_pre_hook(lambda m, a: fired.append("original-pre"))
    model.register_forward_hook(lambda m, a, o: fired.append("original"))
    g.register_forward_hook(lambda m, a, o: fired.append("guarded"))
    g(X)
    g.predict(X)
    assert fired == ["original-pre", "original", "guarded"] * 2


def test_methods_that_bypass_the_guard_are_refused_and_others_work(sink):
    model, g = make(sink)
    with pytest.raises(UnguardedCallError, match="bypass.*unguard"):
        g.bypass(X)
    assert g.describe() == "masked"
    assert torch.equal(aimsec_core.unguard(g).bypass(X), model.fc(X))  # meant unguarded
    model.fc(X)  # the hook is gone once the method returns
    assert sink.outcomes == []


@pytest.mark.parametrize("tracer", [
    lambda g: torch.jit.trace(g, X),
    lambda g: torch.jit.script(g),
    lambda g: torch.fx.symbolic_trace(g),
    lambda g: torch.export.export(g, (X,)),
], ids=["jit.trace", "jit.script", "fx.symbolic_trace", "export"])
def test_tracers_that_would_drop_the_guard_are_refused(sink, tracer):
    model, g = make(sink)
    with pytest.raises(UnguardedCallError, match="unguard"):
        tracer(g)
    assert model.seen == [] and sink.outcomes == []


def test_strict_export_fails_with_the_guards_explanation(sink):
    model, g = make(sink)
    with pytest.raises(Exception, match="UnguardedCallError") as caught:
        torch.export.export(g, (X,), strict=True)
    assert "unguard" in str(caught.value)


@pytest.mark.parametrize("build", [
    lambda m: torch.jit.trace(m, X),
    lambda m: torch.jit.script(m),
    lambda m: torch.export.export(m, (X,)).module(),
], ids=["traced", "scripted", "exported"])
def test_a_traced_model_can_be_guarded_instead(build):
    sink = ListSink()
    plain = nn.Linear(4, 2).eval()
    g = aimsec_core.guard(build(plain), sinks=[sink], constraints=LIMITS)
    assert torch.allclose(g(X), plain(X))
    with pytest.raises(NonFiniteInputError):
        g(NAN)
    assert sink.outcomes == ["allowed", "rejected"]


# -- values checked are values read -----------------------------------------------------


@pytest.mark.parametrize("view", [
    lambda t: (-t)._neg_view(),  # raw memory is -t: in range; the model reads t... below
    lambda t: t.t().contiguous().t(),  # non-contiguous
    lambda t: t[:1].expand(2, 4),  # zero-strided broadcast
], ids=["neg-bit", "transposed", "expanded"])
def test_views_are_checked_on_their_logical_values(sink, view):
    model, g = make(sink)
    out_of_range = X - 1.0  # every value below min_value 0
    v = view(out_of_range)
    assert (v < 0).all()  # what the model reads
    with pytest.raises(ValueRangeError):
        g(v)
    assert model.seen == []


def test_a_negative_view_of_clean_values_passes_and_hashes_like_a_plain_copy(sink):
    model, g = make(sink)
    neg = (-X)._neg_view()  # logical values X, raw memory -X
    assert neg.is_neg()
    g(neg)
    first = g.last_verdict.input_hash
    g(X.clone())
    assert g.last_verdict.input_hash == first and sink.outcomes == ["allowed", "allowed"]


def test_low_precision_tensors_are_checked_on_their_values():
    sink = ListSink()
    model = nn.Linear(4, 2).to(torch.bfloat16)
    g = aimsec_core.guard(model, sinks=[sink], constraints=LIMITS)
    g(X.to(torch.bfloat16))
    with pytest.raises(ValueRangeError):
        g((X + 1).to(torch.bfloat16))
    with pytest.raises(NonFiniteInputError):
        g(NAN.to(torch.bfloat16))
    assert sink.outcomes == ["allowed", "rejected", "rejected"]


def test_narrowing_and_integer_inputs(sink):
    model, g = make(sink)
    with pytest.raises(InputFormatError, match="float64"):
        g(torch.full((1, 4), 1e39, dtype=torch.float64))  # would overflow float32
    with pytest.raises(InputFormatError, match="int64"):
        g(torch.ones(1, 4, dtype=torch.int64))  # torch does not cast into Linear
    ids = aimsec_core.guard(nn.Identity(), sinks=[sink], constraints={"max_value": 2**53})
    big = torch.tensor([[2**53 + 1]])  # float64 would round it to 2**53 and let it pass
    with pytest.raises(ValueRangeError):
        ids(big)


# -- calibration takes numpy -------------------------------------------------------------


def test_calibrate_accepts_numpy_and_keeps_dtype_errors_clear():
    sink = ListSink()
    model, g = make(sink)
    rng = np.random.default_rng(0)
    clean = rng.random((60, 4), dtype=np.float32)
    g.calibrate(clean, detectors=["gradient", "margin"])
    g(X, mask=torch.ones(2, 4))  # detection runs on x with the mask present
    assert "gradient" in g.last_verdict.scores
    with pytest.raises(aimsec_core.CalibrationError, match="float64.*float32|float32.*float64"):
        g.calibrate(clean.astype(np.float64))
    big_endian = clean.astype(">f4")
    g.calibrate(big_endian, detectors=["margin"])  # converted by value, not by raw bytes


def test_per_input_constraints_are_checked_when_configured():
    from aimsec_core import ConfigurationError, Constraints

    c = Constraints.coerce({"min_value": 0, "max_value": 1,
                            "inputs": {"ids": {"max_value": 99, "sample_shape": None}}})
    assert c.for_input("ids").max_value == 99 and c.for_input("ids").min_value == 0
    assert c.for_input("x") is c
    assert c == Constraints.coerce({"min_value": 0, "max_value": 1,
                                    "inputs": {"ids": {"max_value": 99, "sample_shape": None}}})
    for bad, match in [({"inputs": {"ids": {"max_size": 5}}}, "max_size"),
                       ({"inputs": {"ids": {"colour": 1}}}, "colour"),
                       ({"inputs": {"ids": {"max_value": "x"}}}, "'ids'"),
                       ({"inputs": ["ids"]}, "map input names")]:
        with pytest.raises(ConfigurationError, match=match):
            Constraints.coerce(bad)


def test_huge_nested_lists_are_refused_without_being_walked(sink):
    model, g = make(sink)
    rows = [[0.0] * 4] * 10**6  # declares 4 million numbers

    with pytest.raises(InputFormatError, match="items"):
        g(rows)
    with pytest.raises(InputFormatError, match="deep"):
        g([[[[[X]]]]])
    assert sink.outcomes == ["rejected", "rejected"] and model.seen == []


def test_a_causal_float_mask_passes_where_its_infinities_are_allowed(sink):
    """torch's own causal mask is 0 above -inf: refused as non-finite by default (with
    the constraint to set in the message), the plain call's output where allowed."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    model = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    x, mask = torch.rand(2, 5, 8), nn.Transformer.generate_square_subsequent_mask(5)
    strict = aimsec_core.guard(model, sinks=[sink])
    with pytest.raises(NonFiniteInputError, match="'inputs': {'mask': {'allow_inf': True}}"):
        strict(x, mask=mask)
    allowed = aimsec_core.guard(model, sinks=[sink], constraints={
        **LIMITS, "inputs": {"mask": {"allow_inf": True, "min_value": None}}})
    with torch.no_grad():
        assert torch.equal(allowed(x, mask=mask), model(x, mask=mask))
    with pytest.raises(NonFiniteInputError):  # the input itself: infinities still refused
        allowed(torch.full((2, 5, 8), math.inf), mask=mask)
    assert sink.outcomes == ["rejected", "allowed", "rejected"]


def _token_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 3)).eval()


@pytest.mark.parametrize("ids, error, says", [
    ([[1, 2, 10]], ValueRangeError, "table of 10"),  # one past the table
    ([[-1, 2, 3]], ValueRangeError, "[0, 9]"),  # torch reads -1 as out of range too
    ([[1, 2, 2**40]], ValueRangeError, "[0, 9]"),
    ([[1, 2, 3]], InputFormatError, "int64 or int32"),  # int16: torch, a raw RuntimeError
])
def test_an_index_outside_the_first_embedding_is_refused_before_torch_reads_it(ids, error,
                                                                                 says):
    """Token ids past an embedding's table raised torch's own IndexError out of the
    guarded call (audited as an error; on CUDA a device-side assert that leaves the
    process's GPU context unusable for every later call): a client could end a GPU
    server's service with one request."""
    sink = ListSink()
    guarded = aimsec_core.guard(_token_model(), sinks=[sink])
    dtype = torch.int16 if error is InputFormatError else torch.int64
    with pytest.raises(error, match=re.escape(says)):
        guarded(torch.tensor(ids, dtype=dtype))
    assert sink.outcomes == ["rejected"]


def test_ids_inside_the_table_pass_and_a_range_constraint_replaces_the_tables():
    model = _token_model()
    ids = torch.tensor([[0, 5, 9], [3, 3, 1]])
    for kind in (torch.int64, torch.int32):
        assert torch.equal(aimsec_core.guard(model)(ids.to(kind)), model(ids.to(kind)))
    narrower = aimsec_core.guard(model, constraints={"inputs": {"input": {"max_value": 5}}})
    with pytest.raises(ValueRangeError) as refused:
        narrower(ids)
    assert "table" not in str(refused.value)  # the user's range, not the table's
    lifted = aimsec_core.guard(model, constraints={"inputs": {"input": {"max_value": None}}})
    with pytest.raises(IndexError):  # lifted: torch's own answer, as the user asked
        lifted(torch.tensor([[1, 2, 10]]))


@pytest.mark.parametrize("constraints", [
    {"inputs": {"input": {"min_value": 0}}},  # meant to refuse negative ids
    {"inputs": {"input": {"min_value": 0, "max_value": 50}}},
    {"min_value": -100, "max_value": 100},  # every input's range (a model's other inputs)
])
def test_a_range_constraint_narrows_the_tables_and_only_none_lifts_it(constraints):
    """A constraint naming one bound of the ids, or a range wider than the table (one
    set for every input too), lifted the whole table's range: ids past it reached torch
    (IndexError; on CUDA, the device-side assert)."""
    guarded = aimsec_core.guard(_token_model(), constraints=constraints)
    with pytest.raises(ValueRangeError, match=re.escape("[0, 9]: the model looks")):
        guarded(torch.tensor([[1, 2, 10]]))
    narrowed = aimsec_core.guard(_token_model(), constraints={"inputs": {"input": {
        **constraints.get("inputs", {}).get("input", {}), "min_value": 2}}})
    with pytest.raises(ValueRangeError, match=re.escape("[2, 9]")):
        narrowed(torch.tensor([[1, 2, 3]]))


def test_a_model_whose_first_embedding_does_not_read_the_input_is_declared_so():
    """An embedding registered first need not read the input (a learned position table
    indexed by arange): a float input is not read as indices, and with its dtype
    declared the input is checked as that dtype."""

    class Positions(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.position = nn.Embedding(3, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(x + self.position(torch.arange(x.shape[1])))

    model = Positions().eval()
    x = torch.rand(2, 3, 4)
    assert torch.equal(aimsec_core.guard(model)(x), model(x))
    declared = aimsec_core.guard(model, constraints={"inputs": {"x": {"dtype": "float32"}}})
    assert torch.equal(declared(x), model(x))
    with pytest.raises(InputFormatError, match="expected float32"):
        declared(x.to(torch.int64))


@pytest.mark.parametrize("mode", ["enforce", "monitor"])
def test_a_float_input_beside_a_first_embedding_is_not_read_as_ids(mode):
    """A conditional generator registers its label embedding first and takes the noise
    first: float noise was refused as 'must be integer indices' in either mode (every
    call of a model that had worked), as was a model whose first embedding holds
    positions. torch takes no float as an index, so a float input is not ids."""

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.labels = nn.Embedding(10, 4)
            self.out = nn.Linear(8, 3)

        def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return self.out(torch.cat([noise, self.labels(labels)], dim=-1))

    torch.manual_seed(0)
    model, sink = Generator().eval(), ListSink()
    guarded = aimsec_core.guard(model, mode=mode, sinks=[sink])
    noise, labels = torch.randn(2, 4) * 30, torch.tensor([1, 9])
    assert torch.equal(guarded(noise, labels), model(noise, labels))
    assert sink.outcomes == ["allowed"]
