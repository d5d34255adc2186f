"""TraceQL metrics (``/api/metrics/query_range`` and ``/api/metrics/query``).

The data are the spans the local-blocks processor holds (``Standin.metrics_dataset``: accepted
by the generator, already cut from the live map, and with ``filter_server_spans`` only SERVER
or root spans). Over them this module does what grafana/tempo v2.9.0 does:

* the request is aligned first (``pkg/traceql/engine_metrics.go`` AlignRequest): start rounded
  down and end up to the step, then start moved back one more step, the "extra leading step";
  an instant query (step = end - start) is not aligned;
* intervals are right-closed, ``(start + i*step, start + (i+1)*step]``, each reported at its end
  (IntervalMapperQueryRange); a span counts by its start time; an instant query has one
  interval ``(start, end]`` reported at ``end``;
* ``rate`` is the count divided by the step in seconds; ``count_over_time``, ``rate``,
  ``histogram_over_time`` and ``quantile_over_time`` report 0 for empty intervals,
  ``min/max/sum/avg_over_time`` leave them out (NaN), and a series with no sample is dropped;
  an ungrouped ``rate``/``count_over_time`` always has its series, even with no spans;
* ``min/max/sum_over_time`` use Tempo's running functions (``engine_metrics_functions.go``,
  a missing value makes a running sum start over), ``avg_over_time`` an incremental mean;
  ``duration`` is in seconds, other attributes as numbers (missing: skipped);
* ``quantile_over_time`` and ``histogram_over_time`` bucket values by powers of two
  (Log2Bucketize: durations in nanoseconds then seconds, integers as they are, floats and
  values below 2 dropped) and quantiles interpolate exponentially inside a bucket
  (Log2Quantile);
* labels: ``by`` fields named as Tempo prints them (``resource.service.name``, ``name`` for
  ``span:name``, ``.foo``), absent values left out (all absent: the first field = "nil"),
  an unscoped ``by`` field looked up on the span then the resource; ungrouped series
  ``__name__=<function>``; quantile series add ``p``; histogram series ``__bucket``;
* ``topk(n)``/``bottomk(n)`` keep, per interval, the n highest/lowest series values;
* series sorted as the frontend sorts them (combiner/metrics_query_range.go sortResponse).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tempo_standin.model import SpanRecord
from tempo_standin.traceql import ast as A
from tempo_standin.traceql.eval import (
    Prefilter,
    ScopeLookup,
    SpanCtx,
    TraceView,
    conditions_of,
    is_noop,
    run,
)
from tempo_standin.traceql.search import any_value

__all__ = ["MetricsResult", "compute", "interval_timestamps"]


@dataclass(frozen=True, slots=True)
class MetricsResult:
    # (labels as proto3 JSON KeyValue dicts, [(timestamp ms, value)])
    series: list[tuple[list[dict[str, Any]], list[tuple[int, float]]]]
    inspected_spans: int
    inspected_traces: int


class _Mapper:
    """IntervalMapperQueryRange / IntervalMapperInstant."""

    def __init__(self, start: int, end: int, step: int, instant: bool) -> None:
        self.start, self.end, self.step, self.instant = start, end, step, instant
        self.count = 1 if instant else max(0, (end - start) // step)

    def interval(self, ts: int) -> int:
        if self.instant:
            return 0 if self.start <= ts <= self.end and self.end != self.start else -1
        if not (self.start < ts <= self.end) or self.step == 0:
            return -1
        off = ts - self.start
        i = off // self.step
        if i * self.step == off:
            i -= 1
        return int(i)

    def timestamp_ms(self, i: int) -> int:
        ts = self.end if self.instant else self.start + (i + 1) * self.step
        return ts // 1_000_000


def interval_timestamps(start: int, end: int, step: int) -> list[int]:
    m = _Mapper(start, end, step, False)
    return [m.timestamp_ms(i) for i in range(m.count)]


def _kahan_inc(inc: float, total: float, c: float) -> tuple[float, float]:
    t = total + inc
    if math.isinf(t):
        c = 0.0
    elif abs(total) >= abs(inc):
        c += (total - t) + inc
    else:
        c += (inc - t) + total
    return t, c


class _Running:
    """min/max/sum over time for one interval (engine_metrics_functions.go)."""

    __slots__ = ("comp", "fn", "val")

    def __init__(self, fn: str) -> None:
        self.fn = fn
        self.val = math.nan
        self.comp = 0.0

    def add(self, n: float) -> None:
        cur = self.val
        if self.fn == "min":
            if math.isnan(cur) or n < cur:
                self.val = n
        elif self.fn == "max":
            if math.isnan(cur) or n > cur:
                self.val = n
        elif math.isnan(cur):
            self.val = n
        else:
            self.val, self.comp = _kahan_inc(n - self.comp, cur, 0.0)


def _log2_bucket(v: int) -> float:
    """Log2Bucketize: the next power of two (values below 2 have no bucket)."""
    return float(2 ** (int(v - 1).bit_length()))


def log2_quantile(p: float, buckets: Sequence[tuple[float, int]]) -> float:
    """Log2Quantile over (bucket max, count) sorted by bucket."""
    if math.isnan(p) or p < 0 or p > 1 or not buckets:
        return 0.0
    total_count = sum(c for _, c in buckets)
    if total_count == 0:
        return 0.0
    max_samples = math.ceil(p * total_count) or 1
    total = 0
    bucket = 0
    for i, (bmax, count) in enumerate(buckets):
        bucket = i
        if total + count > max_samples:
            break
        total += count
        if total == max_samples:
            return bmax
    interp = (max_samples - total) / buckets[bucket][1]
    max_v = math.log2(buckets[bucket][0])
    min_v = math.log2(buckets[bucket - 1][0]) if bucket > 0 else max_v - 1
    return float(2 ** (min_v + (max_v - min_v) * interp))


def _value_for(attr: A.Attribute, s: SpanCtx) -> float:
    """The number an *_over_time function aggregates (NaN: the span has none)."""
    if attr.intrinsic == "duration" and attr.scope == "none":
        return s.rec.duration_ns / 1e9
    v = attr.execute(s)
    f = v.as_float() if v.t != A.NIL else math.nan
    return f


def _bucket_for(attr: A.Attribute, s: SpanCtx) -> float | None:
    if attr.intrinsic == "duration" and attr.scope == "none":
        d = s.rec.duration_ns
        return None if d < 2 else _log2_bucket(d) / 1e9
    v = attr.execute(s)
    if v.t == A.INT:
        return None if v.v < 2 else _log2_bucket(v.v)
    if v.t == A.DURATION:
        return None if v.v < 2 else _log2_bucket(v.v) / 1e9
    return None


def _by_value(attr: A.Attribute, s: SpanCtx) -> A.Static:
    if attr.intrinsic is None and attr.scope == "none":
        for scope in ("span", "resource"):
            v = A.scoped_attribute(scope, False, attr.name).execute(s)
            if v.t != A.NIL:
                return A.Static(v.t, v.v)
        return A.NIL_STATIC
    v = attr.execute(s)
    return A.Static(v.t, v.v)


def _label(name: str, v: A.Static) -> dict[str, Any]:
    return {"key": name, "value": any_value(v)}


def compute(
    root: A.RootExpr,
    traces: Sequence[tuple[bytes, Sequence[SpanRecord]]],
    start_ns: int,
    end_ns: int,
    step_ns: int,
    *,
    instant: bool = False,
    scope_lookup: ScopeLookup | None = None,
) -> MetricsResult:
    """Evaluate ``root`` (a validated metrics query) over (trace ID, spans) pairs; the range
    must already be aligned (``align``) for a range query. Raises ``A.EvalError``."""
    stage = root.metrics
    mapper = _Mapper(start_ns, end_ns, step_ns, instant)
    if isinstance(stage, A.MetricsCompare):
        return _compare(root, stage, traces, mapper, start_ns, end_ns, scope_lookup)
    assert isinstance(stage, A.MetricsAggregate)
    n = mapper.count
    op = stage.op
    by = stage.by
    series: dict[tuple[Any, ...], tuple[list[A.Static], list[Any]]] = {}

    def new_cells() -> list[Any]:
        if op in ("rate", "count_over_time", "quantile_over_time", "histogram_over_time"):
            return [0.0] * n
        if op == "avg_over_time":
            return [None] * n  # (mean, weight)
        return [_Running(op.split("_")[0]) for _ in range(n)]

    inspected_spans = 0
    inspected_traces = 0
    if is_noop(root):
        return MetricsResult([], 0, 0)
    req = conditions_of(root)
    pre = Prefilter(req, root)
    for trace_id, spans in traces:
        inspected_traces += 1
        view = TraceView.of(trace_id, spans, scope_lookup)
        for ss in run(root, view, req, pre):
            for s in ss.spans:
                st = s.rec.start_ns
                if st <= start_ns or st > end_ns:
                    continue
                inspected_spans += 1
                i = mapper.interval(st)
                if i < 0:
                    continue
                vals = [_by_value(b, s) for b in by]
                extra: float | None = None
                if op in ("quantile_over_time", "histogram_over_time"):
                    assert stage.attr is not None
                    extra = _bucket_for(stage.attr, s)
                    if extra is None:
                        continue
                key = (*(v.map_key() for v in vals), extra)
                entry = series.get(key)
                if entry is None:
                    entry = series[key] = (vals, new_cells())
                cells = entry[1]
                if op in ("rate", "count_over_time", "quantile_over_time",
                          "histogram_over_time"):  # fmt: skip
                    cells[i] += 1.0
                    continue
                assert stage.attr is not None
                x = _value_for(stage.attr, s)
                if op == "avg_over_time":
                    if math.isnan(x):
                        continue
                    cur = cells[i]
                    if cur is None:
                        cells[i] = (x, 1.0)
                    else:
                        mean, w = cur
                        w += 1
                        cells[i] = (mean + (x / w - mean / w), w)
                else:
                    cells[i].add(x)
    if not by and op in ("rate", "count_over_time") and not series:
        series[()] = ([], new_cells())
    step_s = (end_ns - start_ns if instant else step_ns) / 1e9
    out: list[tuple[list[dict[str, Any]], list[float]]] = []
    if op == "quantile_over_time":
        out = _quantiles(stage, series, n)
    else:
        for key, (vals, cells) in series.items():
            labels = _labels(stage, vals)
            if op == "histogram_over_time":
                labels.append(_label("__bucket", A.Static(A.FLOAT, key[-1])))
            values: list[float]
            if op == "rate":
                values = [c / step_s for c in cells]
            elif op in ("count_over_time", "histogram_over_time"):
                values = list(cells)
            elif op == "avg_over_time":
                values = [math.nan if c is None else c[0] for c in cells]
            else:
                values = [c.val for c in cells]
            out.append((labels, values))
    if root.second_stage is not None and len(out) > root.second_stage.limit:
        out = _top_bottom(root.second_stage, out, n)
    result = []
    for labels, values in out:
        samples = [(mapper.timestamp_ms(i), v) for i, v in enumerate(values) if not math.isnan(v)]
        if samples:
            result.append((labels, samples))
    result.sort(key=_sort_key)
    return MetricsResult(result, inspected_spans, inspected_traces)


def _labels(stage: A.MetricsAggregate, vals: list[A.Static]) -> list[dict[str, Any]]:
    if not stage.by:
        if stage.op in ("quantile_over_time", "histogram_over_time"):
            return []
        return [_label("__name__", A.Static(A.STRING, stage.op))]
    labels = [_label(b.text(), v) for b, v in zip(stage.by, vals, strict=True) if v.t != A.NIL]
    if not labels:
        labels = [_label(stage.by[0].text(), A.NIL_STATIC)]
    return labels


def _quantiles(
    stage: A.MetricsAggregate,
    series: dict[tuple[Any, ...], tuple[list[A.Static], list[Any]]],
    n: int,
) -> list[tuple[list[dict[str, Any]], list[float]]]:
    grouped: dict[str, tuple[list[dict[str, Any]], list[dict[float, int]]]] = {}
    for key, (vals, cells) in series.items():
        labels = _labels(stage, vals)
        gk = json.dumps(labels, sort_keys=True)
        g = grouped.get(gk)
        if g is None:
            g = grouped[gk] = (labels, [{} for _ in range(n)])
        bucket = key[-1]
        for i, c in enumerate(cells):
            if c:
                g[1][i][bucket] = g[1][i].get(bucket, 0) + int(c)
    out = []
    for labels, hists in grouped.values():
        for q in stage.floats:
            values = [log2_quantile(q, sorted(h.items())) if h else 0.0 for h in hists]
            out.append(([*labels, _label("p", A.Static(A.FLOAT, q))], values))
    return out


def _top_bottom(
    stage: A.TopKBottomK,
    out: list[tuple[list[dict[str, Any]], list[float]]],
    n: int,
) -> list[tuple[list[dict[str, Any]], list[float]]]:
    """processTopK / processBottomK: per interval, the k extreme non-NaN values survive."""
    keep: dict[int, list[float]] = {}
    for i in range(n):
        cands = [(vals[i], idx) for idx, (_, vals) in enumerate(out) if i < len(vals)
                 and not math.isnan(vals[i])]  # fmt: skip
        cands.sort(key=lambda c: c[0], reverse=stage.op == "topk")
        for _, idx in cands[: stage.limit]:
            row = keep.setdefault(idx, [math.nan] * n)
            row[i] = out[idx][1][i]
    return [(out[idx][0], vals) for idx, vals in sorted(keep.items())]


def _value_sort_text(v: dict[str, Any]) -> str:
    """Roughly gogo's AnyValue.String(): ``string_value:"x"``, ``int_value:3``."""
    for k, x in v.items():
        field = {"stringValue": "string_value", "intValue": "int_value",
                 "doubleValue": "double_value", "boolValue": "bool_value"}.get(k, k)  # fmt: skip
        return f"{field}:{json.dumps(x) if isinstance(x, str) and k == 'stringValue' else x}"
    return ""


def _sort_key(item: tuple[list[dict[str, Any]], list[tuple[int, float]]]) -> tuple[Any, ...]:
    labels = item[0]
    return (len(labels), [(lb["key"], _value_sort_text(lb["value"])) for lb in labels])


# --- compare() (engine_metrics_compare.go) ------------------------------------------------------

# The span's attributes compare() counts: what vparquet4's select-all fetch returns through
# span.AllAttributesFunc (trace, resource, instrumentation and span level), minus durations and
# the IDs, start times and nested-set numbers MetricsCompare skips.
_COMPARE_INTRINSICS = (
    "rootServiceName", "rootName", "name", "status", "statusMessage", "kind",
    "instrumentation:name", "instrumentation:version",
)  # fmt: skip
_TOO_MANY = "__too_many_values__"


def _compare_attributes(s: SpanCtx) -> list[tuple[str, A.Static]]:
    out: list[tuple[str, A.Static]] = []
    rec = s.rec
    for name in _COMPARE_INTRINSICS[:2]:
        out.append((name, s.intrinsic(name)))
    for k, v in rec.resource_attributes.items():
        out.append(("resource." + k, A.static_from_value(v)))
    if s.view.scope_lookup is not None:
        for name in _COMPARE_INTRINSICS[6:]:
            out.append((name, s.intrinsic(name)))
        for k, v in s.scope()[2].items():
            out.append(("instrumentation." + k, A.static_from_value(v)))
    for name in _COMPARE_INTRINSICS[2:6]:
        out.append((name, s.intrinsic(name)))
    for k, v in rec.attributes.items():
        out.append(("span." + k, A.static_from_value(v)))
    return [(k, v) for k, v in out if v.t not in (A.NIL, A.DURATION)]


def _top_n(values: dict[Any, tuple[A.Static, list[float]]], n: int) -> list[Any]:
    """topN.get: the n values with the highest totals (all of them when there are at most n)."""
    keys = list(values)
    if len(keys) <= n:
        return keys
    keys.sort(key=lambda k: -math.fsum(values[k][1]))
    return keys[:n]


def _compare(
    root: A.RootExpr,
    stage: A.MetricsCompare,
    traces: Sequence[tuple[bytes, Sequence[SpanRecord]]],
    mapper: _Mapper,
    start_ns: int,
    end_ns: int,
    scope_lookup: ScopeLookup | None,
) -> MetricsResult:
    """MetricsCompare: for every attribute of the spans the pipeline yields, counts per value and
    interval for the spans the filter selects ("selection", within its optional time window)
    and for the others ("baseline"), with totals per attribute; the n most frequent values of
    each attribute are kept (BaselineAggregator). Series are labelled
    ``__meta_type=baseline|selection|baseline_total|selection_total`` plus the attribute."""
    n = mapper.count
    buffers: dict[str, dict[str, dict[Any, tuple[A.Static, list[float]]]]] = {
        t: {} for t in ("baseline", "selection", "baseline_total", "selection_total")
    }
    expr = stage.filter.expr
    inspected_spans = inspected_traces = 0
    if not is_noop(root):
        req = conditions_of(root)
        pre = Prefilter(req, root)
        for trace_id, spans in traces:
            inspected_traces += 1
            view = TraceView.of(trace_id, spans, scope_lookup)
            for ss in run(root, view, req, pre):
                for s in ss.spans:
                    st = s.rec.start_ns
                    if st <= start_ns or st > end_ns:
                        continue
                    inspected_spans += 1
                    i = mapper.interval(st)
                    if i < 0:
                        continue
                    selected = False
                    if not (stage.start > 0 and stage.end > 0) or stage.start < st <= stage.end:
                        r = expr.execute(s)
                        selected = r.t == A.BOOL and bool(r.v)
                    kind = "selection" if selected else "baseline"
                    for name, v in _compare_attributes(s):
                        per_value = buffers[kind].setdefault(name, {})
                        cell = per_value.get(v.map_key())
                        if cell is None:
                            cell = per_value[v.map_key()] = (v, [0.0] * n)
                        cell[1][i] += 1
                        totals = buffers[kind + "_total"].setdefault(name, {})
                        tcell = totals.get(None)
                        if tcell is None:
                            tcell = totals[None] = (A.Static(A.STRING, "nil"), [0.0] * n)
                        tcell[1][i] += 1
    result = []
    for meta, attrs in buffers.items():
        for name, per_value in attrs.items():
            for key in _top_n(per_value, stage.top_n):
                v, counts = per_value[key]
                labels = [_label("__meta_type", A.Static(A.STRING, meta)), _label(name, v)]
                samples = [(mapper.timestamp_ms(i), c) for i, c in enumerate(counts)]
                if samples:
                    result.append((labels, samples))
    result.sort(key=_sort_key)
    return MetricsResult(result, inspected_spans, inspected_traces)
