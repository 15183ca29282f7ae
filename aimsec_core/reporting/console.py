"""What the terminal shows: a progress bar while reading, a short summary after."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from .model import Report
from ..visible import shown

#: Without a terminal, a plain line is printed each time this share of the trail is read.
PLAIN_STEP = 0.25


@contextmanager
def reading_progress(console: Console, total: int) -> Iterator[Callable[[int], None]]:
    """A callback told how many bytes were read: a rich bar on a terminal, else a plain
    line per quarter of the trail."""
    if console.is_terminal:
        with Progress("reading the audit trail", BarColumn(), DownloadColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as progress:
            task = progress.add_task("read", total=total)
            yield lambda n: progress.advance(task, n)
        return
    done, next_mark = 0, PLAIN_STEP

    def advance(n: int) -> None:
        nonlocal done, next_mark
        done += n
        if total and done / total >= next_mark:
            console.print(f"read {done / total:.0%} of the audit trail ({done:,} bytes)")
            while next_mark <= done / total:
                next_mark += PLAIN_STEP

    yield advance


def print_summary(console: Console, report: Report, paths: tuple[Path, Path]) -> None:
    table = Table(title="aimsec report", show_header=True)
    table.add_column("calls", justify="right")
    for decision in report.totals:
        table.add_column(decision, justify="right")
    table.add_column("open incidents", justify="right")
    table.add_row(f"{report.calls:,}", *(f"{n:,}" for n in report.totals.values()),
                  f"{report.incidents.open:,}" if report.incidents.available else "–")
    console.print(table)
    for s in report.detection:
        rate = "–" if s.observed_rate is None else f"{s.observed_rate:.1%}"
        fpr = "–" if s.fpr is None else f"{s.fpr:.1%}"
        flag = " [bold red]drift[/]" if s.drift else (
            f": [bold red]not drift, {len(s.sources)} client(s) send it[/] (the rest "
            f"{s.rest_rate:.1%})" if s.sources and s.rest_rate is not None else "")
        console.print(f"detection {shown(s.model)}: {rate} of clean samples above the "
                      f"threshold, {fpr} calibrated{flag}")
    for rec in report.recommendations[:5]:
        console.print(f"[bold]{rec.priority}[/]: {shown(rec.title)}: {shown(rec.action)}")
    if len(report.recommendations) > 5:
        console.print(f"… {len(report.recommendations) - 5} more in the report")
    console.print(f"report: {shown(str(paths[1]))} (data: {shown(str(paths[0]))})")
