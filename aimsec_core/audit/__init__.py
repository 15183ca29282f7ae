"""The audit trail: exactly one bounded, hash-chained JSON line per guarded call.

- :mod:`.log` — :class:`AuditLog`, the sink a guard records into.
- :mod:`.line` — turns one call's record into the line's bytes (at most 8 KB, no raw input
  unless opted in).
- :mod:`.writer` — the file writer the library owns: one per file and process, its own
  locks, size rotation, every line in the file before the call returns. It does not go
  through :mod:`logging`, so an application's logging configuration cannot silence it.
- :mod:`.chain` — the hash chain linking each line to the one before.
- :mod:`.snapshot` — a live trail's files opened together as they are at one moment, so
  a rotation meanwhile shifts nothing a reader meets (``audit verify`` and ``report``).
- :mod:`.verify` — checks a trail and names the first broken line (``aimsec audit verify``).
"""

from .line import MAX_LINE_BYTES
from .log import AUDIT_FILE, AuditLog
from .verify import Verification, verify_trail

__all__ = ["AUDIT_FILE", "AuditLog", "MAX_LINE_BYTES", "Verification", "verify_trail"]
