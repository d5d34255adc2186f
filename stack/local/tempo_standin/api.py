"""Tempo's HTTP API (port 3200): health, identity, status, trace by ID, search, tags, metrics.

Routes and middleware follow cmd/tempo/app/app.go and cmd/tempo/app/modules.go (grafana/tempo
at tag v2.9.0; read for facts, nothing copied):

* ``/ready``, ``/status``, ``/status/{endpoint}`` and ``/metrics`` are served at the root. The
  query API (trace by ID, search, tags, TraceQL metrics), ``/api/echo`` and
  ``/api/status/buildinfo`` move under ``http_api_prefix`` (``addHTTPAPIPrefix``, Go's
  ``path.Join(prefix, route)``).
* The query API runs behind the auth middleware: with multitenancy on, a request without
  ``X-Scope-OrgID`` gets 401 ``no org id`` (dskit middleware/http_auth.go ``AuthenticateUser``,
  user/id.go ``ErrNoOrgID``); with it off every request reads ``single-tenant``. Then the gzip
  middleware.

Responses that Tempo marshals with gogo jsonpb follow proto3 JSON rules: int64/uint64 as
strings, enum names, zero values omitted, IDs base64 in traces and hex in search results.

This module reaches the rest of the stand-in only through the :class:`ServerBackend` and
:class:`TenantBackend` protocols, so it does not import app.py.
"""

from __future__ import annotations

import gzip
import json
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tempo_standin import REVISION, TENANT, VERSION
from tempo_standin.config import StandinConfig, format_go_duration
from tempo_standin.generator import Generator
from tempo_standin.model import SpanRecord
from tempo_standin.otlp import varint
from tempo_standin.store import TraceStore

__all__ = [
    "ApiServer",
    "HttpError",
    "ServerBackend",
    "TenantBackend",
    "format_go_duration",
    "make_api_server",
]


class TenantBackend(Protocol):
    """One tenant's data, as the query handlers read it."""

    @property
    def store(self) -> TraceStore: ...

    @property
    def generator(self) -> Generator: ...

    def metrics_dataset(self) -> list[tuple[bytes, list[SpanRecord]]]: ...

    def count_query(self, op: str, result: str) -> None: ...


class ServerBackend(Protocol):
    """The process, as the root endpoints read it; ``query_tenant`` gives a tenant's data."""

    @property
    def config(self) -> StandinConfig: ...

    @property
    def started_at(self) -> str: ...

    @property
    def http_port(self) -> int: ...

    def log(self, line: str) -> None: ...

    def ready(self) -> tuple[int, str]: ...

    def services(self) -> list[tuple[str, str]]: ...

    def metrics_exposition(self) -> str: ...

    def query_tenant(self, org_id: str) -> TenantBackend: ...


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


# (pattern, handler, kind): "root" routes stay at the root; "api" routes move under
# http_api_prefix; "query" routes also run behind the auth and gzip middleware
# (cmd/tempo/app/modules.go initQueryFrontend, app.go Run).
_ROUTES: list[tuple[str, str, str]] = [
    (r"/ready", "ready", "root"),
    (r"/metrics", "metrics", "root"),
    (r"/status", "status", "root"),
    (r"/status/(?P<endpoint>[^/]+)", "status", "root"),
    (r"/api/echo", "echo", "api"),
    (r"/api/status/buildinfo", "buildinfo", "api"),
    (r"/api/traces/(?P<tid>[^/]+)", "trace_v1", "query"),
    (r"/api/v2/traces/(?P<tid>[^/]+)", "trace_v2", "query"),
    (r"/api/search", "search", "query"),
    (r"/api/search/tags", "tags_v1", "query"),
    (r"/api/v2/search/tags", "tags_v2", "query"),
    (r"/api/search/tag/(?P<tag>[^/]+)/values", "tag_values_v1", "query"),
    (r"/api/v2/search/tag/(?P<tag>[^/]+)/values", "tag_values_v2", "query"),
    (r"/api/metrics/query_range", "metrics_query_range", "query"),
    (r"/api/metrics/query", "metrics_query_instant", "query"),
]

_STATUS_ENDPOINTS = ("version", "services", "endpoints", "runtime_config", "config")


def go_path_join(prefix: str, path: str) -> str:
    """Go's ``path.Join(prefix, path)``: joined with one slash and cleaned."""
    if not prefix:
        return path
    joined = posixpath.normpath(f"{prefix}/{path}")
    return "/" + joined.lstrip("/") if joined.startswith("//") else joined


def compile_routes(prefix: str) -> list[tuple[re.Pattern[str], str, str]]:
    """The route table with ``http_api_prefix`` applied. A prefix without a leading ``/``
    gives routes no request path can match, as in Tempo."""
    out = []
    for pattern, handler, kind in _ROUTES:
        if kind != "root" and prefix:
            pattern = re.escape(go_path_join(prefix, "/")).rstrip("/") + pattern
            if not prefix.startswith("/"):
                pattern = "(?!)" + pattern
        out.append((re.compile(pattern), handler, kind))
    return out


class Api:
    """The handlers of one request. ``server`` is the process; ``app`` is the tenant that a
    query route reads (single-tenant, or the ``X-Scope-OrgID`` tenant with multitenancy on)."""

    def __init__(self, server: ServerBackend, app: TenantBackend) -> None:
        self.server = server
        self.app = app

    @staticmethod
    def dispatch(
        server: ServerBackend,
        routes: list[tuple[re.Pattern[str], str, str]],
        path: str,
        params: dict[str, str],
        headers: dict[str, str],
    ) -> Response:
        for pattern, name, kind in routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            org_id = TENANT
            if kind == "query" and server.config.multitenancy:
                # dskit middleware.AuthenticateUser: http.Error(w, "no org id", 401).
                org_id = headers.get("x-scope-orgid", "")
                if not org_id:
                    return _text("no org id\n", 401)
            tenant = server.query_tenant(org_id) if kind == "query" else _NoTenant()
            api = Api(server, tenant)
            handler: Callable[..., Response] = getattr(api, name)
            try:
                resp = handler(
                    params=params,
                    headers=headers,
                    **{k: unquote(v) for k, v in m.groupdict().items()},
                )
            except HttpError as exc:
                body = exc.body.encode()
                return Response(exc.status, body, exc.content_type, gzip_ok=False)
            if kind != "query":
                resp.gzip_ok = False  # the gzip middleware wraps the query API only
            return resp
        # Go's http.NotFound text.
        return _text("404 page not found\n", 404)

    # --- health, identity and status (cmd/tempo/app/app.go) ---------------------------------

    def ready(self, **_: Any) -> Response:
        # readyHandler: http.Error, so text/plain with a trailing newline.
        status, body = self.server.ready()
        return _text(body, status)

    def echo(self, **_: Any) -> Response:
        return _text("echo\n")  # modules.go echoHandler: http.Error(w, "echo", 200)

    def buildinfo(self, **_: Any) -> Response:
        # buildinfoHandler: build.GetVersion(), the PrometheusVersion struct; the revision
        # names the stand-in.
        return _json(
            {
                "version": VERSION,
                "revision": REVISION,
                "branch": "standin",
                "buildUser": "tracecheck",
                "buildDate": self.server.started_at,
                "goVersion": "none (Python stand-in)",
            }
        )

    def metrics(self, **_: Any) -> Response:
        return Response(
            200,
            self.server.metrics_exposition().encode(),
            "text/plain; version=0.0.4; charset=utf-8",
        )

    def status(self, params: dict[str, str], endpoint: str | None = None, **_: Any) -> Response:
        """statusHandler: ``GET /status/<endpoint>\n`` then the section; ``/status`` gives all
        five. An error gives 500 with the error line before the text. An endpoint that is not
        one of the five calls a nil function in Tempo: the connection is dropped."""
        names = [endpoint] if endpoint is not None else list(_STATUS_ENDPOINTS)
        if endpoint is not None and endpoint not in _STATUS_ENDPOINTS:
            return Response(0, b"", None, gzip_ok=False)  # a dropped connection
        out: list[str] = []
        errors: list[str] = []
        for name in names:
            out.append(f"GET /status/{name}\n")
            try:
                out.append(self._status_section(name, params))
            except ValueError as exc:
                errors.append(str(exc))
        body = "".join(out)
        if errors:
            return Response(500, ("; ".join(errors) + "\n" + body).encode(), "text/plain")
        return Response(200, body.encode(), "text/plain", gzip_ok=False)

    def _status_section(self, name: str, params: dict[str, str]) -> str:
        if name == "version":
            # prometheus/common version.Print("tempo").
            return (
                f"tempo, version {VERSION} (branch: standin, revision: {REVISION})\n"
                "  build user:       tracecheck\n"
                f"  build date:       {self.server.started_at}\n"
                "  go version:       none (Python stand-in)\n"
                "  platform:         python\n"
                "  tags:             unknown\n"
            )
        if name == "services":
            return _table(
                ["SERVICE NAME", "STATUS", "FAILURE CASE"],
                [[svc, state, ""] for svc, state in self.server.services()],
            )
        if name == "endpoints":
            prefix = self.server.config.http_api_prefix
            rows = []
            for pattern, _handler, kind in _ROUTES:
                template = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern)
                if kind != "root":
                    template = go_path_join(prefix, template)
                rows.append([template, pattern])
            table = _table(["NAME", "REGEX"], sorted(rows))
            return (
                table + "\nAPI documentation: https://grafana.com/docs/tempo/latest/api_docs/\n\n"
            )
        if name == "runtime_config":
            doc = {"defaults": overrides_defaults(self.server.config), "overrides": {}}
            return "---\n" + yaml.safe_dump(doc, sort_keys=False)
        mode = params.get("mode", "")
        c = self.server.config
        if mode == "":
            doc = effective_config(c, self.server.http_port)
        elif mode == "defaults":
            doc = effective_config(StandinConfig(), StandinConfig().http_port)
        elif mode == "diff":
            default = effective_config(StandinConfig(), StandinConfig().http_port)
            doc = diff_config(default, effective_config(c, self.server.http_port))
        else:
            raise ValueError(f"unknown value for mode query parameter: {mode}")
        return "---\n" + yaml.safe_dump(doc, sort_keys=False)

    # --- trace by ID --------------------------------------------------------------------------

    @staticmethod
    def parse_trace_id(text: str) -> bytes:
        """Hex, case-insensitive, at most 32 characters, left-padded (pkg/util/traceid.go
        HexStringToTraceID at v2.9.0): the characters are checked first (positions 1-based),
        then the length, so a long ID with a bad character reports the character."""
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

    def _lookup_trace(self, tid: str, params: dict[str, str]) -> tuple[list[SpanRecord], bool, int]:
        """(spans, partial, inspected bytes) for the ID within ``start``/``end``."""
        trace_id = self.parse_trace_id(tid)
        start = _parse_int("start", params["start"], 64) if params.get("start") else None
        end = _parse_int("end", params["end"], 64) if params.get("end") else None
        if start and end and end <= start:
            # pkg/api/http.go ValidateAndSanitizeRequest: checked when both are non-zero.
            raise HttpError(
                400,
                f"http parameter start must be before end. received start={start} end={end}",
            )
        found = self.app.store.read(trace_id, self.server.config.max_bytes_per_trace)
        spans = found.spans
        if spans and (start is not None or end is not None):
            now = time.time()
            lo = start if start is not None else 0
            hi = end if end is not None else int(now) + 1
            # Recent data lives in the ingesters, which are asked whenever the range reaches the
            # last query_ingesters_until (30m, modules/frontend/config.go) and return the trace
            # whatever its timestamps; older ranges only see blocks whose time range overlaps.
            t0 = min(s.start_ns for s in spans) / 1e9
            t1 = max(s.end_ns for s in spans) / 1e9
            if hi < now - INGESTER_WINDOW and not (t0 <= hi and t1 >= lo):
                return [], False, 0
        return spans, found.partial, found.inspected_bytes

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
        # pkg/api/http.go HeaderAcceptProtobuf.
        return "application/protobuf" in headers.get("accept", "")

    def trace_v1(self, tid: str, params: dict[str, str], headers: dict[str, str]) -> Response:
        from google.protobuf import json_format

        spans, partial, _inspected = self._lookup_trace(tid, params)
        self.app.count_query("traces", "completed")
        if partial:
            # v1 does not allow partial traces: the querier's combiner fails and
            # modules/querier/http.go handleError answers 422 with the error text.
            max_bytes = self.server.config.max_bytes_per_trace
            c = self.server.config
            raise HttpError(
                422,
                "error querying ingesters in Querier.FindTraceByID: failed to execute f() for "
                f"{c.http_host}:{c.grpc_port}: rpc error: code = Unknown desc = trace exceeds "
                f"max size (max bytes: {max_bytes})\n",
            )
        if not spans:
            # combiner/trace_by_id.go: 404 with an empty body when the trace is missing.
            return Response(404, b"", None, gzip_ok=False)
        td = self._traces_data(spans)
        if self._wants_protobuf(headers):
            # tempopb.Trace{resourceSpans=1} is wire-identical to TracesData.
            return Response(200, td.SerializeToString(), "application/protobuf")
        doc = json_format.MessageToDict(td)
        # pkg/tempopb/trace_utils.go MarshalToJSONV1 renames resourceSpans to batches.
        return _json({"batches": doc.get("resourceSpans", [])})

    def trace_v2(self, tid: str, params: dict[str, str], headers: dict[str, str]) -> Response:
        from google.protobuf import json_format

        spans, partial, inspected = self._lookup_trace(tid, params)
        self.app.count_query("traces", "completed")
        td = self._traces_data(spans)
        message = ""
        if partial:
            # modules/querier/querier.go FindTraceByID, combiner/trace_by_id_v2.go.
            message = (
                f"Trace exceeds maximum size of {self.server.config.max_bytes_per_trace} bytes, "
                "a partial trace is returned"
            )
        if self._wants_protobuf(headers):
            # TraceByIDResponse{trace=1, metrics=2{inspectedBytes=1}, status=3, message=4};
            # COMPLETE (0) and an empty message are omitted.
            trace_bytes = td.SerializeToString()
            metrics = (b"\x08" + varint(inspected)) if inspected else b""
            body = b"\x0a" + varint(len(trace_bytes)) + trace_bytes
            body += b"\x12" + varint(len(metrics)) + metrics
            if partial:
                text = message.encode()
                body += b"\x18\x01" + b"\x22" + varint(len(text)) + text
            return Response(200, body, "application/protobuf")
        # querier/http.go TraceByIDHandlerV2: 200 with {"trace":{}} when missing; found means
        # non-empty resourceSpans.
        doc: dict[str, Any] = {
            "trace": json_format.MessageToDict(td),
            "metrics": {"inspectedBytes": str(inspected)} if inspected else {},
        }
        if partial:
            doc["status"] = "PARTIAL"
            doc["message"] = message
        return _json(doc)

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


class _NoTenant:
    """The tenant of a root route: root handlers never read tenant data."""

    @property
    def store(self) -> TraceStore:
        raise RuntimeError("a root route read tenant data")

    @property
    def generator(self) -> Generator:
        raise RuntimeError("a root route read tenant data")

    def metrics_dataset(self) -> list[tuple[bytes, list[SpanRecord]]]:
        raise RuntimeError("a root route read tenant data")

    def count_query(self, op: str, result: str) -> None:
        raise RuntimeError("a root route read tenant data")


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A go-pretty table in its default style, as /status/services and /status/endpoints
    render theirs."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"

    def line(cells: list[str]) -> str:
        return "|" + "|".join(f" {c.ljust(w)} " for c, w in zip(cells, widths, strict=True)) + "|\n"

    return rule + line(header) + rule + "".join(line(r) for r in rows) + rule


_SECRET = "<secret>"  # how Prometheus's config.Secret marshals


def overrides_defaults(c: StandinConfig) -> dict[str, Any]:
    """``overrides.defaults`` as the stand-in applies them (modules/overrides/config.go keys;
    ``processors`` is omitted when empty, as listtomap.ListToMap marshals)."""
    generator: dict[str, Any] = {}
    if c.processors:
        generator["processors"] = list(c.processors)
    if c.max_active_series:
        generator["max_active_series"] = c.max_active_series
    generator["generate_native_histograms"] = "classic"
    return {
        "ingestion": {
            "rate_strategy": "local",
            "rate_limit_bytes": 15_000_000,
            "burst_size_bytes": 20_000_000,
            "max_traces_per_user": c.max_traces_per_user,
        },
        "read": {"max_bytes_per_tag_values_query": 1_000_000},
        "metrics_generator": generator,
        "global": {"max_bytes_per_trace": c.max_bytes_per_trace},
    }


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v)
        return out
    return over


def effective_config(c: StandinConfig, http_port: int) -> dict[str, Any]:
    """What /status/config shows: the file as given, with the effective value of every key the
    stand-in reads laid over it (durations as Go writes them, secrets hidden)."""
    d = format_go_duration
    known: dict[str, Any] = {
        "http_api_prefix": c.http_api_prefix,
        "server": {
            "http_listen_address": c.http_host,
            "http_listen_port": http_port,
            "grpc_listen_port": c.grpc_port,
        },
        "ingester": {
            "lifecycler": {"min_ready_duration": d(c.min_ready_duration)},
            "flush_check_period": d(c.flush_check_period),
            "trace_idle_period": d(c.trace_idle_period),
            "trace_live_period": d(c.trace_live_period),
            "max_block_duration": d(c.max_block_duration),
        },
        "metrics_generator": {
            "registry": {
                "collection_interval": d(c.collection_interval),
                "stale_duration": d(c.stale_duration),
                "external_labels": dict(c.external_labels),
            },
            "storage": {
                "remote_write_flush_deadline": d(c.remote_write_flush_deadline),
                "remote_write_add_org_id_header": c.remote_write_add_org_id_header,
                "remote_write": [
                    {
                        "url": rw.shown_url,
                        "remote_timeout": d(rw.remote_timeout),
                        "headers": {k: _SECRET for k, _v in rw.headers},
                        "name": rw.name,
                        "send_exemplars": rw.send_exemplars,
                        "queue_config": {
                            "retry_on_http_429": rw.retry_on_http_429,
                            "batch_send_deadline": d(rw.batch_send_deadline),
                        },
                    }
                    for rw in c.remote_write
                ],
            },
            "processor": {
                "local_blocks": {"filter_server_spans": c.filter_server_spans},
                "service_graphs": {
                    "wait": d(c.service_graph_wait),
                    "peer_attributes": list(c.peer_attributes),
                },
            },
            "metrics_ingestion_time_range_slack": d(c.ingestion_slack),
        },
        "overrides": {"defaults": overrides_defaults(c)},
    }
    if c.multitenancy:
        known = {"multitenancy_enabled": True, **known}  # omitempty in cmd/tempo/app/config.go
    distributor: dict[str, Any] = {}
    if c.otlp_grpc is not None:
        distributor["grpc"] = {"endpoint": c.otlp_grpc}
    if c.otlp_http is not None:
        distributor["http"] = {"endpoint": c.otlp_http}
    known["distributor"] = {"receivers": {"otlp": {"protocols": distributor}}}
    doc = c.document if isinstance(c.document, dict) else {}
    file_doc = _merge({}, doc)
    # The file's remote_write entries carry header values and URL passwords: replaced whole.
    storage = (file_doc.get("metrics_generator") or {}).get("storage")
    if isinstance(storage, dict):
        storage.pop("remote_write", None)
    merged: dict[str, Any] = _merge(file_doc, known)
    return merged


def diff_config(default: Any, actual: Any) -> Any:
    """pkg/util/config.go DiffConfig: the keys whose value differs from the default."""
    out: dict[Any, Any] = {}
    for key, value in actual.items():
        if key not in default:
            out[key] = value
        elif isinstance(value, dict):
            sub = diff_config(default[key] if isinstance(default[key], dict) else {}, value)
            if sub:
                out[key] = sub
        elif value != default[key]:
            out[key] = value
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_backend: ServerBackend
    routes: list[tuple[re.Pattern[str], str, str]]

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
            resp = Api.dispatch(self.server_backend, self.routes, parts.path, params, headers)
        except Exception as exc:  # a bug must not kill the server thread; Tempo answers 500
            resp = _text(f"internal error: {type(exc).__name__}: {exc}\n", 500)
            self.server_backend.log(f"http {parts.path} failed: {type(exc).__name__}: {exc}")
        if resp.status == 0:
            # A Go handler that panics: net/http closes the connection without an answer.
            self.close_connection = True
            return
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


def make_api_server(server: ServerBackend, host: str, port: int) -> ApiServer:
    attrs = {
        "server_backend": server,
        "routes": compile_routes(server.config.http_api_prefix),
    }
    handler = type("ApiHandler", (_Handler,), attrs)
    return ApiServer((host, port), handler)
