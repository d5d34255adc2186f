"""Metrics-generator equivalent (§11): span-metrics and service graphs, remote-written and
decoded here by an independent snappy + protobuf decoder (standin_helpers)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

from standin_helpers import (
    CLIENT,
    ERROR,
    SERVER,
    RemoteWriteReceiver,
    Running,
    SpanSpec,
    WrittenSeries,
    export_request,
    get_json,
    poll,
    send_grpc,
)
from tempo_standin.config import RemoteWrite

TID = bytes.fromhex("0000" + "5a" * 14)  # two leading zero bytes: traceID trimmed to 28 chars
LE = [
    "0.002",
    "0.004",
    "0.008",
    "0.016",
    "0.032",
    "0.064",
    "0.128",
    "0.256",
    "0.512",
    "1.024",
    "2.048",
    "4.096",
    "8.192",
    "16.384",
    "+Inf",
]
CONST = {"source": "tempo", "__metrics_gen_instance": "standin-test"}


def _by_name(series: list[WrittenSeries], name: str) -> list[WrittenSeries]:
    return [s for s in series if s.labels["__name__"] == name]


def _one_server_span(r: Running, *, end_offset_ns: int = 0) -> SpanSpec:
    end = time.time_ns() + end_offset_ns
    spec = SpanSpec(
        TID,
        b"\x0a" * 8,
        "POST /pay",
        SERVER,
        start_ns=end - 3_000_000,
        duration_ns=3_000_000,
        status=ERROR,
    )
    send_grpc(r.grpc_port, export_request("checkout", [spec]))
    return spec


def test_span_metrics_series_labels_buckets_and_exemplars(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    r = make_standin(remote_write=(RemoteWrite(rw_receiver.url, send_exemplars=True),))
    _one_server_span(r)
    before = int(time.time() * 1000)
    r.app.generator.collect_and_write()
    after = int(time.time() * 1000)
    (req,) = rw_receiver.requests
    # Remote write 1.0 headers, plus Tempo's X-Scope-OrgID (§11.3).
    assert req.headers["content-encoding"] == "snappy"
    assert req.headers["content-type"] == "application/x-protobuf"
    assert req.headers["x-prometheus-remote-write-version"] == "0.1.0"
    assert req.headers["x-scope-orgid"] == "single-tenant"
    base = {
        **CONST,
        "service": "checkout",
        "span_name": "POST /pay",
        "span_kind": "SPAN_KIND_SERVER",
        "status_code": "STATUS_CODE_ERROR",
    }
    (calls,) = _by_name(req.series, "traces_spanmetrics_calls_total")
    assert calls.labels == {"__name__": "traces_spanmetrics_calls_total", **base}
    # §11.3: a new series first gets a 0 sample at the end of the previous minute.
    (zero_v, zero_t), (one_v, one_t) = calls.samples
    assert (zero_v, one_v) == (0.0, 1.0)
    assert before <= one_t <= after
    assert zero_t == one_t - one_t % 60_000 - 1
    buckets = _by_name(req.series, "traces_spanmetrics_latency_bucket")
    assert [b.labels["le"] for b in buckets] == LE  # §11.1: 0.002*2^n, FormatFloat 'f' -1
    for b in buckets:
        assert b.labels == {
            "__name__": "traces_spanmetrics_latency_bucket",
            **base,
            "le": b.labels["le"],
        }
        assert b.samples[0] == (0.0, zero_t)
    cumulative = {b.labels["le"]: b.samples[-1][0] for b in buckets}
    assert cumulative["0.002"] == 0.0
    assert all(cumulative[le] == 1.0 for le in LE[1:])  # 3 ms falls in le=0.004
    with_ex = [b for b in buckets if b.exemplars]
    assert [b.labels["le"] for b in with_ex] == ["0.004"]
    ((ex_labels, ex_value, ex_ts),) = with_ex[0].exemplars
    assert ex_labels == {"traceID": TID.hex().lstrip("0")}  # hex, leading zeros trimmed
    assert ex_value == 0.003
    assert ex_ts == one_t
    (lsum,) = _by_name(req.series, "traces_spanmetrics_latency_sum")
    (lcount,) = _by_name(req.series, "traces_spanmetrics_latency_count")
    assert (lsum.samples[-1][0], lcount.samples[-1][0]) == (0.003, 1.0)
    (size,) = _by_name(req.series, "traces_spanmetrics_size_total")
    assert size.samples[-1][0] > 0
    assert size.samples[-1][0] == r.app.store.get(TID)[0].size
    # Second collection: no new-series zero sample, exemplars were cleared.
    r.app.generator.collect_and_write()
    second = rw_receiver.requests[1].series
    (calls2,) = _by_name(second, "traces_spanmetrics_calls_total")
    assert len(calls2.samples) == 1 and calls2.samples[0][0] == 1.0
    assert not any(s.exemplars for s in second)
    assert r.app.metrics.value(
        "prometheus_remote_storage_samples_total",
        tenant="single-tenant",
        remote_name="default",
        url=rw_receiver.url,
    ) == sum(len(s.samples) for q in rw_receiver.requests for s in q.series)


def test_exemplars_only_with_send_exemplars(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    r = make_standin(remote_write=(RemoteWrite(rw_receiver.url, send_exemplars=False),))
    _one_server_span(r)
    r.app.generator.collect_and_write()
    assert rw_receiver.all_series()
    assert not any(s.exemplars for s in rw_receiver.all_series())


def test_ingestion_slack_drops_old_and_future_spans(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    r = make_standin(remote_write=(RemoteWrite(rw_receiver.url, send_exemplars=True),))
    _one_server_span(r, end_offset_ns=-120 * 10**9)  # ended 2 minutes ago
    send_grpc(
        r.grpc_port,
        export_request(
            "future",
            [
                SpanSpec(
                    b"\x07" * 16, b"\x07" * 8, "f", SERVER, start_ns=time.time_ns() + 120 * 10**9
                )
            ],
        ),
    )
    r.app.generator.collect_and_write()
    # §11.3: both dropped from the generator and counted; nothing to write.
    assert rw_receiver.requests == []
    assert (
        r.app.metrics.value(
            "tempo_metrics_generator_spans_discarded_total",
            tenant="single-tenant",
            reason="outside_metrics_ingestion_slack",
        )
        == 2
    )
    # The trace itself is still stored and found by ID (the slack only concerns the generator).
    assert get_json(r.http, f"/api/v2/traces/{TID.hex()}")["trace"]["resourceSpans"]
    # ... and TraceQL metrics (local-blocks) do not count it (§11.3: applies to all processors).
    poll(lambda: get_json(r.http, "/api/search", q="{}").get("traces"))
    now = int(time.time())
    doc = get_json(
        r.http,
        "/api/metrics/query",
        q="{} | count_over_time()",
        start=str(now - 600),
        end=str(now + 600),
    )
    # An ungrouped count always has its series (Tempo's UngroupedAggregator); it counted 0.
    assert [s.get("value", 0) for s in doc.get("series", [])] in ([], [0])


def _edge_series(series: list[WrittenSeries]) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["client"], s.labels["server"], s.labels.get("connection_type", "")): s.samples[
            -1
        ][0]
        for s in _by_name(series, "traces_service_graph_request_total")
    }


def test_service_graph_edges_and_virtual_nodes(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    r = make_standin(
        remote_write=(RemoteWrite(rw_receiver.url, send_exemplars=True),),
        processors=("service-graphs",),
    )
    now = time.time_ns()
    t1, t2, t3, t4, t5 = (bytes([n]) * 16 for n in range(1, 6))
    client = SpanSpec(
        t1,
        b"\xc1" * 8,
        "call",
        CLIENT,
        start_ns=now - 9_000_000,
        duration_ns=9_000_000,
        parent=b"\x01" * 8,
    )
    server = SpanSpec(
        t1,
        b"\x51" * 8,
        "handle",
        SERVER,
        parent=b"\xc1" * 8,
        start_ns=now - 8_000_000,
        duration_ns=7_000_000,
        status=ERROR,
    )
    send_grpc(r.grpc_port, export_request("frontend", [client]))
    send_grpc(r.grpc_port, export_request("backend", [server]))
    send_grpc(
        r.grpc_port, export_request("apiserver", [SpanSpec(t2, b"\x02" * 8, "GET /readyz", SERVER)])
    )
    send_grpc(
        r.grpc_port,
        export_request(
            "frontend",
            [
                SpanSpec(
                    t3,
                    b"\x03" * 8,
                    "pay",
                    CLIENT,
                    parent=b"\x09" * 8,
                    attrs={"peer.service": "payments"},
                )
            ],
        ),
    )
    send_grpc(
        r.grpc_port,
        export_request(
            "frontend",
            [
                SpanSpec(
                    t4,
                    b"\x04" * 8,
                    "q",
                    CLIENT,
                    parent=b"\x09" * 8,
                    attrs={"db.system": "postgresql"},
                )
            ],
        ),
    )
    send_grpc(
        r.grpc_port,
        export_request("frontend", [SpanSpec(t5, b"\x05" * 8, "lost", CLIENT, parent=b"\x09" * 8)]),
    )
    # §11.2: edges still waiting for a pair expire after `wait` (10 s); force that moment.
    r.app.generator.expire_edges(time.time() + 11)
    r.app.generator.collect_and_write()
    series = rw_receiver.all_series()
    assert _edge_series(series) == {
        ("frontend", "backend", ""): 1.0,
        ("user", "apiserver", "virtual_node"): 1.0,
        ("frontend", "payments", "virtual_node"): 1.0,
        ("frontend", "postgresql", "database"): 1.0,
    }
    (failed,) = _by_name(series, "traces_service_graph_request_failed_total")
    assert (failed.labels["client"], failed.labels["server"]) == ("frontend", "backend")
    server_count = {
        (s.labels["client"], s.labels["server"]): s.samples[-1][0]
        for s in _by_name(series, "traces_service_graph_request_server_seconds_count")
    }
    assert server_count[("frontend", "backend")] == 1.0
    (srv_sum,) = [
        s
        for s in _by_name(series, "traces_service_graph_request_server_seconds_sum")
        if s.labels["server"] == "backend"
    ]
    (cli_sum,) = [
        s
        for s in _by_name(series, "traces_service_graph_request_client_seconds_sum")
        if s.labels["server"] == "backend"
    ]
    assert (srv_sum.samples[-1][0], cli_sum.samples[-1][0]) == (0.007, 0.009)
    les = sorted(
        {
            s.labels["le"]
            for s in _by_name(series, "traces_service_graph_request_server_seconds_bucket")
        },
        key=lambda v: float(v),
    )
    assert les == ["0.1", "0.2", "0.4", "0.8", "1.6", "3.2", "6.4", "12.8", "+Inf"]  # §11.2
    assert (
        r.app.metrics.value(
            "tempo_metrics_generator_processor_service_graphs_expired_edges", tenant="single-tenant"
        )
        == 4
    )


def test_remote_write_failures_are_counted_and_retried(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    r = make_standin(remote_write=(RemoteWrite(rw_receiver.url, send_exemplars=True),))
    _one_server_span(r)
    rw_receiver.status = 503
    r.app.generator.collect_and_write()
    lbl = {"tenant": "single-tenant", "remote_name": "default", "url": rw_receiver.url}
    failed = r.app.metrics.value("prometheus_remote_storage_samples_failed_total", **lbl)
    assert failed > 0
    assert (
        r.app.metrics.value(
            "tempo_metrics_generator_registry_collections_failed_total", tenant="single-tenant"
        )
        == 1
    )
    assert any("failed" in line and "retry=yes" in line for line in r.lines)
    rw_receiver.status = 204
    r.app.generator.collect_and_write()
    # The failed batch is re-sent first, then the new collection: two calls_total entries.
    (req,) = rw_receiver.requests
    calls = _by_name(req.series, "traces_spanmetrics_calls_total")
    assert [len(c.samples) for c in calls] == [2, 1]
    assert calls[0].samples[0][1] < calls[0].samples[1][1] <= calls[1].samples[0][1]


def test_unreachable_remote_write_never_crashes(make_standin: Callable[..., Running]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/v1/write"
    r = make_standin(remote_write=(RemoteWrite(url, send_exemplars=True),))
    _one_server_span(r)
    r.app.generator.collect_and_write()
    r.app.generator.collect_and_write()
    lines = [line for line in r.lines if line.startswith(f"remote_write url={url} failed")]
    assert len(lines) == 2
    assert "ConnectionRefusedError" in lines[0]
    assert r.http.get("/ready").text == "ready\n"


def test_remote_write_credentials_are_sent_never_shown(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    """Configured headers and URL userinfo (sent as basic auth, as Go's HTTP client does)
    reach the receiver; the log, /metrics and /status/config show neither."""
    url = rw_receiver.url.replace("http://", "http://writer:pa%24%24word@")
    rw = RemoteWrite(url, headers=(("X-Api-Key", "k3y-secret"),))
    r = make_standin(remote_write=(rw,))
    _one_server_span(r)
    r.app.generator.collect_and_write()
    (req,) = rw_receiver.requests
    assert req.headers["x-api-key"] == "k3y-secret"
    assert req.headers["authorization"] == "Basic " + base64.b64encode(b"writer:pa$$word").decode()
    shown = rw_receiver.url.replace("http://", "http://writer:xxxxx@")
    assert any(f"remote_write url={shown} status=204" in line for line in r.lines)
    exposition = r.http.get("/metrics").text
    assert f'url="{shown}"' in exposition
    status_config = r.http.get("/status/config").text
    assert shown in status_config
    for text in ("\n".join(r.lines), exposition, status_config):
        assert "k3y-secret" not in text
        assert "pa%24%24word" not in text and "pa$$word" not in text
