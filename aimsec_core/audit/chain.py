"""The hash chain: each line names the SHA-256 of the line before it.

A line is a JSON object whose last key is ``"prev"``: the hex SHA-256 of the previous line's
exact bytes (without its newline), or ``null`` for the first line a trail ever had. The
chain runs per file and continues across rotation (the first line of a new file names the
last line of the rotated one) and across restarts (the writer reads the file's last line).
Changing, removing or reordering any line breaks the link of the line after it (FIPS 180-4
SHA-256; the construction is a plain hash chain, as in Schneier and Kelsey, "Secure audit
logs to support computer forensics", ACM TISSEC 2(2), 1999, without the MAC keys).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..files import open_regular

#: ``prev`` of the first line of a trail (JSON text).
GENESIS = b"null"
_PREV = b',"prev":'
_BLOCK = 64 * 1024
#: A line's link as the writer puts it, last: ``,"prev":null}`` or ``,"prev":"<64 hex>"}``.
_LINK = re.compile(rb',"prev":(null|"[0-9a-f]{64}")\}\r?\n\Z')


def written_link(line: bytes) -> bytes | None:
    """The link of ``line`` (its bytes, newline included) where the writer puts it, last:
    ``null`` or a quoted hex digest (JSON text, as :func:`digest` gives it); ``None`` when
    the line does not end so (no link, or one moved, spaced or otherwise rewritten).
    Reads the line's last 80 bytes only."""
    match = _LINK.search(line[-80:])
    return None if match is None else match.group(1)


def link(body: bytes, prev: bytes) -> bytes:
    """The full line: ``body`` (an unclosed JSON object, ``{"time":...``) + ``prev``
    (JSON text: a quoted hex digest or ``null``) + ``}`` + newline."""
    return body + _PREV + prev + b"}\n"


def digest(line: bytes) -> bytes:
    """``prev`` for the line after ``line`` (its bytes without the newline), as JSON text."""
    return b'"' + hashlib.sha256(line).hexdigest().encode() + b'"'


def tail_digest(path: Path) -> tuple[bytes | None, bool]:
    """The digest of the last line of ``path`` (JSON text; ``None`` for an empty or
    missing file) and whether the file ends with a newline. Reads the last line only,
    in blocks, whatever its length. Raises ``ValueError`` when ``path`` is not a regular
    file (a FIFO would block the read), ``OSError`` when it cannot be read."""
    try:
        handle = open_regular(path)
    except FileNotFoundError:
        return None, True
    with handle:
        size = handle.seek(0, 2)
        if size == 0:
            return None, True
        handle.seek(size - 1)
        complete = handle.read(1) == b"\n"
        end = size - 1 if complete else size
        start, pos = 0, end
        while pos > 0:
            step = min(_BLOCK, pos)
            pos -= step
            handle.seek(pos)
            newline = handle.read(step).rfind(b"\n")
            if newline >= 0:
                start = pos + newline + 1
                break
        hasher = hashlib.sha256()
        handle.seek(start)
        remaining = end - start
        while remaining:
            chunk = handle.read(min(_BLOCK, remaining))
            hasher.update(chunk)
            remaining -= len(chunk)
    return b'"' + hasher.hexdigest().encode() + b'"', complete


def rotated(path: Path, index: int) -> Path:
    """The ``index``-th rotated file of ``path`` (``audit.jsonl.1`` is the newest)."""
    return path.with_name(f"{path.name}.{index}")
