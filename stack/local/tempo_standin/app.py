"""Wiring: the receivers, the tenants (ingester and generator instances), the HTTP API and the
background loops.

:class:`Standin` runs in-process (tests) or from ``__main__`` (the local pipeline). ``start()``
binds every listener (a configured port 0 picks a free port; the bound ports are attributes and
are logged), ``stop()`` shuts everything down.

Tenancy follows cmd/tempo/app/app.go (grafana/tempo v2.9.0) ``setupAuthMiddleware``: with
multitenancy off every push and query belongs to ``single-tenant`` and ``X-Scope-OrgID`` is
ignored; with ``multitenancy_enabled: true`` the header names the tenant, and each tenant has its
own traces, generator series, remote-write queues and self-metrics series.

The HTTP API (api.py) sees this module only through the ``ServerBackend`` and ``TenantBackend``
protocols it declares, so api.py does not import app.py.
"""

from __future__ import annotations

import platform
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from tempo_standin import REVISION, TENANT, VERSION
from tempo_standin.api import ApiServer, make_api_server
from tempo_standin.config import StandinConfig, endpoint_host_port, format_go_duration
from tempo_standin.generator import Generator
from tempo_standin.model import SpanRecord
from tempo_standin.otlp import (
    IngestError,
    NoOrgID,
    TraceServicer,
    decode_http_body,
    decode_json_request,
    rpc_status_bytes,
    segments_from_request,
    validate_ids,
)
from tempo_standin.selfmetrics import Child, MetricsRegistry
from tempo_standin.store import TraceStore

__all__ = ["Standin", "Tenant", "stderr_logger"]

_S = TypeVar("_S")

# cmd/tempo/app/modules.go: the services the "all" (monolithic) target runs, as /status/services
# lists them (module names; the stand-in reports them Running once started).
SERVICES = (
    "cache-provider",
    "compactor",
    "distributor",
    "ingester",
    "internal-server",
    "memberlist-kv",
    "metrics-generator",
    "metrics-generator-ring",
    "overrides",
    "overrides-api",
    "querier",
    "query-frontend",
    "ring",
    "secondary-ring",
    "server",
    "store",
    "usage-report",
)


def stderr_logger(line: str) -> None:
    """One line per event on stderr, prefixed with an RFC3339 UTC timestamp."""
    ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sys.stderr.write(f"{ts} {line}\n")
    sys.stderr.flush()


class Tenant:
    """One tenant: its ingester instance (``store``), its metrics-generator instance
    (``generator``) and its self-metric series. Implements api.py's ``TenantBackend``."""

    def __init__(
        self,
        org_id: str,
        config: StandinConfig,
        metrics: MetricsRegistry,
        log: Callable[[str], None],
    ) -> None:
        self.org_id = org_id
        self.config = config
        self.log = log
        self._metrics = metrics
        self.store = TraceStore(
            idle_period=config.trace_idle_period,
            live_period=config.trace_live_period,
            retention=config.retention,
            max_spans=config.max_spans,
            max_spans_per_trace=config.max_spans_per_trace,
            max_bytes_per_trace=config.max_bytes_per_trace,
            max_live_traces=config.max_traces_per_user,
            max_block_duration=config.max_block_duration,
            now=time.time(),
        )
        self.generator = Generator(config, metrics, log, tenant=org_id)

    def expose(self) -> None:
        """The series Tempo creates with the tenant's distributor and ingester state (at 0)."""
        m, t = self._metrics, self.org_id
        self.ingress_bytes = m.counter("tempo_distributor_ingress_bytes_total", tenant=t)
        self.spans_received = m.counter("tempo_distributor_spans_received_total", tenant=t)
        self.bytes_received = m.counter("tempo_distributor_bytes_received_total", tenant=t)
        self.ingester_bytes = m.counter(
            "tempo_ingester_bytes_received_total", tenant=t, data_type="trace"
        )
        self.traces_created = m.counter("tempo_ingester_traces_created_total", tenant=t)
        self.live_traces = m.gauge("tempo_ingester_live_traces", tenant=t)
        self.live_trace_bytes = m.gauge("tempo_ingester_live_trace_bytes", tenant=t)
        discarded = "tempo_discarded_spans_total"
        self.discarded_live = m.counter(discarded, reason="live_traces_exceeded", tenant=t)
        self.discarded_too_large = m.counter(discarded, reason="trace_too_large", tenant=t)
        self.discarded_unknown = m.counter(discarded, reason="unknown_error", tenant=t)

    # --- api.py TenantBackend -------------------------------------------------------------

    def count_query(self, op: str, result: str) -> None:
        """``tempo_query_frontend_queries_total{tenant,op,result}``. Tempo's result is
        ``completed`` for every answer, errors included, unless the client canceled
        (modules/frontend/slos.go sloHook)."""
        outcome = "canceled" if result == "canceled" else "completed"
        self._metrics.inc(
            "tempo_query_frontend_queries_total", tenant=self.org_id, op=op, result=outcome
        )

    def metrics_dataset(self) -> list[tuple[bytes, list[SpanRecord]]]:
        """Spans the local-blocks processor holds (tqlmetrics module docstring)."""
        out = []
        for trace_id, spans in self.store.searchable():
            keep = [
                s
                for s in spans
                if s.in_generator
                and (not self.config.filter_server_spans or s.kind == 2 or s.is_root)
            ]
            if keep:
                out.append((trace_id, keep))
        return out


class Standin:
    """One stand-in process: ``start()``, then ``stop()``. Implements api.py's
    ``ServerBackend``."""

    def __init__(
        self,
        config: StandinConfig,
        log: Callable[[str], None] = stderr_logger,
    ) -> None:
        if not config.instance:
            config = config.with_overrides(instance=socket.gethostname())
        self.config = config
        self.log = log
        self.metrics = MetricsRegistry()
        self._tenants: dict[str, Tenant] = {}
        self._tenants_lock = threading.Lock()
        self.started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.stopping = False
        self.http_port = 0
        self.otlp_grpc_port = 0
        self.otlp_http_port = 0
        self._api: ApiServer | None = None
        self._otlp_http: ThreadingHTTPServer | None = None
        self._grpc: Any = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._ready_lock = threading.Lock()
        self._ready_since: float | None = None
        self._ingester_ready = False
        self._receiver: dict[str, tuple[Child, Child]] = {}
        self.metrics.set(
            "tempo_build_info",
            1.0,
            branch="standin",
            goarch=platform.machine(),
            goos=sys.platform,
            goversion="none (Python stand-in)",
            revision=REVISION,
            tags="",
            version=VERSION,
        )
        self.metrics.set("process_start_time_seconds", float(int(time.time())))
        # modules/overrides/config.go Collect: the default limits (block_retention not shown).
        for name, value in (
            ("max_local_traces_per_user", config.max_traces_per_user),
            ("max_global_traces_per_user", 0),
            ("ingestion_rate_limit_bytes", 15_000_000),
            ("ingestion_burst_size_bytes", 20_000_000),
            ("max_bytes_per_tag_values_query", 1_000_000),
            ("max_blocks_per_tag_values_query", 0),
            ("max_bytes_per_trace", config.max_bytes_per_trace),
            ("metrics_generator_max_active_series", config.max_active_series),
        ):
            self.metrics.set("tempo_limits_defaults", float(value), limit_name=name)

    # --- tenants ----------------------------------------------------------------------------

    @property
    def store(self) -> TraceStore:
        """The single tenant's store (tests; with multitenancy use ``tenant(org_id)``)."""
        return self.tenant(TENANT).store

    @property
    def generator(self) -> Generator:
        """The single tenant's generator (tests; with multitenancy use ``tenant(org_id)``)."""
        return self.tenant(TENANT).generator

    def tenant(self, org_id: str) -> Tenant:
        """The tenant's instances, created (and exposed) on first use."""
        with self._tenants_lock:
            t = self._tenants.get(org_id)
            if t is None:
                t = Tenant(org_id, self.config, self.metrics, self.log)
                t.expose()
                self._tenants[org_id] = t
            return t

    def query_tenant(self, org_id: str) -> Tenant:
        """The tenant a query reads: an existing one, or an empty one that is not kept (Tempo
        creates instances on writes only)."""
        with self._tenants_lock:
            t = self._tenants.get(org_id)
        if t is None:
            t = Tenant(org_id, self.config, self.metrics, self.log)
        return t

    def tenants(self) -> list[Tenant]:
        with self._tenants_lock:
            return list(self._tenants.values())

    def resolve_org_id(self, org_ids: list[str]) -> str:
        """The tenant of a push: ``single-tenant`` with multitenancy off; else the one
        ``X-Scope-OrgID`` value (none, an empty one or several: ``no org id``)."""
        if not self.config.multitenancy:
            return TENANT
        if len(org_ids) != 1 or not org_ids[0]:
            raise NoOrgID()
        return org_ids[0]

    # --- ingest -----------------------------------------------------------------------------

    def _receiver_counters(self, transport: str) -> tuple[Child, Child]:
        pair = self._receiver.get(transport)
        if pair is None:
            labels = {"receiver": "otlp", "transport": transport}
            pair = (
                self.metrics.counter("tempo_receiver_accepted_spans", **labels),
                self.metrics.counter("tempo_receiver_refused_spans", **labels),
            )
            self._receiver[transport] = pair
        return pair

    def ingest(self, request: Any, transport: str, org_ids: list[str] | None = None) -> None:
        """One OTLP export request from either receiver. Raises :class:`IngestError` (or any
        exception for a stand-in bug) when the push is refused; the receiver counters follow
        the collector's receiverhelper (obsreport endOp: accepted or refused, the other +0)."""
        spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        if spans == 0:
            return  # otlpreceiver trace.Receiver.Export: nothing to consume, nothing counted
        accepted, refused = self._receiver_counters(transport)
        try:
            self._push(request, spans, org_ids or [])
        except Exception:
            accepted.inc(0)
            refused.inc(spans)
            raise
        accepted.inc(spans)
        refused.inc(0)

    def _push(self, request: Any, spans: int, org_ids: list[str]) -> None:
        """modules/distributor/distributor.go PushTraces, then the ingester and the generator."""
        org_id = self.resolve_org_id(org_ids)
        t = self.tenant(org_id)
        size = request.ByteSize()
        t.ingress_bytes.inc(size)
        t.spans_received.inc(spans)
        t.bytes_received.inc(size)
        validate_ids(request)  # requestsByTraceID: after the counters above
        now = time.time()
        segments, groups = segments_from_request(request, now)
        for key, resource, scope, rs_url, ss_url in groups:
            t.store.intern_group(key, resource, scope, rs_url, ss_url)
        # The generator marks the spans it accepts before the store makes them visible. It gets
        # every span, also those the ingester refuses (the distributor forwards them anyway).
        t.generator.push(
            [r for seg in segments for r in seg.records], sum(s.size for s in segments)
        )
        result = t.store.append_segments(
            [(seg.trace_id, seg.records, seg.size) for seg in segments], now
        )
        t.ingester_bytes.inc(result.received_bytes)
        t.discarded_live.inc(result.live_exceeded)
        t.discarded_too_large.inc(result.too_large)
        t.discarded_unknown.inc(0)
        for trace_id in result.created:
            self.log(f"trace {trace_id.hex()} visible by id at {now:.6f}")

    # --- api.py ServerBackend ---------------------------------------------------------------

    def ready(self) -> tuple[int, str]:
        """cmd/tempo/app/app.go readyHandler: 503 while stopping; the ingester's lifecycler
        (dskit ring/lifecycler.go CheckReady) answers not ready until ``min_ready_duration``
        has passed since the first check that found the ring healthy, then stays ready."""
        if self.stopping:
            return 503, "Application is stopping\n"
        with self._ready_lock:
            if not self._ingester_ready:
                now = time.monotonic()
                if self._ready_since is None:
                    self._ready_since = now
                if now - self._ready_since < self.config.min_ready_duration:
                    wait = format_go_duration(self.config.min_ready_duration)
                    return (
                        503,
                        "Ingester not ready: ingester check ready failed: waiting for "
                        f"{wait} after being ready\n",
                    )
                self._ingester_ready = True
        return 200, "ready\n"

    def services(self) -> list[tuple[str, str]]:
        state = "Stopping" if self.stopping else "Running"
        return [(name, state) for name in SERVICES]

    def metrics_exposition(self) -> str:
        return self.metrics.exposition()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        c = self.config
        if c.otlp_grpc is not None:
            host, port = endpoint_host_port(c.otlp_grpc)
            server = grpc.server(
                futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-grpc"),
                options=[("grpc.so_reuseport", 0)],
            )
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
                TraceServicer(self.ingest, self.log), server
            )
            try:
                bound = server.add_insecure_port(f"{host}:{port}")
            except RuntimeError:  # grpcio >= 1.5x raises instead of returning 0
                bound = 0
            if bound == 0:
                raise OSError(
                    f"otlp grpc receiver: cannot listen on {host}:{port} (address in use?)"
                )
            server.start()
            self._grpc = server
            self.otlp_grpc_port = bound
            self.log(f"otlp grpc receiver listening on {host}:{bound}")
        if c.otlp_http is not None:
            host, port = endpoint_host_port(c.otlp_http)
            handler = type("OtlpHandler", (_OtlpHttpHandler,), {"app": self})
            self._otlp_http = _listen(
                "otlp http receiver", host, port, lambda: _Server((host, port), handler)
            )
            self.otlp_http_port = self._otlp_http.server_address[1]
            otlp_server = self._otlp_http
            self._spawn(lambda: otlp_server.serve_forever(poll_interval=0.1), "otlp-http")
            self.log(f"otlp http receiver listening on {host}:{self.otlp_http_port}")
        self._api = _listen(
            "http api",
            c.http_host,
            c.http_port,
            lambda: make_api_server(self, c.http_host, c.http_port),
        )
        self.http_port = self._api.server_address[1]
        api = self._api
        self._spawn(lambda: api.serve_forever(poll_interval=0.1), "http-api")
        self._spawn(self._ingester_loop, "ingester")
        self._spawn(self._collector_loop, "generator")
        self.log(
            f"tempo stand-in {VERSION} started: http={c.http_host}:{self.http_port} "
            f"api_prefix={c.http_api_prefix or '/'} multitenancy={str(c.multitenancy).lower()} "
            f"min_ready_duration={format_go_duration(c.min_ready_duration)} "
            f"trace_idle_period={c.trace_idle_period}s collection_interval="
            f"{c.collection_interval}s processors={','.join(c.processors) or 'none'} "
            f"remote_write={','.join(rw.shown_url for rw in c.remote_write) or 'none'}"
        )

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _ingester_loop(self) -> None:
        period = max(0.01, min(self.config.flush_check_period, 1.0))
        last_expire = 0.0
        while not self._stop.wait(period):
            now = time.time()
            for t in self.tenants():
                # instance.go tracesToCut sets the gauges before cutting.
                t.live_traces.set(float(t.store.live_traces()))
                t.live_trace_bytes.set(float(t.store.live_trace_bytes()))
                for cut in t.store.cut(now):
                    t.traces_created.inc()  # writeTraceToHeadBlock: one per cut
                    more = "" if cut.first else "more spans "
                    self.log(
                        f"trace {cut.trace_id.hex()} {more}searchable at {now:.6f} "
                        f"spans={cut.spans}"
                    )
                if t.store.cut_block_if_ready(now):
                    self.log(f"block cut tenant={t.org_id} at {now:.6f}")
            if now - last_expire >= 1.0:
                last_expire = now
                for t in self.tenants():
                    t.generator.expire_edges(now)
                    dropped = t.store.evict(now)
                    if dropped:
                        self.log(f"evicted {dropped} traces (retention or max_spans)")

    def _collector_loop(self) -> None:
        while not self._stop.wait(0.05):
            now = time.time()
            for t in self.tenants():
                if not t.generator.due(now):
                    continue
                try:
                    t.generator.collect()
                except Exception as exc:  # a collection bug must not stop later collections
                    self.log(f"collection failed: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """Stop listeners and loops; queued remote writes are sent within
        ``remote_write_flush_deadline``. No last collection is made (as in Tempo)."""
        self.stopping = True
        self._stop.set()
        if self._grpc is not None:
            self._grpc.stop(grace=0.5).wait(2.0)
        for srv in (self._otlp_http, self._api):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for th in self._threads:
            th.join(timeout=5.0)
        for t in self.tenants():
            t.generator.close()
        self.log("tempo stand-in stopped")


def _listen(what: str, host: str, port: int, make: Callable[[], _S]) -> _S:
    """``make()``, with a bind failure turned into one OSError line naming the listener and its
    address (README "Running it")."""
    try:
        return make()
    except OSError as exc:
        raise OSError(f"{what}: cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    """OTLP/HTTP receiver (the collector's otlpreceiver otlphttp.go, v0.132.0)."""

    protocol_version = "HTTP/1.1"
    app: Standin

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _status(self, http_status: int, code: int, message: str, is_json: bool) -> None:
        """A ``google.rpc.Status`` in the request's encoding."""
        if is_json:
            import json

            body = json.dumps({"code": code, "message": message}).encode()
            self._reply(http_status, body, "application/json")
        else:
            self._reply(http_status, rpc_status_bytes(code, message), "application/x-protobuf")

    def _not_post(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.split("?")[0] != "/v1/traces":
            self._reply(404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        self._reply(405, b"405 method not allowed, supported: [POST]", "text/plain")

    do_GET = do_PUT = do_DELETE = do_PATCH = _not_post

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.split("?")[0] != "/v1/traces":
            self._reply(404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in ("application/x-protobuf", "application/json"):
            self._reply(
                415,
                b"415 unsupported media type, supported: "
                b"[application/json, application/x-protobuf]",
                "text/plain",
            )
            return
        is_json = ctype == "application/json"
        try:
            raw = decode_http_body(body, self.headers.get("Content-Encoding") or "")
            if is_json:
                req = decode_json_request(raw)
            else:
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(raw)
        except Exception as exc:
            self._status(400, 3, f"{type(exc).__name__}: {exc}", is_json)
            return
        org_ids = self.headers.get_all("X-Scope-OrgID") or []
        try:
            self.app.ingest(req, "http", list(org_ids))
        except IngestError as exc:
            self._status(exc.http_status, exc.rpc_code, str(exc), is_json)
            return
        except Exception as exc:  # a stand-in bug: refused like a failed pipeline push (500)
            self.app.log(f"ingest failed (http): {type(exc).__name__}: {exc}")
            self._status(500, 13, f"{type(exc).__name__}: {exc}", is_json)
            return
        if is_json:
            self._reply(200, b"{}", "application/json")
        else:
            resp = trace_service_pb2.ExportTraceServiceResponse()
            self._reply(200, resp.SerializeToString(), "application/x-protobuf")
