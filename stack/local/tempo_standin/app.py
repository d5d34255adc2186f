"""Wiring: the receivers, the store, the generator, the HTTP API and the background loops.

:class:`Standin` runs in-process (tests) or from ``__main__`` (the local pipeline). ``start()``
binds every listener (a configured port 0 picks a free port; the bound ports are attributes and
are logged), ``stop()`` shuts everything down and makes a last remote write.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from tempo_standin import TENANT, VERSION
from tempo_standin.api import ApiServer, make_api_server
from tempo_standin.config import StandinConfig, endpoint_host_port
from tempo_standin.generator import Generator
from tempo_standin.model import SpanRecord
from tempo_standin.otlp import (
    TraceServicer,
    decode_http_body,
    decode_json_request,
    records_from_request,
    rpc_status_bytes,
)
from tempo_standin.selfmetrics import MetricsRegistry
from tempo_standin.store import TraceStore

__all__ = ["Standin", "stderr_logger"]

_S = TypeVar("_S")


def stderr_logger(line: str) -> None:
    """One line per event on stderr, prefixed with an RFC3339 UTC timestamp."""
    ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sys.stderr.write(f"{ts} {line}\n")
    sys.stderr.flush()


class Standin:
    """One stand-in process: ``start()``, then ``stop()``."""

    def __init__(self, config: StandinConfig, log: Callable[[str], None] = stderr_logger) -> None:
        if not config.instance:
            config = config.with_overrides(instance=socket.gethostname())
        self.config = config
        self.log = log
        self.metrics = MetricsRegistry()
        self.store = TraceStore(
            idle_period=config.trace_idle_period,
            live_period=config.trace_live_period,
            retention=config.retention,
            max_spans=config.max_spans,
            max_spans_per_trace=config.max_spans_per_trace,
        )
        self.generator = Generator(config, self.metrics, log)
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
        self.metrics.set(
            "tempo_build_info", 1.0, version=VERSION, revision="standin", branch="standin"
        )
        self.metrics.gauge_func(
            "tempo_ingester_live_traces", lambda: float(self.store.live_traces()), tenant=TENANT
        )

    # --- ingest -----------------------------------------------------------------------------

    def ingest(self, request: Any, transport: str, size: int) -> None:
        """One OTLP export request (already decoded) from either receiver."""
        now = time.time()
        records, groups, bad = records_from_request(request, now)
        total = len(records) + bad
        receiver = {"receiver": "otlp", "transport": transport}
        self.metrics.inc("tempo_receiver_accepted_spans", total, **receiver)
        self.metrics.inc("tempo_distributor_spans_received_total", total, tenant=TENANT)
        self.metrics.inc("tempo_distributor_bytes_received_total", size, tenant=TENANT)
        self.metrics.inc("tempo_distributor_ingress_bytes_total", size, tenant=TENANT)
        self.metrics.inc("tempo_ingester_bytes_received_total", size, data_type="trace")
        if bad:
            self.metrics.inc(
                "tempo_discarded_spans_total", bad, reason="unknown_error", tenant=TENANT
            )
        for key, resource, scope, rs_url, ss_url in groups:
            self.store.intern_group(key, resource, scope, rs_url, ss_url)
        # The generator marks the spans it accepts before the store makes them visible.
        self.generator.push(records)
        created, _stored, too_large = self.store.append(records, now)
        if too_large:
            self.metrics.inc(
                "tempo_discarded_spans_total", too_large, reason="trace_too_large", tenant=TENANT
            )
        if created:
            self.metrics.inc("tempo_ingester_traces_created_total", len(created), tenant=TENANT)
            for trace_id in created:
                self.log(f"trace {trace_id.hex()} visible by id at {now:.6f}")

    def refuse(self, request: Any, transport: str, exc: Exception) -> None:
        """Count a request the pipeline failed on (tempo_receiver_refused_spans, §12)."""
        spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        self.metrics.inc(
            "tempo_receiver_refused_spans", spans, receiver="otlp", transport=transport
        )
        self.log(f"ingest failed ({transport}, {spans} spans): {type(exc).__name__}: {exc}")

    def count_query(self, op: str, result: str) -> None:
        self.metrics.inc("tempo_query_frontend_queries_total", op=op, result=result)

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
                TraceServicer(self.ingest, lambda req, exc: self.refuse(req, "grpc", exc)), server
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
            f"tempo stand-in {VERSION} ready: http={c.http_host}:{self.http_port} "
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
            for cut in self.store.cut(now):
                if cut.first:
                    self.log(
                        f"trace {cut.trace_id.hex()} searchable at {now:.6f} spans={cut.spans}"
                    )
                else:
                    self.log(
                        f"trace {cut.trace_id.hex()} more spans searchable at {now:.6f} "
                        f"spans={cut.spans}"
                    )
            if now - last_expire >= 1.0:
                last_expire = now
                self.generator.expire_edges(now)
                dropped = self.store.evict(now)
                if dropped:
                    self.log(f"evicted {dropped} traces (retention or max_spans)")

    def _collector_loop(self) -> None:
        interval = self.config.collection_interval
        while not self._stop.wait(interval):
            try:
                self.generator.collect_and_write()
            except Exception as exc:  # a collection bug must not stop later collections
                self.log(f"collection failed: {type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """Stop listeners and loops; one last collection is written (flush at shutdown)."""
        self.stopping = True
        self._stop.set()
        if self._grpc is not None:
            self._grpc.stop(grace=0.5).wait(2.0)
        for srv in (self._otlp_http, self._api):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for t in self._threads:
            t.join(timeout=5.0)
        try:
            self.generator.collect_and_write(timeout=2.0)
        except Exception as exc:
            self.log(f"final collection failed: {type(exc).__name__}: {exc}")
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
    """OTLP/HTTP receiver (collector-otlp.md §2)."""

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
            message = f"{type(exc).__name__}: {exc}"
            if is_json:
                import json

                self._reply(400, json.dumps({"code": 3, "message": message}).encode(), ctype)
            else:
                self._reply(400, rpc_status_bytes(3, message), ctype)
            return
        try:
            self.app.ingest(req, "http", len(raw))
        except Exception as exc:  # a stand-in bug: refused like a failed pipeline push (500)
            self.app.refuse(req, "http", exc)
            message = f"{type(exc).__name__}: {exc}"
            if is_json:
                import json

                self._reply(500, json.dumps({"code": 13, "message": message}).encode(), ctype)
            else:
                self._reply(500, rpc_status_bytes(13, message), ctype)
            return
        if is_json:
            self._reply(200, b"{}", "application/json")
        else:
            resp = trace_service_pb2.ExportTraceServiceResponse()
            self._reply(200, resp.SerializeToString(), "application/x-protobuf")
