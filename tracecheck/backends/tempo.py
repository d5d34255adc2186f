"""Grafana Tempo HTTP API client: readiness, identity, trace by ID, search, tags, TraceQL metrics.

Everything returned is a frozen dataclass with IDs as bytes; the JSON quirks stay in this module
(facts from docs/reference/tempo.md, cited by section):

* trace-by-ID JSON is proto3 JSON, not OTLP/JSON: base64 IDs, int64 as strings, enum *names*,
  zero values omitted (§4.2);
* v2 (``/api/v2/traces``, Tempo >= 2.6) answers **200 with an empty trace** when the trace is not
  there, so "found" means non-empty ``resourceSpans``, never HTTP 200 (§4.3, grafana/tempo#5105);
  v1 answers 404 and names the list ``batches``; older Tempo has no v2 route at all (404), so the
  client falls back to v1 once and remembers;
* v2 may return ``status: PARTIAL`` with a message (trace over the size limit, §4.3);
* search prints trace IDs as hex **with leading zeros stripped** (§5.3) and wants start/end in
  integer unix seconds (§5.1);
* with local-blocks enabled, by-ID and search can return duplicate spans: dedupe by span ID
  (§13, grafana/tempo#6533).

Example::

    with TempoClient(TempoSettings(url="http://localhost:3200")) as tempo:
        tempo.ready()
        trace = tempo.trace("0af7651916cd43dd8448eb211c80319c")
        print(trace.found, len(trace.spans))

Why one module (about 710 lines): one system, one client. Half of it decodes Tempo's JSON
shapes (proto3 JSON traces, search summaries, TraceQL metrics series), kept next to the requests
whose answers they read so that the quirks listed above live in one place.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from tracecheck.backends._http import BuildInfo, Endpoint, HTTPBackend, Reply, buildinfo_from
from tracecheck.backends.exposition import Exposition
from tracecheck.config import TempoSettings
from tracecheck.errors import AuthError, BackendError, NotReady, QueryError
from tracecheck.ids import InvalidID, parse_span_id, parse_trace_id

__all__ = [
    "AttrValue",
    "BuildInfo",
    "Link",
    "MetricsResult",
    "MetricsSeries",
    "SearchResult",
    "SearchSpan",
    "Span",
    "SpanSet",
    "TempoClient",
    "Trace",
    "TraceSummary",
    "decode_any_value",
    "decode_attributes",
    "decode_resource_spans",
]

# A decoded OTLP AnyValue. Arrays become lists, kvlists dicts, bytes values bytes.
AttrValue = str | int | float | bool | bytes | list[Any] | dict[str, Any] | None

SYSTEM = "tempo"

#: What Tempo's auth middleware answers (401, text/plain) to a query API request without
#: X-Scope-OrgID when multitenancy_enabled is on (dskit user.ErrNoOrgID; §2).
NO_ORG_ID = "no org id"

# The body Go's HTTP router (Tempo's, Prometheus's) sends for an unknown route. A missing trace
# on v1 is a 404 with an empty body instead (§4.3).
_NO_ROUTE = "404 page not found"

# OTLP enum numbers, for backends that print numbers instead of names (OTLP/JSON does; §4.2).
_SPAN_KINDS = (
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
)
_STATUS_CODES = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")


@dataclass(frozen=True, slots=True)
class Link:
    trace_id: bytes
    span_id: bytes
    attributes: Mapping[str, AttrValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Span:
    """One span as Tempo returned it; IDs as bytes, times in unix nanoseconds."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes  # b"" for a root span
    name: str
    kind: str  # "SPAN_KIND_SERVER", ...
    start_ns: int
    end_ns: int
    status_code: str  # "STATUS_CODE_UNSET" | "STATUS_CODE_OK" | "STATUS_CODE_ERROR"
    status_message: str
    attributes: Mapping[str, AttrValue]
    resource: Mapping[str, AttrValue]
    scope_name: str
    links: tuple[Link, ...] = ()

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def service_name(self) -> str:
        value = self.resource.get("service.name")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Trace:
    """A trace by ID. ``partial``/``message`` carry Tempo's PARTIAL status (§4.3)."""

    trace_id: bytes
    spans: tuple[Span, ...]
    partial: bool = False
    message: str = ""

    @property
    def found(self) -> bool:
        """Non-empty spans. v2 answers 200 with an empty trace when it has none (§4.3)."""
        return bool(self.spans)

    def span(self, span_id: bytes | str) -> Span | None:
        """The span with this ID (any spelling), or None."""
        wanted = parse_span_id(span_id)
        return next((s for s in self.spans if s.span_id == wanted), None)


@dataclass(frozen=True, slots=True)
class SearchSpan:
    span_id: bytes
    name: str
    start_ns: int
    duration_ns: int
    attributes: Mapping[str, AttrValue]


@dataclass(frozen=True, slots=True)
class SpanSet:
    spans: tuple[SearchSpan, ...]
    matched: int
    attributes: Mapping[str, AttrValue]


@dataclass(frozen=True, slots=True)
class TraceSummary:
    """One search hit. ``trace_id`` is 16 bytes even though Tempo strips leading zeros (§5.3)."""

    trace_id: bytes
    root_service: str  # "<root span not yet received>" until the root arrives (§5.3)
    root_name: str
    start_ns: int
    duration_ms: int  # 0 for a sub-millisecond trace (the key is omitted; §5.3)
    span_sets: tuple[SpanSet, ...]

    @property
    def matched(self) -> int:
        return sum(s.matched for s in self.span_sets)


@dataclass(frozen=True, slots=True)
class SearchResult:
    traces: tuple[TraceSummary, ...]
    metrics: Mapping[str, Any]

    def find(self, trace_id: bytes | str) -> TraceSummary | None:
        """The hit with this trace ID (any spelling, compared as bytes), or None."""
        wanted = parse_trace_id(trace_id)
        return next((t for t in self.traces if t.trace_id == wanted), None)


@dataclass(frozen=True, slots=True)
class MetricsSeries:
    labels: Mapping[str, AttrValue]
    samples: tuple[tuple[int, float], ...]  # (timestamp ms, value)


@dataclass(frozen=True, slots=True)
class MetricsResult:
    series: tuple[MetricsSeries, ...]
    partial: bool = False
    message: str = ""


class TempoClient(HTTPBackend):
    """A small client for Tempo's HTTP API (port 3200). Thread-safe for concurrent requests."""

    def __init__(
        self, settings: TempoSettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        super().__init__(Endpoint.from_settings(SYSTEM, settings), transport=transport)
        # Tempo's http_api_prefix moves the API under it; /ready, /status and /metrics stay at
        # the root (§3).
        self.api_prefix = settings.api_prefix.rstrip("/")
        # Set once v1 answered after /api/v2/traces gave 404 (Tempo < 2.6). A plain bool: two
        # threads racing here both just ask v2 once more.
        self._v1_only = False

    def api(self, path: str) -> str:
        """``path`` of the query API under Tempo's ``http_api_prefix`` (``tempo.api_prefix``)."""
        return self.api_prefix + path

    # -- health and identity (§3) -------------------------------------------------------------

    def ready(self, *, timeout: float | None = None) -> None:
        """Return if ``/ready`` says ``ready``; else raise NotReady with Tempo's reason."""
        reply = self.request("GET", "/ready", timeout=timeout, expect=(200, 503))
        body = reply.text.strip()
        if reply.status != 200:
            raise NotReady(SYSTEM, reply.address, f"HTTP {reply.status}: {self.excerpt(body)}")
        if body != "ready":
            raise NotReady(SYSTEM, reply.address, f"unexpected answer: {self.excerpt(body)}")

    def echo(self, *, timeout: float | None = None) -> None:
        """``/api/echo`` (served where the query-frontend runs; Grafana's "Test" button)."""
        reply = self.request("GET", self.api("/api/echo"), timeout=timeout)
        if reply.text.strip() != "echo":
            raise self.protocol_error(
                reply.address, f"unexpected answer: {self.excerpt(reply.body)}"
            )

    def buildinfo(self, *, timeout: float | None = None) -> BuildInfo:
        """Version and build of Tempo (2.3+). ``/status/buildinfo`` would crash the handler (§3)."""
        reply = self.request("GET", self.api("/api/status/buildinfo"), timeout=timeout)
        return buildinfo_from(self._object(reply, self.decode_json(reply)))

    def configured_api_prefix(self, *, timeout: float | None = None) -> str | None:
        """The ``http_api_prefix`` Tempo runs with, read from ``/status/config`` (at the root
        whatever the prefix, §3); None when that page cannot be read or does not say."""
        try:
            reply = self.request("GET", "/status/config", timeout=timeout)
        except BackendError:
            return None
        m = re.search(r"^http_api_prefix:[ \t]*(.*?)[ \t]*$", reply.text, re.MULTILINE)
        if m is None:
            return None
        return m.group(1).strip("\"'").rstrip("/")

    def self_metrics(self, *, timeout: float | None = None) -> Exposition:
        """Tempo's own ``/metrics`` (ingestion counters, §12)."""
        return self.get_exposition("/metrics", timeout=timeout)

    # -- trace by ID (§4) ---------------------------------------------------------------------

    def trace(
        self,
        trace_id: bytes | str,
        *,
        start: float | None = None,
        end: float | None = None,
        timeout: float | None = None,
    ) -> Trace:
        """The trace with this ID; ``found`` is False when Tempo has no span of it.

        ``start``/``end`` (unix seconds) narrow the backend search; they are sent as whole seconds
        widened outwards, so the window never shrinks.
        """
        try:
            tid = parse_trace_id(trace_id)
        except InvalidID as exc:
            raise QueryError(SYSTEM, self.address, f"invalid trace ID: {exc}") from None
        params = _window(self.address, start, end)
        hex_id = tid.hex()
        if not self._v1_only:
            reply = self.request(
                "GET", self.api(f"/api/v2/traces/{hex_id}"), params=params, timeout=timeout,
                expect=(200, 400, 404), headers={"Accept": "application/json"},
            )  # fmt: skip
            if reply.status == 400:
                raise self._rejected(reply)
            if reply.status == 200:
                return self._trace_v2(tid, reply)
            # 404: v2 never answers 404 for a missing trace (§4.3), so this Tempo has no v2 route.
        reply = self.request(
            "GET", self.api(f"/api/traces/{hex_id}"), params=params, timeout=timeout,
            expect=(200, 400, 404, 422), headers={"Accept": "application/json"},
        )  # fmt: skip
        if reply.status == 404 and reply.text.strip() == _NO_ROUTE:
            # No v1 route either: the URL is not Tempo's query API (wrong port or path prefix).
            # Reporting "trace not found" here would blame the pipeline for a wrong address.
            raise self.status_error(reply, f"{_NO_ROUTE} ({self.no_route_hint()})")
        self._v1_only = True
        if reply.status == 404:  # v1's "not found": 404 with an empty body (§4.3)
            return Trace(tid, ())
        if reply.status == 400:
            raise self._rejected(reply)
        if reply.status == 422:  # v1's "trace too large": v2 would return it as PARTIAL
            return Trace(tid, (), partial=True, message=f"HTTP 422: {self.excerpt(reply.body)}")
        data = self._object(reply, self.decode_json(reply))
        batches = data.get("batches", data.get("resourceSpans", []))
        return Trace(tid, self._spans(reply, batches))

    def no_route_hint(self) -> str:
        """Why Tempo has no such route: the URL or the API prefix is not Tempo's (§3)."""
        return (
            "not Tempo's query API: a wrong port, or Tempo runs with an http_api_prefix other "
            f"than tempo.api_prefix {self.api_prefix!r} (its /status/config names it)"
        )

    def _trace_v2(self, tid: bytes, reply: Reply) -> Trace:
        data = self._object(reply, self.decode_json(reply))
        trace = data.get("trace") or {}
        if not isinstance(trace, dict):
            raise self.protocol_error(reply.address, "'trace' is not an object")
        status = data.get("status", "COMPLETE")
        partial = status in ("PARTIAL", 1)
        message = str(data.get("message", ""))
        resource_spans = trace.get("resourceSpans", trace.get("batches", []))
        return Trace(tid, self._spans(reply, resource_spans), partial, message)

    def _spans(self, reply: Reply, resource_spans: Any) -> tuple[Span, ...]:
        try:
            return decode_resource_spans(resource_spans)
        except (InvalidID, ValueError, TypeError, AttributeError, KeyError) as exc:
            raise self.protocol_error(reply.address, f"malformed trace: {exc}") from None

    # -- search (§5) --------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        start: float,
        end: float,
        limit: int = 20,
        spss: int = 3,
        timeout: float | None = None,
    ) -> SearchResult:
        """TraceQL search over [start, end] (unix seconds). Tempo's 400 -> QueryError.

        Search is first-N-found, not newest-first (§5.3): search on a unique attribute value so
        ``limit`` never hides the trace you look for.
        """
        if limit < 1:
            raise QueryError(SYSTEM, self.address, f"limit must be positive, not {limit}")
        if spss < 1:
            raise QueryError(SYSTEM, self.address, f"spss must be positive, not {spss}")
        params: dict[str, Any] = {"q": query, **_window(self.address, start, end, required=True)}
        params.update(limit=limit, spss=spss)
        reply = self.request(
            "GET", self.api("/api/search"), params=params, timeout=timeout, expect=(200, 400)
        )
        if reply.status == 400:
            raise self._rejected(reply)
        data = self._object(reply, self.decode_json(reply))
        try:
            traces = tuple(_summary(t) for t in _list(data.get("traces")))
        except (InvalidID, ValueError, TypeError, AttributeError, KeyError) as exc:
            raise self.protocol_error(reply.address, f"malformed search result: {exc}") from None
        return SearchResult(traces, _metrics(data.get("metrics")))

    # -- tags (§6) ----------------------------------------------------------------------------

    def tag_names(
        self,
        *,
        scope: str | None = None,
        start: float | None = None,
        end: float | None = None,
        timeout: float | None = None,
    ) -> tuple[str, ...]:
        """Attribute names (``/api/search/tags``), sorted. Without start/end: recent data only."""
        params: dict[str, Any] = dict(_window(self.address, start, end))
        if scope:
            params["scope"] = scope
        reply = self.request(
            "GET", self.api("/api/search/tags"), params=params, timeout=timeout, expect=(200, 400)
        )
        if reply.status == 400:
            raise self._rejected(reply)
        data = self._object(reply, self.decode_json(reply))
        names = self._tag_list(reply, data, "tagNames")
        return tuple(sorted({str(t) for t in names}))

    def tag_scopes(
        self,
        *,
        query: str | None = None,
        start: float | None = None,
        end: float | None = None,
        timeout: float | None = None,
    ) -> Mapping[str, tuple[str, ...]]:
        """Attribute names per scope (``/api/v2/search/tags``): ``{"resource": (...), ...}``."""
        params: dict[str, Any] = dict(_window(self.address, start, end))
        if query:
            params["q"] = query
        reply = self.request(
            "GET",
            self.api("/api/v2/search/tags"),
            params=params,
            timeout=timeout,
            expect=(200, 400),
        )
        if reply.status == 400:
            raise self._rejected(reply)
        data = self._object(reply, self.decode_json(reply))
        out: dict[str, tuple[str, ...]] = {}
        for scope in self._tag_list(reply, data, "scopes"):
            if isinstance(scope, dict):
                tags = self._tag_list(reply, scope, "tags")
                out[str(scope.get("name", ""))] = tuple(str(t) for t in tags)
        return out

    def tag_values(
        self,
        tag: str,
        *,
        query: str | None = None,
        start: float | None = None,
        end: float | None = None,
        timeout: float | None = None,
    ) -> tuple[str, ...]:
        """Values of a TraceQL identifier (``resource.service.name``, ``span.http.method``...).

        Uses ``/api/v2/search/tag/<tag>/values`` (an invalid tag is a 400 -> QueryError; an
        invalid ``query`` is silently ignored by Tempo, §6). Falls back to the v1 endpoint,
        which takes a bare attribute name, on a Tempo without the v2 route.
        """
        params: dict[str, Any] = dict(_window(self.address, start, end))
        if query:
            params["q"] = query
        path = self.api(f"/api/v2/search/tag/{quote(tag, safe='')}/values")
        reply = self.request("GET", path, params=params, timeout=timeout, expect=(200, 400, 404))
        if reply.status == 404:
            params.pop("q", None)
            path = self.api(f"/api/search/tag/{quote(tag, safe='')}/values")
            reply = self.request("GET", path, params=params, timeout=timeout, expect=(200, 400))
        if reply.status == 400:
            raise self._rejected(reply)
        data = self._object(reply, self.decode_json(reply))
        values: list[str] = []
        for item in self._tag_list(reply, data, "tagValues"):
            # v2: {"type": "string", "value": "apiserver"}; v1: plain strings.
            value = item.get("value", "") if isinstance(item, dict) else item
            values.append(str(value))
        return tuple(dict.fromkeys(values))

    # -- TraceQL metrics (§7) -----------------------------------------------------------------

    def metrics_query_range(
        self,
        query: str,
        *,
        start: float,
        end: float,
        step: str | None = None,
        timeout: float | None = None,
    ) -> tuple[MetricsSeries, ...]:
        """A TraceQL metrics range query (``{...} | rate() by (...)``) over [start, end]."""
        return self.metrics_query_range_result(
            query, start=start, end=end, step=step, timeout=timeout
        ).series

    def metrics_query_range_result(
        self,
        query: str,
        *,
        start: float,
        end: float,
        step: str | None = None,
        timeout: float | None = None,
    ) -> MetricsResult:
        """As :meth:`metrics_query_range`, with Tempo's PARTIAL status and message."""
        params = self._metrics_params(query, start, end)
        if step:
            params["step"] = step
        data, address = self._metrics_get("/api/metrics/query_range", params, timeout)
        try:
            series = tuple(_range_series(s) for s in _list(data.get("series")))
        except (ValueError, TypeError, AttributeError) as exc:
            raise self.protocol_error(address, f"malformed metrics result: {exc}") from None
        return MetricsResult(series, *_status(data))

    def metrics_query_instant(
        self, query: str, *, start: float, end: float, timeout: float | None = None
    ) -> tuple[MetricsSeries, ...]:
        """A TraceQL metrics instant query over [start, end]; one sample per series, at ``end``."""
        return self.metrics_query_instant_result(
            query, start=start, end=end, timeout=timeout
        ).series

    def metrics_query_instant_result(
        self, query: str, *, start: float, end: float, timeout: float | None = None
    ) -> MetricsResult:
        """As :meth:`metrics_query_instant`, with Tempo's status and message (§7.2: the instant
        answer carries them as the range answer does, e.g. PARTIAL)."""
        params = self._metrics_params(query, start, end)
        data, address = self._metrics_get("/api/metrics/query", params, timeout)
        end_ms = int(end * 1000)
        out: list[MetricsSeries] = []
        try:
            for s in _list(data.get("series")):
                # Zero values are omitted by jsonpb, so a missing "value" is 0 (§4.2).
                value = _float(s.get("value", 0.0))
                out.append(MetricsSeries(decode_attributes(s.get("labels")), ((end_ms, value),)))
        except (ValueError, TypeError, AttributeError) as exc:
            raise self.protocol_error(address, f"malformed metrics result: {exc}") from None
        return MetricsResult(tuple(out), *_status(data))

    def _metrics_params(self, query: str, start: float, end: float) -> dict[str, Any]:
        if not end > start:
            raise QueryError(SYSTEM, self.address, f"end ({end}) must be after start ({start})")
        # Nanoseconds (> 10 digits) keep sub-second windows exact (§7.1; tempo-cli does the same).
        return {"q": query, "start": int(start * 1e9), "end": int(end * 1e9)}

    def _metrics_get(
        self, path: str, params: dict[str, Any], timeout: float | None
    ) -> tuple[dict[str, Any], str]:
        reply = self.request(
            "GET", self.api(path), params=params, timeout=timeout, expect=(200, 400)
        )
        if reply.status == 400:
            raise self._rejected(reply)
        return self._object(reply, self.decode_json(reply)), reply.address

    # -- helpers ------------------------------------------------------------------------------

    def status_error(self, reply: Reply, detail: str | None = None) -> BackendError:
        """As the base's; Tempo's multi-tenant ``401 no org id`` says how to give a tenant (§2)."""
        error = super().status_error(reply, detail)
        if reply.status == 401 and reply.text.strip() == NO_ORG_ID:
            if self.endpoint.tenant:
                why = (
                    "X-Scope-OrgID from tempo.tenant was sent but did not reach Tempo (does a "
                    "proxy in between drop it?)"
                )
            else:
                why = (
                    "Tempo runs with multitenancy_enabled and no tenant was sent: set --tenant "
                    "or tempo.tenant (X-Scope-OrgID)"
                )
            return AuthError(SYSTEM, reply.address, f"HTTP 401: {NO_ORG_ID} ({why})")
        return error

    def _rejected(self, reply: Reply) -> QueryError:
        """Tempo's 400: a bad query, ID or parameter, with Tempo's own text (§8)."""
        return QueryError(SYSTEM, reply.address, f"HTTP {reply.status}: {self.excerpt(reply.body)}")

    def _tag_list(self, reply: Reply, data: Mapping[str, Any], key: str) -> list[Any]:
        """``data[key]`` as a list (absent: empty); ProtocolError for any other shape."""
        try:
            return _list(data.get(key))
        except TypeError as exc:
            raise self.protocol_error(reply.address, f"malformed {key}: {exc}") from None

    def _object(self, reply: Reply, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.protocol_error(
                reply.address, f"expected a JSON object, got {type(data).__name__}"
            )
        return data


def _window(
    address: str, start: float | None, end: float | None, *, required: bool = False
) -> dict[str, int]:
    """start/end as integer unix seconds, widened outwards (§5.1: seconds, int32)."""
    if start is None or end is None:
        if required or (start is None) != (end is None):
            raise QueryError(SYSTEM, address, "give both start and end (unix seconds), or neither")
        return {}
    if start > 1e11 or end > 1e11:
        raise QueryError(
            SYSTEM, address, "start/end look like milliseconds or nanoseconds; use seconds"
        )
    if end < start:
        raise QueryError(SYSTEM, address, f"end ({end}) is before start ({start})")
    lo, hi = math.floor(start), math.ceil(end)
    if hi <= lo:
        hi = lo + 1  # Tempo answers 400 unless end > start
    return {"start": lo, "end": hi}


def _status(data: Mapping[str, Any]) -> tuple[bool, str]:
    """(partial, message) of a metrics answer: ``status`` is the enum's name (or number) and
    absent when COMPLETE; ``message`` says what was cut (§7.2)."""
    return data.get("status") in ("PARTIAL", 1), str(data.get("message", "") or "")


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _get(obj: Mapping[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    # proto3 JSON parsers accept both the lowerCamelCase and the original field name.
    if camel in obj:
        return obj[camel]
    return obj.get(snake, default)


def _int(value: Any) -> int:
    """An int64 from proto3 JSON: a decimal string or a number (§4.2)."""
    if isinstance(value, bool):
        raise TypeError("expected an integer, got a boolean")
    if isinstance(value, (int, str)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(f"expected an integer, got {value!r}")


def _float(value: Any) -> float:
    """A double from proto3 JSON: a number, or "NaN" / "Infinity" / "-Infinity" strings."""
    if isinstance(value, bool):
        raise TypeError("expected a number, got a boolean")
    if isinstance(value, (int, float, str)):
        return float(value)
    raise TypeError(f"expected a number, got {value!r}")


def _enum(value: Any, names: tuple[str, ...]) -> str:
    if value is None:
        return names[0]  # zero value, omitted by jsonpb
    if isinstance(value, int) and not isinstance(value, bool):
        return names[value] if 0 <= value < len(names) else str(value)
    return str(value)


# proto3 JSON parsers accept the original field names too.
_CAMEL = {
    "string_value": "stringValue",
    "bool_value": "boolValue",
    "int_value": "intValue",
    "double_value": "doubleValue",
    "array_value": "arrayValue",
    "kvlist_value": "kvlistValue",
    "bytes_value": "bytesValue",
}


def decode_any_value(value: Any) -> AttrValue:
    """Decode an OTLP ``AnyValue`` in proto3 JSON (string/bool/int/double/array/kvlist/bytes)."""
    if not isinstance(value, dict) or not value:
        return None
    value = {_CAMEL.get(k, k): v for k, v in value.items()}
    if "stringValue" in value:
        return str(value["stringValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return _int(value["intValue"])
    if "doubleValue" in value:
        return _float(value["doubleValue"])
    if "arrayValue" in value:
        return [decode_any_value(v) for v in _list((value["arrayValue"] or {}).get("values"))]
    if "kvlistValue" in value:
        return dict(decode_attributes((value["kvlistValue"] or {}).get("values")))
    if "bytesValue" in value:
        try:
            return base64.b64decode(value["bytesValue"])
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"bad bytesValue: {exc}") from None
    return None


def decode_attributes(items: Any) -> dict[str, AttrValue]:
    """``[{"key": k, "value": AnyValue}, ...]`` as a dict."""
    out: dict[str, AttrValue] = {}
    for item in _list(items):
        out[str(item["key"])] = decode_any_value(item.get("value"))
    return out


def _optional_span_id(value: Any) -> bytes:
    return parse_span_id(value) if value else b""


def decode_resource_spans(resource_spans: Any) -> tuple[Span, ...]:
    """Decode ``resourceSpans`` (or v1 ``batches``) into spans, deduplicated by span ID.

    Tolerates base64 or hex IDs, int64 strings or numbers, enum names or numbers, and the
    pre-0.18 OTLP names (``instrumentationLibrarySpans``); raises ValueError/TypeError/KeyError
    on a wrong shape.
    """
    spans: dict[bytes, Span] = {}
    for rs in _list(resource_spans):
        resource = decode_attributes((rs.get("resource") or {}).get("attributes"))
        scope_spans: Iterable[Any] = _list(
            _get(rs, "scopeSpans", "scope_spans")
            or _get(rs, "instrumentationLibrarySpans", "instrumentation_library_spans")
        )
        for ss in scope_spans:
            scope = ss.get("scope") or _get(ss, "instrumentationLibrary", "instrumentation_library")
            scope_name = str((scope or {}).get("name", ""))
            for raw in _list(ss.get("spans")):
                span = _span(raw, resource, scope_name)
                # grafana/tempo#6533: duplicates during the hot window; the first copy wins.
                spans.setdefault(span.span_id, span)
    return tuple(spans.values())


def _span(raw: Mapping[str, Any], resource: Mapping[str, AttrValue], scope_name: str) -> Span:
    status = raw.get("status") or {}
    links = tuple(
        Link(
            trace_id=parse_trace_id(_get(link, "traceId", "trace_id")),
            span_id=parse_span_id(_get(link, "spanId", "span_id")),
            attributes=decode_attributes(link.get("attributes")),
        )
        for link in _list(raw.get("links"))
    )
    return Span(
        trace_id=parse_trace_id(_get(raw, "traceId", "trace_id")),
        span_id=parse_span_id(_get(raw, "spanId", "span_id")),
        parent_span_id=_optional_span_id(_get(raw, "parentSpanId", "parent_span_id")),
        name=str(raw.get("name", "")),
        kind=_enum(raw.get("kind"), _SPAN_KINDS),
        start_ns=_int(_get(raw, "startTimeUnixNano", "start_time_unix_nano", 0)),
        end_ns=_int(_get(raw, "endTimeUnixNano", "end_time_unix_nano", 0)),
        status_code=_enum(status.get("code"), _STATUS_CODES),
        status_message=str(status.get("message", "")),
        attributes=decode_attributes(raw.get("attributes")),
        resource=resource,
        scope_name=scope_name,
        links=links,
    )


def _summary(raw: Mapping[str, Any]) -> TraceSummary:
    sets = raw.get("spanSets")
    if sets is None:  # only the deprecated singular form (Tempo < 2.2; §5.3)
        sets = [raw["spanSet"]] if raw.get("spanSet") else []
    return TraceSummary(
        # Hex with leading zeros stripped (§5.3): parse_trace_id left-pads.
        trace_id=parse_trace_id(raw["traceID"], encoding="hex"),
        root_service=str(raw.get("rootServiceName", "")),
        root_name=str(raw.get("rootTraceName", "")),
        start_ns=_int(raw.get("startTimeUnixNano", 0)),
        duration_ms=_int(raw.get("durationMs", 0)),
        span_sets=tuple(_span_set(s) for s in _list(sets)),
    )


def _span_set(raw: Mapping[str, Any]) -> SpanSet:
    spans = tuple(
        SearchSpan(
            span_id=parse_span_id(s["spanID"], encoding="hex"),
            name=str(s.get("name", "")),
            start_ns=_int(s.get("startTimeUnixNano", 0)),
            duration_ns=_int(s.get("durationNanos", 0)),
            attributes=decode_attributes(s.get("attributes")),
        )
        for s in _list(raw.get("spans"))
    )
    return SpanSet(spans, _int(raw.get("matched", 0)), decode_attributes(raw.get("attributes")))


def _metrics(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    # int64 counters arrive as strings ("inspectedBytes": "123"); make them numbers.
    return {k: int(v) if isinstance(v, str) and v.isdigit() else v for k, v in raw.items()}


def _range_series(raw: Mapping[str, Any]) -> MetricsSeries:
    samples = []
    for s in _list(raw.get("samples")):
        ts = _int(_get(s, "timestampMs", "timestamp_ms", 0))
        samples.append((ts, _float(s.get("value", 0.0))))
    return MetricsSeries(decode_attributes(raw.get("labels")), tuple(samples))
