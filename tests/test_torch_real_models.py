"""Models as users write them: outputs in a dict, a ModelOutput-like mapping or a
namedtuple, keyword-only forwards over token ids, traced modules. The guarded call returns
the plain model's result, and calibration reads the class scores or says what it needs."""

from __future__ import annotations

import collections
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aimsec_core  # noqa: E402
from aimsec_core import CalibrationError, ConfigurationError, InputFormatError  # noqa: E402
from aimsec_torch import TorchAdapter  # noqa: E402
from tests.conftest import ListSink  # noqa: E402

Pair = collections.namedtuple("Pair", "hidden logits")


class ModelOutput(OrderedDict):
    """An OrderedDict with attribute access, as transformers' ModelOutput."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


class TwoHeads(nn.Module):
    """A hidden state first, class scores second, packed as ``kind`` says."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden, self.out, self.kind = nn.Linear(6, 16), nn.Linear(16, 3), kind

    def forward(self, x):
        h = torch.relu(self.hidden(x))
        z = self.out(h)
        if self.kind == "namedtuple":
            return Pair(h, z)
        if self.kind == "model_output":
            return ModelOutput(hidden=h, logits=z)
        return {"hidden": h, "scores": z}


def _data(n: int = 120) -> torch.Tensor:
    return torch.randn(n, 6, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", ["namedtuple", "model_output"])
def test_the_detectors_read_the_logits_field_wherever_it_sits(kind):
    model = TwoHeads(kind).eval()
    x = _data(4)
    scores = TorchAdapter(model).scores(x)
    assert scores.shape == (4, 3)  # the logits, not the 16 hidden units
    np.testing.assert_allclose(scores, torch.softmax(model(x).logits, -1).detach().numpy(),
                               rtol=1e-5)
    sink = ListSink()
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor")
    guarded.calibrate(_data())
    out = guarded(x)
    assert type(out) is type(model(x))
    assert torch.equal(out.logits, model(x).logits)
    assert sink.outcomes[-1] in ("allowed", "flagged")


def test_a_dict_without_logits_and_several_tensors_is_a_calibration_error_naming_keys():
    model = TwoHeads("dict").eval()
    guarded = aimsec_core.guard(model, sinks=[])
    out = guarded(_data(3))  # uncalibrated, the call is the plain one
    assert type(out) is dict and torch.equal(out["scores"], model(_data(3))["scores"])
    with pytest.raises(CalibrationError, match=r"which output holds class scores.*'hidden', "
                                               r"'scores'.*'logits'"):
        guarded.calibrate(_data())


class TokenClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.out = nn.Embedding(17, 8), nn.Linear(8, 3)

    def forward(self, input_ids=None, attention_mask=None, labels=None):
        h = self.embed(input_ids)
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        return {"logits": self.out(h.mean(1))}


def _ids(n: int) -> torch.Tensor:
    return torch.randint(0, 17, (n, 5), generator=torch.Generator().manual_seed(2))


def test_token_ids_calibrate_with_the_default_detectors_without_gradients():
    model = TokenClassifier().eval()
    sink = ListSink()
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor")
    calibration = guarded.calibrate(_ids(150))
    names = [d.name for d in calibration.suite.detectors]
    assert "margin" in names and "boundary" not in names
    ids, mask = _ids(4), torch.ones(4, 5)
    out = guarded(input_ids=ids, attention_mask=mask)
    assert torch.equal(out["logits"], model(input_ids=ids, attention_mask=mask)["logits"])
    assert sink.outcomes[-1] in ("allowed", "flagged")
    with pytest.raises(ConfigurationError, match="integer inputs"):
        guarded.calibrate(_ids(150), detectors=["boundary"])


def test_a_traced_module_has_its_dtype_checked_on_its_positional_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3)).eval()
    traced = torch.jit.trace(model, torch.zeros(1, 6))
    guarded = aimsec_core.guard(traced, sinks=[])
    assert torch.equal(guarded(_data(2)), traced(_data(2)))
    with pytest.raises(InputFormatError, match=r"'args\[0\]' has dtype float16"):
        guarded(_data(2).half())


def test_a_compiled_model_calibrated_runs_in_grad_mode():
    """torch.compile's backward frees what it saved (donated buffers), so the gradient
    detector's backward cannot share the call's graph and keep it for the caller (it raised
    torch's RuntimeError): the gradient then comes from a pass of its own, and the caller's
    backward gives the plain model's parameter gradients."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    guarded = aimsec_core.guard(torch.compile(plain), sinks=[], mode="monitor")
    with torch.no_grad():
        guarded(_data(3))
    guarded.calibrate(_data())
    x = _data(5)
    for _ in range(2):  # the first call finds the donated buffers out, the next knows it
        out = guarded(x)
        assert len(guarded.last_verdict.scores["boundary"]) == 5
        out.sum().backward()
        got = [p.grad.clone() for p in plain.parameters()]
        plain.zero_grad()
        plain(x).sum().backward()
        assert all(torch.allclose(a, p.grad) for a, p in zip(got, plain.parameters()))
        plain.zero_grad()
