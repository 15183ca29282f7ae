"""``torch.nn.utils.parametrize`` applied to the guarded module itself: a model whose own
(root) parameters are parametrized still runs, computes what the plain model
parametrized the same way computes, trains, and every call is still screened."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils import parametrizations, parametrize  # noqa: E402

import aimsec_core  # noqa: E402
from aimsec_core import NonFiniteInputError  # noqa: E402

X = torch.rand(3, 4)
PARAMETRIZE = {
    "spectral_norm": lambda m: parametrizations.spectral_norm(m),
    "orthogonal": lambda m: parametrizations.orthogonal(m),
    "weight_norm": lambda m: parametrizations.weight_norm(m),
}


def _pair():
    torch.manual_seed(0)
    plain, model = nn.Linear(4, 4), nn.Linear(4, 4)
    model.load_state_dict(plain.state_dict())
    return plain.eval(), aimsec_core.guard(model.eval(), name="param", sinks=[],
                                           constraints={"min_value": 0, "max_value": 1})


@pytest.mark.parametrize("how", PARAMETRIZE)
def test_a_parametrized_guarded_module_computes_what_the_plain_one_does(how):
    plain, guarded = _pair()
    for model in (plain, guarded):
        torch.manual_seed(1)  # spectral_norm draws its power-iteration vector
        PARAMETRIZE[how](model)
    with torch.no_grad():
        assert torch.allclose(guarded(X), plain(X))
        assert torch.allclose(aimsec_core.unguard(guarded)(X), plain(X))
    assert list(guarded.state_dict()) == list(plain.state_dict())
    bad = X.clone()
    bad[0, 0] = math.nan
    with pytest.raises(NonFiniteInputError):
        guarded(bad)


def test_it_trains_assigns_through_right_inverse_copies_and_unparametrizes():
    plain, guarded = _pair()
    parametrizations.orthogonal(guarded)
    optimizer = torch.optim.SGD(guarded.parameters(), lr=0.1)
    before = guarded.weight.detach().clone()
    guarded(X).sum().backward()
    optimizer.step()
    assert not torch.allclose(guarded.weight, before)
    eye = torch.eye(4)
    guarded.weight = eye  # the property's setter (right_inverse), as on the plain module
    assert torch.allclose(guarded.weight, eye, atol=1e-5)
    assert torch.allclose(aimsec_core.unguard(guarded).weight, eye, atol=1e-5)
    twin = copy.deepcopy(guarded)
    with torch.no_grad():
        assert torch.allclose(twin(X), guarded(X))
    parametrize.remove_parametrizations(guarded, "weight")
    with torch.no_grad():
        assert torch.allclose(guarded(X), X @ eye.T + guarded.bias, atol=1e-5)
