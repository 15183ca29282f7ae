"""API keys become identities through a keyed hash; the key itself is never kept.

The identity of a key is ``key:`` and the first 16 hex digits (64 bits) of
HMAC-SHA-256(secret, key) (RFC 2104, FIPS 198-1). Without the secret, an identity seen in
an audit line or a metric cannot be tested against candidate keys, and equal keys give
equal identities only where the secret is the same: replicas sharing state (Redis) must
share it too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading

from ..config import MIN_SECRET_BYTES, resolve
from ..errors import ConfigurationError

KEY_PREFIX = "key:"
#: Hex digits of the keyed hash kept in the identity.
DIGEST_CHARS = 16

_process_secret: bytes | None = None
_process_secret_lock = threading.Lock()


def resolve_secret(secret: str | bytes | None = None) -> bytes:
    """The HMAC secret: ``secret``, else ``AIMSEC_CLIENT_KEY_SECRET``, else one random
    secret generated once per process (identities then change on restart and differ
    between processes).

    Raises :class:`ConfigurationError` for a secret shorter than 16 bytes, and for
    ``AIMSEC_CLIENT_KEY_SECRET`` set but empty (a secret that never arrived: each process
    would silently make identities of its own).
    """
    if secret is None and os.environ.get("AIMSEC_CLIENT_KEY_SECRET") == "":
        raise ConfigurationError(
            "AIMSEC_CLIENT_KEY_SECRET is set but empty; set the shared secret, or unset the "
            "variable for a random secret per process")
    chosen = resolve(secret, "AIMSEC_CLIENT_KEY_SECRET", None, str)
    if chosen is None:
        return _generated_secret()
    raw = chosen.encode("utf-8") if isinstance(chosen, str) else bytes(chosen)
    if len(raw) < MIN_SECRET_BYTES:
        source = "key_secret" if secret is not None else "AIMSEC_CLIENT_KEY_SECRET"
        raise ConfigurationError(
            f"the client-key secret ({source}) must be at least {MIN_SECRET_BYTES} bytes; "
            "received "
            f"{len(raw)} bytes. Generate one with "
            "`python -c 'import secrets; print(secrets.token_hex(32))'`")
    return raw


def key_identity(key: bytes | str, secret: bytes) -> str:
    """``key:<16 hex>``, the identity of API key ``key`` under ``secret``."""
    raw = key.encode("utf-8") if isinstance(key, str) else key
    digest = hmac.new(secret, raw, hashlib.sha256).hexdigest()
    return KEY_PREFIX + digest[:DIGEST_CHARS]


def _generated_secret() -> bytes:
    global _process_secret
    with _process_secret_lock:
        if _process_secret is None:
            _process_secret = secrets.token_bytes(32)
        return _process_secret
