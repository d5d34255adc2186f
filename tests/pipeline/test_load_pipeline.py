"""``tracecheck load`` against the local pipeline's real parts: the accounting finds no loss when
there is none, and finds a loss at the hop that lost it.

* A clean load goes to the second collector of the local pipeline (collector-spanmetrics, ports
  4327/4328, metrics on 8889): kube-apiserver exports to the first one, and a collector's
  counters cannot tell senders apart, so only a collector nothing else sends to is *exact* at
  the receiver and exporter hops. Tempo is shared with kube-apiserver's spans: a bound there.
* Faults come from one extra collector, started from the cached binary with its own config on
  free loopback ports (the local pipeline's own configs stay untouched): a pipeline whose
  memory_limiter is set far below the process's heap (every push refused: loss at the
  receiver), and one whose exporter points at a closed port with no retry and no queue (loss
  at the exporter).
* ``--account`` of a run that two processes sent (one over gRPC, one over HTTP) adds them up.

Bounded: at most 20,000 spans per test, to 127.0.0.1 only. CI time: about a minute for all.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_port

from tracecheck.cli import main
from tracecheck.config import CollectorSettings
from tracecheck.load.send import GrpcSender
from tracecheck.stack.local import LocalStack

ROOT = Path(__file__).resolve().parents[2]


def load(args: list[str], out: Path) -> tuple[int, dict[str, Any]]:
    """Run ``tracecheck load ARGS`` in this process; (exit code, the JSON report)."""
    code = main(["load", *args, "--output", f"json:{out}"])
    return code, json.loads(out.read_text())


def hops(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["hop"]: row for row in report["tables"]["accounting"]}


def spanmetrics_collector(endpoints: Any) -> list[str]:
    return [
        f"--collector-endpoint={endpoints.spanmetrics_collector_grpc}",
        f"--collector-http-url={endpoints.spanmetrics_collector_http}",
        f"--collector-metrics-url={endpoints.spanmetrics_collector_metrics}",
    ]


def test_a_clean_load_accounts_zero_loss_at_every_hop(endpoints: Any, tmp_path: Path) -> None:
    service = f"tc-load-clean-{secrets.token_hex(3)}"
    code, report = load(
        ["--rate", "2000", "--duration", "10", "--service", service,
         *spanmetrics_collector(endpoints)],
        tmp_path / "clean.json",
    )  # fmt: skip
    rows = hops(report)
    assert code == 0, rows
    assert list(rows) == [
        "client", "receiver", "exporter", "tempo", "found", "samples", "span_metrics",
    ]  # fmt: skip
    for hop in ("client", "receiver", "exporter", "tempo", "found", "span_metrics"):
        assert rows[hop]["expected"] == 20_000, (hop, rows[hop])
        assert rows[hop]["lost"] == 0, (hop, rows[hop])
    # Nothing else sends to this collector: its counters are exact. Tempo also gets
    # kube-apiserver's spans from the first collector: exact or a bound, never short.
    for hop in ("client", "receiver", "exporter", "found", "span_metrics"):
        assert (rows[hop]["observed"], rows[hop]["basis"]) == (20_000, "exact"), rows[hop]
    assert rows["tempo"]["observed"] >= 20_000
    assert (rows["samples"]["expected"], rows["samples"]["observed"]) == (5, 5)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["load.ledger"]["status"] == "PASS"
    assert all(c["status"] == "PASS" for c in report["checks"]), report["checks"]
    assert report["tables"]["summary"] == [
        {"planned": 20_000, "delivered": 20_000, "lost": 0, "loss_pct": 0.0,
         "max_loss_pct": 0.0, "first_loss": "", "why": ""}
    ]  # fmt: skip
    shard = report["tables"]["shards"][0]
    assert (shard["planned"], shard["acknowledged"], shard["unsent"]) == (20_000, 20_000, 0)


# -- faults ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultyCollector:
    lowmem: str  # OTLP/gRPC: a pipeline whose memory_limiter refuses every push
    dead: str  # OTLP/gRPC: a pipeline whose exporter cannot reach anything
    metrics: str


FAULTY_CONFIG = """\
extensions:
  health_check: {{endpoint: "127.0.0.1:{health}"}}
receivers:
  otlp/lowmem: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{lowmem}"}}}}}}
  otlp/dead: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{dead}"}}}}}}
processors:
  # Far below any collector's heap: every push is refused (UNAVAILABLE, "data refused due to
  # high memory usage"), as a real collector does under memory pressure.
  memory_limiter: {{check_interval: 100ms, limit_mib: 2, spike_limit_mib: 1}}
  batch: {{}}
exporters:
  otlp/tempo: {{endpoint: "{tempo}", tls: {{insecure: true}}}}
  otlp/dead:
    endpoint: "127.0.0.1:{closed}"
    tls: {{insecure: true}}
    retry_on_failure: {{enabled: false}}
    sending_queue: {{enabled: false}}
service:
  extensions: [health_check]
  telemetry:
    metrics:
      level: normal
      readers:
        - pull: {{exporter: {{prometheus: {{host: 127.0.0.1, port: {metrics}}}}}}}
  pipelines:
    traces/lowmem:
      receivers: [otlp/lowmem]
      processors: [memory_limiter, batch]
      exporters: [otlp/tempo]
    traces/dead: {{receivers: [otlp/dead], processors: [batch], exporters: [otlp/dead]}}
"""


def _probe_request() -> bytes:
    """One span in an OTLP ExportTraceServiceRequest, encoded by hand (a few bytes)."""

    def field(number: int, payload: bytes) -> bytes:
        assert len(payload) < 128
        return bytes([number << 3 | 2, len(payload)]) + payload

    span = field(1, secrets.token_bytes(16)) + field(2, secrets.token_bytes(8))
    span += field(5, b"tc-load-probe")
    return field(1, field(2, field(2, span)))


def wait_until_refusing(address: str, deadline: float) -> None:
    """Healthy is not yet refusing: the memory_limiter decides on its first tick
    (check_interval) and lets pushes through until then. Probe with one span until a push
    is refused, so the test's load meets a limiter that has made up its mind."""
    sender = GrpcSender(CollectorSettings(endpoint=address, insecure=True))
    try:
        while True:
            outcome = sender.send(_probe_request(), timeout=2)
            if outcome.kind == "refused" and "memory" in outcome.message:
                return
            assert time.monotonic() < deadline, f"the memory_limiter never refused: {outcome}"
            time.sleep(0.1)
    finally:
        sender.close()


@pytest.fixture(scope="module")
def faulty_collector(
    local_pipeline: LocalStack, endpoints: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultyCollector]:
    """An extra collector (the local pipeline's build) with two broken pipelines."""
    ports = {k: free_port() for k in ("health", "lowmem", "dead", "closed", "metrics")}
    config = tmp_path_factory.mktemp("faulty") / "collector.yaml"
    config.write_text(FAULTY_CONFIG.format(tempo=endpoints.tempo_otlp_grpc, **ports))
    log = config.with_suffix(".log").open("wb")
    proc = subprocess.Popen(
        [str(local_pipeline.binary("otelcol")), f"--config={config}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        health = f"http://127.0.0.1:{ports['health']}/"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, config.with_suffix(".log").read_text()[-2000:]
            try:
                if httpx.get(health, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the extra collector did not become healthy"
            time.sleep(0.1)
        wait_until_refusing(f"127.0.0.1:{ports['lowmem']}", deadline)
        yield FaultyCollector(
            f"127.0.0.1:{ports['lowmem']}",
            f"127.0.0.1:{ports['dead']}",
            f"http://127.0.0.1:{ports['metrics']}/metrics",
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_a_collector_short_of_memory_loses_the_load_at_the_receiver(
    faulty_collector: FaultyCollector, tmp_path: Path
) -> None:
    code, report = load(
        ["--rate", "2000", "--duration", "2", "--service", "tc-load-lowmem",
         f"--collector-endpoint={faulty_collector.lowmem}",
         f"--collector-metrics-url={faulty_collector.metrics}",
         "--receiver", "otlp/lowmem", "--exporter", "otlp/tempo", "--skip", "span-metrics"],
        tmp_path / "lowmem.json",
    )  # fmt: skip
    assert code == 1
    rows = hops(report)
    receiver = rows["receiver"]
    assert receiver["first_loss"] == "<- first"
    assert (receiver["expected"], receiver["observed"], receiver["lost"]) == (4_000, 0, 4_000)
    assert "UNAVAILABLE" in receiver["note"]
    assert "data refused due to high memory usage" in receiver["note"]
    assert "memory_limiter" in receiver["note"]
    assert rows["client"]["lost"] == 0
    # Nothing got through, so nothing is expected further on, and nothing more is lost.
    assert [(rows[h]["expected"], rows[h]["lost"]) for h in ("exporter", "tempo", "found")] == [
        (0, 0),
        (0, 0),
        (0, 0),
    ]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["load.receiver"]["status"] == "FAIL"
    assert checks["load.receiver"]["data"]["counters"]["refused"] >= 4_000
    # Its ledger was refused too: said, not hidden.
    assert checks["load.ledger"]["status"] == "WARN"
    summary = report["tables"]["summary"][0]
    assert (summary["lost"], summary["first_loss"]) == (4_000, "receiver")


def test_an_exporter_that_cannot_send_loses_the_load_at_the_exporter(
    faulty_collector: FaultyCollector, tmp_path: Path
) -> None:
    code, report = load(
        ["--rate", "2000", "--duration", "2", "--service", "tc-load-dead",
         f"--collector-endpoint={faulty_collector.dead}",
         f"--collector-metrics-url={faulty_collector.metrics}",
         "--receiver", "otlp/dead", "--exporter", "otlp/dead", "--skip", "span-metrics",
         "--max-loss", "50"],
        tmp_path / "dead.json",
    )  # fmt: skip
    assert code == 1  # 100 % lost is over --max-loss 50 %
    rows = hops(report)
    assert (rows["receiver"]["observed"], rows["receiver"]["lost"]) == (4_000, 0)
    exporter = rows["exporter"]
    assert exporter["first_loss"] == "<- first"
    assert (exporter["expected"], exporter["observed"], exporter["lost"]) == (4_000, 0, 4_000)
    assert exporter["basis"] == "exact"
    assert exporter["note"].startswith("send failed +4,001")  # the ledger span failed too
    assert rows["found"]["observed"] == 0
    assert report["tables"]["summary"][0]["first_loss"] == "exporter"


def test_a_ramp_on_a_refusing_collector_names_the_hop_and_finds_no_clean_rate(
    faulty_collector: FaultyCollector, tmp_path: Path
) -> None:
    code, report = load(
        ["--ramp", "1000:3000:1000", "--step-duration", "1", "--service", "tc-load-ramp",
         f"--collector-endpoint={faulty_collector.lowmem}",
         f"--collector-metrics-url={faulty_collector.metrics}",
         "--receiver", "otlp/lowmem", "--exporter", "otlp/tempo"],
        tmp_path / "ramp.json",
    )  # fmt: skip
    assert code == 1
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == ["ramp.1000", "ramp.capacity"]  # stopped at the first step
    capacity = checks["ramp.capacity"]
    assert capacity["status"] == "FAIL"
    assert capacity["data"]["capacity_spans_per_s"] is None
    assert capacity["data"]["hop"] == "receiver"
    assert "memory_limiter" in capacity["data"]["why"]
    assert report["tables"]["ramp"][0]["verdict"] == "pipeline"


# -- a run that other processes sent ---------------------------------------------------------------


def test_account_adds_up_a_run_sent_by_two_processes(endpoints: Any, tmp_path: Path) -> None:
    run_id = f"tc-acct-{secrets.token_hex(4)}"
    service = f"tc-load-acct-{secrets.token_hex(3)}"
    shards = []
    for shard, protocol in ((0, "grpc"), (1, "http")):
        argv = [
            sys.executable, "-m", "tracecheck", "load", "--rate", "2000", "--duration", "3",
            "--shards", "2", f"--shard={shard}", f"--run-id={run_id}", f"--service={service}",
            f"--protocol={protocol}", "--skip", "found,samples,span-metrics",
            "--output", f"json:{tmp_path / f'shard{shard}.json'}",
        ]  # fmt: skip
        env = {**os.environ, "NO_COLOR": "1"}
        shards.append(
            subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT
            )
        )
    for proc in shards:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    code, report = load(["--account", run_id], tmp_path / "account.json")
    rows = hops(report)
    assert code == 0, rows
    assert report["command"] == "load --account"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["load.ledgers"]["detail"] == "2 of 2 shards' ledgers found"
    assert [(s["shard"], s["planned"], s["acknowledged"]) for s in report["tables"]["shards"]] == [
        (0, 3_000, 3_000),
        (1, 3_000, 3_000),
    ]
    for hop in ("client", "receiver", "found", "span_metrics"):
        assert (rows[hop]["expected"], rows[hop]["observed"], rows[hop]["lost"]) == (
            6_000,
            6_000,
            0,
        ), rows[hop]
        assert rows[hop]["basis"] == "exact"
    # Read from Prometheus's scrapes of every collector and Tempo: bounds, never short.
    for hop in ("exporter", "tempo"):
        assert rows[hop]["observed"] >= 6_000 and rows[hop]["lost"] == 0, rows[hop]
    assert (rows["samples"]["expected"], rows["samples"]["observed"]) == (5, 5)
    found = checks["load.found"]["data"]["counters"]
    assert found == {"shard 0": 3_000.0, "shard 1": 3_000.0}
