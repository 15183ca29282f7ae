"""``aimsec evaluate``: how well the calibrated detectors catch adversarial inputs, and
against whom.

Per data set (``datasets.py``: digits, digits without their zero background, two tabular
sets) and framework: train a small model, guard it, calibrate its detectors on held-out
clean data at the target false-positive rate, attack the test split, and measure on the
examples that fooled the model the detection rate (TPR), the false-positive rate on clean
test data, ROC-AUC and which detector was loudest (``measure.py``). Two kinds of attacker,
reported apart (``report.py``):

- standard attacks (``standard.py``, IBM ART: FGSM, PGD, Carlini-Wagner, DeepFool,
  HopSkipJump), which know the model but not the detectors;
- adaptive attacks (``adaptive.py``), written against aimsec's own detectors, which know
  them and their calibration (``aimsec evaluate --adaptive``).
"""

from __future__ import annotations

from .standard import art_estimator, attacks
from .datasets import DATASETS, Dataset
from .measure import Row
from .report import table, tables, write_json
from .run import evaluate

__all__ = ["DATASETS", "Dataset", "Row", "art_estimator", "attacks", "evaluate", "table",
           "tables", "write_json"]
