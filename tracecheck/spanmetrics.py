"""Span-metric series names: Tempo's metrics-generator vs the OpenTelemetry spanmetrics connector.

* calls: ``traces_spanmetrics_calls_total`` (Tempo) vs ``traces_span_metrics_calls_total``
  (connector);
* latency: ``traces_spanmetrics_latency_bucket`` in seconds vs
  ``traces_span_metrics_duration_milliseconds_bucket`` (or ``..._seconds_bucket``);
* service label: ``service`` vs ``service_name``; exemplar label: ``traceID`` vs ``trace_id``.

(docs/reference/collector.md §7, docs/reference/tempo.md §11.1.) Which family exists is discovered
from Prometheus (``/api/v1/label/__name__/values``) and can be forced with
``--span-metrics-naming``. Both produce ``traces_service_graph_request_total`` with labels
``client`` and ``server``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "FAMILIES",
    "OTEL_MS",
    "OTEL_S",
    "SERVICE_GRAPH_REQUESTS",
    "TEMPO",
    "Naming",
    "candidates",
]


@dataclass(frozen=True, slots=True)
class Naming:
    flavour: str  # "tempo" or "otel"
    calls: str
    latency_bucket: str
    latency_count: str
    latency_sum: str
    service_label: str
    le_to_seconds: float  # multiply a bucket bound by this to get seconds
    exemplar_labels: tuple[str, ...]

    def selector(self, metric: str, service: str, **labels: str) -> str:
        """A PromQL selector for ``metric`` of ``service`` with extra exact label matches."""
        matchers = [f"{self.service_label}={quote(service)}"]
        matchers += [f"{k}={quote(v)}" for k, v in labels.items()]
        return f"{metric}{{{','.join(matchers)}}}"


TEMPO = Naming(
    "tempo",
    "traces_spanmetrics_calls_total",
    "traces_spanmetrics_latency_bucket",
    "traces_spanmetrics_latency_count",
    "traces_spanmetrics_latency_sum",
    "service",
    1.0,
    ("traceID",),
)
OTEL_MS = Naming(
    "otel",
    "traces_span_metrics_calls_total",
    "traces_span_metrics_duration_milliseconds_bucket",
    "traces_span_metrics_duration_milliseconds_count",
    "traces_span_metrics_duration_milliseconds_sum",
    "service_name",
    0.001,
    ("trace_id", "traceID"),
)
OTEL_S = Naming(
    "otel",
    "traces_span_metrics_calls_total",
    "traces_span_metrics_duration_seconds_bucket",
    "traces_span_metrics_duration_seconds_count",
    "traces_span_metrics_duration_seconds_sum",
    "service_name",
    1.0,
    ("trace_id", "traceID"),
)
FAMILIES = (TEMPO, OTEL_MS, OTEL_S)
SERVICE_GRAPH_REQUESTS = "traces_service_graph_request_total"

#: Regex for ``match[]`` that lists the metric names deciding the family.
NAMES_REGEX = "|".join(sorted({f.calls for f in FAMILIES} | {f.latency_bucket for f in FAMILIES}))


def candidates(metric_names: Iterable[str], preference: str) -> tuple[Naming, ...]:
    """The families to watch, given the names Prometheus has and the configured preference.

    ``preference`` is ``tempo``, ``otel`` or ``auto``. With ``auto`` every family whose calls
    and latency series exist is watched (a fresh pipeline has none yet: then all are), and the
    first one to show the synthetic spans wins.
    """
    names = set(metric_names)
    pool = [f for f in FAMILIES if preference in ("auto", f.flavour)]
    present = [f for f in pool if f.calls in names and f.latency_bucket in names]
    # Nothing yet: watch the whole pool (for "otel" both connector units, the unit is unknown).
    return tuple(present or pool)


def quote(value: str) -> str:
    """A PromQL double-quoted string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
