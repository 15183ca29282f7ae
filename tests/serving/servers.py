"""Run an ASGI application under a real uvicorn server on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

STARTUP_DEADLINE_S = 120.0  # generous: the machine may be loaded; nothing asserts on it


@contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a port the OS picks) until the block ends; yields its
    base URL. uvicorn's own ``X-Forwarded-For`` handling is off: the middleware decides."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", proxy_headers=False, log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while not server.started:  # poll until the lifespan startup has finished
            if not thread.is_alive():
                raise RuntimeError("the server stopped during startup; see its log above")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start in {STARTUP_DEADLINE_S} s")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
