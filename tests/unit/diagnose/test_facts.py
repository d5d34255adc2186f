"""Inspection against real HTTP servers that answer as Tempo, Prometheus and the collector do
(docs/reference/tempo.md §3, §12, §18; prometheus.md §2, §10; collector.md §5-§6)."""

from __future__ import annotations

from typing import Any

from servers import TestServer

from tracecheck.backends import Backends
from tracecheck.backends.exposition import parse_exposition
from tracecheck.config import load_settings
from tracecheck.diagnose.facts import (
    inspect,
    parse_readyz,
    parse_status_config,
    read_collector,
    read_prometheus,
    read_tempo,
    tempo_metric_facts,
)
from tracecheck.diagnose.tracing import endpoint_address, find_local_apiserver

STATUS_CONFIG = """GET /status/config
---
distributor:
  receivers:
    otlp:
      protocols:
        grpc:
          endpoint: 127.0.0.1:4417
metrics_generator:
  storage:
    remote_write:
    - url: http://127.0.0.1:9090/api/v1/write
      send_exemplars: false
overrides:
  defaults:
    metrics_generator:
      processors:
      - service-graphs
      - local-blocks
"""

TEMPO_METRICS = """# TYPE process_start_time_seconds gauge
process_start_time_seconds 1796173224
tempo_receiver_accepted_spans{receiver="otlp",transport="grpc"} 10
tempo_receiver_refused_spans{receiver="otlp",transport="grpc"} 2
tempo_distributor_spans_received_total{tenant="single-tenant"} 12
tempo_discarded_spans_total{reason="trace_too_large",tenant="single-tenant"} 3
tempo_metrics_generator_active_processors{processor="span-metrics",tenant="single-tenant"} 0
tempo_metrics_generator_active_processors{processor="service-graphs",tenant="single-tenant"} 1
tempo_metrics_generator_active_processors{processor="span-metrics",tenant="other"} 1
tempo_metrics_generator_spans_discarded_total{reason="outside_metrics_ingestion_slack",\
tenant="single-tenant"} 4
tempo_metrics_generator_registry_collections_total{tenant="single-tenant"} 7
prometheus_remote_storage_samples_total{tenant="single-tenant",url="http://p/w"} 100
prometheus_remote_storage_samples_failed_total{tenant="single-tenant",url="http://p/w"} 40
prometheus_remote_storage_samples_pending{tenant="single-tenant",url="http://p/w"} 5
"""


def test_status_config_gives_processors_remote_write_and_receivers() -> None:
    got = parse_status_config(STATUS_CONFIG)
    assert got["processors"] == ("service-graphs", "local-blocks")
    assert got["remote_write_urls"] == ("http://127.0.0.1:9090/api/v1/write",)
    assert got["send_exemplars"] == (False,)
    assert got["receivers"] == {"grpc": "127.0.0.1:4417"}
    # Tempo prints no processors key when the list is empty: no processor runs.
    assert parse_status_config("GET /status/config\n---\noverrides: {}\n")["processors"] == ()


def test_tempo_metrics_per_tenant() -> None:
    got = tempo_metric_facts(parse_exposition(TEMPO_METRICS), "single-tenant")
    assert got["process_start"] == 1796173224
    assert (got["receiver_accepted"], got["receiver_refused"]) == (10, 2)
    assert got["active_processors"] == {"span-metrics": 0, "service-graphs": 1}
    assert got["generator"] and got["collections"] == 7
    assert got["generator_discarded"] == {"outside_metrics_ingestion_slack": 4}
    (rw,) = got["remote_write"]
    assert (rw.url, rw.samples, rw.failed, rw.pending) == ("http://p/w", 100, 40, 5)


def test_readyz_verbose_lines() -> None:
    body = "[+]ping ok\n[-]etcd failed: reason withheld\n[+]log ok\nreadyz check failed\n"
    assert parse_readyz(body) == (
        ("ping", True, "ok"),
        ("etcd", False, "failed: reason withheld"),
        ("log", True, "ok"),
    )


def test_tracing_endpoint_spellings() -> None:
    assert endpoint_address("127.0.0.1:4317") == ("127.0.0.1", 4317)
    assert endpoint_address("dns:///collector.local:4317") == ("collector.local", 4317)
    assert endpoint_address("localhost") is None  # no port: gRPC would dial 443
    assert endpoint_address("unix:///run/otel.sock") is None


def test_a_local_apiserver_is_found_by_its_secure_port(tmp_path: Any) -> None:
    proc = tmp_path / "proc"
    for pid, argv in (
        ("10", ["/bin/kube-apiserver", "--secure-port=6443", "--tracing-config-file=/x.yaml"]),
        ("11", ["/bin/kube-apiserver", "--secure-port=16443"]),
        ("12", ["/usr/bin/etcd"]),
    ):
        (proc / pid).mkdir(parents=True)
        (proc / pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    assert find_local_apiserver(16443, proc) == (11, ["/bin/kube-apiserver", "--secure-port=16443"])
    assert find_local_apiserver(6443, proc)[0] == 10  # type: ignore[index]
    assert find_local_apiserver(1, proc) is None


def _serve(server: TestServer, routes: dict[str, tuple[int, str]]) -> None:
    def handler(rec: Any) -> tuple[int, dict[str, str], bytes]:
        path = rec.path.split("?")[0]
        status, body = routes.get(path, (404, "404 page not found"))
        kind = "application/json" if body.startswith("{") else "text/plain"
        return status, {"Content-Type": kind}, body.encode()

    server.handler = handler


def test_read_tempo_over_http(http_server: TestServer) -> None:
    _serve(
        http_server,
        {
            "/ready": (200, "ready\n"),
            "/api/status/buildinfo": (200, '{"version":"2.9.0","revision":"x"}'),
            "/metrics": (200, TEMPO_METRICS),
            "/status/config": (200, STATUS_CONFIG),
            "/api/v2/search/tag/resource.service.name/values": (
                200,
                '{"tagValues":[{"type":"string","value":"tracecheck-server"}]}',
            ),
        },
    )
    settings = load_settings(flags={"tempo.url": http_server.url})
    with Backends(settings) as b:
        t = read_tempo(b, timeout=2)
    assert t.ready.ok and t.version == "2.9.0"
    assert t.process_start == 1796173224 and t.processors == ("service-graphs", "local-blocks")
    assert t.services == ("tracecheck-server",)
    assert t.remote_write_totals().failed == 40


def test_read_prometheus_flags_runtimeinfo_and_its_write_answers(http_server: TestServer) -> None:
    _serve(
        http_server,
        {
            "/-/ready": (200, "Prometheus Server is Ready.\n"),
            "/api/v1/status/buildinfo": (200, '{"status":"success","data":{"version":"3.8.0"}}'),
            "/api/v1/status/flags": (
                200,
                '{"status":"success","data":{"web.enable-remote-write-receiver":"false",'
                '"enable-feature":"native-histograms"}}',
            ),
            "/api/v1/status/runtimeinfo": (
                200,
                '{"status":"success","data":{"startTime":"2026-12-02T01:00:23.459108983Z"}}',
            ),
            "/metrics": (
                200,
                'prometheus_http_requests_total{code="404",handler="/api/v1/write"} 3\n'
                'prometheus_http_requests_total{code="200",handler="/api/v1/query"} 9\n'
                'prometheus_tsdb_out_of_order_samples_total{type="float"} 2\n',
            ),
        },
    )
    settings = load_settings(flags={"prometheus.url": http_server.url})
    with Backends(settings) as b:
        p = read_prometheus(b, timeout=2)
    assert p.version == "3.8.0"
    assert p.remote_write_receiver is False and p.exemplar_storage is False
    assert p.start_time is not None and abs(p.start_time - 1796173223.459) < 0.01
    assert p.write_answers == {"404": 3} and p.out_of_order == 2


def test_a_component_that_is_down_is_a_fact_not_an_exception(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}"
    settings = load_settings(
        flags={
            "tempo.url": url,
            "prometheus.url": url,
            "collector.health_url": url + "/",
            "collector.metrics_url": url + "/metrics",
        }
    )
    got = inspect(settings, components=("collector", "tempo", "prometheus"), timeout=1)
    assert got.tempo is not None and got.tempo.ready.state == "unreachable"
    assert got.prometheus is not None and got.prometheus.ready.state == "unreachable"
    assert got.collector is not None and got.collector.health.state == "unreachable"
    assert "connection refused" in got.tempo.ready.detail


def test_read_collector_counts_queue_and_version(http_server: TestServer) -> None:
    metrics = (
        'otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"} 5\n'
        'otelcol_exporter_sent_spans_total{exporter="otlp"} 0\n'
        'otelcol_exporter_queue_size{data_type="traces",exporter="otlp"} 1\n'
        'otelcol_exporter_queue_capacity{data_type="traces",exporter="otlp"} 1000\n'
        'target_info{service_name="otelcol",service_version="0.144.0"} 1\n'
    )
    _serve(http_server, {"/": (200, "{}"), "/metrics": (200, metrics)})
    settings = load_settings(
        flags={
            "collector.health_url": http_server.url + "/",
            "collector.metrics_url": http_server.url + "/metrics",
        }
    )
    with Backends(settings) as b:
        c = read_collector(b, timeout=2)
    assert c.health.ok and c.version == "0.144.0"
    assert (c.accepted, c.sent, c.queue_size, c.queue_capacity) == (5, 0, 1, 1000)
    assert c.exporters == ("otlp",)
