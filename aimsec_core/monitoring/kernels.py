"""Compiled kernels for the per-query work of the monitor (numba, when installed).

A watched call fingerprints its samples, matches them against the index and stores them,
and measures PRADA's minimum distance. Written with numpy, that is some forty small array
operations per call; beside a model, whose code and data fill the caches, each costs one to
two microseconds. These kernels do the same work in one compiled call each, with the same
results bit for bit (the hashes are integer arithmetic modulo 2^64; ``asinh`` comes from the
C library instead of numpy's loops, which may differ in the last bit, and so decides a
quantization boundary differently about once in 10^13 values).

:func:`load` returns the compiled kernels, or ``None`` where numba is not installed or
``AIMSEC_JIT=0`` is set; the numpy implementations in :mod:`.fingerprint`,
:mod:`.index` and :mod:`.extraction` are then used. Kernels compile on first use (about a
second) and are cached on disk by numba; :func:`load` compiles them at once, so the first
guarded call does not wait.
"""

from __future__ import annotations

import logging
import os
import threading
from types import SimpleNamespace
from typing import Any

_log = logging.getLogger("aimsec")
_lock = threading.Lock()
_loaded: list[Any] = []  #: the kernels once loaded (``None`` when unavailable)


def load() -> Any:
    """The compiled kernels (``fingerprint_rows``, ``match_and_add_rows``,
    ``min_square_distance``) as attributes of one object, or ``None``."""
    if _loaded:
        return _loaded[0]
    with _lock:
        if not _loaded:
            _loaded.append(_compile())
    return _loaded[0]


def _compile() -> Any:
    if os.environ.get("AIMSEC_JIT", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        from . import _compiled

        _compiled.warm_up()
    except ImportError:  # numba is not installed
        return None
    except Exception:  # e.g. no writable cache folder, an LLVM the platform lacks
        _log.warning("aimsec: numba could not compile the monitoring kernels; the numpy "
                     "forms run instead", exc_info=True)
        return None
    return SimpleNamespace(fingerprint_rows=_compiled.fingerprint_rows,
                           match_and_add_rows=_compiled.match_and_add_rows,
                           min_square_distance=_compiled.min_square_distance)
