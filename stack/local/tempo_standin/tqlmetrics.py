"""TraceQL metrics (``/api/metrics/query_range`` and ``/api/metrics/query``), tempo-api.md §7.

Computed from the spans the local-blocks processor would hold: accepted by the generator (inside
the ingestion slack, §11.3), already cut from the live map (§10: local-blocks uses the same
live->head cut), and, with ``filter_server_spans: true`` (the default, §7.4), only SERVER-kind or
root spans. A span counts in the interval that contains its start time.

Intervals (README "TraceQL metrics"): start is aligned down and end up to a multiple of the step;
the sample at timestamp T covers spans started in (T - step, T] ("buckets are calculated based on
data in the past", 2.9.0, #5366). ``rate`` and ``count_over_time`` report 0 for empty intervals
(jsonpb then omits the zero ``value``); the other functions skip empty intervals (NaN, §7.2).
``quantile_over_time`` buckets values by powers of two, as Tempo does (PR #3644: log2 buckets),
and interpolates linearly inside the bucket, so it is an approximation like Tempo's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tempo_standin.model import SpanRecord
from tempo_standin.traceql import (
    MISSING,
    Attribute,
    Duration,
    Intrinsic,
    Kind,
    MetricsStage,
    Query,
    Status,
    TraceView,
    evaluate,
    field_value,
)

__all__ = ["MetricsResult", "compute"]


@dataclass(frozen=True, slots=True)
class MetricsResult:
    # (labels as proto3 JSON KeyValue dicts, [(timestamp ms, value)])
    series: list[tuple[list[dict[str, Any]], list[tuple[int, float]]]]
    inspected_spans: int
    inspected_traces: int


def _label_value(v: Any) -> dict[str, Any]:
    """A group-by value as an OTLP AnyValue in proto3 JSON."""
    # AnyValue is a oneof: a set member is written even when it holds the zero value.
    if v is MISSING:
        return {}
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, (Status, Kind)):
        return {"stringValue": v.name}
    if isinstance(v, Duration):
        return {"intValue": str(v.ns)}
    if isinstance(v, list):
        return _label_value(v[0]) if v else {}
    return {"stringValue": v if isinstance(v, str) else str(v)}


def _numeric(v: Any) -> float | None:
    """A span's value for an aggregated field: durations in seconds, numbers as is."""
    if isinstance(v, Duration):
        return v.ns / 1e9
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    return None


def _log2_quantile(values: Sequence[float], q: float) -> float:
    """Quantile over power-of-two buckets (upper bounds 2^k), interpolated inside a bucket."""
    if not values:
        return math.nan
    buckets: dict[int, int] = defaultdict(int)
    for v in values:
        k = -1074 if v <= 0 else math.ceil(math.log2(v))
        buckets[k] += 1
    total = len(values)
    rank = q * total
    seen = 0.0
    for k in sorted(buckets):
        n = buckets[k]
        if seen + n >= rank:
            upper = 2.0**k
            lower = upper / 2 if k > -1074 else 0.0
            frac = (rank - seen) / n if n else 0.0
            return lower + (upper - lower) * frac
        seen += n
    return 2.0 ** max(buckets)


def compute(
    query: Query,
    traces: Sequence[tuple[bytes, Sequence[SpanRecord]]],
    start_ns: int,
    end_ns: int,
    step_ns: int,
    *,
    instant: bool = False,
) -> MetricsResult:
    """Evaluate a metrics query over (trace ID, spans) pairs on aligned intervals.

    ``instant``: one interval (start, end] with its sample at ``end`` (§7.2: the instant query
    is a single-step range query).
    """
    stage = query.metrics
    assert stage is not None
    if instant:
        first = last = end_ns
        step_ns = max(1, end_ns - start_ns)
    else:
        first = (start_ns // step_ns) * step_ns
        last = -(-end_ns // step_ns) * step_ns
    timestamps = list(range(first, last + 1, step_ns))
    groups: dict[tuple[Any, ...], list[list[float]]] = {}
    inspected_spans = 0
    inspected_traces = 0
    for trace_id, spans in traces:
        inspected_traces += 1
        inspected_spans += len(spans)
        view = TraceView.of(trace_id, spans)
        for s in evaluate(query, view):
            # Interval index: the first timestamp T with start <= T, i.e. (T - step, T].
            if s.start_ns <= first - step_ns or s.start_ns > last:
                continue
            idx = max(0, -(-(s.start_ns - first) // step_ns))
            key = tuple(_group_key(f, s, view) for f in stage.by)
            buckets = groups.get(key)
            if buckets is None:
                buckets = groups[key] = [[] for _ in timestamps]
            if stage.attribute is None:
                buckets[idx].append(1.0)
            else:
                v = _numeric(field_value(stage.attribute, s, view))
                if v is not None:
                    buckets[idx].append(v)
    series = []
    step_s = step_ns / 1e9
    for key, buckets in groups.items():
        base_labels = _labels(stage, key)
        if stage.function == "quantile_over_time":
            for q in stage.quantiles:
                samples = [
                    (ts // 1_000_000, _log2_quantile(vals, q))
                    for ts, vals in zip(timestamps, buckets, strict=True)
                    if vals
                ]
                labels = [*base_labels, {"key": "p", "value": {"doubleValue": q}}]
                if samples:
                    series.append((labels, samples))
            continue
        samples = []
        for ts, vals in zip(timestamps, buckets, strict=True):
            value = _aggregate(stage.function, vals, step_s)
            if not math.isnan(value):
                samples.append((ts // 1_000_000, value))
        if samples:
            series.append((base_labels, samples))
    return MetricsResult(series, inspected_spans, inspected_traces)


def _group_key(f: Attribute | Intrinsic, s: SpanRecord, view: TraceView) -> Any:
    v = field_value(f, s, view)
    if isinstance(v, list):
        v = v[0] if v else MISSING
    return v


def _labels(stage: MetricsStage, key: tuple[Any, ...]) -> list[dict[str, Any]]:
    if not stage.by:
        # §7.2: an ungrouped query is labelled __name__=<function>.
        return [{"key": "__name__", "value": {"stringValue": stage.function}}]
    return [
        {"key": f.label(), "value": _label_value(v)} for f, v in zip(stage.by, key, strict=True)
    ]


def _aggregate(fn: str, vals: list[float], step_s: float) -> float:
    if fn == "rate":
        return len(vals) / step_s
    if fn == "count_over_time":
        return float(len(vals))
    if not vals:
        return math.nan
    if fn == "sum_over_time":
        return math.fsum(vals)
    if fn == "avg_over_time":
        return math.fsum(vals) / len(vals)
    if fn == "min_over_time":
        return min(vals)
    if fn == "max_over_time":
        return max(vals)
    raise AssertionError(fn)
