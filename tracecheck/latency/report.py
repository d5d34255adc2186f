"""``tracecheck report apiserver``: per-endpoint latency from span-metrics, from traces, and from
the apiserver's own metrics, side by side; ``--html`` adds plots, ``--png`` the main chart.

Sources, per endpoint (the SERVER span name, e.g. ``GET /api/v1/namespaces/{:namespace}/pods``):

* **span-metrics** (Prometheus): ``histogram_quantile`` over the window's ``increase()`` of the
  latency histogram, by ``span_name`` (tempo-api.md §11.1; the family, Tempo's
  ``traces_spanmetrics_*`` or the collector connector's ``traces_span_metrics_*``, is found in
  Prometheus, :mod:`tracecheck.spanmetrics`);
* **traces** (Tempo search): the spans of the first ``trace_limit`` traces found, exact
  quantiles with pandas (:func:`tracecheck.latency.table.latency_table`, WATCH excluded);
* **apiserver** (Prometheus, when it scrapes the apiserver): ``apiserver_request_duration_seconds``
  buckets mapped to span names by verb, group, version, resource, subresource and scope, the
  quantile computed from the merged buckets like ``histogram_quantile``.

Span-metric quantiles are interpolated inside buckets (2 ms·2^n for Tempo), so they may differ
from the exact trace quantiles by up to one bucket width; the table gives the width of the
bucket holding the trace p99 and whether the difference is within it (prometheus-api.md §6).

pandas and matplotlib are imported inside the functions that use them (STYLE 13).

Example::

    report = apiserver_report(settings, since="1h")
    print(report.table().render("table"))
    write_html(report, "report.html")
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tracecheck.errors import BackendError, ConfigError, QueryError
from tracecheck.polling import Clock, SystemClock
from tracecheck.query.adhoc import (
    PromQuerier,
    ResultTable,
    choose_step,
    iso,
    open_prometheus,
    open_tempo,
    resolve_window,
)
from tracecheck.spanmetrics import FAMILIES, NAMES_REGEX, Naming, candidates, quote

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

    from tracecheck.config import Settings
    from tracecheck.query.adhoc import TempoQuerier
    from tracecheck.results import Report

__all__ = [
    "ENDPOINT_COLUMNS",
    "SUMMARY_COLUMNS",
    "ApiserverReport",
    "apiserver_endpoint",
    "apiserver_report",
    "bucket_width",
    "chart_delays",
    "chart_errors",
    "chart_latency",
    "histogram_quantile",
    "render_html",
    "write_html",
    "write_png",
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
#: Traces asked of Tempo by default (search is first-N-found, tempo-api.md §5.3).
DEFAULT_TRACE_LIMIT = 1000
#: Endpoints drawn in the charts (the busiest).
CHART_ENDPOINTS = 12

_APISERVER_DURATION = "apiserver_request_duration_seconds"
_APISERVER_TOTAL = "apiserver_request_total"
# Long-running verbs are left out on both sides (the trace side drops WATCH spans).
_API_EXCLUDED_VERBS = "WATCH|WATCHLIST|CONNECT"
_API_BY = ("verb", "group", "version", "resource", "subresource", "scope")
# verb label -> HTTP method of the span name (apiserver-tracing.md §5.1: names use the method).
_METHOD_OF_VERB = {
    "GET": "GET",
    "LIST": "GET",
    "WATCH": "GET",
    "WATCHLIST": "GET",
    "POST": "POST",
    "CREATE": "POST",
    "PUT": "PUT",
    "UPDATE": "PUT",
    "PATCH": "PATCH",
    "APPLY": "PATCH",
    "DELETE": "DELETE",
    "DELETECOLLECTION": "DELETE",
}


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
        with ``full``) with the report's notes; render it with ``.render(fmt)``."""
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


# -- pure helpers --------------------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus's ``histogram_quantile`` over cumulative ``(upper bound, count)`` buckets.

    Linear interpolation inside the bucket holding rank ``q * total`` (the first bucket starts
    at 0); a rank in the +Inf bucket gives the largest finite bound; counts that decrease
    (scrapes at different times) are made monotonic first. NaN without observations.
    """
    items = sorted((float(le), float(c)) for le, c in buckets)
    if len(items) < 2 or not math.isinf(items[-1][0]):
        return math.nan
    counts: list[float] = []
    for _, c in items:
        counts.append(max(c, counts[-1]) if counts else c)
    total = counts[-1]
    if total <= 0 or math.isnan(total):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    rank = q * total
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if i == len(items) - 1:
        return items[-2][0]
    upper = items[i][0]
    if i == 0 and upper <= 0:
        return upper
    lower = 0.0 if i == 0 else items[i - 1][0]
    below = 0.0 if i == 0 else counts[i - 1]
    in_bucket = counts[i] - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def bucket_width(value: float, bounds: Sequence[float]) -> float | None:
    """Width of the bucket (between consecutive finite ``bounds``, first from 0) that holds
    ``value``; None above the last bound or for NaN."""
    if value is None or math.isnan(value):
        return None
    lower = 0.0
    for upper in sorted(bounds):
        if value <= upper:
            return upper - lower
        lower = upper
    return None


def apiserver_endpoint(labels: Mapping[str, str], known: Iterable[str] = ()) -> str | None:
    """The span name (apiserver-tracing.md §5.1) a series of ``apiserver_request_*`` counts.

    ``<METHOD> /<api|apis/group>/<version>[/namespaces/{:namespace}]/<resource>[/{:name}]
    [/<subresource>]``; a non-resource request is the method alone. The metric's ``scope`` is
    ``namespace``, ``cluster`` or ``resource`` (a named object, or a create), which does not say
    whether a named resource is namespaced: the form found among ``known`` span names wins,
    else the namespaced one. None for a verb without a method (e.g. CONNECT).
    """
    method = _METHOD_OF_VERB.get(labels.get("verb", "").upper())
    if method is None:
        return None
    resource = labels.get("resource", "")
    if not resource:
        return method
    group, version = labels.get("group", ""), labels.get("version", "")
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    scope = labels.get("scope", "")
    named = scope == "resource" and method != "POST"
    tail = f"/{resource}" + ("/{:name}" if named else "")
    if labels.get("subresource"):
        tail += f"/{labels['subresource']}"
    namespaced = f"{method} {prefix}/namespaces/{{:namespace}}{tail}"
    cluster = f"{method} {prefix}{tail}"
    if scope == "namespace":
        return namespaced
    if scope == "cluster":
        return cluster
    known_set = set(known)
    if cluster in known_set and namespaced not in known_set:
        return cluster
    if namespaced in known_set:
        return namespaced
    return cluster if resource == "namespaces" else namespaced


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
    probe: bool = False,
    smoke_report: Report | None = None,
    clock: Clock | None = None,
    tempo: TempoQuerier | None = None,
    prometheus: PromQuerier | None = None,
) -> ApiserverReport:
    """Build the apiserver latency report over ``since`` (default 1 h) or ``start``/``end``.

    Reads Tempo (search) and Prometheus (span-metrics, exemplars, the apiserver's metrics); a
    backend that cannot be asked raises :class:`~tracecheck.errors.BackendError`; missing data
    is a note, not an error (an empty report is still a report). ``probe`` runs
    ``tracecheck smoke`` first to measure the delay of every pipeline stage (it sends one
    synthetic trace); ``smoke_report`` uses the delays of a smoke run already made. Without
    either, the only delay measured is span end -> span-metrics sample, from exemplars.
    """
    import pandas as pd

    from tracecheck.latency.table import HTTP_ATTRIBUTES, latency_table, spans_frame

    clock = clock or SystemClock()
    t0, t1 = resolve_window(since=since, start=start, end=end, now=clock.time())
    if trace_limit < 1:
        raise QueryError("report", "--limit", "the trace limit must be positive")
    if probe and smoke_report is None:
        from tracecheck.smoke.engine import smoke

        smoke_report = smoke(settings, clock=clock)
    out = _Collected()
    window = f"{max(1, round(t1 - t0))}s"
    tempo_client, tstack = open_tempo(settings, tempo)
    prom, pstack = open_prometheus(settings, prometheus)
    with tstack, pstack:
        # -- traces
        # Both HTTP conventions (otelhttp's old keys, or the new ones with
        # OTEL_SEMCONV_STABILITY_OPT_IN; apiserver-tracing.md §5.2): without the method and the
        # target a WATCH cannot be told from a LIST.
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
    # Zero-filled numerator, positive denominator (prometheus-api.md §5): 0 % rather than no
    # data while there are requests but no errors.
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
    time, tempo-api.md §11.3) for the traces found."""
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


# -- charts --------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    # A bare Figure renders with Agg and touches no global pyplot state or backend.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _short(name: str, limit: int = 52) -> str:
    """A label that fits: the method stays, the middle of a long route is elided."""
    if len(name) <= limit:
        return name
    method, sep, route = name.partition(" ")
    if not sep:
        return name[: limit - 1] + "…"
    return f"{method} …{route[-(limit - len(method) - 2) :]}"


def chart_latency(report: ApiserverReport) -> Figure:
    """The main chart: per endpoint (the busiest :data:`CHART_ENDPOINTS`), the distribution of
    trace durations (box and points, log scale) with the p50/p99 of each source marked."""
    fig = _figure(11, 1.2 + 0.55 * max(1, min(CHART_ENDPOINTS, len(report.endpoints))))
    ax = fig.add_subplot()
    top = list(report.endpoints["endpoint"][:CHART_ENDPOINTS])[::-1]
    if not top:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    kept = report.durations[~report.durations["is_watch"]]
    data = [kept.loc[kept["endpoint"] == e, "duration_ms"].to_numpy() for e in top]
    positions = list(range(len(top)))
    with_data = [(p, d) for p, d in zip(positions, data, strict=True) if len(d)]
    if with_data:
        ax.boxplot([d for _, d in with_data], positions=[p for p, _ in with_data],
                   orientation="horizontal", widths=0.5, showfliers=False, manage_ticks=False,
                   medianprops={"color": "tab:blue"})  # fmt: skip
        import numpy as np

        rng = np.random.default_rng(0)
        for p, d in with_data:
            ax.scatter(d, p + rng.uniform(-0.18, 0.18, len(d)), s=6, alpha=0.35,
                       color="tab:blue", linewidths=0)  # fmt: skip
    idx = report.endpoints.set_index("endpoint")
    plotted: list[float] = []
    marks = (
        ("traces_p99_ms", "|", "tab:blue", "p99 traces"),
        ("sm_p50_ms", "D", "tab:orange", "p50 span-metrics"),
        ("sm_p99_ms", "d", "tab:red", "p99 span-metrics"),
        ("apiserver_p99_ms", "^", "tab:green", "p99 apiserver metric"),
    )
    for col, marker, color, label in marks:
        xs, ys = [], []
        for p, e in zip(positions, top, strict=True):
            v = idx.at[e, col] if e in idx.index else math.nan
            if isinstance(v, float) and math.isfinite(v) and v > 0:
                xs.append(v)
                ys.append(p)
        plotted.extend(xs)
        if xs:
            ax.scatter(xs, ys, marker=marker, s=70 if marker == "|" else 40, color=color,
                       label=label, zorder=3)  # fmt: skip
    # The axis follows the data; bucket bounds are drawn only inside it.
    shown = [float(v) for _, d in with_data for v in d if v > 0] + plotted
    lo, hi = (min(shown) / 1.5, max(shown) * 1.5) if shown else (0.1, 10.0)
    for bound in report.sm_bounds_ms:
        if lo <= bound <= hi:
            ax.axvline(bound, color="0.85", linewidth=0.6, zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_yticks(positions, [_short(e) for e in top], fontsize=8)
    ax.set_xlabel("latency (ms, log scale; grey lines: span-metric bucket bounds)")
    ax.set_title(
        f"{report.service}: request latency per endpoint, {iso(report.start)} to {iso(report.end)}",
        fontsize=10,
    )
    ax.grid(axis="x", which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def chart_delays(report: ApiserverReport) -> Figure:
    """Pipeline delay per stage: one bar per smoke stage, a box for exemplar-derived delays."""
    fig = _figure(9, 1.4 + 0.6 * max(1, report.delays["stage"].nunique()))
    ax = fig.add_subplot()
    if report.delays.empty:
        ax.text(0.5, 0.5, "no delays measured (run with --probe)", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return fig
    stages = list(dict.fromkeys(report.delays["stage"]))[::-1]
    for i, stage in enumerate(stages):
        values = report.delays.loc[report.delays["stage"] == stage, "delay_s"].to_numpy()
        if len(values) == 1:
            ax.barh(i, values[0], color="tab:purple", height=0.5)
            ax.text(values[0], i + 0.3, f"{values[0]:.2f}s", ha="right", fontsize=8)
        else:
            ax.boxplot(
                [values], positions=[i], orientation="horizontal", widths=0.5, manage_ticks=False
            )
            median = float(sorted(values)[len(values) // 2])
            ax.text(median, i + 0.3, f"median {median:.2f}s (n={len(values)})", ha="center",
                    fontsize=8)  # fmt: skip
    # "tempo.search (tempo ingester -> search)": the check on one line, its hop below.
    labels = [s.replace(" (", "\n(", 1) for s in stages]
    ax.set_yticks(range(len(stages)), labels, fontsize=8)
    ax.set_xlabel("seconds from send (smoke) or span end (exemplars) until visible")
    ax.set_title("pipeline delay per stage", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def chart_errors(report: ApiserverReport) -> Figure:
    """Error rate over time per source (span-metrics, apiserver 5xx, traces)."""
    from datetime import UTC, datetime

    fig = _figure(11, 3.6)
    ax = fig.add_subplot()
    if report.errors.empty:
        ax.text(0.5, 0.5, "no requests in the window", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return fig
    styles = {"span-metrics": ("tab:red", "-"), "apiserver 5xx": ("tab:green", "--"),
              "traces": ("tab:blue", ":")}  # fmt: skip
    for source, group in report.errors.groupby("source", sort=False):
        color, line = styles.get(str(source), ("0.3", "-"))
        if source == "traces":
            # Few spans per bin make a jumpy percentage: the marker's area shows how many.
            sizes = [8 + 6 * math.sqrt(n) for n in group["requests"]]
            ax.plot(list(group["time"]), group["error_pct"], line, color=color, linewidth=0.8)
            ax.scatter(list(group["time"]), group["error_pct"], s=sizes, color=color,
                       alpha=0.6, label="traces (marker area: spans found)")  # fmt: skip
        else:
            ax.plot(list(group["time"]), group["error_pct"], line, color=color,
                    label=str(source))  # fmt: skip
    ticks = [report.start + i * (report.end - report.start) / 6 for i in range(7)]
    fmt = "%H:%M" if report.end - report.start <= 86400 else "%m-%d %H:%M"
    ax.set_xticks(ticks, [datetime.fromtimestamp(t, UTC).strftime(fmt) for t in ticks])
    ax.set_xlim(report.start, report.end)
    ax.set_ylabel("errors (% of requests)")
    ax.set_ylim(bottom=0, top=max(5.0, float(report.errors["error_pct"].max()) * 1.2))
    ax.set_title("error rate over time (UTC)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_png(report: ApiserverReport, path: str) -> None:
    """Write the main chart (:func:`chart_latency`) as a PNG file."""
    _write(path, _png(chart_latency(report)))


def write_html(report: ApiserverReport, path: str) -> None:
    """Write :func:`render_html` to ``path``."""
    _write(path, render_html(report).encode("utf-8"))


def _write(path: str, data: bytes) -> None:
    from pathlib import Path

    try:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except OSError as exc:
        raise ConfigError("report", path, f"cannot write: {exc.strerror or exc}") from None


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .5em}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#555}code,pre{font-size:.85em}pre{white-space:pre-wrap;background:#f7f7f7;padding:.5em}
img{max-width:100%}
"""


def render_html(report: ApiserverReport) -> str:
    """One self-contained HTML page: the endpoint table, notes, three charts (inline PNG) and
    the queries that produced the numbers. No external resources."""
    charts = (
        ("Latency per endpoint", chart_latency(report),
         "Boxes and points: trace durations (WATCH excluded). Markers: p99 from traces, p50/p99 "
         "from span-metrics, p99 from the apiserver's own histogram."),
        ("Pipeline delay per stage", chart_delays(report),
         "Bars: one smoke run (send to visible). Boxes: span end to the span-metrics sample "
         "holding its exemplar."),
        ("Error rate over time", chart_errors(report),
         "span-metrics: STATUS_CODE_ERROR share of SERVER calls; apiserver: 5xx share of "
         "apiserver_request_total; traces: share of found spans with status >= 500."),
    )  # fmt: skip
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>tracecheck report apiserver: {e(report.service)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>tracecheck report apiserver: <code>{e(report.service)}</code></h1>",
        f"<p>Window {e(iso(report.start))} to {e(iso(report.end))}; span-metrics family "
        f"<code>{e(report.naming or 'none found')}</code>; {report.traces_found} traces found"
        f"{' (limited)' if report.traces_limited else ''}.</p>",
    ]
    if report.notes:
        parts.append("<ul class='note'>" + "".join(f"<li>{e(n)}</li>" for n in report.notes)
                     + "</ul>")  # fmt: skip
    parts.append("<h2>Endpoints</h2>")
    parts.append(_html_table(report.table(full=True)))
    for title, fig, caption in charts:
        data = base64.b64encode(_png(fig)).decode("ascii")
        parts.append(f"<h2>{e(title)}</h2><p class='note'>{e(caption)}</p>")
        parts.append(f"<img alt='{e(title)}' src='data:image/png;base64,{data}'>")
    evaluated = e(iso(report.evaluated_at))
    parts.append(
        "<h2>Queries</h2><details><summary>PromQL and TraceQL behind the numbers (instant "
        f"queries evaluated at {evaluated})</summary>"
    )
    for name, text in report.queries:
        parts.append(f"<p><b>{e(name)}</b></p><pre>{e(text)}</pre>")
    parts.append("</details></body></html>")
    return "\n".join(parts) + "\n"


def _html_table(table: ResultTable) -> str:
    if not table.rows:
        return "<p class='note'>no data</p>"
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for c in table.columns:
            v = row.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            text = "" if v is None else (f"{v:,.3f}".rstrip("0").rstrip(".") if num else str(v))
            cells.append(f"<td class='num'>{e(text)}</td>" if num else f"<td>{e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
