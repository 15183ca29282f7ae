"""A raw ASGI harness: drive an application with hand-built scopes, no server, no framework."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aimsec_core import current_client


@dataclass
class Answer:
    status: int | None
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """A downstream app that answers 200 and remembers what it saw; ``raise_`` makes it
    raise that error instead (after ``started`` if set: once the response has begun, its
    first body chunk sent)."""

    raise_: BaseException | None = None
    started: bool = False
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope, receive, send) -> None:
        self.seen.append({"type": scope["type"], "client": current_client(),
                          "aimsec": scope.get("aimsec")})
        if scope["type"] == "lifespan":
            return
        if self.raise_ is not None and not self.started:
            raise self.raise_
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        if self.raise_ is not None:
            await send({"type": "http.response.body", "body": b"o", "more_body": True})
            raise self.raise_
        await send({"type": "http.response.body", "body": b"ok"})

    @property
    def client(self) -> str:
        return self.seen[-1]["client"]


def scope(headers: list[tuple[bytes, bytes]] | tuple = (), *,
          peer: Any = ("203.0.113.7", 50000), kind: str = "http") -> dict[str, Any]:
    return {"type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/predict", "raw_path": b"/predict",
            "query_string": b"", "headers": list(headers), "client": peer,
            "server": ("127.0.0.1", 8000)}


async def call_async(app, headers=(), *, peer: Any = ("203.0.113.7", 50000),
                     kind: str = "http") -> Answer:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope(headers, peer=peer, kind=kind), receive, send)
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(None if start is None else start["status"],
                  {} if start is None else dict(start["headers"]), body)


def call(app, headers=(), **kwargs: Any) -> Answer:
    return asyncio.run(call_async(app, headers, **kwargs))
