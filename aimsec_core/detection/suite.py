"""Several detectors, one calibrated decision.

Detectors speak in different units and their clean scores are skewed in different ways
(a confident model's margin is almost always tiny), so scores are compared by how rare
they are on clean data: each detector keeps its sorted clean scores (out of sample),
and a new score becomes its rarity, ``-log10`` of the share of clean scores at least as
extreme, extended past the largest clean score by an exponential tail so that ordering
(and so ROC-AUC) is kept. A sample's suspicion is the sum of its ``top`` largest rarities
(default two), the log of the rank-truncated product of its p-values (Dudbridge &
Koeleman 2003). An attack shows in a couple of signals, not all: spread perturbations
(FGSM, PGD) in density and sparsity, minimal ones (Carlini-Wagner, DeepFool) in confidence
and neighbourhood. The second-largest rarity still lets moderate evidence from two
detectors add up, which the largest alone would miss; summing every detector would let
those that see nothing dilute those that do. One threshold on the suspicion, set at the
``1 - fpr`` quantile of the clean samples' own (cross-fitted) suspicion, makes the
false-positive target hold for the suite as a whole.
"""

from __future__ import annotations

import sys
import threading
from contextlib import nullcontext
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CalibrationError
from ..forks import renew_after_fork
from . import arguments
from .base import Detector, Probe


_blas_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], "_blas_lock")  # a child forked while it was held
_blas_users = 0
#: ``(get, set)`` thread-count functions of each BLAS library numpy and others loaded
_blas_libraries: Any = None
_blas_original: list[Any] = []
_blas_modules_seen = 0  #: len(sys.modules) when the libraries were last found


class _SingleThreadedBlas:
    """See :func:`single_threaded_blas` (a class, not a generator: this runs on every
    screened batch, and a generator-based context costs several times as much)."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _blas_users, _blas_libraries, _blas_original, _blas_modules_seen
        with _blas_lock:
            if _blas_users == 0:
                if _blas_libraries is None or len(sys.modules) != _blas_modules_seen:
                    # found again after any import, which may have loaded another BLAS
                    # (scipy's, torch's): one found before it would be limited and the new
                    # one not
                    from threadpoolctl import ThreadpoolController

                    _blas_libraries = [_thread_functions(library) for library in
                                       ThreadpoolController().select(
                                           user_api="blas").lib_controllers]
                    _blas_modules_seen = len(sys.modules)
                _blas_original = [get() for get, _ in _blas_libraries]
                for (_, set_threads), threads in zip(_blas_libraries, _blas_original):
                    if threads != 1:
                        set_threads(1)
            _blas_users += 1

    def __exit__(self, *exc: object) -> None:
        global _blas_users
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for (_, set_threads), threads in zip(_blas_libraries, _blas_original):
                    if threads is not None and threads != 1:
                        set_threads(threads)


_SINGLE_THREADED_BLAS = _SingleThreadedBlas()


def single_threaded_blas() -> _SingleThreadedBlas:
    """A context in which numpy's BLAS runs on one thread.

    The detectors' matrices are small, and a multi-threaded BLAS leaves its threads
    spinning after each product; beside a framework's own thread pool (torch's) those
    spinning threads slowed the very next forward pass tenfold on a 2-core machine.
    The limit is process-wide, so concurrent calls share one: the first in sets it, the
    last out restores what the application had. Each library is asked and set directly
    (see :func:`_thread_functions`), not through a ``threadpoolctl`` limiter, which
    describes every loaded library first (tens of microseconds per call)."""
    return _SINGLE_THREADED_BLAS


def _thread_functions(library: Any) -> tuple[Any, Any]:
    """``(get, set)`` for the thread count of one BLAS library (a ``threadpoolctl``
    controller). OpenBLAS with its own threads: its C functions themselves, a ctypes call
    each (``threadpoolctl``'s methods around them, which also track a controlling thread,
    cost about 15 times as much); any other library: the controller's methods."""
    find = getattr(library, "_get_symbol", None)  # resolves the build's symbol affixes
    if (find is not None and library.internal_api == "openblas"
            and getattr(library, "threading_layer", None) != "openmp"):
        get, set_threads = find("openblas_get_num_threads"), find("openblas_set_num_threads")
        if get is not None and set_threads is not None:
            return get, set_threads
    return library.get_num_threads, lambda threads: _set_threads(library, threads)


def _set_threads(library: Any, threads: int) -> None:
    """Set a BLAS library's thread count through its ``threadpoolctl`` controller, from
    whichever thread holds the lock.

    threadpoolctl 3.8 lets only the first thread that set OpenBLAS's process-wide limit
    set it again (others are silently ignored), so a limit set by one request's thread
    and restored by another's stayed at one thread; the lock above already serialises
    the setting, so the claim is released around each set."""
    release = getattr(type(library), "clear_controlling_thread", None)
    if release is not None:
        release(force=True)
    library.set_num_threads(threads)
    if release is not None:
        release(force=True)


#: Folds for cross-fitting the detectors that learn, and for the threshold.
FOLDS = 5
#: Rows scored at once: bounds the detectors' per-batch matrices (1,024 rows against
#: 1,000 neighbour points is a 4 MB distance matrix).
SCORE_CHUNK = 1024


def _fold_of(n: int, folds: int) -> np.ndarray:
    """Each sample's fold, by position (calibration shuffles the samples first); fitting
    and thresholding must split alike."""
    return np.arange(n) % folds


def _check_fpr(fpr: float) -> None:
    if not 0 < fpr < 1:
        raise CalibrationError(f"fpr must be in (0, 1); received {fpr}")


@dataclass
class SuiteScores:
    """Per-sample results of one screened batch."""

    combined: np.ndarray  #: the suspicion: the sum of the ``top`` largest rarities
    rarity: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    flags: np.ndarray


@dataclass
class CleanReference:
    """One detector's clean scores, sorted, and the scale of their upper tail."""

    scores: np.ndarray
    tail: float

    def __post_init__(self) -> None:
        n = len(self.scores)
        # rarity of a score with i clean scores below it: -log10((n - i + 1) / (n + 1))
        self._by_rank = np.log10(n + 1) - np.log10(np.arange(n, -1, -1) + 1.0)
        self._mirrored: CleanReference | None = None

    @classmethod
    def of(cls, scores: np.ndarray) -> CleanReference:
        ordered = np.sort(np.asarray(scores, dtype=np.float64))
        top = ordered[int(len(ordered) * 0.9):]
        tail = float(np.mean(top - top[0])) if len(top) > 1 else 0.0
        if not tail > 0:
            tail = float(np.std(ordered)) or 1e-9
        return cls(ordered, tail)

    def upper_rarity(self, s: np.ndarray) -> np.ndarray:
        """``-log10`` of the share of clean scores >= ``s`` (with one pseudo-count); inf
        for NaN (a NaN score is suspect)."""
        s = np.asarray(s, dtype=np.float64)
        if s.ndim != 1:
            return self.upper_rarity(s.reshape(-1)).reshape(s.shape)
        n = len(self.scores)
        ranks = self.scores.searchsorted(s, side="left")  # n past every clean score, or NaN
        rarity = self._by_rank.take(ranks)
        if len(s) and ranks.max() == n:  # past every clean score (the exponential tail)
            beyond = ranks == n
            past = self._by_rank[-1] + (s[beyond] - self.scores[-1]) / (
                self.tail * np.log(10))
            rarity[beyond] = np.where(np.isnan(past), np.inf, past)
        return rarity

    def lower_rarity(self, s: np.ndarray) -> np.ndarray:
        if self._mirrored is None:
            self._mirrored = CleanReference(-self.scores[::-1], self.tail)
        return self._mirrored.upper_rarity(-s)


@dataclass
class DetectorSuite:
    detectors: list[Detector]
    references: dict[str, CleanReference] = field(default_factory=dict)
    threshold: float | None = None
    fpr_target: float | None = None
    #: How many of the largest rarities make the suspicion (None: all of them).
    top: int | None = 2

    def __post_init__(self) -> None:
        if self.top is not None and not (isinstance(self.top, int) and self.top >= 1):
            raise CalibrationError(f"top must be a positive number of detectors or None; "
                                   f"received {self.top!r}")

    @property
    def needs_gradient(self) -> bool:
        return any(d.needs_gradient for d in self.detectors)

    @property
    def needs_features(self) -> bool:
        return any(d.needs_features for d in self.detectors)

    def fit(self, probe: Probe, value_range: tuple[float, float], folds: int = FOLDS,
            reference: Probe | None = None) -> dict[str, np.ndarray]:
        """Fit every detector on clean data and keep its clean scores as reference;
        returns those scores, one array per detector, in ``probe``'s order.

        A detector that learns from the data is scored out of sample (each fold by a copy
        fitted on the other folds): scored on its own training data it would look cleaner
        than new clean data does, and the false-positive rate would overshoot. Such
        detectors also learn from ``reference`` (more clean data, never scored); those
        whose fit is costly (``fits_on_reference``) learn from it alone, once.
        """
        def with_reference(part: Probe) -> Probe:
            return part if reference is None else part.joined(reference)

        fold_of = _fold_of(len(probe.x), folds)
        clean: dict[str, np.ndarray] = {}
        for detector in self.detectors:
            if detector.learns and detector.fits_on_reference and reference is not None:
                detector.fit(reference, value_range)  # the calibration data is unseen
                scores = detector.score(probe)
            elif detector.learns:
                scores = np.empty(len(probe.x))
                copies_abstained = False
                for k in range(folds):
                    held_out = fold_of == k
                    copy = deepcopy(detector)
                    copy.fit(with_reference(probe.subset(~held_out)), value_range)
                    copies_abstained |= copy.abstains
                    scores[held_out] = copy.score(probe.subset(held_out))
                detector.fit(with_reference(probe), value_range)
                if copies_abstained or detector.abstains:
                    # the clean scores must come from the detector that scores new inputs:
                    # a detector that abstained on some folds' data and not on all of it
                    # (shift's noise floor, found in 300 samples and not in 240) would
                    # otherwise score new inputs against clean scores that are all 0, and
                    # flag nearly every one; where the data does not say clearly, abstain
                    if not detector.abstains:
                        detector.abstain()
                    scores = detector.score(probe)
            else:
                detector.fit(probe, value_range)
                scores = detector.score(probe)
            clean[detector.name] = np.asarray(scores, dtype=np.float64)
            self.references[detector.name] = CleanReference.of(scores)
        return clean

    def set_threshold_cross_fitted(self, clean: dict[str, np.ndarray], fpr: float,
                                   folds: int = FOLDS) -> float:
        """Threshold from the same clean data :meth:`fit` scored: each fold's suspicion is
        computed against the clean scores of the other folds only, so every sample is out
        of sample and all of them set the threshold (twice the data a held-out half gives,
        so the false-positive rate lands closer to its target). Returns the rate achieved
        on that data."""
        _check_fpr(fpr)
        n = len(next(iter(clean.values())))
        fold_of = _fold_of(n, folds)
        combined = np.empty(n)
        for k in range(folds):
            held_out = fold_of == k
            combined[held_out] = self._combine({
                d.name: self._rarity_against(d, clean[d.name][held_out],
                                             CleanReference.of(clean[d.name][~held_out]))
                for d in self.detectors})
        return self._set_threshold(combined, fpr)

    def set_threshold(self, probe: Probe, fpr: float) -> float:
        """Threshold at the ``1 - fpr`` quantile of held-out clean data; returns the
        false-positive rate achieved on that data."""
        _check_fpr(fpr)
        return self._set_threshold(self.score(probe).combined, fpr)

    def _set_threshold(self, combined: np.ndarray, fpr: float) -> float:
        self.threshold = float(np.quantile(combined, 1 - fpr, method="higher"))
        self.fpr_target = fpr
        return float(np.mean(combined > self.threshold))

    def rarity(self, detector: Detector, scores: np.ndarray) -> np.ndarray:
        return self._rarity_against(detector, scores, self.references[detector.name])

    @staticmethod
    def _rarity_against(detector: Detector, scores: np.ndarray,
                        reference: CleanReference) -> np.ndarray:
        upper = reference.upper_rarity(scores)  # inf for NaN: a NaN score is suspect
        if detector.two_sided:  # either tail, doubled p-value
            upper = np.maximum(upper, reference.lower_rarity(scores)) - np.log10(2)
        return upper

    def score(self, probe: Probe) -> SuiteScores:
        """Score a batch, :data:`SCORE_CHUNK` rows at a time: detectors build per-batch
        matrices (the neighbours' distances are batch x points), so memory stays bounded
        by the chunk, not the request."""
        n = len(probe.x)
        if n <= SCORE_CHUNK:
            return self._score(probe)
        chunks = [probe.rows(i, min(i + SCORE_CHUNK, n)) for i in range(0, n, SCORE_CHUNK)]
        parts = [self._score(chunk) for chunk in chunks]
        probe.forward_passes += sum(chunk.forward_passes for chunk in chunks)
        return SuiteScores(
            np.concatenate([p.combined for p in parts]),
            {k: np.concatenate([p.rarity[k] for p in parts]) for k in parts[0].rarity},
            {k: np.concatenate([p.raw[k] for p in parts]) for k in parts[0].raw},
            np.concatenate([p.flags for p in parts]))

    def _score(self, probe: Probe) -> SuiteScores:
        raw = {}
        table = np.empty((len(self.detectors), len(probe.x)))  # each detector's rarities
        blas = single_threaded_blas() if any(
            d.multiplies_matrices for d in self.detectors) else nullcontext()
        # a hostile input's values may overflow a detector's arithmetic: inf is far and a
        # NaN score is suspect (see rarity), so those are verdicts, not warnings
        with blas, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for row, detector in enumerate(self.detectors):
                raw[detector.name] = np.asarray(detector.score(probe), dtype=np.float64)
                table[row] = self.rarity(detector, raw[detector.name])
        combined = self._suspicion(table)
        flags = combined > self.threshold if self.threshold is not None else (
            np.zeros(len(combined), dtype=bool))
        rarity = {detector.name: row for detector, row in zip(self.detectors, table)}
        return SuiteScores(combined, rarity, raw, flags)

    def _combine(self, rarity: dict[str, np.ndarray]) -> np.ndarray:
        """The suspicion for each detector's rarities."""
        return self._suspicion(np.stack(list(rarity.values())))

    def _suspicion(self, table: np.ndarray) -> np.ndarray:
        """Per sample (column of the (detectors, n) ``table``), the sum of the ``top``
        largest rarities."""
        if self.top is not None and self.top < len(table):
            table = np.partition(table, len(table) - self.top, axis=0)[-self.top:]
        return table.sum(axis=0)

    def state(self) -> dict[str, np.ndarray]:
        return {f"{name}.clean_scores": ref.scores for name, ref in self.references.items()}

    def load_state(self, arrays: dict[str, np.ndarray], tails: dict[str, float]) -> None:
        """Restore the clean scores :meth:`state` gave; ``ValueError`` unless each is a
        non-empty sorted 1-d array without NaN (a file's, so untrusted)."""
        for name, tail in tails.items():
            scores = np.asarray(arrays[f"{name}.clean_scores"], dtype=np.float64)
            if (scores.ndim != 1 or not len(scores) or np.isnan(scores).any()
                    or (np.diff(scores) < 0).any()
                    or np.abs(scores).max() > arguments.MAX_MAGNITUDE):
                raise ValueError(f"the clean scores of {name!r} must be a sorted, non-empty "
                                 f"1-d array without NaN, of magnitudes at most "
                                 f"{arguments.MAX_MAGNITUDE:g}; received shape "
                                 f"{scores.shape}")
            self.references[name] = CleanReference(scores, tail)

    def describe(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "fpr_target": self.fpr_target, "top": self.top,
                "detectors": {d.name: {"tail": self.references[d.name].tail
                                       if d.name in self.references else None,
                                       "raw_threshold": self.raw_threshold(d),
                                       "two_sided": d.two_sided,
                                       "config": d.config()}
                              for d in self.detectors}}

    def raw_threshold(self, detector: Detector) -> float | list[float | None] | None:
        """The score past which this detector alone flags a sample, in its own units;
        ``[low, high]`` for two-sided detectors (``None`` where no clean score reaches)."""
        reference = self.references.get(detector.name)
        if reference is None or self.threshold is None:
            return None
        candidates = np.unique(reference.scores)
        flagged = candidates[self.rarity(detector, candidates) > self.threshold]
        if detector.two_sided:
            median = float(np.median(reference.scores))
            low, high = flagged[flagged < median], flagged[flagged > median]
            return [float(low.max()) if len(low) else None,
                    float(high.min()) if len(high) else None]
        if len(flagged):
            return float(flagged.min())
        n = len(reference.scores)  # past the largest clean score: invert the tail
        excess = (self.threshold - np.log10(n + 1)) * np.log(10) * reference.tail
        return float(reference.scores[-1] + max(excess, 0.0))
