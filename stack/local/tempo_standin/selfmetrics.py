"""The stand-in's own ``/metrics``: Tempo's ingestion counters under Tempo's names.

tempo-api.md §12 lists the names and labels; note ``tempo_receiver_accepted_spans`` and
``tempo_receiver_refused_spans`` have no ``_total`` suffix there. Exposition is the Prometheus
text format 0.0.4.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

__all__ = ["MetricsRegistry"]

Labels = tuple[tuple[str, str], ...]

# name -> (type, help). Declared up front so /metrics documents every family, even at zero.
FAMILIES: dict[str, tuple[str, str]] = {
    "tempo_build_info": ("gauge", "Build information of the Tempo stand-in."),
    "tempo_receiver_accepted_spans": ("counter", "Spans accepted by the OTLP receiver."),
    "tempo_receiver_refused_spans": ("counter", "Spans refused by the OTLP receiver."),
    "tempo_distributor_spans_received_total": ("counter", "Spans received, per tenant."),
    "tempo_distributor_bytes_received_total": ("counter", "Bytes received, per tenant."),
    "tempo_distributor_ingress_bytes_total": ("counter", "Bytes received before limits."),
    "tempo_discarded_spans_total": ("counter", "Spans discarded, per reason and tenant."),
    "tempo_ingester_traces_created_total": ("counter", "Traces created in the ingester."),
    "tempo_ingester_live_traces": ("gauge", "Live traces held by the ingester."),
    "tempo_ingester_bytes_received_total": ("counter", "Bytes received by the ingester."),
    "tempo_metrics_generator_spans_received_total": ("counter", "Spans received by the generator."),
    "tempo_metrics_generator_bytes_received_total": ("counter", "Bytes received by the generator."),
    "tempo_metrics_generator_spans_discarded_total": (
        "counter",
        "Spans discarded by the generator, per reason.",
    ),
    "tempo_metrics_generator_registry_active_series": ("gauge", "Active series in the registry."),
    "tempo_metrics_generator_registry_collections_total": ("counter", "Registry collections."),
    "tempo_metrics_generator_registry_collections_failed_total": (
        "counter",
        "Registry collections that failed to be written.",
    ),
    "tempo_metrics_generator_registry_series_limited_total": (
        "counter",
        "Series not created because of limits.",
    ),
    "tempo_metrics_generator_processor_service_graphs_edges": (
        "counter",
        "Service-graph edges completed.",
    ),
    "tempo_metrics_generator_processor_service_graphs_expired_edges": (
        "counter",
        "Service-graph edges expired without a pair.",
    ),
    "tempo_metrics_generator_processor_service_graphs_dropped_spans": (
        "counter",
        "Spans dropped by the service-graph processor (store full).",
    ),
    "prometheus_remote_storage_samples_total": ("counter", "Samples sent by remote write."),
    "prometheus_remote_storage_samples_failed_total": (
        "counter",
        "Samples that failed to be sent by remote write.",
    ),
    "prometheus_remote_storage_exemplars_total": ("counter", "Exemplars sent by remote write."),
    "prometheus_remote_storage_exemplars_failed_total": (
        "counter",
        "Exemplars that failed to be sent by remote write.",
    ),
    "prometheus_remote_storage_highest_timestamp_in_seconds": (
        "gauge",
        "Highest timestamp sent successfully by remote write.",
    ),
    "tempo_query_frontend_queries_total": ("counter", "Queries answered by the frontend."),
}


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class MetricsRegistry:
    """Counters and gauges keyed by (name, labels); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, Labels], float] = {}
        self._gauges: dict[tuple[str, Labels], Callable[[], float]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        assert name in FAMILIES, name
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        assert name in FAMILIES, name
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._values[key] = value

    def gauge_func(self, name: str, fn: Callable[[], float], **labels: str) -> None:
        """A gauge read at scrape time."""
        self._gauges[(name, tuple(sorted(labels.items())))] = fn

    def value(self, name: str, **labels: str) -> float:
        """Current value (0 when never set); for tests and logs."""
        key = (name, tuple(sorted(labels.items())))
        if key in self._gauges:
            return self._gauges[key]()
        with self._lock:
            return self._values.get(key, 0.0)

    def exposition(self) -> str:
        with self._lock:
            values = dict(self._values)
        for key, fn in self._gauges.items():
            values[key] = fn()
        lines: list[str] = []
        for name, (typ, help_text) in FAMILIES.items():
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
