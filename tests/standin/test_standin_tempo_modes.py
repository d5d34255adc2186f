"""Tempo modes a client must cope with (issue 10), each turned on by its Tempo 2.9 configuration
key and checked against the stand-in as the supervisor runs it (``python -m tempo_standin``):
multi-tenancy, the not-ready period after start, partial traces over ``max_bytes_per_trace`` and
``http_api_prefix``. Sources are files of github.com/grafana/tempo at tag v2.9.0."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from standin_helpers import (
    SERVER,
    Running,
    SpanSpec,
    export_request,
    poll,
    send_grpc_as,
    start_process,
)

FAST = (
    "ingester:\n  trace_idle_period: 100ms\n  flush_check_period: 50ms\n"
    "  lifecycler:\n    min_ready_duration: {ready}\n"
)


def _span(tid: bytes, n: int, service: str, attr_bytes: int = 0) -> SpanSpec:
    attrs = {"payload": "x" * attr_bytes} if attr_bytes else {}
    return SpanSpec(tid, bytes([n]) * 8, f"op{n}", SERVER, attrs=attrs)


def _metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def test_multitenancy_api_prefix_and_not_ready_period(tmp_path: Path) -> None:
    """multitenancy_enabled (cmd/tempo/app/app.go setupAuthMiddleware, dskit
    middleware/http_auth.go), http_api_prefix (modules.go addHTTPAPIPrefix) and
    ingester.lifecycler.min_ready_duration (dskit ring/lifecycler.go CheckReady)."""
    p = start_process(
        tmp_path,
        "multitenancy_enabled: true\nhttp_api_prefix: /tempo\n" + FAST.format(ready="1s"),
    )
    try:
        # The first readiness check starts the min_ready_duration clock: 503 with the
        # lifecycler's text, wrapped by the ingester and the ready handler.
        first = httpx.get(f"{p.url}/ready", timeout=10)
        started = time.monotonic()
        assert (first.status_code, first.text) == (
            503,
            "Ingester not ready: ingester check ready failed: waiting for 1s after being ready\n",
        )
        assert first.headers["content-type"] == "text/plain; charset=utf-8"
        poll(lambda: httpx.get(f"{p.url}/ready", timeout=10).status_code == 200, interval=0.05)
        assert time.monotonic() - started >= 1.0  # not ready before min_ready_duration
        assert httpx.get(f"{p.url}/ready", timeout=10).text == "ready\n"  # and it stays ready

        # /ready, /status and /metrics stay at the root; the API moves under the prefix.
        assert httpx.get(f"{p.url}/tempo/ready").status_code == 404
        assert httpx.get(f"{p.url}/tempo/api/echo").text == "echo\n"
        assert (
            httpx.get(f"{p.url}/api/echo").status_code,
            httpx.get(f"{p.url}/api/echo").text,
        ) == (
            404,
            "404 page not found\n",
        )
        assert httpx.get(f"{p.url}/tempo/api/status/buildinfo").json()["version"] == "2.9.0"
        assert httpx.get(f"{p.url}/tempo/metrics").status_code == 404
        config = httpx.get(f"{p.url}/status/config").text
        assert "\nmultitenancy_enabled: true\n" in config
        assert "\nhttp_api_prefix: /tempo\n" in config

        # The query API wants X-Scope-OrgID: 401 "no org id" (text/plain) without it. Echo and
        # buildinfo are not behind the auth middleware.
        tid_a, tid_b = b"\xaa" * 16, b"\xbb" * 16
        for path in (f"/tempo/api/v2/traces/{tid_a.hex()}", "/tempo/api/search?q={}"):
            r = httpx.get(f"{p.url}{path}", timeout=10)
            assert (r.status_code, r.text) == (401, "no org id\n")

        # Pushes without an org ID: the receiver's tenancy middleware fails with dskit's
        # "no org id", which the otlpreceiver turns into UNAVAILABLE (HTTP 503).
        req_a = export_request("svc-a", [_span(tid_a, 1, "svc-a")])
        with pytest.raises(grpc.RpcError) as info:
            send_grpc_as(p.grpc_port, req_a, None)
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.UNAVAILABLE,
            "no org id",
        )
        r = httpx.post(
            p.otlp_http_url,
            json={
                "resourceSpans": [
                    {"scopeSpans": [{"spans": [{"traceId": "cc" * 16, "spanId": "01" * 8}]}]}
                ]
            },
        )
        assert (r.status_code, r.json()) == (503, {"code": 14, "message": "no org id"})

        # Each tenant writes and reads its own data.
        send_grpc_as(p.grpc_port, req_a, "tenant-a")
        req_b = export_request("svc-b", [_span(tid_b, 2, "svc-b")])
        r = httpx.post(
            p.otlp_http_url,
            content=req_b.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": "tenant-b"},
        )
        assert r.status_code == 200

        def found(tenant: str, tid: bytes) -> bool:
            doc = httpx.get(
                f"{p.url}/tempo/api/v2/traces/{tid.hex()}",
                headers={"X-Scope-OrgID": tenant},
                timeout=10,
            ).json()
            return bool(doc["trace"].get("resourceSpans"))

        assert found("tenant-a", tid_a) and found("tenant-b", tid_b)
        assert not found("tenant-b", tid_a) and not found("tenant-a", tid_b)
        assert not found("nobody", tid_a)
        search = lambda tenant: httpx.get(  # noqa: E731
            f"{p.url}/tempo/api/search", params={"q": "{}"}, headers={"X-Scope-OrgID": tenant}
        ).json()["traces"]
        poll(lambda: [t["rootServiceName"] for t in search("tenant-a")] == ["svc-a"])
        assert [t["rootServiceName"] for t in search("tenant-b")] == ["svc-b"]
        text = _metrics(p.url)
        assert 'tempo_distributor_spans_received_total{tenant="tenant-a"} 1\n' in text
        assert 'tempo_distributor_spans_received_total{tenant="tenant-b"} 1\n' in text
        assert 'tempo_receiver_refused_spans{receiver="otlp",transport="grpc"} 1\n' in text
        assert 'tempo_receiver_refused_spans{receiver="otlp",transport="http"} 1\n' in text
        assert (
            'tempo_query_frontend_queries_total{op="traces",result="completed",tenant="nobody"}'
            in text
        )
    finally:
        assert p.stop() == 0


def test_partial_trace_over_max_bytes_per_trace(tmp_path: Path) -> None:
    """overrides.defaults.global.max_bytes_per_trace: the ingester refuses what passes the
    limit (trace_too_large); after the size tracker forgot the trace at a block cut, the trace
    grows past the limit and the v2 answer is partial (modules/querier/querier.go
    FindTraceByID), v1 is 422 (modules/querier/http.go handleError)."""
    p = start_process(
        tmp_path,
        FAST.format(ready="0s")
        + "  max_block_duration: 300ms\n"
        + "overrides:\n  defaults:\n    global:\n      max_bytes_per_trace: 700\n",
    )
    try:
        poll(lambda: httpx.get(f"{p.url}/ready").status_code == 200)
        tid = b"\x5a" * 16
        send = lambda req: send_grpc_as(p.grpc_port, req, None)  # noqa: E731
        send(export_request("big", [_span(tid, 1, "big", 300)]))  # about 400 bytes
        send(export_request("big", [_span(tid, 2, "big", 300)]))  # 800 > 700: refused
        text = _metrics(p.url)
        assert (
            'tempo_discarded_spans_total{reason="trace_too_large",tenant="single-tenant"} 1\n'
            in text
        )
        v2 = httpx.get(f"{p.url}/api/v2/traces/{tid.hex()}").json()
        assert set(v2) == {"trace", "metrics"}  # complete: no status, no message
        spans = v2["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert [s["name"] for s in spans] == ["op1"]

        # Two block cuts after the refused push: the tracker forgets the idle trace.
        def block_cuts() -> int:
            return p.log_text().count("block cut tenant=single-tenant")

        before = block_cuts()
        for n in range(3, 5):
            send(export_request("filler", [_span(bytes([n]) * 16, n, "filler")]))
            poll(lambda n=n: block_cuts() >= before + n - 2, timeout=20)
        send(export_request("big", [_span(tid, 5, "big", 300)]))  # accepted again
        v2 = httpx.get(f"{p.url}/api/v2/traces/{tid.hex()}").json()
        assert v2["status"] == "PARTIAL"
        assert (
            v2["message"] == "Trace exceeds maximum size of 700 bytes, a partial trace is returned"
        )
        names = sorted(
            s["name"]
            for rs in v2["trace"]["resourceSpans"]
            for ss in rs["scopeSpans"]
            for s in ss["spans"]
        )
        assert names == ["op1", "op5"]  # the segment that crossed the limit is kept
        proto = httpx.get(
            f"{p.url}/api/v2/traces/{tid.hex()}", headers={"Accept": "application/protobuf"}
        ).content
        assert b"\x18\x01\x22" in proto and proto.endswith(v2["message"].encode())
        v1 = httpx.get(f"{p.url}/api/traces/{tid.hex()}")
        assert v1.status_code == 422
        assert v1.text.endswith("trace exceeds max size (max bytes: 700)\n")
    finally:
        assert p.stop() == 0


def test_default_not_ready_period_and_stopping(make_standin: Callable[..., Running]) -> None:
    """Tempo's default min_ready_duration is 15s; while stopping /ready says so."""
    r = make_standin(min_ready_duration=15.0)
    resp = r.http.get("/ready")
    assert (resp.status_code, resp.text) == (
        503,
        "Ingester not ready: ingester check ready failed: waiting for 15s after being ready\n",
    )
    r.app.stopping = True
    assert (r.http.get("/ready").status_code, r.http.get("/ready").text) == (
        503,
        "Application is stopping\n",
    )
