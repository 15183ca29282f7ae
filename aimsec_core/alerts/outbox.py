"""The outbox: alerts as ``.eml`` files in a folder, when no channel is configured (or as
the last resort when one keeps failing), so that no alert is ever silently dropped."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from ..config import OUTBOX_FOLDER, log_folder
from .channel import DeliveryError
from .message import Alert

DEFAULT_SENDER = "aimsec@localhost"


class OutboxChannel:
    """Writes each alert to ``<folder>/<UTC time>-<severity>-<digest>.eml``.

    ``folder`` defaults to ``<SECURITY_LOG_PATH>/outbox``. Files are written whole (a
    temporary file renamed into place), so a reader never sees half a message. Open them in
    any mail client or with ``email.message_from_bytes``.
    """

    name = "outbox"

    def __init__(self, folder: str | Path | None = None, *, sender: str = DEFAULT_SENDER,
                 recipients: tuple[str, ...] = ("security-team@localhost",)) -> None:
        self.folder = Path(folder) if folder is not None else log_folder() / OUTBOX_FOLDER
        self.sender = sender
        self.recipients = tuple(recipients)

    def __repr__(self) -> str:
        return f"OutboxChannel({str(self.folder)!r})"

    def send(self, alert: Alert) -> None:
        self.write(alert)

    def write(self, alert: Alert) -> Path:
        """Write ``alert`` as one ``.eml`` file; returns its path. Raises
        :class:`DeliveryError` when the folder cannot take it."""
        try:
            data = bytes(alert.email(self.sender, self.recipients))
        except (ValueError, TypeError) as exc:  # an address no header can hold
            raise DeliveryError(f"cannot write the alert as an email from {self.sender!r:.80} "
                                f"to {list(self.recipients)!r:.200}: {exc}; expected "
                                "name@domain addresses", retryable=False) from None
        stamp = _stamp(alert.sent_at)
        digest = hashlib.sha256(data).hexdigest()[:12]  # names never hold client text
        target = self.folder / f"{stamp}-{alert.severity}-{digest}.eml"
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)
        except OSError as exc:
            if tmp is not None:  # a full disk: the part written goes, not left as a .tmp
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            raise DeliveryError(f"cannot write the alert to the outbox {self.folder}: {exc}; "
                                "expected a writable folder (SECURITY_LOG_PATH)") from exc
        return target


def _stamp(seconds: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds)) + f"{seconds % 1:.6f}"[1:]
