"""CollectorClient against a REAL in-process OTLP/gRPC receiver and a real OTLP/HTTP server.

The receiver is a grpcio server on a free port running a servicer whose answers each test
scripts (OK, partial_success, retryable and non-retryable codes, RetryInfo in the
``grpc-status-details-bin`` trailer). google.rpc.Status and RetryInfo are encoded here with
protobuf's own machinery (message classes built from descriptors), independently of the client's
hand-written decoder.
"""

from __future__ import annotations

import email.utils
import gzip
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as svc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as svc_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from servers import Recorded, TestServer

from tracecheck.backends.collector import CollectorClient, decode_rpc_status
from tracecheck.config import CollectorSettings
from tracecheck.errors import (
    AuthError,
    ConfigError,
    HTTPStatusError,
    NotReady,
    ProtocolError,
    Unreachable,
)
from tracecheck.polling import FakeClock, SystemClock

SECRET = "otlp-api-key-0123456789"


# -- google.rpc messages, built from descriptors ------------------------------------------------


def _rpc_classes() -> tuple[Any, Any]:
    pool = descriptor_pool.DescriptorPool()
    for module in (any_pb2, duration_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    f = descriptor_pb2.FileDescriptorProto(
        name="test/google_rpc.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
    )
    fd = descriptor_pb2.FieldDescriptorProto
    status = f.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=fd.TYPE_INT32, label=fd.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=fd.TYPE_STRING, label=fd.LABEL_OPTIONAL)
    status.field.add(
        name="details",
        number=3,
        type=fd.TYPE_MESSAGE,
        label=fd.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
    )
    retry = f.message_type.add(name="RetryInfo")
    retry.field.add(
        name="retry_delay",
        number=1,
        type=fd.TYPE_MESSAGE,
        label=fd.LABEL_OPTIONAL,
        type_name=".google.protobuf.Duration",
    )
    pool.Add(f)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("google.rpc.Status")),
        get(pool.FindMessageTypeByName("google.rpc.RetryInfo")),
    )


RpcStatus, RetryInfo = _rpc_classes()


def rpc_status(code: int, message: str, retry_delay: float | None = None) -> bytes:
    status = RpcStatus(code=code, message=message)
    if retry_delay is not None:
        info = RetryInfo()
        info.retry_delay.seconds = int(retry_delay)
        info.retry_delay.nanos = round((retry_delay % 1) * 1e9)
        status.details.add(
            type_url="type.googleapis.com/google.rpc.RetryInfo", value=info.SerializeToString()
        )
    return bytes(status.SerializeToString())


def test_decode_rpc_status_reads_what_protobuf_wrote() -> None:
    code, message, details = decode_rpc_status(rpc_status(8, "slow down ✋", retry_delay=1.25))
    assert (code, message) == (8, "slow down ✋")
    ((type_url, payload),) = details
    assert type_url == "type.googleapis.com/google.rpc.RetryInfo"
    info = RetryInfo()
    info.ParseFromString(payload)
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (1, 250_000_000)
    with pytest.raises(ValueError, match="truncated"):
        decode_rpc_status(b"\x12\x05ab")


# -- a request ----------------------------------------------------------------------------------


def make_request(spans: int = 3) -> svc.ExportTraceServiceRequest:
    request = svc.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "tracecheck-server"
    ss = rs.scope_spans.add()
    ss.scope.name = "tracecheck"
    for i in range(spans):
        s = ss.spans.add()
        s.trace_id = bytes.fromhex("00f067aa0ba902b7a3ce8e1a2bcd7f91")
        s.span_id = (i + 1).to_bytes(8, "big")
        s.name = f"span-{i}"
        s.kind = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
        s.start_time_unix_nano = 1_700_000_000_000_000_000
        s.end_time_unix_nano = 1_700_000_000_100_000_000
    return request


# -- a scripted OTLP/gRPC receiver ---------------------------------------------------------------

Action = Callable[[Any], svc.ExportTraceServiceResponse]


def ok(context: Any) -> svc.ExportTraceServiceResponse:
    return svc.ExportTraceServiceResponse()


def partial(rejected: int, message: str) -> Action:
    def act(context: Any) -> svc.ExportTraceServiceResponse:
        response = svc.ExportTraceServiceResponse()
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
        return response

    return act


def fail(code: grpc.StatusCode, details: str, retry_delay: float | None = None) -> Action:
    def act(context: Any) -> svc.ExportTraceServiceResponse:
        if retry_delay is not None:
            blob = rpc_status(code.value[0], details, retry_delay)
            context.set_trailing_metadata((("grpc-status-details-bin", blob),))
        context.abort(code, details)
        raise AssertionError("abort returned")  # pragma: no cover

    return act


@dataclass
class Receiver:
    target: str
    script: list[Action] = field(default_factory=list)
    requests: list[svc.ExportTraceServiceRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)


class _Servicer(svc_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, state: Receiver) -> None:
        self.state = state

    def Export(self, request: Any, context: Any) -> svc.ExportTraceServiceResponse:
        self.state.requests.append(request)
        self.state.metadata.append(dict(context.invocation_metadata()))
        action = self.state.script.pop(0) if self.state.script else ok
        return action(context)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    port = server.add_insecure_port("127.0.0.1:0")
    state = Receiver(target=f"127.0.0.1:{port}")
    svc_grpc.add_TraceServiceServicer_to_server(_Servicer(state), server)
    server.start()
    try:
        yield state
    finally:
        server.stop(grace=None)


def grpc_client(target: str, clock: Any = None, **settings: Any) -> CollectorClient:
    base: dict[str, Any] = {
        "endpoint": target,
        "headers": (("Authorization", f"Bearer {SECRET}"),),
        "tenant": "team-a",
        "retries": 3,
        "timeout": 5.0,
    }
    base.update(settings)
    return CollectorClient(CollectorSettings(**base), clock=clock or FakeClock())


# -- gRPC ----------------------------------------------------------------------------------------


def test_grpc_ok_sends_request_headers_tenant_gzip(receiver: Receiver) -> None:
    clock = FakeClock()
    request = make_request(3)
    with grpc_client(receiver.target, clock) as collector:
        result = collector.export(request)
    assert (result.protocol, result.address, result.spans) == ("grpc", receiver.target, 3)
    assert (result.rejected_spans, result.error_message, result.attempts) == (0, "", 1)
    assert result.accepted_spans == 3
    assert receiver.requests == [request]
    md = receiver.metadata[0]
    assert md["authorization"] == f"Bearer {SECRET}"
    assert md["x-scope-orgid"] == "team-a"
    assert clock.sleeps == []


def test_grpc_partial_success_and_warning(receiver: Receiver) -> None:
    receiver.script = [partial(2, "2 spans dropped: too old"), partial(0, "attributes truncated")]
    with grpc_client(receiver.target) as collector:
        rejected = collector.export(make_request(5))
        warning = collector.export(make_request(5))
    assert (rejected.rejected_spans, rejected.error_message, rejected.accepted_spans) == (
        2,
        "2 spans dropped: too old",
        3,
    )
    assert (warning.rejected_spans, warning.error_message) == (0, "attributes truncated")


def test_grpc_unavailable_then_ok_is_retried_with_backoff(receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.script = [fail(grpc.StatusCode.UNAVAILABLE, "queue is full"), ok]
    with grpc_client(receiver.target, clock) as collector:
        result = collector.export(make_request())
    assert result.attempts == 2
    assert clock.sleeps == [0.2]
    assert len(receiver.requests) == 2


def test_grpc_resource_exhausted_with_retry_info_waits_its_delay(receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.script = [
        fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited", retry_delay=1.5),
        ok,
    ]
    with grpc_client(receiver.target, clock) as collector:
        result = collector.export(make_request())
    assert result.attempts == 2
    assert clock.sleeps == [1.5]


def test_grpc_resource_exhausted_without_retry_info_is_not_retried(receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.script = [
        fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "grpc: received message larger than max")
    ]
    with grpc_client(receiver.target, clock) as collector, pytest.raises(HTTPStatusError) as info:
        collector.export(make_request())
    assert str(info.value) == (
        f"collector at {receiver.target}: gRPC RESOURCE_EXHAUSTED: "
        "grpc: received message larger than max"
    )
    assert info.value.status == "RESOURCE_EXHAUSTED"
    assert len(receiver.requests) == 1 and clock.sleeps == []


def test_grpc_unauthenticated_is_auth_error_without_the_key(receiver: Receiver) -> None:
    receiver.script = [fail(grpc.StatusCode.UNAUTHENTICATED, f"bad key Bearer {SECRET}")]
    with grpc_client(receiver.target) as collector, pytest.raises(AuthError) as info:
        collector.export(make_request())
    assert str(info.value) == f"collector at {receiver.target}: gRPC UNAUTHENTICATED: bad key ***"
    assert SECRET not in str(info.value)
    assert len(receiver.requests) == 1


def test_grpc_permission_denied_and_invalid_argument_are_not_retried(receiver: Receiver) -> None:
    receiver.script = [
        fail(grpc.StatusCode.PERMISSION_DENIED, "tenant team-a may not write"),
        fail(grpc.StatusCode.INVALID_ARGUMENT, "trace_id is all zeros"),
    ]
    with grpc_client(receiver.target) as collector:
        with pytest.raises(AuthError, match="PERMISSION_DENIED: tenant team-a may not write"):
            collector.export(make_request())
        with pytest.raises(HTTPStatusError) as info:
            collector.export(make_request())
    assert info.value.cause == "gRPC INVALID_ARGUMENT: trace_id is all zeros"
    assert len(receiver.requests) == 2


def test_grpc_retries_exhausted_raise_the_last_error(receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.script = [fail(grpc.StatusCode.UNAVAILABLE, "pipeline busy")] * 4
    with grpc_client(receiver.target, clock) as collector, pytest.raises(HTTPStatusError) as info:
        collector.export(make_request())
    assert info.value.cause == "gRPC UNAVAILABLE: pipeline busy"
    assert clock.sleeps == [0.2, 0.4, 0.8]
    assert len(receiver.requests) == 4


def test_grpc_budget_stops_retries_before_the_deadline(receiver: Receiver) -> None:
    clock = FakeClock()
    receiver.script = [fail(grpc.StatusCode.UNAVAILABLE, "pipeline busy")] * 4
    with grpc_client(receiver.target, clock) as collector, pytest.raises(HTTPStatusError):
        collector.export(make_request(), timeout=0.5)
    # 0.2 fits in 0.5 s; the next wait (0.4) would end past the deadline: no third attempt.
    assert clock.sleeps == [0.2]
    assert len(receiver.requests) == 2


def test_grpc_closed_port_is_unreachable(free_port: int) -> None:
    clock = FakeClock()
    target = f"127.0.0.1:{free_port}"
    with grpc_client(target, clock, retries=1) as collector, pytest.raises(Unreachable) as info:
        collector.export(make_request())
    assert str(info.value) == f"collector at {target}: connection refused"
    assert clock.sleeps == [0.2]  # refused is retryable: the collector may be restarting


@pytest.mark.timeout(30)
def test_grpc_server_that_stalls_is_unreachable_within_the_budget(stalled_port: int) -> None:
    target = f"127.0.0.1:{stalled_port}"
    collector = grpc_client(target, SystemClock(), timeout=30.0)
    with collector, pytest.raises(Unreachable) as info:
        collector.export(make_request(), timeout=0.5)
    assert str(info.value) == f"collector at {target}: no answer within 0.5 s"


def test_grpc_tls_against_a_plaintext_receiver(receiver: Receiver) -> None:
    collector = grpc_client(receiver.target, insecure=False)
    with collector, pytest.raises(Unreachable) as info:
        collector.export(make_request())
    assert str(info.value) == (
        f"collector at {receiver.target}: TLS handshake failed "
        "(is this a plaintext port? set insecure=true)"
    )
    assert receiver.requests == []


def test_grpc_plaintext_against_an_http1_server(http_server: TestServer) -> None:
    target = f"127.0.0.1:{http_server.port}"
    with grpc_client(target, retries=0) as collector, pytest.raises(Unreachable) as info:
        collector.export(make_request())
    assert str(info.value) == (
        f"collector at {target}: the server does not speak gRPC (does it expect TLS? set "
        "insecure=false)"
    )


def test_health_without_url_is_an_empty_export(receiver: Receiver, free_port: int) -> None:
    with grpc_client(receiver.target, health_url="") as collector:
        collector.health(timeout=2.0)
    (request,) = receiver.requests
    assert len(request.resource_spans) == 0
    target = f"127.0.0.1:{free_port}"
    with grpc_client(target, health_url="") as collector, pytest.raises(Unreachable) as info:
        collector.health(timeout=2.0)
    assert str(info.value) == f"collector at {target}: connection refused"


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        ("localhost", "localhost"),
        ("localhost:99999", "localhost:99999"),
        ("http://localhost:4317/v1/traces", "http://localhost:4317/v1/traces"),
        ("grpc://localhost:4317", "grpc://localhost:4317"),
        ("local host:4317", "local host:4317"),
    ],
)
def test_malformed_grpc_endpoint_is_a_config_error(endpoint: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        CollectorClient(CollectorSettings(endpoint=endpoint))
    assert str(info.value) == f"collector at {shown}: malformed gRPC endpoint: expected host:port"


def test_grpc_endpoint_spellings() -> None:
    cases = {
        "collector:4317": ("collector:4317", "plaintext"),
        "http://collector:4317": ("collector:4317", "plaintext"),
        "https://collector:4317": ("collector:4317", "tls"),
        "dns:///collector:4317": ("dns:///collector:4317", "plaintext"),
        "[::1]:4317": ("[::1]:4317", "plaintext"),
    }
    for endpoint, (target, mode) in cases.items():
        client = CollectorClient(CollectorSettings(endpoint=endpoint))
        assert (client.target, "tls" if client._tls else "plaintext") == (target, mode)
        client.close()


def test_invalid_metadata_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid gRPC metadata key 'bad key'"):
        CollectorClient(CollectorSettings(headers=(("bad key", "v"),)))


# -- OTLP/HTTP -----------------------------------------------------------------------------------


def http_client(server: TestServer, clock: Any = None, **settings: Any) -> CollectorClient:
    base: dict[str, Any] = {
        "http_url": server.url,
        "protocol": "http",
        "headers": (("X-Api-Key", SECRET),),
        "tenant": "team-a",
        "retries": 3,
        "health_url": server.url + "/",
        "metrics_url": server.url + "/metrics",
    }
    base.update(settings)
    return CollectorClient(CollectorSettings(**base), clock=clock or FakeClock())


def otlp_ok(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/x-protobuf"}, b""


def test_http_ok_gzip_protobuf_verified_on_the_server(http_server: TestServer) -> None:
    http_server.handler = otlp_ok
    request = make_request(4)
    with http_client(http_server) as collector:
        result = collector.export(request)
    assert (result.protocol, result.address, result.spans, result.attempts) == (
        "http",
        f"{http_server.url}/v1/traces",
        4,
        1,
    )
    (rec,) = http_server.requests
    assert (rec.method, rec.path) == ("POST", "/v1/traces")
    assert rec.headers["content-type"] == "application/x-protobuf"
    assert rec.headers["content-encoding"] == "gzip"
    assert rec.headers["x-api-key"] == SECRET
    assert rec.headers["x-scope-orgid"] == "team-a"
    received = svc.ExportTraceServiceRequest()
    received.ParseFromString(gzip.decompress(rec.body))
    assert received == request


def test_http_without_compression_sends_plain_protobuf(http_server: TestServer) -> None:
    http_server.handler = otlp_ok
    request = make_request(1)
    with http_client(http_server, compression="none") as collector:
        collector.export(request)
    (rec,) = http_server.requests
    assert "content-encoding" not in rec.headers
    assert rec.body == request.SerializeToString()


def test_http_partial_success_in_the_response(http_server: TestServer) -> None:
    response = svc.ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 1
    response.partial_success.error_message = "span too large"
    body = response.SerializeToString()
    http_server.handler = lambda r: (200, {"Content-Type": "application/x-protobuf"}, body)
    with http_client(http_server) as collector:
        result = collector.export(make_request(2))
    assert (result.rejected_spans, result.error_message, result.accepted_spans) == (
        1,
        "span too large",
        1,
    )


def test_http_json_partial_success_and_a_malformed_one(http_server: TestServer) -> None:
    # A backend answering in OTLP/JSON: int64 as a decimal string (docs/reference/collector.md §2).
    bodies = [
        b'{"partialSuccess": {"rejectedSpans": "2", "errorMessage": "too old"}}',
        b'{"partialSuccess": {"rejectedSpans": "many"}}',
    ]
    http_server.handler = lambda r: (200, {"Content-Type": "application/json"}, bodies.pop(0))
    with http_client(http_server) as collector:
        result = collector.export(make_request(3))
        with pytest.raises(ProtocolError) as info:
            collector.export(make_request(3))
    assert (result.rejected_spans, result.error_message, result.accepted_spans) == (
        2,
        "too old",
        1,
    )
    assert str(info.value) == (
        f"collector at {http_server.url}/v1/traces: "
        "partialSuccess.rejectedSpans is not a count: 'many'"
    )


def test_http_429_with_retry_after_then_ok(http_server: TestServer) -> None:
    answers = [(429, {"Retry-After": "2"}, b""), (200, {}, b"")]
    http_server.handler = lambda r: answers.pop(0)
    clock = FakeClock()
    with http_client(http_server, clock) as collector:
        result = collector.export(make_request())
    assert result.attempts == 2
    assert clock.sleeps == [2.0]
    assert len(http_server.requests) == 2


def test_http_503_with_an_http_date_retry_after(http_server: TestServer) -> None:
    clock = FakeClock()
    when = email.utils.formatdate(clock.time() + 3, usegmt=True)
    answers = [(503, {"Retry-After": when}, b""), (200, {}, b"")]
    http_server.handler = lambda r: answers.pop(0)
    with http_client(http_server, clock) as collector:
        assert collector.export(make_request()).attempts == 2
    assert clock.sleeps == [3.0]


def test_http_502_without_retry_after_backs_off(http_server: TestServer) -> None:
    answers = [(502, {}, b"bad gateway"), (504, {}, b"timeout"), (200, {}, b"")]
    http_server.handler = lambda r: answers.pop(0)
    clock = FakeClock()
    with http_client(http_server, clock) as collector:
        assert collector.export(make_request()).attempts == 3
    assert clock.sleeps == [0.2, 0.4]


def test_http_retry_after_too_long_gives_up(http_server: TestServer) -> None:
    body = rpc_status(8, "ingestion rate limit exceeded")
    http_server.handler = lambda r: (
        429,
        {"Retry-After": "3600", "Content-Type": "application/x-protobuf"},
        body,
    )
    clock = FakeClock()
    with http_client(http_server, clock) as collector, pytest.raises(HTTPStatusError) as info:
        collector.export(make_request())
    assert str(info.value) == (
        f"collector at {http_server.url}/v1/traces: HTTP 429: ingestion rate limit exceeded "
        "(server asks to retry after 3600 s)"
    )
    assert clock.sleeps == []


def test_http_400_decodes_the_rpc_status_body(http_server: TestServer) -> None:
    body = rpc_status(3, "proto: cannot parse invalid wire-format data")
    http_server.handler = lambda r: (400, {"Content-Type": "application/x-protobuf"}, body)
    with http_client(http_server) as collector, pytest.raises(HTTPStatusError) as info:
        collector.export(make_request())
    assert str(info.value) == (
        f"collector at {http_server.url}/v1/traces: HTTP 400: "
        "proto: cannot parse invalid wire-format data"
    )
    assert info.value.status == 400
    assert len(http_server.requests) == 1


def test_http_401_is_auth_error_without_the_key(http_server: TestServer) -> None:
    body = rpc_status(16, f"invalid api key {SECRET}")
    http_server.handler = lambda r: (401, {"Content-Type": "application/x-protobuf"}, body)
    with http_client(http_server) as collector, pytest.raises(AuthError) as info:
        collector.export(make_request())
    assert str(info.value) == (
        f"collector at {http_server.url}/v1/traces: HTTP 401: invalid api key *** "
        "(credentials missing or refused)"
    )


def test_http_415_text_plain_is_not_retried(http_server: TestServer) -> None:
    http_server.handler = lambda r: (
        415,
        {"Content-Type": "text/plain"},
        b"415 unsupported media type",
    )
    clock = FakeClock()
    with http_client(http_server, clock) as collector, pytest.raises(HTTPStatusError) as info:
        collector.export(make_request())
    assert info.value.cause == "HTTP 415: 415 unsupported media type"
    assert clock.sleeps == []


def test_http_undecodable_success_body_is_a_protocol_error(http_server: TestServer) -> None:
    http_server.handler = lambda r: (
        200,
        {"Content-Type": "application/x-protobuf"},
        b"\xff\xff\xff",
    )
    with http_client(http_server) as collector, pytest.raises(ProtocolError) as info:
        collector.export(make_request())
    assert str(info.value).startswith(
        f"collector at {http_server.url}/v1/traces: undecodable ExportTraceServiceResponse"
    )


def test_http_closed_port_is_retried_then_unreachable(free_port: int) -> None:
    clock = FakeClock()
    url = f"http://127.0.0.1:{free_port}"
    settings = CollectorSettings(http_url=url, protocol="http", retries=1)
    with CollectorClient(settings, clock=clock) as collector, pytest.raises(Unreachable) as info:
        collector.export(make_request())
    assert str(info.value) == f"collector at {url}/v1/traces: connection refused"
    assert clock.sleeps == [0.2]


def test_http_tls_against_plaintext_is_not_retried(http_server: TestServer) -> None:
    clock = FakeClock()
    url = f"https://127.0.0.1:{http_server.port}"
    settings = CollectorSettings(http_url=url, protocol="http")
    with CollectorClient(settings, clock=clock) as collector, pytest.raises(Unreachable) as info:
        collector.export(make_request())
    assert str(info.value) == (
        f"collector at {url}/v1/traces: TLS handshake failed (is this a plaintext HTTP port?)"
    )
    assert clock.sleeps == []


# -- health and self-metrics -------------------------------------------------------------------

EXPOSITION = b"""\
# TYPE otelcol_receiver_accepted_spans counter
otelcol_receiver_accepted_spans{receiver="otlp",transport="grpc"} 10
otelcol_receiver_accepted_spans{receiver="otlp",transport="http"} 2
otelcol_receiver_refused_spans{receiver="otlp",transport="grpc"} 1
otelcol_exporter_sent_spans{exporter="otlp/tempo"} 11
otelcol_exporter_sent_spans{exporter="debug"} 12
otelcol_exporter_send_failed_spans{exporter="otlp/tempo"} 1
"""
EXPOSITION_TOTAL = b"""\
otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"} 4
otelcol_exporter_sent_spans_total{exporter="otlp"} 3
otelcol_exporter_enqueue_failed_spans_total{exporter="otlp"} 1
"""


def test_health_url_ok_and_not_ready(http_server: TestServer) -> None:
    answers = [
        (200, {}, b'{"status":"Server available","upSince":"2026-01-01T00:00:00Z"}'),
        (503, {}, b'{"status":"Server not available"}'),
    ]
    http_server.handler = lambda r: answers.pop(0)
    with http_client(http_server) as collector:
        collector.health()
        with pytest.raises(NotReady) as info:
            collector.health()
    assert str(info.value) == (
        f'collector at {http_server.url}/: HTTP 503: {{"status":"Server not available"}}'
    )
    assert [r.path for r in http_server.requests] == ["/", "/"]


def test_counters_without_and_with_total_suffix(http_server: TestServer) -> None:
    bodies = [EXPOSITION, EXPOSITION, EXPOSITION_TOTAL]
    http_server.handler = lambda r: (200, {"Content-Type": "text/plain"}, bodies.pop(0))
    with http_client(http_server) as collector:
        c = collector.counters()
        tempo_only = collector.counters(exporter="otlp/tempo", receiver="otlp")
        t = collector.counters()
    assert (c.accepted, c.refused, c.sent, c.send_failed, c.enqueue_failed) == (
        12.0,
        1.0,
        23.0,
        1.0,
        0.0,
    )
    assert (tempo_only.sent, tempo_only.accepted) == (11.0, 12.0)
    assert (t.accepted, t.sent, t.enqueue_failed, t.refused) == (4.0, 3.0, 1.0, 0.0)
    assert {r.path for r in http_server.requests} == {"/metrics"}


def test_self_metrics_needs_a_url() -> None:
    collector = CollectorClient(CollectorSettings(metrics_url=""))
    with collector, pytest.raises(ConfigError, match=r"collector\.metrics_url is not set"):
        collector.self_metrics()


# -- import cost --------------------------------------------------------------------------------


def test_client_modules_do_not_import_grpc_or_protobuf() -> None:
    code = textwrap.dedent(
        """
        import sys
        import tracecheck.backends._http
        import tracecheck.backends.collector
        import tracecheck.backends.prometheus
        import tracecheck.backends.tempo
        prefixes = ("grpc.", "google.protobuf", "opentelemetry")
        heavy = sorted(m for m in sys.modules if m == "grpc" or m.startswith(prefixes))
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
