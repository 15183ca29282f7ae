"""Request ids: the caller's ``X-Request-ID`` when it is safe to repeat, else a fresh one.

An id travels into audit lines, incidents and the refusal body, so only short values of a
conservative character set are taken from the client (letters, digits and ``. _ ~ : + = /
-``, at most 128 characters: UUIDs, W3C trace ids, base64 tokens); anything else is
replaced by a random UUID rather than echoed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext

from .. import context

MAX_REQUEST_ID_CHARS = 128
_SAFE = re.compile(rb"[A-Za-z0-9._~:+=/-]{1,%d}" % MAX_REQUEST_ID_CHARS)


def request_id_from(values: Iterable[bytes]) -> str:
    """The first header value that is a safe id, else a new random one (32 hex digits)."""
    for value in values:
        value = value.strip()
        if _SAFE.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


def is_safe_request_id(value: object) -> bool:
    """Whether ``value`` is a request id that may be repeated as it is (see the module)."""
    return isinstance(value, str) and value.isascii() \
        and _SAFE.fullmatch(value.encode("ascii")) is not None


def request_id_context(value: str) -> AbstractContextManager[object]:
    """Hook: attribute every guarded call in the block to request ``value``.

    Enters ``aimsec_core.context.request_id(value)`` when the core provides it (the same
    shape as :func:`aimsec_core.client`); otherwise does nothing, and the id only reaches
    the refusal body, the ``X-Request-ID`` response header and the ``aimsec`` scope entry.
    """
    setter = getattr(context, "request_id", None)
    if setter is None:
        return nullcontext(value)
    manager: AbstractContextManager[object] = setter(value)
    return manager
