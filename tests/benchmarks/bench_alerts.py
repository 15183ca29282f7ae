"""Alerting's cost on the predict path, and incident writes per second.

    python tests/benchmarks/bench_alerts.py [--calls 3000]

1. Predict latency of a guarded scikit-learn digits MLP (monitor mode, batch 16, a third
   of the calls out of range from 300 rotating clients, so groups keep opening and alerts
   keep going out) with alerting off (audit only), and with incidents and SMTP alerts on
   while the mail server is (a) unreachable (connection refused) or (b) answering every
   message after 5 s. Printed: the plain model's time and each configuration's
   guarded/plain ratio, measured interleaved in the same run. Target: the ratio with
   alerting on equals alerting off within noise.
2. What the incident journal (a kill loses no queued incident) adds to the sink's part of
   a guarded call: a clean call, and a call with one medium finding from one of 300
   clients, with the journal off (before) and on (after), interleaved in the same run.
   Target: a clean call pays nothing; a flagged call a few microseconds.
3. Incident updates per second from one process: occurrences of 500 distinct groups
   written by the dispatcher (one transaction per round), and, for reference, one
   transaction per occurrence. Target: >= 2,000 updates/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _slow_smtp(port: int, delay_s: float):
    from aiosmtpd.controller import Controller

    class Slow:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            await asyncio.sleep(delay_s)
            return "250 OK"

    controller = Controller(Slow(), hostname="127.0.0.1", port=port)
    controller.start()
    return controller


def bench_predict(calls: int) -> None:
    import aimsec_core
    from aimsec_core import digits
    from aimsec_core.alerts import (Dispatcher, Grouper, GroupingPolicy, SmtpChannel,
                                    SmtpSettings)
    from aimsec_core.incidents import IncidentSink, IncidentStore
    from tests.alerts.servers import free_port

    data = digits.load()
    model = digits.BUILDERS["sklearn"](data)
    rng = np.random.default_rng(0)
    batches = []
    for i in range(calls):
        x = data.x_test[rng.integers(0, len(data.x_test) - 16):][:16].astype(np.float32)
        if i % 3 == 0:
            x = x * 3.0  # out of range: a medium finding
        batches.append((f"203.0.113.{i % 300}", x))
    logs = tempfile.mkdtemp()
    audit = aimsec_core.AuditLog(logs)
    refused_port, slow_port = free_port(), free_port()
    slow = _slow_smtp(slow_port, 5.0)
    policy = GroupingPolicy(group_wait=0, group_interval=300, repeat_interval=14400,
                            floor="medium")

    def alerting(port: int, name: str):
        settings = SmtpSettings("127.0.0.1", port, "aimsec@example.org", ("soc@example.org",),
                                security="none", timeout_s=10)
        dispatcher = Dispatcher(IncidentStore(Path(logs) / f"{name}.sqlite3"),
                                Grouper(policy), [SmtpChannel(settings)])
        return dispatcher, IncidentSink(dispatcher)

    refused, refused_sink = alerting(refused_port, "refused")
    delayed, delayed_sink = alerting(slow_port, "delayed")
    constraints = digits.constraints("sklearn")
    guards = {
        "alerting off": aimsec_core.guard(model, name="off", mode="monitor", sinks=[audit],
                                          constraints=constraints),
        "on, SMTP refused": aimsec_core.guard(model, name="refused", mode="monitor",
                                              sinks=[audit, refused_sink],
                                              constraints=constraints),
        "on, SMTP 5 s late": aimsec_core.guard(model, name="delayed", mode="monitor",
                                               sinks=[audit, delayed_sink],
                                               constraints=constraints),
    }

    def run(target) -> float:
        start = time.perf_counter()
        for who, x in batches:
            with aimsec_core.client(who):
                target.predict(x)
        return (time.perf_counter() - start) / len(batches)

    timings: dict[str, list[float]] = {"plain": [], **{name: [] for name in guards}}
    for _ in range(5):  # interleaved rounds: load drift hits every configuration alike
        timings["plain"].append(run(model))
        for name, guarded in guards.items():
            timings[name].append(run(guarded))
    plain = statistics.median(timings["plain"])
    print(f"predict, batch 16, {calls} calls x 5 rounds (medians)")
    print(f"{'configuration':<22}{'us/call':>10}{'guarded/plain':>15}")
    print(f"{'plain':<22}{plain * 1e6:>10.1f}{1.0:>15.3f}")
    for name in guards:
        t = statistics.median(timings[name])
        print(f"{name:<22}{t * 1e6:>10.1f}{t / plain:>15.3f}")
    print(f"refused: {refused.store.deliveries().__len__()} delivery records, "
          f"{refused.retries} waiting to retry; 5 s late: {delayed.retries} waiting, "
          f"queue dropped {sum(delayed.dropped.values())}")
    for dispatcher in (refused, delayed):
        dispatcher.close(0.5)
    slow.stop()


def bench_journal(calls: int = 20_000) -> None:
    from aimsec_core.alerts import Dispatcher
    from aimsec_core.incidents import IncidentSink, IncidentStore
    from aimsec_core.sinks import CallRecord
    from aimsec_core.verdict import Finding, Verdict

    def call(client: str, *findings: Finding) -> CallRecord:
        return CallRecord(Verdict(allowed=True, mode="monitor", model="digits",
                                  client=client, batch_size=16, findings=findings,
                                  input_hash="ab" * 16, timestamp=time.time()),
                          "flagged" if findings else "allowed", 0.0)

    clean = [call(f"203.0.113.{i % 300}") for i in range(calls)]
    flagged = [call(f"203.0.113.{i % 300}",
                    Finding("range", "sample 3: value 7.5 above 1.0", severity="medium",
                            score=7.5)) for i in range(calls)]
    with tempfile.TemporaryDirectory() as folder:
        sinks = {}
        for name, journal in (("journal off", False), ("journal on", True)):
            store = IncidentStore(Path(folder) / "incidents.sqlite3")
            dispatcher = Dispatcher(store, None, capacity=100_000, start=False,
                                    journal=journal)
            sinks[name] = (dispatcher, IncidentSink(dispatcher))

        def run(sink: IncidentSink, dispatcher: Dispatcher, events: list) -> float:
            start = time.perf_counter()
            for event in events:
                sink.record(event)
            spent = time.perf_counter() - start
            dispatcher.pump()  # written off the clock, as the worker does
            return spent / len(events)

        timings: dict[tuple[str, str], list[float]] = {}
        for _ in range(5):  # interleaved rounds
            for kind, events in (("clean", clean), ("flagged", flagged)):
                for name, (dispatcher, sink) in sinks.items():
                    timings.setdefault((kind, name), []).append(
                        run(sink, dispatcher, events))
        print(f"incident sink per call, {calls} calls x 5 rounds (medians, us/call)")
        print(f"{'call':<10}{'journal off':>14}{'journal on':>14}{'added':>10}")
        for kind in ("clean", "flagged"):
            off = statistics.median(timings[(kind, "journal off")]) * 1e6
            on = statistics.median(timings[(kind, "journal on")]) * 1e6
            print(f"{kind:<10}{off:>14.2f}{on:>14.2f}{on - off:>10.2f}")
        for dispatcher, _ in sinks.values():
            dispatcher.close(5)


def bench_writes(rounds: int = 40, groups: int = 500) -> None:
    from aimsec_core.alerts import Dispatcher
    from aimsec_core.incidents import IncidentStore, Occurrence

    with tempfile.TemporaryDirectory() as folder:
        store = IncidentStore(Path(folder) / "incidents.sqlite3")
        dispatcher = Dispatcher(store, None, capacity=groups, start=False)
        start = time.perf_counter()
        for _ in range(rounds):
            now = time.time()
            for g in range(groups):
                dispatcher.submit(Occurrence("m", "range", f"client-{g}", "medium", now, now))
            dispatcher.pump()
        batched = rounds * groups / (time.perf_counter() - start)
        start = time.perf_counter()
        n = 2000
        for i in range(n):
            now = time.time()
            store.record([Occurrence("m", "range", f"client-{i % groups}", "medium", now,
                                     now)])
        single = n / (time.perf_counter() - start)
        total = sum(i.count for i in store.incidents(limit=10_000))
    print(f"incident updates/s, one process: {batched:,.0f} batched by the dispatcher "
          f"({groups} per transaction), {single:,.0f} one transaction each "
          f"(target >= 2,000); {total:,} occurrences stored")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--journal-only", action="store_true",
                        help="measure only what the incident journal adds")
    args = parser.parse_args()
    if args.journal_only:
        bench_journal()
        return
    os.environ.setdefault("SECURITY_LOG_PATH", tempfile.mkdtemp())
    bench_predict(args.calls)
    bench_journal()
    bench_writes()


if __name__ == "__main__":
    main()
