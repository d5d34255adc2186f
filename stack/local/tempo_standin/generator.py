"""One tenant's metrics-generator instance: span-metrics, service graphs, registry, remote write.

Behaviour reproduced (paths in grafana/tempo at tag v2.9.0; read for facts, nothing copied):

* Instance (modules/generator/instance.go, generator.go): created on the tenant's first span;
  ``preprocessSpans`` drops spans whose end time lies more than
  ``metrics_ingestion_time_range_slack`` (30 s) before or after now, from every processor,
  counted in ``tempo_metrics_generator_spans_discarded_total`` with reason
  ``outside_metrics_ingestion_slack``.
* Span metrics (processor/spanmetrics): ``traces_spanmetrics_calls_total``,
  ``traces_spanmetrics_latency`` (classic histogram in seconds, ``ExponentialBuckets(0.002, 2,
  14)`` then +Inf; a negative latency counts as 0), ``traces_spanmetrics_size_total`` (the span's
  proto size); labels service, span_name, span_kind, status_code.
* Service graphs (processor/servicegraphs): CLIENT (traceID, spanID) paired with SERVER
  (traceID, parentSpanID), PRODUCER/CONSUMER likewise with connection_type="messaging_system",
  within ``wait`` (10 s); an expired root SERVER span becomes ``client="user"``, an expired
  CLIENT span with a peer attribute ``server=<peer>``; histogram buckets
  ``ExponentialBuckets(0.1, 2, 8)``.
* Registry (registry/registry.go, counter.go, histogram.go): every ``collection_interval``
  (a ticker started with the instance) all series are appended with the collection time; a
  series seen for the first time is preceded by a 0 sample at the end of the previous minute
  (``getEndOfLastMinuteMs``: the collection time truncated to the minute, minus one second), for
  counters and for a histogram's ``_count`` and ``_bucket`` series, not ``_sum``; exemplars
  (label ``traceID``) only on ``_bucket`` series, the latest per bucket, cleared at every
  collection; ``max_active_series`` refuses new series (``series_limited_total``); a sweep every
  5 minutes drops series not updated for ``stale_duration``. A collection never fails because of
  remote write: it appends to a WAL that the queue reads (storage/instance.go).
* Storage (storage/instance.go, config_util.go): one Prometheus remote-write queue per target
  (:class:`RemoteWriteQueue`), exemplars always sent (``SendExemplars = true``),
  ``X-Scope-OrgID`` only for a tenant other than ``single-tenant``. No collection is made at
  shutdown (registry/job.go stops the ticker); what is queued is sent within
  ``remote_write_flush_deadline``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tempo_standin import TENANT
from tempo_standin.config import StandinConfig
from tempo_standin.model import SPAN_KIND_ENUM, STATUS_CODE_ENUM, SpanRecord
from tempo_standin.remote_write import RemoteWriteQueue, Series
from tempo_standin.selfmetrics import Child, MetricsRegistry

__all__ = [
    "SERVICE_GRAPH_BUCKETS",
    "SPANMETRICS_BUCKETS",
    "SUPPORTED_PROCESSORS",
    "Generator",
    "end_of_last_minute_ms",
    "format_le",
]

# processor/spanmetrics/config.go: ExponentialBuckets(0.002, 2, 14) = 0.002 .. 16.384.
SPANMETRICS_BUCKETS: tuple[float, ...] = tuple(0.002 * 2**n for n in range(14))
# processor/servicegraphs/config.go: ExponentialBuckets(0.1, 2, 8) = 0.1 .. 12.8.
SERVICE_GRAPH_BUCKETS: tuple[float, ...] = tuple(0.1 * 2**n for n in range(8))
# instance.go SupportedProcessors: the processor label of tempo_metrics_generator_active_processors.
SUPPORTED_PROCESSORS = (
    "service-graphs",
    "span-metrics",
    "local-blocks",
    "span-metrics-count",
    "span-metrics-latency",
    "span-metrics-size",
    "host-info",
)
STALE_SWEEP_PERIOD = 300.0  # registry.go: removeStaleSeries runs every 5 minutes

Labels = tuple[tuple[str, str], ...]


def format_le(bound: float) -> str:
    """``le`` as Go's ``strconv.FormatFloat(v, 'f', -1, 64)``: shortest decimal, no exponent."""
    text = repr(float(bound))
    if "e" in text or "E" in text:
        text = format(float(bound), ".17f").rstrip("0").rstrip(".")
    if text.endswith(".0"):
        text = text[:-2]
    return text


def end_of_last_minute_ms(now_ms: int) -> int:
    """registry.go ``getEndOfLastMinuteMs``: ``now`` truncated to the minute, minus one second
    (a collection at 12:35:20.123 gives 12:34:59.000)."""
    return now_ms - now_ms % 60_000 - 1_000


@dataclass(slots=True)
class _Counter:
    value: float = 0.0
    last_update: float = 0.0
    new: bool = True


@dataclass(slots=True)
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, last is +Inf
    total: float = 0.0
    count: int = 0
    last_update: float = 0.0
    new: bool = True
    exemplars: dict[int, tuple[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float, trace_hex: str) -> None:
        idx = len(self.bounds)  # sort.SearchFloat64s: the first bound >= value
        for i, b in enumerate(self.bounds):
            if value <= b:
                idx = i
                break
        self.counts[idx] += 1
        self.total += value
        self.count += 1
        if trace_hex:
            self.exemplars[idx] = (trace_hex, value)  # the latest per bucket


@dataclass
class RegistryMetrics:
    """The registry's self-metrics for one tenant (registry.go)."""

    active: Child
    max_active: Child
    added: Child
    removed: Child
    limited: Child
    collections: Child
    collections_failed: Child

    @classmethod
    def create(cls, metrics: MetricsRegistry, tenant: str) -> RegistryMetrics:
        p = "tempo_metrics_generator_registry_"
        return cls(
            active=metrics.gauge(p + "active_series", tenant=tenant),
            max_active=metrics.gauge(p + "max_active_series", tenant=tenant),
            added=metrics.counter(p + "series_added_total", tenant=tenant),
            removed=metrics.counter(p + "series_removed_total", tenant=tenant),
            limited=metrics.counter(p + "series_limited_total", tenant=tenant),
            collections=metrics.counter(p + "collections_total", tenant=tenant),
            collections_failed=metrics.counter(p + "collections_failed_total", tenant=tenant),
        )

    @classmethod
    def detached(cls) -> RegistryMetrics:
        """Children that are not exposed (a registry used before its instance exists)."""
        return cls(*(Child() for _ in range(7)))


class Registry:
    """Series of the generator (registry.go ManagedRegistry), collected into remote-write
    series."""

    def __init__(
        self,
        *,
        external: Labels,
        instance: str,
        stale_after: float,
        max_active_series: int = 0,
        metrics: RegistryMetrics | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, Labels], _Counter] = {}
        self._hists: dict[tuple[str, Labels], _Histogram] = {}
        self._const: Labels = (*external, ("__metrics_gen_instance", instance))
        self._stale_after = stale_after
        self._max_active = max_active_series
        self._active = 0
        self._last_sweep: float | None = None
        self.m = metrics or RegistryMetrics.detached()

    def _add_series(self, count: int) -> bool:
        """registry.go onAddMetricSeries: refuse when the limit would be passed."""
        if self._max_active and self._active + count > self._max_active:
            self.m.limited.inc()
            return False
        self._active += count
        self.m.added.inc(count)
        self.m.active.inc(count)
        return True

    def _remove_series(self, count: int) -> None:
        self._active -= count
        self.m.removed.inc(count)
        self.m.active.dec(count)

    def inc(self, name: str, labels: Labels, amount: float, now: float) -> None:
        with self._lock:
            c = self._counters.get((name, labels))
            if c is None:
                if not self._add_series(1):
                    return
                c = self._counters[(name, labels)] = _Counter()
            c.value += amount
            c.last_update = now

    def observe(
        self,
        name: str,
        labels: Labels,
        bounds: tuple[float, ...],
        value: float,
        trace_hex: str,
        now: float,
    ) -> None:
        with self._lock:
            h = self._hists.get((name, labels))
            if h is None:
                # histogram.go activeSeriesPerHistogramSerie: sum + count + buckets incl. +Inf.
                if not self._add_series(len(bounds) + 3):
                    return
                h = self._hists[(name, labels)] = _Histogram(bounds)
            h.observe(value, trace_hex)
            h.last_update = now

    def active_series(self) -> int:
        with self._lock:
            return self._active

    def _sweep(self, now: float) -> None:
        """registry.go removeStaleSeries (every 5 minutes): series idle for stale_duration."""
        if self._last_sweep is None:
            self._last_sweep = now
        if now - self._last_sweep < STALE_SWEEP_PERIOD:
            return
        self._last_sweep = now
        for key in [
            k for k, c in self._counters.items() if now - c.last_update > self._stale_after
        ]:
            del self._counters[key]
            self._remove_series(1)
        for key in [k for k, h in self._hists.items() if now - h.last_update > self._stale_after]:
            h = self._hists.pop(key)
            self._remove_series(len(h.bounds) + 3)

    def collect(self, now: float) -> list[Series]:
        """All series at ``now`` (ms precision); clears exemplars and 'new' flags."""
        now_ms = int(now * 1000)
        zero_ms = end_of_last_minute_ms(now_ms)
        out: list[Series] = []
        with self._lock:
            self._sweep(now)
            for (name, labels), c in self._counters.items():
                samples = ((0.0, zero_ms), (c.value, now_ms)) if c.new else ((c.value, now_ms),)
                c.new = False
                out.append(Series(self._labels(name, labels), samples))
            for (name, labels), h in self._hists.items():
                zero = ((0.0, zero_ms),) if h.new else ()
                out.append(Series(self._labels(f"{name}_sum", labels), ((h.total, now_ms),)))
                out.append(
                    Series(
                        self._labels(f"{name}_count", labels),
                        (*zero, (float(h.count), now_ms)),
                    )
                )
                cumulative = 0
                for i in range(len(h.bounds) + 1):
                    cumulative += h.counts[i]
                    le = format_le(h.bounds[i]) if i < len(h.bounds) else "+Inf"
                    exemplars: tuple[tuple[Labels, float, int], ...] = ()
                    if i in h.exemplars:
                        trace_hex, value = h.exemplars[i]
                        exemplars = (((("traceID", trace_hex),), value, now_ms),)
                    out.append(
                        Series(
                            self._labels(f"{name}_bucket", (*labels, ("le", le))),
                            (*zero, (float(cumulative), now_ms)),
                            exemplars,
                        )
                    )
                h.exemplars.clear()
                h.new = False
            # registry.go CollectMetrics: the gauges are set from what was collected.
            self.m.active.set(float(self._active))
            self.m.max_active.set(float(self._max_active))
        return out

    def _labels(self, name: str, labels: Labels) -> Labels:
        # Empty label values are dropped: Prometheus treats an empty label as absent.
        merged = dict(self._const)
        merged.update(labels)
        merged["__name__"] = name
        return tuple(sorted((k, v) for k, v in merged.items() if v != ""))


@dataclass(slots=True)
class _Edge:
    trace_id: bytes
    created: float
    connection_type: str = ""
    client: SpanRecord | None = None
    server: SpanRecord | None = None


class Generator:
    """One tenant's metrics-generator instance: feeds spans to the enabled processors and ships
    the registry by remote write. Nothing is exposed or started before the first span
    (generator.go getOrCreateInstance)."""

    def __init__(
        self,
        config: StandinConfig,
        metrics: MetricsRegistry,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        *,
        tenant: str = TENANT,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.log = log
        self.clock = clock
        self.tenant = tenant
        procs = set(config.processors)
        self.span_metrics = "span-metrics" in procs
        self.service_graphs = "service-graphs" in procs
        self.local_blocks = "local-blocks" in procs
        # The distributor forwards to the generator only when the tenant has processors
        # (distributor.go PushTraces: len(MetricsGeneratorProcessors) > 0).
        self.enabled = bool(procs)
        self.registry = Registry(
            external=config.external_labels,
            instance=config.instance,
            stale_after=config.stale_duration,
            max_active_series=config.max_active_series,
        )
        self._edges: dict[tuple[bytes, bytes], _Edge] = {}
        self._edges_lock = threading.Lock()
        self._max_edges = 10_000  # processor/servicegraphs/config.go max_items
        self.queues: list[RemoteWriteQueue] = []
        self._start_lock = threading.Lock()
        self.started_at: float | None = None
        self._next_collection = 0.0
        self._collect_lock = threading.Lock()
        self._closed = False

    # --- instance lifecycle -----------------------------------------------------------------

    def _start(self, now: float) -> None:
        """generator.go createInstance: the WAL, the queues and the instance's metrics."""
        with self._start_lock:
            if self.started_at is not None:
                return
            m, t = self.metrics, self.tenant
            self.registry.m = RegistryMetrics.create(m, t)
            self._received = m.counter("tempo_metrics_generator_spans_received_total", tenant=t)
            self._received_bytes = m.counter(
                "tempo_metrics_generator_bytes_received_total", tenant=t
            )
            discarded = "tempo_metrics_generator_spans_discarded_total"
            self._slack = m.counter(discarded, tenant=t, reason="outside_metrics_ingestion_slack")
            if self.span_metrics:
                # instance.go addProcessor creates these two with the span-metrics processor.
                m.counter(discarded, tenant=t, reason="span_metrics_filtered")
                m.counter(discarded, tenant=t, reason="invalid_utf8")
            if self.service_graphs:
                p = "tempo_metrics_generator_processor_service_graphs_"
                self._sg_dropped = m.counter(p + "dropped_spans", tenant=t)
                self._sg_edges = m.counter(p + "edges", tenant=t)
                self._sg_expired = m.counter(p + "expired_edges", tenant=t)
            for name in SUPPORTED_PROCESSORS:
                m.gauge("tempo_metrics_generator_active_processors", tenant=t, processor=name).set(
                    1.0 if name in self.config.processors else 0.0
                )
            self._highest = m.gauge(
                "prometheus_remote_storage_highest_timestamp_in_seconds", tenant=t
            )
            add_org = self.config.remote_write_add_org_id_header and t != TENANT
            self.queues = [
                RemoteWriteQueue(
                    rw,
                    tenant=t,
                    org_id=t if add_org else None,
                    metrics=m,
                    log=self.log,
                )
                for rw in self.config.remote_write
            ]
            self._next_collection = now + self.config.collection_interval
            self.started_at = now

    # --- ingest -----------------------------------------------------------------------------

    def push(self, spans: list[SpanRecord], size: int | None = None) -> None:
        """Offer spans to the generator; sets ``in_generator`` on those it accepts. ``size`` is
        the proto size of the batches pushed (defaults to the spans' sizes)."""
        if not self.enabled or not spans or self._closed:
            return
        now = self.clock()
        if self.started_at is None:
            self._start(now)
        self._received.inc(len(spans))
        self._received_bytes.inc(sum(s.size for s in spans) if size is None else size)
        slack = self.config.ingestion_slack
        discarded = 0
        for s in spans:
            if abs(s.end_ns / 1e9 - now) > slack:
                discarded += 1
                continue
            s.in_generator = True
            if self.span_metrics:
                self._span_metrics(s, now)
            if self.service_graphs:
                self._service_graph(s, now)
        self._slack.inc(discarded)  # instance.go updatePushMetrics adds 0 too

    def _span_metrics(self, s: SpanRecord, now: float) -> None:
        labels: Labels = (
            ("service", s.service),
            ("span_name", s.name),
            ("span_kind", SPAN_KIND_ENUM.get(s.kind, "SPAN_KIND_UNSPECIFIED")),
            ("status_code", STATUS_CODE_ENUM.get(s.status_code, "STATUS_CODE_UNSET")),
        )
        latency = max(0.0, (s.end_ns - s.start_ns) / 1e9)
        trace_hex = s.trace_id.hex().lstrip("0")
        reg = self.registry
        reg.inc("traces_spanmetrics_calls_total", labels, 1.0, now)
        reg.observe(
            "traces_spanmetrics_latency", labels, SPANMETRICS_BUCKETS, latency, trace_hex, now
        )
        reg.inc("traces_spanmetrics_size_total", labels, float(s.size), now)

    def _service_graph(self, s: SpanRecord, now: float) -> None:
        if s.kind in (3, 4):  # CLIENT, PRODUCER: keyed by their own span ID
            key = (s.trace_id, s.span_id)
            side = "client"
        elif s.kind in (2, 5):  # SERVER, CONSUMER: keyed by their parent span ID
            key = (s.trace_id, s.parent_span_id)
            side = "server"
        else:
            return
        conn = "messaging_system" if s.kind in (4, 5) else ""
        complete: _Edge | None = None
        with self._edges_lock:
            edge = self._edges.get(key)
            if edge is None:
                if len(self._edges) >= self._max_edges:
                    self._sg_dropped.inc()
                    return
                edge = self._edges[key] = _Edge(s.trace_id, now, conn)
                self._sg_edges.inc()  # servicegraphs.go: a new edge in the store
            setattr(edge, side, s)
            if edge.client is not None and edge.server is not None:
                complete = self._edges.pop(key)
        if complete is not None:
            self._record_edge(complete, now)

    def expire_edges(self, now: float) -> None:
        """Turn edges older than ``wait`` into virtual-node edges, or drop them and count them
        as expired (servicegraphs.go onExpire: only edges that could not be counted)."""
        if self.started_at is None or not self.service_graphs:
            return
        expired: list[_Edge] = []
        with self._edges_lock:
            for key in [
                k
                for k, e in self._edges.items()
                if now - e.created > self.config.service_graph_wait
            ]:
                expired.append(self._edges.pop(key))
        for e in expired:
            if e.server is not None and e.client is None and e.server.is_root:
                self._record_edge(e, now, client_name="user", conn="virtual_node")
            elif e.client is not None and e.server is None:
                peer = next(
                    (
                        str(e.client.attributes[a])
                        for a in self.config.peer_attributes
                        if a in e.client.attributes
                    ),
                    "",
                )
                if not peer:
                    self._sg_expired.inc()
                    continue
                db = any(k in e.client.attributes for k in ("db.namespace", "db.name", "db.system"))
                self._record_edge(
                    e, now, server_name=peer, conn="database" if db else "virtual_node"
                )
            else:
                self._sg_expired.inc()

    def _record_edge(
        self,
        e: _Edge,
        now: float,
        *,
        client_name: str | None = None,
        server_name: str | None = None,
        conn: str | None = None,
    ) -> None:
        client = client_name if client_name is not None else (e.client.service if e.client else "")
        server = server_name if server_name is not None else (e.server.service if e.server else "")
        labels: Labels = (
            ("client", client),
            ("server", server),
            ("connection_type", conn if conn is not None else e.connection_type),
        )
        failed = any(sp is not None and sp.status_code == 2 for sp in (e.client, e.server))
        trace_hex = e.trace_id.hex().lstrip("0")
        server_s = e.server.duration_ns / 1e9 if e.server else 0.0
        client_s = e.client.duration_ns / 1e9 if e.client else 0.0
        reg = self.registry
        reg.inc("traces_service_graph_request_total", labels, 1.0, now)
        if failed:
            reg.inc("traces_service_graph_request_failed_total", labels, 1.0, now)
        # Both histograms are observed for every edge; the missing side of a virtual node
        # contributes 0 s (README "Service graphs").
        reg.observe(
            "traces_service_graph_request_server_seconds",
            labels,
            SERVICE_GRAPH_BUCKETS,
            server_s,
            trace_hex,
            now,
        )
        reg.observe(
            "traces_service_graph_request_client_seconds",
            labels,
            SERVICE_GRAPH_BUCKETS,
            client_s,
            trace_hex,
            now,
        )

    # --- collection -------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """True when the instance's collection ticker has fired (registry.go New: ``job``)."""
        return self.started_at is not None and not self._closed and now >= self._next_collection

    def collect(self) -> list[Series]:
        """One collection (registry.go CollectMetrics): expire edges, collect the registry and
        append it to every remote-write queue. Returns what was collected."""
        with self._collect_lock:
            if self.started_at is None or self._closed:
                return []
            now = self.clock()
            interval = self.config.collection_interval
            while self._next_collection <= now:
                self._next_collection += interval
            self.expire_edges(now)
            series = self.registry.collect(now)
            self.registry.m.collections.inc()
            n_samples = sum(len(s.samples) for s in series)
            n_ex = sum(len(s.exemplars) for s in series)
            self.log(
                f"collection tenant={self.tenant} series={len(series)} samples={n_samples} "
                f"exemplars={n_ex}"
            )
            if series:
                # storage/remote/write.go: the appender's commit records the highest timestamp.
                self._highest.set_max(float(int(now * 1000) // 1000))
                for q in self.queues:
                    q.enqueue(series)
            return series

    def flush(self, timeout: float = 10.0) -> bool:
        """Send what the queues hold now and wait until they are empty (tests, benchmarks)."""
        end = time.monotonic() + timeout
        return all(q.flush(max(0.0, end - time.monotonic())) for q in self.queues)

    def collect_and_write(self, timeout: float = 10.0) -> None:
        """``collect()`` then ``flush()``: one collection delivered (or retried) before return."""
        self.collect()
        self.flush(timeout)

    def close(self) -> None:
        """Shutdown: no last collection (the registry's ticker just stops); the queues send what
        they hold within ``remote_write_flush_deadline``."""
        with self._collect_lock:
            self._closed = True
        for q in self.queues:
            q.close(self.config.remote_write_flush_deadline)
