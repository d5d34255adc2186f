"""What ``tracecheck doctor`` reads from Tempo (issue 9): the /status endpoints of
cmd/tempo/app/app.go statusHandler and the self-metrics of /metrics, under Tempo 2.9.0's names
(files of github.com/grafana/tempo at tag v2.9.0)."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
import yaml
from standin_helpers import RemoteWriteReceiver, Running, SpanSpec, export_request, send_grpc
from tempo_standin.config import RemoteWrite

T = "single-tenant"


def _yaml_after_header(text: str, endpoint: str) -> object:
    head, sep, body = text.partition("\n---\n")
    assert (head, sep) == (f"GET /status/{endpoint}", "\n---\n"), text[:80]
    return yaml.safe_load(body)


def test_status_config_shows_the_running_configuration(
    make_standin: Callable[..., Running],
) -> None:
    r = make_standin(
        processors=("service-graphs", "local-blocks"),
        remote_write=(
            RemoteWrite("http://u:pw@127.0.0.1:9/api/v1/write", headers=(("X-K", "v"),)),
        ),
        max_bytes_per_trace=1234,
    )
    resp = r.http.get("/status/config")
    assert (resp.status_code, resp.headers["content-type"]) == (200, "text/plain")
    doc = _yaml_after_header(resp.text, "config")
    assert isinstance(doc, dict)
    # The overrides the generator runs with: span-metrics is off here.
    generator = doc["overrides"]["defaults"]["metrics_generator"]
    assert generator["processors"] == ["service-graphs", "local-blocks"]
    assert doc["overrides"]["defaults"]["global"]["max_bytes_per_trace"] == 1234
    assert doc["metrics_generator"]["registry"]["collection_interval"] == "1h0m0s"
    assert doc["ingester"]["lifecycler"]["min_ready_duration"] == "0s"
    (rw,) = doc["metrics_generator"]["storage"]["remote_write"]
    assert rw["url"] == "http://u:xxxxx@127.0.0.1:9/api/v1/write"
    assert rw["headers"] == {"X-K": "<secret>"}
    assert doc["http_api_prefix"] == ""
    assert "multitenancy_enabled" not in doc  # omitempty when false
    diff = _yaml_after_header(r.http.get("/status/config", params={"mode": "diff"}).text, "config")
    assert isinstance(diff, dict)
    assert diff["overrides"]["defaults"]["global"] == {"max_bytes_per_trace": 1234}
    assert "http_api_prefix" not in diff
    defaults = _yaml_after_header(
        r.http.get("/status/config", params={"mode": "defaults"}).text, "config"
    )
    assert isinstance(defaults, dict)
    assert defaults["ingester"]["lifecycler"]["min_ready_duration"] == "15s"
    bad = r.http.get("/status/config", params={"mode": "nope"})
    assert (bad.status_code, bad.text) == (
        500,
        "unknown value for mode query parameter: nope\nGET /status/config\n",
    )


def test_status_sections(standin: Running) -> None:
    services = standin.http.get("/status/services").text
    assert services.startswith("GET /status/services\n+")
    assert re.search(r"\| ingester +\| Running +\| +\|", services)
    assert re.search(r"\| metrics-generator +\| Running +\|", services)
    version = standin.http.get("/status/version").text
    assert version.startswith("GET /status/version\ntempo, version 2.9.0 (branch: ")
    runtime = _yaml_after_header(standin.http.get("/status/runtime_config").text, "runtime_config")
    assert isinstance(runtime, dict)
    assert runtime["overrides"] == {}
    assert runtime["defaults"]["ingestion"]["max_traces_per_user"] == 10000
    endpoints = standin.http.get("/status/endpoints").text
    assert "| /api/v2/traces/{tid} " in endpoints
    everything = standin.http.get("/status").text
    sections = re.findall(r"^GET /status/(\w+)$", everything, re.M)
    assert sections == ["version", "services", "endpoints", "runtime_config", "config"]
    # Any other /status/<name> makes Tempo call a nil function: the connection is dropped.
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"http://127.0.0.1:{standin.app.http_port}/status/nope")


def test_span_metrics_off_the_way_tempo_turns_it_off(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    """overrides.defaults.metrics_generator.processors without span-metrics: no
    traces_spanmetrics_* series, and tempo_metrics_generator_active_processors says so."""
    r = make_standin(processors=("service-graphs",), remote_write=(RemoteWrite(rw_receiver.url),))
    send_grpc(r.grpc_port, export_request("svc", [SpanSpec(b"\x01" * 16, b"\x01" * 8, "op")]))
    r.app.generator.collect_and_write()
    assert not [s for s in rw_receiver.all_series() if "spanmetrics" in s.labels["__name__"]]
    text = r.http.get("/metrics").text
    active = "tempo_metrics_generator_active_processors"
    assert f'{active}{{processor="span-metrics",tenant="{T}"}} 0\n' in text
    assert f'{active}{{processor="service-graphs",tenant="{T}"}} 1\n' in text
    assert 'tempo_metrics_generator_spans_received_total{tenant="single-tenant"} 1\n' in text
    # With no processor at all the distributor does not forward to the generator.
    bare = make_standin(processors=())
    send_grpc(bare.grpc_port, export_request("svc", [SpanSpec(b"\x02" * 16, b"\x02" * 8, "op")]))
    text = bare.http.get("/metrics").text
    assert "tempo_metrics_generator_spans_received_total" not in text
    assert 'tempo_distributor_spans_received_total{tenant="single-tenant"} 1\n' in text


def test_metrics_exposition_names_labels_and_types(
    make_standin: Callable[..., Running], rw_receiver: RemoteWriteReceiver
) -> None:
    r = make_standin(remote_write=(RemoteWrite(rw_receiver.url),))
    send_grpc(r.grpc_port, export_request("svc", [SpanSpec(b"\x03" * 16, b"\x03" * 8, "op")]))
    r.app.generator.collect_and_write()
    text = r.http.get("/metrics").text
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    expected = {
        "process_start_time_seconds": "gauge",
        "tempo_build_info": "gauge",
        "tempo_limits_defaults": "gauge",
        "tempo_receiver_accepted_spans": "counter",
        "tempo_receiver_refused_spans": "counter",
        "tempo_distributor_spans_received_total": "counter",
        "tempo_distributor_bytes_received_total": "counter",
        "tempo_distributor_ingress_bytes_total": "counter",
        "tempo_discarded_spans_total": "counter",
        "tempo_ingester_traces_created_total": "counter",
        "tempo_ingester_live_traces": "gauge",
        "tempo_ingester_bytes_received_total": "counter",
        "tempo_metrics_generator_active_processors": "gauge",
        "tempo_metrics_generator_spans_received_total": "counter",
        "tempo_metrics_generator_spans_discarded_total": "counter",
        "tempo_metrics_generator_registry_active_series": "gauge",
        "tempo_metrics_generator_registry_max_active_series": "gauge",
        "tempo_metrics_generator_registry_series_limited_total": "counter",
        "tempo_metrics_generator_registry_collections_total": "counter",
        "tempo_metrics_generator_registry_collections_failed_total": "counter",
        "tempo_metrics_generator_processor_service_graphs_edges": "counter",
        "prometheus_remote_storage_samples_total": "counter",
        "prometheus_remote_storage_samples_failed_total": "counter",
        "prometheus_remote_storage_samples_retried_total": "counter",
        "prometheus_remote_storage_samples_pending": "gauge",
        "prometheus_remote_storage_exemplars_total": "counter",
        "prometheus_remote_storage_highest_timestamp_in_seconds": "gauge",
        "prometheus_remote_storage_queue_highest_sent_timestamp_seconds": "gauge",
    }
    assert {k: types.get(k) for k in expected} == expected
    assert 'tempo_limits_defaults{limit_name="max_bytes_per_trace"} 5000000\n' in text
    for reason in ("live_traces_exceeded", "trace_too_large", "unknown_error"):
        assert f'tempo_discarded_spans_total{{reason="{reason}",tenant="{T}"}} 0\n' in text
    for reason in ("outside_metrics_ingestion_slack", "span_metrics_filtered", "invalid_utf8"):
        assert (
            f'tempo_metrics_generator_spans_discarded_total{{reason="{reason}",tenant="{T}"}} 0\n'
            in text
        )
    name = RemoteWrite(rw_receiver.url).remote_name
    assert re.fullmatch(r"[0-9a-f]{6}", name)
    samples = sum(len(s.samples) for s in rw_receiver.all_series())
    line = (
        f'prometheus_remote_storage_samples_total{{remote_name="{name}",tenant="{T}",'
        f'url="{rw_receiver.url}"}} {samples}\n'
    )
    assert line in text
