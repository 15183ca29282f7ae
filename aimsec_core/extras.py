"""Optional dependencies: one check, before a feature starts, that names the extra to
install instead of a bare ``ModuleNotFoundError`` from deep inside it."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from .errors import MissingExtraError


def installed(module: str) -> bool:
    """Whether ``module`` (a top-level name such as ``"jinja2"``) can be imported; checked
    without importing it. A module set to ``None`` in ``sys.modules`` counts as missing."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken parent package, a module without a spec
        return False


def require(modules: Sequence[str], extra: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` when any of ``modules`` is not installed: "FEATURE
    needs the 'EXTRA' extra (MODULES not installed): pip install 'aimsec[EXTRA]'"."""
    missing = [m for m in modules if not installed(m)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise MissingExtraError(
            f"{feature} needs the '{extra}' extra ({' and '.join(missing)} {verb} not "
            f"installed): pip install 'aimsec[{extra}]'", name=missing[0])
