"""``aimsec evaluate``: detection quality against attacks from an independent library.

Per framework: train a digits model, guard it, calibrate its detectors on held-out clean
data at the target false-positive rate, attack it with IBM ART (FGSM and PGD-Linf at
several epsilons, Carlini-Wagner L2, DeepFool), and measure on the successful adversarial
examples: the detection rate (TPR) at the calibrated threshold, the false-positive rate on
unseen clean data, and ROC-AUC. The detectors that learn what clean inputs look like also
get the training set as reference data, as a deployment would give them. scikit-learn and ONNX models have no gradients for ART to
use, so they are attacked by transfer: the torch model's adversarial examples that fool
them. Every adversarial example is also projected back onto the data's own value grid
(digits pixels are multiples of 1/16) and scored again: a detector that only spots
off-grid values would fail there.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import digits
from .api import guard, guard_of

GRID = 16  # digits pixels are k/16
EPSILONS = (0.1, 0.2, 0.3)
BATCH = 64


@dataclass
class Row:
    framework: str
    attack: str
    attempted: int
    successful: int
    success_rate: float
    tpr: float | None
    fpr_clean: float
    roc_auc: float | None
    grid_successful: int
    grid_tpr: float | None
    grid_roc_auc: float | None
    seconds: float


def attacks(quick: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    """Attack factories ``name -> (ART estimator -> attack)``, optionally only those whose
    name starts with one of ``only`` (e.g. "FGSM", "CW")."""
    from art.attacks.evasion import (CarliniL2Method, DeepFool, FastGradientMethod,
                                     ProjectedGradientDescent)

    chosen: dict[str, Any] = {}
    for eps in (EPSILONS[1:2] if quick else EPSILONS):
        chosen[f"FGSM eps={eps}"] = lambda est, e=eps: FastGradientMethod(
            est, eps=e, batch_size=BATCH)
        chosen[f"PGD-Linf eps={eps}"] = lambda est, e=eps: ProjectedGradientDescent(
            est, eps=e, eps_step=e / 8, max_iter=20, batch_size=BATCH, verbose=False)
    if not quick:
        chosen["CW-L2"] = lambda est: CarliniL2Method(
            est, max_iter=15, binary_search_steps=4, initial_const=0.5, learning_rate=0.05,
            batch_size=BATCH,
            verbose=False)
        chosen["DeepFool"] = lambda est: DeepFool(est, max_iter=50, batch_size=BATCH,
                                                  verbose=False)
    if only:
        chosen = {k: v for k, v in chosen.items() if any(k.startswith(o) for o in only)}
    return chosen


def art_estimator(framework: str, model: Any) -> Any:
    """ART's view of the plain model (attacks never go through the guard)."""
    if framework == "torch":
        import torch
        from art.estimators.classification import PyTorchClassifier

        return PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                                 nb_classes=10, clip_values=(0.0, 1.0))
    if framework == "keras":
        import keras
        from art.estimators.classification import TensorFlowV2Classifier

        # The digits Keras model ends in a softmax. Carlini-Wagner's loss needs logits (on
        # probabilities it stalls: 26% success instead of 100%), so ART sees log-probabilities,
        # which differ from the logits by a per-sample constant.
        log_probabilities = keras.Sequential([model, keras.layers.Lambda(
            lambda p: keras.ops.log(keras.ops.maximum(p, 1e-12)))])
        return TensorFlowV2Classifier(
            log_probabilities, nb_classes=10, input_shape=(64,), clip_values=(0.0, 1.0),
            loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    raise ValueError(f"ART has no gradients for a {framework} model; attack by transfer")


def _suspicion(guarded: Any, framework: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Suspicion scores and flags for every row of ``x`` (monitor mode, batch by batch)."""
    call = digits.caller(framework)
    scores, flags = [], []
    for start in range(0, len(x), BATCH):
        call(guarded, digits.as_model_input(framework, x[start:start + BATCH]))
        verdict = guarded.last_verdict
        scores.append(np.asarray(verdict.scores["suspicion"]))
        flags.append(np.asarray(verdict.flags, dtype=bool))
    return np.concatenate(scores), np.concatenate(flags)


def _predict(framework: str, model: Any, x: np.ndarray) -> np.ndarray:
    out = digits.caller(framework)(model, digits.as_model_input(framework, x))
    if framework == "onnx":
        out = out[1]
    if framework == "sklearn":
        return np.asarray(out)
    return np.asarray(out.detach() if hasattr(out, "detach") else out).argmax(axis=1)


def _auc(clean: np.ndarray, adversarial: np.ndarray) -> float | None:
    if len(adversarial) == 0:
        return None
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(clean)), np.ones(len(adversarial))]
    return float(roc_auc_score(labels, np.nan_to_num(np.r_[clean, adversarial], posinf=1e9)))


def _rate(flags: np.ndarray) -> float | None:
    return float(flags.mean()) if len(flags) else None


def evaluate(frameworks: list[str] | None = None, *, fpr: float = 0.05, quick: bool = False,
             seed: int = 0, detectors: list[str] | None = None,
             only_attacks: list[str] | None = None, reference: bool = True,
             architecture: str = "cnn", progress: Any = None) -> list[Row]:
    data = digits.load(seed)
    # Frameworks ART can attack directly first: the others are attacked by transfer of the
    # torch model's adversarial examples.
    chosen = sorted(frameworks or digits.available(), key=lambda f: f not in ("torch", "keras"))
    if any(f in ("sklearn", "onnx") for f in chosen) and "torch" not in chosen:
        chosen.insert(0, "torch")  # the source of the transferred examples
    models = {f: digits.build(f, data, seed, architecture) for f in chosen if f != "onnx"}
    if "onnx" in chosen:
        models["onnx"] = digits.onnx_session(data, seed, models.get("sklearn"))
    transfer_source: dict[str, np.ndarray] = {}
    rows: list[Row] = []
    attack_set = attacks(quick, only_attacks)
    x, y = data.x_test, data.y_test
    for framework, model in models.items():
        guarded = guard(model, name=f"eval-{framework}", mode="monitor", sinks=[],
                        constraints=digits.constraints(framework))
        usable = None if detectors is None else [  # the gradient detector where it can run
            d for d in detectors
            if d != "gradient" or guard_of(guarded).adapter.capabilities.gradients]
        guarded.calibrate(digits.as_model_input(framework, data.x_calibration), fpr=fpr,
                          detectors=usable, image_shape=(8, 8), seed=seed,
                          reference=digits.as_model_input(framework, data.x_train)
                          if reference else None)
        clean_scores, clean_flags = _suspicion(guarded, framework, x)
        correct = _predict(framework, model, x) == y
        for name, make in attack_set.items():
            started = time.perf_counter()
            if framework in ("torch", "keras"):
                estimator = art_estimator(framework, model)
                x_adv = make(estimator).generate(
                    digits.as_model_input(framework, x).numpy() if framework == "torch"
                    else x).reshape(len(x), -1).astype(np.float32)
                if framework == "torch":
                    transfer_source[name] = x_adv
            elif name in transfer_source:
                x_adv = transfer_source[name]
            else:
                continue
            rows.append(_measure(framework, name, guarded, model, x_adv, y, correct,
                                 clean_scores, clean_flags, time.perf_counter() - started))
            if progress is not None:
                progress(rows[-1])
    return rows


def _measure(framework: str, attack: str, guarded: Any, model: Any, x_adv: np.ndarray,
             y: np.ndarray, correct: np.ndarray, clean_scores: np.ndarray,
             clean_flags: np.ndarray, seconds: float) -> Row:
    fooled = correct & (_predict(framework, model, x_adv) != y)
    scores, flags = _suspicion(guarded, framework, x_adv[fooled]) if fooled.any() else (
        np.zeros(0), np.zeros(0, dtype=bool))
    on_grid = np.round(x_adv * GRID) / GRID
    grid_fooled = correct & (_predict(framework, model, on_grid) != y)
    grid_scores, grid_flags = _suspicion(guarded, framework, on_grid[grid_fooled]) if (
        grid_fooled.any()) else (np.zeros(0), np.zeros(0, dtype=bool))
    return Row(framework, attack, int(correct.sum()), int(fooled.sum()),
               float(fooled.sum() / max(correct.sum(), 1)), _rate(flags),
               float(clean_flags.mean()), _auc(clean_scores, scores), int(grid_fooled.sum()),
               _rate(grid_flags), _auc(clean_scores, grid_scores), round(seconds, 2))


def write_json(rows: list[Row], path: str | Path, **meta: Any) -> Path:
    path = Path(path)
    path.write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2))
    return path


def table(rows: list[Row], fpr: float) -> Any:
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1%}"

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    out = Table(title=f"aimsec evaluate: detection at a threshold calibrated for {fpr:.0%} "
                      "false positives (TPR on successful adversarial examples)")
    for col in ("framework", "attack", "success", "TPR", "FPR clean", "ROC-AUC",
                "grid: n", "grid: TPR", "grid: AUC"):
        out.add_column(col, justify="left" if col in ("framework", "attack") else "right")
    for r in rows:
        out.add_row(r.framework, r.attack, f"{r.success_rate:.1%} ({r.successful})",
                    pct(r.tpr), pct(r.fpr_clean), num(r.roc_auc), str(r.grid_successful),
                    pct(r.grid_tpr), num(r.grid_roc_auc))
    return out
