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
  secret), mixed by a xor-shift and a multiplication by 2^64/phi whose high 32 bits are
  kept, instead of SHA-256: vectorized, and an attacker without the secret cannot
  predict which windows are kept.
- Hashes are kept as 32-bit values (the index keys); inputs with fewer windows than ``S``
  keep all of their distinct windows, and the match threshold is a share of the query's
  fingerprint (``T / S`` = 25 / 50 = 0.5 in the paper).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

_MIX = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd
_SHIFT = np.uint64(29)
_HIGH_HALF = 1 if sys.byteorder == "little" else 0  #: index of a uint64's high uint32


@dataclass(frozen=True)
class FingerprintSettings:
    """``window`` values per hashed window, quantization ``step`` (after the asinh
    compression), ``unit`` where compression turns logarithmic, ``hashes`` kept (S)."""

    window: int
    step: float
    unit: float
    hashes: int


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
        self._offset = rng.integers(1, 2**63, dtype=np.uint64)
        self._inverse_unit = 1.0 / settings.unit
        self._inverse_step = 1.0 / settings.step

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"Fingerprinter({self.settings})"

    def _layout(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Per input width: the salt (one offset per position) and the window gather
        index ((windows, w) positions), cached."""
        found = self._salts.get(width)
        if found is None:
            salt = np.random.default_rng(self._rng_seed + [2, width]).random(width)
            w = min(self.settings.window, width)
            gather = np.arange(width - w + 1)[:, None] + np.arange(w)[None, :]
            found = (salt, gather)
            if len(self._salts) < 64:  # widths come from model inputs: few, but bounded
                self._salts[width] = found
        return found

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """``samples`` (n, d), any real dtype -> (n, k) uint32 hashes, k <= ``hashes``.

        Rows are sorted descending; a row with fewer distinct windows than ``k`` is padded
        with zeros (0 is never a kept hash).
        """
        s = self.settings
        x = np.asarray(samples, dtype=np.float64)
        salt, gather = self._layout(x.shape[1])
        quantized = np.arcsinh(x * self._inverse_unit if s.unit != 1.0 else x)
        quantized *= self._inverse_step
        quantized += salt
        codes = np.floor(quantized, out=quantized).astype(np.int64).view(np.uint64)
        # integer arrays wrap silently on overflow: the arithmetic is modulo 2^64
        h = codes[:, gather] @ self._coefficients[:gather.shape[1]]
        h += self._offset  # keyed, so a window of zeros hashes to a secret value too
        h ^= h >> _SHIFT
        h *= _MIX
        # the product's high half is the mixed one: read it in place, sorted in the copy
        h = np.sort(h.view(np.uint32)[:, _HIGH_HALF::2], axis=1)
        if len(h) == 1:  # one row: descending, without repeats and the (never kept) zero
            row = h[0, ::-1]
            distinct = np.empty(len(row), dtype=bool)
            distinct[0] = row[0] != 0
            np.not_equal(row[1:], row[:-1], out=distinct[1:])
            distinct[1:] &= row[1:] != 0
            return row[distinct][:s.hashes][None]
        if h.shape[1] > 1:  # distinct values only: repeats become 0 and sort to the end
            h[:, :-1][h[:, :-1] == h[:, 1:]] = 0
            h.sort(axis=1)
        return h[:, ::-1][:, :s.hashes]
