"""Alert grouping with Alertmanager's semantics: which group sends what, and when.

Occurrences are grouped by (model, threat, client), with at most ``policy.max_clients``
clients of one (model, threat) in groups of their own per ``repeat_interval``: further
clients share one roll-up group (client :data:`ROLLUP`). A new group waits ``group_wait`` to
collect more, then sends one message with its count. Later occurrences are duplicates: they
are counted, not sent, until the group has been quiet for ``group_interval`` (its follow-up
then carries what was suppressed), or until ``repeat_interval`` has passed while it keeps
firing (a reminder). A severity above the last message's is sent at once. A group quiet for
``repeat_interval`` after its last message is forgotten. Occurrences below the alert floor
(``policy.floor``) form no group: they are incidents, not alerts.

Reference: Prometheus Alertmanager's ``group_by``, ``group_wait``, ``group_interval`` and
``repeat_interval`` (https://prometheus.io/docs/alerting/latest/configuration/).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..incidents.model import ROLLUP_CLIENT, Occurrence
from ..severity import SEVERITIES, rank
from .message import Alert
from .settings import GroupingPolicy
from .state import (DELETE, Action, CommitUnknown, Group, GroupRecord, GroupState,
                    MemoryGroupState)

log = logging.getLogger("aimsec.alerts")
#: The client of a roll-up group: occurrences from clients beyond ``max_clients``. The
#: incident store names its rolled-up incidents the same way, so a roll-up group's alert
#: carries the rolled-up incident's id when both caps apply.
ROLLUP = ROLLUP_CLIENT
#: Shared groups remembered as fed by this replica (the oldest are forgotten first).
_MAX_FED = 10_000


def decide(record: GroupRecord, now: float, policy: GroupingPolicy, *, force: bool = False
           ) -> tuple[str | None, Action]:
    """The policy, in one place: the message ``record``'s group sends at ``now`` (a kind
    from :data:`~aimsec_core.alerts.message.KINDS`, or ``None``) and the record's new
    state. ``force`` sends whatever is pending (shutdown).

    A clock that went back (an NTP step, a corrected RTC) would leave the record's times in
    the future and every timer waiting out the jump on top of its interval; times ahead of
    ``now`` are brought back to ``now`` instead, so a timer waits at most its interval."""
    ahead = now < max(record.created, record.last_seen, record.sent_at)
    if ahead:
        record = replace(record, created=min(record.created, now),
                         first_seen=min(record.first_seen, now),
                         last_seen=min(record.last_seen, now),
                         sent_at=min(record.sent_at, now))
    quiet_since = max(record.last_seen, record.sent_at)
    # group_interval is the least time between two messages (escalations aside): a repeat
    # interval below it reminded, and forgot, a group every round (Alertmanager's
    # reminders also wait for the group's interval)
    repeat = max(policy.repeat_interval, policy.group_interval)
    kind: str | None = None
    if record.sent_at < 0:
        if force or now >= record.created + policy.group_wait:
            kind = "new"
    elif record.pending > 0:
        if record.rank > record.sent_rank:
            kind = "escalation"
        elif force:
            kind = "flush"
        elif now >= record.sent_at + repeat:
            kind = "reminder"
        elif now >= record.sent_at + policy.group_interval \
                and now >= record.last_seen + policy.group_interval:
            kind = "update"
    elif now >= quiet_since + repeat:
        return None, DELETE
    if kind is None:
        return None, record if ahead else None
    return kind, replace(record, pending=0, sent_at=now, sent_rank=record.rank,
                         messages=record.messages + 1)


class Grouper:
    """Feeds occurrences into groups and turns due groups into :class:`Alert`\\ s.

    ``state`` is shared by replicas when it is a
    :class:`~aimsec_core.alerts.state.RedisGroupState`; if it fails, occurrences are
    grouped in this process instead (a replica may then send what another also sends:
    duplicates rather than silence), and the shared state is left alone for ``retry_s``
    seconds: a Redis that hangs costs one timeout per ``retry_s``, not one per group.
    A forced pass (a flush, the exit of a process) sends the shared groups this replica
    fed and has not seen sent since; the other replicas' groups keep their timers. A
    shared group that vanishes unsent (a Redis restarted empty or flushed) is grouped
    again in this process from what this replica fed it, and sent from here.
    """

    def __init__(self, policy: GroupingPolicy | None = None, state: GroupState | None = None,
                 *, clock: Callable[[], float] = time.time, retry_s: float = 5.0) -> None:
        self.policy = policy or GroupingPolicy.resolve()
        self.state: GroupState = state or MemoryGroupState()
        self._local = MemoryGroupState() if state is not None else None
        self.clock = clock
        self.retry_s = retry_s
        self._shared_retry_at = 0.0  #: time.monotonic() before which a failed state rests
        #: shared groups this replica fed and has not seen sent (what a forced pass sends),
        #: with what it fed them since: the occurrences a group lost with the shared state
        #: (a Redis restarted empty, flushed, evicting) are grouped here again
        self._fed: OrderedDict[Group, dict[str, Any]] = OrderedDict()
        self._floor = rank(self.policy.floor)
        #: (model, threat) -> clients with groups of their own -> when last seen
        self._own: dict[tuple[str, str], dict[str, float]] = {}
        #: when a state's failure was last logged with its traceback (one per minute)
        self._failure_logged: dict[int, float] = {}

    @property
    def idle(self) -> bool:
        """True when no group can become due without new occurrences (a shared state is
        never idle: other replicas feed it)."""
        return (isinstance(self.state, MemoryGroupState) and not self.state.ids()
                and (self._local is None or not self._local.ids()))

    def forget_local(self) -> None:
        """Drop the groups held in this process (a shared state is kept): a forked child
        calls it, so that it does not send the parent's groups a second time."""
        if isinstance(self.state, MemoryGroupState):
            self.state = MemoryGroupState()
        if self._local is not None:
            self._local = MemoryGroupState()
        self._own.clear()
        self._fed.clear()

    def observe(self, occurrence: Occurrence) -> None:
        """Count ``occurrence`` into its group (ignored below the alert floor)."""
        o = occurrence
        if rank(o.severity) < self._floor:
            return
        fields = dict(count=o.count, rank=rank(o.severity), first_seen=o.first_seen,
                      last_seen=o.last_seen, reason=o.evidence.reasons[0]
                      if o.evidence.reasons else "")
        key = self._group_of(o)
        if self._local is not None and self._shared_resting():
            self._local.add(key, **fields)  # type: ignore[arg-type]
            return
        try:
            self.state.add(key, **fields)  # type: ignore[arg-type]
        except Exception:
            if self._local is None:
                raise
            self._shared_failed()
            self._log_failure(self.state, "failed; grouping in this process")
            self._local.add(key, **fields)  # type: ignore[arg-type]
            return
        if self._local is not None:
            fed = self._fed.pop(key, None)
            self._fed[key] = fields if fed is None else dict(
                count=fed["count"] + o.count, rank=max(fed["rank"], fields["rank"]),
                first_seen=min(fed["first_seen"], o.first_seen),
                last_seen=max(fed["last_seen"], o.last_seen),
                reason=fields["reason"] or fed["reason"])
            while len(self._fed) > _MAX_FED:
                self._fed.popitem(last=False)

    def _shared_resting(self) -> bool:
        return time.monotonic() < self._shared_retry_at

    def _shared_failed(self) -> None:
        self._shared_retry_at = time.monotonic() + self.retry_s

    def _group_of(self, o: Occurrence) -> tuple[str, str, str]:
        """``o``'s group: its own, or the roll-up once ``max_clients`` other clients of its
        (model, threat) have groups of their own (counted in this process)."""
        cap = self.policy.max_clients
        if not cap:
            return o.key
        model, threat, client = o.key
        own = self._own.setdefault((model, threat), {})
        horizon = o.last_seen - self.policy.repeat_interval
        for known in [c for c, seen in own.items() if seen < horizon]:
            del own[known]
        if client in own or len(own) < cap:
            own[client] = max(own.get(client, o.last_seen), o.last_seen)
            return o.key
        return (model, threat, ROLLUP)

    def due(self, now: float | None = None, *, force: bool = False) -> list[Alert]:
        """Claim and return the messages due at ``now`` (default: the clock)."""
        now = self.clock() if now is None else now
        for own in self._own.values():  # a clock that went back: a capped client's slot
            for client, seen in own.items():  # frees repeat_interval from now, not from
                if seen > now:  # a time the clock only reaches again after the jump
                    own[client] = now
        alerts: list[Alert] = []
        for state in (self.state, self._local):
            if state is None:
                continue
            shared = state is self.state and self._local is not None
            if shared and self._shared_resting():
                continue
            try:
                ids = state.ids()
            except Exception:
                if shared:
                    self._shared_failed()
                self._log_failure(state, "failed to list groups")
                continue
            seen: set[Group] = set()  #: the shared groups read
            every = shared  #: every shared group was read

            def claim(record: GroupRecord, shared: bool = shared
                      ) -> tuple[Alert | None, Action]:
                if shared:
                    seen.add(record.group)
                    if record.pending == 0:  # sent since this replica fed it (by any)
                        self._fed.pop(record.group, None)
                return self._claim(record, now,
                                   force and (not shared or record.group in self._fed))

            for group_id in ids:
                if shared and self._shared_resting():
                    every = False
                    break
                try:
                    alert = state.transact(group_id, claim)
                except Exception as exc:
                    if shared:
                        self._shared_failed()
                        every = False
                    self._log_failure(state, "failed on a group")
                    # a claim sent whose answer was lost may be stored as sent: no replica
                    # would send it again, so send it (at worst twice, never lost)
                    alert = exc.result if isinstance(exc, CommitUnknown) else None
                    if alert is None:
                        continue
                if alert is not None:
                    alerts.append(alert)
                    if shared:
                        self._fed.pop((alert.model, alert.threat, alert.client), None)
            if every and self._local is not None:
                self._regroup_lost(seen)
        return alerts

    def _regroup_lost(self, seen: set[Group]) -> None:
        """Group here what this replica fed to shared groups that are gone unsent (the
        shared state lost them: a Redis restarted empty or flushed): every group was read
        (``seen``), and these were not. Sent from this process (by the pass under way),
        rather than never."""
        assert self._local is not None
        for group in [g for g in self._fed if g not in seen]:
            fed = self._fed.pop(group)
            log.warning("aimsec alert group %r was lost by %r before it was sent; "
                        "grouping it in this process", group, self.state)
            self._local.add(group, **fed)

    def _log_failure(self, state: GroupState, what: str) -> None:
        """Log a state's failure: with its traceback at most once a minute per state (an
        unreachable Redis fails every pass), in one line otherwise."""
        now = time.monotonic()
        last = self._failure_logged.get(id(state))
        detailed = last is None or now - last >= 60.0
        if detailed:
            self._failure_logged[id(state)] = now
        log.warning("aimsec alert state %r %s", state, what, exc_info=detailed)

    def _claim(self, record: GroupRecord, now: float, force: bool
               ) -> tuple[Alert | None, Action]:
        kind, action = decide(record, now, self.policy, force=force)
        if kind is None:
            return None, action
        first = record.sent_at < 0
        return Alert(kind=kind, model=record.model, threat=record.threat,
                     client=record.client, severity=SEVERITIES[record.rank],
                     count=record.total,
                     suppressed=record.pending - 1 if first else record.pending,
                     first_seen=record.first_seen, last_seen=record.last_seen, sent_at=now,
                     reasons=(record.reason,) if record.reason else ()), action
