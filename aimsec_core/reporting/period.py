"""The period a report covers: ``--since`` and ``--until`` as ISO dates or relative ages."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from ..errors import ConfigurationError

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_moment(value: str | datetime | date | timedelta | None, now: datetime,
                 what: str = "since") -> datetime | None:
    """A UTC datetime for ``value``.

    Accepts a datetime (naive means UTC), a date (its midnight, UTC), an ISO 8601 date or
    date-time (``2026-11-26``, ``2026-11-26T04:00``, with or without an offset; naive means
    UTC), or an age before ``now``: a non-negative timedelta, or a number and a unit among
    ``s``, ``m``, ``h``, ``d``, ``w`` (``24h``, ``7d``). Raises :class:`ConfigurationError`
    for anything else.
    """
    if value is None or (isinstance(value, str) and value == ""):
        return None
    try:
        return _moment(value, now, what)
    except OverflowError:  # 99999999999d, or a date whose UTC time leaves years 1-9999
        raise ConfigurationError(
            f"--{what} {value!r} lies outside the dates a report can cover (years 1 to "
            "9999); expected e.g. 2026-11-26, 24h or 7d") from None


def _moment(value: str | datetime | date | timedelta, now: datetime, what: str) -> datetime:
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ConfigurationError(f"--{what} {value!r} is a negative age; expected an age "
                                     "before now, e.g. timedelta(days=1)")
        return now - value
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif not isinstance(value, str):
        raise ConfigurationError(
            f"--{what} must be a datetime, a date, a timedelta or text such as 2026-11-26, "
            f"24h or 7d; received {type(value).__name__} {value!r:.80}")
    else:
        relative = _RELATIVE.match(value)
        if relative:
            amount, unit = float(relative.group(1)), relative.group(2)
            return now - timedelta(seconds=amount * _UNIT_SECONDS[unit])
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigurationError(
                f"--{what} {value!r} is neither an ISO 8601 date/time nor an age; expected "
                "e.g. 2026-11-26, 2026-11-26T04:00:00+00:00, 24h or 7d") from None
    return as_utc(moment)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive one is read as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def parse_period(since: str | datetime | None, until: str | datetime | None,
                 now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    """``(since, until)`` as UTC datetimes; refuses a period that ends before it starts."""
    now = as_utc(now or datetime.now(timezone.utc))
    start = parse_moment(since, now, "since")
    end = parse_moment(until, now, "until")
    if start is not None and end is not None and end <= start:
        raise ConfigurationError(
            f"the period ends ({end.isoformat()}) before it starts ({start.isoformat()}); "
            "expected --until later than --since")
    return start, end
