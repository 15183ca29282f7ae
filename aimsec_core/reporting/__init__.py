"""Reports a security team reads in a minute, from the audit trail and the incident store.

``report(...)`` streams the audit trail (rotated files included) through bounded-memory
counters (:mod:`.aggregate`, :mod:`.sketches`), derives recommendations from what it saw
(:mod:`.recommend`) and writes ``report.json`` (:mod:`.model`) and one self-contained
``report.html`` (:mod:`.html`, :mod:`.charts`, ``templates/``). Lines are parsed by one
tolerant function (:func:`.records.parse_line`).
"""

from .build import ReportFiles, report, write_report
from .model import Report
from .records import AuditEntry, parse_line

__all__ = ["AuditEntry", "Report", "ReportFiles", "parse_line", "report", "write_report"]
