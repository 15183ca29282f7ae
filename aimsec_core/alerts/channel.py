"""What an alert channel is, how it fails, and how long to wait before trying again."""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Protocol, runtime_checkable

from ..errors import AimsecError, ConfigurationError
from ..incidents.model import clip
from .message import Alert


class DeliveryError(AimsecError, ConnectionError):
    """A channel could not deliver an alert. ``retryable`` is false when trying again
    cannot help (the server refused the message or the credentials). The message quotes
    what a peer answered, so it is kept to one printable line (control characters and
    line breaks become spaces): it goes to logs and delivery records."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(clip(message, 1000))
        self.retryable = retryable


@runtime_checkable
class Channel(Protocol):
    """Delivers alerts somewhere. ``send`` raises :class:`DeliveryError` on failure and
    nothing else; ``name`` labels metrics and delivery records (``smtp``, ``webhook``,
    ``outbox``)."""

    name: str

    def send(self, alert: Alert) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: attempt ``n`` (1-based) failed -> wait
    ``min(cap_s, base_s * factor ** (n - 1))`` seconds before attempt ``n + 1``; after
    ``attempts`` attempts the alert goes to the fallback channel (the outbox).

    The defaults try 10 times over about 17 minutes (1, 2, 4, ... 256 s). Raises
    ``ConfigurationError`` for a wait or factor that is not a number >= 0 (> 0 for the
    factor; NaN made a retry that never came due) or ``attempts`` that is not a whole
    number >= 1.
    """

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0
    attempts: int = 10

    def __post_init__(self) -> None:
        for name, least in (("base_s", 0.0), ("factor", 0.0), ("cap_s", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not value >= least \
                    or (name == "factor" and not 0 < value < math.inf):
                bound = "a finite number > 0" if name == "factor" else "a number of seconds >= 0"
                raise ConfigurationError(f"backoff {name}: expected {bound}; received "
                                         f"{value!r:.40}")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, Integral) \
                or self.attempts < 1:
            raise ConfigurationError("backoff attempts: expected a whole number >= 1; "
                                     f"received {self.attempts!r:.40}")

    def delay(self, attempt: int) -> float:
        try:
            grown = self.base_s * self.factor ** max(0, attempt - 1)
        except OverflowError:  # past any float (factor 1e200, the third wait): the cap
            grown = math.inf
        return min(self.cap_s, grown)
