"""The metrics-generator equivalent: span-metrics, service graphs, registry and remote write.

Behaviour reproduced (tempo-api.md):

* §11.3 ingestion slack: a span whose end time is more than ``metrics_ingestion_time_range_slack``
  (30 s) before or after now is dropped from every processor (local-blocks included) and counted
  in ``tempo_metrics_generator_spans_discarded_total{reason="outside_metrics_ingestion_slack"}``.
* §11.1 span-metrics: ``traces_spanmetrics_calls_total``, ``traces_spanmetrics_latency`` (classic
  histogram in seconds, buckets 0.002*2^n for n=0..13 then +Inf; a negative latency counts as 0),
  ``traces_spanmetrics_size_total`` (proto size of the span); labels service, span_name,
  span_kind, status_code.
* §11.2 service graphs: CLIENT (traceID, spanID) paired with SERVER (traceID, parentSpanID)
  (PRODUCER/CONSUMER likewise, connection_type="messaging_system") within ``wait`` (10 s);
  expired root SERVER spans become ``client="user"``, expired CLIENT spans with a peer attribute
  become ``server=<peer>`` (connection_type="virtual_node", or "database" for db.* spans);
  request_total, request_failed_total (either side STATUS_CODE_ERROR), request_server_seconds
  and request_client_seconds (buckets 0.1*2^n, n=0..7).
* §11.3 registry: every ``collection_interval`` all active series are written with the
  collection timestamp, plus ``external_labels`` and ``__metrics_gen_instance``; a new series
  first gets a 0 sample at the end of the previous minute; exemplars (label ``traceID``, hex with
  leading zeros trimmed) only on ``_bucket`` series, at most one per bucket per collection, then
  cleared; series idle for ``stale_duration`` (15 m) are dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tempo_standin import TENANT
from tempo_standin.config import StandinConfig
from tempo_standin.model import SPAN_KIND_ENUM, STATUS_CODE_ENUM, SpanRecord
from tempo_standin.remote_write import Series, build_write_request, push
from tempo_standin.selfmetrics import MetricsRegistry

__all__ = ["SERVICE_GRAPH_BUCKETS", "SPANMETRICS_BUCKETS", "Generator", "format_le"]

# tempo-api.md §11.1: ExponentialBuckets(0.002, 2, 14) = 0.002 .. 16.384.
SPANMETRICS_BUCKETS: tuple[float, ...] = tuple(0.002 * 2**n for n in range(14))
# tempo-api.md §11.2: ExponentialBuckets(0.1, 2, 8) = 0.1 .. 12.8.
SERVICE_GRAPH_BUCKETS: tuple[float, ...] = tuple(0.1 * 2**n for n in range(8))

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
    """The last millisecond of the minute before ``now_ms`` (§11.3 first-sample behaviour)."""
    return now_ms - now_ms % 60_000 - 1


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
        idx = len(self.bounds)
        for i, b in enumerate(self.bounds):
            if value <= b:
                idx = i
                break
        self.counts[idx] += 1
        self.total += value
        self.count += 1
        if trace_hex:
            self.exemplars[idx] = (trace_hex, value)  # the latest per bucket (§11.3)


class Registry:
    """Series of the generator, collected into remote-write series."""

    def __init__(self, *, external: Labels, instance: str, stale_after: float) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, Labels], _Counter] = {}
        self._hists: dict[tuple[str, Labels], _Histogram] = {}
        self._const: Labels = (*external, ("__metrics_gen_instance", instance))
        self._stale_after = stale_after

    def inc(self, name: str, labels: Labels, amount: float, now: float) -> None:
        with self._lock:
            c = self._counters.get((name, labels))
            if c is None:
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
                h = self._hists[(name, labels)] = _Histogram(bounds)
            h.observe(value, trace_hex)
            h.last_update = now

    def active_series(self) -> int:
        with self._lock:
            return len(self._counters) + sum(len(h.bounds) + 3 for h in self._hists.values())

    def collect(self, now: float) -> list[Series]:
        """All active series at ``now`` (ms precision); clears exemplars and 'new' flags."""
        now_ms = int(now * 1000)
        zero_ms = end_of_last_minute_ms(now_ms)
        out: list[Series] = []
        with self._lock:
            for key in [
                k for k, c in self._counters.items() if now - c.last_update > self._stale_after
            ]:
                del self._counters[key]
            for key in [
                k for k, h in self._hists.items() if now - h.last_update > self._stale_after
            ]:
                del self._hists[key]
            for (name, labels), c in self._counters.items():
                samples = ((0.0, zero_ms), (c.value, now_ms)) if c.new else ((c.value, now_ms),)
                c.new = False
                out.append(Series(self._labels(name, labels), samples))
            for (name, labels), h in self._hists.items():
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
                            self._samples(h.new, float(cumulative), zero_ms, now_ms),
                            exemplars,
                        )
                    )
                out.append(
                    Series(
                        self._labels(f"{name}_sum", labels),
                        self._samples(h.new, h.total, zero_ms, now_ms),
                    )
                )
                out.append(
                    Series(
                        self._labels(f"{name}_count", labels),
                        self._samples(h.new, float(h.count), zero_ms, now_ms),
                    )
                )
                h.exemplars.clear()
                h.new = False
        return out

    @staticmethod
    def _samples(
        new: bool, value: float, zero_ms: int, now_ms: int
    ) -> tuple[tuple[float, int], ...]:
        return ((0.0, zero_ms), (value, now_ms)) if new else ((value, now_ms),)

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
    """Feeds spans to the enabled processors and ships the registry by remote write."""

    def __init__(
        self,
        config: StandinConfig,
        metrics: MetricsRegistry,
        log: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.log = log
        self.clock = clock
        procs = set(config.processors)
        self.span_metrics = "span-metrics" in procs
        self.service_graphs = "service-graphs" in procs
        self.local_blocks = "local-blocks" in procs
        self.enabled = bool(procs)
        self.registry = Registry(
            external=config.external_labels,
            instance=config.instance,
            stale_after=config.stale_duration,
        )
        self._edges: dict[tuple[bytes, bytes], _Edge] = {}
        self._edges_lock = threading.Lock()
        self._max_edges = 10_000  # §11.2 max_items
        self._pending: dict[str, list[list[Series]]] = {rw.url: [] for rw in config.remote_write}
        self._started = False  # §11.3: the tenant's instance starts with its first span
        self._collect_lock = threading.Lock()
        metrics.gauge_func(
            "tempo_metrics_generator_registry_active_series",
            lambda: float(self.registry.active_series()),
            tenant=TENANT,
        )

    # --- ingest -----------------------------------------------------------------------------

    def push(self, spans: list[SpanRecord]) -> None:
        """Offer spans to the generator; sets ``in_generator`` on those it accepts."""
        if not self.enabled or not spans:
            return
        now = self.clock()
        self._started = True
        self.metrics.inc("tempo_metrics_generator_spans_received_total", len(spans), tenant=TENANT)
        self.metrics.inc(
            "tempo_metrics_generator_bytes_received_total",
            sum(s.size for s in spans),
            tenant=TENANT,
        )
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
        if discarded:
            self.metrics.inc(
                "tempo_metrics_generator_spans_discarded_total",
                discarded,
                tenant=TENANT,
                reason="outside_metrics_ingestion_slack",
            )

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
                    self.metrics.inc(
                        "tempo_metrics_generator_processor_service_graphs_dropped_spans",
                        tenant=TENANT,
                    )
                    return
                edge = self._edges[key] = _Edge(s.trace_id, now, conn)
            setattr(edge, side, s)
            if edge.client is not None and edge.server is not None:
                complete = self._edges.pop(key)
        if complete is not None:
            self._record_edge(complete, now)

    def expire_edges(self, now: float) -> None:
        """Turn edges older than ``wait`` into virtual-node edges or drop them (§11.2)."""
        expired: list[_Edge] = []
        with self._edges_lock:
            for key in [
                k
                for k, e in self._edges.items()
                if now - e.created > self.config.service_graph_wait
            ]:
                expired.append(self._edges.pop(key))
        for e in expired:
            self.metrics.inc(
                "tempo_metrics_generator_processor_service_graphs_expired_edges", tenant=TENANT
            )
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
                    continue
                db = any(k in e.client.attributes for k in ("db.namespace", "db.name", "db.system"))
                self._record_edge(
                    e, now, server_name=peer, conn="database" if db else "virtual_node"
                )

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
        self.metrics.inc("tempo_metrics_generator_processor_service_graphs_edges", tenant=TENANT)

    # --- collection -------------------------------------------------------------------------

    def collect_and_write(self, timeout: float = 10.0) -> None:
        """One collection: expire edges, collect the registry, remote-write to every URL."""
        with self._collect_lock:
            if not self._started:
                return
            now = self.clock()
            self.expire_edges(now)
            series = self.registry.collect(now)
            self.metrics.inc("tempo_metrics_generator_registry_collections_total", tenant=TENANT)
            n_samples = sum(len(s.samples) for s in series)
            n_ex = sum(len(s.exemplars) for s in series)
            self.log(f"collection series={len(series)} samples={n_samples} exemplars={n_ex}")
            if not series:
                return
            failed_any = False
            for rw in self.config.remote_write:
                batches = [*self._pending[rw.url], series]
                payload_series = [s for b in batches for s in b]
                samples = sum(len(s.samples) for s in payload_series)
                exemplars = (
                    sum(len(s.exemplars) for s in payload_series) if rw.send_exemplars else 0
                )
                payload = build_write_request(payload_series, with_exemplars=rw.send_exemplars)
                started = time.monotonic()
                result = push(rw.url, payload, tenant=TENANT, headers=rw.headers, timeout=timeout)
                took = time.monotonic() - started
                url = rw.shown_url
                lbl = {"tenant": TENANT, "remote_name": rw.name or "default", "url": url}
                if not result.error:
                    self._pending[rw.url] = []
                    self.metrics.inc("prometheus_remote_storage_samples_total", samples, **lbl)
                    self.metrics.inc("prometheus_remote_storage_exemplars_total", exemplars, **lbl)
                    self.metrics.set(
                        "prometheus_remote_storage_highest_timestamp_in_seconds", now, **lbl
                    )
                    self.log(
                        f"remote_write url={url} status={result.status} series="
                        f"{len(payload_series)} samples={samples} exemplars={exemplars} "
                        f"seconds={took:.3f}"
                    )
                    continue
                failed_any = True
                self.metrics.inc("prometheus_remote_storage_samples_failed_total", samples, **lbl)
                self.metrics.inc(
                    "prometheus_remote_storage_exemplars_failed_total", exemplars, **lbl
                )
                # Prometheus's queue retries 5xx/429/connection errors and drops other 4xx;
                # here the retry is the next collection, bounded to 5 batches.
                self._pending[rw.url] = batches[-5:] if result.retryable else []
                self.log(
                    f"remote_write url={url} failed samples={samples} "
                    f"retry={'yes' if result.retryable else 'no'}: {result.error}"
                )
            if failed_any:
                self.metrics.inc(
                    "tempo_metrics_generator_registry_collections_failed_total", tenant=TENANT
                )
