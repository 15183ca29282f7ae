"""Incident rows a reader passed over because aimsec cannot read them.

A disk error, a buggy writer or a hand edit can leave a row whose evidence is not JSON,
whose count is text or NULL, whose severity or status aimsec does not know, or whose
value was cut short. A listing or a report skips such a row and counts it here, so one
damaged row never hides every good one, and says so: ``1 damaged incident row skipped
(id 17: ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Ids of damaged rows kept to name them (all are counted).
MAX_IDS = 10


@dataclass
class DamagedRows:
    """``count`` rows passed over; ``ids`` the first :data:`MAX_IDS` of them (in the
    order read); ``reason`` why the first one could not be read."""

    count: int = 0
    ids: list[int] = field(default_factory=list)
    reason: str = ""

    def add(self, row_id: int, reason: str) -> None:
        """Count the row ``row_id`` (its SQLite id) as passed over for ``reason``."""
        self.count += 1
        if len(self.ids) < MAX_IDS:
            self.ids.append(int(row_id))
        if not self.reason:
            self.reason = reason[:200]

    def __bool__(self) -> bool:
        return self.count > 0

    def note(self) -> str:
        """One line: ``1 damaged incident row skipped (id 17: evidence is not JSON)``,
        ``3 damaged incident rows skipped (ids 4, 9, 17; the first: ...)``; ``""`` when
        none were."""
        if not self.count:
            return ""
        if self.count == 1:
            return f"1 damaged incident row skipped (id {self.ids[0]}: {self.reason})"
        named = ", ".join(str(i) for i in self.ids)
        if self.count > len(self.ids):
            named += ", …"
        return (f"{self.count:,} damaged incident rows skipped (ids {named}; the first: "
                f"{self.reason})")

    def as_dict(self) -> dict[str, Any]:
        """``{"count": int, "ids": [int, ...], "reason": str | None}`` (the JSON of
        ``aimsec incidents --json``)."""
        return {"count": self.count, "ids": list(self.ids), "reason": self.reason or None}
