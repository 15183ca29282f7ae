"""``aimsec_core.report(...)``: read the trail and the incidents, write report.json and
report.html."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from ..config import DEFAULT_LOG_PATH, resolve
from ..errors import ConfigurationError
from ..extras import require
from ..files import as_path, write_whole
from .aggregate import Aggregator
from .console import print_summary, reading_progress
from .incidents import load_incidents, summarise_incidents
from .model import Report, build_report
from .period import as_utc, parse_period
from .reader import ReadStats, open_trail, read_entries, total_bytes
from .recommend import recommend

JSON_FILE = "report.json"
HTML_FILE = "report.html"
#: What the HTML page and its charts are drawn with: the ``report`` extra.
RENDERERS = ("jinja2", "matplotlib")


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`report` produced."""

    report: Report
    json_path: Path
    html_path: Path


def report(logs: str | Path | None = None, *, since: str | datetime | None = None,
           until: str | datetime | None = None, model: str | None = None,
           out: str | Path = ".", db: str | Path | None = None,
           incidents: Iterable[Mapping[str, Any]] | None = None,
           console: Console | None = None, now: datetime | None = None) -> ReportFiles:
    """Read the audit trail (rotated files included) and write ``report.json`` and
    ``report.html`` into ``out``.

    ``logs`` is the audit folder or file (default ``SECURITY_LOG_PATH``, else
    ``./security_logs``). ``since``/``until`` are datetimes, dates, ISO 8601 strings or
    ages before ``now`` (``"24h"``, ``"7d"``, a ``timedelta``), naive ones in UTC;
    ``model`` keeps one model's calls. Incidents come
    from ``incidents`` (any iterable of incident mappings) or else from the incident
    store at ``db`` (when ``None``: the ``incidents.sqlite3`` beside the trail, else the
    store's default location). A short summary goes to ``console`` (pass ``Console(quiet=True)`` for none).

    Raises :class:`ConfigurationError` for a missing trail, a bad period, or ``logs``,
    ``out``, ``db``, ``model`` or ``incidents`` of the wrong kind; malformed
    lines are counted in the report, never raised. Needs the ``report`` extra (Jinja2,
    matplotlib): without it, :class:`MissingExtraError` before anything is read.
    """
    _require_renderers()
    console = console or Console()
    now = as_utc(now or datetime.now(timezone.utc))
    start, end = parse_period(since, until, now)
    out = as_path(out, "out")
    db = None if db is None else as_path(db, "db")
    if model is not None and (not isinstance(model, str) or not model):
        # "": no guard has that name (guard() refuses it), so the report would hold no call
        raise ConfigurationError(f"model must be a model's name (a non-empty str), or None "
                                 f"for every model; received {type(model).__name__} "
                                 f"{model!r:.80}")
    # text and a single mapping iterate (their letters, its keys) but hold no incidents
    if incidents is not None and (not isinstance(incidents, Iterable)
                                  or isinstance(incidents, (str, bytes, Mapping))):
        raise ConfigurationError(f"incidents must be an iterable of incident mappings (or None "
                                 f"to read the store); received {type(incidents).__name__}")
    # str() of bytes or a number named another folder ("no audit trail at b'/var/log'")
    folder = resolve(None if logs is None else str(as_path(logs, "logs")),
                     "SECURITY_LOG_PATH", DEFAULT_LOG_PATH, str)
    # the bars' width follows the calls found, not the period asked for: a year asked of
    # two hours of calls is still drawn in minutes (the timeline widens as calls spread)
    aggregator, stats = Aggregator(), ReadStats()
    with open_trail(folder) as files:  # as they are now: a guard may rotate meanwhile
        _make_folder(out)  # said now, not after minutes of reading a large trail
        if db is None and incidents is None:  # the incident store beside the trail, if any
            beside = files[-1].path.parent / "incidents.sqlite3"
            db = beside if beside.exists() else None
        with reading_progress(console, total_bytes(files)) as progress:
            for entry in read_entries(files, stats,
                                      since=start.timestamp() if start else None,
                                      until=end.timestamp() if end else None, model=model,
                                      progress=progress):
                aggregator.add(entry)
    note = ""
    if incidents is None:
        # only incidents still active in the period: older ones cannot crowd them out
        incidents, note = load_incidents(db, since=start.timestamp() if start else None,
                                         model=model)
    section = summarise_incidents(incidents, since=start.timestamp() if start else None,
                                  until=end.timestamp() if end else None, model=model,
                                  note=note)
    result = build_report(aggregator, stats, section, since=start, until=end, model=model,
                          generated=now)
    result.recommendations = recommend(result)
    paths = write_report(result, out)
    print_summary(console, result, paths)
    return ReportFiles(result, *paths)


def write_report(result: Report, out: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out`` (created if needed);
    :class:`MissingExtraError` without the ``report`` extra."""
    _require_renderers()
    from .charts import all_charts
    from .html import render_html

    folder = _make_folder(Path(out))
    json_path, html_path = folder / JSON_FILE, folder / HTML_FILE
    try:
        write_whole(json_path, json.dumps(result.as_dict(), indent=2, default=str))
        write_whole(html_path, render_html(result, all_charts(result)))
    except OSError as exc:
        raise ConfigurationError(f"cannot write the report into {folder}: "
                                 f"{exc.strerror or exc}") from exc
    return json_path, html_path


def _make_folder(folder: Path) -> Path:
    """``folder``, created if needed; :class:`ConfigurationError` where it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # "[Errno 17] File exists" named no culprit
        culprit = Path(exc.filename or folder)  # the folder, or one above it
        what = ("a symbolic link to nothing (its target is missing, or leads back to "
                "itself)" if culprit.is_symlink() else "a file")
        where = "it" if culprit == folder else str(culprit)
        raise ConfigurationError(f"cannot create the report folder {folder}: {where} is "
                                 f"{what}; expected a folder (or a path where one can be "
                                 "made) for report.html and report.json") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot create the report folder {folder}: {exc}") from exc
    return folder


def _require_renderers() -> None:
    """:class:`MissingExtraError` naming the ``report`` extra when Jinja2 or matplotlib is
    missing (checked before the trail is read, not after)."""
    require(RENDERERS, "report", "the HTML report")
