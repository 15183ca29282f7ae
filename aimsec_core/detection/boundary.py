"""Distance to the decision boundary: the confidence margin divided by how fast the model
changes there, the linearised step DeepFool takes (Moosavi-Dezfooli et al., CVPR 2016).

Minimal attacks (Carlini-Wagner L2, DeepFool) stop just past the boundary, so their
inputs sit a short distance from it. The margin alone measures that distance in the
model's units, and the gradient's size alone how steep the loss is; each varies from one
region of the input space to another with how fast the model's scores change there. Their
ratio is the distance itself, in the input's units:

    d = (z_t - z_r) / |grad (z_t - z_r)|

with ``z_t - z_r = log p_t - log p_r`` the log-odds of the predicted class ``t`` against
the runner-up ``r``. Its gradient is read from the one the probe already carries, that of
the cross-entropy at the predicted label: ``-grad log p_t = -(1 - p_t) grad (z_t - z_r)``
exactly for two classes, and to first order wherever the classes beyond the runner-up
hold little probability, which is where the boundary is near. So

    d = (log p_t - log p_r) (1 - p_t) / |grad CE_t|,

and the score is ``-log d``: larger means nearer the boundary. No pass beyond the
gradient detector's: the probabilities and the gradient come from the prediction's own
forward and backward pass.

Where it was measured (``aimsec evaluate``, in the default suite in place of the
gradient detector, 5% FPR): Carlini-Wagner L2 and DeepFool on ``wine`` from 0.51 and 0.50
to 0.75 and 0.76 (torch, mean of eight seeds); on ``digits-textured`` from 0.84 and 0.96
to 0.87 and 0.98 (torch, three seeds); DeepFool on ``tabular`` from 0.64 to 0.71 (torch,
five seeds), Carlini-Wagner there within 0.03. The gradient's norm alone is
``log(1 - p_t) + log |grad (z_t - z_r)|``, which barely moves between log-odds of 0.01 and
0.3, where minimal attacks end, while the local steepness varies between regions.
"""

from __future__ import annotations

import numpy as np

from .base import Detector, Probe

#: Floors that keep the logarithms finite: a tie (log-odds 0) is as near as it gets, and a
#: saturated prediction (1 - p_t == 0 in float64) with no gradient is far.
_TIE = 1e-12
_TINY = 1e-300


class BoundaryDetector(Detector):
    name = "boundary"
    needs_gradient = True

    def score(self, probe: Probe) -> np.ndarray:
        if probe.gradient is None:
            raise ValueError("the boundary detector needs an input gradient")
        probabilities = probe.probabilities
        n = len(probe.x)
        if probabilities.shape[1] < 2:  # a model of one class has no boundary to be near
            return np.zeros(n)
        rows, predicted = np.arange(n), probe.predicted
        # 1 - p_t as the sum of the others: exact where p_t rounds to 1
        others = probabilities.copy()
        others[rows, predicted] = 0.0
        # the logarithms of p_t, p_r, 1 - p_t and |grad CE_t|, floored, taken at once
        logs = np.empty((4, n))
        logs[0] = probabilities[rows, predicted]
        others.max(axis=1, out=logs[1])
        others.sum(axis=1, out=logs[2])
        gradient = np.asarray(probe.gradient).reshape(n, -1)
        np.sqrt(np.einsum("ij,ij->i", gradient, gradient, dtype=np.float64), out=logs[3])
        np.log(np.maximum(logs, _TINY, out=logs), out=logs)
        log_odds = logs[0] - logs[1]
        return logs[3] - np.log(np.maximum(log_odds, _TIE)) - logs[2]
