"""`tracecheck watch` against the local pipeline built from real parts.

A watcher (the library, in a thread) on 127.0.0.1:9464 runs rounds every second; the local
Prometheus scrapes it (stack/local/substitutions.yaml adds the target) and is queried back with
tracecheck's own Prometheus client. Faults: Tempo, then the collector, stopped during a watch
flip the check of their hop within two rounds, the process keeps running, the shipped alert rule
fires on the real Prometheus for the broken hop, and the next round after the restart passes.
The span-metrics checks are skipped (they wait for the metrics-generator; not the point here).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib import resources
from typing import Any

import httpx
import jsonschema
from watch_support import (
    PROMETHEUS,
    SPAN_METRICS,
    WATCH_URL,
    loaded_rules,
    metric,
    rounds,
    running_watch,
    scrape,
    wait_for,
    watch_settings,
)

from tracecheck.backends.prometheus import PrometheusClient
from tracecheck.stack.local import LocalStack
from tracecheck.watch import Watcher


def promql(client: PrometheusClient, expr: str) -> dict[frozenset[tuple[str, str]], float]:
    result = client.query(expr, timeout=5)
    return {frozenset(s.labels.items()): s.value for s in result.samples}


def test_watch_rounds_are_scraped_by_prometheus_and_read_back_with_promql(
    local_pipeline: LocalStack,
) -> None:
    settings = watch_settings(local_pipeline, *SPAN_METRICS)
    schema = json.loads(resources.files("tracecheck").joinpath("schema/report-v1.json").read_text())
    run_ids: list[str] = []

    def new_report() -> dict[str, object] | None:
        reply = httpx.get(f"{WATCH_URL}/report.json", timeout=5)
        if reply.status_code != 200:
            return None
        data: dict[str, object] = reply.json()
        if data["run_id"] not in run_ids:
            run_ids.append(str(data["run_id"]))
            jsonschema.validate(data, schema)
        return data if len(run_ids) >= 3 else None

    with running_watch(settings, interval=1.0) as (_, lines):
        assert httpx.get(f"{WATCH_URL}/ready", timeout=5).status_code == 503
        last = wait_for("three rounds with their own run IDs", new_report, timeout=60, every=0.5)
        assert httpx.get(f"{WATCH_URL}/ready", timeout=5).status_code == 200
        s = scrape()
        # Rounds take ~6 s (TraceQL search waits for the ingester's idle period) at an interval
        # of 1 s: every round overran, none overlapped.
        assert rounds(s, "pass") >= 3 and rounds(s, "fail") == rounds(s, "error") == 0, lines
        assert metric(s, "tracecheck_round_overruns_total") == rounds(s)
        for check, hop in [
            ("send", "client -> collector"),
            ("tempo.trace_by_id", "collector -> tempo"),
            ("tempo.search", "tempo ingester -> search"),
            ("apiserver.trace", "apiserver -> collector -> tempo"),
        ]:
            assert metric(s, "tracecheck_check_status", check=check, hop=hop, status="PASS") == 1
            assert metric(s, "tracecheck_check_consecutive_failures", check=check, hop=hop) == 0
        skipped = {"check": "prometheus.span_metrics", "status": "SKIP"}
        assert (
            metric(
                s, "tracecheck_check_status", hop="tempo metrics-generator -> prometheus", **skipped
            )
            == 1
        )
        search = {"stage": "tempo.search", "hop": "tempo ingester -> search"}
        assert metric(s, "tracecheck_stage_delay_seconds_count", **search) >= 3
        assert metric(s, "tracecheck_stage_deadline_seconds", **search) == 30.0
        # The local credential is in system:masters: every apiserver request is traced.
        assert metric(s, "tracecheck_apiserver_traced_ratio") == 1.0
        versions = {
            k: v for (n, labels), _ in s.items() if n == "tracecheck_build_info" for k, v in labels
        }
        assert versions["tempo_version"] == "2.9.0"
        assert versions["prometheus_version"] == "3.8.0"
        assert versions["kubernetes_version"].startswith("v1.34.")
        assert last["tool"] == "tracecheck" and last["exit_code"] == 0
        assert len(set(run_ids)) == len(run_ids) >= 3

        # The local Prometheus scraped the watcher: read it back through tracecheck's client.
        client = PrometheusClient(settings.prometheus)
        try:
            passed = wait_for(
                "Prometheus holds tracecheck_rounds_total{result=pass} >= 2",
                lambda: [
                    v
                    for v in promql(
                        client, 'tracecheck_rounds_total{job="tracecheck-watch",result="pass"}'
                    ).values()
                    if v >= 2
                ],
                timeout=30,
            )
            assert passed[0] <= rounds(scrape(), "pass")
            status = promql(
                client,
                'tracecheck_check_status{job="tracecheck-watch",check="tempo.trace_by_id"} == 1',
            )
            assert [dict(labels)["status"] for labels in status] == ["PASS"]
            up = promql(client, 'up{job="tracecheck-watch"}')
            assert list(up.values()) == [1.0]
            # Every query of the dashboard's watch row answers with data.
            for expr in dashboard_row_queries():
                got = wait_for(expr, lambda e=expr: promql(client, e), timeout=30)  # type: ignore[misc]
                assert all(v == v for v in got.values()), (expr, got)  # no NaN
            # The round's trace ID rides along as an exemplar (OpenMetrics scrape), not a label.
            exemplars = client.query_exemplars(
                'tracecheck_stage_delay_seconds_bucket{stage="tempo.trace_by_id"}',
                start=last_start(last) - 120,
                end=last_start(last) + 120,
                timeout=5,
            )
            ids = {e.labels.get("traceID") for series in exemplars for e in series.exemplars}
            assert any(isinstance(i, str) and len(i) == 32 for i in ids), ids
        finally:
            client.close()
    assert lines[-1].startswith("tracecheck watch: stopped after ")


def dashboard_row_queries() -> list[str]:
    """The PromQL of the dashboard's "tracecheck watch" row."""
    from watch_support import REPO

    path = REPO / "stack" / "grafana" / "dashboards" / "apiserver-tracing.json"
    panels = json.loads(path.read_text(encoding="utf-8"))["panels"]
    start = next(i for i, p in enumerate(panels) if p["title"].endswith("(tracecheck watch)"))
    row = panels[start + 1 :]
    exprs = [t["expr"] for p in row for t in p.get("targets", ())]
    assert len(exprs) >= 6
    return exprs


def last_start(report: dict[str, object]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(report["started_at"]).replace("Z", "+00:00")).timestamp()


def test_a_stopped_component_flips_its_hop_fires_the_alert_and_recovers(
    local_pipeline: LocalStack,
    stopped_component: Callable[[str], AbstractContextManager[None]],
) -> None:
    loaded_rules(local_pipeline)
    # Fast rounds (~0.3 s; while a backend is down too): TraceQL search, the apiserver leg and
    # the collector's export counters (which wait out their deadline) are not the point here.
    skip = (*SPAN_METRICS, "tempo.search", "apiserver", "collector.exported")
    settings = watch_settings(local_pipeline, *skip)
    with running_watch(settings, interval=2.0) as (watcher, lines):
        wait_for("a passing round", lambda: rounds(scrape(), "pass") >= 1, timeout=30)
        try:
            fault(stopped_component, watcher, "tempo", "preflight.tempo", "tempo", alert=True)
            fault(stopped_component, watcher, "collector", "preflight.collector", "collector")
        finally:
            print("\n".join(lines), file=sys.stderr)  # the watcher's log, shown on failure
        s = scrape()
        assert rounds(s, "error") >= 4 and rounds(s, "pass") >= 3
    for hop in ("tempo", "collector"):
        assert any(" error in " in line and f"ERROR [{hop}]:" in line for line in lines), hop


#: The hops a stopped component breaks: its own, and the one into it (a round already past its
#: preflight when the component stops fails there instead).
HOPS = {
    "tempo": {"tempo", "collector -> tempo"},
    "collector": {"collector", "client -> collector"},
}


def fault(
    stopped_component: Callable[[str], AbstractContextManager[None]],
    watcher: Watcher,
    component: str,
    check: str,
    hop: str,
    *,
    alert: bool = False,
) -> None:
    """Stop ``component`` during the watch: within two rounds a check of its hops fails, then
    ``check`` ERRORs naming ``hop`` (and, with ``alert``, TracecheckPipelineBroken fires for
    ``hop``); once it is back, the first round started after its return passes ``check``."""

    def status_is(status: str) -> bool:
        labels = {"check": check, "hop": hop, "status": status}
        return metric(scrape(), "tracecheck_check_status", **labels) == 1

    def failing_hops() -> set[str]:
        return {
            dict(labels)["hop"]
            for (name, labels), v in scrape().items()
            if name == "tracecheck_check_status"
            and v == 1
            and dict(labels)["status"] in ("FAIL", "ERROR")
        }

    # Stop it just after a round ends, in the pause before the next (rounds take ~0.5 s of
    # the 2 s interval), so the first round to see the fault fails fast.
    ended = rounds(scrape())
    wait_for("a round boundary", lambda: rounds(scrape()) > ended, timeout=30, every=0.05)
    with stopped_component(component):
        before = rounds(scrape())
        broken = wait_for(f"a failing check on {HOPS[component]}", failing_hops, timeout=30)
        assert broken <= HOPS[component], broken
        assert rounds(scrape()) - before <= 2
        wait_for(f"{check} ERROR with hop {hop!r}", lambda: status_is("ERROR"), timeout=30)
        assert not watcher.stop.is_set() and httpx.get(f"{WATCH_URL}/healthz").status_code == 200
        if alert:
            found = wait_for(
                f"TracecheckPipelineBroken firing for hop {hop}",
                lambda: firing("TracecheckPipelineBroken", hop=hop),
                timeout=60,
                every=1.0,
            )
            print("firing alert as Prometheus reports it:", json.dumps(found), file=sys.stderr)
            assert found["labels"] == {
                "alertname": "TracecheckPipelineBroken",
                "check": check,
                "hop": hop,
                "severity": "critical",
            }
            assert str(found["annotations"]["summary"]).startswith(
                f'Tracing pipeline broken at hop "{hop}": {check} failed '
            )
            # Only the root cause alerts: the checks SKIPped behind it count no failures.
            hops = {str(a["labels"]["hop"]) for a in firing_all("TracecheckPipelineBroken")}
            assert hops == {hop}
    # Back (the fixture waited until it is ready): the round in progress may still fail, the
    # next one passes the hop's check, and the failure count resets. The whole round may take
    # longer: after a Tempo outage the collector reconnects with gRPC backoff, so
    # tempo.trace_by_id can still wait a few seconds of its 10 s deadline once.
    s = scrape()
    back, passed = rounds(s), rounds(s, "pass")
    wait_for(f"{check} PASS after {component} returned", lambda: status_is("PASS"), timeout=30)
    s = scrape()
    assert rounds(s) - back <= 2
    assert metric(s, "tracecheck_check_consecutive_failures", check=check, hop=hop) == 0
    wait_for("a passing round", lambda: rounds(scrape(), "pass") > passed, timeout=45)
    assert rounds(scrape()) - back <= 3


def firing_all(name: str) -> list[dict[str, Any]]:
    """The alerts ``name`` in state firing, as /api/v1/alerts reports them."""
    reply = httpx.get(f"{PROMETHEUS}/api/v1/alerts", timeout=5)
    reply.raise_for_status()
    return [
        a
        for a in reply.json()["data"]["alerts"]
        if a["labels"].get("alertname") == name and a["state"] == "firing"
    ]


def firing(name: str, **labels: str) -> dict[str, Any] | None:
    """The alert ``name`` with ``labels`` in state firing, or None."""
    for alert in firing_all(name):
        if all(alert["labels"].get(k) == v for k, v in labels.items()):
            return alert
    return None
