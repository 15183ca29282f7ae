"""The default security sinks of a guard: metrics, incidents and alerts, from settings.

``guard(model)`` calls :func:`security_sinks` with nothing explicit, so the environment
decides (see :mod:`.settings`): incidents in ``<SECURITY_LOG_PATH>/incidents.sqlite3``,
alerts by SMTP when ``ALERT_SMTP_SERVER`` is set, by webhook when ``ALERT_WEBHOOK_URL``
is, else as ``.eml`` files in ``<SECURITY_LOG_PATH>/outbox``. Guards built with the same
settings share one dispatcher (one background thread, one database connection).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..config import OUTBOX_FOLDER, log_folder
from ..errors import ConfigurationError
from ..incidents.sink import IncidentSink
from ..incidents.store import IncidentStore, check_writable_place, database_path
from ..metrics import MetricsSink, NullMetrics, metrics_for
from ..sinks import Sink
from .channel import Channel
from .dispatcher import Dispatcher
from .grouping import Grouper
from .outbox import OutboxChannel
from .settings import GroupingPolicy, SmtpSettings, WebhookSettings, enabled, redis_url
from .smtp import SmtpChannel
from .webhook import WebhookChannel

IncidentsOption = bool | str | Path | IncidentStore | None
AlertsOption = bool | Channel | Sequence[Channel] | None

_shared: weakref.WeakValueDictionary[Hashable, Dispatcher] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def _new_lock_after_fork() -> None:
    # a thread of the parent may have held it at the fork; that thread does not exist here
    global _shared_lock
    _shared_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


def default_locations() -> dict[str, Path]:
    """Where incidents and unsent alerts land with the current settings:
    ``{"incidents": <sqlite file>, "outbox": <folder of .eml files>}``."""
    return {"incidents": database_path(), "outbox": (log_folder() / OUTBOX_FOLDER).resolve()}


def security_sinks(*, incidents: IncidentsOption = None, alerts: AlertsOption = None,
                   metrics: bool | None = None, registry: Any = None,
                   policy: GroupingPolicy | None = None,
                   clock: Callable[[], float] = time.time) -> list[Sink]:
    """The sinks that follow the audit log in a guard.

    ``incidents``: ``None`` (``AIMSEC_INCIDENTS``, default on), ``False``, ``True``, a
    database path or an :class:`~aimsec_core.incidents.IncidentStore`.
    ``alerts``: ``None`` (``AIMSEC_ALERTS``, default on), ``False``, ``True`` (channels
    from the environment, else the outbox), or channel objects.
    ``metrics``: ``None`` (``AIMSEC_METRICS``, default on when prometheus_client is
    installed); ``registry`` a prometheus ``CollectorRegistry``.
    ``policy``: the grouping timers and alert floor (default
    :meth:`GroupingPolicy.resolve`, i.e. the environment). A demo that wants its medium
    findings alerted passes ``GroupingPolicy.resolve(floor="medium")``.
    """
    policy = policy or GroupingPolicy.resolve()
    sinks: list[Sink] = []
    counters = metrics_for(registry) if enabled(metrics, "AIMSEC_METRICS") else NullMetrics()
    if not isinstance(counters, NullMetrics):
        sinks.append(MetricsSink(counters))
    store = _store(incidents)
    channels, alerting = _channels(alerts)
    if store is None and not alerting:
        return sinks
    key: Hashable = (str(store.path) if store is not None else None,
                     _alerts_key(alerts, channels) if alerting else None,
                     policy, id(counters), id(clock))
    with _shared_lock:
        dispatcher = _shared.get(key)
        if dispatcher is None:
            grouper = Grouper(policy, _group_state(policy), clock=clock) \
                if alerting else None
            dispatcher = Dispatcher(store, grouper, channels, fallback=_outbox(channels),
                                    clock=clock, metrics=counters)
            _shared[key] = dispatcher
    sinks.append(IncidentSink(dispatcher))
    return sinks


def _store(option: IncidentsOption) -> IncidentStore | None:
    if isinstance(option, IncidentStore):
        return option
    if isinstance(option, (str, Path)):
        return _checked(IncidentStore(option))
    if option is None or isinstance(option, bool):
        return _checked(IncidentStore()) if enabled(option, "AIMSEC_INCIDENTS") else None
    raise ConfigurationError(f"incidents= must be True, False, a database path or an "
                             f"IncidentStore; received {type(option).__name__}")


def _checked(store: IncidentStore) -> IncidentStore:
    """``store``, once its path can hold a database (ConfigurationError otherwise)."""
    check_writable_place(store.path)
    return store


def _channels(option: AlertsOption) -> tuple[list[Channel], bool]:
    if option is None or isinstance(option, bool):
        if not enabled(option, "AIMSEC_ALERTS"):
            return [], False
        found: list[Channel] = []
        smtp = SmtpSettings.from_env()
        if smtp is not None:
            found.append(SmtpChannel(smtp))
        hook = WebhookSettings.from_env()
        if hook is not None:
            found.append(WebhookChannel(hook))
        return found, True
    if isinstance(option, Channel):
        chosen = [option]
    elif isinstance(option, (str, bytes)) or not isinstance(option, Iterable):
        raise ConfigurationError(
            f"alerts= takes True, False, a channel or a list of channels (objects with name "
            f"and send(alert)); received {type(option).__name__}")
    else:
        chosen = list(option)
    for channel in chosen:
        if not isinstance(channel, Channel):
            raise ConfigurationError(
                f"alerts= takes True, False or channels (objects with name and send(alert)); "
                f"received {type(channel).__name__}")
    return chosen, True


def _alerts_key(option: AlertsOption, channels: list[Channel]) -> Hashable:
    if option is None or isinstance(option, bool):  # from the environment
        return ("env", SmtpSettings.from_env(), WebhookSettings.from_env(), redis_url(),
                str(default_locations()["outbox"]))
    return ("explicit", tuple(id(c) for c in channels))


def _outbox(channels: list[Channel]) -> OutboxChannel:
    smtp = next((c.settings for c in channels if isinstance(c, SmtpChannel)), None)
    if smtp is None:
        return OutboxChannel()
    return OutboxChannel(sender=smtp.sender, recipients=smtp.recipients)


def _group_state(policy: GroupingPolicy) -> Any:
    url = redis_url()
    if url is None:
        return None
    from .state import RedisGroupState

    # a group is forgotten once quiet for its repeat interval, never less than its group
    # interval (grouping.decide): kept twice that in Redis
    return RedisGroupState.from_url(url, ttl_s=2 * max(policy.repeat_interval,
                                                       policy.group_interval))
