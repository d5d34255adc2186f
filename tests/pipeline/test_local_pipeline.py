"""Proof that the local pipeline is real (issue 2), with plain httpx, not tracecheck's clients.

A request to the real kube-apiserver carrying a sampled ``traceparent`` produces a SERVER span
that the real OpenTelemetry Collector forwards to the Tempo stand-in, where it is found under our
trace ID; the span-metrics generated from the apiserver's spans then reach the real Prometheus.
"""

from __future__ import annotations

import base64
import re
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from tracecheck.polling import Probe, SystemClock, poll_until
from tracecheck.stack.local import LocalStack

if TYPE_CHECKING:
    from conftest import Endpoints


def client_for(kubeconfig: Path, context: str, tmp: Path) -> httpx.Client:
    """An httpx client authenticated as ``context`` of the generated kubeconfig."""
    doc = yaml.safe_load(kubeconfig.read_text())
    ctx = next(c["context"] for c in doc["contexts"] if c["name"] == context)
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
    ca = tmp / "ca.crt"
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    tls = ssl.create_default_context(cafile=str(ca))
    headers = {}
    if "client-certificate-data" in user:
        cert, key = tmp / f"{context}.crt", tmp / f"{context}.key"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        key.chmod(0o600)
        tls.load_cert_chain(str(cert), str(key))
    else:
        headers["Authorization"] = f"Bearer {user['token']}"
    return httpx.Client(
        base_url=cluster["server"], verify=tls, headers=headers, timeout=10.0, trust_env=False
    )


@pytest.fixture
def privileged(local_kubeconfig: Path, tmp_path: Path) -> Iterator[httpx.Client]:
    with client_for(local_kubeconfig, "privileged", tmp_path) as client:
        yield client


def sent_spans(metrics_url: str) -> float:
    """Sum of the collector's ``otelcol_exporter_sent_spans`` for its otlp exporter (the name
    has ``_total`` when telemetry readers are configured: docs/reference/collector.md §6)."""
    text = httpx.get(metrics_url, timeout=5.0, trust_env=False).text
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"otelcol_exporter_sent_spans(?:_total)?\{([^}]*)\} (\S+)$", line)
        if m and 'exporter="otlp"' in m.group(1):
            total += float(m.group(2))
    return total


def attr(attributes: list[dict[str, Any]], key: str) -> Any:
    for a in attributes:
        if a["key"] == key:
            return next(iter(a["value"].values()))
    return None


def test_privileged_request_is_traced_through_the_collector_into_tempo(
    privileged: httpx.Client, endpoints: Endpoints
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    before = sent_spans(endpoints.collector_metrics)
    resp = privileged.get(
        "/api/v1/namespaces/default", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
    )
    assert resp.status_code == 200
    assert resp.json()["metadata"]["name"] == "default"

    def probe() -> Probe[dict[str, Any]]:
        got = httpx.get(f"{endpoints.tempo}/api/v2/traces/{trace_id}", trust_env=False)
        # v2 answers 200 with an empty trace when it is missing: found means non-empty
        # resourceSpans (docs/reference/tempo.md §4.3).
        spans = got.json().get("trace", {}).get("resourceSpans", [])
        return Probe(bool(spans), got.json(), f"HTTP {got.status_code}, {len(spans)} batches")

    # The apiserver batches spans for up to 5 s, the collector for 200 ms
    # (docs/reference/apiserver.md §3).
    outcome = poll_until(probe, 30.0, SystemClock(), initial=0.2, cap=1.0)
    assert outcome.ok, f"trace {trace_id} not in the stand-in: {outcome.seen}"
    assert outcome.value is not None
    servers = [
        (batch, span)
        for batch in outcome.value["trace"]["resourceSpans"]
        for scope in batch["scopeSpans"]
        for span in scope["spans"]
        if span["kind"] == "SPAN_KIND_SERVER"
    ]
    assert servers, "no SERVER span in the trace"
    batch, span = servers[0]
    assert attr(batch["resource"]["attributes"], "service.name") == "apiserver"
    # Proto3 JSON: IDs are base64 (docs/reference/tempo.md §4.2). Our traceparent became the parent.
    assert base64.b64decode(span["traceId"]).hex() == trace_id
    assert base64.b64decode(span["parentSpanId"]).hex() == parent_id
    assert span["name"].startswith("GET /api/v1/namespaces")
    assert sent_spans(endpoints.collector_metrics) > before


@pytest.mark.slow
def test_apiserver_span_metrics_reach_prometheus(
    privileged: httpx.Client, endpoints: Endpoints
) -> None:
    query = 'traces_spanmetrics_calls_total{service="apiserver"}'
    # Samples written after this test's own traced requests: series left from an earlier run
    # stay queryable for Prometheus's 5 min lookback even when the stand-in is down.
    since = time.time()
    for _ in range(3):
        traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        resp = privileged.get("/api/v1/namespaces/default", headers={"traceparent": traceparent})
        assert resp.status_code == 200

    def instant(expr: str) -> list[dict[str, Any]]:
        got = httpx.get(
            f"{endpoints.prometheus}/api/v1/query", params={"query": expr}, trust_env=False
        )
        return list(got.json()["data"]["result"])

    def probe() -> Probe[list[dict[str, Any]]]:
        result = instant(query)
        newest = instant(
            'max(timestamp(traces_spanmetrics_calls_total{service="apiserver",'
            'span_kind="SPAN_KIND_SERVER"}))'
        )
        fresh = bool(newest) and float(newest[0]["value"][1]) > since
        seen = f"{len(result)} series, newest sample {newest[0]['value'][1] if newest else '-'}"
        return Probe(bool(result) and fresh, result, seen)

    # collection_interval 15 s + remote-write batching + scrape-free ingest
    # (docs/reference/tempo.md §11.3).
    outcome = poll_until(probe, 90.0, SystemClock(), initial=1.0, cap=2.0)
    assert outcome.ok, f"{query}: {outcome.seen}"
    assert outcome.value is not None
    kinds = {s["metric"]["span_kind"] for s in outcome.value}
    assert "SPAN_KIND_SERVER" in kinds
    assert all(float(s["value"][1]) > 0 for s in outcome.value)
    assert {s["metric"].get("source") for s in outcome.value} == {"tempo"}


@pytest.mark.slow
def test_prometheus_scrapes_the_apiserver_with_the_monitoring_token(endpoints: Endpoints) -> None:
    def probe() -> Probe[str]:
        got = httpx.get(
            f"{endpoints.prometheus}/api/v1/query",
            params={"query": 'up{job="apiserver"}'},
            trust_env=False,
        )
        result = got.json()["data"]["result"]
        value = result[0]["value"][1] if result else ""
        return Probe(value == "1", value, f"up={value or 'none'}")

    outcome = poll_until(probe, 45.0, SystemClock(), initial=1.0, cap=2.0)
    assert outcome.ok, outcome.seen


def test_viewer_and_monitoring_contexts_have_their_rights(
    local_kubeconfig: Path, tmp_path: Path
) -> None:
    with client_for(local_kubeconfig, "viewer", tmp_path) as viewer:
        assert viewer.get("/api/v1/namespaces/default").status_code == 200
        assert viewer.get("/api/v1/namespaces/default/secrets").status_code == 403
    with client_for(local_kubeconfig, "monitoring", tmp_path) as monitoring:
        assert monitoring.get("/readyz").text == "ok"
        assert monitoring.get("/metrics").status_code == 200
        assert monitoring.get("/api/v1/namespaces/default").status_code == 403


def test_status_lists_every_component_ready(local_pipeline: LocalStack) -> None:
    doc = local_pipeline.status().to_json()
    assert doc["ready"] is True
    assert [c["name"] for c in doc["components"]] == [
        "etcd",
        "prometheus",
        "tempo",
        "collector",
        "collector-spanmetrics",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    ]
    assert all(isinstance(c["pid"], int) for c in doc["components"])
    versions = {c["name"]: c["version"] for c in doc["components"]}
    assert versions["kube-apiserver"] == "v1.34.4"
    assert versions["kube-controller-manager"] == versions["kube-scheduler"] == "v1.34.4"
    assert versions["kwok"] == "v0.8.0"
    assert versions["etcd"] == "v3.6.14"


def test_up_again_leaves_ready_components_alone(local_pipeline: LocalStack) -> None:
    before = {c.name: c.pid for c in local_pipeline.status().components}
    after = {c.name: c.pid for c in local_pipeline.up().components}
    assert after == before


def test_a_stopped_component_is_down_then_restarted(
    local_pipeline: LocalStack,
    stopped_component: Callable[[str], AbstractContextManager[None]],
) -> None:
    health = "http://127.0.0.1:13134/"
    with stopped_component("collector-spanmetrics"):
        during = {c.name: c for c in local_pipeline.status().components}
        assert during["collector-spanmetrics"].pid is None
        assert during["collector-spanmetrics"].detail == "not running"
        with pytest.raises(httpx.ConnectError):
            httpx.get(health, trust_env=False)
    after = {c.name: c for c in local_pipeline.status().components}
    assert after["collector-spanmetrics"].ready
    assert httpx.get(health, trust_env=False).status_code == 200
