"""The numba kernels behind :mod:`.kernels` (imported only through :func:`.kernels.load`).

Each is the compiled form of one numpy implementation and must give its results exactly:
``fingerprint_rows`` of :meth:`.fingerprint.Fingerprinter.__call__`,
``match_and_add_rows`` of :meth:`.index.FingerprintIndex.match_and_add`,
``fingerprint_match_and_add_rows`` of the two in turn,
``learn_rows`` of :func:`.extraction.learn_rows` (the distances to rounding: the sums
run in another order), ``prada_sample`` and ``shapiro_sorted`` of
:func:`.extraction._shapiro` (to rounding), ``rebucket`` of the table split in
:meth:`.index.FingerprintIndex._grow`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .shapiro import coefficients

_CODE_LIMIT = float(2**62)  #: as in .fingerprint
_FLOAT32_MAX = float(np.finfo(np.float32).max)  #: as in .extraction
_FLAT = 1.0  #: as in .fingerprint
_LOW = np.uint64(0xFFFFFFFF)
_HALF = np.uint64(32)


_STATE_HEADER = 8  #: as in .index
_MAX_CLASSES = 16  #: as in .extraction


@njit(cache=True, nogil=True)
def layout_parts(layout, d):  # type: ignore[no-untyped-def]
    """The fingerprint's secret layout for rows of ``d`` values, unpacked from one uint64
    array (one kernel argument instead of six; :meth:`.fingerprint.Fingerprinter`
    packs it): the salt ((d,) float64), the content-tag coefficients ((d,) uint64), the
    window coefficients ((w,) uint64), 1 / unit, 1 / step and whether to scale by the
    unit (the last three words: two float64 bit patterns and 0 or 1)."""
    end = layout.shape[0]
    scalars = layout[end - 3:end - 1].view(np.float64)
    return (layout[:d].view(np.float64), layout[d:2 * d], layout[2 * d:end - 3],
            scalars[0], scalars[1], layout[end - 1] != 0)


@njit(cache=True, nogil=True)
def index_state(state):  # type: ignore[no-untyped-def]
    """An index's arrays, views of one packed uint64 array (one kernel argument instead
    of seven; :class:`.index.FingerprintIndex` packs it): the table ((buckets, ways)
    uint64), its bucket mask, and per slot the serial (int64), time (float64), client
    tag (uint32), content tag (uint64) and hashes ((slots, S) uint32). The first
    ``_STATE_HEADER`` words give buckets, ways, slots and S."""
    buckets, ways = np.int64(state[0]), np.int64(state[1])
    slots, hashes = np.int64(state[2]), np.int64(state[3])
    start = _STATE_HEADER + buckets * ways
    table = state[_STATE_HEADER:start].reshape((buckets, ways))
    fp_serial = state[start:start + slots].view(np.int64)
    fp_time = state[start + slots:start + 2 * slots].view(np.float64)
    fp_content = state[start + 2 * slots:start + 3 * slots]
    start += 3 * slots
    half = (slots + 1) // 2
    fp_client = state[start:start + half].view(np.uint32)[:slots]
    start += half
    fp_hashes = state[start:start + (slots * hashes + 1) // 2].view(
        np.uint32)[:slots * hashes].reshape((slots, hashes))
    return table, buckets - 1, fp_serial, fp_time, fp_client, fp_content, fp_hashes


@njit(cache=True, nogil=True)
def fingerprint_rows(x, layout, out, tags):  # type: ignore[no-untyped-def]
    """Fingerprints of ``x`` ((n, d) float64, C order) into ``out`` ((n, S) uint32): each
    row's distinct non-zero window hashes, largest first, zero-padded (all zeros for a
    flat row); each row's content tag into ``tags``. ``layout``: see
    :func:`layout_parts`. Returns the most hashes any row kept."""
    n, d = x.shape
    bits = x.view(np.uint64)
    salt, content, coefficients, inverse_unit, inverse_step, scaled = layout_parts(layout, d)
    codes, high, memo_keys, memo_values = _scratch(d, coefficients.shape[0])
    kept = 0
    for r in range(n):
        count, tags[r] = _fingerprint_row(x[r], bits[r], salt, content, coefficients,
                                          inverse_unit, inverse_step, scaled, codes, high,
                                          memo_keys, memo_values, out[r])
        kept = max(kept, count)
    return kept


@njit(cache=True, nogil=True)
def match_and_add_rows(fingerprints, contents, start, client, now, since, state, serial,  # type: ignore[no-untyped-def]
                       limit, matches):
    """From row ``start`` on, match each row of ``fingerprints`` against the index (its
    packed ``state``: see :func:`index_state`), then store it as the next serial, while
    serials stay below ``limit``. Fills column ``r`` of ``matches`` ((3, n) int64) with
    the hashes the best match shares, the row's hash count, and 1 when the best match was
    stored by ``client``; returns (rows done, next serial)."""
    table, mask, fp_serial, fp_time, fp_client, fp_content, fp_hashes = index_state(state)
    n, width = fingerprints.shape
    found, buckets, firsts = _match_scratch(width, table.shape[1])
    for r in range(start, n):
        size = 0
        while size < width and fingerprints[r, size] != 0:
            size += 1
        matches[0, r], matches[1, r], matches[2, r] = 0, size, 0
        if size == 0:
            continue
        if serial >= limit:
            return r, serial
        matches[0, r], matches[2, r] = _match_and_add_row(
            fingerprints[r], size, np.uint64(contents[r]), client, now, since, table, mask,
            fp_serial, fp_time, fp_client, fp_content, fp_hashes, serial, found, buckets,
            firsts)
        serial += 1
    return n, serial


@njit(cache=True, nogil=True)
def fingerprint_match_and_add_rows(x, layout, start, client, now, since, state, serial,  # type: ignore[no-untyped-def]
                                   limit, matches):
    """``fingerprint_rows`` then ``match_and_add_rows`` in one pass over the rows of
    ``x`` ((n, d) float64, C order), with the same results, from row ``start`` on: the
    fingerprints never leave the kernel. Returns (rows done, next serial, and the last
    row's column of ``matches``): a one-row call reads its match from the result."""
    n, d = x.shape
    salt, content, coefficients, inverse_unit, inverse_step, scaled = layout_parts(layout, d)
    table, mask, fp_serial, fp_time, fp_client, fp_content, fp_hashes = index_state(state)
    bits = x.view(np.uint64)
    codes, high, memo_keys, memo_values = _scratch(d, coefficients.shape[0])
    width = fp_hashes.shape[1]
    row = np.empty(width, np.uint32)
    found, buckets, firsts = _match_scratch(width, table.shape[1])
    for r in range(start, n):
        size, tag = _fingerprint_row(x[r], bits[r], salt, content, coefficients,
                                     inverse_unit, inverse_step, scaled, codes, high,
                                     memo_keys, memo_values, row)
        matches[0, r], matches[1, r], matches[2, r] = 0, size, 0
        if size == 0:
            continue
        if serial >= limit:
            return r, serial, 0, 0, 0
        matches[0, r], matches[2, r] = _match_and_add_row(
            row, size, np.uint64(tag), client, now, since, table, mask, fp_serial, fp_time,
            fp_client, fp_content, fp_hashes, serial, found, buckets, firsts)
        serial += 1
    if n == 0:
        return n, serial, 0, 0, 0
    return n, serial, matches[0, n - 1], matches[1, n - 1], matches[2, n - 1]


@njit(cache=True, nogil=True)
def rebucket(old, table, mask):  # type: ignore[no-untyped-def]
    """Move every entry of ``old`` ((buckets, ways) uint64, 0 where empty) into
    ``table`` (a larger such table, all empty) at the bucket its hash (low half) falls in
    under ``mask``, in the same way."""
    buckets, ways = old.shape
    for b in range(buckets):
        for k in range(ways):
            entry = old[b, k]
            if entry != 0:
                table[np.int64(entry & _LOW) & mask, k] = entry


_MEMO = 32  #: asinh values remembered per call (inputs repeat values: borders, levels)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  #: multiplier of the memo's hash


@njit(cache=True, nogil=True)
def _scratch(d, w):  # type: ignore[no-untyped-def]
    """Working arrays of a fingerprint pass, views of one allocation (less code to run,
    and a kernel's code is cold beside a model's): codes, window hashes (twice: as
    computed, then in descending order), and the asinh memo (keys: float64 bit patterns;
    every slot starts as +0.0, whose asinh is +0.0)."""
    windows = d - min(w, d) + 1
    work = np.zeros(d + windows + 2 * _MEMO, np.uint64)
    memo = d + windows
    return (work[:d], work[d:memo].view(np.uint32), work[memo:memo + _MEMO],
            work[memo + _MEMO:].view(np.float64))


@njit(cache=True, nogil=True)
def _fingerprint_row(x, bits, salt, content, coefficients, inverse_unit, inverse_step,  # type: ignore[no-untyped-def]
                     scaled, codes, high, memo_keys, memo_values, out):
    """One row's fingerprint into ``out`` ((S,) uint32, zero-padded) as in
    ``fingerprint_rows``; returns (hashes kept, content tag)."""
    d = x.shape[0]
    w = min(coefficients.shape[0], d)
    windows = d - w + 1
    hashes = out.shape[0]
    tag = np.uint64(0)
    low, high_q, nan = np.inf, -np.inf, False
    for i in range(d):
        b = bits[i]
        tag += (b ^ (b >> _HALF)) * content[i]
        slot = (b * _GOLDEN) >> np.uint64(59)  # the same value gives the same asinh
        if memo_keys[slot] == b:
            a = memo_values[slot]
        else:
            a = math.asinh(x[i] * inverse_unit if scaled else x[i])
            memo_keys[slot] = b
            memo_values[slot] = a
        q = a * inverse_step
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
    tag32 = np.uint32(tag >> _HALF)
    if not nan and high_q - low < _FLAT:  # flat (or no values): no fingerprint
        out[:] = 0
        return 0, tag32
    hashed, ordered = high[:windows], high[windows:2 * windows]
    for s in range(windows):
        h = np.uint64(0)
        for k in range(w):
            h += codes[s + k] * coefficients[k]
        hashed[s] = np.uint32(h >> _HALF)
    _descending(hashed, ordered)
    count = 0
    for s in range(windows):
        if count == hashes:
            break
        v = ordered[s]
        if v != 0 and (count == 0 or v != out[count - 1]):
            out[count] = v
            count += 1
    out[count:] = 0
    return count, tag32


_RANKED = 64  #: most values :func:`_descending` orders by rank (quadratic, no branches)


@njit(cache=True, nogil=True)
def _descending(values, out):  # type: ignore[no-untyped-def]
    """``values`` in descending order into ``out`` (as long), where each run of equal
    values may hold zeros after its first: its distinct values, in the order of their
    first copies, are the same as sorting gives. Up to :data:`_RANKED` values by rank
    (a value's place is the count of larger ones; equal values share it, the places
    after it stay 0): comparisons without branches, which a processor's cold branch
    predictor (beside a model's code) does not slow down, unlike a sort's; more values
    by :func:`_sort` (``values`` is sorted in place then)."""
    n = values.shape[0]
    if n <= _RANKED:
        out[:n] = 0
        for i in range(n):
            v = values[i]
            rank = np.int32(0)
            for j in range(n):
                rank += np.int32(values[j] > v)
            out[rank] = v
        return
    _sort(values)
    for i in range(n):
        out[i] = values[n - 1 - i]


#: Shell sort gaps: Ciura's, extended by factors of 2.25 past 701 to beyond any row's
#: width. Ciura's alone sort n values in time growing as n^2 / 701: a single row of
#: 6 * 10^6 values (well inside max_size) took 14 s to fingerprint, 10^8 would take hours.
_GAPS = np.array([3444003501, 1530668223, 680296988, 302354217, 134379652, 59724290,
                  26544129, 11797391, 5243285, 2330349, 1035711, 460316, 204585, 90927,
                  40412, 17961, 7983, 3548, 1577, 701, 301, 132, 57, 23, 10, 4, 1], np.int64)


@njit(cache=True, nogil=True)
def _sort(values):  # type: ignore[no-untyped-def]
    """Sort ``values`` in place, ascending (Shell's sort with :data:`_GAPS`: no allocation
    and little code; a call sorts a few dozen values, an attack's at most S * ways, a
    row's window hashes one per value of the row)."""
    n = values.shape[0]
    for gap in _GAPS:
        for i in range(gap, n):
            v = values[i]
            j = i
            while j >= gap and values[j - gap] > v:
                values[j] = values[j - gap]
                j -= gap
            values[j] = v


@njit(cache=True, nogil=True)
def _match_scratch(width, ways):  # type: ignore[no-untyped-def]
    """Working arrays of a match pass, views of one allocation: candidate serials,
    buckets, their first entries."""
    found, width = max(1, width * ways), max(1, width)
    work = np.empty(found + 2 * width, np.int64)
    return (work[:found], work[found:found + width], work[found + width:].view(np.uint64))


@njit(cache=True, nogil=True)
def _match_and_add_row(row, size, content, client, now, since, table, mask, fp_serial,  # type: ignore[no-untyped-def]
                       fp_time, fp_client, fp_content, fp_hashes, serial, found, buckets,
                       firsts):
    """Match one fingerprint (the first ``size`` values of ``row``, ``size`` > 0) against
    the index, then store it as ``serial``; returns (hashes the best match shares, 1 when
    ``client`` stored it else 0)."""
    slots = fp_serial.shape[0]
    ways = table.shape[1]
    # the buckets first, each read once: independent loads the processor overlaps
    # (with 10^6 fingerprints stored the table is far larger than the caches)
    for j in range(size):
        buckets[j] = np.int64(row[j]) & mask
        firsts[j] = table[buckets[j], 0]
    m = 0
    for j in range(size):  # candidates: stored fingerprints sharing a hash
        h = np.uint64(row[j])
        bucket = buckets[j]
        for k in range(ways):
            entry = firsts[j] if k == 0 else table[bucket, k]
            if entry & _LOW == h:
                found[m] = np.int64(entry >> _HALF)
                m += 1
    shared, same = 0, 0
    if m:  # the most shared alive; among equals the most recent
        shared, best = _most_shared(found[:m], content, since, fp_serial, fp_time,
                                    fp_content)
        if shared:
            same = 1 if fp_client[best % slots] == client else 0
    slot = serial % slots
    fp_serial[slot] = serial
    fp_time[slot] = now
    fp_client[slot] = client
    fp_content[slot] = content
    for j in range(fp_hashes.shape[1]):
        fp_hashes[slot, j] = row[j] if j < size else 0
    high = np.uint64(serial) << _HALF
    for j in range(size):  # into an empty or the oldest entry of each bucket
        bucket = buckets[j]
        way, oldest = 0, table[bucket, 0]
        for k in range(1, ways):  # selects, not branches: which entry is oldest is random
            entry = table[bucket, k]
            older = entry < oldest
            way = k if older else way
            oldest = entry if older else oldest
        table[bucket, way] = high | np.uint64(row[j])
    return shared, same


@njit(cache=True, nogil=True)
def learn_rows(x, slots, members, packed):  # type: ignore[no-untyped-def]
    """PRADA's step for each row of ``x`` ((n, d) float64) in turn, as
    :func:`.extraction.learn_rows` (the distances to rounding: see
    ``distance_and_join``); ``packed`` as :func:`.extraction.unpack` reads it."""
    set_size = members.shape[1]
    table, members_end = _MAX_CLASSES * 5, _MAX_CLASSES * (5 + set_size)
    window = packed.shape[0] - members_end - 2
    classes = packed[:table].reshape((_MAX_CLASSES, 5))
    class_distances = packed[table:members_end].reshape((_MAX_CLASSES, set_size))
    distances = packed[members_end:members_end + window]
    ring = packed[members_end + window:].view(np.int64)
    for r in range(x.shape[0]):
        slot = slots[r]
        count, threshold = np.int64(classes[slot, 0]), classes[slot, 1]
        distance = distance_and_join(members[slot], count, x[r], threshold)
        if count and distance == 0.0:
            continue
        if count:
            distances[ring[0] % window] = distance
            ring[0] += 1
            ring[1] += 1
            if distance <= threshold:
                continue
            appended = np.int64(classes[slot, 4])
            if appended >= set_size:
                evicted = class_distances[slot, appended % set_size]
                classes[slot, 2] -= evicted
                classes[slot, 3] -= evicted * evicted
            class_distances[slot, appended % set_size] = distance
            classes[slot, 4] = appended + 1
            classes[slot, 2] += distance
            classes[slot, 3] += distance * distance
            length = min(appended + 1, set_size)
            mean = classes[slot, 2] / length
            std = max(0.0, classes[slot, 3] / length - mean * mean) ** 0.5
            classes[slot, 1] = max(threshold, mean - std)
        classes[slot, 0] = count + 1
    return ring[1]


@njit(cache=True, nogil=True)
def _most_shared(found, content, since, fp_serial, fp_time, fp_content):  # type: ignore[no-untyped-def]
    """:func:`_best_alive`, counting the serials in a small open-addressing table
    instead of sorting them (a sort of a hundred random values mispredicts most of its
    branches); when the serial counted most often is not alive, :func:`_best_alive`
    ranks the rest. The table's memory is never initialised: a slot is valid when the
    distinct serial it points to points back to it (a sparse set)."""
    m = found.shape[0]
    size = 16
    while size < 2 * m:
        size *= 2
    mask = size - 1
    work = np.empty(size + 3 * m, np.int64)  # one allocation for the four
    index_of = work[:size]  # slot -> index of its distinct serial
    slot_of = work[size:size + m]  # distinct serial -> its slot
    serials = work[size + m:size + 2 * m]
    counts = work[size + 2 * m:]
    distinct = 0
    for i in range(m):
        s = found[i]
        p = s & mask  # serials are consecutive: they spread over the slots as they are
        while True:
            d = index_of[p]
            if 0 <= d < distinct and slot_of[d] == p:
                if serials[d] == s:
                    counts[d] += 1
                    break
                p = (p + 1) & mask
            else:
                index_of[p] = distinct
                slot_of[distinct] = p
                serials[distinct] = s
                counts[distinct] = 1
                distinct += 1
                break
    best = 0
    for d in range(1, distinct):
        if counts[d] > counts[best] or (counts[d] == counts[best] and serials[d] > serials[best]):
            best = d
    s = serials[best]
    slot = s % fp_serial.shape[0]
    if fp_serial[slot] == s and fp_time[slot] >= since and fp_content[slot] != content:
        return counts[best], s
    return _best_alive(found, content, since, fp_serial, fp_time, fp_content)


@njit(cache=True, nogil=True)
def _best_alive(found, content, since, fp_serial, fp_time, fp_content):  # type: ignore[no-untyped-def]
    """Among the serials in ``found`` (one per shared hash; sorted here), the alive one
    (not overwritten, stored since ``since``, other content) occurring most often, among
    equals the most recent: returns (its count, its serial), (0, -1) when none is alive.
    Counted first from the serials alone; the stored fingerprints' fields are read only
    for a serial that would beat the best so far (a few per query, not one per hash)."""
    _sort(found)
    slots = fp_serial.shape[0]
    best_count, best = 0, -1
    i = found.shape[0] - 1
    while i >= 0:  # runs of equal serials, most recent first: an equal count does not win
        j = i
        while j > 0 and found[j - 1] == found[i]:
            j -= 1
        if i - j + 1 > best_count:
            s = found[i]
            slot = s % slots
            if (fp_serial[slot] == s and fp_time[slot] >= since
                    and fp_content[slot] != content):
                best_count, best = i - j + 1, s
        i = j - 1
    return best_count, best


@njit(cache=True, nogil=True)
def prada_sample(distances, appended, out):  # type: ignore[no-untyped-def]
    """The sample PRADA's test reads, as :func:`.extraction._shapiro` takes it: the ring
    ``distances`` ((window,) float64) after ``appended`` appends, oldest first, without
    the values more than 3 standard deviations from the mean (when they spread at all),
    sorted ascending into ``out``; returns how many."""
    size = distances.shape[0]
    n = min(appended, size)
    start = appended % size if appended > size else 0
    total = 0.0
    for i in range(n):
        out[i] = distances[(start + i) % size]
        total += out[i]
    mean = total / n
    squares = 0.0
    for i in range(n):
        squares += (out[i] - mean) * (out[i] - mean)
    bound = 3.0 * math.sqrt(squares / n)
    kept = n
    if bound > 0:
        kept = 0
        for i in range(n):
            if abs(out[i] - mean) <= bound:
                out[kept] = out[i]
                kept += 1
    out[:kept].sort()
    return kept


@njit(cache=True, nogil=True)
def shapiro_sorted(x, a):  # type: ignore[no-untyped-def]
    """Shapiro-Wilk W of ``x`` ((n,) float64, sorted ascending, finite) with the
    coefficients ``a`` of :func:`.shapiro.coefficients`, as :func:`.shapiro.shapiro_w`
    computes it (to rounding)."""
    n = x.shape[0]
    scale = max(abs(x[0]), abs(x[n - 1]))
    if scale == 0.0:
        return np.nan
    if not 1e-150 < scale < 1e150:  # their squares would overflow or underflow
        x = x / scale
    total = 0.0
    for i in range(n):
        total += x[i]
    mean = total / n
    dot, spread = 0.0, 0.0
    for i in range(n):
        dot += a[i] * (x[i] - mean)
        spread += (x[i] - mean) * (x[i] - mean)
    if not spread > 0:
        return np.nan
    return min(1.0, dot * dot / spread)


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
    layout = np.ones(2 * 3 + 2 + 3, np.uint64)  # salt, content, window coefficients
    layout[-3:-1] = np.array([1.0, 1.0]).view(np.uint64)  # 1 / unit, 1 / step
    layout[-1] = 0  # not scaled
    fingerprint_rows(x, layout, np.zeros((1, 2), np.uint32), np.zeros(1, np.uint32))
    # an index of 16 buckets of 8 ways and 4 slots of 2 hashes, empty
    state = np.zeros(_STATE_HEADER + 16 * 8 + 3 * 4 + 2 + 4, np.uint64)
    state[:4] = 16, 8, 4, 2
    state[_STATE_HEADER + 16 * 8:_STATE_HEADER + 16 * 8 + 4] = np.uint64(2**64 - 1)  # -1
    fingerprint_match_and_add_rows(x, layout, 0, 1, 0.0, 0.0, state, 0, 4,
                                   np.zeros((3, 1), np.int64))
    match_and_add_rows(np.array([[5, 3]], np.uint32), np.ones(1, np.uint32), 0, 1, 0.0, 0.0,
                       state, 0, 4, np.zeros((3, 1), np.int64))
    table = np.zeros((16, 8), np.uint64)
    learn_rows(np.zeros((1, 3)), np.zeros(1, np.int64), np.zeros((1, 2, 3), np.float32),
               np.zeros(_MAX_CLASSES * (5 + 2) + 4 + 2))
    rebucket(table, np.zeros((32, 8), np.uint64), np.int64(31))
    prada_sample(np.arange(4.0), 4, np.zeros(4))
    # the coefficients as the tracker passes them: read-only (another type to numba)
    shapiro_sorted(np.arange(4.0), coefficients(4))
