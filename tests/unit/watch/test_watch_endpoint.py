"""The watch metrics and HTTP endpoint, scraped over a real socket and parsed with the reference
parsers (``prometheus_client``'s text and OpenMetrics parsers): values after known rounds,
bounded labels, exemplars, /healthz, /ready, /report.json, and the listen errors."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from importlib import resources
from typing import Any

import httpx
import jsonschema
import pytest

from tracecheck.errors import ConfigError, ExitCode, UsageError
from tracecheck.watch import WatchServer, WatchState
from tracecheck.watch._smoke import CheckResult, Report, Status, render_json
from tracecheck.watch.metrics import CheckInfo, WatchMetrics

TRACE = "0a" * 16
API_TRACE = "0b" * 16
#: The build info labels once the reports' versions were seen.
VERSIONS = {
    "version": "0.1.0",
    "tempo_version": "2.9.0",
    "prometheus_version": "3.8.0",
    "kubernetes_version": "v1.34.4",
}
CHECKS = [
    CheckInfo("preflight.tempo", "tempo"),
    CheckInfo("tempo.trace_by_id", "collector -> tempo", True),
    CheckInfo("apiserver.trace", "apiserver -> collector -> tempo", True),
]


def make_report(run: int, *results: CheckResult, **target: str) -> Report:
    rep = Report(
        run_id=f"run-{run:04d}",
        trace_id=TRACE,
        started_at=1_764_000_000.0 + 60 * run,
        finished_at=1_764_000_005.0 + 60 * run,
        results=results,
        target={"apiserver_trace_id": API_TRACE, **target},
        tool_version="0.1.0",
    )
    return replace(rep, tables={"pipeline_latency": rep.pipeline_latency()})


def res(name: str, hop: str, status: Status, **kw: Any) -> CheckResult:
    return CheckResult(name=name, title=name, status=status, hop=hop, **kw)


PASSING = make_report(
    1,
    res("preflight.tempo", "tempo", Status.PASS),
    res("tempo.trace_by_id", "collector -> tempo", Status.PASS, delay=0.3, deadline=10.0),
    res(
        "apiserver.trace",
        "apiserver -> collector -> tempo",
        Status.PASS,
        delay=3.2,
        deadline=30.0,
        data={"mode": "parent-child", "found": 3, "sent": 4},
    ),
    tempo_version="2.9.0",
    prometheus_version="3.8.0",
    apiserver_version="v1.34.4",
)
FAILING = make_report(
    2,
    res("preflight.tempo", "tempo", Status.PASS),
    res("tempo.trace_by_id", "collector -> tempo", Status.FAIL, deadline=10.0),
    res("apiserver.trace", "apiserver -> collector -> tempo", Status.SKIP),
    tempo_version="unknown (HTTP 404: not found)",
)
ERRORING = make_report(
    3,
    res("preflight.tempo", "tempo", Status.ERROR, deadline=5.0),
    res("tempo.trace_by_id", "collector -> tempo", Status.SKIP),
    res("apiserver.trace", "apiserver -> collector -> tempo", Status.SKIP),
)


@pytest.fixture
def endpoint() -> Iterator[tuple[WatchMetrics, WatchState, WatchServer]]:
    metrics = WatchMetrics(CHECKS, interval=30.0)
    state = WatchState()
    server = WatchServer("127.0.0.1:0", metrics, state).start()
    try:
        yield metrics, state, server
    finally:
        server.close()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: WatchServer) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    reply = httpx.get(f"{server.url}/metrics", timeout=5)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_metrics_after_a_passing_a_failing_and_an_erroring_round(
    endpoint: tuple[WatchMetrics, WatchState, WatchServer],
) -> None:
    metrics, _, server = endpoint
    before = scrape(server)
    # Every series exists before the first round, at 0.
    for result in ("pass", "fail", "error"):
        assert value(before, "tracecheck_rounds_total", result=result) == 0
    assert value(before, "tracecheck_watch_interval_seconds") == 30.0
    assert (
        value(
            before, "tracecheck_check_status", check="preflight.tempo", hop="tempo", status="PASS"
        )
        == 0
    )
    assert math.isnan(value(before, "tracecheck_apiserver_traced_ratio"))

    assert metrics.round_finished(PASSING, duration=5.0, finished_at=1000.0) == "pass"
    after_pass = scrape(server)
    assert value(after_pass, "tracecheck_apiserver_traced_ratio") == 0.75
    assert value(after_pass, "tracecheck_build_info", **VERSIONS) == 1

    assert metrics.round_finished(FAILING, duration=11.0, finished_at=1060.0) == "fail"
    hop = "collector -> tempo"
    after_fail = scrape(server)
    assert (
        value(
            after_fail, "tracecheck_check_consecutive_failures", check="tempo.trace_by_id", hop=hop
        )
        == 1
    )
    assert math.isnan(value(after_fail, "tracecheck_apiserver_traced_ratio"))

    assert metrics.round_finished(ERRORING, duration=1.0, finished_at=1120.0) == "error"
    metrics.overrun()
    s = scrape(server)
    for result in ("pass", "fail", "error"):
        assert value(s, "tracecheck_rounds_total", result=result) == 1
    assert value(s, "tracecheck_round_overruns_total") == 1
    assert value(s, "tracecheck_round_duration_seconds_count") == 3
    assert value(s, "tracecheck_round_duration_seconds_sum") == 17.0
    assert value(s, "tracecheck_round_duration_seconds_bucket", le="5.0") == 2
    assert value(s, "tracecheck_last_round_timestamp_seconds") == 1120.0
    assert value(s, "tracecheck_round_in_progress") == 0
    # The last status is 1, the others 0.
    for status in Status:
        want = 1 if status is Status.ERROR else 0
        assert (
            value(
                s,
                "tracecheck_check_status",
                check="preflight.tempo",
                hop="tempo",
                status=status.value,
            )
            == want
        )
    assert (
        value(s, "tracecheck_check_status", check="tempo.trace_by_id", hop=hop, status="SKIP") == 1
    )
    # Counts by status.
    assert (
        value(
            s, "tracecheck_check_results_total", check="preflight.tempo", hop="tempo", status="PASS"
        )
        == 2
    )
    assert (
        value(
            s, "tracecheck_check_results_total", check="tempo.trace_by_id", hop=hop, status="FAIL"
        )
        == 1
    )
    # Consecutive failures: the erroring preflight counts 1; the SKIP behind it resets to 0, so
    # only the root cause alerts.
    assert (
        value(s, "tracecheck_check_consecutive_failures", check="preflight.tempo", hop="tempo") == 1
    )
    assert (
        value(s, "tracecheck_check_consecutive_failures", check="tempo.trace_by_id", hop=hop) == 0
    )
    # Last success: the preflight passed last in round 2; the trace check in round 1.
    assert (
        value(
            s,
            "tracecheck_check_last_success_timestamp_seconds",
            check="preflight.tempo",
            hop="tempo",
        )
        == 1060.0
    )
    assert (
        value(
            s, "tracecheck_check_last_success_timestamp_seconds", check="tempo.trace_by_id", hop=hop
        )
        == 1000.0
    )
    # The delay histogram: one observation of 0.3 s, in the 0.5 bucket and not the 0.25 one.
    stage = {"stage": "tempo.trace_by_id", "hop": hop}
    assert value(s, "tracecheck_stage_delay_seconds_count", **stage) == 1
    assert value(s, "tracecheck_stage_delay_seconds_sum", **stage) == pytest.approx(0.3)
    assert value(s, "tracecheck_stage_delay_seconds_bucket", le="0.25", **stage) == 0
    assert value(s, "tracecheck_stage_delay_seconds_bucket", le="0.5", **stage) == 1
    assert value(s, "tracecheck_stage_deadline_seconds", **stage) == 10.0
    # A preflight has a deadline but is no pipeline stage: no deadline series for it.
    assert (
        "tracecheck_stage_deadline_seconds",
        frozenset({("stage", "preflight.tempo"), ("hop", "tempo")}),
    ) not in s
    # "unknown (HTTP 404...)" is not a label value; the version seen before stays.
    assert value(s, "tracecheck_build_info", **VERSIONS) == 1


def test_labels_are_bounded_and_never_carry_a_run_or_trace_id(
    endpoint: tuple[WatchMetrics, WatchState, WatchServer],
) -> None:
    metrics, _, server = endpoint
    for i, rep in enumerate((PASSING, FAILING, ERRORING)):
        metrics.round_finished(rep, duration=1.0, finished_at=1000.0 + i)
    s = scrape(server)
    allowed = {
        "check", "hop", "stage", "status", "result", "le",
        "version", "tempo_version", "prometheus_version", "kubernetes_version",
    }  # fmt: skip
    ours = [(name, dict(labels)) for name, labels in s if name.startswith("tracecheck_")]
    assert len(ours) > 50
    for name, labels in ours:
        assert set(labels) <= allowed, name
        for v in labels.values():
            assert not v.startswith("run-") and TRACE not in v and API_TRACE not in v, (name, v)
    # Series count is bounded by the plan: re-running rounds adds none.
    for i in range(20):
        metrics.round_finished(PASSING, duration=1.0, finished_at=2000.0 + i)
    assert len([k for k in scrape(server) if k[0].startswith("tracecheck_")]) == len(ours)


def test_openmetrics_scrape_carries_the_round_trace_id_as_an_exemplar(
    endpoint: tuple[WatchMetrics, WatchState, WatchServer],
) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    metrics, _, server = endpoint
    metrics.round_finished(PASSING, duration=5.0, finished_at=1000.0)
    reply = httpx.get(
        f"{server.url}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        timeout=5,
    )
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    exemplars = {}
    for family in text_string_to_metric_families(reply.text):
        for s in family.samples:
            if s.exemplar is not None:
                exemplars[(s.labels["stage"], s.labels["le"])] = (
                    s.exemplar.labels,
                    s.exemplar.value,
                )
    assert exemplars == {
        ("tempo.trace_by_id", "0.5"): ({"traceID": TRACE}, 0.3),
        ("apiserver.trace", "5.0"): ({"traceID": API_TRACE}, 3.2),
    }


def test_healthz_ready_and_report_json(
    endpoint: tuple[WatchMetrics, WatchState, WatchServer],
) -> None:
    _, state, server = endpoint
    with httpx.Client(base_url=server.url, timeout=5) as http:
        assert (http.get("/healthz").status_code, http.get("/healthz").text) == (200, "ok\n")
        ready = http.get("/ready")
        assert (ready.status_code, ready.text) == (503, "not ready: no round finished yet\n")
        early = http.get("/report.json")
        assert early.status_code == 503 and early.json() == {"error": "no round finished yet"}

        state.publish(render_json(FAILING))
        assert http.get("/ready").status_code == 200
        reply = http.get("/report.json")
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/json"
        assert reply.text == render_json(FAILING)
        data = reply.json()
        schema = json.loads(
            resources.files("tracecheck").joinpath("schema/report-v1.json").read_text()
        )
        jsonschema.validate(data, schema)
        assert (data["run_id"], data["exit_code"]) == ("run-0002", 1)
        state.publish(render_json(ERRORING))
        assert http.get("/report.json").json()["run_id"] == "run-0003"

        assert http.get("/nope").status_code == 404
        assert http.post("/ready").status_code == 405
        assert "/report.json" in http.get("/").text


def test_a_busy_listen_port_is_a_one_line_config_error() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        server = WatchServer(f"127.0.0.1:{port}", WatchMetrics([]), WatchState())
        with pytest.raises(ConfigError) as info:
            server.start()
    finally:
        holder.close()
    assert str(info.value) == (
        f"watch at 127.0.0.1:{port}: cannot listen: address already in use "
        "(another watch or exporter on this port?)"
    )
    assert info.value.exit_code == ExitCode.CONFIG == 4


@pytest.mark.parametrize(
    "listen", ["9464", "localhost", "127.0.0.1:http", "::1:9464", "1.2.3.4:70000"]
)
def test_a_malformed_listen_address_is_a_usage_error(listen: str) -> None:
    with pytest.raises(UsageError) as info:
        WatchServer(listen, WatchMetrics([]), WatchState())
    assert str(info.value).startswith("watch at --listen: ")
    assert info.value.exit_code == ExitCode.USAGE


def test_an_address_that_is_not_local_is_a_config_error() -> None:
    # TEST-NET-1 (RFC 5737) is never assigned to this host.
    with pytest.raises(ConfigError, match=r"^watch at 192\.0\.2\.1:9464: cannot listen: "):
        WatchServer("192.0.2.1:9464", WatchMetrics([]), WatchState()).start()


def test_importing_the_watch_package_does_not_load_prometheus_client() -> None:
    # `tracecheck --help` must stay fast: the CLI imports tracecheck.watch inside the command,
    # and even that import leaves prometheus_client for when metrics are built.
    code = "import sys, tracecheck.watch, tracecheck.cli; print('prometheus_client' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
