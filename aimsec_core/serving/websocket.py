"""A refused websocket call: a denial before the handshake completes, a close code after.

Before the application accepts the connection, the refusal is the same JSON answer an
HTTP request gets when the server offers the ASGI ``websocket.http.response`` extension;
otherwise a ``websocket.close``, which the server answers with HTTP 403. After the accept,
the connection is closed with code 1013 (Try Again Later) for ``rate_limited`` and
``unavailable``, else 1008 (Policy Violation) (RFC 6455 section 7.4 and the IANA
WebSocket close-code registry), with the refusal's code as the reason. Once the
connection is closed, by either side, there is nothing left to say: the error propagates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..errors import SecurityViolation
from .refusals import Refusal, violation_in

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Close code after the accept, by refusal code; 1008 for every other.
TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008
_RETRYABLE = frozenset({"rate_limited", "unavailable"})
DENIAL_EXTENSION = "websocket.http.response"


async def serve_websocket(app: Callable[[Any, Receive, Send], Awaitable[None]],
                          scope: MutableMapping[str, Any], receive: Receive, send: Send,
                          refuse: Callable[[SecurityViolation], Refusal],
                          id_header: tuple[bytes, bytes]) -> None:
    """Run ``app`` on websocket ``scope``; answer a violation it raises with ``refuse``'s
    refusal (see the module). Any other error, and a violation after the close, propagate.
    """
    state = "connecting"  # -> "open" -> "closed"

    async def tracked_receive() -> Message:
        nonlocal state
        message = await receive()
        if message.get("type") == "websocket.disconnect":
            state = "closed"
        return message

    async def tracked_send(message: Message) -> None:
        nonlocal state
        kind = message.get("type")
        if kind == "websocket.accept":
            state = "open"
        elif kind in ("websocket.close", "websocket.http.response.start"):
            state = "closed"
        await send(message)

    try:
        await app(scope, tracked_receive, tracked_send)
    except BaseException as raised:
        error = violation_in(raised)
        if error is None or state == "closed":
            raise
        refusal = refuse(error)
        if state == "connecting":
            await deny_websocket(scope, send, refusal, id_header)
            return
        code = TRY_AGAIN_LATER if refusal.code in _RETRYABLE else POLICY_VIOLATION
        await send({"type": "websocket.close", "code": code, "reason": refusal.code})


async def deny_websocket(scope: MutableMapping[str, Any], send: Send, refusal: Refusal,
                         id_header: tuple[bytes, bytes]) -> None:
    """Refuse a websocket handshake the application has not accepted: ``refusal`` as an
    HTTP answer where the server offers the denial extension, else a close before the
    accept (which the server answers with HTTP 403)."""
    if DENIAL_EXTENSION in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": refusal.status,
                    "headers": [*refusal.headers, id_header]})
        await send({"type": "websocket.http.response.body", "body": refusal.body})
        return
    code = TRY_AGAIN_LATER if refusal.code in _RETRYABLE else POLICY_VIOLATION
    await send({"type": "websocket.close", "code": code, "reason": refusal.code})
