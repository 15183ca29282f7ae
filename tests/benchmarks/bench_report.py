"""Benchmark: a report over 1,000,000 audit lines in bounded memory.

Writes a trail of ``--lines`` audit lines (default 1,000,000) into a temporary folder,
split over rotated files, then builds the report in a fresh subprocess and prints its
peak resident memory (``ru_maxrss``), the same for a subprocess that only imports what the
report needs (the floor), and the time per million lines (charts and HTML included, about
3 s of it fixed). The target: under 300 MB peak.

    python tests/benchmarks/bench_report.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

LIMIT_MB = 300
FILES = 5
CLIENTS = [f"203.0.113.{i}" for i in range(250)] + [f"api-key:{i:06x}" for i in range(5000)]

# Peak resident memory of this process: VmHWM (Linux; reset by exec, unlike ru_maxrss,
# which a child inherits from the parent it was forked from), else ru_maxrss.
MEASURE = """
import resource, sys, time
from rich.console import Console
start = time.perf_counter()
{body}
elapsed = time.perf_counter() - start
try:
    with open("/proc/self/status") as status:
        peak = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(peak, elapsed)
"""
FLOOR = "import aimsec_core, jinja2, matplotlib.pyplot"
REPORT = ("import aimsec_core\n"
          "r = aimsec_core.report(sys.argv[1], out=sys.argv[2], incidents=[], "
          "console=Console(quiet=True)).report\n"
          "assert r.calls == int(sys.argv[3]), r.calls")


def write_trail(folder: Path, lines: int) -> int:
    """``lines`` audit lines, oldest in audit.jsonl.{FILES-1}; returns bytes written."""
    start = datetime(2026, 9, 1, tzinfo=timezone.utc).timestamp()
    per_file = -(-lines // FILES)
    written = 0
    for part in range(FILES):
        name = "audit.jsonl" if part == FILES - 1 else f"audit.jsonl.{FILES - 1 - part}"
        with (folder / name).open("w") as stream:  # streamed: this process stays small
            for i in range(part * per_file, min(lines, (part + 1) * per_file)):
                when = datetime.fromtimestamp(start + i * 0.5, timezone.utc).isoformat()
                client = CLIENTS[(i * 7919) % len(CLIENTS)]
                kind = i % 20
                line = {"time": when, "model": f"model-{i % 3}", "client": client,
                        "decision": "rejected" if kind < 2 else "allowed",
                        "input_hash": f"{i:032x}", "shape": [4, 64], "dtype": "float32",
                        "batch_size": 4, "flagged": [0] if kind < 2 else [],
                        "findings": ([{"check": "near_duplicate" if kind == 0 else "range",
                                       "severity": "high", "reason": "r", "samples": [0]}]
                                     if kind < 2 else []),
                        "latency_ms": 0.2 + (i % 97) / 10,
                        "detection": {"suspicion_max": (i % 50) / 10, "threshold": 4.0,
                                      "fpr": 0.05, "above": int(i % 50 > 40)}}
                written += stream.write(json.dumps(line) + "\n")
    return written


def measure(body: str, *args: str) -> tuple[float, float]:
    done = subprocess.run([sys.executable, "-c", MEASURE.format(body=body), *args],
                          capture_output=True, text=True, check=True)
    peak, seconds = done.stdout.split()[-2:]
    return float(peak), float(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        begun = time.perf_counter()
        size = write_trail(folder, args.lines)
        print(f"trail: {args.lines:,} lines, {size / 2**20:.0f} MiB in {FILES} files "
              f"(written in {time.perf_counter() - begun:.0f} s)")
        floor, _ = measure(FLOOR)
        peak, seconds = measure(REPORT, str(folder), str(folder / "out"), str(args.lines))
    per_million = seconds / args.lines * 1e6
    print(f"peak memory: {peak:.0f} MB (imports alone: {floor:.0f} MB; "
          f"reading added {peak - floor:.0f} MB); limit {LIMIT_MB} MB")
    print(f"time: {seconds:.1f} s, {per_million:.1f} s per million lines "
          f"({size / seconds / 2**20:.1f} MiB/s)")
    return 0 if peak < LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
