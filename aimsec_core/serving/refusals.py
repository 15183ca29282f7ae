"""What a client is told when a call is refused: a status, a machine code, a generic line.

The answer names the kind of refusal and nothing else: no finding's reason, score,
threshold, configured limit, stack trace or (unless asked for) model name. The full story
is in the audit log under the same client and request id. Attack refusals (adversarial
input, query attack, extraction) share one code, so a prober cannot learn which detector
fired.

=========================  ======  =====================  ===============
error                      status  ``error`` code         ``Retry-After``
=========================  ======  =====================  ===============
RateLimitedError           429     ``rate_limited``       yes
ClientBlockedError         403     ``client_blocked``     yes
InvalidInputError          422     ``invalid_input`` (or  no
                                   a narrower code below)
AdversarialInputError,     403     ``refused``            no
QueryAttackError,
ExtractionSuspectedError
StoreUnavailableError      503     ``unavailable``        no
any other violation        403     ``refused``            no
=========================  ======  =====================  ===============
"""

from __future__ import annotations

import builtins
import json
import math
import numbers
from dataclasses import dataclass

from ..errors import (ClientBlockedError, EmptyInputError, InputFormatError,
                      InputTooLargeError, InvalidInputError, NonFiniteInputError,
                      RateLimitedError, SecurityViolation, StoreUnavailableError,
                      ValueRangeError)

#: Longest ``Retry-After`` sent (one day): a bound on what a broken limiter can say.
MAX_RETRY_AFTER_S = 86_400
#: Shortest ``Retry-After`` sent: a refused call is never to be retried at once.
MIN_RETRY_AFTER_S = 1

# error type -> (status, code, message); the first matching entry wins (subclasses first).
_ANSWERS: tuple[tuple[type[SecurityViolation], int, str, str], ...] = (
    (RateLimitedError, 429, "rate_limited", "Too many requests; retry later."),
    (ClientBlockedError, 403, "client_blocked",
     "This client is temporarily blocked; retry later."),
    (EmptyInputError, 422, "empty_input", "The request carried no input values."),
    (InputFormatError, 422, "input_format",
     "The input does not have the type or shape the model takes."),
    (InputTooLargeError, 422, "input_too_large", "The input is too large."),
    (NonFiniteInputError, 422, "non_finite_input", "The input contains NaN or infinite values."),
    (ValueRangeError, 422, "value_out_of_range", "The input has values outside the allowed range."),
    (InvalidInputError, 422, "invalid_input", "The input was rejected by validation."),
    (StoreUnavailableError, 503, "unavailable",
     "The service is temporarily unavailable; retry later."),
)
_DEFAULT = (403, "refused", "The request was refused by the service's security policy.")


@dataclass(frozen=True)
class Refusal:
    """An HTTP answer to a refused call: ``status``, ``headers`` (latin-1 ``bytes`` pairs,
    ASGI style) and a JSON ``body`` ``{"error", "message", "request_id"}`` (``"model"`` too
    when asked for)."""

    status: int
    code: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def refusal_for(error: SecurityViolation, *, request_id: str | None = None,
                include_model: bool = False) -> Refusal:
    """The answer to ``error`` (see the module's table).

    ``Retry-After`` is the error's ``retry_after`` (any real number: int, float, numpy
    scalar, fraction) rounded up to whole seconds (RFC 9110 section 10.2.3), 1 to one day
    (a refused caller told 0, as by an error made without one, would retry at once, into
    the same refusal); left out when the error has none that is finite.
    ``include_model`` adds the refusing model's name from the verdict.
    """
    status, code, message = next(
        ((s, c, m) for kind, s, c, m in _ANSWERS if isinstance(error, kind)), _DEFAULT)
    body: dict[str, object] = {"error": code, "message": message, "request_id": request_id}
    verdict = getattr(error, "verdict", None)
    if include_model and verdict is not None:
        body["model"] = verdict.model
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    retry_after = _retry_after(getattr(error, "retry_after", None))
    if retry_after is not None and isinstance(error, (RateLimitedError, ClientBlockedError)):
        headers.append((b"retry-after", str(retry_after).encode("ascii")))
    payload = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    headers.append((b"content-length", str(len(payload)).encode("ascii")))
    return Refusal(status, code, tuple(headers), payload)


def ambiguous_key_refusal(request_id: str | None = None) -> Refusal:
    """The answer to a request carrying several different API keys: 400
    ``ambiguous_api_key``. Which key the application reads (the first header, the last,
    or all joined with commas) is the framework's choice, so no identity is right: the
    middleware could count the request against one client while the application serves it
    as another (a locked-out key then sent along with a second, invented one)."""
    body = {"error": "ambiguous_api_key", "request_id": request_id,
            "message": "The request carried more than one API key; send exactly one."}
    payload = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    headers = ((b"content-type", b"application/json"), (b"cache-control", b"no-store"),
               (b"content-length", str(len(payload)).encode("ascii")))
    return Refusal(400, "ambiguous_api_key", headers, payload)


def violation_in(error: BaseException) -> SecurityViolation | None:
    """The :class:`SecurityViolation` ``error`` stands for, else ``None``.

    ``error`` itself when it is one; the first of an exception group (PEP 654: what a
    violation raised in a task group's child task arrives as, from ``asyncio.TaskGroup``
    or anyio) whose leaves are all violations, nested groups included. A group holding any
    other error is a crash, not a refusal: ``None``.
    """
    if isinstance(error, SecurityViolation):
        return error
    if _GROUP is None or not isinstance(error, _GROUP):
        return None
    leaves = [violation_in(inner) for inner in error.exceptions]
    if not leaves or any(leaf is None for leaf in leaves):
        return None
    return leaves[0]


def _group_type() -> type[BaseException] | None:
    builtin = getattr(builtins, "BaseExceptionGroup", None)
    if builtin is not None:
        return builtin
    try:  # Python 3.10: the backport anyio raises
        from exceptiongroup import BaseExceptionGroup
    except ImportError:
        return None
    return BaseExceptionGroup


_GROUP = _group_type()


def _retry_after(seconds: object) -> int | None:
    """Whole seconds from any real number (numpy scalars and fractions too), else None."""
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
        return None
    if isinstance(seconds, numbers.Integral):  # exact: a huge int has no float
        return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, int(seconds)))
    try:
        value = float(seconds)
    except OverflowError:  # a fraction past float's range
        return MAX_RETRY_AFTER_S if seconds > 0 else MIN_RETRY_AFTER_S
    if not math.isfinite(value):
        return None
    return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, math.ceil(value)))
