"""Compiled kernels for the per-query work of the monitor (numba, when installed).

A watched call fingerprints its samples, matches them against the index and stores them,
and measures PRADA's minimum distance. Written with numpy, that is some forty small array
operations per call; beside a model, whose code and data fill the caches, each costs one to
two microseconds. These kernels do the same work in two compiled calls (the in-process store
fingerprints, matches and stores a call's samples in one; PRADA's step is the other), with
the same results bit for bit (the hashes are integer arithmetic modulo 2^64; ``asinh`` comes from the
C library instead of numpy's loops, which may differ in the last bit, and so decides a
quantization boundary differently about once in 10^13 values).

:func:`load` returns the compiled kernels, or ``None`` where numba is not installed or
``AIMSEC_JIT=0`` is set, and while they compile: the first call starts compiling them in
a background thread (about 3 s the first time, half a second from numba's on-disk cache),
and the numpy implementations in :mod:`.fingerprint`, :mod:`.index` and
:mod:`.extraction` serve until then. Either gives the same results, so no guarded call
waits for a compiler. A process forked while they compile (a ``multiprocessing`` or
pre-fork worker started right after its parent's first watched call) cannot use the
copy of the compiler it holds: it runs the numpy forms, with one warning.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..config import parse_bool, resolve
from ..forks import renew_after_fork

_log = logging.getLogger("aimsec")
_lock = threading.Lock()
renew_after_fork(sys.modules[__name__])  # a child forked while a thread held it
_loaded: list[Any] = []  #: the kernels once loading ended (``None`` when unavailable)
_loader: list[threading.Thread] = []  #: the thread compiling them, once started


def enabled() -> bool:
    """Whether ``AIMSEC_JIT`` lets the kernels compile (default on); an unreadable value
    raises :class:`~aimsec_core.errors.ConfigurationError`."""
    return resolve(None, "AIMSEC_JIT", True, parse_bool)


def load(*, wait: bool = False) -> Any:
    """The compiled kernels (``fingerprint_rows``, ``match_and_add_rows``,
    ``fingerprint_match_and_add_rows``, ``learn_rows``, ``prada_sample``,
    ``shapiro_sorted``, ``rebucket``) as attributes of one object, or ``None``
    (unavailable, or still compiling unless ``wait``)."""
    if _loaded:
        return _loaded[0]
    with _lock:
        if not _loaded and not _loader:
            if not enabled():
                _loaded.append(None)
                return None
            # a daemon: a process that ends never waits for it
            thread = threading.Thread(target=lambda: _loaded.append(_compile()),
                                      name="aimsec-kernels", daemon=True)
            _loader.append(thread)
            thread.start()
    if wait:
        _loader[0].join()
    return _loaded[0] if _loaded else None


def kernel_array(x: Any, dtype: type) -> np.ndarray:
    """``x`` as the kernels take it: an ``ndarray`` of ``dtype``, C order, aligned and
    writable (the types :func:`load` compiled for, so no call compiles another
    specialization); ``x`` itself when it is one, else a copy."""
    if type(x) is np.ndarray and x.dtype == dtype:
        if x.flags.carray:  # C order, aligned and writable
            return x
    return np.require(x, dtype, ("C", "A", "W"))


def _after_fork_in_child() -> None:
    """In a forked child the compiling thread does not exist. Forked before it started,
    the child compiles at its first watched call. Forked while it ran, the child holds a
    copy of numba's compiler caught mid-work (its lock held by a thread that is not
    there, a module half imported): compiling again would fail or wait for ever, so the
    child runs the numpy forms (the same results) for its whole life, and says so."""
    if _loaded or not _loader:
        return
    _loaded.append(None)
    _log.warning("aimsec: this process was forked while the monitoring kernels compiled "
                 "in its parent (pid %d); it runs their numpy forms instead (the same "
                 "results, more CPU per call). To give forked workers the kernels, call "
                 "aimsec_core.monitoring.kernels.load(wait=True) before forking, or fork "
                 "before the first guarded call", os.getppid())


os.register_at_fork(after_in_child=_after_fork_in_child)


def _compile() -> Any:
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
                           fingerprint_match_and_add_rows=(
                               _compiled.fingerprint_match_and_add_rows),
                           learn_rows=_compiled.learn_rows,
                           prada_sample=_compiled.prada_sample,
                           shapiro_sorted=_compiled.shapiro_sorted,
                           rebucket=_compiled.rebucket)
