"""The stand-in as the supervisor runs it (``python -m tempo_standin --config FILE ...``), and
against the real Prometheus 3.8: remote write accepted, series queryable, exemplars stored,
histogram_quantile over the latency buckets."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from standin_helpers import (
    REPO,
    SERVER,
    STANDIN_PATH,
    SpanSpec,
    export_request,
    free_port,
    get_json,
    poll,
    send_grpc,
)

SHIPPED_CONFIG = REPO / "stack" / "tempo" / "tempo.yaml"


def _config(
    tmp: Path, http: int, grpc: int, otlp_http: int, write_url: str, extra: str = ""
) -> Path:
    """The shipped tempo.yaml with the local pipeline's kind of substitutions (free ports, a
    1s not-ready period), plus ``extra`` YAML at the top level."""
    text = SHIPPED_CONFIG.read_text()
    for old, new in (
        ("0.0.0.0:4317", f"127.0.0.1:{grpc}"),
        ("0.0.0.0:4318", f"127.0.0.1:{otlp_http}"),
        ("http://prometheus.monitoring.svc.cluster.local:9090/api/v1/write", write_url),
        ("http_listen_port: 3200", f"http_listen_port: {http}"),
        ("/var/tempo", str(tmp / "tempo")),
        (
            "  max_block_duration: 30m\n",
            "  max_block_duration: 30m\n  lifecycler:\n    min_ready_duration: 1s\n",
        ),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = tmp / "tempo.yaml"
    path.write_text(extra + text)
    return path


def _start_standin(config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(STANDIN_PATH)}
    return subprocess.Popen(
        [sys.executable, "-m", "tempo_standin", "--config", str(config), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.fixture
def prometheus(prometheus_binary: Path, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus with the remote-write receiver and exemplar storage, on a free port."""
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump({"global": {"scrape_interval": "15s"}}))
    log = tmp_path / "prometheus.log"
    proc = subprocess.Popen(
        [
            str(prometheus_binary),
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver",
            "--enable-feature=exemplar-storage",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {log.read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        poll(ready, timeout=60, interval=0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _query(prom: str, expr: str) -> list[dict]:
    doc = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert doc["status"] == "success", doc
    return doc["data"]["result"]  # type: ignore[no-any-return]


def test_real_prometheus_accepts_the_remote_write(prometheus: str, tmp_path: Path) -> None:
    http, grpc, otlp_http = free_port(), free_port(), free_port()
    config = _config(tmp_path, http, grpc, otlp_http, f"{prometheus}/api/v1/write")
    log = tmp_path / "standin.log"
    proc = _start_standin(config, log, "--collection-interval", "1", "--trace-idle-period", "0.5")
    client = httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=5)
    try:

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return client.get("/ready").text == "ready\n"
            except httpx.HTTPError:
                return False

        poll(ready, timeout=30, interval=0.1)
        now = time.time_ns()
        trace_ids = [(0x00C0FFEE00 + i).to_bytes(16, "big") for i in range(3)]
        for i, tid in enumerate(trace_ids):
            d = (i + 1) * 30_000_000  # 30, 60, 90 ms
            span = SpanSpec(
                tid, b"\x01" * 8, "GET /api/v1/pods", SERVER, start_ns=now - d, duration_ns=d
            )
            send_grpc(grpc, export_request("apiserver", [span]))

        calls = poll(
            lambda: _query(prometheus, 'traces_spanmetrics_calls_total{service="apiserver"}'),
            timeout=60,
            interval=0.5,
        )
        (series,) = calls
        assert series["metric"] == {
            "__name__": "traces_spanmetrics_calls_total",
            "__metrics_gen_instance": series["metric"]["__metrics_gen_instance"],
            "service": "apiserver",
            "source": "tempo",  # external_labels from the shipped tempo.yaml
            "span_kind": "SPAN_KIND_SERVER",
            "span_name": "GET /api/v1/pods",
            "status_code": "STATUS_CODE_UNSET",
        }
        assert series["value"][1] == "3"
        # Prometheus 3.x normalises le on ingestion; classic buckets are seconds.
        buckets = 'traces_spanmetrics_latency_bucket{service="apiserver"}'
        p50 = _query(prometheus, f"histogram_quantile(0.5, sum by (le) ({buckets}))")
        assert math.isclose(float(p50[0]["value"][1]), 0.048)  # 1.5th of 3 in (0.032, 0.064]
        end = time.time() + 60
        ex = httpx.get(
            f"{prometheus}/api/v1/query_exemplars",
            params={
                "query": 'traces_spanmetrics_latency_bucket{service="apiserver"}',
                "start": str(end - 600),
                "end": str(end),
            },
            timeout=10,
        ).json()
        assert ex["status"] == "success"
        stored = {e["labels"]["traceID"] for s in ex["data"] for e in s["exemplars"]}
        assert stored == {tid.hex().lstrip("0") for tid in trace_ids}
        # Search sees the traces once they were idle for trace_idle_period.
        q = '{ resource.service.name = "apiserver" }'
        poll(lambda: len(get_json(client, "/api/search", q=q).get("traces", [])) == 3)
    finally:
        client.close()
        code = _stop(proc)
    text = log.read_text()
    assert code == 0, text
    for tid in trace_ids:
        assert f"trace {tid.hex()} visible by id at " in text
        assert f"trace {tid.hex()} searchable at " in text
    assert "status=204" in text
    assert "received SIGTERM, stopping" in text
    assert text.rstrip().endswith("tempo stand-in stopped")


def test_bad_config_exits_4_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "tempo.yaml"
    cfg.write_text("ingester:\n  trace_idle_period: soon\n")
    out = subprocess.run(
        [sys.executable, "-m", "tempo_standin", "--config", str(cfg)],
        env={**os.environ, "PYTHONPATH": str(STANDIN_PATH)},
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 4
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(
        'config error: ingester.trace_idle_period: time: invalid duration "soon"'
    )


@pytest.mark.parametrize("busy_listener", ["http", "otlp-grpc", "otlp-http"])
def test_port_in_use_exits_1(tmp_path: Path, busy_listener: str) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = {name: free_port() for name in ("http", "otlp-grpc", "otlp-http")}
        ports[busy_listener] = port
        cfg = _config(
            tmp_path,
            ports["http"],
            ports["otlp-grpc"],
            ports["otlp-http"],
            "http://127.0.0.1:9/api/v1/write",
        )
        out = subprocess.run(
            [sys.executable, "-m", "tempo_standin", "--config", str(cfg)],
            env={**os.environ, "PYTHONPATH": str(STANDIN_PATH)},
            capture_output=True,
            timeout=60,
        )
    assert out.returncode == 1
    assert "cannot start: " in out.stderr.decode()
    assert str(port) in out.stderr.decode()
    assert "Traceback" not in out.stderr.decode()


def _query_at(prom: str, expr: str, at: float) -> list[dict]:
    doc = httpx.get(
        f"{prom}/api/v1/query", params={"query": expr, "time": f"{at:.3f}"}, timeout=10
    ).json()
    assert doc["status"] == "success", doc
    return doc["data"]["result"]  # type: ignore[no-any-return]


def test_generator_restart_against_real_prometheus(prometheus: str) -> None:
    """What a metrics-generator restart does to the series in Prometheus 3.8 (the facts behind
    issue 9's false FAIL). Each generator instance starts with an empty registry
    (modules/generator/registry), so its first collection writes every series again with a 0
    sample at the end of the previous minute minus... (getEndOfLastMinuteMs: the minute, minus
    one second) and counters restart from the spans seen since the restart. Prometheus rejects
    the whole remote-write request with 400 when that 0 sample is older than the series' last
    sample (storage/remote/write_handler.go: out of order), and Tempo's queue does not retry a
    400: the first collection after a restart within the same minute is lost, exemplars
    included. The clock of each instance is set so the minute boundaries are exact."""
    from tempo_standin.config import RemoteWrite, StandinConfig
    from tempo_standin.generator import Generator
    from tempo_standin.otlp import segments_from_request
    from tempo_standin.selfmetrics import MetricsRegistry

    minute = (int(time.time()) // 60 - 4) * 60  # a whole minute, four minutes ago
    url = f"{prometheus}/api/v1/write"
    config = StandinConfig(
        processors=("span-metrics",),
        remote_write=(RemoteWrite(url),),
        instance="restart-test",
        ingestion_slack=3600.0,
    )
    series = 'traces_spanmetrics_calls_total{service="restart"}'

    def instance(lines: list[str]) -> tuple[Generator, list[float], MetricsRegistry]:
        clock = [0.0]
        metrics = MetricsRegistry()
        gen = Generator(config, metrics, lines.append, clock=lambda: clock[0])
        return gen, clock, metrics

    def push(gen: Generator, at: float, tid: int, n: int) -> None:
        end = int(at * 1e9)
        spans = [
            SpanSpec(
                tid.to_bytes(16, "big"), bytes([i + 1]) * 8, "op", SERVER, start_ns=end - 10**6
            )
            for i in range(n)
        ]
        segments, _groups = segments_from_request(export_request("restart", spans), at)
        gen.push([r for seg in segments for r in seg.records])

    def failed(metrics: MetricsRegistry) -> float:
        labels = {
            "tenant": "single-tenant",
            "remote_name": RemoteWrite(url).remote_name,
            "url": url,
        }
        return metrics.value("prometheus_remote_storage_samples_failed_total", **labels)

    lines_a: list[str] = []
    a, clock_a, metrics_a = instance(lines_a)
    clock_a[0] = minute + 20
    push(a, minute + 20, 0xA1, 2)
    a.collect_and_write()
    assert failed(metrics_a) == 0, lines_a
    a.close()

    # Restart in the same minute: the 0 sample (minute - 1s) is older than minute + 20s.
    lines_b: list[str] = []
    b, clock_b, metrics_b = instance(lines_b)
    clock_b[0] = minute + 40
    push(b, minute + 40, 0xB1, 1)
    b.collect_and_write()
    assert failed(metrics_b) > 0
    assert any("retry=no: server returned HTTP status 400" in ln for ln in lines_b), lines_b
    clock_b[0] = minute + 55  # the next collection has no 0 sample: accepted
    b.collect_and_write()
    assert not any("retry=no" in ln for ln in lines_b[-1:]), lines_b
    b.close()

    # Restart in the next minute: the 0 sample (minute + 59s) is in order.
    lines_c: list[str] = []
    c, clock_c, metrics_c = instance(lines_c)
    clock_c[0] = minute + 75
    push(c, minute + 75, 0xC1, 3)
    c.collect_and_write()
    assert failed(metrics_c) == 0, lines_c
    c.close()

    def value_at(t: float) -> float:
        (row,) = poll(lambda: _query_at(prometheus, series, t), timeout=20)
        return float(row["value"][1])

    assert value_at(minute + 41) == 2.0  # B's first value (1 at +40s) never arrived
    assert value_at(minute + 56) == 1.0  # the counter restarted: 2 -> 1 is a reset
    assert value_at(minute + 59.5) == 0.0  # C's 0 sample at minute + 59s
    assert value_at(minute + 76) == 3.0
    (resets,) = _query_at(prometheus, f"resets({series}[2m])", minute + 80)
    assert resets["value"][1] == "2"  # 2 -> 1 and 1 -> 0
    ex = httpx.get(
        f"{prometheus}/api/v1/query_exemplars",
        params={
            "query": 'traces_spanmetrics_latency_bucket{service="restart"}',
            "start": str(minute - 60),
            "end": str(minute + 120),
        },
        timeout=10,
    ).json()
    stored = {e["labels"]["traceID"] for s in ex["data"] for e in s["exemplars"]}
    # B's only exemplar went with its rejected first batch; its second had none to send.
    assert stored == {"a1", "c1"}
