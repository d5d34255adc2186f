"""`tracecheck smoke` against the local pipeline built from real parts.

Healthy: every check passes. Faults: each component stopped in turn makes the check of its hop
fail or error (exit 1 or 3) within that check's deadline, with the hop named. Both span-metric
naming flavours are produced by real parts: Tempo's (the stand-in's metrics-generator) and the
OpenTelemetry collector's spanmetrics connector (the second local collector).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tracecheck.config import load_settings
from tracecheck.polling import Probe, SystemClock, poll_until
from tracecheck.query.adhoc import run_promql
from tracecheck.results import Status
from tracecheck.smoke.plan import smoke
from tracecheck.stack.local import LocalStack

SPANMETRICS_COLLECTOR = [
    "--collector-endpoint",
    "127.0.0.1:4327",
    "--collector-http-url",
    "http://127.0.0.1:4328",
    "--collector-health-url",
    "http://127.0.0.1:13134/",
    "--collector-metrics-url",
    "http://127.0.0.1:8889/metrics",
]


#: Request timeouts far above the deadlines: a check that waited for a request to time out
#: instead of its deadline would show it.
SLOW_REQUESTS = {
    f"TRACECHECK_{system}_TIMEOUT": "60" for system in ("COLLECTOR", "TEMPO", "PROMETHEUS")
}


def run_cli(
    kubeconfig: Path, *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACECHECK_")}
    env.update(extra)
    env["KUBECONFIG"] = str(kubeconfig)
    p = subprocess.run(
        [sys.executable, "-m", "tracecheck", "smoke", "--output", "json", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout), p.stderr


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def unique_services() -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"--client-service=tc-client-{tag}", f"--server-service=tc-server-{tag}"]


def test_healthy_pipeline_every_check_passes(local_pipeline: LocalStack) -> None:
    settings = load_settings(flags={"apiserver.kubeconfig": str(local_pipeline.kubeconfig)})
    report = smoke(settings)
    statuses = {r.name: r.status for r in report.results}
    assert statuses and all(s is Status.PASS for s in statuses.values()), [
        (r.name, r.status.value, r.detail) for r in report.results if r.status is not Status.PASS
    ]
    assert {"apiserver.trace", "tempo.search", "prometheus.exemplars"} <= set(statuses)
    assert int(report.exit_code) == 0
    latency = {row["stage"]: row["delay_s"] for row in report.tables["pipeline_latency"]}
    assert all(
        isinstance(latency[k], float) for k in ("tempo.trace_by_id", "prometheus.span_metrics")
    )
    assert report.tables["apiserver_latency"], "the apiserver latency table has rows"
    assert report.target["tempo_version"].startswith("2.9")
    assert report.target["span_metrics_naming"] == "tempo"


def test_otlp_http_protocol(local_pipeline: LocalStack) -> None:
    code, report, _ = run_cli(
        local_pipeline.kubeconfig, "--protocol", "http", "--only", "tempo", *unique_services()
    )
    assert code == 0
    send = checks(report)["send"]
    assert send["status"] == "PASS" and "over http to http://localhost:4318" in send["detail"]
    assert checks(report)["tempo.trace_by_id"]["status"] == "PASS"


@pytest.mark.parametrize("naming", ["otel", "auto"])
def test_span_metrics_from_the_collector_connector(local_pipeline: LocalStack, naming: str) -> None:
    services = unique_services()
    code, report, _ = run_cli(
        local_pipeline.kubeconfig,
        *SPANMETRICS_COLLECTOR,
        "--span-metrics-naming",
        naming,
        "--skip",
        "apiserver",
        *services,
    )
    by_name = checks(report)
    assert code == 0, [(c["name"], c["status"], c["detail"]) for c in report["checks"]]
    sm = by_name["prometheus.span_metrics"]
    assert sm["status"] == "PASS"
    if naming == "otel":
        # Only the connector's family is watched: traces_span_metrics_*, label service_name.
        assert sm["data"]["naming"] == "otel"
        assert "traces_span_metrics_calls_total{service_name=" in sm["detail"]
    else:
        # The spans reach Tempo too, so both families rise; auto takes the first to show them.
        assert sm["data"]["naming"] in ("otel", "tempo")
    assert by_name["prometheus.service_graph"]["status"] == "PASS"
    # Whichever family auto picked, the connector must have counted this run's SERVER spans:
    # in auto mode a broken connector would otherwise pass on Tempo's family alone.
    settings = load_settings()
    selector = f'traces_span_metrics_calls_total{{service_name="{services[1].split("=", 1)[1]}"}}'

    def counted() -> Probe[float]:
        table = run_promql(settings, f"sum({selector})")
        total = float(table.rows[0]["value"]) if table.rows else 0.0
        return Probe(total >= 4, total, f"{selector}: {total:g}")

    outcome = poll_until(counted, 90.0, SystemClock(), initial=0.5, cap=3.0)
    assert outcome.ok, f"the spanmetrics connector did not count the spans: {outcome.seen}"
    assert outcome.value == 4.0  # the synthetic trace has 4 spans in tracecheck-server


FAULTS = [
    # component, the check that must name the hop, its status, exit code
    ("collector", "preflight.collector", "ERROR", 3),
    ("tempo", "preflight.tempo", "ERROR", 3),
    ("prometheus", "preflight.prometheus", "ERROR", 3),
]


@pytest.mark.parametrize(("component", "check", "status", "code"), FAULTS)
def test_a_stopped_component_is_named(
    local_pipeline: LocalStack,
    stopped_component: Callable[[str], AbstractContextManager[None]],
    component: str,
    check: str,
    status: str,
    code: int,
) -> None:
    deadlines = ["--deadline", "trace_by_id=5", "--deadline", "preflight=3"]
    with stopped_component(component):
        got, report, _ = run_cli(
            local_pipeline.kubeconfig,
            "--skip",
            "apiserver",
            *deadlines,
            *unique_services(),
            env=SLOW_REQUESTS,
        )
    by_name = checks(report)
    assert got == code
    failing = by_name[check]
    assert failing["status"] == status
    assert component.split("-")[0] in failing["detail"] and "refused" in failing["detail"]
    assert failing["hint"]
    # Bounded by its 3 s deadline, not by the 60 s request timeout: the margin is wide enough
    # for any load on the machine (how fast it is, is a benchmark's question).
    assert failing["deadline_s"] == 3 and failing["elapsed_s"] < 3 + 20
    if component == "tempo":
        # The collector still accepts the spans but cannot export them to Tempo.
        exported = by_name["collector.exported"]
        assert exported["status"] == "FAIL" and "did not export" in exported["hint"]
        assert exported["deadline_s"] == 5 and exported["elapsed_s"] < 5 + 20
        assert by_name["tempo.trace_by_id"]["status"] == "SKIP"
    if component == "collector":
        assert by_name["send"]["status"] == "SKIP"
