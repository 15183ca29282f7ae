"""The data sets ``aimsec evaluate`` measures on: all bundled with scikit-learn or generated,
nothing downloaded, every one scaled to [0, 1] and split 50/25/25 (train / calibration /
test, stratified, seeded).

- ``digits``: scikit-learn's 8x8 handwritten digits, pixels k/16. Their background is
  exactly zero, so any perturbation that touches it is obvious (the ``sparsity`` detector
  catches most standard attacks for that reason alone).
- ``digits-textured``: the same digits with that artefact removed: every image, train and
  test alike, becomes ``0.3 + 0.5 * digit + 0.2 * texture``, a random smooth texture with
  pixel noise (seeded) on a mid-grey background: no value is zero or on the 1/16 grid,
  and no attack budget evaluated (at most 0.3) can reach zero.
- ``wine``: scikit-learn's ``load_wine`` (178 samples, 13 chemical measurements, 3
  classes), min-max scaled.
- ``tabular``: ``make_classification`` (2,000 samples, 20 features, 6 informative and 10
  redundant ones, which are linear mixtures of the informative and so correlated with
  them; 2 classes), each feature plus Gaussian noise of 0.3 times its spread (the
  correlations are strong but not exact, as measured data would be), min-max scaled.

The wine and tabular features are split first, then min-max scaled with the training
split's minima and maxima (``MinMaxScaler(clip=True)``), as a deployed model's
preprocessing would be: calibration and test values outside the training range are
clipped to [0, 1], and nothing about the calibration or test split leaks into the scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import digits
from ..digits import DigitsSplit

#: L-infinity budgets of the standard attacks (--quick: the middle one for digits).
IMAGE_EPSILONS = (0.1, 0.2, 0.3)
TABULAR_EPSILONS = (0.1,)


@dataclass(frozen=True)
class Dataset:
    name: str
    split: DigitsSplit
    classes: int
    image_shape: tuple[int, int] | None  #: images: (height, width); tabular: None
    grid: int | None  #: values are multiples of 1/grid (digits: 16); None: continuous
    keeps_zeros: bool  #: exact zeros carry meaning (the digits' background)
    epsilons: tuple[float, ...]

    @property
    def width(self) -> int:
        return int(self.split.x_train.shape[1])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """What one sample looks like to the torch models: (1, 8, 8) images, else (d,)."""
        return (1, *self.image_shape) if self.image_shape else (self.width,)

    @property
    def architecture(self) -> str:
        """The torch and Keras model: a CNN on images, an MLP on tabular features."""
        return "cnn" if self.image_shape else "mlp"


def _digits(seed: int) -> Dataset:
    return Dataset("digits", digits.load(seed), 10, (8, 8), 16, True, IMAGE_EPSILONS)


def textures(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` 8x8 background textures in [0, 1], float32 (n, 64): smoothed noise (a Gaussian
    blur of width 1 pixel, wrapped at the edges), stretched to [0, 1] per image, mixed
    60/40 with fresh per-pixel noise."""
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(rng.random((n, 8, 8)), sigma=(0, 1, 1), mode="wrap")
    low = smooth.min(axis=(1, 2), keepdims=True)
    high = smooth.max(axis=(1, 2), keepdims=True)
    smooth = (smooth - low) / np.maximum(high - low, 1e-9)
    return (0.6 * smooth + 0.4 * rng.random((n, 8, 8))).reshape(n, 64).astype(np.float32)


def _textured(seed: int) -> Dataset:
    """Digits as ``0.3 + 0.5 * digit + 0.2 * texture``: in [0.3, 1], off the 1/16 grid."""
    base = digits.load(seed)
    rng = np.random.default_rng([seed, 12])

    def blend(x: np.ndarray) -> np.ndarray:
        return np.clip(0.3 + 0.5 * x + 0.2 * textures(len(x), rng), 0.0, 1.0).astype(np.float32)

    split = DigitsSplit(blend(base.x_train), base.y_train, blend(base.x_calibration),
                        base.y_calibration, blend(base.x_test), base.y_test)
    return Dataset("digits-textured", split, 10, (8, 8), None, False, IMAGE_EPSILONS)


def _scaled_split(x: np.ndarray, y: np.ndarray, seed: int) -> DigitsSplit:
    """``x`` split as :func:`digits.split` does, then min-max scaled to [0, 1] (float32)
    by the training split alone, values past its range clipped."""
    from sklearn.preprocessing import MinMaxScaler

    raw = digits.split(x, y.astype(np.int64), seed)
    scaler = MinMaxScaler(clip=True).fit(raw.x_train)

    def scale(part: np.ndarray) -> np.ndarray:
        return scaler.transform(part).astype(np.float32)

    return DigitsSplit(scale(raw.x_train), raw.y_train, scale(raw.x_calibration),
                       raw.y_calibration, scale(raw.x_test), raw.y_test)


def _wine(seed: int) -> Dataset:
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    return Dataset("wine", _scaled_split(x, y, seed), 3, None, None, False, TABULAR_EPSILONS)


def _tabular(seed: int) -> Dataset:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=2000, n_features=20, n_informative=6,
                               n_redundant=10, n_classes=2, random_state=seed)
    x = x + np.random.default_rng([seed, 13]).normal(0.0, 0.3, x.shape) * x.std(axis=0)
    return Dataset("tabular", _scaled_split(x, y, seed), 2, None, None, False,
                   TABULAR_EPSILONS)


DATASETS: dict[str, Callable[[int], Dataset]] = {
    "digits": _digits, "digits-textured": _textured, "wine": _wine, "tabular": _tabular}


def load(name: str, seed: int = 0) -> Dataset:
    """The data set ``name`` (one of :data:`DATASETS`), split with ``seed``."""
    try:
        return DATASETS[name](seed)
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}") from None
