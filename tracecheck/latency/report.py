"""``tracecheck report apiserver``: per-endpoint latency from span-metrics, from traces, and from
the apiserver's own metrics, side by side; ``--html`` adds plots, ``--png`` the main chart.

Sources, per endpoint (the SERVER span name, e.g. ``GET /api/v1/namespaces/{:namespace}/pods``):

* **span-metrics** (Prometheus): ``histogram_quantile`` over the window's ``increase()`` of the
  latency histogram, by ``span_name`` (docs/reference/tempo.md §11.1; the family, Tempo's
  ``traces_spanmetrics_*`` or the collector connector's ``traces_span_metrics_*``, is found in
  Prometheus, :mod:`tracecheck.spanmetrics`);
* **traces** (Tempo search): the spans of the first ``trace_limit`` traces found, exact
  quantiles with pandas (:func:`tracecheck.latency.table.latency_table`, WATCH excluded);
* **apiserver** (Prometheus, when it scrapes the apiserver): ``apiserver_request_duration_seconds``
  buckets mapped to span names by verb, group, version, resource, subresource and scope, the
  quantile computed from the merged buckets like ``histogram_quantile``.

Span-metric quantiles are interpolated inside buckets (2 ms·2^n for Tempo), so they may differ
from the exact trace quantiles by up to one bucket width; the table gives the width of the
bucket holding the trace p99 and whether the difference is within it
(docs/reference/prometheus.md §6).

pandas is imported inside the functions that use it, so the CLI starts fast.

The charts and the HTML page are drawn by :mod:`tracecheck.latency.charts`; the pure histogram
arithmetic is :mod:`tracecheck.latency.histograms`.

Example::

    report = apiserver_report(settings, since="1h")
    print(render_table(report.table(), "table"))
    write_html(report, "report.html")
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tracecheck.backends import Backends
from tracecheck.errors import BackendError, QueryError
from tracecheck.latency.histograms import apiserver_endpoint, bucket_width, histogram_quantile
from tracecheck.output import iso
from tracecheck.polling import Clock, SystemClock
from tracecheck.query.adhoc import PromQuerier
from tracecheck.query.window import choose_step, resolve_window
from tracecheck.results import ResultTable
from tracecheck.spanmetrics import FAMILIES, NAMES_REGEX, Naming, candidates, quote

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from tracecheck.config import Settings
    from tracecheck.query.adhoc import TempoQuerier
    from tracecheck.results import Report

__all__ = [
    "CHART_ENDPOINTS",
    "DEFAULT_TRACE_LIMIT",
    "ENDPOINT_COLUMNS",
    "SUMMARY_COLUMNS",
    "ApiserverReport",
    "apiserver_report",
]

#: Columns of :attr:`ApiserverReport.endpoints` (all latencies in milliseconds).
ENDPOINT_COLUMNS = (
    "endpoint",
    "traces_n",
    "traces_error_pct",
    "traces_p50_ms",
    "traces_p90_ms",
    "traces_p99_ms",
    "traces_max_ms",
    "sm_calls",
    "sm_error_pct",
    "sm_p50_ms",
    "sm_p90_ms",
    "sm_p99_ms",
    "p50_diff_ms",
    "p99_diff_ms",
    "sm_bucket_ms",
    "p99_within_bucket",
    "apiserver_n",
    "apiserver_p50_ms",
    "apiserver_p99_ms",
)
#: The columns of the terminal table (:meth:`ApiserverReport.table`).
SUMMARY_COLUMNS = (
    "endpoint",
    "traces_n",
    "traces_p50_ms",
    "sm_p50_ms",
    "traces_p99_ms",
    "sm_p99_ms",
    "p99_diff_ms",
    "sm_bucket_ms",
    "p99_within_bucket",
    "apiserver_p99_ms",
)
#: Traces asked of Tempo by default (search is first-N-found, docs/reference/tempo.md §5.3).
DEFAULT_TRACE_LIMIT = 1000
#: Endpoints drawn in the charts (the busiest).
CHART_ENDPOINTS = 12

_APISERVER_DURATION = "apiserver_request_duration_seconds"
_APISERVER_TOTAL = "apiserver_request_total"
# Long-running verbs are left out on both sides (the trace side drops WATCH spans).
_API_EXCLUDED_VERBS = "WATCH|WATCHLIST|CONNECT"
_API_BY = ("verb", "group", "version", "resource", "subresource", "scope")


@dataclass(frozen=True, slots=True)
class ApiserverReport:
    """What ``tracecheck report apiserver`` found; renderers read only this.

    ``endpoints`` has :data:`ENDPOINT_COLUMNS`; ``durations`` one row per trace span used
    (``endpoint``, ``start`` unix s, ``duration_ms``, ``error``, ``is_watch``); ``errors`` the
    error rate over time (``time`` unix s, ``source``, ``error_pct``, ``requests`` per trace
    bin); ``delays`` the pipeline
    delay per stage (``stage``, ``delay_s``, ``source``). ``queries`` are the PromQL and TraceQL
    texts that produced the numbers, ``evaluated_at`` the time of the instant PromQL queries
    (to reproduce them, e.g. ``promtool query instant --time``).
    """

    service: str
    start: float
    end: float
    naming: str  # "tempo", "otel" or "" (no span-metrics found)
    endpoints: pd.DataFrame
    durations: pd.DataFrame
    errors: pd.DataFrame
    delays: pd.DataFrame
    notes: tuple[str, ...]
    queries: tuple[tuple[str, str], ...]
    evaluated_at: float
    traces_found: int = 0
    traces_limited: bool = False
    sm_bounds_ms: tuple[float, ...] = ()  # span-metric bucket upper bounds (finite), ms

    @property
    def empty(self) -> bool:
        return bool(self.endpoints.empty)

    def query(self, name: str) -> str:
        """The query text recorded under ``name`` (see :attr:`queries`)."""
        for key, text in self.queries:
            if key == name:
                return text
        raise KeyError(name)

    def table(self, *, full: bool = False) -> ResultTable:
        """The endpoint table (:data:`SUMMARY_COLUMNS`, or all of :data:`ENDPOINT_COLUMNS`
        with ``full``) with the report's notes; :func:`tracecheck.output.render_table` writes
        it."""
        columns = ENDPOINT_COLUMNS if full else SUMMARY_COLUMNS
        from tracecheck.latency.table import table_rows

        rows = tuple(table_rows(self.endpoints[list(columns)]))
        notes = list(self.notes)
        if not rows:
            notes.append(
                f"no data: no spans or span-metrics of service {self.service!r} between "
                f"{iso(self.start)} and {iso(self.end)}"
            )
        return ResultTable(columns, rows, tuple(notes), "apiserver-report", "", self.start,
                           self.end)  # fmt: skip


# -- collecting ----------------------------------------------------------------------------------


@dataclass
class _Collected:
    notes: list[str] = field(default_factory=list)
    queries: list[tuple[str, str]] = field(default_factory=list)


def apiserver_report(
    settings: Settings,
    *,
    since: str | float | None = None,
    start: str | None = None,
    end: str | None = None,
    service: str = "apiserver",
    trace_limit: int = DEFAULT_TRACE_LIMIT,
    smoke_report: Report | None = None,
    clock: Clock | None = None,
    tempo: TempoQuerier | None = None,
    prometheus: PromQuerier | None = None,
) -> ApiserverReport:
    """Build the apiserver latency report over ``since`` (default 1 h) or ``start``/``end``.

    Reads Tempo (search) and Prometheus (span-metrics, exemplars, the apiserver's metrics); a
    backend that cannot be asked raises :class:`~tracecheck.errors.BackendError`; missing data
    is a note, not an error (an empty report is still a report). ``smoke_report`` (a smoke run
    made just before, as ``tracecheck report apiserver --probe`` does) gives the delay of every
    pipeline stage; without it, the only delay measured is span end -> span-metrics sample,
    from exemplars.
    """
    import pandas as pd

    from tracecheck.latency.table import HTTP_ATTRIBUTES, latency_table, spans_frame

    clock = clock or SystemClock()
    t0, t1 = resolve_window(since=since, start=start, end=end, now=clock.time())
    if trace_limit < 1:
        raise QueryError("report", "--limit", "the trace limit must be positive")
    out = _Collected()
    window = f"{max(1, round(t1 - t0))}s"
    with Backends(settings, tempo=_as_client(tempo), prometheus=_as_client(prometheus)) as b:
        tempo_client: TempoQuerier = b.tempo()
        prom: PromQuerier = b.prometheus()
        # -- traces
        # Both HTTP conventions (otelhttp's old keys, or the new ones with
        # OTEL_SEMCONV_STABILITY_OPT_IN; docs/reference/apiserver.md §5.2): without the method
        # and the target a WATCH cannot be told from a LIST.
        selected = ", ".join(f"span.{key}" for key in HTTP_ATTRIBUTES)
        tql = (
            f"{{ resource.service.name = {quote(service)} && kind = server }} | select({selected})"
        )
        out.queries.append(("traces", tql))
        result = tempo_client.search(tql, start=t0, end=t1, limit=trace_limit, spss=10)
        spans: list[Any] = []
        ends: dict[bytes, int] = {}
        for t in result.traces:
            for ss in t.span_sets:
                for s in ss.spans:
                    spans.append(s)
                    ends[t.trace_id] = max(ends.get(t.trace_id, 0), s.start_ns + s.duration_ns)
        traces_limited = len(result.traces) >= trace_limit
        if traces_limited:
            out.notes.append(
                f"trace columns use the first {trace_limit} traces Tempo found (first-N-found, "
                "not a random sample); more exist: raise --limit"
            )
        frame = spans_frame(spans)
        frame["start"] = [s.start_ns / 1e9 for s in spans] if spans else []
        trace_table = latency_table(frame, by=("name",), include_watch=False)
        watches = int(frame["long_running"].sum()) if not frame.empty else 0
        if watches:
            out.notes.append(
                f"{watches} WATCH/long-running spans left out of the trace columns; span-metrics "
                "cannot tell them apart (same span name), so their p99 includes them"
            )

        # -- span-metrics
        naming = _find_naming(prom, settings, service, t0, t1, window)
        sm = _span_metrics(prom, naming, service, t1, window, out) if naming else None

        # -- the apiserver's own metrics
        known = set(trace_table["name"]) | (set(sm["calls"]) if sm else set())
        api = _apiserver_metrics(prom, t1, window, known, out)

        # -- error rate over time, delays
        errors = _error_series(prom, naming, service, t0, t1, frame, out)
        delays = _delays(prom, naming, service, t0, t1, ends, smoke_report, out)

    endpoints = _endpoint_frame(trace_table, sm, api)
    if sm is None:
        out.notes.append(
            f"no span-metrics for service {service!r} in Prometheus (looked for "
            f"{', '.join(sorted({f.calls for f in FAMILIES}))})"
        )
    if api is None:
        out.notes.append(
            f"{_APISERVER_DURATION} not in Prometheus for this window (is the apiserver scraped?)"
        )
    else:
        out.notes.append(
            f"apiserver_* columns: {_APISERVER_DURATION} buckets start at 5 ms (then 25, 50, "
            "100 ms...), so fast requests all read as 'under 5 ms' (p99 4.95 ms)"
        )
    if sm is not None:
        layout = "2 ms·2^n" if naming is not None and naming.flavour == "tempo" else "connector"
        out.notes.append(
            f"span-metric quantiles are interpolated inside histogram buckets ({layout} "
            "buckets); a difference up to the bucket's width (sm_bucket_ms) from the exact "
            "trace quantile is expected"
        )
    durations = pd.DataFrame(
        {
            "endpoint": frame["name"].astype(object),
            "start": frame["start"].astype(float),
            "duration_ms": frame["duration_ms"].astype(float),
            "error": frame["error"].astype(bool),
            "is_watch": frame["long_running"].astype(bool),
        }
    )
    return ApiserverReport(
        service=service,
        start=t0,
        end=t1,
        naming=naming.flavour if naming else "",
        endpoints=endpoints,
        durations=durations,
        errors=errors,
        delays=delays,
        notes=tuple(out.notes),
        queries=tuple(out.queries),
        evaluated_at=t1,
        traces_found=len(result.traces),
        traces_limited=traces_limited,
        sm_bounds_ms=tuple(sm["bounds_ms"]) if sm else (),
    )


def _find_naming(
    prom: PromQuerier,
    settings: Settings,
    service: str,
    t0: float,
    t1: float,
    window: str,
) -> Naming | None:
    """The span-metric family that has samples of ``service`` in the window (Tempo's first)."""
    names: tuple[str, ...] = ()
    label_values = getattr(prom, "label_values", None)
    if label_values is not None:
        names = label_values("__name__", match=[f'{{__name__=~"{NAMES_REGEX}"}}'], start=t0,
                             end=t1)  # fmt: skip
    for fam in candidates(names, settings.smoke.span_metrics_naming):
        # Over the whole window, like the increase() queries that follow: a plain instant
        # selector sees only the last 5 minutes, and would miss a service that stopped earlier.
        selector = f"{fam.calls}{{{fam.service_label}={quote(service)}}}"
        if prom.query(f"sum(count_over_time({selector}[{window}]))", at=t1).samples:
            return fam
    return None


def _vector(prom: PromQuerier, query: str, at: float, label: str) -> dict[str, float]:
    return {s.labels.get(label, ""): s.value for s in prom.query(query, at=at).samples}


def _span_metrics(
    prom: PromQuerier, fam: Naming, service: str, at: float, window: str, out: _Collected
) -> dict[str, Any]:
    sel = fam.selector(fam.calls, service, span_kind="SPAN_KIND_SERVER")
    err = fam.selector(fam.calls, service, span_kind="SPAN_KIND_SERVER",
                       status_code="STATUS_CODE_ERROR")  # fmt: skip
    bucket = fam.selector(fam.latency_bucket, service, span_kind="SPAN_KIND_SERVER")
    queries = {
        "sm_calls": f"sum by (span_name) (increase({sel}[{window}]))",
        "sm_errors": f"sum by (span_name) (increase({err}[{window}]))",
        "sm_buckets": f"sum by (le, span_name) (increase({bucket}[{window}]))",
    }
    from tracecheck.latency.table import PERCENTILES

    for q in PERCENTILES:
        queries[f"sm_p{q * 100:g}"] = (
            f"histogram_quantile({q:g}, sum by (le, span_name) (increase({bucket}[{window}])))"
        )
    out.queries.extend(queries.items())
    to_ms = fam.le_to_seconds * 1000.0
    sm: dict[str, Any] = {
        "calls": _vector(prom, queries["sm_calls"], at, "span_name"),
        "errors": _vector(prom, queries["sm_errors"], at, "span_name"),
        "quantiles": {
            q: {
                k: v * to_ms
                for k, v in _vector(prom, queries[f"sm_p{q * 100:g}"], at, "span_name").items()
            }
            for q in PERCENTILES
        },
    }
    bounds: set[float] = set()
    buckets: dict[str, list[tuple[float, float]]] = {}
    for s in prom.query(queries["sm_buckets"], at=at).samples:
        le = float(s.labels.get("le", "nan"))
        if math.isfinite(le):
            bounds.add(le * to_ms)
        buckets.setdefault(s.labels.get("span_name", ""), []).append((le * to_ms, s.value))
    sm["bounds_ms"] = sorted(bounds)
    sm["buckets"] = buckets
    return sm


def _apiserver_metrics(
    prom: PromQuerier, at: float, window: str, known: set[str], out: _Collected
) -> dict[str, dict[str, float]] | None:
    by = ", ".join(("le", *_API_BY))
    query = (
        f"sum by ({by}) (increase({_APISERVER_DURATION}_bucket"
        f'{{verb!~"{_API_EXCLUDED_VERBS}"}}[{window}]))'
    )
    out.queries.append(("apiserver_buckets", query))
    merged: dict[str, dict[float, float]] = {}
    samples = prom.query(query, at=at).samples
    if not samples:
        return None
    for s in samples:
        endpoint = apiserver_endpoint(s.labels, known)
        if endpoint is None:
            continue
        le = float(s.labels.get("le", "nan"))
        per = merged.setdefault(endpoint, {})
        per[le] = per.get(le, 0.0) + s.value
    from tracecheck.latency.table import PERCENTILES

    result: dict[str, dict[str, float]] = {}
    for endpoint, per in merged.items():
        items = sorted(per.items())
        row = {"n": items[-1][1] if items and math.isinf(items[-1][0]) else math.nan}
        for q in PERCENTILES:
            row[f"p{q * 100:g}"] = histogram_quantile(q, items) * 1000.0
        result[endpoint] = row
    return result


def _endpoint_frame(
    trace_table: pd.DataFrame, sm: dict[str, Any] | None, api: dict[str, dict[str, float]] | None
) -> pd.DataFrame:
    import pandas as pd

    rows: dict[str, dict[str, Any]] = {}
    for rec in trace_table.to_dict(orient="records"):
        rows[str(rec["name"])] = {
            "endpoint": str(rec["name"]),
            "traces_n": int(rec["count"]),
            "traces_error_pct": float(rec["error_pct"]),
            "traces_p50_ms": float(rec["p50_ms"]),
            "traces_p90_ms": float(rec["p90_ms"]),
            "traces_p99_ms": float(rec["p99_ms"]),
            "traces_max_ms": float(rec["max_ms"]),
        }
    if sm is not None:
        for name, calls in sm["calls"].items():
            row = rows.setdefault(name, {"endpoint": name})
            row["sm_calls"] = calls
            errors = sm["errors"].get(name, 0.0)
            row["sm_error_pct"] = 100.0 * errors / calls if calls > 0 else math.nan
            for q, col in ((0.5, "sm_p50_ms"), (0.9, "sm_p90_ms"), (0.99, "sm_p99_ms")):
                row[col] = sm["quantiles"].get(q, {}).get(name, math.nan)
    if api is not None:
        for name, vals in api.items():
            if name not in rows:
                continue  # an endpoint neither traced nor in span-metrics: not comparable
            rows[name]["apiserver_n"] = vals["n"]
            rows[name]["apiserver_p50_ms"] = vals.get("p50", math.nan)
            rows[name]["apiserver_p99_ms"] = vals.get("p99", math.nan)
    bounds = sm["bounds_ms"] if sm else []
    for row in rows.values():
        t50, t99 = row.get("traces_p50_ms", math.nan), row.get("traces_p99_ms", math.nan)
        s50, s99 = row.get("sm_p50_ms", math.nan), row.get("sm_p99_ms", math.nan)
        row["p50_diff_ms"] = s50 - t50
        row["p99_diff_ms"] = s99 - t99
        width = bucket_width(t99, bounds) if bounds else None
        row["sm_bucket_ms"] = math.nan if width is None else width
        if math.isnan(row["p99_diff_ms"]) or width is None:
            row["p99_within_bucket"] = None
        else:
            row["p99_within_bucket"] = "yes" if abs(row["p99_diff_ms"]) <= width + 1e-9 else "no"
    frame = pd.DataFrame(list(rows.values()), columns=list(ENDPOINT_COLUMNS))
    for c in ENDPOINT_COLUMNS:
        if c not in ("endpoint", "p99_within_bucket"):
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
    frame["_order"] = frame["traces_n"].fillna(0) + frame["sm_calls"].fillna(0)
    # An endpoint with neither spans nor calls in the window (a series that stopped rising)
    # says nothing about latency.
    frame = frame[frame["_order"] > 0]
    frame = frame.sort_values(["_order", "endpoint"], ascending=[False, True])
    return frame.drop(columns="_order").reset_index(drop=True)


def _error_series(
    prom: PromQuerier,
    naming: Naming | None,
    service: str,
    t0: float,
    t1: float,
    frame: pd.DataFrame,
    out: _Collected,
) -> pd.DataFrame:
    """Error % over time: span-metrics (STATUS_CODE_ERROR), apiserver (5xx), traces."""
    import pandas as pd

    step = choose_step(t0, t1, target_points=120)
    rate = f"{max(60, round(2 * step))}s"
    series: list[tuple[str, str]] = []
    if naming is not None:
        sel = naming.selector(naming.calls, service, span_kind="SPAN_KIND_SERVER")
        err = naming.selector(naming.calls, service, span_kind="SPAN_KIND_SERVER",
                              status_code="STATUS_CODE_ERROR")  # fmt: skip
        series.append(("span-metrics", _ratio(f"{err}[{rate}]", f"{sel}[{rate}]")))
    series.append((
        "apiserver 5xx",
        _ratio(f'{_APISERVER_TOTAL}{{code=~"5.."}}[{rate}]', f"{_APISERVER_TOTAL}[{rate}]"),
    ))  # fmt: skip
    rows: list[dict[str, Any]] = []
    for source, query in series:
        out.queries.append((f"errors_over_time:{source}", query))
        result = prom.query_range(query, start=t0, end=t1, step=step)
        for s in result.series:
            rows.extend(
                {"time": ts, "source": source, "error_pct": v, "requests": math.nan}
                for ts, v in s.points
            )
    if not frame.empty:
        kept = frame[~frame["long_running"].astype(bool)]
        bins = ((kept["start"] - t0) // step).astype(int)
        grouped = kept.assign(bin=bins).groupby("bin")["error"].agg(["mean", "size"])
        for b, rec in grouped.iterrows():
            rows.append({"time": t0 + (float(str(b)) + 0.5) * step, "source": "traces",
                         "error_pct": float(rec["mean"]) * 100.0,
                         "requests": float(rec["size"])})  # fmt: skip
    return pd.DataFrame(rows, columns=["time", "source", "error_pct", "requests"])


def _ratio(errors: str, total: str) -> str:
    # Zero-filled numerator, positive denominator (docs/reference/prometheus.md §5): 0 % rather
    # than no data while there are requests but no errors.
    return f"100 * (sum(rate({errors})) or 0 * sum(rate({total}))) / (sum(rate({total})) > 0)"


def _delays(
    prom: PromQuerier,
    naming: Naming | None,
    service: str,
    t0: float,
    t1: float,
    ends: Mapping[bytes, int],
    smoke_report: Report | None,
    out: _Collected,
) -> pd.DataFrame:
    """Pipeline delay per stage: from a smoke run when there is one, and span end ->
    span-metrics sample from exemplars (the sample's timestamp is the generator's collection
    time, docs/reference/tempo.md §11.3) for the traces found."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    if smoke_report is not None:
        for r in smoke_report.pipeline_latency():
            if r.get("delay_s") is not None:
                rows.append({"stage": f"{r['stage']} ({r['hop']})" if r.get("hop") else r["stage"],
                             "delay_s": float(r["delay_s"]), "source": "smoke"})  # fmt: skip
    query_exemplars = getattr(prom, "query_exemplars", None)
    if naming is not None and ends and query_exemplars is not None:
        selector = naming.selector(naming.latency_bucket, service)
        out.queries.append(("exemplars", selector))
        from tracecheck.ids import parse_trace_id

        try:
            found = query_exemplars(selector, start=t0, end=t1)
        except (BackendError, QueryError) as exc:
            out.notes.append(f"exemplars could not be read: {exc}")
            found = ()
        for series in found:
            for ex in series.exemplars:
                raw = next((ex.labels[k] for k in naming.exemplar_labels if k in ex.labels), "")
                try:
                    tid = parse_trace_id(raw, encoding="hex")
                except ValueError:
                    continue
                if tid in ends:
                    rows.append({"stage": "span end -> span-metrics sample (exemplar)",
                                 "delay_s": ex.timestamp - ends[tid] / 1e9,
                                 "source": "exemplars"})  # fmt: skip
    if not rows:
        out.notes.append(
            "pipeline delays: no smoke run and no exemplar of a found trace; run with --probe "
            "to measure every stage (sends one synthetic trace)"
        )
    return pd.DataFrame(rows, columns=["stage", "delay_s", "source"])


def _as_client(querier: Any) -> Any:
    """An injected querier stands in for the client (duck-typed: only the seam's methods)."""
    return querier
