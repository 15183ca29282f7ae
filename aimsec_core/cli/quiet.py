"""Keeping frameworks' native start-up lines out of the command's output.

TensorFlow's C++ runtime writes its start-up notices (oneDNN, CPU features, absl) straight
to file descriptor 2 when it is first imported, past Python's ``sys.stderr`` and past
``TF_CPP_MIN_LOG_LEVEL``. The commands import it inside :func:`native_stderr_silenced`,
which points descriptor 2 at ``/dev/null`` for that moment only. Its Python logger's
warnings are advice to the authors of the code calling it (ART's attacks on a Keras model:
"Calling GradientTape.gradient on a persistent tape inside its context is significantly
less efficient..."), so :func:`import_quietly` lets through its errors alone, unless the
application has set that logger's level itself.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Frameworks' Python loggers that :func:`import_quietly` sets to errors alone.
QUIET_LOGGERS = ("tensorflow",)


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Descriptor 2 goes to ``/dev/null`` inside the block (Python errors raised in it
    still propagate as exceptions and are printed after it)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (embedded, captured): nothing to do
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_quietly(*modules: str) -> None:
    """Import ``modules`` (those installed) with their native start-up lines silenced, and
    :data:`QUIET_LOGGERS` that nobody has set a level for at ``ERROR``."""
    with native_stderr_silenced():
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError:
                continue
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)
