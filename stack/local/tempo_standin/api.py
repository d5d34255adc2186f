"""Tempo's HTTP API (port 3200): health, identity, trace by ID, search, tags, TraceQL metrics.

Each handler cites the tempo-api.md section it reproduces. Responses that Tempo marshals with
gogo jsonpb follow proto3 JSON rules (§4.2): int64/uint64 as strings, enum names, zero values
omitted, IDs base64 in traces and hex in search results (§5.3).
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tempo_standin import REVISION, VERSION
from tempo_standin.model import SpanRecord
from tempo_standin.otlp import varint

if TYPE_CHECKING:
    from tempo_standin.app import Standin

__all__ = ["ApiServer", "HttpError", "format_go_duration", "make_api_server"]

INGESTER_WINDOW = 30 * 60  # §5.1/§10: query_ingesters_until 30m
GZIP_MIN = 1400  # gzip middleware: small bodies are sent plain


@dataclass
class HttpError(Exception):
    status: int
    body: str
    content_type: str | None = "text/plain; charset=utf-8"


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str | None
    gzip_ok: bool = True


def format_go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()`` for error texts (``1h0m0s``, ``15s``, ``100ms``)."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    neg = ns < 0
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                text = f"{ns / size:.9f}".rstrip("0").rstrip(".") + unit
                return ("-" if neg else "") + text
    h, rem = divmod(ns, 3600 * 10**9)
    m, rem = divmod(rem, 60 * 10**9)
    s = f"{rem / 1e9:.9f}".rstrip("0").rstrip(".")
    out = (f"{h}h{m}m" if h else (f"{m}m" if m else "")) + f"{s}s"
    return ("-" if neg else "") + out


def _go_parse_int_error(name: str, value: str, func: str) -> HttpError:
    """``invalid <name>: strconv.<func>: parsing "v": <reason>`` (Go's wording)."""
    reason = "invalid syntax"
    if re.fullmatch(r"[+-]?\d+", value):
        reason = "value out of range"
    return HttpError(400, f'invalid {name}: strconv.{func}: parsing "{value}": {reason}')


def _parse_int(name: str, value: str, bits: int, func: str = "ParseInt") -> int:
    """Go's ``strconv.ParseInt(value, 10, bits)`` (``func="Atoi"``: ``strconv.Atoi``)."""
    if not re.fullmatch(r"[+-]?\d+", value):
        raise _go_parse_int_error(name, value, func)
    n = int(value)
    if not -(2 ** (bits - 1)) <= n < 2 ** (bits - 1):
        raise _go_parse_int_error(name, value, func)
    return n


def _json(doc: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(doc, separators=(",", ":")).encode(), "application/json")


def _text(body: str, status: int = 200) -> Response:
    return Response(status, body.encode(), "text/plain; charset=utf-8", gzip_ok=False)


class Api:
    """Route table and handlers; ``app`` gives the store, generator, config and counters."""

    def __init__(self, app: Standin) -> None:
        self.app = app
        self.routes: list[tuple[re.Pattern[str], Callable[..., Response]]] = [
            (re.compile(r"/ready"), self.ready),
            (re.compile(r"/api/echo"), self.echo),
            (re.compile(r"/api/status/buildinfo"), self.buildinfo),
            (re.compile(r"/metrics"), self.metrics),
            (re.compile(r"/status"), self.status),
            (re.compile(r"/status/config"), self.status_config),
            (re.compile(r"/status/buildinfo"), self.status_buildinfo),
            (re.compile(r"/api/traces/(?P<tid>[^/]+)"), self.trace_v1),
            (re.compile(r"/api/v2/traces/(?P<tid>[^/]+)"), self.trace_v2),
            (re.compile(r"/api/search"), self.search),
            (re.compile(r"/api/search/tags"), self.tags_v1),
            (re.compile(r"/api/v2/search/tags"), self.tags_v2),
            (re.compile(r"/api/search/tag/(?P<tag>[^/]+)/values"), self.tag_values_v1),
            (re.compile(r"/api/v2/search/tag/(?P<tag>[^/]+)/values"), self.tag_values_v2),
            (re.compile(r"/api/metrics/query_range"), self.metrics_query_range),
            (re.compile(r"/api/metrics/query"), self.metrics_query_instant),
        ]

    def dispatch(self, path: str, params: dict[str, str], headers: dict[str, str]) -> Response:
        for pattern, handler in self.routes:
            m = pattern.fullmatch(path)
            if m:
                try:
                    return handler(
                        params=params,
                        headers=headers,
                        **{k: unquote(v) for k, v in m.groupdict().items()},
                    )
                except HttpError as exc:
                    body = exc.body.encode()
                    return Response(exc.status, body, exc.content_type, gzip_ok=False)
        # Go's http.NotFound text.
        return _text("404 page not found\n", 404)

    # --- §3 health and identity ---------------------------------------------------------------

    def ready(self, **_: Any) -> Response:
        # §3: 200 "ready" via http.Error (text/plain, trailing newline); 503 while stopping.
        if self.app.stopping:
            return _text("Application is stopping\n", 503)
        return _text("ready\n")

    def echo(self, **_: Any) -> Response:
        return _text("echo\n")  # §3: http.Error(w, "echo", 200)

    def buildinfo(self, **_: Any) -> Response:
        # §3: the PrometheusVersion struct; the revision names the stand-in.
        return _json(
            {
                "version": VERSION,
                "revision": REVISION,
                "branch": "standin",
                "buildUser": "tracecheck",
                "buildDate": self.app.started_at,
                "goVersion": "none (Python stand-in)",
            }
        )

    def metrics(self, **_: Any) -> Response:
        return Response(
            200,
            self.app.metrics.exposition().encode(),
            "text/plain; version=0.0.4; charset=utf-8",
        )

    def status(self, **_: Any) -> Response:
        lines = [
            "Tempo 2.9 stand-in (tracecheck); endpoints:",
            "/status/config  effective configuration (keys the stand-in honours)",
        ]
        return _text("\n".join(lines) + "\n")

    def status_config(self, **_: Any) -> Response:
        c = self.app.config
        doc = {
            "server": {"http_listen_port": self.app.http_port},
            "ingester": {
                "trace_idle_period": format_go_duration(c.trace_idle_period),
                "trace_live_period": format_go_duration(c.trace_live_period),
                "flush_check_period": format_go_duration(c.flush_check_period),
            },
            "metrics_generator": {
                "registry": {
                    "collection_interval": format_go_duration(c.collection_interval),
                    "external_labels": dict(c.external_labels),
                    "stale_duration": format_go_duration(c.stale_duration),
                },
                "metrics_ingestion_time_range_slack": format_go_duration(c.ingestion_slack),
                "storage": {
                    "remote_write": [
                        {"url": rw.shown_url, "send_exemplars": rw.send_exemplars}
                        for rw in c.remote_write
                    ]
                },
                "processor": {
                    "local_blocks": {"filter_server_spans": c.filter_server_spans},
                    "service_graphs": {"wait": format_go_duration(c.service_graph_wait)},
                },
            },
            "overrides": {"defaults": {"metrics_generator": {"processors": list(c.processors)}}},
        }
        return _text(yaml.safe_dump(doc, sort_keys=False))

    def status_buildinfo(self, **_: Any) -> Response:
        # §3: Tempo routes /status/buildinfo to a nil handler (a dropped connection or a 5xx).
        return _text(
            "/status/buildinfo is not a Tempo endpoint (tempo-api.md §3); "
            "use /api/status/buildinfo\n",
            500,
        )

    # --- §4 trace by ID -----------------------------------------------------------------------

    @staticmethod
    def parse_trace_id(text: str) -> bytes:
        """§4.1: hex, case-insensitive, at most 32 characters, left-padded.

        As ``pkg/util/traceid.go`` does: the characters are checked first (positions 1-based),
        then the length, so a long ID with a bad character reports the character.
        """
        for i, ch in enumerate(text):
            if ch not in "0123456789abcdefABCDEF":
                raise HttpError(
                    400,
                    f"trace IDs can only contain hex characters: invalid character '{ch}' "
                    f"at position {i + 1}",
                )
        if len(text) > 32:
            raise HttpError(400, "trace IDs can't be larger than 128 bits")
        return bytes.fromhex(text.rjust(32, "0"))

    def _lookup_trace(self, tid: str, params: dict[str, str]) -> list[SpanRecord]:
        trace_id = self.parse_trace_id(tid)
        start = _parse_int("start", params["start"], 64) if params.get("start") else None
        end = _parse_int("end", params["end"], 64) if params.get("end") else None
        if start and end and end <= start:
            # pkg/api/http.go ValidateAndSanitizeRequest: checked when both are non-zero.
            raise HttpError(
                400,
                f"http parameter start must be before end. received start={start} end={end}",
            )
        spans = self.app.store.get(trace_id)
        if spans and (start is not None or end is not None):
            now = time.time()
            lo = start if start is not None else 0
            hi = end if end is not None else int(now) + 1
            # Recent data lives in the ingesters, which are asked whenever the range reaches the
            # last query_ingesters_until (30m) and return the trace whatever its timestamps;
            # older ranges only see blocks whose time range overlaps (§5.1, §10).
            t0 = min(s.start_ns for s in spans) / 1e9
            t1 = max(s.end_ns for s in spans) / 1e9
            if hi < now - INGESTER_WINDOW and not (t0 <= hi and t1 >= lo):
                spans = []
        return spans

    def _traces_data(self, spans: list[SpanRecord]) -> Any:
        from opentelemetry.proto.trace.v1 import trace_pb2

        td = trace_pb2.TracesData()
        by_resource: dict[bytes, Any] = {}
        by_scope: dict[bytes, Any] = {}
        for s in spans:
            rs_msg = by_scope.get(s.group_key)
            if rs_msg is None:
                resource, scope, rs_url, ss_url = self.app.store.group(s.group_key)
                rkey = resource.SerializeToString(deterministic=True) + b"\x00" + rs_url.encode()
                rs = by_resource.get(rkey)
                if rs is None:
                    rs = td.resource_spans.add()
                    rs.resource.CopyFrom(resource)
                    rs.schema_url = rs_url
                    by_resource[rkey] = rs
                rs_msg = rs.scope_spans.add()
                rs_msg.scope.CopyFrom(scope)
                rs_msg.schema_url = ss_url
                by_scope[s.group_key] = rs_msg
            rs_msg.spans.add().CopyFrom(s.proto)
        return td

    @staticmethod
    def _wants_protobuf(headers: dict[str, str]) -> bool:
        return "application/protobuf" in headers.get("accept", "")  # §4.1

    def trace_v1(self, tid: str, params: dict[str, str], headers: dict[str, str]) -> Response:
        from google.protobuf import json_format

        spans = self._lookup_trace(tid, params)
        self.app.count_query("traces", "completed")
        if not spans:
            # §4.3: v1 answers 404 with an empty body when the trace is missing.
            return Response(404, b"", None, gzip_ok=False)
        td = self._traces_data(spans)
        if self._wants_protobuf(headers):
            # tempopb.Trace{resourceSpans=1} is wire-identical to TracesData.
            return Response(200, td.SerializeToString(), "application/protobuf")
        doc = json_format.MessageToDict(td)
        # §4.3: MarshalToJSONV1 renames the top-level resourceSpans to batches.
        return _json({"batches": doc.get("resourceSpans", [])})

    def trace_v2(self, tid: str, params: dict[str, str], headers: dict[str, str]) -> Response:
        from google.protobuf import json_format

        spans = self._lookup_trace(tid, params)
        self.app.count_query("traces", "completed")
        td = self._traces_data(spans)
        inspected = sum(s.size for s in spans)
        if self._wants_protobuf(headers):
            # TraceByIDResponse{trace=1, metrics=2{inspectedBytes=1}}; COMPLETE status omitted.
            trace_bytes = td.SerializeToString()
            metrics = (b"\x08" + varint(inspected)) if inspected else b""
            body = b"\x0a" + varint(len(trace_bytes)) + trace_bytes
            body += b"\x12" + varint(len(metrics)) + metrics
            return Response(200, body, "application/protobuf")
        # §4.3: 200 with {"trace":{}} when missing; found means non-empty resourceSpans.
        metrics_doc = {"inspectedBytes": str(inspected)} if inspected else {}
        return _json({"trace": json_format.MessageToDict(td), "metrics": metrics_doc})

    # --- §5 search, §6 tags, §7 TraceQL metrics: queryapi.py ---------------------------------

    def search(self, params: dict[str, str], **_: Any) -> Response:
        from tempo_standin import queryapi

        return queryapi.search(self, params)

    def tags_v1(self, params: dict[str, str], **_: Any) -> Response:
        from tempo_standin import queryapi

        return queryapi.tags_v1(self, params)

    def tags_v2(self, params: dict[str, str], **_: Any) -> Response:
        from tempo_standin import queryapi

        return queryapi.tags_v2(self, params)

    def tag_values_v1(self, tag: str, params: dict[str, str], **_: Any) -> Response:
        from tempo_standin import queryapi

        return queryapi.tag_values_v1(self, tag, params)

    def tag_values_v2(self, tag: str, params: dict[str, str], **_: Any) -> Response:
        from tempo_standin import queryapi

        return queryapi.tag_values_v2(self, tag, params)

    def metrics_query_range(self, params: dict[str, str], **_: Any) -> Response:
        from tempo_standin import queryapi

        return queryapi.metrics_query(self, params, instant=False)

    def metrics_query_instant(self, params: dict[str, str], **_: Any) -> Response:
        from tempo_standin import queryapi

        return queryapi.metrics_query(self, params, instant=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: Api

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests are not logged; the stand-in logs events (README "Logs")

    def _handle(self, head_only: bool = False) -> None:
        parts = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        try:
            resp = self.api.dispatch(parts.path, params, headers)
        except Exception as exc:  # a bug must not kill the server thread; Tempo answers 500
            resp = _text(f"internal error: {type(exc).__name__}: {exc}\n", 500)
            self.api.app.log(f"http {parts.path} failed: {type(exc).__name__}: {exc}")
        body = resp.body
        gz = resp.gzip_ok and len(body) >= GZIP_MIN and "gzip" in headers.get("accept-encoding", "")
        if gz:
            body = gzip.compress(body, compresslevel=5)
        self.send_response(resp.status)
        if resp.content_type:
            self.send_header("Content-Type", resp.content_type)
        if gz:
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Vary", "Accept-Encoding")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle(head_only=True)


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_api_server(app: Standin, host: str, port: int) -> ApiServer:
    handler = type("ApiHandler", (_Handler,), {"api": Api(app)})
    return ApiServer((host, port), handler)
