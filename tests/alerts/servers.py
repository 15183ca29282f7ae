"""Real servers for alert tests, each on a free loopback port: SMTP (aiosmtpd), HTTP
(http.server in a thread); Redis is in :mod:`tests.servers`. Waits for them are bounded."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.servers import RedisServer, free_port  # noqa: F401  (re-exported for the tests)


# -- SMTP ----------------------------------------------------------------------------------

@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    tls: bool
    login: bytes | None


class Inbox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                      message_from_bytes(envelope.content, policy=policy.default),
                                      session.ssl is not None, session.auth_data))
        self.arrived.set()
        return "250 OK"


class SmtpServer:
    """An aiosmtpd controller that can be stopped and started again on the same port."""

    def __init__(self, port: int | None = None, **smtp_options: Any) -> None:
        self.port = port or free_port()
        self.inbox = Inbox()
        self.options = smtp_options
        self._controller: Any = None

    def start(self) -> SmtpServer:
        from aiosmtpd.controller import Controller

        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port,
                                      ready_timeout=10, **self.options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def authenticator(user: bytes, password: bytes) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (user, password)
        return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)

    return check


# -- HTTP ----------------------------------------------------------------------------------

@dataclass
class Hook:
    """What a webhook receiver saw, and the statuses it answers with (in order, then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    location: str | None = None  #: sent with a 3xx status (a redirect)


class HookServer:
    def __init__(self, statuses: list[int] | None = None) -> None:
        self.hook = Hook(list(statuses or []))
        hook = self.hook

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.requests.append(({k: v for k, v in self.headers.items()}, body))
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                if hook.location and 300 <= status < 400:
                    self.send_header("Location", hook.location)
                self.end_headers()
                self.wfile.write(json.dumps({"ok": status == 200}).encode())

            def do_GET(self) -> None:  # noqa: N802  (what a followed redirect becomes)
                hook.requests.append(({k: v for k, v in self.headers.items()}, b""))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)

    def start(self) -> HookServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- hostile peers -------------------------------------------------------------------------

class TrickleServer:
    """Accepts one connection and sends ``payload`` one byte every ``interval_s`` seconds
    (a peer that is never quite silent long enough for a socket timeout), then waits up to
    10 s for the client to hang up. ``sent`` counts the bytes that went out before the
    client hung up."""

    def __init__(self, payload: bytes, interval_s: float = 0.05) -> None:
        import socket

        self.payload, self.interval_s, self.sent = payload, interval_s, 0
        self.done = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import time

        connection, _ = self._listener.accept()
        with connection:
            try:
                for byte in self.payload:
                    connection.sendall(bytes([byte]))
                    self.sent += 1
                    time.sleep(self.interval_s)
                connection.settimeout(10)
                while connection.recv(65536):  # what the client sends, until it hangs up
                    pass
            except OSError:
                pass  # the client hung up
        self.done.set()

    def stop(self) -> None:
        self._listener.close()
