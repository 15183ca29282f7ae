"""Folding audit entries into counts as they stream past, in bounded memory.

Nothing here keeps a line: every structure is capped whatever the trail's length —
time buckets (at most :data:`MAX_BUCKETS`, widening as the period grows), model and check
names (at most :data:`MAX_NAMES` each, the rest counted as ``"other"``), latency
(:class:`~.sketches.LogHistogram`), clients (:class:`~.sketches.HeavyHitters`) and
suspicion (fixed bins).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .records import DECISIONS, QUERY_ATTACK_CHECKS, AuditEntry
from .sketches import HeavyHitters, LogHistogram

#: Bucket widths in seconds, each a multiple of the one before, so buckets merge exactly.
BUCKET_WIDTHS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
                 7 * 86400, 28 * 86400, 364 * 86400)
MAX_BUCKETS = 200
MAX_NAMES = 64
OTHER = "other"
#: Suspicion histogram: bins of SUSPICION_STEP from 0; the last bin holds everything above.
SUSPICION_STEP = 0.25
SUSPICION_BINS = 160
#: Calls kept per client in the top-client sketches (exact below this many clients).
CLIENT_CAPACITY = 1024


class Names:
    """Interns at most ``limit`` distinct names; later newcomers become ``"other"``."""

    def __init__(self, limit: int = MAX_NAMES) -> None:
        self.limit = limit
        self.seen: set[str] = set()
        self.folded = 0  #: how many distinct names were folded into "other"

    def __call__(self, name: str) -> str:
        if name in self.seen:
            return name
        if len(self.seen) < self.limit:
            self.seen.add(name)
            return name
        self.folded += 1
        return OTHER


class Timeline:
    """Calls per decision and findings per check, per time bucket.

    The bucket width is the smallest of :data:`BUCKET_WIDTHS` that keeps at most
    ``max_buckets`` buckets; it widens (merging buckets) as later entries stretch the span.
    """

    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self.max_buckets = max_buckets
        self.width = BUCKET_WIDTHS[0]
        self.decisions: dict[int, Counter[str]] = {}
        self.checks: dict[int, Counter[str]] = {}

    def add(self, time: float, decision: str, checks: tuple[str, ...]) -> None:
        key = int(time // self.width)
        bucket = self.decisions.get(key)
        if bucket is None:
            bucket = self.decisions[key] = Counter()
            self.checks[key] = Counter()
            if len(self.decisions) > self.max_buckets:
                self._widen()
                key = int(time // self.width)
                bucket = self.decisions[key]
        bucket[decision] += 1
        if checks:
            self.checks[key].update(checks)

    def fit(self, first: float, last: float) -> None:
        """Widen the buckets until ``first`` to ``last`` spans at most ``max_buckets`` of
        them, so that on a chart of that span each bar is at least 1/``max_buckets`` wide
        (a few calls years apart would otherwise be minute-wide bars no one can see)."""
        while (last - first) / self.width > self.max_buckets:
            self._merge()

    def _widen(self) -> None:
        while len(self.decisions) > self.max_buckets:
            self._merge()

    def _merge(self) -> None:
        """Merge the buckets into the next wider width."""
        wider = next((w for w in BUCKET_WIDTHS if w > self.width), self.width * 2)
        merged_decisions: dict[int, Counter[str]] = {}
        merged_checks: dict[int, Counter[str]] = {}
        for key, counts in self.decisions.items():
            new = key * self.width // wider
            merged_decisions.setdefault(new, Counter()).update(counts)
            merged_checks.setdefault(new, Counter()).update(self.checks[key])
        self.width, self.decisions, self.checks = wider, merged_decisions, merged_checks


@dataclass
class DetectionStats:
    """What the detectors saw for one model, over the calls no other check objected to.

    ``screened`` samples were scored, ``above`` of them exceeded the threshold: their share
    is the live counterpart of the calibrated false-positive rate ``fpr``.
    """

    calls: int = 0
    screened: int = 0
    above: int = 0
    threshold: float | None = None
    fpr: float | None = None
    thresholds: set[float] = field(default_factory=set)
    histogram: list[int] = field(default_factory=lambda: [0] * (SUSPICION_BINS + 1))
    #: per client, samples above the threshold and samples screened (the busiest only)
    above_by_client: HeavyHitters[str] = field(
        default_factory=lambda: HeavyHitters(CLIENT_CAPACITY))
    screened_by_client: HeavyHitters[str] = field(
        default_factory=lambda: HeavyHitters(CLIENT_CAPACITY))

    def add(self, suspicion_max: float, threshold: float, fpr: float | None, above: int,
            samples: int, client: str) -> None:
        self.calls += 1
        screened = max(samples, above, 1)
        self.screened += screened
        self.above += above
        self.screened_by_client.add(client, screened)
        if above:
            self.above_by_client.add(client, above)
        self.threshold, self.fpr = threshold, fpr
        if len(self.thresholds) < 16:
            self.thresholds.add(threshold)
        # Compared before any int(): an infinite suspicion (written as "inf") or one whose
        # quotient overflows lands in the last bin instead of raising OverflowError.
        bins = suspicion_max / SUSPICION_STEP if suspicion_max > 0 else 0.0
        self.histogram[SUSPICION_BINS if bins >= SUSPICION_BINS else int(bins)] += 1


class Aggregator:
    """Counts over a stream of :class:`AuditEntry`, in memory independent of its length."""

    def __init__(self) -> None:
        self.models, self.check_names = Names(), Names()
        self.timeline = Timeline()
        self.decisions: Counter[str] = Counter()
        self.by_model: dict[str, Counter[str]] = {}
        self.findings_by_check: Counter[str] = Counter()
        self.refusals_by_check: Counter[str] = Counter()
        self.latency = LogHistogram()
        self.latency_by_decision = {d: LogHistogram() for d in (*DECISIONS, OTHER)}
        self.clients_by_calls: HeavyHitters[str] = HeavyHitters(CLIENT_CAPACITY)
        self.clients_by_refusals: HeavyHitters[str] = HeavyHitters(CLIENT_CAPACITY)
        self.clients_by_query_attacks: HeavyHitters[str] = HeavyHitters(CLIENT_CAPACITY)
        self.refusals_by_client_check: HeavyHitters[tuple[str, str]] = HeavyHitters(
            CLIENT_CAPACITY)
        self.detection: dict[str, DetectionStats] = {}
        self.undetected_calls: Counter[str] = Counter()  #: screened calls with no detection
        self.samples = 0
        self.flagged_samples = 0
        self.first: float | None = None
        self.last: float | None = None

    @property
    def calls(self) -> int:
        return sum(self.decisions.values())

    def add(self, entry: AuditEntry) -> None:
        model = entry.model if entry.model in self.models.seen else self.models(entry.model)
        checks = entry.checks and tuple(self.check_names(c) for c in entry.checks)
        decision = entry.decision
        self.decisions[decision] += 1
        counts = self.by_model.get(model)
        if counts is None:
            counts = self.by_model[model] = Counter()
        counts[decision] += 1
        self.timeline.add(entry.time, decision, checks)
        self.samples += entry.batch_size
        self.flagged_samples += entry.flagged
        if self.first is None or entry.time < self.first:
            self.first = entry.time
        if self.last is None or entry.time > self.last:
            self.last = entry.time
        if entry.latency_ms is not None:
            self.latency.add(entry.latency_ms)
            self.latency_by_decision[decision].add(entry.latency_ms)
        client = entry.client
        self.clients_by_calls.add(client)
        self.findings_by_check.update(checks)
        if decision == "rejected":
            self.refusals_by_check.update(checks)
            self.clients_by_refusals.add(client)
            for check in checks:
                self.refusals_by_client_check.add((client, check))
        attacks = sum(1 for c in checks if c in QUERY_ATTACK_CHECKS)
        if attacks:
            self.clients_by_query_attacks.add(client, attacks)
        self._add_detection(entry, model, checks)

    def _add_detection(self, entry: AuditEntry, model: str, checks: tuple[str, ...]) -> None:
        # The drift signal is about inputs every other check found clean: a call refused
        # for its range or its query pattern says nothing about the detectors' calibration.
        if any(c != "adversarial" for c in checks):
            return
        found = entry.detection
        if found is None:
            if entry.decision in ("allowed", "flagged", "rejected"):
                self.undetected_calls[model] += 1
            return
        stats = self.detection.get(model)
        if stats is None:
            stats = self.detection[model] = DetectionStats()
        stats.add(found.suspicion_max, found.threshold, found.fpr, found.above,
                  entry.batch_size, entry.client)
