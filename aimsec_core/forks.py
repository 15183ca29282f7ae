"""Locks a forked child finds free.

A thread that holds a lock when another thread forks does not exist in the child: the
lock stays held there for ever, and the child's first guarded call that takes it hangs (a
``multiprocessing`` worker forked, or a pre-fork server's worker, from a process whose
threads are serving guarded calls: the fingerprint index's lock is held for most of
each watched call). An owner registered with :func:`renew_after_fork` gets a new lock in
the child, which then goes on from the state the fork copied (an update another thread
had under way is left as far as it had got: the child's counts and tables start from
the parent's, as they do anyway).

Only the forked child is touched, once per fork; no guarded call pays anything for it.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

#: id(owner) -> (a weak reference to it, the names of its lock attributes)
_owners: dict[int, tuple[weakref.ref[Any], tuple[str, ...]]] = {}


def renew_after_fork(owner: Any, *names: str) -> None:
    """Give ``owner`` (an object or a module) a new ``threading.Lock`` in each attribute
    ``names`` (default ``_lock``) in every child forked from now on, while it lives."""
    key = id(owner)

    def gone(ref: weakref.ref[Any]) -> None:
        if _owners.get(key, (None,))[0] is ref:
            del _owners[key]

    _owners[key] = (weakref.ref(owner, gone), names or ("_lock",))


def _renew() -> None:
    for ref, names in list(_owners.values()):
        owner = ref()
        if owner is not None:
            for name in names:
                setattr(owner, name, threading.Lock())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew)
