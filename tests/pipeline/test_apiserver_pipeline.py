"""The apiserver leg against the real local kube-apiserver 1.34, collector, Tempo stand-in and
Prometheus (the ``local_pipeline`` fixture), in each credential mode, and its failures.

Contexts of the generated kubeconfig (tracecheck/stack/local/pki.py): ``privileged`` (client
certificate, O=system:masters), ``viewer`` (plain user bound to ClusterRole view), ``monitoring``
(a token for a user in group system:monitoring).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tracecheck.backends.apiserver import ApiserverClient, load_credentials
from tracecheck.backends.tempo import TempoClient
from tracecheck.config import Settings, load_settings
from tracecheck.errors import ConfigError, ExitCode
from tracecheck.results import Report, Status
from tracecheck.smoke.apiserver_checks import LATENCY_TABLE, leg_ids
from tracecheck.smoke.plan import probe, smoke
from tracecheck.stack.local import LocalStack
from tracecheck.stack.tracingconfig import check_tracing_config

APISERVER = "https://127.0.0.1:6443"
REQUEST_SPANS = {
    "GET /api/v1/namespaces/{:namespace}/namespaces/{:name}",  # /api/v1/namespaces/default
    "GET /api/v1/namespaces/{:namespace}/pods",  # the pod list
    "GET",  # /readyz and /version (non-resource requests)
}


def settings_for(kubeconfig: Path | str, context: str, **flags: Any) -> Settings:
    return load_settings(
        flags={"apiserver.kubeconfig": str(kubeconfig), "apiserver.context": context, **flags}
    )


def statuses(report: Report) -> dict[str, Status]:
    return {r.name: r.status for r in report.results}


def failures(report: Report) -> list[tuple[str, str, str]]:
    return [(r.name, r.status.value, r.detail) for r in report.results if not r.ok]


def configured_rate(stack: LocalStack) -> int:
    """samplingRatePerMillion of the running apiserver (its rendered tracing config)."""
    doc = yaml.safe_load((stack.state_dir / "configs" / "tracing-config.yaml").read_text())
    return int(doc["samplingRatePerMillion"])


# -- the three credential modes -----------------------------------------------------------------


def test_privileged_requests_are_children_of_our_spans(local_pipeline: LocalStack) -> None:
    report = probe(settings_for(local_pipeline.kubeconfig, "privileged"))
    assert all(s is Status.PASS for s in statuses(report).values()), failures(report)
    reach = report.result("apiserver.reachable")
    assert reach.data["mode"] == "parent-child"
    assert reach.data["version"] == "v1.34.4"
    assert reach.data["groups"] == ["system:masters", "system:authenticated"]
    trace = report.result("apiserver.trace")
    assert trace.data["found"] == trace.data["sent"] == 4
    # Independently of the check: Tempo holds a SERVER span of service apiserver under our
    # trace ID for each of our span IDs, as its child.
    trace_id = bytes.fromhex(report.trace_id)
    sent = [
        bytes.fromhex(r["span_id"]) for r in report.result("apiserver.requests").data["requests"]
    ]
    with TempoClient(load_settings().tempo) as tempo:
        spans = tempo.trace(trace_id).spans
    servers = {
        s.parent_span_id: s
        for s in spans
        if s.kind == "SPAN_KIND_SERVER" and s.service_name == "apiserver"
    }
    assert set(sent) <= set(servers)
    assert {servers[sid].name for sid in sent} == REQUEST_SPANS
    assert {servers[sid].attributes["http.target"] for sid in sent} == {
        "/api/v1/namespaces/default",
        "/api/v1/namespaces/default/pods?limit=1",
        "/readyz",
        "/version",
    }
    # The latency table has a row for each request span name, with real durations.
    rows = report.tables[LATENCY_TABLE]
    server_rows = [r for r in rows if r["kind"] == "SERVER"]
    assert {r["name"] for r in server_rows} == REQUEST_SPANS
    assert {(r["name"], r["verb"], r["resource"]) for r in server_rows} == {
        ("GET /api/v1/namespaces/{:namespace}/namespaces/{:name}", "GET", "namespaces"),
        ("GET /api/v1/namespaces/{:namespace}/pods", "LIST", "pods"),
        ("GET", "GET", ""),
    }
    assert sum(r["count"] for r in server_rows) == 4
    assert all(0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] < 5000 for r in server_rows)
    # Child spans are tabulated too: the etcd round trip of the pod list, for one.
    assert "etcdserverpb.KV/Range" in {r["name"] for r in rows}


def test_viewer_is_traced_by_link_at_the_sampling_rate(local_pipeline: LocalStack) -> None:
    rate = configured_rate(local_pipeline)
    assert rate > 0, "the local apiserver samples nothing: link mode cannot be shown"
    report = probe(settings_for(local_pipeline.kubeconfig, "viewer"))
    assert all(s is Status.PASS for s in statuses(report).values()), failures(report)
    reach = report.result("apiserver.reachable")
    assert reach.data["mode"] == "link"
    assert "user 'tracecheck-viewer' (system:authenticated) is in neither" in reach.detail
    requests = report.result("apiserver.requests").data["requests"]
    assert len(requests) == 50
    trace = report.result("apiserver.trace")
    found, sent = trace.data["found"], trace.data["sent"]
    assert sent == 50 and 1 <= found <= 50
    assert set(trace.data["traced_audit_ids"]) <= {r["audit_id"] for r in requests}
    # A generous band: with the default 250,000 per million a burst of 50 falls outside it
    # with probability below 1e-4 (binomial, k <= 2 or k >= 32).
    implied = trace.data["implied_rate_per_million"]
    assert rate / 5 <= implied <= min(1_000_000, rate * 2.5), (implied, rate, trace.detail)
    assert trace.detail.startswith(
        "link mode (tracecheck-viewer is in neither system:masters nor system:monitoring): "
        f"{found} of 50 requests traced"
    )
    assert "implied sampling rate ≈ " in trace.detail
    names = {r["name"] for r in report.tables[LATENCY_TABLE] if r["kind"] == "SERVER"}
    assert names and names <= REQUEST_SPANS


def test_monitoring_is_trusted_and_forbidden_paths_are_reported(
    local_pipeline: LocalStack,
) -> None:
    report = probe(settings_for(local_pipeline.kubeconfig, "monitoring"))
    reach = report.result("apiserver.reachable")
    assert reach.data["mode"] == "parent-child"
    assert reach.data["groups"] == ["system:monitoring", "system:authenticated"]
    requests = report.result("apiserver.requests")
    assert requests.status is Status.WARN
    assert (
        'GET /api/v1/namespaces/default: 403 namespaces "default" is forbidden: User '
        '"tracecheck-monitoring" cannot get resource "namespaces"' in requests.detail
    )
    assert "system:monitoring may only GET /readyz" in requests.hint
    by_path = {r["path"]: r["status"] for r in requests.data["requests"]}
    assert by_path == {
        "/api/v1/namespaces/default": 403,
        "/api/v1/namespaces/default/pods?limit=1": 403,
        "/readyz": 200,
        "/version": 200,
    }
    # Forbidden requests are traced too: authorization runs inside the traced handler.
    trace = report.result("apiserver.trace")
    assert trace.status is Status.PASS and trace.data["found"] == 4
    assert report.exit_code == ExitCode.OK


def test_monitoring_readyz_only_passes_cleanly(local_pipeline: LocalStack) -> None:
    report = probe(settings_for(local_pipeline.kubeconfig, "monitoring"), paths=["/readyz"])
    assert all(s is Status.PASS for s in statuses(report).values()), failures(report)
    assert report.result("apiserver.trace").data["span_names"] == ["GET"]


def test_writes_trace_the_etcd_txn_and_clean_up(local_pipeline: LocalStack) -> None:
    settings = settings_for(local_pipeline.kubeconfig, "privileged")
    report = probe(settings, requests=1, paths=["/readyz"], allow_writes=True, namespace="default")
    assert all(s is Status.PASS for s in statuses(report).values()), failures(report)
    requests = report.result("apiserver.requests").data["requests"]
    assert [(r["method"], r["status"]) for r in requests] == [
        ("GET", 200),
        ("POST", 201),
        ("DELETE", 200),
    ]
    names = {r["name"] for r in report.tables[LATENCY_TABLE]}
    assert {
        "POST /api/v1/namespaces/{:namespace}/configmaps",
        "DELETE /api/v1/namespaces/{:namespace}/configmaps/{:name}",
        "etcdserverpb.KV/Txn",
    } <= names
    # The ConfigMap is gone again.
    with ApiserverClient.from_settings(settings.apiserver) as api:
        assert api.send("GET", requests[2]["path"]).status == 404


def test_smoke_passes_with_the_apiserver_leg_in_both_modes(local_pipeline: LocalStack) -> None:
    for context in ("privileged", "viewer"):
        report = smoke(settings_for(local_pipeline.kubeconfig, context))
        assert report.exit_code == ExitCode.OK, (context, failures(report))
        assert report.result("apiserver.trace").status is Status.PASS
        assert report.tables[LATENCY_TABLE]


def test_the_running_tracing_config_passes_check_config(local_pipeline: LocalStack) -> None:
    assert check_tracing_config(local_pipeline.state_dir / "configs" / "tracing-config.yaml") == []


# -- failures ------------------------------------------------------------------------------------


def test_stopped_apiserver_is_exit_3_naming_the_hop(
    local_pipeline: LocalStack,
    stopped_component: Callable[[str], AbstractContextManager[None]],
) -> None:
    with stopped_component("kube-apiserver"):
        report = probe(settings_for(local_pipeline.kubeconfig, "privileged"))
    reach = report.result("apiserver.reachable")
    assert reach.status is Status.ERROR
    assert reach.detail == f"apiserver at {APISERVER} (context privileged): connection refused"
    assert reach.hop == "apiserver"
    assert report.result("apiserver.trace").status is Status.SKIP
    assert report.exit_code == ExitCode.BACKEND


def edited_kubeconfig(src: Path, dst: Path, context: str, **changes: Any) -> Path:
    """A copy of the local kubeconfig whose ``context`` user/cluster entries are changed."""
    doc = yaml.safe_load(src.read_text())
    ctx = next(c["context"] for c in doc["contexts"] if c["name"] == context)
    for entry in doc["users"]:
        if entry["name"] == ctx["user"] and "user" in changes:
            entry["user"] = changes["user"]
    for entry in doc["clusters"]:
        if entry["name"] == ctx["cluster"] and "server" in changes:
            entry["cluster"]["server"] = changes["server"]
    dst.write_text(yaml.safe_dump(doc))
    dst.chmod(0o600)
    return dst


GARBAGE = "garbage-token-0123456789abcdef"


def test_garbage_token_is_a_clear_authentication_error(
    local_pipeline: LocalStack, tmp_path: Path
) -> None:
    kc = edited_kubeconfig(
        local_pipeline.kubeconfig, tmp_path / "kc", "monitoring", user={"token": GARBAGE}
    )
    report = probe(settings_for(kc, "monitoring"))
    reach = report.result("apiserver.reachable")
    assert reach.status is Status.ERROR
    assert reach.detail == (
        f"apiserver at {APISERVER} (context monitoring): 401 Unauthorized: the credential was "
        "rejected (bearer token: expired or revoked token?)"
    )
    assert GARBAGE not in repr(report)
    assert report.exit_code == ExitCode.BACKEND


def test_unknown_context_is_exit_4(local_pipeline: LocalStack) -> None:
    with pytest.raises(ConfigError) as err:
        probe(settings_for(local_pipeline.kubeconfig, "nosuch"))
    assert err.value.exit_code == ExitCode.CONFIG
    assert str(err.value) == (
        f"apiserver at {local_pipeline.kubeconfig}: unknown context 'nosuch'; "
        "contexts: privileged, viewer, monitoring"
    )


@pytest.fixture
def plaintext_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_kubeconfig_at_a_plaintext_port_is_a_one_line_tls_error(
    local_pipeline: LocalStack, tmp_path: Path, plaintext_port: int
) -> None:
    server = f"https://127.0.0.1:{plaintext_port}"
    kc = edited_kubeconfig(local_pipeline.kubeconfig, tmp_path / "kc", "privileged", server=server)
    report = probe(settings_for(kc, "privileged"))
    reach = report.result("apiserver.reachable")
    assert reach.status is Status.ERROR
    assert reach.detail == (
        f"apiserver at {server} (context privileged): TLS handshake failed: the server answered "
        "in plaintext (is the kubeconfig's https:// URL pointing at a plain HTTP port?)"
    )
    assert report.exit_code == ExitCode.BACKEND


def test_whoami_for_each_context(local_pipeline: LocalStack) -> None:
    got = {}
    for context in ("privileged", "viewer", "monitoring"):
        with ApiserverClient(load_credentials(str(local_pipeline.kubeconfig), context)) as api:
            user = api.whoami()
            got[context] = (user.username, user.privileged_groups)
    assert got == {
        "privileged": ("tracecheck-admin", ("system:masters",)),
        "viewer": ("tracecheck-viewer", ()),
        "monitoring": ("tracecheck-monitoring", ("system:monitoring",)),
    }


def test_leg_ids_match_what_was_sent(local_pipeline: LocalStack) -> None:
    report = probe(settings_for(local_pipeline.kubeconfig, "privileged", **{"smoke.seed": 777}))
    trace_id, span_ids = leg_ids(777, 4)
    assert report.trace_id == trace_id.hex()
    sent = [r["span_id"] for r in report.result("apiserver.requests").data["requests"]]
    assert sent == [s.hex() for s in span_ids]
