"""aimsec's calibrated detector suite rebuilt in torch, differentiable end to end, for the
adaptive attacks: the attacker knows the detectors and their calibration (the file's
state), the threat model of Carlini & Wagner ("Adversarial examples are not easily
detected", 2017) and Tramèr et al. ("On adaptive attacks to adversarial example
defenses", 2020).

Each detector's raw score is computed as the detector computes it, then turned into its
rarity among the calibration's clean scores (the step function of ``suite.py``, exact in
the forward pass, with the gradient of its linear interpolation between clean scores:
straight-through; the same exponential tail past the largest), and the suspicion is the
sum of the two largest rarities, as in the suite: the attacker's suspicion is the
guard's, so its choice of example ("best of all targets") is made on the guard's number.

- ``gradient``: the norm of the input gradient at the predicted label, differentiated
  again (double backpropagation);
- ``boundary``: the log-odds of the top two classes times ``1 - p_t`` over that same
  gradient's norm, differentiated through both (double backpropagation); its
  ``-log(log-odds)`` is exact forward but takes the gradient of a version smoothed over
  ``BOUNDARY_SMOOTHING`` (straight-through): unsmoothed it is a wall at the boundary that
  kept the detector-aware attack from crossing at all (wine: 0% success);
- ``margin``, ``density``, ``neighbours``, ``features``, ``shift``, ``robust``: exact, with the
  model's predicted label (and for ``shift`` its runner-up) held fixed at each step (an
  argmax has no gradient);
- ``sparsity``: counts exact zeros, a step function; ``support``: ``neighbours`` on the
  0/1 pattern of values above the floor, a step function too. Without ``relaxation``
  both are exact with no gradient (the attacks that keep the zero pattern cannot move
  them; their answer to ``support`` is the choice of target). With ``relaxation`` (a
  width ``w``, in the data's units) each pattern is exact in the forward pass and takes
  its gradient from ``sigmoid((v - floor - w/2) / (w/4))`` (for zeros: floor 0, ``v = x``
  on data that cannot go below 0, else ``|x|``, which has no gradient at 0):
  straight-through estimation, the BPDA of Athalye et al. (2018), so an attack that
  may move zeros is steered by both;
- ``noise``: expectation over its Gaussian draws (the detector's seed is fixed, so the
  attacker who knows it reproduces the very draws);
- ``squeeze`` and ``jump``: not differentiable; BPDA (Athalye et al. 2018) is not
  implemented here, so a suite holding them is refused rather than reported too kindly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Width (log-odds) over which the boundary detector's -log(gap) is smoothed for the
#: attacker's gradient (see ``Suite._boundary``).
BOUNDARY_SMOOTHING = 1.0

SUPPORTED = ("gradient", "boundary", "margin", "density", "neighbours", "features", "sparsity",
             "noise", "support", "shift", "robust")


def _tensor(value: Any, dtype: Any = None) -> Any:
    import torch

    return torch.as_tensor(np.asarray(value), dtype=dtype or torch.float32)


class Rarity:
    """A detector's rarity among its clean scores, as ``suite.CleanReference`` computes it,
    exact forward, with a piecewise-linear gradient."""

    def __init__(self, reference: Any, two_sided: bool) -> None:
        import torch

        scores = np.asarray(reference.scores, dtype=np.float64)
        n = len(scores)
        self.scores = _tensor(scores)
        # i clean scores strictly below: log10(n + 1) - log10(n - i + 1)
        self.by_rank = _tensor(np.log10(n + 1) - np.log10(np.arange(n, -1, -1) + 1.0))
        self.slope = 1.0 / (reference.tail * math.log(10))
        self.two_sided = two_sided
        self.torch = torch

    def _upper(self, s: Any, scores: Any, by_rank: Any) -> Any:
        """The guard's upper rarity of ``s`` in the forward pass (the step function of
        ``CleanReference.upper_rarity``), with the gradient of its linear interpolation
        between clean scores (straight-through): the attacker's suspicion is then the
        guard's, not an upper envelope of it that reads up to a step (0.3 at the top) high
        in the clean scores' sparse upper tail, where the threshold sits."""
        torch = self.torch
        detached = s.detach().contiguous()
        i = torch.searchsorted(scores, detached).clamp(1, len(scores) - 1)
        lo, hi = scores[i - 1], scores[i]
        w = ((s - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
        inside = by_rank[i] + w * (by_rank[i + 1] - by_rank[i])
        below = torch.zeros_like(s)
        beyond = by_rank[-1] + (s - scores[-1]) * self.slope
        smooth = torch.where(s < scores[0], below, torch.where(s > scores[-1], beyond, inside))
        # clean scores strictly below s, as the guard counts them
        step = by_rank[torch.searchsorted(scores, detached)]
        exact = torch.where(detached > scores[-1], beyond.detach(), step)
        return exact + (smooth - smooth.detach())

    def __call__(self, s: Any) -> Any:
        upper = self._upper(s, self.scores, self.by_rank)
        if not self.two_sided:
            return upper
        lower = self._upper(-s, -self.scores.flip(0), self.by_rank)
        return self.torch.maximum(upper, lower) - math.log10(2)


class Suite:
    """``__call__(x)``, ``x`` a (n, d) tensor of flat samples: ``(logits, suspicion)``,
    both differentiable in ``x``. ``model`` is the plain torch model; ``calibration`` the
    guard's; ``sample_shape`` what the model takes per sample."""

    def __init__(self, model: Any, calibration: Any, sample_shape: tuple[int, ...],
                 relaxation: float | None = None) -> None:
        if relaxation is not None and not relaxation > 0:
            raise ValueError(f"relaxation is a positive width; received {relaxation}")
        self.relaxation = relaxation
        suite = calibration.suite
        unsupported = [d.name for d in suite.detectors if d.name not in SUPPORTED]
        if unsupported:
            raise ValueError(f"no differentiable surrogate for {unsupported}; the adaptive "
                             f"attacks support {SUPPORTED}")
        self.model, self.shape = model, sample_shape
        self.detectors = suite.detectors
        self.rarity = {d.name: Rarity(suite.references[d.name], d.two_sided)
                       for d in suite.detectors}
        self.top = suite.top
        self.threshold = float(suite.threshold)
        self.value_range = calibration.value_range
        self._points: list[tuple[Any, bool]] | None = None

    # -- the model, with its features where a detector reads them -----------------------

    def _forward(self, x: Any, with_features: bool) -> tuple[Any, list[Any]]:
        from aimsec_torch._features import _feature_points

        if not with_features:
            return self.model(x.reshape(-1, *self.shape)), []
        if self._points is None:
            self._points = _feature_points(self.model)
        captured: list[Any] = []
        handles = [m.register_forward_pre_hook(lambda mod, inp: captured.append(inp[0]))
                   if before else m.register_forward_hook(
                       lambda mod, inp, out: captured.append(out)) for m, before in self._points]
        try:
            logits = self.model(x.reshape(-1, *self.shape))
        finally:
            for h in handles:
                h.remove()
        reduced = [t.flatten(2).mean(dim=2) if t.ndim > 2 else t.reshape(len(t), -1)
                   for t in [*captured, logits]]
        return logits, reduced

    def raw_scores(self, x: Any) -> tuple[Any, dict[str, Any]]:
        """``(logits, {detector: raw score})``, each score as the detector computes it."""
        import torch

        names = {d.name for d in self.detectors}
        logits, features = self._forward(x, "features" in names)
        probabilities = torch.softmax(logits, dim=1)
        predicted = probabilities.argmax(dim=1).detach()
        return logits, {d.name: getattr(self, "_" + d.name)(d, x, logits, probabilities,
                                                              predicted, features)
                        for d in self.detectors}

    def __call__(self, x: Any) -> tuple[Any, Any]:
        import torch

        logits, raw = self.raw_scores(x)
        stacked = torch.stack([self.rarity[name](score) for name, score in raw.items()])
        top = stacked.topk(min(self.top or len(stacked), len(stacked)), dim=0).values
        return logits, top.sum(dim=0)

    # -- one surrogate per detector ------------------------------------------------------

    def _gradient(self, detector: Any, x: Any, logits: Any, probabilities: Any,
                  predicted: Any, features: Any) -> Any:
        import torch
        import torch.nn.functional as F

        loss = F.cross_entropy(logits, predicted, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
        return torch.log(grad.flatten(1).norm(dim=1) + 1e-12)

    def _boundary(self, detector: Any, x: Any, logits: Any, probabilities: Any,
                  predicted: Any, features: Any) -> Any:
        import torch
        import torch.nn.functional as F

        loss = F.cross_entropy(logits, predicted, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
        log_p = torch.log_softmax(logits, dim=1)
        top2 = log_p.topk(2, dim=1).values
        gap = top2[:, 0] - top2[:, 1]
        # log(1 - p_t) as the log of the others' sum: stable where p_t is near 1
        log_rest = log_p.scatter(1, predicted[:, None], -torch.inf).logsumexp(dim=1)
        # -log(gap) has no bound at the boundary, which the attack must cross: a wall no
        # signed step gets over. The forward value stays exact; the gradient is that of
        # -log(sqrt(gap^2 + w^2)), bounded (straight-through, as BPDA does)
        width = BOUNDARY_SMOOTHING
        exact = -torch.log(gap.clamp_min(1e-12))
        smooth = -0.5 * torch.log(gap ** 2 + width ** 2)
        return (torch.log(grad.flatten(1).norm(dim=1).clamp_min(1e-30)) - log_rest
                + smooth + (exact - smooth).detach())

    def _margin(self, detector: Any, x: Any, logits: Any, probabilities: Any,
                predicted: Any, features: Any) -> Any:
        top2 = probabilities.topk(2, dim=1).values
        return 1.0 - (top2[:, 0] - top2[:, 1])

    def _sparsity(self, detector: Any, x: Any, logits: Any, probabilities: Any,
                  predicted: Any, features: Any) -> Any:
        if not detector.active:  # it abstains
            return x.new_zeros(x.shape[0])
        # on data that cannot go below zero, zero is the floor: relaxed one-sided (|x|
        # would have no gradient at 0, where the attack needs one)
        magnitude = x if self.value_range[0] >= 0 else x.abs()
        return (1.0 - self._above(magnitude, 0.0)).mean(dim=1).float()

    def _noise(self, detector: Any, x: Any, logits: Any, probabilities: Any,
               predicted: Any, features: Any) -> Any:
        import torch

        low, high = detector.value_range
        rng = np.random.default_rng(detector.seed)  # the detector's own draws
        n = x.shape[0]
        draws = _tensor(rng.normal(0.0, detector.sigma * (high - low),
                                   size=(detector.draws, n, x.shape[1])))
        noisy = (x[None] + draws).clamp(low, high).reshape(-1, x.shape[1])
        moved = torch.softmax(self.model(noisy.reshape(-1, *self.shape)), dim=1)
        moved = moved.reshape(detector.draws, n, -1)
        return (moved - probabilities[None]).abs().sum(dim=2).mean(dim=0)

    @staticmethod
    def _projected(detector: Any, x: Any) -> Any:
        flat = x.double()
        if detector.projection is not None:
            flat = flat @ _tensor(detector.projection, flat.dtype)
        return flat

    def _density(self, detector: Any, x: Any, logits: Any, probabilities: Any,
                 predicted: Any, features: Any) -> Any:
        import torch

        whitener, white_means = detector.gaussians.whitened()
        z = self._projected(detector, x) @ _tensor(whitener, torch.float64)
        d = torch.cdist(z, _tensor(white_means, torch.float64)) ** 2
        return torch.log(d.min(dim=1).values + 1e-12).float()

    def _neighbours(self, detector: Any, x: Any, logits: Any, probabilities: Any,
                    predicted: Any, features: Any) -> Any:
        return self._neighbour_ratio(detector, self._projected(detector, x), predicted)

    def _support(self, detector: Any, x: Any, logits: Any, probabilities: Any,
                 predicted: Any, features: Any) -> Any:
        import torch

        if not detector.active:
            return torch.zeros(len(x))
        shape = self._above(x, detector.floor)
        return self._neighbour_ratio(detector, self._projected(detector, shape), predicted)

    def _above(self, x: Any, floor: float) -> Any:
        """``x > floor`` as 0/1 (float64); with ``relaxation``, the gradient of its
        sigmoid relaxation passes straight through (see the module docstring)."""
        import torch

        exact = (x.detach() > floor).double()
        if self.relaxation is None:
            return exact
        w = self.relaxation
        soft = torch.sigmoid((x.double() - floor - w / 2) / (w / 4))
        return exact + (soft - soft.detach())

    @staticmethod
    def _neighbour_ratio(detector: Any, projected: Any, predicted: Any) -> Any:
        """``log(d_same / d_other)`` of the ``neighbours`` detector, from features already
        projected as the detector projects them."""
        import torch

        z = projected - _tensor(detector.centre, torch.float64)
        points = _tensor(detector.points, torch.float64)
        labels = torch.as_tensor(detector.labels)
        squared = torch.cdist(z, points) ** 2 + 1e-12
        same = labels[None] == predicted[:, None]
        k = detector.k
        inf = torch.tensor(float("inf"), dtype=squared.dtype)
        near_same = torch.where(same, squared, inf).topk(k, dim=1, largest=False).values
        near_other = torch.where(~same, squared, inf).topk(k, dim=1, largest=False).values

        def mean_distance(d: Any) -> Any:
            finite = torch.isfinite(d)
            return torch.where(finite, d, 1.0).sqrt().mul(finite).sum(1) / finite.sum(
                1).clamp_min(1)
        return (torch.log(mean_distance(near_same) + 1e-9)
                - torch.log(mean_distance(near_other) + 1e-9)).float()

    def _features(self, detector: Any, x: Any, logits: Any, probabilities: Any,
                  predicted: Any, features: Any) -> Any:
        import torch

        raw = torch.cat([f.double() for f in features], dim=1)
        z = (raw - _tensor(detector.centre, torch.float64)) / _tensor(detector.scale,
                                                                      torch.float64)
        gaussians = detector.gaussians
        whitener, white_means = gaussians.whitened()
        classes = torch.as_tensor(gaussians.classes)
        d = torch.cdist(z @ _tensor(whitener, torch.float64),
                        _tensor(white_means, torch.float64)) ** 2
        column = torch.searchsorted(classes, predicted).clamp(0, len(classes) - 1)
        known = classes[column] == predicted
        chosen = torch.where(known, d.gather(1, column[:, None])[:, 0], d.min(dim=1).values)
        return (0.5 * torch.log(chosen + 1e-12)).float()

    def _shift(self, detector: Any, x: Any, logits: Any, probabilities: Any,
               predicted: Any, features: Any) -> Any:
        import torch
        import torch.nn.functional as F

        if detector.whitener.shape[1] == 0:  # it abstains
            return x.new_zeros(x.shape[0])
        # The classes and the steps' signs are held fixed (no gradient through an argmax
        # or a sign); the score is linear in x after that, as the detector computes it.
        rows, runner, known = detector.classes_of(probabilities.detach().cpu().numpy())
        steps = [detector.discriminant_step(rows, runner)]
        if any(d.needs_gradient for d in self.detectors):  # the probe carries the gradient
            loss = F.cross_entropy(logits, predicted, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x, retain_graph=True)
            steps.append(detector.gradient_step(grad.detach().cpu().numpy()))
        whitener = _tensor(detector.whitener, torch.float64)
        offset = (self._projected(detector, x) - _tensor(detector.means[rows], torch.float64)
                  ) @ whitener
        tests = []
        for step in steps:
            towards = step @ detector.whitener
            length = np.linalg.norm(towards, axis=1)
            unit = np.where((length > 0)[:, None],
                            towards / np.maximum(length, 1e-300)[:, None], 0.0)
            tests.append((offset * _tensor(unit, torch.float64)).sum(dim=1))
        best = torch.stack(tests).max(dim=0).values
        return torch.where(torch.as_tensor(known), best, torch.zeros_like(best)).float()

    def _robust(self, detector: Any, x: Any, logits: Any, probabilities: Any,
                predicted: Any, features: Any) -> Any:
        import torch

        c = detector.classifier
        w1, b1, w2, b2 = (_tensor(v) for v in (c.w1, c.b1, c.w2, c.b2))
        r = torch.relu(x.float() @ w1 + b1) @ w2 + b2
        own = r.gather(1, predicted[:, None])[:, 0]
        others = r.scatter(1, predicted[:, None], -torch.inf)
        return others.max(dim=1).values - own
