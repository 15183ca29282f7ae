"""Helpers of the incident tests."""

from __future__ import annotations

import threading
from collections.abc import Callable


def in_threads(store, work: Callable[[int], None], count: int) -> None:
    """``work(i)`` in ``count`` threads at once; then ``store`` closes and the first error a
    thread raised is raised here (a worker process reports it through its exit code)."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    if errors:
        raise errors[0]
