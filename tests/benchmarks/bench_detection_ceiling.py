"""How much of an attack the model's own signals can reveal: a supervised upper bound.

    python tests/benchmarks/bench_detection_ceiling.py [--dataset tabular] [--seeds 0,1,2]

For the torch MLP of an ``aimsec evaluate`` data set, per seed and standard attack (ART's
FGSM, PGD-Linf, Carlini-Wagner L2 and DeepFool, as ``evaluate`` runs them), prints the
true-positive rate on the successful adversarial examples at a 5% false-positive rate of:

- ``suite``: aimsec's default detectors, calibrated on the clean calibration split (the
  figure ``aimsec evaluate`` prints);
- ``input bound`` and ``model bound``: a gradient-boosted classifier *trained on the attack's
  own examples* against clean ones (five-fold cross-validated, threshold at the 95th
  percentile of the held-out clean scores), reading the input alone, or the input with
  everything the model exposes to a detector: logits, top-2 margin, the input gradient of
  the loss at the predicted class (per sample) and its L2 norm, and every hidden
  activation.

A detector calibrated on clean data alone knows less than one trained on the attack, so
the ``model bound`` is an estimate of what no detector reading these signals can exceed
on this data (estimated, not proven: another classifier could do somewhat better). Where
it sits below a target, the target asks for information the inputs and the model do not
carry. Takes about two minutes per seed on two cores (the ART attacks dominate).
"""

from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FPR = 0.05


def signals(model, x):
    """(n, k) float array: input, logits, margin, input gradient and its norm, hidden
    activations of the torch module ``model`` for the (n, d) float32 rows ``x``."""
    import numpy as np
    import torch

    hidden: list = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: hidden.append(out.detach()))
             for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    try:
        inputs = torch.as_tensor(np.asarray(x, np.float32)).requires_grad_(True)
        logits = model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    loss = torch.nn.functional.cross_entropy(logits, logits.argmax(1), reduction="sum")
    gradient, = torch.autograd.grad(loss, inputs)
    top = torch.sort(logits.detach(), 1).values
    return torch.cat([inputs.detach(), logits.detach(), (top[:, -1] - top[:, -2])[:, None],
                      gradient, gradient.norm(dim=1, keepdim=True), *hidden], 1).numpy()


def bound(clean, adversarial) -> float:
    """TPR at FPR of a classifier trained on clean vs adversarial rows, cross-validated."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    x = np.concatenate([clean, adversarial])
    y = np.r_[np.zeros(len(clean)), np.ones(len(adversarial))]
    scores = np.zeros(len(x))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        classifier = HistGradientBoostingClassifier(max_iter=200, random_state=0)
        scores[test] = classifier.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    threshold = np.quantile(scores[y == 0], 1 - FPR)
    return float(np.mean(scores[y == 1] > threshold))


def main(dataset_name: str, seeds: list[int]) -> None:
    import numpy as np

    from aimsec_core import digits
    from aimsec_core.evaluation import standard
    from aimsec_core.evaluation.datasets import load
    from aimsec_core.evaluation.measure import predict, screen
    from aimsec_core.evaluation.run import _target

    print(f"{'seed':<6}{'attack':<18}{'n':>5}{'suite':>8}{'input bound':>13}"
          f"{'model bound':>13}")
    for seed in seeds:
        dataset = load(dataset_name, seed)
        split = dataset.split
        model = digits.build("torch", split, seed, "mlp")
        x, y = split.x_test, split.y_test
        target = _target(dataset, "torch", model, x, y, fpr=FPR, seed=seed, detectors=None,
                         reference=True)
        clean_rows = np.concatenate([split.x_calibration, x]).reshape(-1, dataset.width)
        clean = signals(model, clean_rows)
        for name, make in standard.attacks(False, None, dataset.epsilons).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = make(standard.art_estimator("torch", model, dataset)).generate(
                    np.asarray(digits.as_model_input("torch", x, dataset.sample_shape)))
            found = found.reshape(len(x), -1).astype(np.float32)
            fooled = target.correct & (predict("torch", model, dataset, found) != y)
            suite = screen(target.guarded, "torch", dataset, found[fooled]).flags.mean()
            adversarial = signals(model, found[fooled])
            width = dataset.width
            print(f"{seed:<6}{name:<18}{int(fooled.sum()):>5}{suite:>8.2f}"
                  f"{bound(clean[:, :width], adversarial[:, :width]):>13.2f}"
                  f"{bound(clean, adversarial):>13.2f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="tabular", choices=["tabular", "wine"])
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    main(args.dataset, [int(s) for s in args.seeds.split(",")])
