"""OTLP ingest (gRPC and HTTP) and trace by ID (v1/v2), over real sockets.

Each assertion names the Tempo 2.9.0 source (github.com/grafana/tempo at tag v2.9.0) or the OTLP
specification behaviour it checks.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections.abc import Callable

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from standin_helpers import (
    CLIENT,
    ERROR,
    SERVER,
    Running,
    SpanSpec,
    export_request,
    get_json,
    poll,
    send_grpc,
)

TENANT = "single-tenant"

TID = bytes.fromhex("00" + "1f" * 15)  # leading zero byte on purpose (hex IDs trim it)
ROOT = bytes.fromhex("a1a2a3a4a5a6a7a8")
CHILD = bytes.fromhex("0000b1b2b3b4b5b6")


def _send_pair(r: Running) -> int:
    now = time.time_ns()
    req = export_request(
        "shop",
        [
            SpanSpec(
                TID,
                ROOT,
                "GET /cart",
                SERVER,
                start_ns=now - 5_000_000,
                duration_ns=5_000_000,
                attrs={"http.status_code": 200, "ratio": 0.5, "ok": True},
            ),
            SpanSpec(
                TID,
                CHILD,
                "SELECT",
                CLIENT,
                parent=ROOT,
                start_ns=now - 4_000_000,
                duration_ns=1_000_000,
                status=ERROR,
                status_message="boom",
            ),
        ],
        resource={"k8s.pod": "p-1"},
    )
    send_grpc(r.grpc_port, req)
    return now


def test_v2_by_id_is_visible_at_once_with_jsonpb_encoding(standin: Running) -> None:
    _send_pair(standin)
    # modules/ingester/instance.go FindTraceByID reads the live traces: found at once.
    doc = get_json(standin.http, f"/api/v2/traces/{TID.hex()}")
    rs = doc["trace"]["resourceSpans"]
    assert len(rs) == 1
    res_attrs = {a["key"]: a["value"] for a in rs[0]["resource"]["attributes"]}
    assert res_attrs == {"service.name": {"stringValue": "shop"}, "k8s.pod": {"stringValue": "p-1"}}
    spans = rs[0]["scopeSpans"][0]["spans"]
    assert rs[0]["scopeSpans"][0]["scope"] == {"name": "standin-tests"}
    root, child = spans
    # gogo jsonpb (proto3 JSON): IDs are base64, not hex.
    assert base64.b64decode(root["traceId"]) == TID
    assert root["traceId"] == base64.b64encode(TID).decode()
    assert base64.b64decode(child["spanId"]) == CHILD
    assert base64.b64decode(child["parentSpanId"]) == ROOT
    # jsonpb omits zero values: the root has no parentSpanId and no status code.
    assert "parentSpanId" not in root
    assert "status" not in root
    # jsonpb: enums are names; 64-bit integers are strings.
    assert root["kind"] == "SPAN_KIND_SERVER"
    assert child["kind"] == "SPAN_KIND_CLIENT"
    assert child["status"] == {"code": "STATUS_CODE_ERROR", "message": "boom"}
    assert isinstance(root["startTimeUnixNano"], str)
    assert int(root["endTimeUnixNano"]) - int(root["startTimeUnixNano"]) == 5_000_000
    attrs = {a["key"]: a["value"] for a in root["attributes"]}
    assert attrs == {
        "http.status_code": {"intValue": "200"},
        "ratio": {"doubleValue": 0.5},
        "ok": {"boolValue": True},
    }
    # TraceByIDResponse: COMPLETE is the zero value, so neither status nor message appears.
    assert set(doc) == {"trace", "metrics"}
    assert int(doc["metrics"]["inspectedBytes"]) > 0


def test_v1_uses_batches_and_404_when_missing(standin: Running) -> None:
    _send_pair(standin)
    r = standin.http.get(
        f"/api/traces/{TID.hex().upper()}"
    )  # pkg/util/traceid.go: case-insensitive
    assert r.status_code == 200
    doc = r.json()
    # pkg/tempopb/trace_utils.go MarshalToJSONV1 renames resourceSpans to batches.
    assert list(doc) == ["batches"]
    assert len(doc["batches"][0]["scopeSpans"][0]["spans"]) == 2
    missing = standin.http.get("/api/traces/" + "ab" * 16)
    assert missing.status_code == 404
    assert missing.content == b""  # combiner/trace_by_id.go: 404 with an empty body


def test_v2_missing_trace_is_200_with_empty_trace(standin: Running) -> None:
    r = standin.http.get("/api/v2/traces/" + "cd" * 16)
    # querier/http.go TraceByIDHandlerV2 never answers 404; found = non-empty resourceSpans.
    assert r.status_code == 200
    assert r.json() == {"trace": {}, "metrics": {}}


def test_short_ids_are_left_padded(standin: Running) -> None:
    _send_pair(standin)
    # pkg/util/traceid.go: a shorter ID is left-padded; an odd length gets a leading 0.
    for short in (TID.hex()[1:], TID.hex().lstrip("0")):
        assert len(short) in (31, 30)
        doc = get_json(standin.http, f"/api/v2/traces/{short}")
        assert len(doc["trace"]["resourceSpans"]) == 1


def test_bad_trace_ids_get_tempos_400_texts(standin: Running) -> None:
    r = standin.http.get("/api/v2/traces/12x4")
    assert r.status_code == 400
    assert (
        r.text == "trace IDs can only contain hex characters: invalid character 'x' at position 3"
    )
    r = standin.http.get("/api/traces/" + "a" * 33)
    assert (r.status_code, r.text) == (400, "trace IDs can't be larger than 128 bits")
    # Characters are checked before the length (pkg/util/traceid.go).
    r = standin.http.get("/api/traces/" + "a" * 39 + "g")
    assert (r.status_code, r.text) == (
        400,
        "trace IDs can only contain hex characters: invalid character 'g' at position 40",
    )
    r = standin.http.get("/api/v2/traces/" + "a" * 32, params={"start": "yesterday"})
    assert r.status_code == 400
    assert r.text == 'invalid start: strconv.ParseInt: parsing "yesterday": invalid syntax'
    # Both given and non-zero: end must be after start (pkg/api/http.go).
    r = standin.http.get("/api/traces/" + "a" * 32, params={"start": "9", "end": "3"})
    assert (r.status_code, r.text) == (
        400,
        "http parameter start must be before end. received start=9 end=3",
    )


def test_start_end_in_seconds_accepted(standin: Running) -> None:
    now = _send_pair(standin) // 10**9
    doc = get_json(
        standin.http, f"/api/v2/traces/{TID.hex()}", start=str(now - 600), end=str(now + 600)
    )
    assert len(doc["trace"]["resourceSpans"]) == 1
    # A range entirely older than the ingesters' 30 minutes only sees blocks in that range.
    old = get_json(
        standin.http,
        f"/api/v2/traces/{TID.hex()}",
        start=str(now - 7200),
        end=str(now - 3600),
    )
    assert old == {"trace": {}, "metrics": {}}


def test_protobuf_accept_header(standin: Running) -> None:
    _send_pair(standin)
    r = standin.http.get(f"/api/traces/{TID.hex()}", headers={"Accept": "application/protobuf"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/protobuf"
    td = trace_pb2.TracesData()
    td.ParseFromString(r.content)
    assert [s.span_id for s in td.resource_spans[0].scope_spans[0].spans] == [ROOT, CHILD]
    r2 = standin.http.get(f"/api/v2/traces/{TID.hex()}", headers={"Accept": "application/protobuf"})
    # TraceByIDResponse{trace=1}: field 1, wire type 2, then the TracesData bytes.
    assert r2.content[0] == 0x0A
    inner = trace_pb2.TracesData()
    length, pos = r2.content[1], 2
    if length & 0x80:
        length = (length & 0x7F) | (r2.content[2] << 7)
        pos = 3
    inner.ParseFromString(r2.content[pos : pos + length])
    assert inner == td


def _metric(r: Running, name: str, **labels: str) -> float:
    return r.app.metrics.value(name, **labels)


def test_otlp_http_protobuf_and_json(standin: Running) -> None:
    now = time.time_ns()
    t1, t2 = bytes.fromhex("11" * 16), bytes.fromhex("22" * 16)
    req = export_request("http-proto", [SpanSpec(t1, b"\x01" * 8, "p", SERVER, start_ns=now)])
    r = httpx.post(
        standin.otlp_http_url,
        content=gzip.compress(req.SerializeToString()),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-protobuf"
    assert trace_service_pb2.ExportTraceServiceResponse.FromString(r.content).ByteSize() == 0
    # OTLP/JSON (opentelemetry.io/docs/specs/otlp): hex IDs and integer enums.
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "http-json"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": t2.hex(),
                                "spanId": "0203040506070809",
                                "name": "j",
                                "kind": 3,
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + 1000),
                                "status": {"code": 2},
                                "unknownField": 1,
                            }
                        ]
                    }
                ],
            }
        ]
    }
    r = httpx.post(standin.otlp_http_url, json=body)
    assert (r.status_code, r.headers["content-type"], r.text) == (200, "application/json", "{}")
    j = get_json(standin.http, f"/api/v2/traces/{t2.hex()}")
    span = j["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert base64.b64decode(span["spanId"]).hex() == "0203040506070809"
    assert span["kind"] == "SPAN_KIND_CLIENT"
    assert span["status"] == {"code": "STATUS_CODE_ERROR"}
    assert _metric(standin, "tempo_receiver_accepted_spans", receiver="otlp", transport="http") == 2


def test_otlp_http_rejections(standin: Running) -> None:
    r = httpx.post(standin.otlp_http_url, content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = httpx.get(standin.otlp_http_url)
    assert r.status_code == 405
    r = httpx.post(
        standin.otlp_http_url, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["code"] == 3  # google.rpc.Status in the request's encoding
    r = httpx.post(
        standin.otlp_http_url,
        content=b"\xff\xff\xff",
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/x-protobuf"


def test_health_identity_and_self_metrics(make_standin: Callable[..., Running]) -> None:
    standin = make_standin(trace_idle_period=1.0)
    assert (standin.http.get("/ready").status_code, standin.http.get("/ready").text) == (
        200,
        "ready\n",
    )
    assert standin.http.get("/api/echo").text == "echo\n"
    info = get_json(standin.http, "/api/status/buildinfo")
    assert set(info) == {"version", "revision", "branch", "buildUser", "buildDate", "goVersion"}
    assert info["version"] == "2.9.0"
    assert "stand-in" in info["revision"]
    # app.go statusHandler: /status/buildinfo calls a nil function; Go drops the connection.
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"http://127.0.0.1:{standin.app.http_port}/status/buildinfo")
    _send_pair(standin)
    text = standin.http.get("/metrics").text
    # metrics_provider.go: the receiver counters have no _total suffix; the refused one is
    # added 0 with every accepted batch (receiverhelper obsreport endOp).
    assert 'tempo_receiver_accepted_spans{receiver="otlp",transport="grpc"} 2\n' in text
    assert 'tempo_receiver_refused_spans{receiver="otlp",transport="grpc"} 0\n' in text
    assert 'tempo_distributor_spans_received_total{tenant="single-tenant"} 2\n' in text
    assert 'tempo_metrics_generator_spans_received_total{tenant="single-tenant"} 2\n' in text
    assert "# TYPE tempo_ingester_live_traces gauge" in text
    # instance.go: traces_created counts cuts into the head block, so 0 while the trace is
    # live; the live-traces gauge is set at each cut check, before cutting.
    assert 'tempo_ingester_traces_created_total{tenant="single-tenant"} 0\n' in text

    def gauge() -> float:
        return float(standin.app.metrics.value("tempo_ingester_live_traces", tenant=TENANT))

    poll(lambda: gauge() == 1.0, timeout=10, interval=0.01)
    created = {"tenant": TENANT}
    poll(lambda: standin.app.metrics.value("tempo_ingester_traces_created_total", **created) == 1)
    poll(lambda: gauge() == 0.0)
    text = standin.http.get("/metrics").text
    assert 'tempo_ingester_traces_created_total{tenant="single-tenant"} 1\n' in text
    assert 'tempo_ingester_live_traces{tenant="single-tenant"} 0\n' in text


def test_logs_name_visibility_per_trace(
    standin: Running, make_standin: Callable[..., Running]
) -> None:
    _send_pair(standin)
    lines = standin.log_matching(f"trace {TID.hex()} visible by id at ")
    assert len(lines) == 1
    float(lines[0].rsplit(" ", 1)[1])  # a unix time


def test_duplicate_spans_are_stored_once(standin: Running) -> None:
    _send_pair(standin)
    _send_pair(standin)
    doc = get_json(standin.http, f"/api/v2/traces/{TID.hex()}")
    spans = [
        s for rs in doc["trace"]["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]
    ]
    assert len(spans) == 2


def test_json_body_is_compact_json(standin: Running) -> None:
    _send_pair(standin)
    r = standin.http.get(f"/api/v2/traces/{TID.hex()}", headers={"Accept-Encoding": "identity"})
    assert r.headers["content-type"] == "application/json"
    assert json.loads(r.content)["trace"]["resourceSpans"]


def test_tenant_header_is_harmless(standin: Running) -> None:
    # cmd/tempo/app/app.go: with multitenancy off the fake auth ignores X-Scope-OrgID.
    _send_pair(standin)
    with_header = standin.http.get(
        f"/api/v2/traces/{TID.hex()}", headers={"X-Scope-OrgID": "tenant-x"}
    )
    assert with_header.status_code == 200
    assert with_header.json() == get_json(standin.http, f"/api/v2/traces/{TID.hex()}")


def test_large_api_responses_are_gzipped_when_accepted(standin: Running) -> None:
    # cmd/tempo/app/modules.go: the query API is wrapped in a gzip middleware.
    big = {f"attr{i}": "x" * 40 for i in range(60)}
    send_grpc(standin.grpc_port, export_request("big", [SpanSpec(TID, ROOT, "big", attrs=big)]))
    raw = httpx.get(
        f"http://127.0.0.1:{standin.app.http_port}/api/v2/traces/{TID.hex()}",
        headers={"Accept-Encoding": "gzip"},
    )
    assert raw.headers["content-encoding"] == "gzip"
    assert (
        len(raw.json()["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"])
        == 60
    )
    plain = standin.http.get(f"/api/v2/traces/{TID.hex()}", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.json() == raw.json()


def test_a_failing_push_is_refused_and_counted(
    standin: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kw: object) -> None:
        raise RuntimeError("store unavailable")

    monkeypatch.setattr(standin.app.store, "append_segments", broken)
    req = export_request("svc", [SpanSpec(TID, ROOT, "x"), SpanSpec(TID, CHILD, "y")])
    with pytest.raises(grpc.RpcError) as info:
        send_grpc(standin.grpc_port, req)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    r = httpx.post(
        standin.otlp_http_url,
        content=req.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 500
    for transport in ("grpc", "http"):
        labels = {"receiver": "otlp", "transport": transport}
        assert _metric(standin, "tempo_receiver_refused_spans", **labels) == 2
        assert _metric(standin, "tempo_receiver_accepted_spans", **labels) == 0
    assert [line.split(":")[0] for line in standin.lines if line.startswith("ingest failed")] == [
        "ingest failed (grpc)",
        "ingest failed (http)",
    ]
    assert standin.http.get("/ready").status_code == 200


def test_invalid_ids_refuse_the_whole_request(standin: Running) -> None:
    """distributor.go requestsByTraceID: one bad ID fails the push with InvalidArgument, after
    the distributor counted the spans as received; the receiver counts them refused."""
    good = SpanSpec(b"\x01" * 16, b"\x01" * 8, "good")
    req = export_request("svc", [good, SpanSpec(b"\x02" * 8, b"\x02" * 8, "short trace id")])
    with pytest.raises(grpc.RpcError) as info:
        send_grpc(standin.grpc_port, req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "trace ids must be 128 bit, received 64 bits"
    req = export_request("svc", [good, SpanSpec(b"\x03" * 16, b"\x00" * 8, "zero span id")])
    r = httpx.post(
        standin.otlp_http_url,
        content=req.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 400
    status = _rpc_status(r.content)
    assert status == (3, "span ids must be 64 bit and not all zero, received 64 bits")
    assert _metric(standin, "tempo_distributor_spans_received_total", tenant=TENANT) == 4
    for transport in ("grpc", "http"):
        labels = {"receiver": "otlp", "transport": transport}
        assert _metric(standin, "tempo_receiver_refused_spans", **labels) == 2
    assert get_json(standin.http, f"/api/v2/traces/{'01' * 16}") == {"trace": {}, "metrics": {}}
    # An all-zero trace ID is 128 bits: accepted (pkg/validation ValidTraceID checks the length).
    send_grpc(standin.grpc_port, export_request("svc", [SpanSpec(b"\x00" * 16, b"\x04" * 8, "z")]))
    doc = get_json(standin.http, "/api/v2/traces/0")
    assert len(doc["trace"]["resourceSpans"]) == 1


def _rpc_status(body: bytes) -> tuple[int, str]:
    """google.rpc.Status{code=1, message=2}, decoded with the protobuf runtime."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="t_status.proto", package="t")
    m = fdp.message_type.add(name="Status")
    m.field.add(name="code", number=1, type=5, label=1)
    m.field.add(name="message", number=2, type=9, label=1)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    msg = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Status"))()
    msg.ParseFromString(body)
    return int(msg.code), str(msg.message)


def test_empty_export_is_accepted_and_counts_nothing(standin: Running) -> None:
    """otlpreceiver trace.Receiver.Export: a request without spans is answered OK before any
    consumer or counter runs."""
    send_grpc(standin.grpc_port, trace_service_pb2.ExportTraceServiceRequest())
    assert "tempo_receiver_accepted_spans" not in standin.http.get("/metrics").text


def test_concurrent_pushes_are_counted_exactly(standin: Running) -> None:
    """Issue 14's load accounting reads the distributor and receiver counters: every span sent
    from many threads over both transports is counted once."""
    threads, requests, spans = 6, 25, 20
    body_by_thread = []
    for t in range(threads):
        reqs = []
        for i in range(requests):
            tid = bytes([t + 1, i + 1]) + b"\x07" * 14
            specs = [
                SpanSpec(tid, bytes([t + 1, i + 1, j + 1]) + b"\x00" * 5, "s") for j in range(spans)
            ]
            reqs.append(export_request("load", specs))
        body_by_thread.append(reqs)

    def worker(n: int) -> None:
        if n % 2:
            with grpc.insecure_channel(f"127.0.0.1:{standin.grpc_port}") as ch:
                stub = trace_service_pb2_grpc.TraceServiceStub(ch)  # type: ignore[no-untyped-call]
                for req in body_by_thread[n]:
                    stub.Export(req, timeout=10)
        else:
            with httpx.Client() as client:
                for req in body_by_thread[n]:
                    r = client.post(
                        standin.otlp_http_url,
                        content=req.SerializeToString(),
                        headers={"Content-Type": "application/x-protobuf"},
                    )
                    assert r.status_code == 200

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    total = threads * requests * spans
    assert _metric(standin, "tempo_distributor_spans_received_total", tenant=TENANT) == total
    per_transport = total // 2
    for transport in ("grpc", "http"):
        labels = {"receiver": "otlp", "transport": transport}
        assert _metric(standin, "tempo_receiver_accepted_spans", **labels) == per_transport
    size = sum(req.ByteSize() for reqs in body_by_thread for req in reqs)
    assert _metric(standin, "tempo_distributor_bytes_received_total", tenant=TENANT) == size
    text = standin.http.get("/metrics").text
    assert f'tempo_distributor_spans_received_total{{tenant="single-tenant"}} {total}\n' in text
