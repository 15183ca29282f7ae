"""Adversarial-input detection on a torch module whose ``forward`` requires several
tensors (``forward(self, image, meta)``, called ``model(a, b)`` or by keyword)."""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import aimsec_core  # noqa: E402
from aimsec_core import CalibrationError  # noqa: E402
from aimsec_torch import TorchAdapter  # noqa: E402
from tests.cases import digits  # noqa: E402
from tests.cases.two_inputs import (CALIBRATION, HELD_OUT, META, ORDER, X,  # noqa: E402
                                     assert_one_input_calibration_refused)
from tests.cases.two_inputs import meta as _meta  # noqa: E402


class ImageAndMeta(nn.Module):
    """The 64 pixels as ``image`` and three noise features in [0, 1] as ``meta``."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(67, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(torch.cat([image, meta], dim=1))))


class MetaByKeyword(ImageAndMeta):
    """The same, ``meta`` keyword-only."""

    def forward(self, image: torch.Tensor, *, meta: torch.Tensor) -> torch.Tensor:
        return super().forward(image, meta)


@lru_cache(maxsize=2)
def _trained(kind: type = ImageAndMeta) -> nn.Module:
    """``kind`` trained full-batch on digits with ``meta`` drawn afresh (noise it learns
    to ignore), in eval mode."""
    torch.manual_seed(3)
    model = kind()
    image, meta = torch.from_numpy(X), torch.from_numpy(_meta(len(X), 0))
    labels = torch.from_numpy(digits()[1]).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(ImageAndMeta.forward(model, image, meta),
                                    labels).backward()
        optimiser.step()
    optimiser.zero_grad()  # no .grad left on the parameters
    return model.eval()


def _given(rows: np.ndarray, scale: float = 1.0, meta_scale: float = 1.0
           ) -> list[torch.Tensor]:
    return [torch.from_numpy(X[rows] * scale), torch.from_numpy(META[rows] * meta_scale)]


def _call(guarded: nn.Module, given: list[torch.Tensor], keyword: bool) -> torch.Tensor:
    with torch.no_grad():
        return guarded(given[0], meta=given[1]) if keyword else guarded(*given)


def test_the_required_parameters_of_forward_are_the_models_inputs():
    assert TorchAdapter(_trained()).input_names() == ["image", "meta"]
    assert TorchAdapter(_trained(MetaByKeyword)).input_names() == ["image", "meta"]
    assert TorchAdapter(nn.Linear(3, 2)).input_names() is None  # one: the declared one

    class Masked(nn.Module):
        def forward(self, x, mask=None):
            return x

    assert TorchAdapter(Masked()).input_names() is None  # an optional argument is no input


def test_a_calibration_for_one_input_is_refused_by_a_model_of_two(sink, tmp_path):
    """calibrate([image, meta]) refused the list ("input 'image' is a list; expected a
    torch.Tensor") and calibrate(image) ran forward without meta (the model's TypeError);
    a one-input calibration forced onto the model loaded, and its detectors' own passes
    ran the model on one tensor. It is now a CalibrationError when it is installed, and
    the calls go on unscreened."""
    guarded = aimsec_core.guard(_trained(), sinks=[sink])
    torch.manual_seed(4)
    made = aimsec_core.guard(nn.Linear(64, 10), sinks=[]).calibrate(X[:300], fpr=0.05)
    assert_one_input_calibration_refused(guarded, made, tmp_path / "single.npz")
    given = _given(HELD_OUT[:5])
    assert torch.equal(_call(guarded, given, False), _trained()(*given))
    assert set(sink.outcomes) == {"allowed"}


@pytest.mark.parametrize("kind,keyword", [(ImageAndMeta, False), (ImageAndMeta, True),
                                          (MetaByKeyword, True)],
                         ids=["positional", "by-keyword", "keyword-only"])
def test_a_model_of_two_inputs_calibrates_and_holds_its_false_positive_rate(
        sink, kind, keyword):
    model = _trained(kind)
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor")
    made = guarded.calibrate(_given(CALIBRATION), fpr=0.05)
    assert [d.name for d in made.suite.detectors] == [
        "boundary", "density", "sparsity", "neighbours", "shift", "robust"]
    assert made.input_shapes == ((64,), (3,)) and made.sample_shape == (67,)
    given = _given(HELD_OUT)
    out = _call(guarded, given, keyword)
    with torch.no_grad():
        assert torch.equal(out, ImageAndMeta.forward(model, *given))  # the plain answer
    flags = guarded.last_verdict.flags
    assert len(flags) == 200 and np.mean(flags) < 0.15  # 5% +- binomial spread
    _call(guarded, _given(HELD_OUT[:20], scale=100, meta_scale=100), keyword)
    assert all(guarded.last_verdict.flags)
    _call(guarded, _given(HELD_OUT[:20], meta_scale=100), keyword)  # the second input alone
    assert all(guarded.last_verdict.flags)


def _expected_gradient_scores(model: nn.Module, given: list[torch.Tensor]) -> np.ndarray:
    with torch.no_grad():
        predicted = model(*given).argmax(dim=1)
    image, meta = TorchAdapter(model).input_gradient(given, predicted)
    assert image.shape == (len(predicted), 64) and meta.shape == (len(predicted), 3)
    assert meta.abs().sum() > 0  # the second input has a gradient of its own
    joined = torch.cat([image, meta], dim=1).numpy()
    return np.log(np.linalg.norm(joined, axis=1) + 1e-12)


@pytest.mark.parametrize("context", ["no_grad", "grad", "train"])
def test_the_gradient_detector_reads_the_gradient_of_every_input(sink, context):
    """In eval mode the detector shares the guarded call's forward pass (each input's
    twin requiring grad), with autograd off or on; in train mode it takes an eval-mode
    pass of its own. Either way it reads both inputs' gradients joined."""
    model = _trained()
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor")
    guarded.calibrate(_given(CALIBRATION), fpr=0.05, detectors=["gradient", "margin"])
    given = _given(HELD_OUT[:30])
    expected = _expected_gradient_scores(model, given)
    if context == "no_grad":
        with torch.no_grad():
            guarded(*given)
    elif context == "grad":
        guarded(*given)
    else:
        guarded.train()
        try:
            guarded(*given)
        finally:
            guarded.eval()
    np.testing.assert_allclose(guarded.last_verdict.scores["gradient"], expected,
                               rtol=1e-4, atol=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_gradients_reach_the_callers_inputs_as_from_the_plain_call(sink):
    """The shared pass joins each input's twin to the caller's tensor: a caller
    differentiating through the guarded call gets the plain call's gradient for both."""
    model = _trained()
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor")
    guarded.calibrate(_given(CALIBRATION), fpr=0.05, detectors=["gradient", "margin"])
    grads = []
    for run in (model, guarded):
        image, meta = (t.clone().requires_grad_(True) for t in _given(HELD_OUT[:8]))
        run(image, meta).sum().backward()
        grads.append((image.grad, meta.grad))
    torch.testing.assert_close(grads[1], grads[0])
    assert len(guarded.last_verdict.scores["gradient"]) == 8


def test_detectors_reading_the_input_or_transformed_copies_read_the_joined_row(
        sink, tmp_path):
    """The input-space detectors, squeezing, noise and the internal features, from
    reference data too; the calibration file keeps the input shapes and screens the same
    on a guard that loads it."""
    model = _trained()
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor")
    names = ["squeeze", "noise", "jump", "sparsity", "neighbours", "density", "features"]
    made = guarded.calibrate(_given(CALIBRATION), fpr=0.05, detectors=names,
                             reference={"image": X[ORDER[600:1000]],
                                        "meta": META[ORDER[600:1000]]})
    assert made.summary()["input_shapes"] == [[64], [3]]
    loaded = aimsec_core.guard(model, sinks=[], mode="monitor",
                               calibration=guarded.save_calibration(tmp_path / "two.npz"))
    assert loaded.__aimsec_guard__.calibration.input_shapes == ((64,), (3,))
    for each in (guarded, loaded):
        _call(each, _given(HELD_OUT), False)
        assert len(each.last_verdict.flags) == 200 and np.mean(each.last_verdict.flags) < 0.15
    assert guarded.last_verdict.scores == loaded.last_verdict.scores
    _call(guarded, _given(HELD_OUT[:20], scale=100, meta_scale=100), False)
    assert all(guarded.last_verdict.flags)


class IdsAndImage(nn.Module):
    """Token ids (an embedding, first) beside the float pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(16, 4)
        self.out = nn.Linear(4 + 64, 10)

    def forward(self, ids: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([self.tokens(ids).mean(dim=1), image], dim=1))


def test_an_integer_input_takes_the_margin_in_the_gradients_place(sink):
    """Token ids have no gradient: the core picks the margin instead of ``boundary``,
    and refuses a detector reading the gradient, as for a model of one integer input."""
    torch.manual_seed(5)
    model = IdsAndImage().eval()
    guarded = aimsec_core.guard(model, sinks=[sink], mode="monitor")
    ids = np.random.default_rng(2).integers(0, 16, (len(X), 5))
    data = [ids[CALIBRATION], X[CALIBRATION]]
    with pytest.raises(aimsec_core.ConfigurationError, match="integer"):
        guarded.calibrate(data, detectors=["gradient"])
    made = guarded.calibrate(data, fpr=0.05)
    assert "boundary" not in [d.name for d in made.suite.detectors]
    assert "margin" in [d.name for d in made.suite.detectors]
    with torch.no_grad():
        given = torch.from_numpy(ids[HELD_OUT]), torch.from_numpy(X[HELD_OUT])
        assert torch.equal(guarded(*given), model(*given))
    assert len(guarded.last_verdict.flags) == 200


def test_what_a_model_of_two_inputs_cannot_be_calibrated_or_screened_with_is_refused(sink):
    guarded = aimsec_core.guard(_trained(), sinks=[sink])
    data = [X[CALIBRATION], META[CALIBRATION]]
    with pytest.raises(CalibrationError, match=r"a list \(in this order\) or a dict \(by "
                                               r"name\) of one array per input; received a "
                                               r"ndarray"):
        guarded.calibrate(data[0])
    with pytest.raises(CalibrationError, match=r"as many samples in every input; received "
                                               r"\{'image': 400, 'meta': 399\}"):
        guarded.calibrate([data[0], data[1][:-1]])
    with pytest.raises(aimsec_core.ConfigurationError, match="no image"):
        guarded.calibrate(data, detectors=["squeeze"], image_shape=(8, 8))
    with pytest.raises(aimsec_core.ConfigurationError, match="no image"):
        guarded.calibrate(data, image_shape=(8, 8))  # the default detectors: no squeeze
    assert guarded.__aimsec_guard__.calibration is None
    guarded.calibrate(data, detectors=["margin", "density"])
    image, meta = _given(HELD_OUT[:4])
    with torch.no_grad(), pytest.raises(aimsec_core.InvalidInputError,
                                        match="different numbers of samples"):
        guarded(image, meta[:3])
    with torch.no_grad(), pytest.raises(aimsec_core.InvalidInputError,
                                        match=r"input 'meta' has samples of shape \(4,\)"):
        guarded(image, torch.rand(4, 4))
    with torch.no_grad(), pytest.raises(aimsec_core.InvalidInputError,
                                        match="input 'meta' is not an array"):
        guarded(image, 0.5)  # no tensor where the detectors read one
    assert sink.outcomes[-3:] == ["rejected"] * 3


def test_a_traced_module_of_two_inputs_says_why_it_cannot_be_calibrated_on_both():
    """A ``torch.jit.trace`` of a module whose forward takes two tensors has no Python
    signature, so the guard reads it as a model of one input: calibrate([image, meta])
    gave only "input 'args[0]' is a list; expected a torch.Tensor". It now says the
    traced module declares no signature (naming the parameters its compiled forward
    takes) and what to do."""
    model = _trained()
    example = (torch.from_numpy(X[:4]), torch.from_numpy(META[:4]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
    guarded = aimsec_core.guard(traced)
    with torch.no_grad():  # calls with both tensors still run (each validated)
        torch.testing.assert_close(guarded(*example), model(*example))
    with pytest.raises(CalibrationError, match=r"traced module \(torch\.jit\.trace\) declares "
                       r"no signature.*\['image', 'meta'\].*cannot tell that it takes "
                       r"several inputs.*guard the module itself.*torch\.jit\.script"):
        guarded.calibrate([X[CALIBRATION], META[CALIBRATION]])
    # what the message advises: a scripted module keeps forward's parameters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated, still works
        scripted = torch.jit.script(model)
    assert TorchAdapter(scripted).input_names() == ["image", "meta"]


def test_a_traced_module_of_one_input_given_a_list_gets_no_such_hint():
    linear = nn.Linear(64, 10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(linear, torch.from_numpy(X[:4]))
    assert TorchAdapter(traced).undeclared_inputs() is None
    with pytest.raises(CalibrationError) as caught:
        aimsec_core.guard(traced).calibrate([X[CALIBRATION], META[CALIBRATION]])
    assert "traced" not in str(caught.value)
