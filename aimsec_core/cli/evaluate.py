"""``aimsec evaluate``: detection quality against IBM ART attacks."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import digits
from .arguments import rate

#: The data sets of ``aimsec_core.evaluation.datasets`` (named here so that building the
#: parser imports no evaluation code).
DATASET_NAMES = ("digits", "digits-textured", "wine", "tabular")


def register(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="measure adversarial-input detection against IBM ART attacks")
    evaluate.add_argument("--dataset", action="append", choices=DATASET_NAMES,
                          help="only this data set (repeatable); default: all of them "
                               "(digits alone with --quick)")
    evaluate.add_argument("--adaptive", action="store_true",
                          help="also run the adaptive attacks, which know the detectors")
    evaluate.add_argument("--framework", action="append", choices=digits.FRAMEWORKS,
                          help="only this framework (repeatable; torch always runs: the "
                               "source of transferred and adaptive examples); default: every "
                               "installed one")
    evaluate.add_argument("--fpr", type=rate, default=0.05,
                          help="false-positive rate the threshold is calibrated for")
    evaluate.add_argument("--detector", action="append",
                          help="detector to use (repeatable); default: the standard set")
    evaluate.add_argument("--attack", action="append",
                          help="only attacks whose name starts with this (repeatable): "
                               "FGSM, PGD, CW, DeepFool, HopSkipJump")
    evaluate.add_argument("--architecture", choices=("cnn", "mlp"), default="cnn",
                          help="the torch and Keras models (scikit-learn's is an MLP)")
    evaluate.add_argument("--no-reference", dest="reference", action="store_false",
                          help="calibrate on the calibration split alone, without the "
                               "training set as reference data")
    evaluate.add_argument("--quick", action="store_true",
                          help="one epsilon, no CW/DeepFool/HopSkipJump, 200 test samples "
                               "per data set, shorter adaptive attacks")
    evaluate.add_argument("--out", default="evaluation.json",
                          help="where the JSON goes (default: evaluation.json, here)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .. import evaluation
    from .quiet import import_quietly

    if args.framework is None or "keras" in args.framework:
        import_quietly("tensorflow", "keras")

    console = Console(width=None if sys.stdout.isatty() else 150)
    try:
        import art  # noqa: F401  (the attacks come from an independent library)
    except ImportError:
        console.print("aimsec evaluate needs IBM ART: pip install 'aimsec[eval]'")
        return 2
    rows = evaluation.evaluate(
        args.framework, fpr=args.fpr, quick=args.quick, seed=args.seed,
        detectors=args.detector, only_attacks=args.attack, reference=args.reference,
        architecture=args.architecture, datasets=args.dataset, adaptive=args.adaptive,
        progress=lambda r: console.print(f"  {r.dataset:15s} {r.framework:8s} {r.attack:30s} "
                                         f"done in {r.seconds:.1f}s"))
    for table in evaluation.tables(rows, args.fpr):
        console.print(table)
    path = evaluation.write_json(rows, args.out, fpr=args.fpr, seed=args.seed,
                                 datasets=args.dataset or (
                                     ["digits"] if args.quick else list(DATASET_NAMES)),
                                 adaptive=args.adaptive, quick=args.quick,
                                 detectors=args.detector or "default",
                                 reference="training set" if args.reference else None,
                                 architecture=args.architecture)
    console.print(f"table written to {path}")
    return 0
