"""Hostile checks of the Prometheus metrics: the documented names, types and labels, no
client-controlled label value, exact counts under threads, one set of collectors per
registry however it is built, and counts across a fork."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

import aimsec_core
from aimsec_core.alerts import security_sinks
from aimsec_core.audit import AuditLog
from aimsec_core.metrics import Metrics, MetricsSink, metrics_for

#: README "Metrics": family -> (type, labels)
DOCUMENTED = {
    "aimsec_calls": ("counter", {"model", "outcome"}),
    "aimsec_guard_latency_seconds": ("histogram", {"model"}),
    "aimsec_findings": ("counter", {"model", "check", "severity"}),
    "aimsec_incidents": ("counter", {"severity"}),
    "aimsec_alerts": ("counter", {"channel", "status"}),
    "aimsec_alert_queue_depth": ("gauge", set()),
    "aimsec_alert_queue_dropped": ("counter", {"severity"}),
}


def _model() -> LogisticRegression:
    return LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])


def test_the_exposition_has_the_documented_families_and_no_client_values(tmp_path):
    registry = CollectorRegistry()
    hostile = 'evil",client="x'  # a client id that tries to break out of a label value
    guarded = aimsec_core.guard(_model(), name="m", constraints={"max_value": 1.0},
                                policy=False, sinks=security_sinks(
                                    registry=registry, incidents=tmp_path / "i.sqlite3",
                                    alerts=False))
    with aimsec_core.client(hostile):
        guarded.predict(np.eye(4))
        with pytest.raises(aimsec_core.ValueRangeError):
            guarded.predict(np.eye(4) * 5)
    guarded.close()
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)
                if f.name in DOCUMENTED}
    assert set(families) == set(DOCUMENTED)
    for name, (kind, labels) in DOCUMENTED.items():
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
    assert "evil" not in text and "client" not in text
    value = registry.get_sample_value
    assert value("aimsec_calls_total", {"model": "m", "outcome": "invalid"}) == 1
    assert value("aimsec_incidents_total", {"severity": "medium"}) == 1


def test_metrics_built_directly_and_through_metrics_for_share_the_registry(tmp_path):
    registry = CollectorRegistry()
    direct = Metrics(registry)
    assert metrics_for(registry) is direct
    assert Metrics(registry) is direct  # a second direct build: no duplicate registration
    assert copy.deepcopy(direct) is direct and copy.copy(direct) is direct
    first = aimsec_core.guard(_model(), name="m", policy=False, sinks=[MetricsSink(direct)])
    second = aimsec_core.guard(_model(), name="m", policy=False,
                               sinks=security_sinks(registry=registry, incidents=False,
                                                    alerts=False))
    first.predict(np.eye(4))
    second.predict(np.eye(4))
    assert registry.get_sample_value("aimsec_calls_total",
                                     {"model": "m", "outcome": "allowed"}) == 2


def test_counts_are_exact_under_threads_and_equal_the_audit_lines(tmp_path):
    registry = CollectorRegistry()
    audit = tmp_path / "audit.jsonl"
    guarded = aimsec_core.guard(_model(), name="t", constraints={"max_value": 1.0},
                                policy=False, sinks=[AuditLog(file=audit), MetricsSink(
                                    metrics_for(registry))])
    good, bad = np.eye(4)[:1], np.eye(4)[:1] * 5

    def work(i: int) -> None:
        with aimsec_core.client(f"c{i}"):
            for k in range(1000):
                try:
                    guarded.predict(bad if k % 3 == 0 else good)
                except aimsec_core.ValueRangeError:
                    pass

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    refused = sum(1 for line in lines if line["findings"])
    value = registry.get_sample_value
    assert len(lines) == 8000 and refused == 8 * 334
    assert value("aimsec_calls_total", {"model": "t", "outcome": "allowed"}) == 8000 - refused
    assert value("aimsec_calls_total", {"model": "t", "outcome": "invalid"}) == refused
    assert value("aimsec_findings_total",
                 {"model": "t", "check": "range", "severity": "medium"}) == refused
    assert value("aimsec_guard_latency_seconds_count", {"model": "t"}) == 8000


_FORK = """
import os, sys
import numpy as np
from prometheus_client import CollectorRegistry, generate_latest, multiprocess, REGISTRY
from sklearn.linear_model import LogisticRegression
import aimsec_core
model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
guarded = aimsec_core.guard(model, name="f", policy=False, incidents=False, alerts=False)
guarded.predict(np.eye(4))
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    guarded.predict(np.eye(4)); guarded.predict(np.eye(4))
    os.write(write, str(REGISTRY.get_sample_value(
        "aimsec_calls_total", {"model": "f", "outcome": "allowed"})).encode())
    os._exit(0)
os.waitpid(pid, 0)
child = float(os.read(read, 64))
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
else:
    registry = REGISTRY
print(child, registry.get_sample_value("aimsec_calls_total",
                                       {"model": "f", "outcome": "allowed"}))
"""


@pytest.mark.parametrize("multiprocess, expected", [
    (False, "3.0 1.0"),  # the child starts from its parent's counts; each keeps its own
    (True, "2.0 3.0"),  # prometheus_client's multiprocess mode: per process, summed
])
def test_counts_across_a_fork_are_as_documented(tmp_path, multiprocess, expected):
    env = {"SECURITY_LOG_PATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    import os
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    if multiprocess:
        (tmp_path / "prom").mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prom")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_FORK)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == expected


_POOL = """
import multiprocessing, os, sys
import numpy as np


def work(calls):
    from sklearn.linear_model import LogisticRegression
    import aimsec_core
    model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    guarded = aimsec_core.guard(model, name="p", mode="monitor", policy=False, incidents=False,
                                alerts=False, constraints={"max_value": 1})
    for i in range(calls):
        guarded.predict(np.eye(4) * (5 if i % 4 == 0 else 1))
    return os.getpid()


if __name__ == "__main__":
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess
    with multiprocessing.get_context(sys.argv[1]).Pool(3) as pool:
        pids = pool.map(work, [40, 40, 40])
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    print(generate_latest(registry).decode())
"""


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_worker_processes_in_multiprocess_mode_sum_into_one_scrape(tmp_path, method):
    """A pool of workers in prometheus_client's multiprocess mode: a scrape through a
    MultiProcessCollector sums their counts, and the queue-depth gauge is one series (it
    was one per process id, ``{pid="..."}``, a series more for every recycled worker, kept
    for ever in the folder)."""
    import os
    (tmp_path / "prom").mkdir()
    script = tmp_path / "pool.py"
    script.write_text(textwrap.dedent(_POOL))
    env = {"SECURITY_LOG_PATH": str(tmp_path / "logs"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "AIMSEC_JIT": "0",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    done = subprocess.run([sys.executable, str(script), method], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    families = {f.name: f for f in text_string_to_metric_families(done.stdout)}
    calls = {s.labels["outcome"]: s.value for s in families["aimsec_calls"].samples
             if s.name == "aimsec_calls_total"}
    assert calls == {"allowed": 90.0, "invalid": 30.0}
    depth = families["aimsec_alert_queue_depth"].samples
    assert [(s.labels, s.value) for s in depth] == [({}, 0.0)]
    audit = (tmp_path / "logs" / "audit.jsonl").read_text().splitlines()
    assert len(audit) == 120
