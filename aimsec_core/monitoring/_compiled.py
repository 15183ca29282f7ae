"""The numba kernels behind :mod:`.kernels` (imported only through :func:`.kernels.load`).

Each is the compiled form of one numpy implementation and must give its results exactly:
``fingerprint_rows`` of :meth:`.fingerprint.Fingerprinter.__call__`,
``match_and_add_rows`` of :meth:`.index.FingerprintIndex.match_and_add`,
``distance_and_join`` of :func:`.extraction.distance_and_join` (the distance to
rounding: the sums run in another order).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_CODE_LIMIT = float(2**62)  #: as in .fingerprint
_FLOAT32_MAX = float(np.finfo(np.float32).max)  #: as in .extraction
_FLAT = 1.0  #: as in .fingerprint
_LOW = np.uint64(0xFFFFFFFF)
_HALF = np.uint64(32)


@njit(cache=True, nogil=True)
def fingerprint_rows(x, salt, content, coefficients, inverse_unit, inverse_step,  # type: ignore[no-untyped-def]
                     scaled, out, tags):
    """Fingerprints of ``x`` ((n, d) float64, C order) into
    ``out`` ((n, S) uint32): each row's distinct non-zero window hashes, largest first,
    zero-padded (all zeros for a flat row); each row's content tag into ``tags``. Returns
    the most hashes any row kept."""
    n, d = x.shape
    bits = x.view(np.uint64)
    w = min(coefficients.shape[0], d)
    windows = d - w + 1
    codes = np.empty(d, np.uint64)
    high = np.empty(windows, np.uint32)
    hashes = out.shape[1]
    kept = 0
    for r in range(n):
        tag = np.uint64(0)
        low, high_q, nan = np.inf, -np.inf, False
        for i in range(d):
            tag += (bits[r, i] ^ (bits[r, i] >> _HALF)) * content[i]
            v = x[r, i] * inverse_unit if scaled else x[r, i]
            q = math.asinh(v) * inverse_step
            if q != q:
                nan = True
            low = min(low, q)
            high_q = max(high_q, q)
            q += salt[i]
            if not q >= -_CODE_LIMIT:  # NaN takes the lower bound, as np.fmax gives it
                q = -_CODE_LIMIT
            elif q > _CODE_LIMIT:
                q = _CODE_LIMIT
            codes[i] = np.uint64(np.int64(q))
        tags[r] = np.uint32(tag >> _HALF)
        if not nan and high_q - low < _FLAT:  # flat (or no values): no fingerprint
            for j in range(hashes):
                out[r, j] = 0
            continue
        for s in range(windows):
            h = np.uint64(0)
            for k in range(w):
                h += codes[s + k] * coefficients[k]
            high[s] = np.uint32(h >> _HALF)
        high.sort()
        count = 0
        for s in range(windows - 1, -1, -1):
            if count == hashes:
                break
            v = high[s]
            if v != 0 and (count == 0 or v != out[r, count - 1]):
                out[r, count] = v
                count += 1
        for j in range(count, hashes):
            out[r, j] = 0
        kept = max(kept, count)
    return kept


@njit(cache=True, nogil=True)
def match_and_add_rows(fingerprints, contents, client, now, since, table, mask, fp_serial,  # type: ignore[no-untyped-def]
                       fp_time, fp_client, fp_content, fp_hashes, serial, limit,
                       shared, sizes, same):
    """Match each row of ``fingerprints`` against the index, then store it as the next
    serial, while serials stay below ``limit``. Fills ``shared``, ``sizes``, ``same`` per
    row (``same``: 1 when the best match was stored by ``client``); returns (rows done,
    next serial)."""
    slots = fp_serial.shape[0]
    ways = table.shape[1]
    n, width = fingerprints.shape
    found = np.empty(max(1, width * ways), np.int64)
    buckets = np.empty(max(1, width), np.int64)
    firsts = np.empty(max(1, width), np.uint64)
    for r in range(n):
        size = 0
        while size < width and fingerprints[r, size] != 0:
            size += 1
        sizes[r] = size
        shared[r] = 0
        same[r] = 0
        if size == 0:
            continue
        if serial >= limit:
            return r, serial
        content = np.uint64(contents[r])
        # the buckets first, each read once: independent loads the processor overlaps
        # (with 10^6 fingerprints stored the table is far larger than the caches)
        for j in range(size):
            buckets[j] = np.int64(fingerprints[r, j]) & mask
            firsts[j] = table[buckets[j], 0]
        m = 0
        for j in range(size):  # candidates: alive stored fingerprints sharing a hash
            h = np.uint64(fingerprints[r, j])
            bucket = buckets[j]
            for k in range(ways):
                entry = firsts[j] if k == 0 else table[bucket, k]
                if entry & _LOW == h:
                    s = np.int64(entry >> _HALF)
                    slot = s % slots
                    if (fp_serial[slot] == s and fp_time[slot] >= since
                            and fp_content[slot] != content):
                        found[m] = s
                        m += 1
        if m:  # the most shared; among equals the most recent
            ordered = np.sort(found[:m])
            run = 0
            for i in range(m):
                run = run + 1 if i and ordered[i] == ordered[i - 1] else 1
                if run >= shared[r]:
                    shared[r] = run
                    same[r] = 1 if fp_client[ordered[i] % slots] == client else 0
        slot = serial % slots
        fp_serial[slot] = serial
        fp_time[slot] = now
        fp_client[slot] = client
        fp_content[slot] = content
        for j in range(fp_hashes.shape[1]):
            fp_hashes[slot, j] = fingerprints[r, j] if j < size else 0
        high = np.uint64(serial) << _HALF
        for j in range(size):  # into an empty or the oldest entry of each bucket
            h = np.uint64(fingerprints[r, j])
            bucket = buckets[j]
            way = 0
            for k in range(1, ways):
                if table[bucket, k] < table[bucket, way]:
                    way = k
            table[bucket, way] = high | h
        serial += 1
    return n, serial


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def distance_and_join(stored, count, row, threshold):  # type: ignore[no-untyped-def]
    """PRADA's step for one query of one class: the least L2 distance from ``row`` ((d,)
    float64, rounded to float32; values past float32's range and NaN take its largest
    magnitude) to the first ``min(count, m)`` rows of ``stored`` ((m, d) float32), summed
    in float64 in whatever order vectorizes (numpy's einsum sums in another: the two agree
    to rounding); -1.0 when ``count`` is 0. The query joins the set, as row
    ``count % m``, when ``count`` is 0 or the distance exceeds ``threshold``."""
    m, d = stored.shape
    query = np.empty(d, np.float32)
    for j in range(d):
        v = row[j]
        if not v <= _FLOAT32_MAX:  # NaN too, as np.fmin gives it
            v = _FLOAT32_MAX
        elif v < -_FLOAT32_MAX:
            v = -_FLOAT32_MAX
        query[j] = np.float32(v)
    best = np.inf
    for i in range(min(count, m)):
        total = 0.0
        for j in range(d):
            diff = np.float64(stored[i, j]) - np.float64(query[j])
            total += diff * diff
        best = min(best, total)
    distance = math.sqrt(best) if count else -1.0
    if count == 0 or distance > threshold:
        stored[count % m, :] = query
    return distance


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel for the types the monitor uses."""
    x = np.zeros((1, 3))
    fingerprint_rows(x, np.zeros(3), np.ones(3, np.uint64),
                     np.ones(2, np.uint64), 1.0, 1.0, False, np.zeros((1, 2), np.uint32),
                     np.zeros(1, np.uint32))
    table = np.zeros((16, 8), np.uint64)
    match_and_add_rows(np.array([[5, 3]], np.uint32), np.ones(1, np.uint32), 1, 0.0, 0.0,
                       table, np.int64(15), np.full(4, -1, np.int64), np.zeros(4),
                       np.zeros(4, np.uint32), np.zeros(4, np.uint64),
                       np.zeros((4, 2), np.uint32), 0, 4, np.zeros(1, np.int64),
                       np.zeros(1, np.int64), np.zeros(1, np.int64))
    distance_and_join(np.zeros((2, 3), np.float32), 1, np.zeros(3), 0.0)
