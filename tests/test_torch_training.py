"""A guarded torch module in training code: with a calibrated guard, what a training step
computes (outputs, parameters' and inputs' gradients, batch statistics, random draws) is
exactly what the plain module computes."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

import aimsec_core  # noqa: E402
from aimsec_core import digits  # noqa: E402
from tests.conftest import ListSink  # noqa: E402


@pytest.fixture(scope="module")
def data():
    split = digits.load()
    as_images = lambda a: torch.from_numpy(a).reshape(-1, 1, 8, 8)  # noqa: E731
    return (as_images(split.x_train[:64]), torch.from_numpy(split.y_train[:64]),
            as_images(split.x_calibration[:300]))


@pytest.fixture(scope="module")
def calibrated(data, tmp_path_factory):
    """A convolutional net with batch norm and dropout, briefly trained, in eval mode, and
    the file of its calibration with every default detector."""
    x, y, clean = data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Dropout(0.3), nn.Linear(256, 10))
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(5):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    model.zero_grad(set_to_none=True)
    guarded = aimsec_core.guard(model.eval(), name="digits", sinks=[])
    guarded.calibrate(clean)
    return model, guarded.save_calibration(tmp_path_factory.mktemp("calibration") / "cal")


def _pair(calibrated):
    """(plain model, its calibrated guarded twin in monitor mode writing to a sink), both
    with the same weights and state."""
    model, path = calibrated
    sink = ListSink()
    guarded = aimsec_core.guard(copy.deepcopy(model), name="digits", mode="monitor",
                                sinks=[sink], calibration=path,
                                constraints=digits.constraints("torch"))
    return copy.deepcopy(model), guarded, sink


def _state(model, x):
    return ([p.grad.clone() for p in model.parameters()], x.grad.clone(),
            {k: v.clone() for k, v in model.state_dict().items()})


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_gradient_checkpointing_the_guarded_module_is_the_plain_models(calibrated, data,
                                                                       training, reentrant):
    """checkpoint(guarded, x) replays the guarded call in the backward pass. The replay
    was screened again: a second audit record per step (an ``error`` one where
    checkpointing stops the replay early with its own exception), and with findings in
    monitor mode that exception came back as an AdversarialInputError out of backward().
    The replay is now the plain model's; the detectors' own pass is no part of it."""
    x, y, _ = data
    plain, guarded, sink = _pair(calibrated)
    results = []
    for model, inner in ((plain, plain), (guarded, aimsec_core.unguard(guarded))):
        model.train(training)
        leaf = x.clone().requires_grad_(True)
        torch.manual_seed(7)
        out = checkpoint(model, leaf, use_reentrant=reentrant)
        nn.functional.cross_entropy(out, y).backward()
        results.append((out.detach(), *_state(inner, leaf),
                        torch.rand(1)))
    (out_a, grads_a, x_grad_a, state_a, draw_a), (out_b, grads_b, x_grad_b, state_b,
                                                  draw_b) = results
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))
    assert torch.equal(x_grad_a, x_grad_b)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)  # batch statistics
    assert torch.equal(draw_a, draw_b)  # dropout drew as many random numbers
    assert len(sink.outcomes) == 1 and sink.outcomes[0] in ("allowed", "flagged")


def test_the_detectors_own_pass_is_not_seen_by_hooks_on_saved_tensors(calibrated, data):
    """save_on_cpu (or checkpointing) sees the tensors the model's call saves, not the
    gradient detector's own backward in train mode."""
    x, y, _ = data
    plain, guarded, _ = _pair(calibrated)
    counts = []
    for model in (plain, guarded):
        model.train()
        saved: list[int] = []

        def pack(t, saved=saved):
            saved.append(1)
            return t

        torch.manual_seed(7)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            nn.functional.cross_entropy(model(x), y).backward()
        counts.append(len(saved))
    assert counts[0] == counts[1]


def test_inference_mode_gives_inference_tensors_with_a_calibrated_guard(calibrated, data):
    """The gradient detector's pass leaves inference mode for its backward: the output
    came back as a normal tensor, where the plain model's is an inference tensor."""
    x, _, _ = data
    plain, guarded, _ = _pair(calibrated)
    with torch.inference_mode():
        expected, output = plain(x), guarded(x)
    assert "boundary" in guarded.last_verdict.scores
    assert expected.is_inference() and output.is_inference()
    assert torch.equal(output, expected) and not output.requires_grad
