"""Serving: who is calling a served model, and what a refused caller is told.

An ASGI middleware (no web-framework import) that sets :func:`aimsec_core.client` per
request from an API key (kept only as a keyed hash) or the peer address (``X-Forwarded-For``
believed only from trusted proxies), carries the request id, and answers a
:class:`~aimsec_core.SecurityViolation` raised by the application with HTTP 429, 403, 422
or 503 and a small JSON body that leaks no internals.

>>> app.add_middleware(AimsecMiddleware, trusted_proxies=["10.0.0.0/8"])  # doctest: +SKIP
"""

from .addresses import TrustedProxies, client_network, parse_address
from .keys import key_identity, resolve_secret
from .middleware import AimsecMiddleware
from .refusals import Refusal, refusal_for, violation_in
from .request_ids import request_id_context, request_id_from

__all__ = ["AimsecMiddleware", "Refusal", "TrustedProxies", "client_network", "key_identity",
           "parse_address", "refusal_for", "request_id_context", "request_id_from",
           "resolve_secret", "violation_in"]
