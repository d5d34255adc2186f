"""The query endpoints: ``/api/search``, the tag endpoints and TraceQL metrics.

``api.Api`` delegates these routes here. Facts followed (grafana/tempo v2.9.0):

* ``modules/frontend/pipeline/async_query_validator_middleware.go``: every TraceQL query
  (``q`` or ``query``) is parsed and validated before anything runs; a failure is 400
  ``invalid TraceQL query: <error>``, whether a syntax error (``parse error at line L, col C:
  ...``), a type error or a feature Tempo marks ``not yet supported``. A query longer than
  ``max_query_expression_size_bytes`` (128 KiB, modules/frontend/config.go) is 400 too.
* ``modules/frontend/search_handlers.go`` and ``pkg/traceql/engine.go``: a search runs the
  query's spanset pipeline (a metrics query's ``| rate()`` part is not run by search).
* ``modules/frontend/metrics_query_range_handler.go``, ``metrics_query_handler.go``,
  ``metrics_query_range_sharder.go``, ``config.go`` and ``pkg/api/http.go``: the metrics
  parameters, limits and their order (see ``_metrics_query``).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tempo_standin.api import HttpError, Response, _parse_int, format_go_duration
from tempo_standin.model import SpanRecord
from tempo_standin.tqlmetrics import compute
from tempo_standin.traceql import (
    MAX_QUERY_BYTES,
    ParseError,
    RootExpr,
    StandinUnsupported,
    TraceView,
    ValidationError,
    ast,
    compile_query,
    parse,
    parse_identifier,
)
from tempo_standin.traceql.eval import Prefilter, conditions_of, is_noop, run
from tempo_standin.traceql.lexer import parse_go_duration_ns, parse_prom_duration_ns
from tempo_standin.traceql.search import search_traces

if TYPE_CHECKING:
    from tempo_standin.api import Api

__all__ = [
    "metrics_query",
    "search",
    "tag_values_v1",
    "tag_values_v2",
    "tags_v1",
    "tags_v2",
]

MAX_LIMIT = 256 * 1024  # modules/frontend/config.go (v2.9.2+): search max_result_limit
MAX_SPSS = 100  # search max_spans_per_span_set
MAX_SEARCH_RANGE = 168 * 3600  # query_frontend.search.max_duration 168h
MAX_METRICS_RANGE_NS = 3 * 3600 * 10**9  # query_frontend.metrics.max_duration 3h
MAX_INTERVALS = 10_000  # query_frontend.metrics.max_intervals
DEFAULT_SINCE_NS = 3600 * 10**9  # pkg/api/http.go defaultSince


def _json(doc: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(doc, separators=(",", ":")).encode(), "application/json")


def _query_error(text: str) -> HttpError:
    # pipeline/responses.go NewBadRequest: the validator's 400 carries no Content-Type.
    return HttpError(400, text, None)


def compile_or_400(query: str) -> RootExpr:
    """The query frontend's check: parse + validate, ``invalid TraceQL query: ...``."""
    if len(query.encode()) > MAX_QUERY_BYTES:
        raise _query_error(
            f"TraceQL expression exceeds the configured maximum size of {MAX_QUERY_BYTES} "
            "bytes, reduce the query expression size or contact your system administrator"
        )
    try:
        return compile_query(query)
    except (ParseError, ValidationError, StandinUnsupported) as exc:
        raise _query_error(f"invalid TraceQL query: {exc}") from None


# --- search (modules/frontend/search_handlers.go, pkg/api/http.go) -------------------------------


def _time_range(params: dict[str, str]) -> tuple[int, int] | None:
    """pkg/api/http.go: start/end are int32 unix seconds, end > start, at most 168h apart."""
    if not params.get("start") and not params.get("end"):
        return None
    start = _parse_int("start", params.get("start") or "0", 32)
    end = _parse_int("end", params.get("end") or "0", 32)
    if end <= start:
        raise HttpError(
            400, f"http parameter start must be before end. received start={start} end={end}"
        )
    if end - start > MAX_SEARCH_RANGE:
        raise HttpError(
            400,
            f"range specified by start and end exceeds {format_go_duration(MAX_SEARCH_RANGE)}."
            f" received start={start} end={end}",
        )
    return start, end


def _views(api: Api, rng: tuple[int, int] | None) -> Iterator[TraceView]:
    """Searchable traces in storage order, made into views as the search reaches them."""
    lookup = _scope_lookup(api)
    lo, hi = (rng[0] * 10**9, rng[1] * 10**9) if rng is not None else (0, 0)
    for trace_id, spans in api.app.store.searchable():
        if rng is not None:
            start = min(s.start_ns for s in spans)
            end = max(s.end_ns for s in spans)
            if start > hi or end < lo:
                continue
        yield TraceView.of(trace_id, spans, lookup)


def _scope_lookup(api: Api) -> Any:
    from tempo_standin.model import decode_attributes

    cache: dict[bytes, tuple[str, str, dict[str, Any]]] = {}
    store = api.app.store

    def lookup(key: bytes) -> tuple[str, str, dict[str, Any]]:
        got = cache.get(key)
        if got is None:
            try:
                _resource, scope, _u1, _u2 = store.group(key)
                got = (scope.name, scope.version, decode_attributes(scope.attributes))
            except KeyError:
                got = ("", "", {})
            cache[key] = got
        return got

    return lookup


def _positive(name: str, value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    # pkg/api/http.go reads limit and spss with strconv.Atoi, then rejects n <= 0.
    n = _parse_int(name, value, 64, "Atoi")
    if n <= 0:
        raise HttpError(400, f"invalid {name}: must be a positive number")
    return n


def _duration_param(name: str, value: str | None) -> float | None:
    from tempo_standin.config import parse_go_duration

    if not value:
        return None
    try:
        return parse_go_duration(value)
    except ValueError as exc:
        raise HttpError(400, f"invalid {name}: {exc}") from exc


def search(api: Api, params: dict[str, str]) -> Response:
    q = params.get("q", "")
    tags = params.get("tags", "")
    if q and tags:
        raise HttpError(400, "invalid request: can't specify tags and q in the same query")
    limit = _positive("limit", params.get("limit"), 20)
    if limit > MAX_LIMIT:
        raise HttpError(400, f"limit {limit} exceeds max limit {MAX_LIMIT}")
    spss = _positive("spss", params.get("spss"), 3)
    if spss > MAX_SPSS:
        raise HttpError(400, f"spans per span set exceeds {MAX_SPSS}. received {spss}")
    min_d = _duration_param("minDuration", params.get("minDuration"))
    max_d = _duration_param("maxDuration", params.get("maxDuration"))
    if min_d is not None and max_d is not None and max_d <= min_d:
        raise HttpError(400, "invalid maxDuration: must be greater than minDuration")
    rng = _time_range(params)
    root: RootExpr | None = None
    if not tags:
        try:
            root = compile_or_400(q or "{}")
        except HttpError:
            api.app.count_query("search", "failed")
            raise
    views = _views(api, rng)
    inspected = [0, 0]

    def inspect(view: TraceView) -> None:
        inspected[0] += 1
        inspected[1] += sum(s.size for s in view.spans)

    if root is not None:
        try:
            traces = search_traces(root, views, limit=limit, spss=spss, on_inspect=inspect)
        except ast.EvalError as exc:
            api.app.count_query("search", "failed")
            raise HttpError(500, str(exc)) from None
    else:
        traces = _tag_search(views, tags, min_d, max_d, limit, inspect)
    api.app.count_query("search", "completed")
    metrics: dict[str, Any] = {"completedJobs": 1, "totalJobs": 1}
    if inspected[0]:
        metrics["inspectedTraces"] = inspected[0]
    if inspected[1]:
        metrics["inspectedBytes"] = str(inspected[1])
    # gogo jsonpb leaves out an empty repeated field: no match, no "traces" key
    return _json({"traces": traces, "metrics": metrics} if traces else {"metrics": metrics})


def _tag_search(
    views: Iterator[TraceView],
    tags: str,
    min_d: float | None,
    max_d: float | None,
    limit: int,
    inspect: Any,
) -> list[dict[str, Any]]:
    """The legacy ``tags=`` search (pkg/api/http.go ParseSearchRequest): no spansets."""
    tag_filter = _parse_logfmt(tags)
    found: list[TraceView] = []
    for view in views:
        inspect(view)
        duration_s = (view.end_ns - view.start_ns) / 1e9
        if min_d is not None and duration_s < min_d:
            continue
        if max_d is not None and duration_s > max_d:
            continue
        if not all(_tag_match(view, k, v) for k, v in tag_filter):
            continue
        found.append(view)
        if len(found) >= limit:
            break
    found.sort(key=lambda v: v.start_ns, reverse=True)
    out = []
    for view in found:
        doc: dict[str, Any] = {"traceID": view.trace_id.hex().lstrip("0")}
        if view.root is not None and view.root.service:
            doc["rootServiceName"] = view.root.service
        else:
            doc["rootServiceName"] = "<root span not yet received>"
        if view.root is not None and view.root.name:
            doc["rootTraceName"] = view.root.name
        doc["startTimeUnixNano"] = str(view.start_ns)
        duration_ms = (view.end_ns - view.start_ns) // 1_000_000
        if duration_ms:
            doc["durationMs"] = duration_ms
        stats: dict[str, dict[str, int]] = {}
        for s in view.spans:
            st = stats.setdefault(s.service, {"spanCount": 0})
            st["spanCount"] += 1
            if s.status_code == 2:
                st["errorCount"] = st.get("errorCount", 0) + 1
        doc["serviceStats"] = stats
        out.append(doc)
    return out


def _plain(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _parse_logfmt(text: str) -> list[tuple[str, str]]:
    """``k=v k2="v 2"`` (the legacy tag search's logfmt)."""
    out: list[tuple[str, str]] = []
    for m in re.finditer(r'([^\s=]+)=("((?:[^"\\]|\\.)*)"|\S*)', text):
        value = m.group(3) if m.group(3) is not None else m.group(2)
        out.append((m.group(1), value.replace('\\"', '"')))
    return out


def _tag_match(view: TraceView, key: str, value: str) -> bool:
    """Legacy tag search: a case-insensitive substring match on a span or resource attribute
    (``name`` matches the span name)."""
    needle = value.lower()
    for s in view.spans:
        candidates = []
        if key == "name":
            candidates.append(s.name)
        for attrs in (s.attributes, s.resource_attributes):
            if key in attrs:
                candidates.append(_plain(attrs[key]))
        if any(needle in c.lower() for c in candidates):
            return True
    return False


# --- tags (modules/frontend/tag_handlers.go, pkg/traceql/engine.go) ------------------------------

INTRINSIC_TAGS = (
    "duration",
    "kind",
    "name",
    "rootName",
    "rootServiceName",
    "status",
    "statusMessage",
    "traceDuration",
    "span:duration",
    "span:id",
    "span:kind",
    "span:name",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "trace:duration",
    "trace:id",
    "trace:rootName",
    "trace:rootService",
)


def _tag_spans(api: Api, params: dict[str, str], q: str | None) -> list[Any]:
    """Spans a tag lookup sees: the searchable ones, narrowed by ``q`` when it parses
    (engine.go ExecuteTagValues: an unparsable ``q`` counts as ``{ true }``)."""
    rng = _time_range(params)
    root: RootExpr | None = None
    if q:
        try:
            root = parse(q)
        except ParseError:
            root = None
    out: list[Any] = []
    req = conditions_of(root) if root is not None else None
    pre = Prefilter(req, root) if req is not None else None
    for view in _views(api, rng):
        if root is None or pre is None:
            out.extend(view.contexts())
            continue
        try:
            spans = [s for ss in run(root, view, req, pre) for s in ss.spans]
        except ast.EvalError:
            spans = pre(view.contexts())
        out.extend(spans)
    return out


def _scoped_tags(
    api: Api, params: dict[str, str], q: str | None
) -> tuple[dict[str, list[str]], int]:
    scope = params.get("scope", "") or "all"
    valid = ("all", "resource", "span", "intrinsic", "event", "link", "instrumentation")
    if scope not in valid:
        raise HttpError(400, f"invalid scope: {scope}")
    res: set[str] = set()
    span: set[str] = set()
    link: set[str] = set()
    event: set[str] = set()
    instr: set[str] = set()
    inspected = 0
    for s in _tag_spans(api, params, q):
        rec: SpanRecord = s.rec
        inspected += rec.size
        res.update(rec.resource_attributes)
        span.update(rec.attributes)
        for lk in rec.links:
            link.update(lk.attributes)
        for e in s.events():
            event.update(e[2])
        instr.update(s.scope()[2])
    scopes = {
        "resource": sorted(res),
        "span": sorted(span),
        "link": sorted(link),
        "event": sorted(event),
        "instrumentation": sorted(instr),
        "intrinsic": list(INTRINSIC_TAGS),
    }
    if scope == "all":
        return {k: v for k, v in scopes.items() if v}, inspected
    return {scope: scopes.get(scope, [])}, inspected


def _metrics_doc(inspected: int) -> dict[str, Any]:
    return {"inspectedBytes": str(inspected)} if inspected else {}


def tags_v1(api: Api, params: dict[str, str]) -> Response:
    scopes, inspected = _scoped_tags(api, params, None)
    if (params.get("scope") or "all") == "all":
        names = sorted(set(scopes.get("resource", [])) | set(scopes.get("span", [])))
    else:
        names = next(iter(scopes.values()))
    api.app.count_query("metadata", "completed")
    return _json({"tagNames": names, "metrics": _metrics_doc(inspected)})


def tags_v2(api: Api, params: dict[str, str]) -> Response:
    scopes, inspected = _scoped_tags(api, params, params.get("q"))
    api.app.count_query("metadata", "completed")
    order = ("resource", "span", "link", "event", "instrumentation", "intrinsic")
    doc = [{"name": n, "tags": scopes[n]} for n in order if scopes.get(n)]
    return _json({"scopes": doc, "metrics": _metrics_doc(inspected)})


def tag_values_v1(api: Api, tag: str, params: dict[str, str]) -> Response:
    values: set[str] = set()
    inspected = 0
    for s in _tag_spans(api, params, None):
        rec: SpanRecord = s.rec
        inspected += rec.size
        for attrs in (rec.attributes, rec.resource_attributes):
            if tag in attrs:
                v = attrs[tag]
                if isinstance(v, (str, int, float)):
                    values.add(_plain(v))
    api.app.count_query("metadata", "completed")
    return _json({"tagValues": sorted(values), "metrics": _metrics_doc(inspected)})


_TYPE_NAMES = {
    ast.STRING: "string",
    ast.INT: "int",
    ast.FLOAT: "float",
    ast.BOOL: "bool",
    ast.DURATION: "duration",
    ast.STATUS: "keyword",
    ast.KIND: "keyword",
}


def tag_values_v2(api: Api, tag: str, params: dict[str, str]) -> Response:
    try:
        field = parse_identifier(tag)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None  # an invalid tag name gives 400 (#5493)
    seen: dict[tuple[str, str], None] = {}
    inspected = 0
    for s in _tag_spans(api, params, params.get("q")):
        inspected += s.rec.size
        v = field.execute(s)
        if v.t == ast.NIL:
            continue
        values = v.values if isinstance(v, ast.MultiStatic) else (v,)
        for item in values:
            elems: list[ast.Static]
            if item.t in (ast.INT_ARR, ast.FLOAT_ARR, ast.STR_ARR, ast.BOOL_ARR):
                et = {ast.INT_ARR: ast.INT, ast.FLOAT_ARR: ast.FLOAT, ast.STR_ARR: ast.STRING,
                      ast.BOOL_ARR: ast.BOOL}[item.t]  # fmt: skip
                elems = [ast.Static(et, x) for x in item.v]
            else:
                elems = [item]
            for e in elems:
                name = _TYPE_NAMES.get(e.t)
                if name is not None:
                    text = repr(e.v) if e.t == ast.FLOAT else e.string(False)
                    seen[(name, text)] = None
    api.app.count_query("metadata", "completed")
    out = [{"type": t, "value": v} for t, v in sorted(seen)]
    return _json({"tagValues": out, "metrics": _metrics_doc(inspected)})


# --- TraceQL metrics (modules/frontend/metrics_query_*.go, pkg/traceql/engine_metrics.go) --------


def _parse_timestamp(value: str, default_ns: int) -> int:
    """pkg/api/http.go parseTimestamp: float seconds (with a '.'), unix seconds (10 digits or
    fewer), unix nanoseconds, or RFC 3339; ValueError otherwise."""
    if value == "":
        return default_ns
    if "." in value:
        with contextlib.suppress(ValueError):
            t = float(value)
            whole = math.trunc(t)
            frac = round((t - whole) * 1000) / 1000
            return int(whole) * 10**9 + int(frac * 1e9)
    if re.fullmatch(r"[+-]?\d+", value):
        n = int(value)
        if not -(2**63) <= n < 2**63:
            raise ValueError(value)
        return n * 10**9 if len(value) <= 10 else n
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(value) from None
    if dt.tzinfo is None:
        raise ValueError(value)
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


def _bounds(params: dict[str, str], now_ns: int) -> tuple[int, int] | None:
    """pkg/api/http.go determineBounds: end defaults to now, start to min(end, now) - since
    (since defaults to 1h). None when a value does not parse (Tempo then queries nothing)."""
    since = DEFAULT_SINCE_NS
    try:
        if params.get("since"):
            since = parse_prom_duration_ns(params["since"])
        end = _parse_timestamp(params.get("end", ""), now_ns)
        start = _parse_timestamp(params.get("start", ""), min(end, now_ns) - since)
    except ValueError:
        return None
    return start, end


def default_step(start_ns: int, end_ns: int) -> int:
    """engine_metrics.go DefaultQueryRangeStep: range/240 rounded DOWN to 5 s, or to 1 s when
    that is under 5 s; at least 1 s."""
    baseline = (end_ns - start_ns) // 240
    five = 5 * 10**9
    interval = baseline // five * five
    if interval < five:
        interval = baseline // 10**9 * 10**9
    if interval < 10**9:
        return 10**9
    return interval


_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE
)


def parse_step(value: str) -> int:
    """pkg/api/http.go parseSecondsOrDuration: float seconds, else a Go duration. The error
    travels as a dskit httpgrpc error, whose text is the gRPC status string."""
    if _GO_FLOAT.fullmatch(value):
        ns = float(value) * 1e9
        if math.isnan(ns) or ns > 2**63 - 1 or ns < -(2**63):
            raise HttpError(
                400,
                f'rpc error: code = Code(400) desc = cannot parse "{value}" to a valid '
                "duration. It overflows int64",
            )
        return int(ns)
    try:
        return parse_go_duration_ns(value)
    except ValueError:
        raise HttpError(
            400, f'rpc error: code = Code(400) desc = cannot parse "{value}" to a valid duration'
        ) from None


def align(start: int, end: int, step: int) -> tuple[int, int]:
    """engine_metrics.go AlignRequest: start down and end up to the step, then one more step
    back at the start (the extra leading interval). Instant requests stay as they are."""
    if end - start == step:
        return start, end
    start -= start % step
    end += (step - end % step) % step
    if start > step:
        start -= step
    return start, end


def metrics_query(api: Api, params: dict[str, str], instant: bool) -> Response:
    """The frontend's order of checks (metrics_query_range_handler.go, metrics_query_handler.go,
    metrics_query_range_sharder.go): parameters, (range) step limits, alignment, compiling the
    query (``compiling query: ...``, ``not a metrics query``), the 3h maximum range; then the
    generator's ``localblocks processor not found``."""
    q = params.get("q") or params.get("query") or ""
    now_ns = time.time_ns()
    bounds = _bounds(params, now_ns)
    start, end = bounds if bounds is not None else (0, 0)
    if instant:
        step = end - start
    else:
        step = parse_step(params["step"]) if params.get("step") else default_step(start, end)
        if step < 0:
            # Tempo holds the step as uint64: a negative one aligns start to 0
            raise HttpError(400, "start required")
        if start > end:
            raise HttpError(400, "end must be greater than start")
        if step == 0 or (end - start) // step > MAX_INTERVALS:
            minimum = (end - start) // MAX_INTERVALS
            raise HttpError(
                400,
                f"step of {format_go_duration(step / 1e9)} is too small, minimum step for "
                f"given range is {format_go_duration(minimum / 1e9)}",
            )
        start, end = align(start, end, step)
    if bounds is not None:
        if start <= 0:
            raise HttpError(400, "start required")
        if end <= start:
            raise HttpError(400, "end must be greater than start")
    root = _compile_metrics(api, q)
    if is_noop(root):  # metrics_query_range_sharder.go: a no-op query answers nothing
        api.app.count_query("metrics", "completed")
        return _json({"metrics": {"completedJobs": 1, "totalJobs": 1}})
    raw = bounds if bounds is not None else (0, 0)
    if raw[1] - raw[0] > MAX_METRICS_RANGE_NS:
        api.app.count_query("metrics", "failed")
        raise HttpError(
            400,
            "metrics query time range exceeds the maximum allowed duration of "
            f"{format_go_duration(MAX_METRICS_RANGE_NS / 1e9)}",
        )
    if not api.app.generator.local_blocks:
        # modules/generator/instance.go QueryRange: no local-blocks processor for the tenant.
        raise HttpError(500, "localblocks processor not found")
    traces = api.app.metrics_dataset() if bounds is not None else []
    try:
        result = compute(
            root, traces, start, end, step, instant=instant, scope_lookup=_scope_lookup(api)
        )
    except ast.EvalError as exc:
        api.app.count_query("metrics", "failed")
        raise HttpError(500, str(exc)) from None
    api.app.count_query("metrics", "completed")
    metrics: dict[str, Any] = {"completedJobs": 1, "totalJobs": 1}
    if result.inspected_traces:
        metrics["inspectedTraces"] = result.inspected_traces
    if result.inspected_spans:
        metrics["inspectedSpans"] = str(result.inspected_spans)
    series_docs = []
    for labels, samples in result.series:
        if instant:
            doc: dict[str, Any] = {"labels": labels}
            value = samples[0][1]
            if value:
                doc["value"] = _num(value)  # jsonpb omits a zero double
            series_docs.append(doc)
            continue
        sample_docs = []
        for ts_ms, value in samples:
            sdoc: dict[str, Any] = {"timestampMs": str(ts_ms)}
            if value:
                sdoc["value"] = _num(value)
            sample_docs.append(sdoc)
        series_docs.append({"labels": labels, "samples": sample_docs})
    # gogo jsonpb leaves out an empty repeated field: no series, no "series" key
    doc = {"series": series_docs, "metrics": metrics} if series_docs else {"metrics": metrics}
    return _json(doc)


def _num(v: float) -> float | str:
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def _compile_metrics(api: Api, q: str) -> RootExpr:
    try:
        if len(q.encode()) > MAX_QUERY_BYTES:
            compile_or_400(q)
        root = compile_query(q)
    except HttpError:
        api.app.count_query("metrics", "failed")
        raise
    except (ParseError, ValidationError) as exc:
        api.app.count_query("metrics", "failed")
        # pkg/traceql/engine_metrics.go CompileMetricsQueryRangeNonRaw
        raise HttpError(400, f"compiling query: {exc}") from None
    except StandinUnsupported as exc:
        api.app.count_query("metrics", "failed")
        raise HttpError(400, f"compiling query: {exc}") from None
    if root.metrics is None:
        api.app.count_query("metrics", "failed")
        raise HttpError(400, "not a metrics query")  # engine_metrics.go, as above
    return root
