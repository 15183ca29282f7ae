"""Real servers the tests start on free loopback ports: a ``redis-server`` process."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answering_server(reply: bytes) -> socket.socket:
    """A TCP server on a loopback port that answers ``reply`` to everything it is sent
    (something that is not the server a URL expects); close it to stop it."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                try:
                    while conn.recv(65536):
                        conn.sendall(reply)
                except OSError:
                    pass

    threading.Thread(target=answer, daemon=True).start()
    return server


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1; ``stop()`` and ``start()`` it at will
    (same port) to simulate an outage."""

    def __init__(self, folder: Path | None = None) -> None:
        self.port = free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        folder = [] if self.folder is None else ["--dir", str(self.folder)]
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", *folder],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        for _ in range(200):  # readiness poll (not a timing assertion)
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
