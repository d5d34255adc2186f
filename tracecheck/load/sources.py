"""Where the accounting reads each hop's numbers, live or after the fact.

* :class:`LiveCounters`: the collector's and Tempo's ``/metrics`` scraped before the load (the
  :class:`Baseline`) and again while the hops settle. Immediate and exact to the span, but only
  for the one process each URL reaches, and only around a load this process runs.
* :class:`HistoryCounters`: the same counters as Prometheus scraped them (the local pipeline and
  ``stack/`` scrape the collector and Tempo), read as increases since the run's start from raw
  samples. Used by ``--account``, where the load is over or ran elsewhere; summed over every
  scraped collector and Tempo (a whole autoscaled fleet), at the scrape interval's resolution:
  a bound, never exact.
* :func:`found_count`: the run's spans in Tempo, by TraceQL metrics (exact: only the run's spans
  carry its run ID), per shard.
* :class:`SpanMetrics`: the load service's span-metrics calls in Prometheus, Tempo's or the
  OpenTelemetry connector's names.

Every increase is a dict of counter name to spans; a backend that cannot be asked raises a
:class:`~tracecheck.errors.BackendError`, which the accounting turns into an ERROR for that hop.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tracecheck.load._deps import (
    NAMES_REGEX,
    BackendError,
    Backends,
    Clock,
    CounterSnapshot,
    Naming,
    Settings,
    candidates,
    counter_increase,
    counter_snapshot,
    quote,
)
from tracecheck.load.counters import (
    DEFAULT_EXPORTERS,
    CollectorCounts,
    TempoCounts,
    collector_counts,
    tempo_counts,
)
from tracecheck.load.encode import RUN_ID_ATTRIBUTE, SHARD_ATTRIBUTE

__all__ = [
    "Baseline",
    "CounterSource",
    "HistoryCounters",
    "LiveCounters",
    "SpanMetrics",
    "found_count",
    "take_baseline",
]

# TraceQL metrics refuse a range over 3 h (query_frontend.metrics.max_duration).
MAX_METRICS_RANGE = 3 * 3600
# How far back a counter's last sample before a moment is looked for (Prometheus's lookback).
LOOKBACK_S = 300
#: Samples read to tell a scrape interval, and Prometheus's default interval when they cannot.
RESOLUTION_WINDOW_S = 120
DEFAULT_SCRAPE_INTERVAL_S = 60.0


class CounterSource(Protocol):
    """Increases of the collector's and Tempo's span counters since the load began."""

    exact: bool  # counts of one process read directly (else: Prometheus history, a bound)
    where: str

    def collector(self) -> dict[str, float]: ...

    def tempo(self) -> dict[str, float]: ...

    def fresh(self, group: str, after: float) -> bool:
        """Whether the ``group`` (collector, tempo) counters were read after ``after`` (unix
        seconds), so they include everything up to then."""
        ...

    def resolution(self, group: str) -> float:
        """Seconds between two readings of ``group`` that can differ: 0 for a live scrape, the
        scrape interval for Prometheus history (a count that stood still for less than that
        may only not have been scraped again)."""
        ...


@dataclass(slots=True)
class Baseline:
    """What the counters said just before a live load."""

    taken_at: float  # unix seconds
    collector: CollectorCounts | None = None
    collector_error: str = ""
    tempo: TempoCounts | None = None
    tempo_error: str = ""
    span_metrics: dict[Naming, CounterSnapshot] = field(default_factory=dict)
    span_metrics_error: str = ""
    errors: list[BackendError] = field(default_factory=list)  # in the order met


def take_baseline(
    settings: Settings,
    backends: Backends,
    *,
    service: str,
    clock: Clock,
    skip: frozenset[str] = frozenset(),
    receiver: str = "otlp",
    exporter: str = "",
) -> Baseline:
    """Read every counter the accounting will compare against; errors are kept, not raised."""
    timeout = settings.deadlines.preflight
    base = Baseline(taken_at=clock.time())
    if "collector" not in skip and settings.collector.metrics_url:
        try:
            exp = backends.collector().self_metrics(timeout=timeout)
            base.collector = collector_counts(exp, receiver=receiver, exporter=exporter)
        except BackendError as exc:
            base.collector_error = str(exc)
            base.errors.append(exc)
    if "tempo" not in skip:
        try:
            base.tempo = tempo_counts(
                backends.tempo().self_metrics(timeout=timeout), tenant=settings.collector.tenant
            )
        except BackendError as exc:
            base.tempo_error = str(exc)
            base.errors.append(exc)
    if "span-metrics" not in skip:
        try:
            base.span_metrics = SpanMetrics.snapshots(settings, backends, service, clock.time())
        except BackendError as exc:
            base.span_metrics_error = str(exc)
            base.errors.append(exc)
    return base


class LiveCounters:
    """Self-metrics scraped now, minus the :class:`Baseline`."""

    exact = True

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        baseline: Baseline,
        *,
        receiver: str = "otlp",
        exporter: str = "",
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.baseline = baseline
        self.receiver = receiver
        self.exporter = exporter
        self.where = settings.collector.metrics_url
        self.exporters: tuple[str, ...] = ()

    def collector(self) -> dict[str, float]:
        base = self.baseline.collector
        if base is None:
            raise BackendError(
                "collector", self.where, self.baseline.collector_error or "no baseline"
            )
        exp = self.backends.collector().self_metrics(timeout=self.settings.collector.timeout)
        now = collector_counts(exp, receiver=self.receiver, exporter=self.exporter)
        self.exporters = now.exporters
        out, reset = now.since(base)
        out["reset"] = float(reset)
        return out

    def tempo(self) -> dict[str, float]:
        base = self.baseline.tempo
        tempo = self.backends.tempo()
        if base is None:
            raise BackendError("tempo", tempo.address, self.baseline.tempo_error or "no baseline")
        now = tempo_counts(
            tempo.self_metrics(timeout=self.settings.tempo.timeout),
            tenant=self.settings.collector.tenant,
        )
        out, reset = now.since(base)
        out["reset"] = float(reset)
        return out

    def fresh(self, group: str, after: float) -> bool:
        return True  # scraped directly, now

    def resolution(self, group: str) -> float:
        return 0.0  # every reading is a new scrape


def _name(metric: str, total: bool = True) -> str:
    """A ``__name__`` matcher for a counter spelt with or without ``_total``."""
    base = metric.removesuffix("_total")
    return f'__name__=~"{base}(_total)?"' if total else f'__name__="{metric}"'


def snapshot_at(prom: Any, selector: str, at: float) -> CounterSnapshot:
    """:func:`counter_snapshot` as of ``at`` (unix seconds) rather than now: each series' last
    sample at or before that moment."""
    result = prom.query(f"{selector}[{LOOKBACK_S}s]", at=at)
    last = {frozenset(s.labels.items()): s.points[-1] for s in result.series if s.points}
    return CounterSnapshot(selector, at, last)


class HistoryCounters:
    """The counters' increases since ``since`` as Prometheus scraped them (every instance)."""

    exact = False

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        since: float,
        *,
        clock: Clock,
        receiver: str = "otlp",
        exporter: str = "",
    ) -> None:
        self.backends = backends
        self.clock = clock
        self.where = settings.prometheus.url
        rec = f',receiver="{receiver}"' if receiver else ""
        ex = f',exporter="{exporter}"' if exporter else f',exporter=~"{DEFAULT_EXPORTERS.pattern}"'
        tenant = f",tenant={quote(settings.collector.tenant)}" if settings.collector.tenant else ""
        self.selectors = {
            "collector": {
                "accepted": f"{{{_name('otelcol_receiver_accepted_spans')}{rec}}}",
                "refused": f"{{{_name('otelcol_receiver_refused_spans')}{rec}}}",
                "failed": f"{{{_name('otelcol_receiver_failed_spans')}{rec}}}",
                "sent": f"{{{_name('otelcol_exporter_sent_spans')}{ex}}}",
                "send_failed": f"{{{_name('otelcol_exporter_send_failed_spans')}{ex}}}",
                "enqueue_failed": f"{{{_name('otelcol_exporter_enqueue_failed_spans')}{ex}}}",
            },
            "tempo": {
                "received": f"{{{_name('tempo_distributor_spans_received_total')}{tenant}}}",
                "accepted": f"{{{_name('tempo_receiver_accepted_spans')}}}",
                "refused": f"{{{_name('tempo_receiver_refused_spans')}}}",
                "discarded": f"{{{_name('tempo_discarded_spans_total')}{tenant}}}",
                "generator_discarded": "{"
                + _name("tempo_metrics_generator_spans_discarded_total")
                + tenant
                + "}",
            },
        }
        self.queue = f'sum(otelcol_exporter_queue_size{{data_type="traces"{ex}}})'
        self.since = since
        self._bases: dict[str, CounterSnapshot] = {}
        self._fresh: dict[str, bool] = {}
        self._resolution: dict[str, float] = {}

    def _increase(self, key: str, selector: str) -> dict[frozenset[tuple[str, str]], float]:
        prom = self.backends.prometheus()
        base = self._bases.get(key)
        if base is None:
            base = self._bases[key] = snapshot_at(prom, selector, self.since)
        return counter_increase(prom, base, now=self.clock.time())

    def _group(self, group: str) -> dict[str, float]:
        out: dict[str, float] = {"reset": 0.0}
        for name, selector in self.selectors[group].items():
            per_series = self._increase(f"{group}.{name}", selector)
            if name in ("discarded", "generator_discarded"):
                for labels, value in per_series.items():
                    reason = dict(labels).get("reason", "")
                    if value:
                        key = f"{name}:{reason}"
                        out[key] = out.get(key, 0.0) + value
            else:
                out[name] = sum(per_series.values())
        return out

    def collector(self) -> dict[str, float]:
        out = self._group("collector")
        result = self.backends.prometheus().query(self.queue)
        out["queue_size"] = sum(s.value for s in result.samples if math.isfinite(s.value))
        return out

    def tempo(self) -> dict[str, float]:
        return self._group("tempo")

    def fresh(self, group: str, after: float) -> bool:
        """Every instance of the group was scraped after ``after`` (the oldest newest sample)."""
        if self._fresh.get(group):
            return True
        first = next(iter(self.selectors[group].values()))
        result = self.backends.prometheus().query(f"min(timestamp({first}))")
        newest = min((s.value for s in result.samples if math.isfinite(s.value)), default=0.0)
        self._fresh[group] = newest >= after
        return self._fresh[group]

    def resolution(self, group: str) -> float:
        """The group's scrape interval, as the spacing of its samples over the last two
        minutes shows it (the widest median gap of any instance); Prometheus's default, 60 s,
        when fewer than two samples tell."""
        if group not in self._resolution:
            first = next(iter(self.selectors[group].values()))
            result = self.backends.prometheus().query(f"{first}[{RESOLUTION_WINDOW_S}s]")
            gaps = [
                statistics.median(b[0] - a[0] for a, b in itertools.pairwise(pts))
                for pts in (s.points for s in result.series)
                if len(pts) >= 2
            ]
            self._resolution[group] = max(gaps, default=DEFAULT_SCRAPE_INTERVAL_S)
        return self._resolution[group]


def found_query(run_id: str) -> str:
    """The TraceQL metrics query counting the run's spans per shard."""
    return (
        f"{{ span.{RUN_ID_ATTRIBUTE} = {quote(run_id)} }} | count_over_time() "
        f"by (span.{SHARD_ATTRIBUTE})"
    )


def found_count(
    backends: Backends, run_id: str, start: float, end: float, *, timeout: float | None = None
) -> dict[int, int]:
    """Spans of run ``run_id`` stored in Tempo, per shard, over [start, end] (unix seconds).

    TraceQL metrics count by span start time; Tempo refuses a range over 3 h, so a longer window
    keeps its last 3 h. Only spans already searchable are counted (Tempo cuts a trace some
    seconds after its last span): the caller polls.
    """
    start = max(start, end - MAX_METRICS_RANGE + 1)
    series = backends.tempo().metrics_query_instant(
        found_query(run_id), start=start, end=end, timeout=timeout
    )
    out: dict[int, int] = {}
    for s in series:
        raw = s.labels.get(f"span.{SHARD_ATTRIBUTE}")
        try:
            shard = int(raw) if raw is not None and not isinstance(raw, (bytes, list, dict)) else -1
        except (TypeError, ValueError):
            shard = -1
        value = s.samples[-1][1] if s.samples else 0.0
        if math.isfinite(value) and value:
            out[shard] = out.get(shard, 0) + round(value)
    return out


class SpanMetrics:
    """Span-metrics calls of one service since a snapshot, in every watched naming family.

    A metrics-generator that restarted (Tempo's ``process_start_time_seconds`` later than a
    series' baseline sample) counts that series from zero again, and the first samples it
    writes after the restart can be refused by Prometheus (out of order): the series may then
    go from its old value straight to a higher new one, a reset no sample shows. So the first
    sample after the restart is counted whole (everything since the restart), not as a rise
    over the old value.
    """

    def __init__(
        self,
        backends: Backends,
        snapshots: Mapping[Naming, CounterSnapshot],
        *,
        restart_at: Callable[[], float | None] | None = None,
    ) -> None:
        self.backends = backends
        self.snaps = dict(snapshots)
        self.restart_at = restart_at or (lambda: tempo_start_time(backends))

    @staticmethod
    def families(settings: Settings, backends: Backends) -> tuple[Naming, ...]:
        names = backends.prometheus().label_values(
            "__name__", match=[f'{{__name__=~"{NAMES_REGEX}"}}']
        )
        return candidates(names, settings.smoke.span_metrics_naming)

    @classmethod
    def snapshots(
        cls,
        settings: Settings,
        backends: Backends,
        service: str,
        now: float,
        *,
        at: float | None = None,
    ) -> dict[Naming, CounterSnapshot]:
        """A baseline per family: now (live), or as of ``at`` (``--account``)."""
        prom = backends.prometheus()
        out = {}
        for fam in cls.families(settings, backends):
            selector = fam.selector(fam.calls, service)
            if at is None:
                out[fam] = counter_snapshot(prom, selector, now=now)
            else:
                out[fam] = snapshot_at(prom, selector, at)
        return out

    def increase(self, now: float) -> tuple[Naming | None, float]:
        """The family that rose most, and by how much."""
        best: tuple[Naming | None, float] = (None, 0.0)
        prom = self.backends.prometheus()
        restart = self.restart_at()
        for fam, snap in self.snaps.items():
            rose = increase_across_restart(prom, snap, now=now, restart_at=restart)
            if best[0] is None or rose > best[1]:
                best = (fam, rose)
        return best


def tempo_start_time(backends: Backends) -> float | None:
    """When the Tempo process (and so its metrics-generator) started; None if unknown."""
    try:
        exp = backends.tempo().self_metrics()
    except BackendError:
        return None
    return exp.value("process_start_time_seconds")


def increase_across_restart(
    prom: Any, base: CounterSnapshot, *, now: float, restart_at: float | None
) -> float:
    """:func:`~tracecheck.backends.prometheus.counter_increase` summed over the series, where
    a series whose baseline sample predates ``restart_at`` counts its first sample after the
    restart whole."""
    window = max(60, math.ceil(now - base.taken_at) + 60)
    result = prom.query(f"{base.selector}[{window}s]")
    total = 0.0
    for s in result.series:
        t0, prev = base.last.get(frozenset(s.labels.items()), (-math.inf, 0.0))
        restarted = restart_at is None or t0 >= restart_at
        for t, v in s.points:
            if t <= t0:
                continue
            if not restarted and t >= restart_at:
                total += v
                restarted = True
            else:
                total += v - prev if v >= prev else v
            prev = v
    return total
