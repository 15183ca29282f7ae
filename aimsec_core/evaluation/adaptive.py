"""Adaptive attacks: written against aimsec's own detectors, by an attacker who knows them
and their calibration (white box: the model, the detectors' learned state, the clean
scores and the threshold). Torch only (the attacks need autograd); their examples are
transferred to the other frameworks' models of the same data set.

All are L-infinity PGD, 50 signed steps of ``eps / 10`` (``quick``: 40) from the clean
input, keeping per sample the best iterate (see each attack), on the same budget as the
standard attacks (digits ``eps = 0.2``; tabular ``eps = 0.1``):

- ``PGD kappa=20``: untargeted, high confidence: the Carlini-Wagner margin loss
  ``max(z_y - max_{j != y} z_j, -kappa)``; a confident example defeats the detectors that
  look for inputs near a decision boundary.
- ``PGD kappa=20 grid+zeros`` (data with a value grid and meaningful zeros: digits): the
  same, but zero values stay zero, others stay at least one grid step, and the example
  is rounded to the grid (1/16) at every step, the gradient passing the rounding as if
  it were the identity (BPDA, Athalye et al. 2018). Nothing then distinguishes its values
  or its zero pattern from a clean digit's.
- ``PGD adaptive targeted``: the loss adds the differentiable suite of ``surrogates.py``
  (every detector's score, its rarity and the suspicion, exactly as the guard computes
  them) to a targeted margin loss (``kappa = 2``): ``margin + lam * suspicion`` for
  ``lam`` in {0.5, 2} (``quick``: 1 alone); on digits with the grid and zero
  constraints as above. Run once per target class; per sample the result is, among the
  iterates of every target and ``lam`` that fool the model, the one with the lowest
  suspicion (the attacker can compute it: it knows the calibration), so it is "best of
  all targets".
- ``PGD adaptive targeted, support-aware`` (digits): the same, but the zero pattern may
  change: zeros may rise and values within ``eps`` of zero may fall to it (on the grid),
  and the ``support`` and ``sparsity`` scores, step functions of the input, are relaxed
  for the gradient: the pattern ``x > floor`` becomes ``sigmoid`` of the distance above
  the floor over a quarter grid step, centred half a step above it, while the forward
  pass keeps the exact pattern (straight-through, BPDA in Athalye et al. 2018's sense).
  Every detector of the default suite is then in the loss; reshaping at an unchanged
  zero count (small strokes dropped, as many zeros raised) is one of the moves the
  ``sparsity`` penalty leaves it.

Seeds: none is drawn; the attacks are deterministic given the model and the calibration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .datasets import Dataset
from .surrogates import Suite

STEPS = 50
QUICK_STEPS = 40
HIGH_CONFIDENCE = 20.0
TARGETED_KAPPA = 2.0
PENALTIES = (0.5, 2.0)
QUICK_PENALTIES = (1.0,)


def attacks(dataset: Dataset, quick: bool = False,
            seed: int = 0) -> dict[str, Callable[..., np.ndarray]]:
    """Name -> ``attack(model, calibration, x, y) -> x_adv`` (numpy (n, d) float32)."""
    eps = dataset.epsilons[len(dataset.epsilons) // 2]
    steps = QUICK_STEPS if quick else STEPS
    constrained = dataset.grid is not None and dataset.keeps_zeros
    chosen: dict[str, Callable[..., np.ndarray]] = {
        f"PGD kappa=20 eps={eps}": lambda m, c, x, y: high_confidence(
            m, c, dataset, x, y, eps, steps, constrained=False)}
    if constrained:
        chosen[f"PGD kappa=20 grid+zeros eps={eps}"] = lambda m, c, x, y: high_confidence(
            m, c, dataset, x, y, eps, steps, constrained=True)
    penalties = QUICK_PENALTIES if quick else PENALTIES
    chosen[f"PGD adaptive targeted eps={eps}"] = lambda m, c, x, y: detector_aware(
        m, c, dataset, x, y, eps, steps, constrained=constrained, penalties=penalties)
    if constrained:
        chosen[f"PGD adaptive targeted, support-aware eps={eps}"] = (
            lambda m, c, x, y: detector_aware(m, c, dataset, x, y, eps, steps,
                                              constrained=True, penalties=penalties,
                                              reshape=True))
    return chosen


class _Box:
    """Where an example may go: the L-infinity ball around ``x`` within the data's range;
    with ``grid``, on the data's value grid; with ``keep_zeros`` also, zeros fixed and
    other values at least one grid step (the zero pattern cannot change)."""

    def __init__(self, x: Any, eps: float, dataset: Dataset, constrained: bool,
                 keep_zeros: bool = True) -> None:
        import torch

        self.x, self.constrained = x, constrained
        self.low = (x - eps).clamp(0.0, 1.0)
        self.high = (x + eps).clamp(0.0, 1.0)
        self.grid = dataset.grid
        if constrained and keep_zeros:
            zero = x == 0
            step = 1.0 / float(dataset.grid)
            self.low = torch.where(zero, torch.zeros_like(x), self.low.clamp_min(step))
            self.high = torch.where(zero, torch.zeros_like(x), self.high)

    def project(self, x: Any) -> Any:
        return x.clamp(self.low, self.high)

    def snapped(self, x: Any) -> Any:
        """On the grid (when constrained) with the identity as gradient (BPDA)."""
        if not self.constrained:
            return x
        import torch

        rounded = torch.round(x * self.grid) / self.grid
        rounded = torch.minimum(torch.maximum(rounded, self.low), self.high)
        return x + (rounded - x).detach()


def _margin(logits: Any, label: Any, targeted: bool) -> Any:
    """Targeted: how far the target ``label`` leads the best other class; untargeted: how
    far the best wrong class leads ``label``."""
    import torch

    own = logits.gather(1, label[:, None])[:, 0]
    others = logits.clone()
    others.scatter_(1, label[:, None], -torch.inf)
    best_other = others.max(dim=1).values
    return own - best_other if targeted else best_other - own


def _pgd(x0: Any, box: _Box, eps: float, steps: int,
         loss_and_keep: Callable[[Any], tuple[Any, Any, Any]]) -> tuple[Any, Any]:
    """Signed-gradient descent on ``loss`` from ``x0``; ``loss_and_keep(x)`` gives (per-sample
    loss, which samples count as done, a per-sample quality, lower better). Returns the best
    done iterate per sample (the clean input where none) and its quality (inf where none)."""
    import torch

    best = x0.clone()
    quality = torch.full((len(x0),), float("inf"))
    x = x0.clone()
    for _ in range(steps + 1):
        x = x.detach().requires_grad_(True)
        snapped = box.snapped(x)
        loss, done, score = loss_and_keep(snapped)
        better = done & (score < quality)
        best[better] = snapped.detach()[better]
        quality[better] = score.detach()[better]
        (grad,) = torch.autograd.grad(loss.sum(), x)
        x = box.project(x.detach() - eps / 10 * grad.sign())
    return best, quality


def high_confidence(model: Any, calibration: Any, dataset: Dataset, x: np.ndarray,
                    y: np.ndarray, eps: float, steps: int, constrained: bool) -> np.ndarray:
    """Untargeted PGD on the margin loss, pushed to ``HIGH_CONFIDENCE``; per sample the
    iterate with the largest margin (a fooled one where there is one)."""
    import torch

    with _frozen(model):
        x0, label = torch.from_numpy(x), torch.from_numpy(y)
        box = _Box(x0, eps, dataset, constrained)

        def step(values: Any) -> tuple[Any, Any, Any]:
            margin = _margin(model(values.reshape(-1, *dataset.sample_shape)), label, False)
            return -margin.clamp(max=HIGH_CONFIDENCE), margin > 0, -margin

        best, _ = _pgd(x0, box, eps, steps, step)
    return best.numpy().astype(np.float32)


def detector_aware(model: Any, calibration: Any, dataset: Dataset, x: np.ndarray,
                   y: np.ndarray, eps: float, steps: int, constrained: bool,
                   targets: int | None = None,
                   penalties: tuple[float, ...] = PENALTIES,
                   reshape: bool = False) -> np.ndarray:
    """Targeted PGD on ``margin + lam * suspicion`` for every target class (or, given
    ``targets``, the ``targets`` classes the model ranks highest after the true one) and
    every penalty ``lam``; per sample the fooling iterate with the lowest suspicion over
    all of them.

    ``reshape`` (with ``constrained``: data on a grid): zeros may rise and small values
    fall to zero within ``eps``, so the support pattern can change; the suite's
    ``support`` and ``sparsity`` scores then get a gradient through the relaxed pattern
    (``Suite(relaxation=...)``, one grid step wide, the exact pattern in the forward
    pass)."""
    import torch

    if reshape and not (constrained and dataset.grid):
        raise ValueError("reshape needs a constrained attack on data with a value grid")
    with _frozen(model):
        relaxation = 1.0 / float(dataset.grid) if reshape else None
        suite = Suite(model, calibration, dataset.sample_shape, relaxation=relaxation)
        x0, label = torch.from_numpy(x), torch.from_numpy(y)
        with torch.no_grad():
            logits = model(x0.reshape(-1, *dataset.sample_shape))
        logits.scatter_(1, label[:, None], -torch.inf)
        ranked = logits.argsort(dim=1, descending=True)[:, :dataset.classes - 1]
        box = _Box(x0, eps, dataset, constrained, keep_zeros=not reshape)
        best = x0.clone()
        quality = torch.full((len(x0),), float("inf"))
        for rank in range(min(targets or dataset.classes - 1, dataset.classes - 1)):
            target = ranked[:, rank].contiguous()
            for lam in penalties:
                def step(values: Any, lam: float = lam, target: Any = target) -> tuple[
                        Any, Any, Any]:
                    logits, suspicion = suite(values)
                    margin = _margin(logits, target, True)
                    loss = (TARGETED_KAPPA - margin).clamp_min(0) + lam * suspicion
                    return loss, logits.argmax(dim=1) == target, suspicion

                found, found_quality = _pgd(x0, box, eps, steps, step)
                better = found_quality < quality
                best[better], quality[better] = found[better], found_quality[better]
    return best.numpy().astype(np.float32)


class _frozen:
    """The model in eval mode with its parameters out of autograd, restored after."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.grads = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        for p, _ in self.grads:
            p.requires_grad_(False)

    def __exit__(self, *exc: Any) -> None:
        for m, training in self.modes:
            m.training = training
        for p, flag in self.grads:
            p.requires_grad_(flag)
