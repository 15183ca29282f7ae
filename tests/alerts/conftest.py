from __future__ import annotations

import ssl

import pytest

from .servers import HookServer, RedisServer, SmtpServer


@pytest.fixture
def smtp_server():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_ca():
    import trustme

    return trustme.CA()


@pytest.fixture
def server_tls(tls_ca) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def client_tls(tls_ca) -> ssl.SSLContext:
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    return context


@pytest.fixture
def hook_server():
    servers = []

    def start(statuses=None):
        servers.append(HookServer(statuses).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


