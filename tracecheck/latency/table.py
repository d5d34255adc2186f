"""The apiserver latency table: spans -> DataFrame -> count, error %, p50 / p90 / p99 / max.

Shared by the apiserver leg (``tracecheck smoke`` / ``tracecheck apiserver probe``) and the
reports (issue 5), so both print the same numbers:

>>> frame = spans_frame(trace.spans)                     # doctest: +SKIP
>>> latency_table(frame, by=("name", "verb")).head()     # doctest: +SKIP

What the apiserver puts on its spans (docs/reference/apiserver.md §5-§6), and how this module
reads it:

* the SERVER span is named after the HTTP *method* and the route (``GET
  /api/v1/namespaces/{:namespace}/pods``; non-resource requests just ``GET``), so LIST, WATCH
  and GET of a collection share a name. Only ``http.target`` (the request URI) tells them
  apart: the verb and resource are derived from it here, like the apiserver's RequestInfo;
* handler spans (``List``, ``Get``, ``Create``...) carry ``verb`` and ``resource`` attributes;
* attribute keys are matched loosely, old and new HTTP semantic conventions alike
  (``http.method`` / ``http.request.method``, ``http.target`` / ``url.path`` (+ ``url.query``),
  ``user_agent.original`` / ``http.user_agent``, ``http.status_code`` /
  ``http.response.status_code``);
* errors: span status Error, which otelhttp sets for 5xx only (§5.3), or an HTTP status >= 500;
* WATCH and other long-running requests (log, exec, attach, port-forward, proxy: the apiserver's
  own long-running check) last as long as the client stays connected and would swamp p99: they
  are excluded unless asked.

pandas is imported inside the functions, so the command line starts fast.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "COLUMNS",
    "HTTP_ATTRIBUTES",
    "PERCENTILES",
    "TABLE_COLUMNS",
    "latency_rows",
    "latency_table",
    "parse_request",
    "spans_frame",
    "table_rows",
]

#: The one percentile constant: p50, p90, p99.
PERCENTILES = (0.5, 0.9, 0.99)

#: Columns of :func:`spans_frame`, in order.
COLUMNS = (
    "trace_id",
    "span_id",
    "name",
    "kind",
    "service",
    "verb",
    "resource",
    "http_method",
    "target",
    "user_agent",
    "audit_id",
    "is_watch",
    "long_running",
    "status_code",
    "error",
    "duration_ms",
)


def _pct_column(q: float) -> str:
    return f"p{q * 100:g}_ms"


#: Statistic columns of :func:`latency_table` (after the ``by`` columns).
TABLE_COLUMNS = ("count", "error_pct", *(_pct_column(q) for q in PERCENTILES), "max_ms")

# Loosely matched attribute keys: old (otelhttp v0.58, semconv 1.20) first, then new.
_METHOD = ("http.method", "http.request.method")
_TARGET = ("http.target", "url.path")
_USER_AGENT = ("user_agent.original", "http.user_agent", "user-agent")
_STATUS = ("http.status_code", "http.response.status_code")
#: The HTTP attributes :func:`spans_frame` reads the verb, WATCH and status from: what a TraceQL
#: search must ``select`` so its spans carry them, under either convention.
HTTP_ATTRIBUTES = (*_METHOD, *_TARGET, "url.query", *_STATUS)

# Subresources that hold the connection open (the apiserver's long-running request check).
_CONNECT_SUBRESOURCES = frozenset({"log", "exec", "attach", "portforward", "proxy"})
# namespaces/<ns>/status and /finalize are subresources of the namespace, not resources in it.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def _first(attrs: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


@functools.lru_cache(maxsize=4096)
def parse_request(method: str, target: str) -> tuple[str, str, bool, bool]:
    """``(verb, resource, is_watch, long_running)`` of a request, from its method and URI.

    The verb is the apiserver's own normalized verb, the ``verb`` label of
    ``apiserver_request_total`` and attribute of its handler spans (k8s.io/apiserver
    ``endpoints/metrics`` NormalizedVerb): GET of a named object is GET, of a collection LIST,
    WATCH when the first ``watch`` parameter is neither ``0`` nor ``false`` or the path has the
    legacy ``/watch/`` prefix, CONNECT for the log, exec, attach, portforward and proxy
    subresources; POST, PUT, PATCH and DELETE stay as they are. Paths follow RequestInfo:
    ``/api/<v>`` and ``/apis/<group>/<v>``, an optional ``namespaces/<ns>`` (the namespace
    object itself when nothing else follows, or its ``status``/``finalize``). Other paths
    (``/readyz``, ``/version``, discovery) are non-resource: resource "".

    ``long_running`` follows the apiserver's long-running check (watch, and the attach, exec,
    log, portforward and proxy subresources): such requests last as long as the client stays.

    >>> parse_request("GET", "/api/v1/namespaces/default/pods?limit=1")
    ('LIST', 'pods', False, False)
    >>> parse_request("GET", "/api/v1/namespaces/default/pods?watch=true")
    ('WATCH', 'pods', True, True)
    """
    method = method.upper()
    try:
        parts = urlsplit(target)
    except ValueError:
        return method, "", False, False
    watch_values = parse_qs(parts.query, keep_blank_values=True).get("watch", [])
    watch_param = bool(watch_values) and watch_values[0].lower() not in ("0", "false")
    segs = [s for s in parts.path.split("/") if s]
    rest: list[str] = []
    if len(segs) >= 2 and segs[0] == "api":
        rest = segs[2:]
    elif len(segs) >= 3 and segs[0] == "apis":
        rest = segs[3:]
    legacy_watch = bool(rest) and rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    is_get = method in ("GET", "HEAD")
    watch = is_get and (watch_param or legacy_watch)
    if not rest:  # non-resource: health, version, discovery, metrics
        return ("WATCH" if watch else ("GET" if is_get else method)), "", watch, watch
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in _NAMESPACE_SUBRESOURCES:
        rest = rest[2:]  # namespaces/<ns>/<resource>...
    resource = rest[0]
    named = len(rest) >= 2
    subresource = rest[2] if len(rest) >= 3 else ""
    if subresource in _CONNECT_SUBRESOURCES:
        verb = "CONNECT"
    elif watch:
        verb = "WATCH"
    elif is_get:
        verb = "GET" if named else "LIST"
    else:
        verb = method
    long_running = watch or subresource in _CONNECT_SUBRESOURCES
    return verb, resource, watch, long_running


def _hex(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return str(value) if value else ""


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _row(span: Any) -> tuple[Any, ...]:
    attrs: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    resource_attrs: Mapping[str, Any] = getattr(span, "resource", None) or {}
    name = str(getattr(span, "name", "") or "")
    kind = str(getattr(span, "kind", "") or "")
    if kind.startswith("SPAN_KIND_"):
        kind = kind[10:]
    service = resource_attrs.get("service.name") or attrs.get("service.name") or ""
    method = _first(attrs, _METHOD)
    target = _first(attrs, _TARGET)
    if target is not None and "url.path" in attrs and "http.target" not in attrs:
        query = attrs.get("url.query")
        if query:
            target = f"{target}?{query}"
    method_s = str(method).upper() if method is not None else ""
    target_s = str(target) if target is not None else ""
    verb, res, is_watch, long_running = "", "", False, False
    if method_s and target_s:
        verb, res, is_watch, long_running = parse_request(method_s, target_s)
    # Handler spans (List, Get, Create, ...) carry the apiserver's own verb and resource.
    if attrs.get("verb"):
        verb = str(attrs["verb"]).upper()
    if attrs.get("resource"):
        res = str(attrs["resource"])
    if verb == "WATCH":
        is_watch = long_running = True
    status = _int_or_none(_first(attrs, _STATUS))
    status_code = str(getattr(span, "status_code", "") or "")
    error = status_code.endswith("ERROR") or (status is not None and status >= 500)
    duration_ms = getattr(span, "duration_ms", None)
    if not isinstance(duration_ms, (int, float)):
        duration_ns = getattr(span, "duration_ns", None)
        if not isinstance(duration_ns, (int, float)):
            start, end = getattr(span, "start_ns", 0), getattr(span, "end_ns", 0)
            duration_ns = (end or 0) - (start or 0)
        duration_ms = duration_ns / 1e6
    return (
        _hex(getattr(span, "trace_id", b"")),
        _hex(getattr(span, "span_id", b"")),
        name,
        kind,
        str(service),
        verb,
        res,
        method_s,
        target_s,
        str(_first(attrs, _USER_AGENT) or ""),
        str(attrs.get("audit-id") or ""),
        is_watch,
        long_running,
        status,
        error,
        float(duration_ms),
    )


def spans_frame(spans: Iterable[Any]) -> pd.DataFrame:
    """One row per span, with the columns in :data:`COLUMNS`.

    Accepts :class:`tracecheck.backends.tempo.Span` and
    :class:`tracecheck.backends.tempo.SearchSpan` or anything shaped like them: ``name``,
    ``attributes`` and ``duration_ms`` (or ``duration_ns``, or ``start_ns``/``end_ns``) are read;
    ``resource``, ``kind``, ``status_code``, ``trace_id``, ``span_id`` when present. Missing
    strings are ``""``; ``status_code`` (HTTP) may be null.
    """
    import pandas as pd

    rows = [_row(s) for s in spans]
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in COLUMNS]
    data: dict[str, Any] = {}
    for name, values in zip(COLUMNS, columns, strict=True):
        if name == "status_code":
            data[name] = pd.array(list(values), dtype="Int64")
        elif name in ("is_watch", "long_running", "error"):
            data[name] = pd.array(list(values), dtype=bool)
        elif name == "duration_ms":
            data[name] = pd.array(list(values), dtype="float64")
        else:
            data[name] = pd.array(list(values), dtype=object)
    return pd.DataFrame(data, columns=list(COLUMNS))


def latency_table(
    frame: pd.DataFrame,
    by: Sequence[str] = ("name",),
    include_watch: bool = False,
) -> pd.DataFrame:
    """Per group of ``by``: count, error_pct, p50_ms, p90_ms, p99_ms, max_ms.

    WATCH and other long-running requests are dropped unless ``include_watch``. Percentiles
    interpolate linearly between the observed durations (pandas' default), so with few spans
    p99 lies close to the maximum. Rows are ordered by count (most first), then by the keys.
    """
    import numpy as np
    import pandas as pd

    by = list(by)
    unknown = [c for c in by if c not in frame.columns]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; choose from {list(frame.columns)}")
    if not include_watch and "long_running" in frame.columns:
        frame = frame[~frame["long_running"].astype(bool)]
    if frame.empty:
        return pd.DataFrame(columns=[*by, *TABLE_COLUMNS])
    grouped = frame.groupby(by, dropna=False, sort=False)
    durations = grouped["duration_ms"]
    table = pd.DataFrame(
        {
            "count": durations.size(),
            "error_pct": grouped["error"].mean().astype(float) * 100.0,
        }
    )
    quantiles = durations.quantile(np.array(PERCENTILES)).unstack()
    for q in PERCENTILES:
        table[_pct_column(q)] = quantiles[q]
    table["max_ms"] = durations.max()
    table = table.reset_index()
    table = table.sort_values(["count", *by], ascending=[False, *([True] * len(by))])
    return table.reset_index(drop=True)[[*by, *TABLE_COLUMNS]]


def table_rows(table: pd.DataFrame, digits: int = 3) -> list[dict[str, Any]]:
    """The table as JSON-safe rows (for ``Report.tables``): floats rounded, counts as ints."""
    rows: list[dict[str, Any]] = []
    for record in table.to_dict(orient="records"):
        row: dict[str, Any] = {}
        for key, value in record.items():
            if key == "count":
                row[str(key)] = int(value)
            elif isinstance(value, float):
                row[str(key)] = None if value != value else round(value, digits)
            elif hasattr(value, "item"):  # numpy scalar
                row[str(key)] = value.item()
            else:
                row[str(key)] = value
        rows.append(row)
    return rows


def latency_rows(
    spans: Iterable[Any],
    by: Sequence[str] = ("name",),
    include_watch: bool = False,
) -> list[dict[str, Any]]:
    """:func:`spans_frame` -> :func:`latency_table` -> :func:`table_rows`, in one call."""
    return table_rows(latency_table(spans_frame(spans), by=by, include_watch=include_watch))
