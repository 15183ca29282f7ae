"""The report as data: what ``report.json`` holds and the HTML page shows.

:func:`build_report` turns an :class:`~.aggregate.Aggregator` (and the incidents and
recommendations) into plain dataclasses; :meth:`Report.as_dict` is the JSON document.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from .aggregate import SUSPICION_STEP, Aggregator, DetectionStats
from .incidents import IncidentsSection
from .reader import ReadStats
from .records import DECISIONS
from .sketches import LogHistogram

FORMAT = "aimsec-report/1"
PERCENTILES = (50, 90, 95, 99)
TOP_CLIENTS = 10
#: A drift signal needs this many screened samples, and the observed share must exceed the
#: calibrated rate by this many binomial standard deviations.
DRIFT_MIN_SAMPLES = 100
DRIFT_SIGMAS = 3.0
#: A client is a source of the excess with at least this many samples above the threshold.
SOURCE_MIN_ABOVE = 5
#: Sources hold at most this share of the screened samples: most of the traffic drifting
#: is drift, whoever sends it.
SOURCES_MAX_SHARE = 0.5


@dataclass
class Period:
    since: str | None
    until: str | None
    model: str | None
    first_call: str | None
    last_call: str | None


@dataclass
class Latency:
    """Guard latency in milliseconds, within ``relative_error`` of the true percentile."""

    relative_error: float
    calls: int
    percentiles: dict[str, float | None]
    maximum: float | None
    by_decision: dict[str, dict[str, float | None]]


@dataclass
class TimeBucket:
    start: str
    decisions: dict[str, int]
    checks: dict[str, int]


@dataclass
class ClientCount:
    client: str
    count: int


@dataclass
class ClientCheckCount:
    client: str
    check: str
    count: int


@dataclass
class TopClients:
    """Counts are exact when ``exact``; otherwise each may fall short by ``error_bound``.
    ``by_refusing_check`` pairs clients with the check that refused them."""

    by_calls: list[ClientCount]
    by_refusals: list[ClientCount]
    by_query_attacks: list[ClientCount]
    by_refusing_check: list[ClientCheckCount]
    exact: bool
    error_bound: int


@dataclass
class DriftSource:
    """A client whose own samples above the threshold are far beyond the calibrated rate
    (``screened`` is an upper bound where the client counters overflowed, ``above`` a
    lower one: the claim errs towards drift)."""

    client: str
    screened: int
    above: int


@dataclass
class DetectionSection:
    """One model's suspicion against its calibrated threshold.

    ``histogram`` counts calls by their largest suspicion in bins of ``bin_width`` from 0
    (the last bin holds everything above). ``observed_rate`` is the share of screened
    samples above the threshold among calls no other check objected to. An excess over the
    calibrated ``fpr`` comes from the data or the model changing (drift) or from a few
    clients sending adversarial inputs (an attack): ``sources`` are the fewest clients
    whose removal leaves the rest of the traffic (``rest_rate``, at least
    ``DRIFT_MIN_SAMPLES`` samples) within the calibrated rate, each itself far beyond it;
    empty where no such few clients explain it. ``drift`` is true when the rate of the
    traffic outside ``sources`` exceeds ``fpr`` by more than ``DRIFT_SIGMAS`` binomial
    standard deviations (with at least ``DRIFT_MIN_SAMPLES`` samples).
    """

    model: str
    calls: int
    screened: int
    above: int
    threshold: float | None
    fpr: float | None
    observed_rate: float | None
    z_score: float | None
    drift: bool
    recalibrated: bool
    bin_width: float
    histogram: list[int]
    sources: list[DriftSource] = field(default_factory=list)
    rest_rate: float | None = None


@dataclass
class Recommendation:
    """One thing to do, how urgent (``priority``: critical/high/medium/low), why
    (``evidence``: the numbers it rests on) and where the page shows them (``section``)."""

    priority: str
    title: str
    action: str
    evidence: dict[str, Any]
    section: str


@dataclass
class Report:
    format: str
    generated: str
    period: Period
    sources: dict[str, Any]
    totals: dict[str, int]
    samples: int
    flagged_samples: int
    by_model: dict[str, dict[str, int]]
    refusals_by_check: dict[str, int]
    findings_by_check: dict[str, int]
    timeline_bucket_seconds: int
    timeline: list[TimeBucket]
    latency: Latency
    top_clients: TopClients
    detection: list[DetectionSection]
    models_without_detection: dict[str, int]
    incidents: IncidentsSection
    recommendations: list[Recommendation] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(self.totals.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def _percentiles(histogram: LogHistogram) -> dict[str, float | None]:
    return {f"p{p}": _rounded(histogram.quantile(p / 100)) for p in PERCENTILES}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _latency(agg: Aggregator) -> Latency:
    return Latency(
        relative_error=agg.latency.relative_error, calls=agg.latency.total,
        percentiles=_percentiles(agg.latency),
        maximum=_rounded(agg.latency.maximum) if agg.latency.total else None,
        by_decision={d: _percentiles(h) for d, h in agg.latency_by_decision.items()
                     if h.total})


def _clients(agg: Aggregator) -> TopClients:
    sketches = (agg.clients_by_calls, agg.clients_by_refusals, agg.clients_by_query_attacks)
    every = (*sketches, agg.refusals_by_client_check)
    pairs = [ClientCheckCount(c, check, n)
             for (c, check), n in agg.refusals_by_client_check.top(TOP_CLIENTS)]
    return TopClients(*([ClientCount(c, n) for c, n in s.top(TOP_CLIENTS)] for s in sketches),
                      by_refusing_check=pairs,
                      exact=all(s.exact for s in every),
                      error_bound=max(s.error_bound for s in every))


def drift_test(screened: int, above: int, fpr: float | None) -> tuple[float | None, float | None,
                                                                       bool]:
    """``(observed rate, z-score, drift)`` for ``above`` of ``screened`` samples against a
    calibrated rate ``fpr`` (one-sided binomial test, normal approximation)."""
    if screened == 0:
        return None, None, False
    rate = above / screened
    if fpr is None or not 0 < fpr < 1:
        return rate, None, False
    z = (above - fpr * screened) / math.sqrt(screened * fpr * (1 - fpr))
    return rate, round(z, 2), screened >= DRIFT_MIN_SAMPLES and z > DRIFT_SIGMAS


def _detection(model: str, stats: DetectionStats) -> DetectionSection:
    rate, z, _ = drift_test(stats.screened, stats.above, stats.fpr)
    sources, screened, above = drift_sources(stats)
    rest_rate, _, drift = drift_test(screened, above, stats.fpr)
    last = max((i for i, n in enumerate(stats.histogram) if n), default=0)
    return DetectionSection(
        model=model, calls=stats.calls, screened=stats.screened, above=stats.above,
        threshold=stats.threshold, fpr=stats.fpr, observed_rate=rate, z_score=z,
        drift=drift, recalibrated=len(stats.thresholds) > 1, bin_width=SUSPICION_STEP,
        histogram=stats.histogram[:last + 1], sources=sources, rest_rate=rest_rate)


def drift_sources(stats: DetectionStats) -> tuple[list[DriftSource], int, int]:
    """The few clients an excess above the threshold comes from, and the samples screened
    and above outside them: clients are taken by their samples above the threshold, most
    first (at most ``TOP_CLIENTS``), while the traffic left still drifts, skipping any
    not itself ``DRIFT_SIGMAS`` beyond the calibrated rate (a busy client has many samples
    above at the calibrated rate, and must not hide a smaller attacker); they count as
    sources only if the traffic left (at least ``DRIFT_MIN_SAMPLES`` samples, and at least
    ``1 - SOURCES_MAX_SHARE`` of all screened) then no longer drifts: a few clients, not
    most of the traffic. An excess spread over every client is drift, however many
    clients there are."""
    fpr, screened, above = stats.fpr, stats.screened, stats.above
    picked: list[DriftSource] = []
    known = stats.screened_by_client
    for client, client_above in stats.above_by_client.top(TOP_CLIENTS):
        if not drift_test(screened, above, fpr)[2]:
            break
        # a lower bound above and an upper bound screened: the claim errs towards drift
        client_screened = min(screened, max(client_above, known.counts.get(client, 0)
                                            + known.error_bound))
        if client_above < SOURCE_MIN_ABOVE:
            break  # the rest have fewer still
        z = drift_test(client_screened, client_above, fpr)[1]
        if z is None or z <= DRIFT_SIGMAS:
            continue  # a busy client at the calibrated rate: many above, but not a source
        picked.append(DriftSource(client, client_screened, client_above))
        screened, above = screened - client_screened, above - client_above
    if (picked and screened >= max(DRIFT_MIN_SAMPLES,
                                   (1 - SOURCES_MAX_SHARE) * stats.screened)
            and not drift_test(screened, above, fpr)[2]):
        return picked, screened, above
    return [], stats.screened, stats.above


def build_report(agg: Aggregator, stats: ReadStats, incidents: IncidentsSection, *,
                 since: datetime | None, until: datetime | None, model: str | None,
                 generated: datetime) -> Report:
    """The report of what ``agg`` counted (recommendations are added by the caller)."""
    if agg.first is not None and agg.last is not None:
        agg.timeline.fit(agg.first, agg.last)
    width = agg.timeline.width
    timeline = [TimeBucket(_iso(key * width) or "", dict(agg.timeline.decisions[key]),
                           dict(agg.timeline.checks[key]))
                for key in sorted(agg.timeline.decisions)]
    totals = {d: agg.decisions.get(d, 0) for d in DECISIONS}
    if agg.decisions.get("other"):
        totals["other"] = agg.decisions["other"]
    return Report(
        format=FORMAT, generated=generated.isoformat(),
        period=Period(since.isoformat() if since else None,
                      until.isoformat() if until else None, model,
                      _iso(agg.first), _iso(agg.last)),
        sources={"files": stats.files, "files_rotated_away": stats.vanished,
                 "bytes": stats.bytes, "lines": stats.lines,
                 "used": stats.used, "wrong_type": stats.wrong_type,
                 "outside_period_or_model": stats.outside,
                 "malformed": stats.malformed, "oversized": stats.oversized,
                 "chain": stats.chain.as_dict(),
                 "models_folded_into_other": agg.models.folded,
                 "checks_folded_into_other": agg.check_names.folded},
        totals=totals, samples=agg.samples, flagged_samples=agg.flagged_samples,
        by_model={m: dict(c) for m, c in sorted(agg.by_model.items())},
        refusals_by_check=dict(agg.refusals_by_check.most_common()),
        findings_by_check=dict(agg.findings_by_check.most_common()),
        timeline_bucket_seconds=width, timeline=timeline, latency=_latency(agg),
        top_clients=_clients(agg),
        detection=[_detection(m, s) for m, s in sorted(agg.detection.items())],
        models_without_detection={m: n for m, n in sorted(agg.undetected_calls.items())
                                  if m not in agg.detection},
        incidents=incidents)
