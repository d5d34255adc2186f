"""Ad-hoc TraceQL and PromQL: run a query, get a table (columns, rows, notes).

``tracecheck query traceql`` and ``tracecheck query promql`` are thin over this module:

* :func:`run_traceql` -- a TraceQL search (one row per matched span, with its trace) or, with
  ``metrics=True``, a TraceQL metrics query (one row per series sample);
* :func:`run_promql` -- a PromQL instant query (vector / scalar / string) or a range query
  (matrix, one row per point). Prometheus decides whether the query is valid: its refusal is
  shown with its own message and position
  (:func:`~tracecheck.query.syntax.prometheus_refusal`).

Time windows come from :mod:`tracecheck.query.window`. Every result is a
:class:`~tracecheck.results.ResultTable`. An empty result is not an error: the table has no rows
and a ``no data: ...`` note (exit 0). A backend's rejection of a query is a
:class:`~tracecheck.errors.QueryError` (exit 4) whose message is one line. Large results are
limited and say so in a note, never silently cut. An overloaded backend (429, or 503 such as
Tempo's ``api_timeout``) is asked again after its ``Retry-After`` while the command's timeout
(``tempo.timeout`` / ``prometheus.timeout``) lasts, then the command fails with one line
(:func:`~tracecheck.backends._http.with_retries`).

Example::

    table = run_promql(settings, 'sum by (job) (up)')
    print(render_table(table, "table"))
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tracecheck.backends import Backends
from tracecheck.backends._http import with_retries
from tracecheck.errors import QueryError, UsageError
from tracecheck.output import iso
from tracecheck.polling import Clock, SystemClock
from tracecheck.query.syntax import prometheus_refusal, with_traceql_position
from tracecheck.query.window import choose_step, parse_duration, parse_time, resolve_window
from tracecheck.results import ResultTable, limit_rows

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends.prometheus import QueryResult
    from tracecheck.backends.tempo import MetricsResult, MetricsSeries, SearchResult
    from tracecheck.config import Settings

__all__ = [
    "DEFAULT_MAX_ROWS",
    "PromQuerier",
    "TempoQuerier",
    "metrics_table",
    "promql_table",
    "run_promql",
    "run_traceql",
    "search_table",
]

T = TypeVar("T")

#: Rows shown before a result is cut with a note (``max_rows=None`` shows all).
DEFAULT_MAX_ROWS = 10_000


# -- seams ---------------------------------------------------------------------------------------


class TempoQuerier(Protocol):
    """What this module needs of :class:`tracecheck.backends.tempo.TempoClient`."""

    def search(
        self,
        query: str,
        *,
        start: float,
        end: float,
        limit: int = ...,
        spss: int = ...,
        timeout: float | None = ...,
    ) -> SearchResult: ...

    def metrics_query_range_result(
        self,
        query: str,
        *,
        start: float,
        end: float,
        step: str | None = ...,
        timeout: float | None = ...,
    ) -> MetricsResult: ...

    def metrics_query_instant_result(
        self, query: str, *, start: float, end: float, timeout: float | None = ...
    ) -> MetricsResult: ...


class PromQuerier(Protocol):
    """What this module needs of :class:`tracecheck.backends.prometheus.PrometheusClient`."""

    def query(
        self, query: str, *, at: float | None = ..., timeout: float | None = ...
    ) -> QueryResult: ...

    def query_range(
        self, query: str, *, start: float, end: float, step: float, timeout: float | None = ...
    ) -> QueryResult: ...


def run_traceql(
    settings: Settings,
    query: str,
    *,
    since: str | float | None = None,
    start: str | None = None,
    end: str | None = None,
    limit: int = 20,
    spss: int = 3,
    metrics: bool = False,
    instant: bool = False,
    step: str | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    clock: Clock | None = None,
    tempo: TempoQuerier | None = None,
) -> ResultTable:
    """Run TraceQL against Tempo over ``--since`` (default 1 h) or ``--start``/``--end``.

    A search (default) yields one row per matched span: ``trace_id``, ``trace_start``,
    ``root_service``, ``root_name``, ``trace_duration_ms``, ``span_id``, ``span_name``,
    ``span_start``, ``span_duration_ms`` and one column per returned attribute. Search is
    first-N-found (docs/reference/tempo.md §5.3): when ``limit`` traces come back a note says
    more may exist; when a span set matched more spans than ``spss`` shows, a note says how many.

    With ``metrics=True`` the query is a TraceQL metrics query (``{...} | rate() by (...)``):
    one row per series and sample (label columns, ``time``, ``value``), or with
    ``instant=True`` one row per series (label columns, ``value``).

    Tempo's 400 (bad TraceQL, a search query sent as metrics...) is a :class:`QueryError`
    with Tempo's text and what is at the position it names.
    """
    if limit < 1 or spss < 1:
        raise UsageError("query", "--limit/--spss", "must be positive")
    clock = clock or SystemClock()
    now = clock.time()
    t0, t1 = resolve_window(since=since, start=start, end=end, now=now)
    budget = settings.tempo.timeout
    with Backends(settings, tempo=_as_client(tempo)) as backends:
        client: TempoQuerier = backends.tempo()

        def retried(call: Callable[[float], T]) -> T:
            return with_retries(call, budget=budget, clock=clock, what="tempo.timeout")

        try:
            if not metrics:
                result = retried(
                    lambda t: client.search(
                        query, start=t0, end=t1, limit=limit, spss=spss, timeout=t
                    )
                )
                return search_table(query, result, t0, t1, limit=limit, spss=spss,
                                    max_rows=max_rows)  # fmt: skip
            if instant:
                mresult = retried(
                    lambda t: client.metrics_query_instant_result(
                        query, start=t0, end=t1, timeout=t
                    )
                )
            else:
                mresult = retried(lambda t: client.metrics_query_range_result(
                    query, start=t0, end=t1, step=step, timeout=t))  # fmt: skip
        except QueryError as exc:
            raise with_traceql_position(exc, query) from None
    notes = [f"Tempo answered PARTIAL: {mresult.message}"] if mresult.partial else []
    return metrics_table(query, mresult.series, t0, t1, instant=instant, max_rows=max_rows,
                         extra_notes=notes)  # fmt: skip


def search_table(
    query: str,
    result: SearchResult,
    start: float,
    end: float,
    *,
    limit: int,
    spss: int,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> ResultTable:
    """Rows of a TraceQL search: one per span shown in each trace's span sets."""
    from tracecheck.backends.tempo import AttrValue
    from tracecheck.ids import trace_id_hex

    base = ("trace_id", "trace_start", "root_service", "root_name", "trace_duration_ms",
            "span_id", "span_name", "span_start", "span_duration_ms")  # fmt: skip
    attr_cols: dict[str, None] = {}
    rows: list[dict[str, Any]] = []
    hidden = 0
    for t in result.traces:
        trace_row: dict[str, Any] = {
            "trace_id": trace_id_hex(t.trace_id),
            "trace_start": iso(t.start_ns / 1e9) if t.start_ns else None,
            "root_service": t.root_service,
            "root_name": t.root_name,
            "trace_duration_ms": t.duration_ms,
        }
        shown = False
        for ss in t.span_sets:
            hidden += max(0, ss.matched - len(ss.spans))
            set_attrs: Mapping[str, AttrValue] = ss.attributes
            for s in ss.spans:
                row = dict(trace_row)
                row.update(
                    span_id=s.span_id.hex(),
                    span_name=s.name,
                    span_start=iso(s.start_ns / 1e9) if s.start_ns else None,
                    span_duration_ms=s.duration_ns / 1e6,
                )
                for k, v in {**set_attrs, **s.attributes}.items():
                    attr_cols.setdefault(k, None)
                    row[k] = _scalar(v)
                rows.append(row)
                shown = True
        if not shown:
            rows.append(trace_row)
    columns = (*base, *attr_cols)
    notes: list[str] = []
    if not result.traces:
        notes.append(f"no data: no trace matched between {iso(start)} and {iso(end)}")
    if len(result.traces) >= limit:
        notes.append(
            f"limited to {limit} traces: Tempo returns the first {limit} it finds, not the "
            "newest or slowest; more may exist (raise --limit, or narrow the query)"
        )
    if hidden:
        notes.append(
            f"{hidden} matched spans not shown: at most {spss} spans per span set (raise --spss, "
            "max 100)"
        )
    return ResultTable(columns, limit_rows(rows, max_rows, notes), tuple(notes),
                       "traceql-search", query, start, end)  # fmt: skip


def _scalar(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str, sort_keys=True)
    if isinstance(value, bytes):
        return value.hex()
    return value


def metrics_table(
    query: str,
    series: Sequence[MetricsSeries],
    start: float,
    end: float,
    *,
    instant: bool,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    extra_notes: Sequence[str] = (),
) -> ResultTable:
    """Rows of a TraceQL metrics answer: label columns, then ``time`` (range) and ``value``."""
    label_cols: dict[str, None] = {}
    for s in series:
        for k in s.labels:
            label_cols.setdefault(k, None)
    rows: list[dict[str, Any]] = []
    for s in series:
        labels = {k: _scalar(v) for k, v in s.labels.items()}
        if instant:
            value = s.samples[-1][1] if s.samples else math.nan
            rows.append({**labels, "value": value})
        else:
            for ts_ms, value in s.samples:
                rows.append({**labels, "time": iso(ts_ms / 1000), "value": value})
    columns = (*label_cols, *(("value",) if instant else ("time", "value")))
    notes = list(extra_notes)
    if not rows:
        notes.append(f"no data: no series between {iso(start)} and {iso(end)}")
    kind = "traceql-metrics-instant" if instant else "traceql-metrics"
    return ResultTable(columns, limit_rows(rows, max_rows, notes), tuple(notes), kind,
                       query, start, end)  # fmt: skip


# -- PromQL --------------------------------------------------------------------------------------


def run_promql(
    settings: Settings,
    query: str,
    *,
    at: str | None = None,
    range_: str | float | None = None,
    step: str | float | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    clock: Clock | None = None,
    prometheus: PromQuerier | None = None,
    address: str = "",
) -> ResultTable:
    """Run PromQL: an instant query at ``at`` (default now), or with ``range_`` a range query
    over ``[at - range_, at]`` with ``step`` (default: about 250 points; checked against the
    11,000-point limit before sending, see :func:`choose_step`).

    Prometheus decides whether the query is valid: it is sent as written, and a ``bad_data``
    refusal is a :class:`~tracecheck.query.syntax.PromQLSyntaxError` with Prometheus's message
    and position (``address``, a saved query's file, is named in it). ``execution`` answers
    are :class:`QueryError`. Rows: label columns, then ``time`` and ``value`` (a vector or
    matrix), or ``value`` and ``time`` for a scalar; warnings and infos become notes.
    """
    clock = clock or SystemClock()
    now = clock.time()
    t_end = parse_time(at, now=now, what="--at") if at is not None else now
    if range_ is None and step is not None:
        raise UsageError("query", "--step", "--step needs --range")
    with Backends(settings, prometheus=_as_client(prometheus)) as backends:
        client: PromQuerier = backends.prometheus()

        def retried(call: Callable[[float], T]) -> T:
            return with_retries(
                call, budget=settings.prometheus.timeout, clock=clock, what="prometheus.timeout"
            )

        try:
            if range_ is None:
                result = retried(lambda t: client.query(query, at=t_end, timeout=t))
                return promql_table(query, result, None, t_end, max_rows=max_rows)
            span = float(range_) if isinstance(range_, (int, float)) else parse_duration(
                range_, what="--range"
            )  # fmt: skip
            t_start = t_end - span
            step_s = choose_step(t_start, t_end, step)
            result = retried(lambda t: client.query_range(
                query, start=t_start, end=t_end, step=step_s, timeout=t))  # fmt: skip
        except QueryError as exc:
            raise prometheus_refusal(exc, query, name=address) from None
        table = promql_table(query, result, t_start, t_end, max_rows=max_rows)
        return replace(table, notes=(*table.notes, f"step {step_s:g}s"))


def _label_columns(label_sets: Sequence[Mapping[str, str]]) -> tuple[str, ...]:
    keys: set[str] = set()
    for labels in label_sets:
        keys.update(labels)
    # __name__ first, then the rest sorted: stable columns whatever the series order.
    return tuple(sorted(keys, key=lambda k: (k != "__name__", k)))


def promql_table(
    query: str,
    result: QueryResult,
    start: float | None,
    end: float,
    *,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> ResultTable:
    """Rows of a Prometheus answer (vector, matrix, scalar or string)."""
    notes = [f"warning: {w}" for w in result.warnings] + [f"info: {i}" for i in result.infos]
    rtype = result.result_type or "vector"
    rows: list[dict[str, Any]] = []
    if rtype == "matrix":
        cols = _label_columns([s.labels for s in result.series])
        for s in result.series:
            for ts, value in s.points:
                rows.append({**s.labels, "time": iso(ts), "value": value})
        columns = (*cols, "time", "value")
    elif rtype == "scalar":
        columns = ("value", "time")
        rows = [{"value": x.value, "time": iso(x.timestamp)} for x in result.samples]
    elif rtype == "string":
        columns = ("value",)
        rows = [] if result.string is None else [{"value": result.string}]
    else:
        cols = _label_columns([s.labels for s in result.samples])
        for sample in result.samples:
            rows.append({**sample.labels, "time": iso(sample.timestamp), "value": sample.value})
        columns = (*cols, "time", "value")
    if not rows:
        when = f"between {iso(start)} and {iso(end)}" if start is not None else f"at {iso(end)}"
        notes.append(f"no data: the query returned no series {when}")
    return ResultTable(columns, limit_rows(rows, max_rows, notes), tuple(notes),
                       f"promql-{rtype}", query, start, end)  # fmt: skip


def _as_client(querier: Any) -> Any:
    """An injected querier stands in for the client (duck-typed: only the seam's methods)."""
    return querier
