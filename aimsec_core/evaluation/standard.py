"""The standard attacks, from an independent library (IBM ART): none of them knows the
detectors.

FGSM and PGD-Linf at each of the data set's budgets, Carlini-Wagner L2 and DeepFool on the
models ART can differentiate (torch, Keras); the scikit-learn and ONNX models get the torch
model's examples by transfer and, on tabular data, their own black-box attack
(HopSkipJump, Chen et al. 2020: decision-based, it reads only the predicted label),
projected onto the same L-infinity budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .datasets import Dataset

BATCH = 64
#: Test samples the black-box attack runs on (it asks the model thousands of times each).
BLACK_BOX_SAMPLES = 100


def attacks(quick: bool = False, only: list[str] | None = None,
            epsilons: tuple[float, ...] = (0.1, 0.2, 0.3)) -> dict[str, Any]:
    """Attack factories ``name -> (ART estimator -> attack)``, optionally only those whose
    name starts with one of ``only`` (e.g. "FGSM", "CW"). ``quick``: the middle budget
    and no Carlini-Wagner or DeepFool."""
    from art.attacks.evasion import (CarliniL2Method, DeepFool, FastGradientMethod,
                                     ProjectedGradientDescent)

    chosen: dict[str, Any] = {}
    for eps in (epsilons[len(epsilons) // 2:][:1] if quick else epsilons):
        chosen[f"FGSM eps={eps}"] = lambda est, e=eps: FastGradientMethod(
            est, eps=e, batch_size=BATCH)
        chosen[f"PGD-Linf eps={eps}"] = lambda est, e=eps: ProjectedGradientDescent(
            est, eps=e, eps_step=e / 8, max_iter=20, batch_size=BATCH, verbose=False)
    if not quick:
        chosen["CW-L2"] = lambda est: CarliniL2Method(
            est, max_iter=15, binary_search_steps=4, initial_const=0.5, learning_rate=0.05,
            batch_size=BATCH, verbose=False)
        chosen["DeepFool"] = lambda est: DeepFool(est, max_iter=50, batch_size=BATCH,
                                                  verbose=False)
    if only:
        chosen = {k: v for k, v in chosen.items() if any(k.startswith(o) for o in only)}
    return chosen


def art_estimator(framework: str, model: Any, dataset: Dataset | None = None) -> Any:
    """ART's view of the plain model (attacks never go through the guard); digits unless
    ``dataset`` says otherwise."""
    classes = 10 if dataset is None else dataset.classes
    if framework == "torch":
        import torch
        from art.estimators.classification import PyTorchClassifier

        shape = (1, 8, 8) if dataset is None else dataset.sample_shape
        return PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=shape,
                                 nb_classes=classes, clip_values=(0.0, 1.0))
    if framework == "keras":
        import keras
        from art.estimators.classification import TensorFlowV2Classifier

        # The Keras models end in a softmax. Carlini-Wagner's loss needs logits (on
        # probabilities it stalls: 26% success instead of 100%), so ART sees log-probabilities,
        # which differ from the logits by a per-sample constant.
        log_probabilities = keras.Sequential([model, keras.layers.Lambda(
            lambda p: keras.ops.log(keras.ops.maximum(p, 1e-12)))])
        width = 64 if dataset is None else dataset.width
        return TensorFlowV2Classifier(
            log_probabilities, nb_classes=classes, input_shape=(width,), clip_values=(0.0, 1.0),
            loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    raise ValueError(f"ART has no gradients for a {framework} model; attack by transfer")


def black_box(predict: Callable[[np.ndarray], np.ndarray], dataset: Dataset, x: np.ndarray,
              eps: float, seed: int) -> np.ndarray:
    """HopSkipJump-Linf (untargeted, 10 iterations, at most 1,000 model calls per gradient
    estimate) on ``x`` through ``predict`` (class scores), each result projected onto the
    L-infinity ball of radius ``eps`` around its input."""
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import BlackBoxClassifier

    classifier = BlackBoxClassifier(predict, (dataset.width,), dataset.classes,
                                    clip_values=(0.0, 1.0))
    np.random.seed(seed)  # ART's HopSkipJump draws from numpy's global generator
    found = HopSkipJump(classifier, norm=np.inf, max_iter=10, max_eval=1000, init_eval=50,
                        batch_size=BATCH, verbose=False).generate(x)
    return np.clip(found, x - eps, x + eps).astype(np.float32)
