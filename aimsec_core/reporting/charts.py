"""The report's charts: matplotlib figures (Agg backend) written as inline SVG.

Text is drawn as paths (``svg.fonttype = "path"``), so the page needs no font; each chart
gets its own ``svg.hashsalt`` so element ids never clash between charts on one page; the
XML prolog, comments and metadata are dropped. Labels are model and check names only — client ids,
the most hostile text in a trail, never reach a chart. Needs the ``report`` extra.
"""

from __future__ import annotations

import io
import re
import warnings
from datetime import datetime
from typing import Any

from .model import DetectionSection, Report

COLOURS = {"allowed": "#4c9a2a", "flagged": "#e0a100", "rejected": "#c0392b",
           "error": "#7f8c8d", "other": "#34495e"}
_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_COMMENT = re.compile(r"<!--.*?-->|<metadata>.*?</metadata>", re.S)


def _label(text: str) -> str:
    """``text`` shown literally: a ``$`` would otherwise start matplotlib's mathtext."""
    return text.replace("$", r"\$")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _svg(figure: Any, name: str) -> str:
    import matplotlib

    plt = _pyplot()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": f"aimsec-{name}"}), \
            warnings.catch_warnings():
        # A name with characters the font lacks is drawn with boxes; the warning about
        # each would otherwise go to the terminal of whoever runs the report.
        warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
        figure.savefig(buffer, format="svg", bbox_inches="tight",
                       metadata={"Date": None, "Creator": None})
    plt.close(figure)
    return _COMMENT.sub("", _PROLOG.sub("", buffer.getvalue(), count=1)).strip()


def calls_over_time(report: Report) -> str | None:
    """Stacked bars: calls per time bucket by decision."""
    if not report.timeline:
        return None
    plt = _pyplot()
    import matplotlib.dates as mdates

    starts = [datetime.fromisoformat(b.start) for b in report.timeline]
    width = report.timeline_bucket_seconds / 86400  # matplotlib dates are in days
    figure, axes = plt.subplots(figsize=(9, 2.8))
    bottom = [0] * len(starts)
    for decision, colour in COLOURS.items():
        heights = [b.decisions.get(decision, 0) for b in report.timeline]
        if any(heights):
            axes.bar(starts, heights, width=width, bottom=bottom, color=colour,
                     label=decision, align="edge")
            bottom = [a + b for a, b in zip(bottom, heights)]
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes.xaxis.get_major_locator()))
    axes.set_ylabel("calls")
    axes.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=5, frameon=False, fontsize=8)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure, "timeline")


def refusals_by_check(report: Report) -> str | None:
    """Horizontal bars: refused calls per check, most first."""
    if not report.refusals_by_check:
        return None
    plt = _pyplot()
    items = list(report.refusals_by_check.items())[:15][::-1]
    figure, axes = plt.subplots(figsize=(6, 0.35 * len(items) + 0.8))
    axes.barh([_label(k) for k, _ in items], [v for _, v in items], color=COLOURS["rejected"])
    for y, (_, value) in enumerate(items):
        axes.annotate(str(value), (value, y), xytext=(3, 0), textcoords="offset points",
                      va="center", fontsize=8)
    axes.set_xlabel("refused calls")
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure, "refusals")


def suspicion_histogram(section: DetectionSection, index: int) -> str | None:
    """Calls by largest suspicion, with the calibrated threshold as a line."""
    if not section.histogram or section.calls == 0:
        return None
    plt = _pyplot()
    edges = [i * section.bin_width for i in range(len(section.histogram))]
    figure, axes = plt.subplots(figsize=(6, 2.6))
    axes.bar(edges, section.histogram, width=section.bin_width, align="edge",
             color="#2e86c1", label="calls")
    if section.threshold is not None:
        axes.axvline(section.threshold, color=COLOURS["rejected"], linestyle="--",
                     label=f"threshold {section.threshold:.3g}")
    axes.set_xlabel("largest suspicion in the call (last bar: everything above)")
    axes.set_ylabel("calls")
    axes.legend(frameon=False, fontsize=8)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure, f"suspicion-{index}")


def drift(report: Report) -> str | None:
    """Per model: share of clean samples above the threshold vs the calibrated rate."""
    sections = [s for s in report.detection if s.observed_rate is not None]
    if not sections:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 0.5 * len(sections) + 1.0))
    labels = [_label(s.model) for s in sections]
    positions = range(len(sections))
    axes.barh([p + 0.2 for p in positions], [100 * (s.observed_rate or 0) for s in sections],
              height=0.4, color=[COLOURS["rejected"] if s.drift or s.sources else "#2e86c1"
                                 for s in sections], label="observed")
    axes.barh([p - 0.2 for p in positions], [100 * (s.fpr or 0) for s in sections],
              height=0.4, color="#bdc3c7", label="calibrated")
    axes.set_yticks(list(positions), labels)
    axes.set_xlabel("% of clean samples above the threshold")
    axes.legend(frameon=False, fontsize=8)
    axes.spines[["top", "right"]].set_visible(False)
    return _svg(figure, "drift")


def all_charts(report: Report) -> dict[str, Any]:
    """Every chart of the page, keyed as the template expects (``None`` when no data)."""
    return {"timeline": calls_over_time(report), "refusals": refusals_by_check(report),
            "drift": drift(report),
            "suspicion": {s.model: suspicion_histogram(s, i)
                          for i, s in enumerate(report.detection)}}
