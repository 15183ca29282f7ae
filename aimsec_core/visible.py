"""Text from callers and stored files made safe to show: characters that act rather than print.

Client ids, model and check names come from callers. C0 and C1 control characters could
drive a terminal (escape sequences) or break an HTML page (NUL is a parse error there),
and Unicode bidirectional formatting characters (U+202A-U+202E, U+2066-U+2069, U+200E,
U+200F, U+061C) reorder what follows them on screen, so ``evil\\u202egnp.exe`` would read
as another name (CVE-2021-42574, "Trojan Source", shows the same trick in source code).
Lone surrogates (U+D800-U+DFFF: a file name's undecodable bytes as Python reads them,
``\\udcff`` for the byte 0xff) cannot be written to a UTF-8 page or terminal at all.
Each is shown as its escape (``\\x1b``, ``\\u202e``, ``\\udcff``) instead.
"""

from __future__ import annotations

import re

_ACTING = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with control and bidirectional formatting characters and lone surrogates
    written as escapes
    (``"a\\x00b"`` for ``"a<NUL>b"``); other characters unchanged."""
    return _ACTING.sub(_escape, text)


def shown(text: object) -> str:
    """``text`` (or a path, as ``str``) for a rich console: :func:`visible`, then rich
    markup escaped, so a name like ``out[/]`` prints as named instead of failing as
    markup."""
    from rich.markup import escape

    return escape(visible(str(text)))
