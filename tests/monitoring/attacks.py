"""IBM ART black-box attacks driven against a guarded model, one query per call.

A remote attacker sends one input per request; ART's black-box classifier here forwards
each sample of ART's batches as one guarded call, under a client id taken in turn from
``clients`` (one id, or several to rotate over), and stops the attack at the first
refusal. Used by the monitoring tests and ``tests/benchmarks/bench_monitoring.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import aimsec_core

ATTACKS = ("hopskipjump", "boundary", "square")


class Stopped(Exception):
    """The guard refused a query: the attack ends here."""


def queries_until_refusal(call: Callable[[np.ndarray], np.ndarray], attack: str,
                          x: np.ndarray, clients: Sequence[str], *, budget: int = 2000,
                          nb_classes: int = 10, seed: int = 0) -> tuple[int, str | None]:
    """Run ``attack`` on the samples ``x`` ((n, 64) in [0, 1]) through ``call`` (one
    sample, shape (1, 64) -> class probabilities (1, k)); returns (queries sent until
    and including the first refused one, the refusing check) or (queries, None) when
    the attack finished or spent ``budget`` queries unrefused."""
    from art.estimators.classification import BlackBoxClassifierNeuralNetwork

    logging.getLogger("art").setLevel(logging.ERROR)
    sent = [0]
    refused: list[str] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        out = []
        for sample in np.asarray(batch, dtype=np.float32).reshape(len(batch), -1):
            if sent[0] >= budget:
                raise Stopped()
            client = clients[sent[0] % len(clients)]
            sent[0] += 1
            try:
                with aimsec_core.client(client):
                    out.append(np.asarray(call(sample[None]))[0])
            except aimsec_core.SecurityViolation as exc:
                refused.append(exc.verdict.checks[0] if exc.verdict else type(exc).__name__)
                raise Stopped() from exc
        return np.asarray(out, dtype=np.float32)

    # digits as 1x8x8 images (Square attack works on images only); each query is
    # flattened back to the model's 64 values
    classifier = BlackBoxClassifierNeuralNetwork(predict, input_shape=(1, 8, 8),
                                                 nb_classes=nb_classes, clip_values=(0.0, 1.0),
                                                 channels_first=True)
    np.random.seed(seed)
    try:
        _build(attack, classifier).generate(x.astype(np.float32).reshape(-1, 1, 8, 8))
    except Stopped:
        pass
    return sent[0], (refused[0] if refused else None)


def _build(attack: str, classifier: Any) -> Any:
    from art.attacks.evasion import BoundaryAttack, HopSkipJump, SquareAttack

    if attack == "hopskipjump":
        return HopSkipJump(classifier, targeted=False, norm=2, max_iter=5, max_eval=200,
                           init_eval=20, init_size=50, verbose=False)
    if attack == "boundary":
        return BoundaryAttack(classifier, targeted=False, max_iter=50, num_trial=10,
                              sample_size=10, init_size=50, verbose=False)
    if attack == "square":
        return SquareAttack(classifier, norm=np.inf, eps=0.3, max_iter=100, p_init=0.3,
                            nb_restarts=1, verbose=False)
    raise ValueError(f"unknown attack {attack!r}; expected one of {ATTACKS}")
