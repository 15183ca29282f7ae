"""Test doubles: a clock moved by hand and a channel that keeps what it is sent."""

from __future__ import annotations


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class ListChannel:
    """A channel keeping what it is sent; ``failures`` makes the next sends fail."""

    name = "list"

    def __init__(self, failures: int = 0, retryable: bool = True) -> None:
        self.sent = []
        self.failures = failures
        self.retryable = retryable

    def send(self, alert) -> None:
        from aimsec_core.alerts import DeliveryError

        if self.failures:
            self.failures -= 1
            raise DeliveryError("down", retryable=self.retryable)
        self.sent.append(alert)
