"""Alerts to the security team, grouped and delivered off the predict path.

Channels (:class:`SmtpChannel`, :class:`WebhookChannel`, :class:`OutboxChannel` when nothing
is configured) send :class:`Alert`\\ s that a :class:`Grouper` releases with Alertmanager's
semantics; the :class:`Dispatcher`'s background thread stores incidents, groups, sends and
retries with backoff. :func:`security_sinks` builds the default set from the environment
(see :mod:`.settings` for every variable).
"""

from .channel import Backoff, Channel, DeliveryError
from .dispatcher import Dispatcher
from .grouping import Grouper
from .message import Alert
from .outbox import OutboxChannel
from .settings import GroupingPolicy, SmtpSettings, WebhookSettings
from .smtp import SmtpChannel
from .state import GroupState, MemoryGroupState, RedisGroupState
from .webhook import WebhookChannel
from .wiring import default_locations, security_sinks

__all__ = ["Alert", "Backoff", "Channel", "DeliveryError", "Dispatcher", "GroupState",
           "Grouper", "GroupingPolicy", "MemoryGroupState", "OutboxChannel",
           "RedisGroupState", "SmtpChannel", "SmtpSettings", "WebhookChannel",
           "WebhookSettings", "default_locations", "security_sinks"]
