"""The report as one self-contained HTML page (Jinja2, autoescape on, charts inline).

The page loads nothing: styles are inline, charts are inline SVG, there is no script, and
a Content-Security-Policy forbids anything else. Every value from the trail (client ids,
model and check names, incident fields) has its control and bidirectional formatting
characters written as escapes (:func:`aimsec_core.visible.visible`) and is escaped by
Jinja2; only the SVG charts, which
matplotlib writes from model and check names alone, are marked safe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .model import Report
from ..visible import visible


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("aimsec_core.reporting", "templates"),
                      autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True, finalize=_finalize)
    env.filters.update(num=_num, pct=_pct, ratio=_ratio, ms=_ms, fixed=_fixed, when=_when,
                       day=_day, duration=_duration)
    return env


def render_html(report: Report, charts: dict[str, Any]) -> str:
    """The page for ``report`` with ``charts`` (see :func:`.charts.all_charts`)."""
    return _environment().get_template("report.html.j2").render(r=report, charts=charts)


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}``: text shown with :func:`aimsec_core.visible.visible`; markup
    marked safe (the charts) and other values unchanged."""
    from markupsafe import Markup

    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pct(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "–"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g} ms"


def _fixed(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _when(value: str | None, default: str = "–") -> str:
    if not value:
        return default
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return value


def _day(value: str | None) -> str:
    return value[:10] if value else "–"


def _duration(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''}" if count > 1 else unit
    return f"{seconds} s"
