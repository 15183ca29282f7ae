"""The detector contract, and the per-batch view of the model that detectors read."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from . import arguments


def softmax_if_needed(scores: np.ndarray) -> np.ndarray:
    """Class scores as probabilities: rows that already sum to 1 are kept as they are."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:  # a binary decision function
        scores = np.stack([-scores, scores], axis=1)
    if scores.size == 0:
        return scores
    if scores.min() >= 0 and np.abs(scores.sum(axis=1) - 1.0).max() <= 1e-3:
        return scores
    return _softmax(scores)


def binary_probabilities(column: np.ndarray, probability: bool) -> np.ndarray:
    """A binary classifier's single column of class-1 scores, ``(n,)`` or ``(n, 1)``, as
    ``(n, 2)`` float64 class probabilities: ``[1 - p, p]`` where it holds probabilities
    ``p`` (a sigmoid's output; clipped into [0, 1]), ``[1 - sigmoid(z), sigmoid(z)]``
    where it holds logits ``z``."""
    values = np.asarray(column, dtype=np.float64).reshape(-1, 1)
    if probability:
        p = np.clip(values, 0.0, 1.0)
        return np.concatenate([1.0 - p, p], axis=1)
    # softmax([0, z]) taken directly: through softmax_if_needed, a batch whose every
    # logit is 1 would pass for rows of probabilities [0, 1]
    return _softmax(np.concatenate([np.zeros_like(values), values], axis=1))


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclass
class Probe:
    """What detectors see of one batch: the input on the host, the model's class
    probabilities for it, its input gradient where autograd gave one, and a way to ask
    the model about transformed copies (each such call is one extra forward pass).

    Probabilities not given up front are asked for on first use, so a suite of detectors
    that never reads them (sparsity, jump, density) costs no forward pass at all."""

    x: np.ndarray
    given_probabilities: np.ndarray | None
    ask: Any  #: callable: numpy batch shaped like ``x`` -> class scores
    gradient: np.ndarray | None = None
    forward_passes: int = field(default=0)
    #: The model's internal features (one (n, width) array per layer), where the adapter
    #: gives them; asked for through ``ask_features`` on first use otherwise.
    given_features: list[np.ndarray] | None = None
    ask_features: Any = None  #: callable: numpy batch -> list of (n, width) arrays
    _predicted: np.ndarray | None = field(default=None, init=False, repr=False,
                                          compare=False)

    @property
    def features(self) -> list[np.ndarray]:
        if self.given_features is None:
            if self.ask_features is None:
                raise ValueError("this model's adapter gives no internal features")
            self.forward_passes += 1
            self.given_features = [np.asarray(f) for f in self.ask_features(self.x)]
        return self.given_features

    @property
    def probabilities(self) -> np.ndarray:
        if self.given_probabilities is None:
            self.given_probabilities = self.probabilities_of(self.x)
        return self.given_probabilities

    def probabilities_of(self, x: np.ndarray) -> np.ndarray:
        self.forward_passes += 1
        return softmax_if_needed(self.ask(x.astype(self.x.dtype, copy=False)))

    def rows(self, start: int, stop: int) -> Probe:
        """Rows ``start:stop`` as their own probe: what is known is sliced (views), what
        is not is asked for per chunk, so a large batch is never probed whole."""
        def part(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[start:stop]

        features = None if self.given_features is None else [
            f[start:stop] for f in self.given_features]
        return Probe(self.x[start:stop], part(self.given_probabilities), self.ask,
                     part(self.gradient), given_features=features,
                     ask_features=self.ask_features)

    def subset(self, index: np.ndarray) -> Probe:
        features = None if self.given_features is None else [
            f[index] for f in self.given_features]
        return Probe(self.x[index], self.probabilities[index], self.ask,
                     None if self.gradient is None else self.gradient[index],
                     given_features=features, ask_features=self.ask_features)

    def joined(self, other: Probe) -> Probe:
        """This batch followed by ``other`` (a gradient or features only where both have
        them)."""
        gradient = None if self.gradient is None or other.gradient is None else (
            np.concatenate([self.gradient, other.gradient]))
        features = None if self.given_features is None or other.given_features is None \
            else [np.concatenate(pair) for pair in zip(self.given_features,
                                                       other.given_features)]
        return Probe(np.concatenate([self.x, other.x]),
                     np.concatenate([self.probabilities, other.probabilities]), self.ask,
                     gradient, given_features=features, ask_features=self.ask_features)

    @property
    def predicted(self) -> np.ndarray:
        """(n,) the class each sample is predicted, found once (several detectors read it)."""
        if self._predicted is None:
            self._predicted = self.probabilities.argmax(axis=1)
        return self._predicted


def value_range_of(state: dict[str, Any]) -> tuple[float, float]:
    """A stored ``value_range``: two finite numbers, low <= high, within float32's range
    (the detectors that keep one hand the model inputs inside it)."""
    value = arguments.array(state, "value_range", 1, rows=2)
    arguments.bounded("value_range", value, arguments.FLOAT32_MAX,
                      "inputs made inside it go to the model, in which larger values "
                      "are commonly infinite")
    low, high = value
    if low > high:
        raise ValueError(f"member 'value_range' is [{low}, {high}]; expected low <= high")
    return float(low), float(high)


class Detector(ABC):
    """One signal. ``score`` gives one number per sample; larger means more suspicious.

    Thresholds are not set here: the suite turns each detector's scores into their rarity
    among clean scores and calibrates one threshold on the sum of each sample's two largest
    rarities (see ``suite.py``).
    """

    name: ClassVar[str]
    #: Needs the input gradient (autograd adapters only).
    needs_gradient: ClassVar[bool] = False
    #: Reads the model's internal features (adapters with ``capabilities.features``).
    needs_features: ClassVar[bool] = False
    #: Extra forward passes per call, for the cost report.
    forward_passes: ClassVar[int] = 0
    #: Unusual in both directions (too low is as suspicious as too high).
    two_sided: ClassVar[bool] = False
    #: ``fit`` learns from the data, so in-sample scores would flatter clean data.
    learns: ClassVar[bool] = False
    #: With reference data, ``fit`` once on it alone (every calibration sample is then out
    #: of sample) instead of once per fold: for detectors whose fit is costly.
    fits_on_reference: ClassVar[bool] = False
    #: ``score`` multiplies matrices (numpy's BLAS then runs single-threaded; see suite.py).
    multiplies_matrices: ClassVar[bool] = False
    #: Names of the arrays :meth:`state` returns: the only members of a calibration file
    #: read for this detector.
    state_keys: ClassVar[tuple[str, ...]] = ()

    def fit(self, probe: Probe, value_range: tuple[float, float]) -> None:
        """Learn what clean data looks like (most detectors need nothing)."""

    @abstractmethod
    def score(self, probe: Probe) -> np.ndarray: ...

    def state(self) -> dict[str, Any]:
        """Learned parameters (numbers and numpy arrays only), for the calibration file."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""

    def check_state(self, width: int) -> None:
        """Raise ``ValueError`` unless the restored state fits samples of ``width`` values
        (a calibration file is untrusted input)."""

    @property
    def abstains(self) -> bool:
        """Whether the fitted detector abstains (scores every finite input 0) because the
        data it learnt from holds nothing for it to look at."""
        return False

    def abstain(self) -> None:
        """Make the fitted detector abstain (detectors that can abstain override it)."""
        raise NotImplementedError(f"the {self.name} detector cannot abstain")

    def config(self) -> dict[str, Any]:
        """Constructor arguments, for the calibration file."""
        return {}


class InputSpaceDetector(Detector):
    """A detector that learns from clean inputs themselves, as flat vectors.

    Inputs wider than ``MAX_DIM`` values go through a fixed random Gaussian projection to
    ``PROJECTED_DIM`` first (distances are roughly kept, Johnson-Lindenstrauss), so memory
    and cost stay bounded for large inputs."""

    MAX_DIM: ClassVar[int] = 1024
    PROJECTED_DIM: ClassVar[int] = 256
    learns = True
    multiplies_matrices = True
    state_keys: ClassVar[tuple[str, ...]] = ("projection",)

    def __init__(self, seed: int = 0) -> None:
        self.seed = arguments.whole("seed", seed, 0, 2**63 - 1)
        self.projection: np.ndarray | None = None

    def fit_features(self, x: np.ndarray) -> np.ndarray:
        """Set up the projection for inputs like ``x``; return their features."""
        d = int(np.prod(x.shape[1:]))
        self.projection = None
        if d > self.MAX_DIM:
            rng = np.random.default_rng(self.seed)
            self.projection = rng.normal(0, 1 / np.sqrt(self.PROJECTED_DIM),
                                         (d, self.PROJECTED_DIM))
        return self.features(x)

    def features(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float64)
        return flat if self.projection is None else flat @ self.projection

    def state(self) -> dict[str, Any]:
        return {} if self.projection is None else {"projection": self.projection}

    def load_state(self, state: dict[str, Any]) -> None:
        self.projection = (arguments.array(state, "projection", 2)
                           if "projection" in state else None)

    def feature_width(self, width: int) -> int:
        """Width of :meth:`features` for samples of ``width`` values."""
        if self.projection is None:
            return width
        if self.projection.shape[0] != width:
            raise ValueError(f"member 'projection' maps {self.projection.shape[0]} values; "
                             f"the calibrated samples have {width}")
        return int(self.projection.shape[1])
