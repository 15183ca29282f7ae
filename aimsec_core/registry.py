"""Finding the adapter for a model: registered classes first, then installed plugins."""

from __future__ import annotations

import logging
import sys
import threading
from importlib.metadata import entry_points
from typing import Any

from .adapter import Adapter
from .errors import AdapterNotFoundError
from .forks import renew_after_fork
from .extras import installed

ENTRY_POINT_GROUP = "aimsec.adapters"

log = logging.getLogger("aimsec")
_registered: list[type[Adapter]] = []
_plugins: list[type[Adapter]] | None = None
_lock = threading.Lock()
renew_after_fork(sys.modules[__name__])  # a child forked while it was held


def register_adapter(adapter: type[Adapter]) -> type[Adapter]:
    """Register an adapter class in this process (usable as a decorator)."""
    if not (isinstance(adapter, type) and issubclass(adapter, Adapter)):
        raise TypeError(f"expected an Adapter subclass; received {adapter!r}")
    if adapter not in _registered:
        _registered.insert(0, adapter)
    return adapter


def installed_adapters(*, reload: bool = False) -> list[type[Adapter]]:
    """Registered adapters, then those of the ``aimsec.adapters`` entry-point group."""
    global _plugins
    with _lock:
        if _plugins is None or reload:
            _plugins = []
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    loaded = ep.load()
                except Exception:  # a broken plugin must not take the others down
                    log.exception("aimsec adapter plugin %r failed to load", ep.name)
                    continue
                if isinstance(loaded, type) and issubclass(loaded, Adapter):
                    _plugins.append(loaded)
                else:
                    log.warning("aimsec adapter plugin %r is not an Adapter subclass", ep.name)
        return [*_registered, *(p for p in _plugins if p not in _registered)]


def adapter_for(model: Any) -> Adapter:
    """An adapter instance for ``model``, or :class:`AdapterNotFoundError`."""
    adapters = installed_adapters()
    for adapter in adapters:
        if adapter.accepts(model):
            return adapter(model)
    usable = [a.framework for a in adapters if all(map(installed, a.requires))]
    missing = [a.framework for a in adapters if not all(map(installed, a.requires))]
    names = ", ".join(usable) or "none"
    if missing:
        names += f" (adapters whose framework is not installed: {', '.join(missing)})"
    raise AdapterNotFoundError(
        f"no installed adapter accepts a {type(model).__module__}.{type(model).__qualname__}; "
        f"frameworks installed with an adapter: {names}. Install the extra for its framework "
        "(pip install 'aimsec[torch]', '[keras]', '[sklearn]' or '[onnx]') or register one "
        "with aimsec_core.register_adapter")
