"""What one row of the evaluation measures: the guard's verdicts on clean test data and on
the adversarial examples that fooled the model, as rates, ROC-AUC and which detector
was loudest."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import digits
from ..api import guard_of
from .datasets import Dataset

BATCH = 64


@dataclass
class Row:
    dataset: str
    framework: str
    attack: str
    kind: str  #: "standard" (knows the model only) or "adaptive" (knows the detectors)
    attempted: int  #: correctly classified test samples attacked
    successful: int  #: of those, turned wrong by the attack
    success_rate: float
    tpr: float | None  #: share of the successful adversarial examples flagged
    fpr_clean: float  #: share of clean test samples flagged
    roc_auc: float | None  #: suspicion of clean test samples against successful ones
    #: detector name -> share of the flagged examples on which it had the largest rarity
    loudest: dict[str, float] = field(default_factory=dict)
    grid_successful: int | None = None  #: the same, projected onto the data's value grid
    grid_tpr: float | None = None
    grid_roc_auc: float | None = None
    seconds: float = 0.0
    #: the central 95% interval the calibration expects ``fpr_clean`` in
    #: (``Calibration.fpr_interval``): on small calibration sets, wide
    fpr_interval: tuple[float, float] | None = None


@dataclass
class Screened:
    """The guard's view of a batch: suspicion, flags, and each sample's loudest detector."""

    suspicion: np.ndarray
    flags: np.ndarray
    loudest: np.ndarray

    @classmethod
    def empty(cls) -> Screened:
        return cls(np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=object))


def screen(guarded: Any, framework: str, dataset: Dataset, x: np.ndarray) -> Screened:
    """Suspicion, flags and loudest detector for every row of ``x`` (monitor mode, batch by
    batch, through the guarded model's own call)."""
    if not len(x):
        return Screened.empty()
    call = digits.caller(framework)
    suite = guard_of(guarded).calibration.suite
    suspicion, flags, loudest = [], [], []
    for start in range(0, len(x), BATCH):
        call(guarded, digits.as_model_input(framework, x[start:start + BATCH],
                                            dataset.sample_shape))
        verdict = guarded.last_verdict
        suspicion.append(np.asarray(verdict.scores["suspicion"]))
        flags.append(np.asarray(verdict.flags, dtype=bool))
        names = [d.name for d in suite.detectors]
        rarity = np.stack([suite.rarity(d, np.asarray(verdict.scores[d.name]))
                           for d in suite.detectors])
        loudest.append(np.asarray(names, dtype=object)[rarity.argmax(axis=0)])
    return Screened(np.concatenate(suspicion), np.concatenate(flags), np.concatenate(loudest))


def predict(framework: str, model: Any, dataset: Dataset, x: np.ndarray) -> np.ndarray:
    """The plain model's predicted labels for ``x`` (n, d)."""
    out = digits.caller(framework)(model, digits.as_model_input(framework, x,
                                                                 dataset.sample_shape))
    if framework == "onnx":
        out = out[1]
    if framework == "sklearn":
        return np.asarray(out)
    return np.asarray(out.detach() if hasattr(out, "detach") else out).argmax(axis=1)


def auc(clean: np.ndarray, adversarial: np.ndarray) -> float | None:
    if len(adversarial) == 0:
        return None
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(clean)), np.ones(len(adversarial))]
    return float(roc_auc_score(labels, np.nan_to_num(np.r_[clean, adversarial], posinf=1e9)))


def rate(flags: np.ndarray) -> float | None:
    return float(flags.mean()) if len(flags) else None


def loudest_shares(screened: Screened) -> dict[str, float]:
    """Per detector, the share of flagged samples on which it was the loudest, largest
    first."""
    names = screened.loudest[screened.flags]
    if not len(names):
        return {}
    counts = Counter(names.tolist())
    return {name: round(n / len(names), 4) for name, n in counts.most_common()}


def measure(dataset: Dataset, framework: str, attack: str, kind: str, guarded: Any,
            model: Any, x_adv: np.ndarray, y: np.ndarray, correct: np.ndarray,
            clean: Screened, seconds: float) -> Row:
    """One row: ``x_adv`` are adversarial versions of the test samples ``y`` labels;
    ``correct`` marks those the model classified correctly before the attack."""
    fooled = correct & (predict(framework, model, dataset, x_adv) != y)
    adversarial = screen(guarded, framework, dataset, x_adv[fooled])
    row = Row(dataset.name, framework, attack, kind, int(correct.sum()), int(fooled.sum()),
              float(fooled.sum() / max(correct.sum(), 1)), rate(adversarial.flags),
              float(clean.flags.mean()), auc(clean.suspicion, adversarial.suspicion),
              loudest_shares(adversarial), seconds=round(seconds, 2))
    calibration = guard_of(guarded).calibration
    if calibration is not None:
        row.fpr_interval = tuple(round(v, 4) for v in calibration.fpr_interval)
    if dataset.grid is not None and kind == "standard":
        # A detector that merely spots off-grid values would score nothing here.
        on_grid = np.round(x_adv * dataset.grid) / dataset.grid
        grid_fooled = correct & (predict(framework, model, dataset, on_grid) != y)
        projected = screen(guarded, framework, dataset, on_grid[grid_fooled])
        row.grid_successful = int(grid_fooled.sum())
        row.grid_tpr = rate(projected.flags)
        row.grid_roc_auc = auc(clean.suspicion, projected.suspicion)
    return row
