"""Text from callers and stored files made safe to show: characters that act rather than print.

Client ids, model and check names come from callers. C0 and C1 control characters could
drive a terminal (escape sequences) or break an HTML page (NUL is a parse error there),
and Unicode bidirectional formatting characters (U+202A-U+202E, U+2066-U+2069, U+200E,
U+200F, U+061C) reorder what follows them on screen, so ``evil\\u202egnp.exe`` would read
as another name (CVE-2021-42574, "Trojan Source", shows the same trick in source code).
Other characters print as nothing or as a plain space: Unicode's format characters (the
zero-width space U+200B, the word joiner U+2060, U+FEFF, the soft hyphen U+00AD, tag
characters; category Cf, the bidirectional ones among them), line and paragraph
separators (U+2028, U+2029, which also break a line), spaces other than U+0020 (U+00A0,
U+2000-U+200A, U+3000), variation selectors and the Hangul fillers, so
``10.0.0.1\\u200b`` would read as the client ``10.0.0.1``.
Lone surrogates (U+D800-U+DFFF: a file name's undecodable bytes as Python reads them,
``\\udcff`` for the byte 0xff) cannot be written to a UTF-8 page or terminal at all.
Each is shown as its escape (``\\x1b``, ``\\u202e``, ``\\udcff``, ``\\U000e0041``) instead.
"""

from __future__ import annotations

import functools
import re
import unicodedata

#: Unicode categories shown as escapes: controls, format characters, surrogates, line
#: and paragraph separators, spaces (U+0020 itself excepted)
_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Zs"})
#: Characters of other categories that print as nothing: variation selectors, Hangul
#: fillers, the Mongolian free variation selectors and the braille blank
_INVISIBLE = ("\ufe00-\ufe0f\U000e0100-\U000e01ef\u115f\u1160\u3164\uffa0"
              "\u180b-\u180f\u2800")


@functools.cache
def _acting() -> re.Pattern[str]:
    """The characters to escape, as one character class (read from the Unicode database
    of this Python once: about 0.1 s, so not at import)."""
    ranges: list[list[int]] = []
    for code in range(0x110000):
        if code != 0x20 and unicodedata.category(chr(code)) in _CATEGORIES:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    listed = "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)
    return re.compile(f"[{listed}{_INVISIBLE}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with the characters above (controls, format and bidirectional
    characters, separators, spaces other than U+0020, invisible ones, lone surrogates)
    written as escapes (``"a\\x00b"`` for ``"a<NUL>b"``); other characters unchanged."""
    return _acting().sub(_escape, text)


def shown(text: object) -> str:
    """``text`` (or a path, as ``str``) for a rich console: :func:`visible`, then rich
    markup escaped, so a name like ``out[/]`` prints as named instead of failing as
    markup."""
    from rich.markup import escape

    return escape(visible(str(text)))
