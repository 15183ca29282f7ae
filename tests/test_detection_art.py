"""End to end, reduced: FGSM examples made by IBM ART against a torch digits model are
caught by the guard calibrated on held-out clean digits (full table: ``aimsec evaluate``)."""

from __future__ import annotations

import numpy as np
import pytest

import aimsec_core
from aimsec_core import digits

pytest.importorskip("art", reason="the eval extra (IBM ART) is part of the test install")


@pytest.fixture(scope="module")
def setup():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = digits.load()
        model = digits.torch_cnn(data, epochs=15)
    finally:
        torch.set_num_threads(threads)
    return data, model


def test_art_fgsm_examples_are_detected(setup, sink):
    import torch
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import PyTorchClassifier

    data, model = setup
    guarded = aimsec_core.guard(model, name="art-fgsm", sinks=[sink], mode="monitor",
                                constraints={"min_value": 0.0, "max_value": 1.0})
    calibration = guarded.calibrate(digits.as_model_input("torch", data.x_calibration),
                                    fpr=0.05)
    assert calibration.achieved_fpr <= 0.05
    x = digits.as_model_input("torch", data.x_test[:256])
    y = data.y_test[:256]
    estimator = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(),
                                  input_shape=(1, 8, 8), nb_classes=10, clip_values=(0, 1))
    x_adv = torch.from_numpy(FastGradientMethod(estimator, eps=0.2).generate(x.numpy()))
    with torch.no_grad():
        clean_pred = guarded(x).argmax(1).numpy()
        clean_flags = np.array(guarded.last_verdict.flags)
        adv_pred = guarded(x_adv).argmax(1).numpy()
        adv_flags = np.array(guarded.last_verdict.flags)
    fooled = (clean_pred == y) & (adv_pred != y)
    assert fooled.sum() >= 50  # the attack works on this model
    assert adv_flags[fooled].mean() >= 0.9
    assert clean_flags.mean() <= 0.1
    assert sink.outcomes == ["flagged", "flagged"]  # monitor mode: recorded, passed through


def test_enforce_mode_refuses_the_adversarial_batch(setup, sink):
    data, model = setup
    guarded = aimsec_core.guard(model, sinks=[sink],
                                constraints={"min_value": 0.0, "max_value": 1.0})
    guarded.calibrate(digits.as_model_input("torch", data.x_calibration), fpr=0.05)
    x = digits.as_model_input("torch", data.x_test[:32]).clone()
    x.requires_grad_(True)
    loss = model(x).logsumexp(1).sum()
    (grad,) = __import__("torch").autograd.grad(loss, x)
    attacked = (x.detach() + 0.3 * grad.sign()).clamp(0, 1)
    with pytest.raises(aimsec_core.AdversarialInputError, match="threshold calibrated"):
        guarded(attacked)
    assert sink.outcomes == ["rejected"]


def test_carlini_wagner_through_the_keras_log_probabilities_is_detected(sink):
    """ART's CW needs logits; the evaluation hands it the Keras model's log-probabilities.
    Reduced: 48 test digits, the full table is ``aimsec evaluate``."""
    pytest.importorskip("keras")
    from aimsec_core import evaluation

    data = digits.load()
    model = digits.keras_mlp(data, epochs=20)
    guarded = aimsec_core.guard(model, name="art-cw", sinks=[sink], mode="monitor",
                                constraints={"min_value": 0.0, "max_value": 1.0})
    guarded.calibrate(data.x_calibration, fpr=0.05, reference=data.x_train)
    x, y = data.x_test[:48], data.y_test[:48]
    attack = evaluation.attacks(only=["CW"])["CW-L2"]
    x_adv = attack(evaluation.art_estimator("keras", model)).generate(x).astype(np.float32)
    correct = model.predict(x, verbose=0).argmax(1) == y
    fooled = correct & (guarded.predict(x_adv, verbose=0).argmax(1) != y)
    flags = np.array(guarded.last_verdict.flags)
    assert fooled.sum() >= 0.9 * correct.sum()  # CW on probabilities would stall near 25%
    assert flags[fooled].mean() >= 0.9


def test_aimsec_evaluate_quick_writes_its_table(tmp_path, capsys):
    import json

    from aimsec_core.cli import main

    out = tmp_path / "evaluation.json"
    assert main(["evaluate", "--quick", "--framework", "sklearn", "--dataset", "digits",
                 "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    # sklearn has no gradients for ART: torch runs too, as the source of transferred attacks
    assert {(r["framework"], r["attack"]) for r in rows} == {
        ("torch", "FGSM eps=0.2"), ("torch", "PGD-Linf eps=0.2"),
        ("sklearn", "FGSM eps=0.2 (transfer)"), ("sklearn", "PGD-Linf eps=0.2 (transfer)")}
    assert {r["dataset"] for r in rows} == {"digits"}
    assert all(abs(sum(r["loudest"].values()) - 1) < 1e-3 for r in rows if r["tpr"])
    sklearn_fgsm = next(r for r in rows if r["framework"] == "sklearn" and "FGSM" in r["attack"])
    assert sklearn_fgsm["successful"] > 0 and sklearn_fgsm["tpr"] >= 0.9
    assert sklearn_fgsm["fpr_clean"] <= 0.1
    # the interval the calibration (449 clean digits at 5%) expects the clean FPR in
    low, high = sklearn_fgsm["fpr_interval"]
    assert 0.02 < low < 0.05 < high < 0.09
    printed = capsys.readouterr().out
    assert "digits: attacks that don't know the detectors" in printed
    assert f"({low:.0%}-{high:.0%})" in printed
