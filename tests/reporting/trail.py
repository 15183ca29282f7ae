"""Audit trails written by the tests themselves, through the real AuditLog writer, with the
expected report numbers counted independently while writing."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aimsec_core import AuditLog, CallRecord, Finding, Verdict

T0 = 1_790_000_000.0  # 2026-09-21T...Z
THRESHOLD = 2.0
FPR = 0.05
HOSTILE_CLIENTS = (
    "<script>document.title='pwned'</script>",
    "\"><img src=x onerror=\"document.title='pwned'\">",
    "<img src=x onerror=document.body.setAttribute('data-pwned','1')>",
)


@dataclass
class Expected:
    decisions: Counter = field(default_factory=Counter)
    refusals_by_check: Counter = field(default_factory=Counter)
    refusals_by_client: Counter = field(default_factory=Counter)
    refusals_by_pair: Counter = field(default_factory=Counter)
    query_attacks_by_client: Counter = field(default_factory=Counter)
    screened: Counter = field(default_factory=Counter)   # per model
    above: Counter = field(default_factory=Counter)      # per model
    by_model: Counter = field(default_factory=Counter)
    times: list = field(default_factory=list)


def write_trail(folder: Path, calls: int = 600, seed: int = 0,
                clients: tuple[str, ...] = ("203.0.113.7", "198.51.100.23", "api-key:ab12",
                                            "attacker-1"),
                max_bytes: int = 30_000) -> Expected:
    """``calls`` audit lines over ``calls`` minutes from T0, rotating every ``max_bytes``.

    Model ``m-drift`` sees clean-looking samples above the threshold 20% of the time
    (against 5% calibrated); ``m-steady`` about 5%. ``attacker-1`` draws near-duplicate
    refusals.
    """
    rng = random.Random(seed)
    audit = AuditLog(folder, max_bytes=max_bytes, backups=500)
    expected = Expected()
    for i in range(calls):
        model = rng.choice(("m-drift", "m-steady"))
        client = rng.choice(clients)
        when = T0 + 60 * i
        batch = rng.randint(1, 3)
        share_above = 0.20 if model == "m-drift" else 0.05
        suspicion = tuple(rng.uniform(2.1, 6) if rng.random() < share_above
                          else rng.uniform(0, 1.9) for _ in range(batch))
        above = sum(s > THRESHOLD for s in suspicion)
        kind = ("near_duplicate" if client == "attacker-1" and rng.random() < 0.7
                else rng.choices(("clean", "range", "error"), (85, 10, 5))[0])
        findings: tuple[Finding, ...] = ()
        scores: dict = {"suspicion": suspicion}
        threshold: float | None = THRESHOLD
        if kind == "range":
            findings = (Finding("range", "values outside [0, 1]", samples=(0,)),)
            scores, threshold = {}, None  # validation refused it before the detectors
        elif kind == "near_duplicate":
            findings = (Finding("near_duplicate", "shares 40 of 50 hashes", samples=(0,)),)
            scores, threshold = {}, None
        elif above:
            findings = (Finding("adversarial", "suspicion above threshold",
                                samples=tuple(j for j, s in enumerate(suspicion)
                                              if s > THRESHOLD)),)
        outcome = ("error" if kind == "error" else "rejected" if findings else "allowed")
        flags = tuple(any(j in f.samples for f in findings) for j in range(batch))
        verdict = Verdict(allowed=not findings, mode="enforce", model=model, client=client,
                          batch_size=batch, flags=flags, findings=findings, scores=scores,
                          input_hash=f"{i:032x}", shape=(batch, 4), dtype="float32",
                          timestamp=when, threshold=threshold,
                          fpr=FPR if threshold is not None else None)
        audit.record(CallRecord(verdict, outcome, rng.uniform(0.1, 5) / 1000,
                                error="RuntimeError: boom" if kind == "error" else None))
        expected.decisions[outcome] += 1
        expected.by_model[model] += 1
        expected.times.append(when)
        if outcome == "rejected":
            for f in findings:
                expected.refusals_by_check[f.check] += 1
                expected.refusals_by_pair[(client, f.check)] += 1
            expected.refusals_by_client[client] += 1
        if kind == "near_duplicate":
            expected.query_attacks_by_client[client] += 1
        if threshold is not None:
            expected.screened[model] += batch
            expected.above[model] += above
    audit.flush()
    return expected


def write_screened(folder: Path, rates: dict[str, float], calls: int = 120,
                   seed: int = 0, model: str = "m") -> Counter:
    """``calls`` screened, clean-looking calls of one sample per client, a share ``rates
    [client]`` of them above the threshold (in shuffled order); returns each client's
    count above it."""
    rng = random.Random(seed)
    audit = AuditLog(folder)
    order = [client for client in rates for _ in range(calls)]
    rng.shuffle(order)
    above: Counter = Counter()
    for i, client in enumerate(order):
        hit = rng.random() < rates[client]
        suspicion = (rng.uniform(2.1, 6) if hit else rng.uniform(0, 1.9),)
        findings = (Finding("adversarial", "suspicion above threshold", samples=(0,)),
                    ) if hit else ()
        verdict = Verdict(allowed=not hit, mode="enforce", model=model, client=client,
                          batch_size=1, flags=(hit,), findings=findings,
                          scores={"suspicion": suspicion}, input_hash=f"{i:032x}",
                          shape=(1, 4), dtype="float32", timestamp=T0 + i,
                          threshold=THRESHOLD, fpr=FPR)
        audit.record(CallRecord(verdict, "rejected" if hit else "allowed", 0.001))
        above[client] += hit
    audit.flush()
    return above
