"""What an alert says, written once for every channel: subject, text body, JSON body, email.

Names a client controls (model names come from code, client ids from requests) are clipped
and stripped of control characters before they reach a header or a line, and cannot open
an RFC 2047 encoded word in the subject.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from ..incidents.model import clip, iso
from ..incidents.taxonomy import NAMES, mapping_for

#: Why a message goes out (Alertmanager's notification reasons, plus ours).
KINDS = {
    "new": "new incident group",
    "escalation": "severity escalated",
    "update": "group went quiet: occurrences since the last message",
    "reminder": "still firing (repeat interval)",
    "flush": "sent at shutdown",
}


@dataclass(frozen=True)
class Alert:
    """One message about one group (model, threat, client).

    ``count`` is every occurrence of the group so far; ``suppressed`` the occurrences this
    message reports without a message of their own (for the first message, all but the
    first; afterwards, all since the previous message). Times are seconds since the epoch.
    """

    kind: str
    model: str
    threat: str
    client: str
    severity: str
    count: int
    suppressed: int
    first_seen: float
    last_seen: float
    sent_at: float
    reasons: tuple[str, ...] = ()
    incident_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def group_key(self) -> str:
        return json.dumps([self.model, self.threat, self.client])

    @property
    def subject(self) -> str:
        # "=?" opens an RFC 2047 encoded word, which the email library decodes when the
        # header is set: a client id "=?utf-8?b?...?=" could smuggle a line break and
        # headers of its own (Bcc:, Reply-To:) into the message. "= ?" is inert.
        return clip(f"aimsec {self.severity.upper()}: {self.threat} on model {self.model} "
                    f"from {self.client} ({self.count}x)", 250).replace("=?", "= ?")

    def text(self) -> str:
        """The plain-text body (email, outbox)."""
        mapping = mapping_for(self.threat)
        lines = [
            f"aimsec security alert: {self.severity.upper()} ({KINDS.get(self.kind, self.kind)})",
            "",
            f"Model:       {clip(self.model)}",
            f"Threat:      {clip(self.threat)} - {mapping.title}",
            f"Severity:    {self.severity}",
            f"Client:      {clip(self.client)}",
            f"Count:       {self.count} occurrence(s)",
            f"First seen:  {iso(self.first_seen)}",
            f"Last seen:   {iso(self.last_seen)}",
        ]
        if self.suppressed:  # a message for one occurrence suppressed none
            lines.insert(7, f"Suppressed:  {self.suppressed} duplicate(s) reported in this "
                            "message only")
        if self.incident_id is not None:
            lines.append(f"Incident:    #{self.incident_id} (aimsec incidents)")
        for heading, ids in (("OWASP ML Top 10", mapping.owasp),
                             ("MITRE ATLAS techniques", mapping.techniques),
                             ("MITRE ATLAS mitigations", mapping.mitigations)):
            lines += ["", f"{heading}:"] + [f"  {i} {NAMES.get(i, '')}".rstrip() for i in ids
                                            or ("-",)]
        for name, value in self.extra.items():
            lines.append(f"{clip(name, 40)}: {clip(value, 300)}")
        if self.reasons:
            lines += ["", "Reasons:"] + [f"  - {clip(r, 300)}" for r in self.reasons]
        lines += ["", f"Sent {iso(self.sent_at)} by aimsec."]
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        """One line: the Slack-compatible ``text`` of a webhook body."""
        return (f"aimsec {self.severity.upper()}: {clip(self.threat)} on model "
                f"{clip(self.model)} from {clip(self.client)}: {self.count} occurrence(s), "
                f"{self.suppressed} suppressed ({KINDS.get(self.kind, self.kind)})")

    def as_dict(self) -> dict[str, Any]:
        mapping = mapping_for(self.threat)
        return {
            "kind": self.kind, "model": self.model, "threat": self.threat,
            "client": self.client, "severity": self.severity, "count": self.count,
            "suppressed": self.suppressed, "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen), "sent_at": iso(self.sent_at),
            "incident_id": self.incident_id, "reasons": list(self.reasons),
            "taxonomy": mapping.as_dict(), **({"extra": dict(self.extra)} if self.extra else {}),
        }

    def email(self, sender: str, recipients: tuple[str, ...] | list[str]) -> EmailMessage:
        """The alert as an email from ``sender`` to ``recipients``."""
        message = EmailMessage()
        message["Subject"] = self.subject
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message["Date"] = formatdate(self.sent_at, localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain="aimsec.local")
        message["X-Aimsec-Severity"] = self.severity
        # quoted-printable keeps every byte 7-bit: client ids and reasons may hold any
        # character, and a server without 8BITMIME may refuse (or mangle) 8-bit bodies
        message.set_content(self.text(), cte="quoted-printable")
        return message
