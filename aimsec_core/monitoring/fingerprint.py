"""Blacklight-style probabilistic fingerprints of queries.

Li et al., "Blacklight: Scalable Defense for Neural Networks against Query-Based Black-Box
Attacks", USENIX Security 2022: quantize the input after adding a secret salt, hash every
window of ``w`` consecutive values (stride 1) of the flattened input, and keep the ``S``
largest hash values. Two queries sharing more than ``T`` of them are near-duplicates: a
black-box attack's queries are small steps from each other, benign queries almost never.

Differences from the paper, all to fit tabular rows and small inputs as well as images:

- Values pass through ``asinh(x / unit)`` before quantization: linear within about
  ``±unit`` (images scaled to [0, 1], standardized features), logarithmic beyond (raw
  tabular features spanning orders of magnitude, such as wine's proline in the hundreds
  next to hue around 1), so one relative step serves both.
- The salt is one offset per position (a fraction of a step), drawn from the secret.
- Windows are hashed with a keyed polynomial (random odd 64-bit coefficients from the
  secret, arithmetic modulo 2^64) whose high 32 bits are kept, instead of SHA-256:
  vectorized, and an attacker without the secret cannot predict which windows are kept.
  Windows one quantization step apart differ by a secret 64-bit coefficient, so their
  high halves are unrelated; the quantized codes carry a large secret-free offset
  (2^20 steps), which makes truncation a floor and keys even an all-zero window.
- Hashes are kept as 32-bit values (the index keys); inputs with fewer windows than ``S``
  keep all of their distinct windows, and the match threshold is a share of the query's
  fingerprint (``T / S`` = 25 / 50 = 0.5 in the paper).
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import kernels

_BIAS = float(2**20)  #: added to the quantized values: truncation is then a floor
_GATHERED = 4096  #: widest input whose windows are gathered (and whose layout is cached)
#: most values of a call hashed through the gather (its temporary is w times larger)
_GATHERED_VALUES = 1 << 16
#: A sample whose values all lie within this many quantization steps of each other is
#: flat (a blank image, an idle sensor): it gets no fingerprint. Its windows hash alike
#: but for the salt's pattern, so any two flat samples of about the same level would share
#: their whole fingerprint, whoever sent them; a black-box attack's queries carry features.
_FLAT = 1.0
_CODE_LIMIT = float(2**62)  #: quantized values are clipped to this magnitude (int64-safe)
_HIGH_HALF = 1 if sys.byteorder == "little" else 0  #: index of a uint64's high uint32
_FLOAT64 = np.dtype(np.float64)


@dataclass(frozen=True)
class FingerprintSettings:
    """``window`` values per hashed window, quantization ``step`` (after the asinh
    compression), ``unit`` where compression turns logarithmic, ``hashes`` kept (S)."""

    window: int
    step: float
    unit: float
    hashes: int


class _Layout(NamedTuple):
    salt: np.ndarray  #: (d,) float64: the secret offset of each position, plus the bias
    content: np.ndarray  #: (d,) uint64: the content tag's secret odd coefficients
    gather: np.ndarray | None  #: (windows, w) positions of each window, or None
    #: the compiled fingerprint's layout argument, one uint64 array (``kernel_arguments``)
    kernel: np.ndarray


class Fingerprinter:
    """Turns a batch of samples into fingerprints (one row of 32-bit hashes each).

    ``secret`` (bytes, at least 16) seeds the salt and the hash coefficients; it must be
    the same on every replica sharing a store, and never leaves the process otherwise.
    """

    def __init__(self, settings: FingerprintSettings, secret: bytes) -> None:
        self.settings = settings
        seed = np.frombuffer(secret[:32].ljust(32, b"\0"), dtype=np.uint32)
        self._rng_seed = [int(v) for v in seed]
        self._salts: dict[int, np.ndarray] = {}
        rng = np.random.default_rng(self._rng_seed + [1])
        self._coefficients = (rng.integers(1, 2**63, size=max(settings.window, 1),
                                           dtype=np.uint64) * np.uint64(2) + np.uint64(1))
        self._inverse_unit = 1.0 / settings.unit
        self._inverse_step = 1.0 / settings.step
        self._scaled = settings.unit != 1.0
        #: whether a finite value can scale past float64's range (then it becomes inf)
        self._may_overflow = settings.unit < 1.0 or settings.step < 1e-300

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"Fingerprinter({self.settings})"

    def _layout(self, width: int) -> _Layout:
        """Per input width: the salt (one offset per position, plus the bias), the
        content-tag coefficients, and the window gather index ((windows, w) positions;
        ``None`` past :data:`_GATHERED` values, where it would cost w times the input's
        memory), cached: up to 64 narrow widths and 4 wide ones (16 bytes a value: 2.4 MB
        at 150,528; widths come from model inputs: few, but a client may vary them)."""
        found = self._salts.get(width)
        if found is None:
            salt = np.random.default_rng(self._rng_seed + [2, width]).random(width) + _BIAS
            content = (np.random.default_rng(self._rng_seed + [3, width]).integers(
                1, 2**63, size=width, dtype=np.uint64) * np.uint64(2) + np.uint64(1))
            w = min(self.settings.window, width)
            gather = None
            if width <= _GATHERED:
                gather = (np.arange(width - w + 1)[:, None]
                          + np.arange(w)[None, :]).astype(np.intp)
            # the compiled kernels' one layout argument (see _compiled.layout_parts)
            packed = np.concatenate((salt.view(np.uint64), content, self._coefficients,
                                     np.array([self._inverse_unit, self._inverse_step]).view(
                                         np.uint64), np.array([self._scaled], np.uint64)))
            found = _Layout(salt, content, gather, packed)
            wide = sum(layout.gather is None for layout in self._salts.values())
            if len(self._salts) < 64 and (gather is not None or wide < 4):
                self._salts[width] = found
        return found

    def _window_hashes(self, codes: np.ndarray, gather: np.ndarray | None) -> np.ndarray:
        """(n, windows) uint64: each window's keyed polynomial, modulo 2^64 (integer
        arrays wrap silently). Small calls gather their windows into one matrix product;
        wide inputs and large batches add the w shifted, scaled copies of each row
        instead, which gives the same values in memory proportional to the input."""
        w = min(self.settings.window, codes.shape[1])
        if gather is not None and codes.size <= _GATHERED_VALUES:
            return codes.take(gather, axis=1) @ self._coefficients[:w]
        windows = codes.shape[1] - w + 1
        h = codes[:, :windows] * self._coefficients[0]
        step = np.empty_like(h)
        for k in range(1, w):
            np.multiply(codes[:, k:k + windows], self._coefficients[k], out=step)
            h += step
        return h

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """``samples`` (n, d), any real dtype -> (n, k) uint32 hashes, k <= ``hashes``.

        Rows are sorted descending; a row with fewer distinct windows than ``k`` is padded
        with zeros (0 is never a kept hash); a flat sample's row is all zeros (see
        :data:`_FLAT`).
        """
        return self.fingerprint(samples)[0]

    def fingerprint(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The hashes of :meth:`__call__` and each sample's content tag ((n,) uint32).

        A content tag is a keyed digest of the sample's exact float64 values: each bit
        pattern folded (xor of its two 32-bit halves into the low one, so values with
        long runs of trailing zero bits, such as 0.5 or 3.0, still reach the kept bits),
        times a secret odd 64-bit coefficient, summed modulo 2^64, high 32 bits kept.
        Equal samples have equal tags, and without the secret an attacker cannot make two
        different samples share one (it tells exact repeats, which are the repeat check's
        business, from near-duplicates)."""
        # C order, aligned and writable whatever the caller's array (np.frombuffer over a
        # request body is read-only, with an offset unaligned): the kernel's types, so no
        # call compiles another specialization
        x = kernels.kernel_array(samples, np.float64)
        layout = self._layout(x.shape[1])
        compiled = kernels.load()
        if compiled is not None:
            return self._compiled(compiled, x, layout)
        bits = x.view(np.uint64)
        folded = bits ^ (bits >> np.uint64(32))
        tags = (folded @ layout.content).view(np.uint32)[..., _HIGH_HALF::2]
        return self._hashes(x, layout.salt, layout.gather), tags.reshape(len(x))

    def _hashes(self, x: np.ndarray, salt: np.ndarray, gather: np.ndarray | None
                ) -> np.ndarray:
        """The numpy form of the fingerprint (the compiled kernel gives the same)."""
        s = self.settings
        # a huge value over a small unit or step becomes inf (clipped below)
        with np.errstate(over="ignore") if self._may_overflow else nullcontext():
            quantized = np.arcsinh(x * self._inverse_unit if s.unit != 1.0 else x)
            quantized *= self._inverse_step
        with np.errstate(invalid="ignore"):  # inf - inf: NaN, which is not flat
            flat = (np.ptp(quantized, axis=1) < _FLAT if quantized.shape[1]
                    else np.ones(len(quantized), dtype=bool))
        quantized += salt
        # asinh keeps finite values inside int64 (|asinh| <= 710.5) unless the step is
        # tiny; what lies past the bound (infinities) takes it, NaN (allow_nan) the lower
        # one, so the cast never overflows
        np.fmax(quantized, -_CODE_LIMIT, out=quantized)
        np.fmin(quantized, _CODE_LIMIT, out=quantized)
        codes = quantized.astype(np.int64).view(np.uint64)
        h = self._window_hashes(codes, gather)
        high = h.view(np.uint32)[:, _HIGH_HALF::2]
        if len(high) == 1:  # one row: its distinct non-zero values, largest first
            if flat[0]:
                return np.zeros((1, 0), dtype=np.uint32)
            row = np.sort(high[0])
            distinct = np.empty(len(row), dtype=bool)
            distinct[-1] = True
            np.not_equal(row[:-1], row[1:], out=distinct[:-1])
            row = row[distinct][::-1][:s.hashes]
            return (row if row[-1] else row[row != 0])[None]
        h = np.sort(high, axis=1)
        if h.shape[1] > 1:  # distinct values only: repeats become 0 and sort to the end
            h[:, :-1][h[:, :-1] == h[:, 1:]] = 0
            h.sort(axis=1)
        h[flat] = 0
        return h[:, ::-1][:, :s.hashes]

    def _compiled(self, compiled: object, x: np.ndarray, layout: _Layout
                  ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`fingerprint` in one compiled kernel: the same values, the same shapes."""
        s = self.settings
        n = len(x)
        out = np.empty((n, s.hashes), dtype=np.uint32)
        tags = np.empty(n, dtype=np.uint32)
        kept = compiled.fingerprint_rows(x, layout.kernel, out, tags)  # type: ignore[attr-defined]
        if n != 1:  # a batch keeps a column per window, up to S, as sorting gives
            kept = min(s.hashes, x.shape[1] - min(s.window, x.shape[1]) + 1)
        return (out if kept == s.hashes else out[:, :kept]), tags

    def kernel_arguments(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``samples`` ((n, d), any real dtype) and the secret layout of their width, as
        the compiled fingerprint takes them: (x, layout), the layout one uint64 array of
        the salt's float64 bits, the content coefficients, the window coefficients, the
        bits of 1 / unit and 1 / step, and whether to scale by the unit. Never logged."""
        if type(samples) is np.ndarray and samples.dtype is _FLOAT64:  # the usual case
            if samples.flags.carray and samples.ndim == 2:  # C order, aligned, writable
                layout = self._salts.get(samples.shape[1])
                if layout is not None:
                    return samples, layout.kernel
        x = kernels.kernel_array(samples, np.float64)
        layout = self._salts.get(x.shape[1]) or self._layout(x.shape[1])
        return x, layout.kernel


class Query(NamedTuple):
    """A call's samples with the fingerprinter keyed by the secret of the store that
    answers: the store fingerprints them (the memory store in the same compiled pass
    that matches them against its index)."""

    fingerprinter: Fingerprinter
    samples: np.ndarray  #: (n, d) real

    def fingerprints(self) -> tuple[np.ndarray, np.ndarray]:
        """(n, <= S) uint32 hashes and (n,) uint32 content tags
        (:meth:`Fingerprinter.fingerprint`)."""
        return self.fingerprinter.fingerprint(self.samples)
