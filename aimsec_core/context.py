"""Who is calling and which request this is: set once per request, read by every guarded
call beneath it.

``contextvars.ContextVar`` keeps each value per thread and per asyncio task, so a server
handling many requests at once never mixes them up. Generators are the exception: a
generator runs in the context of whoever advances it, so two request handlers written as
generators and interleaved on one thread share (and overwrite) one value. Wrap each such
generator with :func:`isolated` to give it a context of its own.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import uuid
import weakref
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

ANONYMOUS = "anonymous"
#: What a caller's identity that is literally ``"anonymous"`` is recorded as: the name
#: of calls with no identity, which the default policy neither throttles nor watches,
#: would otherwise exempt a client (a user id chosen as "anonymous") from every check.
NAMED_ANONYMOUS = '"anonymous"'

Y = TypeVar("Y")
S = TypeVar("S")
R = TypeVar("R")

_current_client: contextvars.ContextVar[str] = contextvars.ContextVar(
    "aimsec_client", default=ANONYMOUS
)
_current_request: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "aimsec_request_id", default=None
)


def _checked(value: object, what: str) -> str:
    if not isinstance(value, str) or not str.__len__(value):
        from .errors import ConfigurationError

        # a string is shown (cut short); any other object only by its type, whose own
        # __repr__ is never run
        shown = f" {str.__str__(value)[:80]!r}" if isinstance(value, str) else ""
        raise ConfigurationError(
            f"{what} must be a non-empty string; received {type(value).__name__}{shown}")
    # a str subclass is read as the plain string it holds: its own methods (a __len__ or
    # __getitem__ that lies) never decide what the audit line or the store key holds
    return value if type(value) is str else str.__str__(value)
_current_tier: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "aimsec_client_tier", default=None)


@contextmanager
def client(identity: str, tier: str | None = None) -> Iterator[str]:
    """Attribute every guarded call inside the block to ``identity`` (an address or key id).

    ``identity`` is written to the audit trail escaped and truncated (it may come from a
    client); ``"anonymous"`` itself is recorded as ``'"anonymous"'`` (in quotes), an
    identified client, never the anonymous caller. Raises
    :class:`~aimsec_core.errors.ConfigurationError` unless it is a non-empty string.
    ``tier`` names the policy tier whose limits apply (``policy={"tiers": {...}}``).

    >>> with client("203.0.113.7"):
    ...     current_client()
    '203.0.113.7'
    """
    if tier is not None and not isinstance(tier, str):
        from .errors import ConfigurationError

        raise ConfigurationError(f"client tier must be a string or None; received {tier!r}")
    checked = _checked(identity, "client identity")
    with _identified(NAMED_ANONYMOUS if checked == ANONYMOUS else checked, tier):
        yield identity


@contextmanager
def unidentified() -> Iterator[str]:
    """Every guarded call inside the block is the anonymous caller's, as outside any
    :func:`client` block (serving code for a request with no identity: an inner block
    of a caller that is not known)."""
    with _identified(ANONYMOUS, None):
        yield ANONYMOUS


@contextmanager
def _identified(identity: str, tier: str | None) -> Iterator[None]:
    token = _current_client.set(identity)
    tier_token = _current_tier.set(tier)
    try:
        yield
    finally:
        _current_tier.reset(tier_token)
        _current_client.reset(token)


def current_client() -> str:
    """The identity set by the innermost :func:`client` block, or ``"anonymous"``."""
    return _current_client.get()


@contextmanager
def request_id(value: str | None = None) -> Iterator[str]:
    """Tag every guarded call inside the block with the request id ``value``.

    Serving code passes the request's ``X-Request-ID`` so audit lines can be joined with
    the application's own logs; ``None`` generates one (32 hex digits, a UUID4). Calls made
    outside any block get a fresh id each (:func:`new_request_id`). Raises
    :class:`~aimsec_core.errors.ConfigurationError` for an empty or non-string value.

    >>> with request_id("req-42"):
    ...     current_request_id()
    'req-42'
    """
    value = uuid.uuid4().hex if value is None else _checked(value, "request id")
    token = _current_request.set(value)
    try:
        yield value
    finally:
        _current_request.reset(token)


def current_request_id() -> str | None:
    """The id set by the innermost :func:`request_id` block, or ``None`` outside one."""
    return _current_request.get()


def new_request_id() -> str:
    """A fresh request id for a call made outside any :func:`request_id` block: 32 hex
    digits, a random 64-bit prefix drawn once per process followed by a 64-bit counter
    (unique without a system call per prediction; not a secret)."""
    return f"{_process_prefix}{next(_counter):016x}"


def _new_process() -> None:
    global _process_prefix, _counter
    _process_prefix = os.urandom(8).hex()
    _counter = itertools.count()


_process_prefix, _counter = "", itertools.count()
_new_process()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_process)


class _Isolated(Generator[Y, S, R]):
    """A generator advanced inside a context of its own (see :func:`isolated`)."""

    def __init__(self, generator: Generator[Y, S, R], context: contextvars.Context) -> None:
        self._generator = generator
        self._context = context

    def send(self, value: S) -> Y:
        return self._context.run(self._generator.send, value)

    def throw(self, *args: Any) -> Y:  # type: ignore[override]
        return self._context.run(self._generator.throw, *args)

    def close(self) -> None:
        self._context.run(self._generator.close)

    def __del__(self) -> None:
        # A generator dropped unfinished is closed by the garbage collector: in its own
        # context, so its ``with client(...)`` blocks unwind where they were entered.
        self.close()


def isolated(generator: Generator[Y, S, R]) -> Generator[Y, S, R]:
    """``generator``, advanced in a copy of the current context made now.

    What the generator sets with :func:`client` or :func:`request_id` stays inside it, and
    what the code advancing it sets does not leak in: two handlers written as generators
    and interleaved on one thread keep their own identities.

    >>> def handler(name):
    ...     with client(name):
    ...         yield current_client()
    ...         yield current_client()
    >>> a, b = isolated(handler("a")), isolated(handler("b"))
    >>> [next(a), next(b), next(a), next(b)]
    ['a', 'b', 'a', 'b']

    Also usable as a decorator on a generator function (:func:`isolated_generator`).
    Async generators are not covered: run each in its own task instead.
    """
    return _Isolated(generator, contextvars.copy_context())


def isolated_generator(function: Callable[..., Generator[Y, S, R]]
                       ) -> Callable[..., Generator[Y, S, R]]:
    """Decorate a generator function so that every generator it makes is :func:`isolated`."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Y, S, R]:
        return isolated(function(*args, **kwargs))

    return wrapper


def current_tier() -> str | None:
    """The policy tier set by the innermost :func:`client` block (``None``: the base)."""
    return _current_tier.get()


#: Context variables of owners that are gone, for the next owners to reuse.
_free_slots: list[contextvars.ContextVar[Any]] = []


class ContextSlot:
    """One value per thread and asyncio task, belonging to one owner (a guard's
    ``last_verdict``), as its own ``ContextVar`` would hold it.

    A context keeps every variable ever set in it, and its value, as long as it lives: a
    variable made per guard kept each guard's last verdict (its flags and scores: 160 KB
    for 20,000 rows) in a long-lived thread after the guard was gone, so a loop wrapping
    or cloning a model (a grid search) grew without bound. A slot's variable goes back to
    a pool when the slot is collected, and a later slot reuses it: a thread holds at most
    one value per slot alive at once. Values are stored with the slot's token, so a
    value a former owner left is never read as the new owner's.
    """

    __slots__ = ("_var", "_token", "__weakref__")

    def __init__(self) -> None:
        try:
            self._var: contextvars.ContextVar[Any] = _free_slots.pop()
        except IndexError:
            self._var = contextvars.ContextVar("aimsec_slot", default=None)
        self._token = object()
        weakref.finalize(self, _free_slots.append, self._var)

    def get(self) -> Any:
        """This context's value (``None`` where none was set)."""
        found = self._var.get()
        return found[1] if found is not None and found[0] is self._token else None

    def set(self, value: Any) -> None:
        """Set this context's value."""
        self._var.set((self._token, value))
