"""The in-process store under threads: admission without a quota or interval reads the
lockout without taking the store's lock, so a lockout must never look absent while
another thread extends it."""

from __future__ import annotations

import sys
import threading

from aimsec_core.monitoring.memory import MemoryStore
from aimsec_core.monitoring.policy import ClientRules
from aimsec_core.monitoring.store import ADMITTED


def test_a_locked_client_stays_locked_while_its_lockout_is_extended():
    # one failure locks out, so every failure another thread records extends the lockout
    # (calls admitted just before the lockout, refused just after it)
    rules = ClientRules(max_failed_attempts=1, session_timeout=1e6, failure_window=1e6)
    store = MemoryStore(secret=b"s" * 32)
    store.record_failure("m", "mallory", 0.0, rules)
    stop = threading.Event()

    def extend() -> None:
        while not stop.is_set():
            store.record_failure("m", "mallory", 0.5, rules)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    thread = threading.Thread(target=extend)
    thread.start()
    try:
        admitted = sum(store.admit("m", "mallory", 1.0, rules, lockout=True) is ADMITTED
                       for _ in range(20_000))
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert admitted == 0
