"""Per-client quotas on the ``limits`` library, driven by the guard's clock.

The quota is ``limits``' moving window (exact: at most N calls in any 60 s), one window
per client whatever the quota its call comes under. ``limits``' own storages read
the wall clock inside (``MemoryStorage`` stamps entries with ``time.time()`` and expires
them from a timer thread; ``RedisStorage`` passes ``time.time()`` to its Lua script), so a
test could not drive them without sleeping. Hence:

- in memory, :class:`ClockedWindows` implements ``limits``' moving-window storage protocol
  (``acquire_entry``, ``get_moving_window``) with the time the store is given;
- on Redis, the store runs ``limits``' own moving-window Lua script
  (``RedisStorage.SCRIPT_ACQUIRE_MOVING_WINDOW``) with the guard's clock as its timestamp,
  pipelined with the lockout script so admission stays one round trip (behind a check
  of the lockout: a locked-out call is not counted, see ``redis_scripts.ACQUIRE``).
"""

from __future__ import annotations

import bisect
from operator import neg as _negated

from limits.storage import MovingWindowSupport, RedisStorage, Storage

#: ``limits``' own Lua script for the moving window (KEYS: list; ARGV: now, limit,
#: expiry, amount); returns true when the call is admitted.
REDIS_ACQUIRE_SCRIPT: str = RedisStorage.SCRIPT_ACQUIRE_MOVING_WINDOW


class ClockedWindows(Storage, MovingWindowSupport):
    """``limits``' moving-window storage over timestamps the caller sets.

    Each key holds its admitted calls' times, newest first, at most ``limit`` of them,
    as ``limits``' ``MemoryStorage`` does; :attr:`events` keeps the most recently counted
    key last, so the store's sweep drops the least recently counted first. Set :attr:`now` before each use (the store
    does, under its lock). Not registered under a URL scheme; only the moving window is
    implemented.
    """

    STORAGE_SCHEME = None

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.events: dict[str, list[float]] = {}

    @property
    def base_exceptions(self) -> type[Exception]:
        return Exception

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError("only the moving window is kept")

    def get(self, key: str) -> int:
        raise NotImplementedError("only the moving window is kept")

    def get_expiry(self, key: str) -> float:
        raise NotImplementedError("only the moving window is kept")

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        count = len(self.events)
        self.events.clear()
        return count

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        # the most recently counted key last (the store's sweep drops from the front)
        events = self.events.pop(key, None) or []
        self.events[key] = events
        if events and events[0] > self.now:  # stamped by a clock since set back: now
            events[:] = [min(t, self.now) for t in events]
        if len(events) >= limit - amount + 1 and events[limit - amount] >= self.now - expiry:
            return False
        events[:0] = [self.now] * amount
        del events[limit:]
        return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """The oldest of ``key``'s calls within ``expiry`` seconds and their number, found
        by bisection (the times are newest first): every refused call asks, and walking
        a full window cost a client at a quota of 100,000 calls a minute 2 ms per
        refusal."""
        events = self.events.get(key, ())
        inside = bisect.bisect_right(events, expiry - self.now, key=_negated)
        return (events[inside - 1], inside) if inside else (self.now, 0)

    def clear(self, key: str) -> None:
        self.events.pop(key, None)

class Quota:
    """``limits``' moving window over :class:`ClockedWindows`, one window per client
    whatever its quota.

    ``limits``' limiter keys a window by the item's amount too, so a client whose calls
    came under tiers of different quotas had a window per quota and made their sum in a
    minute; on Redis the window is the client's alone. Hence the storage is driven here,
    as ``MovingWindowRateLimiter.hit`` and ``get_window_stats`` drive it, under a key of
    the identifiers alone: each call is judged by its own quota against all of the
    client's calls (one admitted under a smaller quota had fewer than that many calls in
    the minute, so trimming the window to it drops only older ones)."""

    def __init__(self) -> None:
        self.windows = ClockedWindows()

    def hit(self, calls: int, now: float, *identifiers: str) -> float | None:
        """Count one call; ``None`` when admitted, else seconds until one would be."""
        windows = self.windows
        windows.now = now
        key = "/".join(identifiers)
        if windows.acquire_entry(key, calls, _MINUTE):
            return None
        start, _calls = windows.get_moving_window(key, calls, _MINUTE)
        return max(0.0, start + _MINUTE - now)


_MINUTE = 60  #: the window's length in seconds (limits' expiry of a per-minute item)
