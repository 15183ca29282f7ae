"""``aimsec evaluate``: detection quality against IBM ART attacks."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path
from typing import Any

from .. import digits
from ..extras import require
from ..files import check_whole, write_target
from ..visible import shown
from .arguments import MAX_SEED, fail, rate, seed

#: The data sets of ``aimsec_core.evaluation.datasets`` (named here so that building the
#: parser imports no evaluation code).
DATASET_NAMES = ("digits", "digits-textured", "wine", "tabular")
#: The standard attacks' names up to their budgets (``evaluation.standard``), and those
#: ``--quick`` runs.
ATTACK_NAMES = ("FGSM", "PGD-Linf", "CW-L2", "DeepFool", "HopSkipJump")
QUICK_ATTACKS = ("FGSM", "PGD-Linf")
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
                          help="only the standard attacks whose name starts with this "
                               "(repeatable): FGSM, PGD, CW, DeepFool, HopSkipJump; "
                               "--adaptive runs its attacks regardless")
    evaluate.add_argument("--architecture", choices=("cnn", "mlp"), default="cnn",
                          help="the torch and Keras models (scikit-learn's is an MLP)")
    evaluate.add_argument("--no-reference", dest="reference", action="store_false",
                          help="calibrate on the calibration split alone, without the "
                               "training set as reference data")
    evaluate.add_argument("--quick", action="store_true",
                          help="one epsilon, no CW/DeepFool/HopSkipJump, at most 200 test "
                               "samples per data set, shorter adaptive attacks")
    evaluate.add_argument("--out", default="evaluation.json",
                          help="where the JSON goes (default: evaluation.json, here)")
    evaluate.add_argument("--seed", type=seed, default=0,
                          help=f"seed of the data splits, models and attacks, 0 to {MAX_SEED}")
    evaluate.set_defaults(handler=run)


def _refusal(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, found before minutes of training: an attack
    that names none, detectors the suite (or, with ``--adaptive``, the adaptive attacks)
    would refuse, an output that cannot be written."""
    runs = QUICK_ATTACKS if args.quick else ATTACK_NAMES
    for wanted in args.attack or ():
        if not wanted.strip():  # a prefix of every name: it would select them all
            return (f"--attack {wanted!r} is empty; expected the start of an attack's "
                    f"name: {', '.join(runs)}")
        if not any(name.startswith(wanted) or wanted.startswith(name) for name in runs):
            return (f"--attack {wanted!r} names none of the attacks"
                    f"{' --quick runs' if args.quick else ''}: {', '.join(runs)}")
    if args.detector is not None:
        from ..adapter import Capabilities
        from ..detection import select_detectors
        from ..errors import ConfigurationError

        try:
            chosen = select_detectors(args.detector, Capabilities(gradients=True, features=True))
        except ConfigurationError as exc:
            return f"--detector: {exc}"
        if args.adaptive:
            from ..evaluation.surrogates import SUPPORTED

            unsupported = sorted({d.name for d in chosen} - set(SUPPORTED))
            if unsupported:
                return (f"--detector {', '.join(unsupported)} with --adaptive: the adaptive "
                        "attacks have no differentiable copy of it, so they would report "
                        f"the suite too kindly; expected detectors among "
                        f"{', '.join(SUPPORTED)}, or no --adaptive")
    return _unwritable(Path(args.out))


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written, or None; a file this check creates is removed.

    Checked as ``write_json`` will write: a regular file (or one not there yet) is
    written whole through a temporary file beside it, so that file must be creatable
    too (:func:`~aimsec_core.files.check_whole`): a writable file in a read-only folder
    failed only once the run had ended. Opened without blocking: a FIFO nobody reads is
    refused here (``ENXIO``) instead of holding the command before it starts. A symbolic
    link is checked at the file it leads to (the one the JSON will be written to), and
    left in place."""
    created = False
    try:  # is_dir and exists raise too, where a folder on the way may not be searched
        if path.is_dir():
            return f"--out {path} is a folder; expected a file to write the JSON to"
        target, whole = write_target(path)  # where write_json will write
        existed = target.exists()
        os.close(os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK,
                         0o666))
        created = not existed
        if whole:
            check_whole(target)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return f"--out {path} is a FIFO nobody is reading; expected a file to write the JSON to"
        return (f"--out {path}: cannot write there ({exc.strerror or exc}); expected a file "
                "in an existing folder where this user may create files")
    finally:
        if created:
            target.unlink(missing_ok=True)
    return None


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .. import evaluation
    from .quiet import import_quietly

    if args.dataset:  # a data set named twice is measured once
        args.dataset = list(dict.fromkeys(args.dataset))
    refusal = _refusal(args)
    if refusal is not None:
        return fail("evaluate", refusal)
    if args.framework is None or "keras" in args.framework:
        import_quietly("tensorflow", "keras")

    console = Console(width=None if sys.stdout.isatty() else 150)
    # the attacks come from an independent library, the data sets from scikit-learn, and
    # torch's model is the source of the transferred and adaptive examples
    require(("art", "sklearn", "scipy"), "eval", "the evaluation (IBM ART's attacks)")
    require(("torch",), "torch", "the evaluation (its examples are crafted on a torch model)")
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
    console.print(f"table written to {shown(path)}", highlight=False)
    return 0
