"""The client a request of the original API names, as one text for both classes."""

from __future__ import annotations

from typing import Any

from ..context import ANONYMOUS, NAMED_ANONYMOUS
from ..incidents.model import clip


def client_name(value: Any) -> str:
    """``value`` (an ``ip_address`` or ``ip`` from a request) as a client identity: a
    non-empty string as it is (``"anonymous"`` itself quoted, ``'"anonymous"'``, as
    :func:`aimsec_core.client` records it); ``None`` or ``""`` as ``"anonymous"``; anything else
    (``ipaddress.IPv4Address``, an int, bytes) as its bounded, printable text
    (:func:`~aimsec_core.incidents.model.clip`), so that two such clients stay two
    clients instead of sharing one anonymous budget."""
    if not given(value):
        return ANONYMOUS
    if isinstance(value, str) and str.__eq__(value, ANONYMOUS):  # a client, not the unnamed
        return NAMED_ANONYMOUS
    return value if type(value) is str else clip(value)


def given(value: Any) -> bool:
    """Whether a caller gave ``value``: anything but ``None`` and empty text (tested
    without ``bool(value)``, which is an error for an array)."""
    return value is not None and not (isinstance(value, (str, bytes, bytearray))
                                      and not len(value))
