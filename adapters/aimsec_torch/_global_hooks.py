"""torch's global module hooks (they run for every module's forward, in every thread),
registered while at least one guarded call needs them and removed after the last.

A guarded call watches or reads the model's modules this way rather than by hooks on the
modules themselves: a module's own hook is seen by every thread calling the model (one
call's capture would take another call's tensors) and is copied into a ``deepcopy`` or a
pickle of the model taken meanwhile. Each call keeps its own state where the hook finds
it (the refusing hook: a context variable; the feature capture: a registry by thread);
a hook finding none returns at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aimsec_core.forks import renew_after_fork


class SharedHook:
    """Global hooks registered by ``register`` (it returns their handles) while any
    :meth:`active` block runs, in any thread; counted, so nested and concurrent blocks
    share one registration."""

    def __init__(self, register: Callable[[], list[Any]]) -> None:
        self._register = register
        self._lock = threading.Lock()
        renew_after_fork(self)  # a child forked while a thread held it
        self._users = 0
        self._handles: list[Any] = []

    @contextmanager
    def active(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._handles = self._register()  # raising, the block is not counted in
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    for handle in self._handles:
                        handle.remove()
                    self._handles = []
