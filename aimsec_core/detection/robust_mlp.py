"""A small classifier made to resist L-infinity perturbations, trained in numpy at
calibration: one hidden layer of ReLU units, trained by projected-gradient adversarial
training (Madry et al., "Towards deep learning models resistant to adversarial attacks",
ICLR 2018): every update first moves its batch, from a random start, by a few signed
gradient steps within ``eps`` of each sample (clipped to the data's range), then fits
the moved batch.

It is no replacement for the protected model (it is smaller and less accurate on clean
data); it is a second opinion that a bounded perturbation can hardly change, so an input
on which the protected model and it disagree stands out (``robust.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Samples per update.
BATCH = 64
#: Adam (Kingma & Ba 2015) with the usual moment decays; the learning rate rises linearly
#: over the first ``WARMUP`` share of the updates and falls linearly to zero after.
LEARNING_RATE = 3e-3
WARMUP = 0.3
BETAS = (0.9, 0.999)


@dataclass
class RobustMLP:
    """``logits(x) = relu(x @ w1 + b1) @ w2 + b2``; ``x`` is (n, d), the result (n, k)."""

    w1: np.ndarray  #: (d, hidden)
    b1: np.ndarray  #: (hidden,)
    w2: np.ndarray  #: (hidden, k)
    b2: np.ndarray  #: (k,)

    def logits(self, x: np.ndarray) -> np.ndarray:
        hidden = x @ self.w1
        hidden += self.b1
        np.maximum(hidden, 0.0, out=hidden)
        out = hidden @ self.w2
        out += self.b2
        return out

    @property
    def parameters(self) -> list[np.ndarray]:
        return [self.w1, self.b1, self.w2, self.b2]

    def _loss_gradients(self, x: np.ndarray, labels: np.ndarray, wrt_input: bool
                        ) -> tuple[np.ndarray | None, list[np.ndarray] | None]:
        """Gradients of the mean cross-entropy at ``labels``: with respect to ``x`` when
        ``wrt_input``, else with respect to the parameters."""
        pre = x @ self.w1 + self.b1
        hidden = np.maximum(pre, 0.0)
        z = hidden @ self.w2 + self.b2
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(x)), labels] -= 1.0
        dz = p / len(x)
        dpre = (dz @ self.w2.T) * (pre > 0)
        if wrt_input:
            return dpre @ self.w1.T, None
        return None, [x.T @ dpre, dpre.sum(axis=0), hidden.T @ dz, dz.sum(axis=0)]

    def perturbed(self, x: np.ndarray, labels: np.ndarray, eps: float, steps: int,
                  value_range: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
        """``x`` moved to raise the loss at ``labels``: a random start within ``eps``, then
        ``steps`` signed gradient steps of ``2.5 eps / steps`` (Madry et al.'s rule; at most
        ``1.25 eps``, the single step of Wong et al. 2020), projected back within ``eps`` of
        ``x`` and into ``value_range``."""
        low, high = value_range
        delta = rng.uniform(-eps, eps, x.shape).astype(x.dtype)
        size = eps * min(2.5 / max(steps, 1), 1.25)
        for _ in range(steps):
            grad, _ = self._loss_gradients(np.clip(x + delta, low, high), labels, True)
            assert grad is not None
            delta = np.clip(delta + size * np.sign(grad), -eps, eps)
        return np.clip(x + delta, low, high)

    @classmethod
    def train(cls, x: np.ndarray, labels: np.ndarray, classes: int, *, eps: float,
              value_range: tuple[float, float], hidden: int, updates: int, attack_steps: int,
              seed: int) -> RobustMLP:
        """Adversarially trained on ``x`` (n, d) with integer ``labels`` in
        ``[0, classes)``; ``eps`` in the data's units, reached after the first ``WARMUP``
        share of the updates (a ramp keeps early training from collapsing)."""
        rng = np.random.default_rng(seed)
        x = np.asarray(x, dtype=np.float32)
        d = x.shape[1]
        model = cls(
            (rng.normal(0.0, np.sqrt(2.0 / d), (d, hidden))).astype(np.float32),
            np.zeros(hidden, dtype=np.float32),
            (rng.normal(0.0, np.sqrt(1.0 / hidden), (hidden, classes))).astype(np.float32),
            np.zeros(classes, dtype=np.float32))
        first = [np.zeros_like(p) for p in model.parameters]
        second = [np.zeros_like(p) for p in model.parameters]
        order = rng.permutation(len(x))
        at = 0
        for t in range(1, updates + 1):
            if at + BATCH > len(order):
                order, at = rng.permutation(len(x)), 0
            batch = order[at:at + BATCH]
            at += BATCH
            progress = t / updates
            rate = LEARNING_RATE * (progress / WARMUP if progress < WARMUP
                                    else (1.0 - progress) / (1.0 - WARMUP))
            moved = model.perturbed(x[batch], labels[batch], eps * min(1.0, progress / WARMUP),
                                    attack_steps, value_range, rng)
            _, grads = model._loss_gradients(moved, labels[batch], False)
            assert grads is not None
            for p, g, m, v in zip(model.parameters, grads, first, second):
                m *= BETAS[0]
                m += (1 - BETAS[0]) * g
                v *= BETAS[1]
                v += (1 - BETAS[1]) * g * g
                p -= (rate * (m / (1 - BETAS[0] ** t))
                      / (np.sqrt(v / (1 - BETAS[1] ** t)) + 1e-8)).astype(p.dtype)
        return model
