"""Refusals counted per code against real local servers: a gRPC server and an HTTP server that
answer OTLP exports with RESOURCE_EXHAUSTED / UNAVAILABLE / 429 / 503 (and other failures), on
loopback, bounded (a few dozen requests)."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tracecheck.config import load_settings
from tracecheck.errors import BackendError, Unreachable
from tracecheck.load import LoadSpec, RetryPolicy, run_load
from tracecheck.load.encode import RUN_ID_ATTRIBUTE, varint
from tracecheck.load.send import GrpcSender, HttpSender


def _len(field_no: int, payload: bytes) -> bytes:
    return varint(field_no << 3 | 2) + varint(len(payload)) + payload


def status_with_retry_info(code: int, message: str, seconds: int, nanos: int) -> bytes:
    """A google.rpc.Status carrying a RetryInfo, encoded by hand (no googleapis protos here)."""
    duration = varint(1 << 3) + varint(seconds) + varint(2 << 3) + varint(nanos)
    retry_info = _len(1, duration)
    detail = _len(1, b"type.googleapis.com/google.rpc.RetryInfo") + _len(2, retry_info)
    return varint(1 << 3) + varint(code) + _len(2, message.encode()) + _len(3, detail)


@dataclass
class GrpcCollector:
    """A real gRPC server on 127.0.0.1 serving TraceService/Export with scripted answers."""

    address: str
    answers: list[Callable[[Any], bytes]]
    spans: list[int] = field(default_factory=list)
    run_ids: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _answer(code: grpc.StatusCode | None, message: str = "", trailers: Any = None) -> Any:
    def respond(context: Any) -> bytes:
        if code is None:
            return b""
        if trailers:
            context.set_trailing_metadata(trailers)
        context.abort(code, message)
        return b""  # not reached

    return respond


@pytest.fixture
def grpc_collector() -> Iterator[GrpcCollector]:
    state = GrpcCollector(address="", answers=[_answer(None)])

    def export(body: bytes, context: Any) -> bytes:
        request = ExportTraceServiceRequest.FromString(body)
        spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        if not spans:  # the preflight: an empty export
            return b""
        with state.lock:
            index = len(state.spans)
            state.spans.append(len(spans))
            for s in spans:
                state.run_ids.update(
                    a.value.string_value for a in s.attributes if a.key == RUN_ID_ATTRIBUTE
                )
        return state.answers[index % len(state.answers)](context)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(export)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    state.address = f"127.0.0.1:{port}"
    try:
        yield state
    finally:
        server.stop(None)


SPEC = LoadSpec(rate=20_000, duration=0.1, batch_spans=100, concurrency=2, run_id="refusals-1")


def test_grpc_refusals_are_counted_per_code(grpc_collector: GrpcCollector) -> None:
    grpc_collector.answers = [
        _answer(None),
        _answer(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited"),
        _answer(grpc.StatusCode.UNAVAILABLE, "data refused due to high memory usage"),
        _answer(grpc.StatusCode.INVALID_ARGUMENT, "bad span"),
    ]
    settings = load_settings(
        flags={"collector.endpoint": grpc_collector.address, "collector.compression": "none"}
    )
    result = run_load(settings, SPEC)
    # 2,000 spans in 20 requests of 100; every 4th request gets each answer.
    assert sum(grpc_collector.spans) == 2000 and len(grpc_collector.spans) == 20
    assert grpc_collector.run_ids == {"refusals-1"}
    assert {k: (v.requests, v.spans) for k, v in result.refusals.items()} == {
        "RESOURCE_EXHAUSTED": (5, 500),
        "UNAVAILABLE": (5, 500),
    }
    assert result.errors == {"gRPC INVALID_ARGUMENT": 5}
    assert (result.sent_spans, result.refused_final_spans, result.failed_spans) == (500, 1000, 500)
    assert result.address == grpc_collector.address and result.protocol == "grpc"
    assert "data refused due to high memory usage" in result.messages
    assert result.exit_code == 1


def test_grpc_retry_honours_retry_info_and_retries_unavailable(
    grpc_collector: GrpcCollector,
) -> None:
    info = status_with_retry_info(8, "slow down", 0, 50_000_000)
    grpc_collector.answers = [
        _answer(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "slow down",
            (("grpc-status-details-bin", info),),
        ),
        _answer(grpc.StatusCode.UNAVAILABLE, "busy"),
        _answer(None),
    ]
    settings = load_settings(
        flags={"collector.endpoint": grpc_collector.address, "collector.compression": "gzip"}
    )
    spec = LoadSpec(
        rate=10_000,
        duration=0.03,
        batch_spans=100,
        concurrency=1,
        retry=RetryPolicy(attempts=2, initial=0.01, maximum=1.0),
    )
    result = run_load(settings, spec)
    # Each of the 3 requests: RESOURCE_EXHAUSTED (with RetryInfo 50 ms), UNAVAILABLE, OK.
    assert result.sent_spans == 300 and result.retries == 6
    assert {k: v.requests for k, v in result.refusals.items()} == {
        "RESOURCE_EXHAUSTED": 3,
        "UNAVAILABLE": 3,
    }
    assert len(grpc_collector.spans) == 9


def test_grpc_partial_success_is_read_from_the_raw_answer(grpc_collector: GrpcCollector) -> None:
    answer = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=3, error_message="too old")
    ).SerializeToString()
    grpc_collector.answers = [lambda context: answer]
    settings = load_settings(flags={"collector.endpoint": grpc_collector.address})
    sender = GrpcSender(settings.collector)
    try:
        body = ExportTraceServiceRequest.FromString(b"").SerializeToString()
        assert sender.send(body, 5).kind == "ok"  # empty: the preflight path
        from tracecheck.load.encode import TraceTemplate

        t = TraceTemplate(
            service="s", run_id="r", shard=0, seed=1, spans_per_trace=2, traces_per_request=2
        )
        outcome = sender.send(t.build(0, 10**18), 5)
    finally:
        sender.close()
    assert (outcome.kind, outcome.rejected, outcome.message) == ("ok", 3, "too old")


def test_grpc_connection_refused_is_an_error_not_a_refusal(free_port: int) -> None:
    settings = load_settings(flags={"collector.endpoint": f"127.0.0.1:{free_port}"})
    sender = GrpcSender(settings.collector)
    try:
        outcome = sender.send(b"", 2)
        assert (outcome.kind, outcome.code, outcome.retryable) == (
            "error",
            "connection refused",
            True,
        )
        with pytest.raises(Unreachable) as info:
            sender.preflight(2)
    finally:
        sender.close()
    assert str(info.value) == f"collector at 127.0.0.1:{free_port}: connection refused"
    # run_load raises (exit 3) before the schedule starts when even the preflight fails.
    with pytest.raises(BackendError):
        run_load(settings, SPEC)


def _http(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Any:
    return lambda rec: (status, headers or {}, body)


def test_http_refusals_are_counted_per_status(http_server: Any) -> None:
    answers = [
        _http(200, {"Content-Type": "application/x-protobuf"}),
        _http(429, {"Retry-After": "0"}),
        _http(503, {"Content-Type": "text/plain"}, b"data refused due to high memory usage"),
        _http(400, {"Content-Type": "text/plain"}, b"bad request"),
    ]
    lock = threading.Lock()
    counted: list[int] = []

    def handler(rec: Any) -> tuple[int, dict[str, str], bytes]:
        assert rec.path == "/v1/traces"
        assert rec.headers["content-type"] == "application/x-protobuf"
        if not rec.body:
            return 200, {}, b""  # preflight
        request = ExportTraceServiceRequest.FromString(rec.body)
        with lock:
            counted.append(len(request.resource_spans[0].scope_spans[0].spans))
            i = len(counted) - 1
        status, headers, body = answers[i % 4](rec)
        return status, headers, body

    http_server.handler = handler
    settings = load_settings(
        flags={
            "collector.http_url": http_server.url,
            "collector.protocol": "http",
            "collector.compression": "none",
        }
    )
    result = run_load(settings, SPEC)
    assert sum(counted) == 2000
    assert {k: (v.requests, v.spans) for k, v in result.refusals.items()} == {
        "HTTP 429": (5, 500),
        "HTTP 503": (5, 500),
    }
    assert result.errors == {"HTTP 400": 5}
    assert result.sent_spans == 500
    assert result.address == f"{http_server.url}/v1/traces"
    assert "data refused due to high memory usage" in result.messages


def test_http_retry_waits_what_retry_after_asks(http_server: Any) -> None:
    seen: list[int] = []

    def handler(rec: Any) -> tuple[int, dict[str, str], bytes]:
        assert rec.headers["content-encoding"] == "gzip"
        if not gzip.decompress(rec.body):
            return 200, {}, b""  # preflight
        seen.append(len(rec.body))
        return (429, {"Retry-After": "0"}, b"") if len(seen) % 2 else (200, {}, b"")

    http_server.handler = handler
    settings = load_settings(
        flags={"collector.http_url": http_server.url, "collector.protocol": "http"}
    )
    spec = LoadSpec(
        rate=10_000, duration=0.02, batch_spans=100, concurrency=1, retry=RetryPolicy(attempts=1)
    )
    result = run_load(settings, spec)
    assert result.sent_spans == 200 and result.retries == 2
    assert result.refusals["HTTP 429"].requests == 2
    request = ExportTraceServiceRequest.FromString(gzip.decompress(http_server.requests[1].body))
    assert len(request.resource_spans[0].scope_spans[0].spans) == 100


def test_http_sender_unreachable_is_a_one_line_error(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}"
    settings = load_settings(flags={"collector.http_url": url, "collector.protocol": "http"})
    sender = HttpSender(settings.collector)
    try:
        outcome = sender.send(b"x", 2)
        assert (outcome.kind, outcome.code, outcome.retryable) == (
            "error",
            "connection refused",
            True,
        )
    finally:
        sender.close()
    with pytest.raises(Unreachable) as info:
        run_load(settings, SPEC)
    assert str(info.value) == (
        f"collector at http://127.0.0.1:{free_port}/v1/traces: connection refused"
    )
