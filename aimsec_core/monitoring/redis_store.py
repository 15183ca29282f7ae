"""The Redis store: monitoring state shared by every replica of a model.

Each guarded call of up to :data:`ROWS_PER_SCRIPT` samples (fewer with more than the
default 50 fingerprint hashes: :data:`HASHES_PER_SCRIPT`) costs at most two round
trips: admission (one pipeline: buffered failures and suspicions, lockout and minimum
interval, ``limits``' moving-window quota) and observation (one script: repeats,
suspicion, fingerprint match-and-store); a larger batch adds one observation round trip
per further slice of that many samples. Every script is atomic on the server, so
replicas never admit more than a quota between them.
Commands never wait longer than ``timeout`` seconds (default 50 ms) and are not retried;
a failure (no answer in time, an error reply, an answer that is not Redis's) raises
:class:`StoreError`, which the monitor turns into its failure policy. The server's host
name is resolved in the background (:mod:`aimsec_core.resolver`): a connection waits
for a name at most ``timeout`` seconds too, so a DNS server that hangs or fails is an
outage like any other, not a guarded call held for the resolver's own retries.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from functools import lru_cache
from typing import Any

import numpy as np

from ..config import redacted_url
from ..forks import renew_after_fork
from ..resolver import Resolver
from .fingerprint import Query
from .index import Match
from .policy import ClientRules, Policy
from .redis_scripts import ACQUIRE, ADMIT, APPLY, OBSERVE
from .store import Admission, Observation, Store, StoreError

#: Entries kept per index bucket (a bucket is one Redis list).
WAYS = 16
#: Fingerprinted samples matched and stored per script call (about 20 ms of the server's
#: time at the default 50 hashes): a larger batch takes one more round trip per slice.
ROWS_PER_SCRIPT = 64
#: Fingerprint hashes matched and stored per script call: with more hashes per row than
#: the default 50, a slice holds fewer rows (at 4,096 hashes, 64 rows held the server
#: for about 3 s, past every replica's timeout); at least one row.
HASHES_PER_SCRIPT = ROWS_PER_SCRIPT * 50
_SECRET_KEY = "aimsec:secret"
#: Longest model name used as it is in keys (UTF-8 bytes); a longer one, or one Redis
#: cannot encode, is keyed by its hash.
_NAME_BYTES = 128
_TAG = 0xFFFF  #: client and content tags keep their low 16 bits in an index entry
_FAILURE_ARGS = 5  #: a buffered failure's arguments to the APPLY script
#: Refused calls buffered for the next round trip at most (an outage buffers every refused
#: call; past this the oldest go: this process's own state still counts them).
PENDING_FAILURES = 1024


class RedisStore(Store):
    """``url``: ``redis://host:port/db``; ``connection_pool`` lets tests count round trips;
    ``resolver`` resolves the host (default: the process's shared
    :data:`~aimsec_core.resolver.RESOLVER`)."""

    def __init__(self, url: str, *, timeout: float = 0.05, connection_pool: Any = None,
                 resolver: Resolver | None = None) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from ..redis_client import check_url, redis_client

        self.url = url
        check_url(url)
        self._redis = redis
        if connection_pool is not None:
            self.client = redis.Redis(connection_pool=connection_pool)
        else:
            self.client = redis_client(
                url, resolver=resolver, socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0), retry_on_timeout=False,
                health_check_interval=0)
        # any failure of the store is an outage for the failure policy, not only an
        # unreachable one: an error reply (OOM under maxmemory, READONLY after a failover,
        # BUSY behind a long script) or something that is not Redis answering the URL
        self._errors = (redis.exceptions.RedisError, OSError)
        #: what a reply of the wrong shape raises while it is read or unpacked (a server
        #: speaking Redis' protocol without being Redis, e.g. answering "+OK" to anything)
        self._garbled = (AttributeError, TypeError, ValueError, IndexError, KeyError)
        self._lock = threading.Lock()
        renew_after_fork(self)  # a child forked while a thread held it
        self._pending_keys: list[str] = []
        self._pending_failures: list[Any] = []
        self._pending_suspects: tuple[list[str], list[Any]] = ([], [])
        self._local_secret = os.urandom(32)
        self._secret: bytes | None = None
        #: script digests; replaced whole, never emptied, as other threads read them
        self._shas: dict[str, str] = {}
        self._reconnect = True  #: connect before the next command (first use, a failure)

    def __repr__(self) -> str:
        return f"RedisStore({redacted_url(self.url, path=True)!r})"

    # -- connection --------------------------------------------------------------------

    def connect(self) -> None:
        """Load the scripts and agree on the secret (on first use and after an outage)."""
        try:
            pipe = self.client.pipeline(transaction=False)
            for script in (APPLY, ADMIT, OBSERVE, ACQUIRE):
                pipe.script_load(script)
            pipe.set(_SECRET_KEY, self._secret or self._local_secret, nx=True)
            pipe.get(_SECRET_KEY)
            *shas, _, secret = pipe.execute()
            shas = [_text(sha) for sha in shas]
            secret = bytes(secret)
        except (*self._errors, *self._garbled) as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc
        self._shas = dict(zip(("apply", "admit", "observe", "acquire"), shas))
        self._secret = secret
        self._reconnect = False

    def secret(self) -> bytes:
        if self._secret is None:
            self.connect()
        assert self._secret is not None
        return self._secret

    def _run(self, build: Any) -> list[Any]:
        """Run one pipeline built by ``build(pipe)``; reload scripts once after a restart."""
        if self._reconnect or not self._shas:
            self.connect()
        for attempt in (0, 1):
            pipe = self.client.pipeline(transaction=False)
            build(pipe)
            try:
                return pipe.execute()
            except self._redis.exceptions.NoScriptError as exc:
                if attempt:
                    raise StoreError(f"{type(exc).__name__}: {exc}") from exc
                self.connect()
            except (*self._errors, *self._garbled) as exc:
                self._reconnect = True
                raise StoreError(f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    def _garbled_reply(self, exc: Exception) -> StoreError:
        """The error for a reply that is not Redis's (reconnect before the next command)."""
        self._reconnect = True
        return StoreError(f"a reply that is not Redis's ({type(exc).__name__}: {exc})")

    # -- operations --------------------------------------------------------------------

    def admit(self, model: str, client: str, now: float, rules: ClientRules, *,
              lockout: bool) -> Admission:
        base = f"{_namespace(model)}:{client}"
        rate_key = f"{base}:rate"
        limit = rules.max_requests_per_minute
        pending = self._take_pending()

        def build(pipe: Any) -> None:
            if pending is not None:
                keys, args = pending
                pipe.evalsha(self._shas["apply"], len(keys), *keys, *args)
            checked = "1" if lockout else "0"
            pipe.evalsha(self._shas["admit"], 3, f"{base}:lock", f"{base}:last", _SECRET_KEY,
                         _num(now), _num(rules.min_request_interval), checked,
                         self._secret or self._local_secret, _num(rules.session_timeout))
            if limit is not None:
                pipe.evalsha(self._shas["acquire"], 2, rate_key, f"{base}:lock", _num(now),
                             limit, 60, 1, checked)
                pipe.lindex(rate_key, limit - 1)

        try:
            replies = self._run(build)
        except StoreError:
            self._restore_pending(pending)
            raise
        try:
            if pending is not None:
                replies = replies[1:]
            state, seconds, secret = replies[0]
            state = _text(state)
            if secret:  # the stored secret is another replica's: use it from now on
                self._secret = bytes(secret)
            if state == "locked":
                return Admission(locked_for=float(seconds))
            interval = float(seconds) if state == "interval" else None
            rate = None
            if limit is not None and not replies[1]:
                oldest = float(replies[2]) if replies[2] is not None else now
                rate = max(0.0, oldest + 60 - now)
        except self._garbled as exc:
            raise self._garbled_reply(exc) from exc
        return Admission(rate_retry=rate, interval_retry=interval)

    def observe(self, model: str, client: str, now: float, rules: ClientRules,
                policy: Policy, call_hash: str, query: Query | None,
                client_tag: int) -> Observation:
        """One script call for the repeats, the suspicion and the first
        :data:`ROWS_PER_SCRIPT` fingerprints; one more per further slice of a large batch
        (the script costs about 0.3 ms a row on the server, which serves nobody else
        meanwhile: one call of thousands of rows would hold every replica's calls past
        their timeout)."""
        namespace = _namespace(model)
        base = f"{namespace}:{client}"
        fingerprints = None if query is None else query.fingerprints()
        counting = bool(rules.max_repeats and call_hash)
        head: list[Any] = [_num(now), _num(policy.near_duplicate_ttl),
                           policy.near_duplicate_max_fingerprints, WAYS, client_tag & _TAG,
                           _num(rules.session_timeout)]
        rows = min(ROWS_PER_SCRIPT, max(1, HASHES_PER_SCRIPT // policy.near_duplicate_hashes))
        slices = [(None, None)] if fingerprints is None else [
            (fingerprints[0][i:i + rows], fingerprints[1][i:i + rows])
            for i in range(0, max(len(fingerprints[0]), 1), rows)]
        repeats, suspect, matches = 0, "", []
        for k, (hashes, contents) in enumerate(slices):
            keys = [f"{base}:rep:{call_hash}", f"{base}:suspect", f"{namespace}:fp:serial"]
            args: list[Any] = [head[0], _num(rules.repeat_window) if counting and not k
                               else "0", *head[1:]]
            sizes = []
            if hashes is not None:
                buckets = _buckets(policy)
                args.append(len(hashes))
                for row, content in zip(hashes, contents):
                    row = row[row != 0]
                    sizes.append(len(row))
                    args += [int(content) & _TAG, len(row), *row.tolist()]
                    keys += [f"{namespace}:fp:{int(b)}" for b in (row % np.uint32(buckets))]
            else:
                args.append(0)
            reply = self._run(lambda pipe: pipe.evalsha(self._shas["observe"], len(keys),
                                                        *keys, *args))[0]
            try:
                if not k:
                    repeats, suspect = int(reply[0]), _text(reply[1])
                matches += [Match(int(reply[2 + 2 * i]), size, bool(reply[3 + 2 * i]))
                            for i, size in enumerate(sizes)]
                suspect_for = float(suspect) if suspect else None
            except self._garbled as exc:
                raise self._garbled_reply(exc) from exc
        return Observation(repeats=repeats if counting else 0, matches=matches,
                           suspect_for=suspect_for)

    def record_failure(self, model: str, client: str, now: float, rules: ClientRules) -> None:
        if not rules.max_failed_attempts:
            return
        base = f"{_namespace(model)}:{client}"
        with self._lock:
            if len(self._pending_keys) >= 2 * PENDING_FAILURES:
                del self._pending_keys[:2], self._pending_failures[:_FAILURE_ARGS]
            # a token per failure: re-sent after a lost reply, it still counts once
            self._pending_keys += [f"{base}:failed", f"{base}:lock"]
            self._pending_failures += [os.urandom(8).hex(), _num(now),
                                       rules.max_failed_attempts, _num(rules.failure_window),
                                       _num(rules.session_timeout)]

    def mark_suspect(self, model: str, client: str, now: float, until: float) -> None:
        with self._lock:
            self._pending_suspects[0].append(f"{_namespace(model)}:{client}:suspect")
            self._pending_suspects[1].extend([_num(until), _num(until - now)])

    def flush(self) -> None:
        pending = self._take_pending()
        if pending is None:
            return
        try:
            self._run(lambda pipe: pipe.evalsha(self._shas["apply"], len(pending[0]),
                                                *pending[0], *pending[1]))
        except StoreError:
            self._restore_pending(pending)
            raise

    def _take_pending(self) -> tuple[list[str], list[Any]] | None:
        with self._lock:
            if not self._pending_keys and not self._pending_suspects[0]:
                return None
            keys = self._pending_keys + self._pending_suspects[0]
            suspects = self._pending_suspects[1]
            args = [len(self._pending_keys) // 2, *self._pending_failures]
            args += suspects  # (until, seconds) pairs
            self._pending_keys, self._pending_failures = [], []
            self._pending_suspects = ([], [])
        return keys, args

    def _restore_pending(self, pending: tuple[list[str], list[Any]] | None) -> None:
        """Keep what could not be sent for the next round trip (bounded)."""
        if pending is None:
            return
        keys, args = pending
        nf = int(args[0])
        with self._lock:
            # older than what was buffered since: the newest of them that fit
            kept = max(0, min(nf, PENDING_FAILURES - len(self._pending_keys) // 2))
            self._pending_keys[:0] = keys[2 * (nf - kept):2 * nf]
            self._pending_failures[:0] = args[1 + _FAILURE_ARGS * (nf - kept):
                                              1 + _FAILURE_ARGS * nf]
            if len(self._pending_suspects[0]) < 1024:
                self._pending_suspects[0][:0] = keys[2 * nf:]
                self._pending_suspects[1][:0] = args[1 + _FAILURE_ARGS * nf:]

    def close(self) -> None:
        self.client.close()


@lru_cache(maxsize=256)
def _namespace(model: str) -> str:
    """The key prefix of ``model``'s state: ``aimsec:<name>``, or ``aimsec:#<hash>`` for a
    name longer than :data:`_NAME_BYTES` or one UTF-8 cannot encode (a lone surrogate),
    so keys stay short and every name has one."""
    try:
        encoded = model.encode("utf-8")
    except UnicodeEncodeError:
        encoded = b""
    if encoded and len(encoded) <= _NAME_BYTES:
        return f"aimsec:{model}"
    digest = hashlib.sha256(model.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"aimsec:#{digest}"


def _buckets(policy: Policy) -> int:
    """Bucket lists for the model: room for the capped number of fingerprints' entries
    (a fixed key count, so Redis memory stays bounded whatever the traffic)."""
    entries = policy.near_duplicate_max_fingerprints * policy.near_duplicate_hashes
    return 1 << max(4, math.ceil(math.log2(entries / WAYS)))


def _num(seconds: Any) -> str:
    """A time or duration as the scripts read it (``tonumber``): a clock may read numpy
    scalars, whose repr (``np.float64(1.7e9)``) is not a number to Lua."""
    return repr(float(seconds))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
