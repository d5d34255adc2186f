"""The stand-in's own ``/metrics``: Tempo 2.9's self-metrics under Tempo's names and labels.

Every family below is declared where Tempo 2.9.0 declares it (paths in grafana/tempo at tag
v2.9.0, vendored Prometheus v0.304.2 for ``prometheus_remote_storage_*``); the README table lists
them with their sources. ``tempo_receiver_accepted_spans`` and ``tempo_receiver_refused_spans``
have no ``_total`` suffix in Tempo (modules/distributor/receiver/metrics_provider.go), which is
why this is a small registry of its own and not prometheus_client: prometheus_client appends
``_total`` to every counter name in the text format. Exposition is the text format 0.0.4.

Counting is exact under concurrency: every child series has its own lock, and hot paths hold a
bound child (:meth:`MetricsRegistry.counter`), so an increment is one lock and one addition.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

__all__ = ["FAMILIES", "Child", "MetricsRegistry"]

Labels = tuple[tuple[str, str], ...]

# name -> (type, help, label names). Declared up front: a family is exposed once it has a series.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # cmd/tempo/main.go: version.NewCollector("tempo").
    "tempo_build_info": (
        "gauge",
        "A metric with a constant '1' value labeled by version, revision, branch, goversion "
        "from which tempo was built, and the goos and goarch for the build.",
        ("branch", "goarch", "goos", "goversion", "revision", "tags", "version"),
    ),
    # client_golang's process collector, registered by the default registry Tempo uses: the
    # restart time a client can compare with its own clock.
    "process_start_time_seconds": (
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        (),
    ),
    # modules/overrides/config.go Collect.
    "tempo_limits_defaults": ("gauge", "Default resource limits", ("limit_name",)),
    # modules/distributor/receiver/metrics_provider.go (the collector's receiverhelper counters).
    "tempo_receiver_accepted_spans": (
        "counter",
        "Number of spans successfully pushed into the pipeline.",
        ("receiver", "transport"),
    ),
    "tempo_receiver_refused_spans": (
        "counter",
        "Number of spans that could not be pushed into the pipeline.",
        ("receiver", "transport"),
    ),
    # modules/distributor/distributor.go.
    "tempo_distributor_spans_received_total": (
        "counter",
        "The total number of spans received per tenant",
        ("tenant",),
    ),
    "tempo_distributor_bytes_received_total": (
        "counter",
        "The total number of proto bytes received per tenant, after limits",
        ("tenant",),
    ),
    "tempo_distributor_ingress_bytes_total": (
        "counter",
        "The total number of bytes received per tenant, before limits",
        ("tenant",),
    ),
    # modules/overrides/discarded_spans.go.
    "tempo_discarded_spans_total": (
        "counter",
        "The total number of samples that were discarded.",
        ("reason", "tenant"),
    ),
    # modules/ingester/instance.go.
    "tempo_ingester_traces_created_total": (
        "counter",
        "The total number of traces created per tenant.",
        ("tenant",),
    ),
    "tempo_ingester_live_traces": (
        "gauge",
        "The current number of lives traces per tenant.",
        ("tenant",),
    ),
    "tempo_ingester_live_trace_bytes": (
        "gauge",
        "The current number of bytes consumed by lives traces per tenant.",
        ("tenant",),
    ),
    "tempo_ingester_bytes_received_total": (
        "counter",
        "The total bytes received per tenant.",
        ("tenant", "data_type"),
    ),
    # modules/generator/instance.go.
    "tempo_metrics_generator_active_processors": (
        "gauge",
        "The active processors per tenant",
        ("tenant", "processor"),
    ),
    "tempo_metrics_generator_spans_received_total": (
        "counter",
        "The total number of spans received per tenant",
        ("tenant",),
    ),
    "tempo_metrics_generator_bytes_received_total": (
        "counter",
        "The total number of proto bytes received per tenant",
        ("tenant",),
    ),
    "tempo_metrics_generator_spans_discarded_total": (
        "counter",
        "The total number of discarded spans received per tenant",
        ("tenant", "reason"),
    ),
    # modules/generator/registry/registry.go.
    "tempo_metrics_generator_registry_active_series": (
        "gauge",
        "The active series per tenant",
        ("tenant",),
    ),
    "tempo_metrics_generator_registry_max_active_series": (
        "gauge",
        "The maximum active series per tenant",
        ("tenant",),
    ),
    "tempo_metrics_generator_registry_series_added_total": (
        "counter",
        "The total amount of series created per tenant",
        ("tenant",),
    ),
    "tempo_metrics_generator_registry_series_removed_total": (
        "counter",
        "The total amount of series removed after they have become stale per tenant",
        ("tenant",),
    ),
    "tempo_metrics_generator_registry_series_limited_total": (
        "counter",
        "The total amount of series not created because of limits per tenant",
        ("tenant",),
    ),
    "tempo_metrics_generator_registry_collections_total": (
        "counter",
        "The total amount of metrics collections per tenant",
        ("tenant",),
    ),
    "tempo_metrics_generator_registry_collections_failed_total": (
        "counter",
        "The total amount of failed metrics collections per tenant",
        ("tenant",),
    ),
    # modules/generator/processor/servicegraphs/servicegraphs.go.
    "tempo_metrics_generator_processor_service_graphs_edges": (
        "counter",
        "Total number of unique edges",
        ("tenant",),
    ),
    "tempo_metrics_generator_processor_service_graphs_expired_edges": (
        "counter",
        "Number of edges that expired before finding its matching span",
        ("tenant",),
    ),
    "tempo_metrics_generator_processor_service_graphs_dropped_spans": (
        "counter",
        "Number of spans dropped when trying to add edges",
        ("tenant",),
    ),
    # vendor/github.com/prometheus/prometheus/storage/remote/queue_manager.go (newQueueManager
    # Metrics) with the generator's WrapRegistererWith({tenant}) (modules/generator/storage).
    "prometheus_remote_storage_samples_total": (
        "counter",
        "Total number of samples sent to remote storage.",
        ("remote_name", "tenant", "url"),
    ),
    "prometheus_remote_storage_samples_failed_total": (
        "counter",
        "Total number of samples which failed on send to remote storage, non-recoverable errors.",
        ("remote_name", "tenant", "url"),
    ),
    "prometheus_remote_storage_samples_retried_total": (
        "counter",
        "Total number of samples which failed on send to remote storage but were retried "
        "because the send error was recoverable.",
        ("remote_name", "tenant", "url"),
    ),
    "prometheus_remote_storage_samples_pending": (
        "gauge",
        "The number of samples pending in the queues shards to be sent to the remote storage.",
        ("remote_name", "tenant", "url"),
    ),
    "prometheus_remote_storage_exemplars_total": (
        "counter",
        "Total number of exemplars sent to remote storage.",
        ("remote_name", "tenant", "url"),
    ),
    "prometheus_remote_storage_exemplars_failed_total": (
        "counter",
        "Total number of exemplars which failed on send to remote storage, non-recoverable errors.",
        ("remote_name", "tenant", "url"),
    ),
    "prometheus_remote_storage_exemplars_retried_total": (
        "counter",
        "Total number of exemplars which failed on send to remote storage but were retried "
        "because the send error was recoverable.",
        ("remote_name", "tenant", "url"),
    ),
    "prometheus_remote_storage_exemplars_pending": (
        "gauge",
        "The number of exemplars pending in the queues shards to be sent to the remote storage.",
        ("remote_name", "tenant", "url"),
    ),
    "prometheus_remote_storage_bytes_total": (
        "counter",
        "The total number of bytes of data (not metadata) sent by the queue after compression. "
        "Note that when exemplars over remote write is enabled the exemplars included in a "
        "remote write request count towards this metric.",
        ("remote_name", "tenant", "url"),
    ),
    "prometheus_remote_storage_queue_highest_sent_timestamp_seconds": (
        "gauge",
        "Timestamp from a WAL sample, the highest timestamp successfully sent by this queue, "
        "in seconds since epoch. Initialized to 0 when no data has been sent yet.",
        ("remote_name", "tenant", "url"),
    ),
    # storage/remote/write.go: one per remote storage, so per tenant, without remote_name/url.
    "prometheus_remote_storage_highest_timestamp_in_seconds": (
        "gauge",
        "Highest timestamp that has come into the remote storage via the Appender interface, "
        "in seconds since epoch. Initialized to 0 when no data has been received yet.",
        ("tenant",),
    ),
    # modules/frontend/slos.go.
    "tempo_query_frontend_queries_total": (
        "counter",
        "Total queries received per tenant.",
        ("tenant", "op", "result"),
    ),
}


def _fmt(value: float) -> str:
    """A sample value as Go's exposition writes it (integers without a decimal point)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Child:
    """One series of a family: ``inc``/``set`` are exact under concurrent callers."""

    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self._value -= amount

    def set(self, value: float) -> None:
        with self._lock:
            self._value = value

    def set_max(self, value: float) -> None:
        """Keep the larger of the current value and ``value`` (a max-timestamp gauge)."""
        with self._lock:
            if value > self._value:
                self._value = value

    def get(self) -> float:
        with self._lock:
            return self._value


class MetricsRegistry:
    """Families of labelled counters and gauges; the set of label names is checked per family."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._children: dict[tuple[str, Labels], Child] = {}
        self._gauges: dict[tuple[str, Labels], Callable[[], float]] = {}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> tuple[str, Labels]:
        family = FAMILIES.get(name)
        if family is None:
            raise KeyError(f"unknown metric family {name}")
        if tuple(sorted(labels)) != tuple(sorted(family[2])):
            raise ValueError(f"{name}: labels {sorted(labels)} != {sorted(family[2])}")
        return name, tuple(sorted(labels.items()))

    def counter(self, name: str, **labels: str) -> Child:
        """The series ``name{labels}``, created at 0 (it is exposed from then on)."""
        key = self._key(name, labels)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = Child()
            return child

    gauge = counter

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self.counter(name, **labels).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        self.counter(name, **labels).set(value)

    def gauge_func(self, name: str, fn: Callable[[], float], **labels: str) -> None:
        """A gauge read at scrape time."""
        key = self._key(name, labels)
        with self._lock:
            self._gauges[key] = fn

    def value(self, name: str, **labels: str) -> float:
        """Current value (0 when the series does not exist)."""
        key = self._key(name, labels)
        with self._lock:
            fn = self._gauges.get(key)
            child = self._children.get(key)
        if fn is not None:
            return fn()
        return child.get() if child is not None else 0.0

    def exposition(self) -> str:
        with self._lock:
            children = list(self._children.items())
            gauges = list(self._gauges.items())
        values: dict[tuple[str, Labels], float] = {k: c.get() for k, c in children}
        for key, fn in gauges:
            values[key] = fn()
        lines: list[str] = []
        for name, (typ, help_text, _labels) in FAMILIES.items():
            series = sorted((lbl, v) for (n, lbl), v in values.items() if n == name)
            if not series:
                continue
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {typ}")
            for lbl, v in series:
                if lbl:
                    inner = ",".join(f'{k}="{_escape(val)}"' for k, val in lbl)
                    lines.append(f"{name}{{{inner}}} {_fmt(v)}")
                else:
                    lines.append(f"{name} {_fmt(v)}")
        return "\n".join(lines) + "\n"
