"""The evaluation's outputs: one table per data set and kind of attack (for a terminal,
80-120 columns), and the complete rows as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..files import write_target, write_whole
from .measure import Row

TITLES = {"standard": "attacks that don't know the detectors",
          "adaptive": "adaptive attacks (they know the detectors and their calibration)"}


def write_json(rows: list[Row], path: str | Path, **meta: Any) -> Path:
    """``meta`` and every row as JSON at ``path``, written whole or not at all
    (:func:`files.write_whole`): an interrupted run or write leaves no half file, and the
    previous one as it was. A symbolic link is written through (the link stays); a FIFO or
    device (``/dev/stdout``) is written to directly. Raises ``OSError``."""
    path = Path(path)
    text = json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2)
    target, whole = write_target(path)
    if whole:
        write_whole(target, text)
    else:  # a pipe or a device: nothing to put in its place
        target.write_text(text)
    return path


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _fpr(row: Row) -> str:
    """The measured clean FPR, with the 95% interval the calibration expects it in."""
    if row.fpr_interval is None:
        return _pct(row.fpr_clean)
    low, high = row.fpr_interval
    return f"{row.fpr_clean:.1%} ({low:.0%}-{high:.0%})"


def _loudest(shares: dict[str, float], top: int = 2) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in list(shares.items())[:top])


def tables(rows: list[Row], fpr: float) -> list[Any]:
    """One ``rich`` table per (data set, kind) present in ``rows``, in order of first
    appearance. "(t)": examples made on the torch model, transferred; FPR: on the clean
    test samples, and in brackets the 95% interval the calibration expects it in."""
    from rich.table import Table

    out = []
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.dataset, r.kind), []).append(r)
    for (dataset, kind), group in groups.items():
        grid = any(r.grid_successful is not None for r in group)
        table = Table(title=f"{dataset}: {TITLES.get(kind, kind)}; threshold for "
                            f"{fpr:.0%} false positives", title_justify="left")
        columns = ["model", "attack", "success", "TPR", "FPR", "AUC", "loudest (share)"]
        columns += ["grid TPR (n)"] if grid else []
        for col in columns:
            table.add_column(col, justify="left" if col in (
                "model", "attack", "loudest (share)") else "right")
        for r in group:
            transfer = r.attack.endswith(" (transfer)")
            cells = [r.framework + (" (t)" if transfer else ""),
                     r.attack.removesuffix(" (transfer)"),
                     f"{r.success_rate:.0%} ({r.successful})", _pct(r.tpr), _fpr(r),
                     "-" if r.roc_auc is None else f"{r.roc_auc:.3f}", _loudest(r.loudest)]
            if grid:
                cells.append("-" if r.grid_successful is None
                             else f"{_pct(r.grid_tpr)} ({r.grid_successful})")
            table.add_row(*cells)
        out.append(table)
    return out


def table(rows: list[Row], fpr: float) -> Any:
    """All of :func:`tables` as one printable group."""
    from rich.console import Group

    return Group(*tables(rows, fpr))
