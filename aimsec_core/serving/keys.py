"""API keys become identities through a keyed hash; the key itself is never kept.

The identity of a key is ``key:`` and the first 16 hex digits (64 bits) of
HMAC-SHA-256(secret, key) (RFC 2104, FIPS 198-1). Without the secret, an identity seen in
an audit line or a metric cannot be tested against candidate keys, and equal keys give
equal identities only where the secret is the same: replicas sharing state (Redis) must
share it too.

The hash is over the header's bytes as they arrived (ASGI hands them over as bytes). A key
given as text (``api_keys``, :func:`key_identity`) stands for the bytes that text is read
from: latin-1, one byte per character (:func:`key_bytes`), as Starlette's
``request.headers``, WSGI (PEP 3333) and ``http.client`` turn header bytes into text and
back. So an application that hashes ``request.headers["x-api-key"]`` gets the identity the
middleware gave the request, whatever bytes a client sent (UTF-8 ``clé`` arrives as the
text ``"clÃ©"``); a key to be matched as the UTF-8 bytes of ``"clé"`` is listed as those
bytes (``"clé".encode()``).
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
#: How a key given as text becomes header bytes: one byte per character, the mapping ASGI
#: frameworks (Starlette), WSGI and ``http.client`` use between header bytes and text.
HEADER_ENCODING = "latin-1"

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
    """``key:<16 hex>``, the identity of API key ``key`` (header bytes, or text standing
    for them: :func:`key_bytes`) under ``secret``. Raises :class:`ConfigurationError` as
    :func:`key_bytes` does."""
    digest = hmac.new(secret, key_bytes(key), hashlib.sha256).hexdigest()
    return KEY_PREFIX + digest[:DIGEST_CHARS]


def key_bytes(key: bytes | str) -> bytes:
    """The header bytes API key ``key`` stands for: bytes as they are, text encoded as
    latin-1 (:data:`HEADER_ENCODING`: a header read as text by an ASGI framework, encoded
    back). Raises :class:`ConfigurationError` for text holding a character past U+00FF,
    which no header read so can hold (pass the bytes the clients send instead), and for
    anything but ``bytes`` or ``str``; the key itself is never shown."""
    if isinstance(key, bytes):
        return bytes(key)
    if not isinstance(key, str):
        raise ConfigurationError(f"an API key must be bytes or a str; received "
                                 f"{type(key).__name__}")
    try:
        return key.encode(HEADER_ENCODING)
    except UnicodeEncodeError as exc:
        raise ConfigurationError(
            f"an API key given as text holds a character past U+00FF (at position "
            f"{exc.start}); header values reach an application as {HEADER_ENCODING} text, "
            "one byte per character, so no header read as text holds it: expected the "
            "key's bytes as clients send them (e.g. key.encode('utf-8'))") from None


def _generated_secret() -> bytes:
    global _process_secret
    with _process_secret_lock:
        if _process_secret is None:
            _process_secret = secrets.token_bytes(32)
        return _process_secret
