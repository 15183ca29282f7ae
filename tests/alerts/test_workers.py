"""Several worker processes sharing one audit trail, one incident database and one Redis
for alert groups, as a pre-fork server's workers or a ``multiprocessing`` pool do: every
call is one line of one intact chain, every finding is counted once in one incident per
(model, threat, client), and each group's first message is sent once between them."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from aimsec_core.audit.verify import verify_trail

from .workers import work

WORKERS, CALLS = 3, 150


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_workers_share_the_trail_the_incidents_and_the_alert_groups(
        tmp_path, monkeypatch, method, smtp_server, redis_server):
    logs = tmp_path / "security_logs"
    for name, value in {"SECURITY_LOG_PATH": str(logs), "AIMSEC_REDIS_URL": redis_server.url,
                        "ALERT_SMTP_SERVER": "127.0.0.1",
                        "ALERT_SMTP_PORT": str(smtp_server.port), "ALERT_SMTP_TLS": "none",
                        "ALERT_RECIPIENTS": "sec@example.org", "AIMSEC_ALERT_SEVERITY": "medium",
                        "AIMSEC_JIT": "0"}.items():
        monkeypatch.setenv(name, value)
    with multiprocessing.get_context(method).Pool(WORKERS) as pool:
        assert pool.map(work, [(seed, CALLS) for seed in range(WORKERS)]) == [True] * WORKERS

    report = verify_trail(logs)
    assert report.intact and report.lines == WORKERS * CALLS

    with sqlite3.connect(logs / "incidents.sqlite3") as db:
        rows = db.execute("SELECT client, count FROM incidents WHERE threat = 'range' "
                          "ORDER BY client").fetchall()
    flagged = CALLS // 5 * WORKERS  # i % 5 == 0, spread evenly over the 3 clients
    assert rows == [(f"c{n}", flagged // 3) for n in range(3)]

    firsts = [m.message["Subject"] for m in smtp_server.inbox.messages
              if "(new incident group)" in m.message.get_body().get_content()]
    assert sorted(s.split(" from ")[1].split(" ")[0] for s in firsts) == ["c0", "c1", "c2"]
