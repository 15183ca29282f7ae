"""The monitor: per-client decisions of one guarded model, made through its store.

``Guard.call`` asks it three things, in the pipeline's order:

1. :meth:`Monitor.admit` — before the input is read: lockout, minimum interval, quota;
2. :meth:`Monitor.check` — after validation: exact repeats, near-duplicate fingerprints
   (per client and across all clients), a standing extraction suspicion;
3. :meth:`Monitor.learn` — after the model answered: the extraction statistics, which
   need the predicted class and so judge the client's next calls;

and tells it :meth:`Monitor.refused` for every refused call (a failed attempt) and
:meth:`Monitor.seen` for every call (the counters behind ``request_analysis``).

Each check yields :class:`~aimsec_core.verdict.Finding` objects named after it
(``rate_limit``, ``min_interval``, ``lockout``, ``repeat``, ``near_duplicate``,
``extraction``, ``store_unavailable``); the guard turns them into a refusal (enforce) or a
record (monitor). For admission findings ``score`` is the ``retry_after`` in seconds.

When the store fails (Redis unreachable or slower than ``store_timeout``) the monitor
keeps answering: ``fail_open`` serves the call on this process's own memory store with an
advisory ``store_unavailable`` finding, ``fail_closed`` refuses it; it tries the store
again every ``store_retry`` seconds and resumes the shared state as soon as it answers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, TypeVar

import numpy as np

from ..arrays import to_host
from ..context import ANONYMOUS
from ..errors import ConfigurationError
from ..forks import renew_after_fork
from ..verdict import Finding
from .analysis import HORIZON_MINUTES, RequestStats
from .extraction import ExtractionTracker
from .fingerprint import FingerprintSettings, Fingerprinter, Query
from . import kernels
from .index import Match
from .memory import MemoryStore
from .outputs import predicted_classes
from .policy import FAIL_OPEN, ClientRules, Policy
from .store import ADMITTED, Admission, Store, StoreError, client_key

T = TypeVar("T")
_READABLE_ID = 200  #: characters of a client id kept for reports
_KEYS_KEPT = 4096  #: client keys remembered (ids up to _READABLE_ID characters)
_FLOAT64 = np.dtype(np.float64)


@dataclass(slots=True)
class Visit:
    """One call as the monitor follows it from admission to learning."""

    client: str
    key: str
    tag: int  #: the client's tag in the fingerprint index (from its key)
    rules: ClientRules
    now: float
    watched: bool
    store: Store
    findings: list[Finding] = field(default_factory=list)
    samples: np.ndarray | None = None
    outage: bool = False
    #: a near-duplicate finding matched a query this client sent itself (not only others')
    own_near_duplicate: bool = False


#: Refusals that count towards a lockout: input outside the policy (non-finite, out of
#: range, oversized, structurally odd), a rate limit ignored, and query-stream attacks.
#: Not malformed input (a client's bug: format, shape, dtype, null, empty), not exact
#: repeats or a too-short interval (retries), and not a detector's refusal (those come at
#: the calibrated false-positive rate, so ordinary clients would collect them). A
#: near-duplicate counts only when it matched the client's own earlier query: one that
#: matched only other clients' queries may be a bystander sending a popular input that an
#: attacker stored perturbed copies of (to lock it out); the call is refused all the same.
FAILED_ATTEMPT_CHECKS = frozenset({"finite", "range", "size", "max_gradient", "min_sparsity",
                                   "rate_limit", "near_duplicate", "extraction"})


class Monitor:
    """Per-client monitoring of the model called ``model``.

    ``store`` is shared by every replica when it is Redis; ``clock`` gives seconds (the
    guard's clock, injectable in tests).
    """

    def __init__(self, model: str, policy: Policy, store: Store,
                 clock: Callable[[], float]) -> None:
        kernels.enabled()  # AIMSEC_JIT is read when the guard is built, not on a call
        self.model = model
        self.policy = policy
        self.store = store
        self.clock = clock
        self.local = store if isinstance(store, MemoryStore) else MemoryStore()
        self.stats = RequestStats()
        self.extraction = ExtractionTracker(
            window=policy.extraction_window, min_queries=policy.extraction_min_queries,
            test_every=policy.extraction_test_every,
            delta=policy.extraction_delta, set_size=policy.extraction_set_size,
            clients=policy.extraction_clients)
        self._fingerprinters: dict[bytes, Fingerprinter] = {}
        self._local_fingerprinter: Fingerprinter | None = None  #: the local store's
        self._keys: dict[str, tuple[str, int]] = {}  #: client id -> key and tag
        self._down_until = -float("inf")
        self._down_reason = ""
        self._lock = threading.Lock()
        renew_after_fork(self)  # a child forked while a thread held it
        #: checks that record without refusing (the outage finding under fail_open)
        self.advisory_checks = frozenset(
            {"store_unavailable"} if policy.store_failure == FAIL_OPEN else ())
        self._idle = not any(r.max_requests_per_minute or r.min_request_interval > 0
                             or r.watch_anonymous for r in policy.all_rules)

    def __repr__(self) -> str:
        return f"Monitor({self.model!r}, store={self.store!r})"

    # -- the store, with its failure policy --------------------------------------------

    def _use(self, now: float, visit: Visit | None, op: Callable[[Store], T]) -> T:
        """``op`` on the shared store, else on the local one with an outage finding."""
        store = self.store
        if store is not self.local and (visit is None or not visit.outage):
            # or the retry is further off than store_retry: set by a clock since set back
            if now >= self._down_until or self._down_until - now > self.policy.store_retry:
                try:
                    result = op(store)
                except StoreError as exc:
                    with self._lock:
                        self._down_until = now + self.policy.store_retry
                        self._down_reason = str(exc)[:200]
                else:
                    self._down_until = -float("inf")
                    return result
            if visit is not None:
                self._outage(visit)
            store = self.local
        elif visit is not None and visit.outage:
            store = self.local
        return op(store)

    def _outage(self, visit: Visit) -> None:
        visit.outage = True
        visit.store = self.local
        closed = self.policy.store_failure != FAIL_OPEN
        visit.findings.append(Finding(
            "store_unavailable",
            f"the state store {self.store!r} failed ({self._down_reason}; each command "
            f"waits at most {self.policy.store_timeout * 1000:.0f} ms, store_timeout); "
            + ("the call is refused (store_failure='fail_closed'); expected a reachable "
               "store" if closed else
               "served on this process's own monitoring state (store_failure='fail_open')"),
            expected=self.policy.store_failure, received="unreachable"))

    # -- 1. admission ------------------------------------------------------------------

    def admit(self, client: str, tier: str | None = None) -> Visit | None:
        """Lockout, minimum interval and quota for one call of ``client``.

        Returns ``None`` when the policy watches nothing for this call (an anonymous call
        under the default policy): the guard then skips monitoring altogether.
        """
        anonymous = client == ANONYMOUS
        if anonymous and self._idle:
            return None
        rules = self.policy.rules if tier is None else self.policy.rules_for(tier)
        watched = not anonymous or rules.watch_anonymous
        if not watched and not (rules.max_requests_per_minute is not None
                                or rules.min_request_interval > 0):
            return None
        now = self.clock()
        key, tag = self._keys.get(client) or self._key(client)
        store = self.store
        visit = Visit(client if len(client) <= _READABLE_ID else _readable(client, key),
                      key, tag, rules, now, watched, store)  # (the test inline: every call)
        lockout = watched and rules.max_failed_attempts > 0
        if store is self.local:  # this process's memory: nothing to fall back on
            admission = store.admit(self.model, key, now, rules, lockout=lockout)
        else:
            admission = self._use(now, visit, lambda s: s.admit(self.model, key, now, rules,
                                                                lockout=lockout))
        if admission is not ADMITTED and (admission.locked_for is not None
                                          or admission.rate_retry is not None
                                          or admission.interval_retry is not None):
            visit.findings += _admission_findings(visit.client, rules, admission)
        return visit

    def _key(self, client: str) -> tuple[str, int]:
        """:func:`client_key` and the client's index tag (its first 32 bits), remembered
        for a bounded number of short ids."""
        key = client_key(client)
        found = key, int(key[:8], 16)
        if len(client) <= _READABLE_ID:
            if len(self._keys) >= _KEYS_KEPT:
                self._keys.clear()
            self._keys[client] = found
        return found

    # -- 2. query checks ---------------------------------------------------------------

    def check(self, visit: Visit, arrays: Collection[Any], batch: int, input_hash: str
              ) -> list[Finding]:
        """Repeat, near-duplicate and standing-suspicion findings for validated input.

        ``arrays`` are the call's inputs (any array library), ``batch`` their batch size.
        """
        if not visit.watched:
            return []
        rules, policy = visit.rules, self.policy
        samples = None
        if rules.near_duplicate or rules.extraction:
            if len(arrays) == 1:  # one input: as a (batch, features) float64 array already?
                for samples in arrays:
                    if not (type(samples) is np.ndarray and samples.dtype is _FLOAT64
                            and samples.ndim == 2 and samples.shape[0] == batch and batch):
                        samples = _samples(arrays, batch)
            else:
                samples = _samples(arrays, batch)
            visit.samples = samples
        fingerprinting = rules.near_duplicate and samples is not None
        local = self.local
        if visit.store is self.store is local:  # nothing to fall back on
            query = (tuple.__new__(Query, (self._local_fingerprinter
                                           or self._fingerprinter(local), samples))
                     if fingerprinting else None)  # tuple.__new__: Query's is a Python call
            observation = local.observe(self.model, visit.key, visit.now, rules, policy,
                                        input_hash, query, visit.tag)
        else:
            def observe(store: Store) -> Any:
                # fingerprints and content tags keyed by the secret of the store that answers
                query = Query(self._fingerprinter(store), samples) if fingerprinting else None
                return store.observe(self.model, visit.key, visit.now, rules, policy,
                                     input_hash, query, visit.tag)

            observation = self._use(visit.now, visit, observe)
        repeats, matches, suspect_for = observation
        findings = []
        if rules.max_repeats and repeats >= rules.max_repeats:
            findings.append(Finding(
                "repeat", f"client {visit.client!r} sent this exact input "
                f"{repeats + 1} times within {rules.repeat_window:g} s; expected "
                f"at most {rules.max_repeats}",
                expected=rules.max_repeats, received=repeats + 1))
        if len(matches) == 1:  # one sample (a served call): the loop below, unrolled
            shared, size, _ = matches[0]
            if size and shared <= rules.suspicious_pattern_threshold * size:
                matches = ()  # fingerprinted, no near-duplicate: nothing to count
        if matches:
            self._match_findings(visit, matches, fingerprinting, findings)
        if suspect_for is not None:
            findings.append(Finding(
                "extraction", f"client {visit.client!r} is suspected of model extraction for "
                f"another {suspect_for:.0f} s: the distances between its queries "
                f"stopped looking natural (Shapiro-Wilk W below {policy.extraction_delta:g})",
                expected=policy.extraction_delta, score=suspect_for))
        return findings

    def _match_findings(self, visit: Visit, matches: Sequence[Match], fingerprinting: bool,
                        findings: list[Finding]) -> None:
        """Count the samples too flat to fingerprint, and add the near-duplicate finding
        of the samples whose best match shares more than the threshold to ``findings``."""
        threshold = visit.rules.suspicious_pattern_threshold
        near = []
        flat = 0
        for i, match in enumerate(matches):
            if not match.size:
                flat += 1
            elif match.shared > threshold * match.size:
                near.append((i, match))
        if flat and fingerprinting:
            self.stats.flat(visit.now, flat)
        if near:
            findings.append(self._near_duplicate(visit, near))

    def _near_duplicate(self, visit: Visit, near: list[tuple[int, Match]]) -> Finding:
        """The finding for the samples ``near`` (index, best match) that matched a stored
        query; counted in ``request_analysis``."""
        rules, policy = visit.rules, self.policy
        best = max(near, key=lambda im: im[1].share)[1]
        samples = [i for i, _ in near]
        same = best.same_client
        visit.own_near_duplicate = any(m.same_client for _, m in near)
        self.stats.match(visit.now, visit.client, samples, best.share, same)
        return Finding(
            "near_duplicate",
            f"client {visit.client!r}: sample{'s' if len(samples) > 1 else ''} "
            f"{', '.join(map(str, samples[:5]))}{' …' if len(samples) > 5 else ''} "
            f"share up to {best.shared} of {best.size} fingerprint hashes with a query "
            f"{'this client' if same else 'another client'} sent within "
            f"{policy.near_duplicate_ttl:g} s; expected at most "
            f"{rules.suspicious_pattern_threshold:.0%} (a black-box attack's "
            "queries are small steps from each other)",
            samples=tuple(samples), expected=rules.suspicious_pattern_threshold,
            received=round(best.share, 3), score=best.share)

    def _fingerprinter(self, store: Store) -> Fingerprinter:
        local = self._local_fingerprinter
        if local is not None and store is self.local:
            return local
        secret = store.secret()
        found = self._fingerprinters.get(secret)
        if found is None:
            p = self.policy
            found = Fingerprinter(FingerprintSettings(
                p.near_duplicate_window, p.near_duplicate_step, p.near_duplicate_unit,
                p.near_duplicate_hashes), secret)
            if len(self._fingerprinters) > 4:
                self._fingerprinters.clear()
            self._fingerprinters[secret] = found
        if store is self.local:  # its secret never changes: skip the lookup next time
            self._local_fingerprinter = found
        return found

    # -- 3. after the call -------------------------------------------------------------

    def learn(self, visit: Visit, output: Any,
              native: Callable[[Any], Any] | None = None) -> None:
        """Extraction statistics from the model's answer (admitted calls only); ``native``
        reads outputs no array library does (see :func:`.outputs.predicted_classes`)."""
        if not (visit.watched and visit.rules.extraction) or visit.samples is None:
            return
        classes = predicted_classes(output, len(visit.samples), native)
        if classes is None:
            return
        w = self.extraction.observe(visit.key, visit.samples, classes)
        if w is not None:
            until = visit.now + visit.rules.session_timeout
            self._use(visit.now, None,
                      lambda s: s.mark_suspect(self.model, visit.key, visit.now, until))
            if visit.store is self.local and self.store is not self.local:
                self.local.mark_suspect(self.model, visit.key, visit.now, until)
            self.stats.suspect(visit.now, visit.client, "extraction", until,
                               f"Shapiro-Wilk W {w:.3f} < {self.policy.extraction_delta:g} "
                               "over the distances between its queries")

    def refused(self, visit: Visit | None, checks: tuple[str, ...]) -> None:
        """Count a refused call as a failed attempt of its client when one of ``checks``
        is :data:`FAILED_ATTEMPT_CHECKS` (lockout refusals are the lockout itself and do
        not extend it; a near-duplicate only when it matched the client's own query)."""
        if visit is None or not visit.watched or "lockout" in checks:
            return
        failing = set(FAILED_ATTEMPT_CHECKS.intersection(checks))
        if not visit.own_near_duplicate:
            failing.discard("near_duplicate")
        if not failing:
            return
        rules = visit.rules
        if not rules.max_failed_attempts:
            return
        # the shared store sends it with its next round trip, also when this call was
        # served on local state in an outage (else the lockout it earns would be
        # forgotten once the store answers); remember it here too, so an outage in
        # between cannot hide it
        self.store.record_failure(self.model, visit.key, visit.now, rules)
        if self.store is not self.local:
            self.local.record_failure(self.model, visit.key, visit.now, rules)

    def seen(self, client: str, input_hash: str, outcome: str, checks: tuple[str, ...],
             visit: Visit | None) -> None:
        """Count one finished call (every call, watched or not) for ``request_analysis``."""
        if visit is not None:
            now, client = visit.now, visit.client
        else:
            now, client = self.clock(), _readable(client)
        self.stats.record(now, client, input_hash, outcome == "rejected", checks)
        if visit is not None and "lockout" in checks:
            for finding in visit.findings:
                if finding.check == "lockout" and finding.score:
                    self.stats.suspect(now, visit.client, "lockout", now + finding.score,
                                       finding.reason)

    # -- public helpers ----------------------------------------------------------------

    def admit_client(self, client: str, tier: str | None = None) -> list[Finding]:
        """Admission for one call of ``client`` with no model behind it: the findings
        (empty when admitted). Counts the call against the client's quota; a refused
        call counts as a failed attempt."""
        visit = self.admit(client, tier)
        if visit is None:
            return []
        refusing = [f for f in visit.findings if f.check not in self.advisory_checks]
        if refusing:
            self.refused(visit, tuple(f.check for f in refusing))
        return visit.findings

    def note(self, client: str, input_hash: str, tier: str | None = None) -> None:
        """Count a request that was not screened here (the original ``log_request``):
        towards the client's repeats and in ``request_analysis``, deciding nothing."""
        rules = self.policy.rules_for(tier)
        now = self.clock()
        if input_hash and (client != ANONYMOUS or rules.watch_anonymous) and rules.max_repeats:
            key = client_key(client)
            self._use(now, None, lambda s: s.observe(self.model, key, now, rules, self.policy,
                                                     input_hash, None, 0))
        self.stats.record(now, _readable(client), input_hash, False, ())

    def request_analysis(self, window_minutes: float = 60) -> dict[str, Any]:
        """Totals, unique inputs, rates and top clients, repeated inputs, near-duplicate
        matches and active suspicions over the last ``window_minutes``.

        The counters keep the last 24 hours in whole minutes: a longer window is read as
        24 h, a shorter one than a minute as one minute, and the result's
        ``window_minutes`` (a float: the span its rates are per) says so. Raises
        :class:`ConfigurationError` unless ``window_minutes`` is a positive finite number.
        """
        if isinstance(window_minutes, int) and not isinstance(window_minutes, bool) \
                and window_minutes > HORIZON_MINUTES:  # one beyond any float too
            window_minutes = HORIZON_MINUTES
        if isinstance(window_minutes, bool) or not isinstance(window_minutes, Real) \
                or not math.isfinite(window_minutes) or window_minutes <= 0:
            raise ConfigurationError(f"window_minutes must be a positive number of minutes; "
                                     f"received {window_minutes!r:.80}")
        # a float (np.float16's minutes overflow as seconds; a Fraction is no clock
        # time), at least a minute: the counters resolve minutes, and a shorter window
        # read its whole minute's calls as a rate of up to 10^10 a minute
        window_minutes = min(max(float(window_minutes), 1.0), float(HORIZON_MINUTES))
        try:
            self.store.flush()
        except StoreError:
            pass
        return self.stats.report(self.clock(), window_minutes,
                                 self.policy.rules.max_repeats)


def _readable(client: str, key: str | None = None) -> str:
    """``client`` as findings and ``request_analysis`` name it: as it is up to
    :data:`_READABLE_ID` characters; a longer id by its start, its length and its key's
    (``key``, else computed) first 12 hex digits, so that two ids sharing their first
    characters stay two clients (cut alone, they read as one, and as an id that is the
    cut itself)."""
    if len(client) <= _READABLE_ID:
        return client
    key = client_key(client) if key is None else key
    return f"{client[:_READABLE_ID - 48]}...[{len(client)} chars, key {key[:12]}]"


def _admission_findings(client: str, rules: ClientRules, admission: Admission
                        ) -> list[Finding]:
    """The findings of a call that admission turned down (one per reason)."""
    who = f"client {client!r}"
    findings = []
    if admission.locked_for is not None:
        findings.append(Finding(
            "lockout", f"{who} is locked out for another {admission.locked_for:.0f} s "
            f"after {rules.max_failed_attempts} refused calls within "
            f"{rules.failure_window:g} s; expected no call before then",
            expected=rules.max_failed_attempts, score=admission.locked_for))
    if admission.rate_retry is not None:
        findings.append(Finding(
            "rate_limit", f"{who} exceeded {rules.max_requests_per_minute} calls per "
            f"minute; retry in {admission.rate_retry:.1f} s",
            expected=rules.max_requests_per_minute, score=admission.rate_retry))
    if admission.interval_retry is not None:
        findings.append(Finding(
            "min_interval", f"{who} called again within {rules.min_request_interval:g} s "
            f"(min_request_interval); retry in {admission.interval_retry:.2f} s",
            expected=rules.min_request_interval, score=admission.interval_retry))
    return findings


def _samples(arrays: Collection[Any], batch: int) -> np.ndarray | None:
    """The call's inputs as one float64 row per sample (several inputs concatenated)."""
    rows = []
    for array in arrays:
        host = array if type(array) is np.ndarray else np.asarray(to_host(array))
        if host.dtype.kind not in "biuf":
            return None
        n = batch if batch and host.size % batch == 0 and host.ndim else 1
        rows.append(host.reshape(n, -1))
    if not rows:
        return None
    out = rows[0]
    if len(rows) > 1:
        if len({r.shape[0] for r in rows}) != 1:
            return None
        out = np.concatenate(rows, axis=1)
    return out if out.dtype == np.float64 else out.astype(np.float64)
