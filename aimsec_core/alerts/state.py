"""Where alert groups live: in this process, or in Redis shared by every replica.

A group's record (:class:`GroupRecord`) is changed in two ways only: ``add`` folds new
occurrences in (atomic on its own), and ``transact`` reads a record, lets the grouping
policy decide, and writes the decision back only if nobody changed the record meanwhile.
That is what makes "one message per group across replicas": two replicas due to send the
same group race on ``transact``, one wins and resets ``pending``, the other then finds
nothing left to send. The policy itself lives once, in :mod:`aimsec_core.alerts.grouping`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, TypeVar, Union

from ..config import redacted_url
from ..errors import ConfigurationError

R = TypeVar("R")
Group = tuple[str, str, str]  #: (model, threat, client)


@dataclass(frozen=True)
class GroupRecord:
    """One group's state. Times are seconds since the epoch; ``sent_at`` is -1 and
    ``sent_rank`` -1 before the first message; ``rank`` is the highest severity rank seen."""

    model: str
    threat: str
    client: str
    created: float
    first_seen: float
    last_seen: float
    rank: int
    total: int
    pending: int
    sent_at: float = -1.0
    sent_rank: int = -1
    messages: int = 0
    reason: str = ""

    @property
    def group(self) -> Group:
        return (self.model, self.threat, self.client)


class _Delete:
    """``transact`` action: forget the group."""


class CommitUnknown(Exception):
    """``transact`` sent its change but the answer never came (the server hung, was
    killed or answered too late): the change may be stored. ``result`` is what the change
    decided, for the caller to act on (a claimed message sent rather than lost)."""

    def __init__(self, result: Any) -> None:
        super().__init__("the change was sent but its answer was lost")
        self.result = result


DELETE = _Delete()
Action = Union[GroupRecord, _Delete, None]  #: a new record, DELETE, or None (unchanged)


class GroupState(Protocol):
    def add(self, group: Group, *, count: int, rank: int, first_seen: float,
            last_seen: float, reason: str) -> None:
        """Fold ``count`` occurrences into ``group``, creating it if needed."""

    def ids(self) -> list[Any]:
        """Opaque ids of the live groups, for :meth:`transact`."""

    def transact(self, group_id: Any,
                 change: Callable[[GroupRecord], tuple[R, Action]]) -> R | None:
        """Atomically apply ``change`` to the record; ``None`` if the group is gone.
        Raises :class:`CommitUnknown` when the change was sent but not confirmed."""


def _fresh(group: Group, count: int, rank: int, first_seen: float, last_seen: float,
           reason: str) -> GroupRecord:
    return GroupRecord(*group, created=first_seen, first_seen=first_seen, last_seen=last_seen,
                       rank=rank, total=count, pending=count, reason=reason)


class MemoryGroupState:
    """Groups in a dict, for one process."""

    def __init__(self) -> None:
        self._groups: dict[Group, GroupRecord] = {}
        self._lock = threading.Lock()

    def add(self, group: Group, *, count: int, rank: int, first_seen: float,
            last_seen: float, reason: str) -> None:
        with self._lock:
            old = self._groups.get(group)
            self._groups[group] = _fresh(group, count, rank, first_seen, last_seen, reason) \
                if old is None else replace(
                    old, total=old.total + count, pending=old.pending + count,
                    rank=max(old.rank, rank), last_seen=max(old.last_seen, last_seen),
                    reason=reason or old.reason)

    def ids(self) -> list[Any]:
        with self._lock:
            return list(self._groups)

    def transact(self, group_id: Any,
                 change: Callable[[GroupRecord], tuple[R, Action]]) -> R | None:
        with self._lock:
            record = self._groups.get(group_id)
            if record is None:
                return None
            result, action = change(record)
            if isinstance(action, _Delete):
                del self._groups[group_id]
            elif action is not None:
                self._groups[group_id] = action
            return result


# KEYS: record, index. ARGV: model, threat, client, count, rank, first, last, reason, ttl ms.
_ADD = """
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then
  redis.call('HSET', k, 'model', ARGV[1], 'threat', ARGV[2], 'client', ARGV[3],
             'created', ARGV[6], 'first_seen', ARGV[6], 'last_seen', ARGV[7], 'rank', ARGV[5],
             'total', 0, 'pending', 0, 'sent_at', -1, 'sent_rank', -1, 'messages', 0)
end
redis.call('HINCRBY', k, 'total', ARGV[4])
redis.call('HINCRBY', k, 'pending', ARGV[4])
if tonumber(ARGV[5]) > tonumber(redis.call('HGET', k, 'rank')) then
  redis.call('HSET', k, 'rank', ARGV[5])
end
if tonumber(ARGV[7]) > tonumber(redis.call('HGET', k, 'last_seen')) then
  redis.call('HSET', k, 'last_seen', ARGV[7])
end
if ARGV[8] ~= '' then redis.call('HSET', k, 'reason', ARGV[8]) end
redis.call('PEXPIRE', k, ARGV[9])
redis.call('ZADD', KEYS[2], ARGV[7], k)
return 1
"""

_FLOATS = ("created", "first_seen", "last_seen", "sent_at")
#: The longest expiry given to Redis (about 146 million years), far from where its
#: clock plus the expiry would pass the largest 64-bit integer.
_MOST_TTL_MS = 2**62
_INTS = ("rank", "total", "pending", "sent_rank", "messages")


class RedisGroupState:
    """Groups in Redis, shared by every replica using the same ``prefix``.

    ``client`` is a ``redis.Redis``; each group is a hash that expires ``ttl_s`` after its
    last occurrence, listed in a sorted set by last occurrence. ``add`` is one Lua script;
    ``transact`` is an optimistic ``WATCH``/``MULTI`` transaction retried on conflict.
    """

    def __init__(self, client: Any, *, prefix: str = "aimsec:alerts:", ttl_s: float = 8 * 3600.0
                 ) -> None:
        self.client = client
        self.prefix = prefix
        # Redis refuses an expiry that, added to its clock in ms, passes 2**63 - 1: a
        # longer one (a repeat interval of 1e16 s) failed every group's PEXPIRE
        self.ttl_ms = max(1000, int(min(ttl_s * 1000, _MOST_TTL_MS)))
        self._index = f"{prefix}groups"
        self._add = client.register_script(_ADD)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisGroupState:
        from ..extras import require

        require(("redis",), "redis", "alert groups shared through Redis")
        from ..redis_client import redis_client

        try:  # the host resolved in the background, waited for 2 s at most too
            client = redis_client(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        except ValueError as exc:  # redis' own parsing: a bad port, db or query value
            raise ConfigurationError(f"alert group Redis URL {redacted_url(url, path=True)!r} "
                                     f"(redis_url, else AIMSEC_REDIS_URL, else AIMSEC_STORE_URL "
                                     f"where it is a Redis URL) cannot be used: {exc}") from None
        return cls(client, **kwargs)

    def __repr__(self) -> str:
        return f"RedisGroupState(prefix={self.prefix!r})"

    def _key(self, group: Group) -> str:
        digest = hashlib.sha256(json.dumps(group).encode()).hexdigest()[:32]
        return f"{self.prefix}group:{digest}"

    def add(self, group: Group, *, count: int, rank: int, first_seen: float,
            last_seen: float, reason: str) -> None:
        self._add(keys=[self._key(group), self._index],
                  args=[*group, count, rank, repr(first_seen), repr(last_seen), reason,
                        self.ttl_ms])

    def ids(self) -> list[Any]:
        names = self.client.zrange(self._index, 0, -1)
        return [n.decode() if isinstance(n, bytes) else n for n in names]

    def transact(self, group_id: Any,
                 change: Callable[[GroupRecord], tuple[R, Action]]) -> R | None:
        from redis.exceptions import ConnectionError, TimeoutError, WatchError

        lost = (ConnectionError, TimeoutError, OSError)
        pipe = self.client.pipeline()
        try:
            for _ in range(100):
                sent = False
                try:
                    pipe.watch(group_id)
                    raw = pipe.hgetall(group_id)
                    if not raw:
                        pipe.unwatch()
                        self.client.zrem(self._index, group_id)  # expired
                        return None
                    result, action = change(_decode(raw))
                    if action is None:
                        pipe.unwatch()
                        return result
                    pipe.multi()
                    if isinstance(action, _Delete):
                        pipe.delete(group_id)
                        pipe.zrem(self._index, group_id)
                    else:
                        pipe.hset(group_id, mapping=_encode(action))
                    sent = True
                    pipe.execute()
                    return result
                except WatchError as exc:
                    # redis-py raises WatchError for a connection lost while watching too
                    # (a timeout): no conflict then, and a change sent may be stored
                    if not isinstance(exc.__context__, lost):
                        continue  # another replica changed the group: decide again
                    if sent:
                        raise CommitUnknown(result) from exc
                    raise
                except lost as exc:
                    if sent:
                        raise CommitUnknown(result) from exc
                    raise
            return None  # contended all along: the next tick decides
        finally:
            try:
                pipe.reset()
            except lost:  # the connection is lost already (its UNWATCH could not go)
                pass


def _decode(raw: dict[bytes, bytes]) -> GroupRecord:
    data = {k.decode(): v.decode() for k, v in raw.items()}
    values: dict[str, Any] = {name: data.get(name, "") for name in ("model", "threat", "client",
                                                                    "reason")}
    values.update({name: float(data[name]) for name in _FLOATS})
    values.update({name: int(data[name]) for name in _INTS})
    return GroupRecord(**values)


def _encode(record: GroupRecord) -> dict[str, str]:
    return {k: repr(v) if isinstance(v, float) else str(v) for k, v in asdict(record).items()}
