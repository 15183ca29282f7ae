"""A guarded model inside the training and evaluation loops written for the plain one.

Each test runs the loop a user already has, unchanged, on the guarded object, and checks
that it behaves as on the plain model: same outputs, no refusal or finding from the default
settings, one audit line per guarded call.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

import aimsec_core


def _digits(n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels = load_digits(return_X_y=True)
    return (pixels[:n] / 16).astype(np.float32), labels[:n]


def _audit_lines(tmp_path) -> list[dict]:
    path = tmp_path / "security_logs" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- torch ----------------------------------------------------------------------------------


def test_torch_tensor_attribute_set_on_the_guarded_module_reaches_the_model(tmp_path):
    """Temperature scaling after training: ``guarded.temperature = torch.tensor(t)`` must
    change what the model computes, as ``model.temperature = ...`` does on the plain one."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)
            self.temperature = torch.tensor(1.0)  # a plain attribute, not a buffer

        def forward(self, x):
            return self.fc(x) / self.temperature

    torch.manual_seed(0)
    model = Scaled()
    guarded = aimsec_core.guard(model)
    guarded.temperature = torch.tensor(2.0)
    x = torch.from_numpy(_digits(8)[0])
    assert model.temperature.item() == 2.0
    with torch.no_grad():
        assert torch.equal(guarded(x), model.fc(x) / 2.0)


def test_torch_parameter_set_over_a_plain_attribute_is_the_model_s_parameter(tmp_path):
    """Turning a fixed temperature into a learnt one through the guarded module registers
    the parameter on the model: it reaches the optimiser, the checkpoint and the forward."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)
            self.temperature = 1.0

        def forward(self, x):
            return self.fc(x) / self.temperature

    model = Scaled()
    guarded = aimsec_core.guard(model)
    guarded.temperature = nn.Parameter(torch.tensor(3.0))
    assert "temperature" in model.state_dict()
    assert "temperature" not in vars(model)  # nothing left shadowing the parameter
    x = torch.from_numpy(_digits(4)[0])
    guarded(x).sum().backward()
    assert model.temperature.grad is not None


def test_torch_training_and_eval_epochs_run_as_on_the_plain_model(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    x, y = _digits()
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    guarded = aimsec_core.guard(model)
    optimizer = torch.optim.SGD(guarded.parameters(), lr=0.1)
    calls = 0
    for _ in range(3):
        guarded.train()
        for i in range(0, 400, 100):
            optimizer.zero_grad()
            nn.functional.cross_entropy(guarded(x[i:i + 100]), y[i:i + 100]).backward()
            optimizer.step()
            calls += 1
        guarded.eval()
        with torch.no_grad():
            for i in range(400, 600, 50):  # the same validation set every epoch
                assert torch.equal(guarded(x[i:i + 50]), model(x[i:i + 50]))
                calls += 1
    lines = _audit_lines(tmp_path)
    assert len(lines) == calls
    assert {line["decision"] for line in lines} == {"allowed"}
    assert not any(line["findings"] for line in lines)


# -- scikit-learn ---------------------------------------------------------------------------


def test_sklearn_partial_fit_trains_incrementally_like_the_plain_estimator(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import SGDClassifier

    x, y = _digits()
    plain = SGDClassifier(random_state=0)
    guarded = aimsec_core.guard(SGDClassifier(random_state=0))
    for epoch in range(3):
        for i in range(0, 400, 100):
            kwargs = {"classes": np.arange(10)} if epoch == i == 0 else {}
            plain.partial_fit(x[i:i + 100], y[i:i + 100], **kwargs)
            assert guarded.partial_fit(x[i:i + 100], y[i:i + 100], **kwargs) is guarded
        np.testing.assert_array_equal(guarded.predict(x[400:]), plain.predict(x[400:]))
    assert guarded.get_params()["estimator"].__dict__.get("coef_") is None  # never fitted
    lines = _audit_lines(tmp_path)
    assert len(lines) == 3 and {line["decision"] for line in lines} == {"allowed"}


def test_sklearn_partial_fit_continues_a_model_guarded_already_trained(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import SGDClassifier

    x, y = _digits()
    trained = SGDClassifier(random_state=0).fit(x[:300], y[:300])
    before = trained.coef_.copy()
    plain = SGDClassifier(random_state=0).fit(x[:300], y[:300])
    guarded = aimsec_core.guard(trained)
    plain.partial_fit(x[300:400], y[300:400])
    guarded.partial_fit(x[300:400], y[300:400])
    np.testing.assert_array_equal(guarded.estimator_.coef_, plain.coef_)
    np.testing.assert_array_equal(trained.coef_, before)  # the parameter is left as given


def test_sklearn_partial_fit_drops_a_calibration_that_described_the_model_before(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import SGDClassifier

    x, y = _digits()
    guarded = aimsec_core.guard(SGDClassifier(loss="log_loss", random_state=0).fit(x, y))
    guarded.calibrate(x[:300])
    with pytest.warns(UserWarning, match="calibrat"):
        guarded.partial_fit(x[300:400], y[300:400])
    assert aimsec_core.guard_of(guarded).calibration is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left to drop: no second warning
        guarded.partial_fit(x[400:500], y[400:500])


def test_sklearn_partial_fit_is_offered_only_where_the_estimator_has_it():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    guarded = aimsec_core.guard(LogisticRegression())
    assert not hasattr(guarded, "partial_fit")


def _digits_net(torch, nn):
    """A small digits classifier with dropout and batch norm, trained briefly (seeded)."""
    x, y = _digits(1000)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(5):
        for i in range(0, 600, 100):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval(), x, y


def test_torch_calibrated_guard_scores_a_training_step_as_the_model_it_calibrated(tmp_path):
    """Detectors are calibrated on the model in eval mode. In a fine-tuning step (train
    mode: dropout, batch statistics) the caller's forward pass is another function: the
    detectors must score the input as calibrated (the same scores as in eval mode), not
    refuse clean training batches, and the training step must equal the plain model's."""
    torch = pytest.importorskip("torch")
    import copy

    from torch import nn

    model, x, y = _digits_net(torch, nn)
    plain = copy.deepcopy(model)
    guarded = aimsec_core.guard(model, mode="monitor")
    guarded.calibrate(x[:600])
    batch, labels = x[600:700], y[600:700]
    with torch.no_grad():
        guarded(batch)
    evaluated = np.asarray(guarded.last_verdict.scores["suspicion"])

    guarded.train()
    plain.train()
    grads = [p.grad for p in model.parameters()]
    assert all(g is None for g in grads), grads[0]
    torch.manual_seed(7)
    loss = nn.functional.cross_entropy(guarded(batch), labels)
    trained = np.asarray(guarded.last_verdict.scores["suspicion"])
    torch.manual_seed(7)
    plain_loss = nn.functional.cross_entropy(plain(batch), labels)
    np.testing.assert_allclose(trained, evaluated, rtol=1e-4, atol=1e-5)
    assert loss.item() == plain_loss.item()  # same dropout draws, same batch statistics
    loss.backward()
    plain_loss.backward()
    for ours, theirs in zip(model.parameters(), plain.parameters()):
        assert torch.equal(ours.grad, theirs.grad), (ours.grad - theirs.grad).abs().max()
    assert torch.equal(model[1].running_mean, plain[1].running_mean)
    assert model.training and all(m.training for m in model.modules())


# -- Keras ----------------------------------------------------------------------------------


def test_keras_calibrated_guard_scores_a_training_call_as_the_model_it_calibrated(tmp_path):
    """A custom training loop calls ``model(x, training=True)`` under a gradient tape:
    dropout and batch statistics make that another function than the one calibrated, so
    the detectors must score the input as in inference (not refuse clean batches), and
    the call's output must still carry the gradient to the weights."""
    keras = pytest.importorskip("keras")

    x, y = _digits(1000)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32),
                              keras.layers.BatchNormalization(), keras.layers.ReLU(),
                              keras.layers.Dropout(0.5), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:600], y[:600], epochs=3, verbose=0)
    guarded = aimsec_core.guard(model, mode="monitor")
    guarded.calibrate(x[:600], detectors=["boundary"])
    batch = x[600:700]
    guarded(batch)
    inferred = np.asarray(guarded.last_verdict.scores["suspicion"])
    guarded(batch, training=True)
    trained = np.asarray(guarded.last_verdict.scores["suspicion"])
    np.testing.assert_allclose(trained, inferred, rtol=1e-4, atol=1e-5)


def test_sklearn_partial_fit_after_fit_warns_about_the_calibration_once(tmp_path):
    pytest.importorskip("sklearn")
    from sklearn.linear_model import SGDClassifier

    x, y = _digits()
    guarded = aimsec_core.guard(SGDClassifier(loss="log_loss", random_state=0).fit(x, y))
    guarded.calibrate(x[:300])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        guarded.fit(x[:300], y[:300])
        guarded.partial_fit(x[300:400], y[300:400])
    assert len([w for w in caught if "calibrat" in str(w.message)]) == 1
    guarded.predict(x[400:])
    assert aimsec_core.guard_of(guarded).calibration is None


def test_torch_pruning_the_guarded_module_prunes_the_model(tmp_path):
    """``torch.nn.utils.prune`` on the guarded module (a one-layer model) works as on the
    plain one: the masked weight is what the model computes with, the checkpoint has the
    same keys, and ``prune.remove`` makes the pruning permanent."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = nn.Linear(64, 10)
    plain = nn.Linear(64, 10)
    plain.load_state_dict(model.state_dict())
    guarded = aimsec_core.guard(model)
    prune.l1_unstructured(guarded, "weight", amount=0.5)
    prune.l1_unstructured(plain, "weight", amount=0.5)
    x = torch.from_numpy(_digits(8)[0])
    with torch.no_grad():
        assert torch.equal(guarded(x), plain(x))
    assert list(guarded.state_dict()) == list(plain.state_dict())
    prune.remove(guarded, "weight")
    prune.remove(plain, "weight")
    assert list(guarded.state_dict()) == list(plain.state_dict()) == ["bias", "weight"]
    assert isinstance(model.weight, nn.Parameter) and int((model.weight == 0).sum()) == 320
    with torch.no_grad():
        assert torch.equal(guarded(x), plain(x))
