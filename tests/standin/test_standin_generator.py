"""Metrics-generator equivalent (modules/generator in grafana/tempo v2.9.0): span-metrics and
service graphs, remote-written and decoded here by an independent snappy + protobuf decoder
(standin_helpers)."""

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


def _one_server_span(r: Running, *, end_offset_ns: int = 0) -> int:
    """Send one SERVER span; returns the protobuf size of the span as sent."""
    end = time.time_ns() + end_offset_ns
    spec = SpanSpec(
        TID,
        b"\x0a" * 8,
        "POST /pay",
        SERVER,
        start_ns=end - 3_000_000,
        duration_ns=3_000_000,
        status=ERROR,
        attrs={"http.route": "/pay", "retries": 2},
    )
    req = export_request("checkout", [spec])
    send_grpc(r.grpc_port, req)
    return int(req.resource_spans[0].scope_spans[0].spans[0].ByteSize())


def test_span_metrics_series_labels_buckets_and_exemplars(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    r = make_standin(remote_write=(RemoteWrite(rw_receiver.url, send_exemplars=True),))
    span_size = _one_server_span(r)
    before = int(time.time() * 1000)
    r.app.generator.collect_and_write()
    after = int(time.time() * 1000)
    (req,) = rw_receiver.requests
    # Remote write 1.0 headers. No X-Scope-OrgID: storage/config_util.go adds it only for a
    # tenant other than single-tenant.
    assert req.headers["content-encoding"] == "snappy"
    assert req.headers["content-type"] == "application/x-protobuf"
    assert req.headers["x-prometheus-remote-write-version"] == "0.1.0"
    assert "x-scope-orgid" not in req.headers
    base = {
        **CONST,
        "service": "checkout",
        "span_name": "POST /pay",
        "span_kind": "SPAN_KIND_SERVER",
        "status_code": "STATUS_CODE_ERROR",
    }
    (calls,) = _by_name(req.series, "traces_spanmetrics_calls_total")
    assert calls.labels == {"__name__": "traces_spanmetrics_calls_total", **base}
    # registry/counter.go: a new series first gets a 0 sample at getEndOfLastMinuteMs, the
    # collection time truncated to the minute minus one second.
    (zero_v, zero_t), (one_v, one_t) = calls.samples
    assert (zero_v, one_v) == (0.0, 1.0)
    assert before <= one_t <= after
    assert zero_t == one_t - one_t % 60_000 - 1_000
    buckets = _by_name(req.series, "traces_spanmetrics_latency_bucket")
    assert [b.labels["le"] for b in buckets] == LE  # spanmetrics: 0.002*2^n, FormatFloat 'f' -1
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
    # histogram.go: the new-series 0 goes to _count and _bucket, not to _sum.
    assert lsum.samples == [(0.003, one_t)]
    assert lcount.samples == [(0.0, zero_t), (1.0, one_t)]
    (size,) = _by_name(req.series, "traces_spanmetrics_size_total")
    # spanmetrics.go: span.Size(), the protobuf size of the span as sent.
    assert size.samples[-1][0] == span_size
    assert span_size > 60  # the attributes are in it
    # Second collection: no new-series zero sample, exemplars were cleared.
    r.app.generator.collect_and_write()
    second = rw_receiver.requests[1].series
    (calls2,) = _by_name(second, "traces_spanmetrics_calls_total")
    assert len(calls2.samples) == 1 and calls2.samples[0][0] == 1.0
    assert not any(s.exemplars for s in second)
    lbl = {
        "tenant": "single-tenant",
        "remote_name": _remote_name(rw_receiver.url),
        "url": rw_receiver.url,
    }
    sent = sum(len(s.samples) for q in rw_receiver.requests for s in q.series)
    assert r.app.metrics.value("prometheus_remote_storage_samples_total", **lbl) == sent
    assert r.app.metrics.value("prometheus_remote_storage_exemplars_total", **lbl) == 1
    assert r.app.metrics.value("prometheus_remote_storage_samples_pending", **lbl) == 0
    # registry.go: 1 calls + 1 size counter + 17 latency histogram series.
    active = {"tenant": "single-tenant"}
    assert r.app.metrics.value("tempo_metrics_generator_registry_active_series", **active) == 19
    assert (
        r.app.metrics.value("tempo_metrics_generator_registry_series_added_total", **active) == 19
    )
    assert r.app.metrics.value("tempo_metrics_generator_registry_collections_total", **active) == 2


def _remote_name(url: str) -> str:
    return RemoteWrite(url).remote_name


def test_exemplars_are_sent_even_without_send_exemplars(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    """Tempo 2.9.0 sets SendExemplars = true on every remote_write (storage/config_util.go)."""
    r = make_standin(remote_write=(RemoteWrite(rw_receiver.url, send_exemplars=False),))
    _one_server_span(r)
    r.app.generator.collect_and_write()
    assert [len(s.exemplars) for s in rw_receiver.all_series() if s.exemplars] == [1]


def test_max_active_series_limits_new_series(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    """registry.go onAddMetricSeries: a series that would pass max_active_series is not created
    and counted once in series_limited_total (a histogram asks for its 17 series at once)."""
    r = make_standin(
        remote_write=(RemoteWrite(rw_receiver.url),),
        processors=("span-metrics",),
        max_active_series=18,
    )
    _one_server_span(r)
    r.app.generator.collect_and_write()
    names = {s.labels["__name__"] for s in rw_receiver.all_series()}
    # calls (1) + latency (17) fit; size_total would be the 19th.
    assert "traces_spanmetrics_size_total" not in names
    assert "traces_spanmetrics_calls_total" in names
    m = {"tenant": "single-tenant"}
    assert r.app.metrics.value("tempo_metrics_generator_registry_series_limited_total", **m) == 1
    assert r.app.metrics.value("tempo_metrics_generator_registry_max_active_series", **m) == 18
    assert r.app.metrics.value("tempo_metrics_generator_registry_active_series", **m) == 18


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
    # instance.go preprocessSpans: both dropped from the generator and counted.
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
    # ... and TraceQL metrics (local-blocks) do not count it (the slack applies to every processor).
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
    # servicegraphs: edges still waiting for a pair expire after `wait` (10 s); force that.
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
    assert les == [
        "0.1",
        "0.2",
        "0.4",
        "0.8",
        "1.6",
        "3.2",
        "6.4",
        "12.8",
        "+Inf",
    ]  # servicegraphs/config.go
    # servicegraphs.go: "edges" counts new entries in the edge store (one per pair, plus one
    # per span left alone); "expired_edges" only those that could not become a virtual node.
    sg = "tempo_metrics_generator_processor_service_graphs_"
    assert r.app.metrics.value(sg + "edges", tenant="single-tenant") == 5
    assert r.app.metrics.value(sg + "expired_edges", tenant="single-tenant") == 1


def _rw_metric(r: Running, name: str, url: str) -> float:
    lbl = {"tenant": "single-tenant", "remote_name": _remote_name(url), "url": url}
    return float(r.app.metrics.value(f"prometheus_remote_storage_{name}", **lbl))


def test_a_recoverable_failure_is_retried_until_it_succeeds(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    """queue_manager.go sendSamplesWithBackoff: a 5xx is recoverable, so the same batch is
    retried with backoff (samples_total per attempt, samples_retried_total per failed attempt)
    and nothing counts as failed."""
    r = make_standin(remote_write=(RemoteWrite(rw_receiver.url),))
    _one_server_span(r)
    rw_receiver.status = 503
    series = r.app.generator.collect()
    n = sum(len(s.samples) for s in series)
    assert not r.app.generator.flush(timeout=0.5)  # still retrying
    retried = _rw_metric(r, "samples_retried_total", rw_receiver.url)
    assert retried >= 2 * n and retried % n == 0
    assert _rw_metric(r, "samples_failed_total", rw_receiver.url) == 0
    assert _rw_metric(r, "samples_pending", rw_receiver.url) == n
    assert any("failed" in line and "retry=yes" in line for line in r.lines)
    rw_receiver.status = 204
    assert r.app.generator.flush(timeout=10)
    (req,) = rw_receiver.requests
    assert sum(len(s.samples) for s in req.series) == n
    assert _rw_metric(r, "samples_total", rw_receiver.url) == retried + n
    assert _rw_metric(r, "samples_pending", rw_receiver.url) == 0
    assert _rw_metric(r, "queue_highest_sent_timestamp_seconds", rw_receiver.url) > 0
    highest = {"tenant": "single-tenant"}
    assert (
        r.app.metrics.value("prometheus_remote_storage_highest_timestamp_in_seconds", **highest) > 0
    )
    # A collection never fails because of remote write (it appends to the WAL).
    collections_failed = "tempo_metrics_generator_registry_collections_failed_total"
    assert r.app.metrics.value(collections_failed, tenant="single-tenant") == 0


def test_a_non_recoverable_failure_drops_the_batch(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    """A 400 (what Prometheus answers for an out-of-order sample) is not retried: the batch is
    lost and counted in samples_failed_total; the next collection is sent on its own."""
    r = make_standin(remote_write=(RemoteWrite(rw_receiver.url),))
    _one_server_span(r)
    rw_receiver.status = 400
    series = r.app.generator.collect()
    n = sum(len(s.samples) for s in series)
    assert r.app.generator.flush(timeout=10)
    assert _rw_metric(r, "samples_failed_total", rw_receiver.url) == n
    assert _rw_metric(r, "exemplars_failed_total", rw_receiver.url) == 1
    assert _rw_metric(r, "samples_retried_total", rw_receiver.url) == 0
    assert any("retry=no: server returned HTTP status 400" in line for line in r.lines)
    rw_receiver.status = 204
    r.app.generator.collect_and_write()
    (req,) = rw_receiver.requests
    (calls,) = _by_name(req.series, "traces_spanmetrics_calls_total")
    assert (
        len(calls.samples) == 1
    )  # the series is no longer new: its 0 sample went with the lost batch


def test_unreachable_remote_write_never_crashes(make_standin: Callable[..., Running]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api/v1/write"
    r = make_standin(remote_write=(RemoteWrite(url, send_exemplars=True),))
    _one_server_span(r)
    r.app.generator.collect()
    assert not r.app.generator.flush(timeout=0.3)
    lines = [line for line in r.lines if line.startswith(f"remote_write url={url} failed")]
    assert len(lines) >= 2
    assert "retry=yes" in lines[0] and "ConnectionRefusedError" in lines[0]
    # A closed port is a recoverable error for Prometheus's queue: retried, never "failed".
    assert _rw_metric(r, "samples_retried_total", url) > 0
    assert _rw_metric(r, "samples_failed_total", url) == 0
    assert r.http.get("/ready").text == "ready\n"
    started = time.monotonic()
    r.app.stop()  # gives up after remote_write_flush_deadline (2 s in these tests)
    assert time.monotonic() - started < 10
    assert any("samples unsent after remote_write_flush_deadline=2s" in line for line in r.lines)


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
