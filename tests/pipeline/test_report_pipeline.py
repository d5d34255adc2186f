"""``tracecheck report apiserver`` against the local pipeline, checked by independent means:

* trace-derived quantiles equal numpy's over the durations of the spans this test sent;
* span-metric quantiles and counts equal ``promtool query instant`` of the report's own PromQL
  at the report's evaluation time, against the same Prometheus;
* the apiserver column equals Prometheus's ``histogram_quantile`` of the apiserver's histogram
  for the endpoint (real requests made here with the privileged kubeconfig);
* the HTML holds three charts and loads nothing from elsewhere; ``probe`` adds the smoke's
  per-stage delays.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from settle import settled

from tracecheck.config import Settings, load_settings, with_kubeconfig
from tracecheck.latency.charts import render_html, write_png
from tracecheck.latency.report import ApiserverReport, apiserver_report
from tracecheck.polling import Probe, SystemClock, poll_until
from tracecheck.query.adhoc import run_promql, run_traceql
from tracecheck.smoke.plan import smoke as run_smoke
from tracecheck.stack.local import LocalStack

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

RUN = uuid.uuid4().hex[:8]
SERVICE = f"tcr-{RUN}"
LIST = "GET /api/v1/namespaces/{:namespace}/configmaps"
GET = "GET /api/v1/namespaces/{:namespace}/configmaps/{:name}"
# Durations (ms) with whole nanoseconds; spread over several 2 ms * 2^n buckets.
DURATIONS = {
    LIST: [2.5, 3.25, 4.5, 5.0, 6.75, 9.5, 11.0, 14.25, 18.0, 26.5, 40.0, 61.0],
    GET: [0.6, 0.9, 1.1, 1.4, 3.3],
}
ERRORS = {GET: 1}  # the last GET answers 503
APISERVER_REQUESTS = 12


@dataclass(frozen=True)
class Data:
    settings: Settings
    promtool: Path
    at: int  # evaluation time whose samples have all arrived


def _attr(key: str, value: Any) -> Any:
    from opentelemetry.proto.common.v1 import common_pb2

    kv = common_pb2.KeyValue(key=key)
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = value
    return kv


def _request() -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1 import trace_pb2

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_attr("service.name", SERVICE))
    spans = rs.scope_spans.add().spans
    end_ns = time.time_ns() - 2 * 10**9  # inside the generator's +-30 s slack (§11.3)
    for name, durations in DURATIONS.items():
        for i, ms in enumerate(durations):
            error = i >= len(durations) - ERRORS.get(name, 0)
            span = spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name=name,
                             kind=trace_pb2.Span.SPAN_KIND_SERVER,
                             start_time_unix_nano=end_ns - round(ms * 1e6),
                             end_time_unix_nano=end_ns)  # fmt: skip
            path = "/api/v1/namespaces/default/configmaps" + ("" if name == LIST else "/c1")
            span.attributes.extend([_attr("http.method", "GET"), _attr("http.target", path),
                                    _attr("http.status_code", 503 if error else 200)])  # fmt: skip
            if error:
                span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
    return req


def _wait(what: str, probe: Any, deadline: float = 120.0) -> None:
    outcome = poll_until(probe, deadline, SystemClock(), initial=0.5, cap=3.0)
    assert outcome.ok, f"{what} not seen within {deadline:.0f} s; last: {outcome.seen}"


@pytest.fixture(scope="module")
def data(local_pipeline: LocalStack) -> Data:
    from tracecheck.backends.apiserver import ApiserverClient, load_credentials, traceparent
    from tracecheck.backends.collector import CollectorClient

    settings = load_settings()
    with CollectorClient(settings.collector) as collector:
        assert collector.export(_request()).accepted_spans == sum(map(len, DURATIONS.values()))
    creds = load_credentials(str(local_pipeline.kubeconfig))
    with ApiserverClient(creds) as api:
        for _ in range(APISERVER_REQUESTS):
            reply = api.send("GET", "/api/v1/namespaces/default/configmaps",
                             traceparent=traceparent(os.urandom(16), os.urandom(8)))  # fmt: skip
            assert reply.status == 200

    def ready() -> Probe[None]:
        found = run_traceql(settings, f'{{ resource.service.name = "{SERVICE}" }}', since="10m",
                            limit=100)  # fmt: skip
        metrics = run_promql(
            settings,
            f'sum(traces_spanmetrics_calls_total{{service="{SERVICE}"}}) '
            f'and on() sum(apiserver_request_duration_seconds_count{{resource="configmaps"}})',
        )
        n = len(found.rows)
        return Probe(n == sum(map(len, DURATIONS.values())) and not metrics.empty, None,
                     f"{n} spans found, span-metrics {'in' if not metrics.empty else 'not in'} "
                     "Prometheus")  # fmt: skip

    _wait("the spans in Tempo and span-metrics in Prometheus", ready)
    # increase() over the window needs two samples, and `at` must be a time before which every
    # sample has arrived by remote write: polled, not slept.
    at = settled(
        settings,
        [
            f'traces_spanmetrics_calls_total{{service="{SERVICE}"}}',
            'apiserver_request_duration_seconds_count{resource="configmaps"}',
        ],
    )
    return Data(settings, local_pipeline.binary("promtool"), at)


@pytest.fixture(scope="module")
def report(data: Data) -> ApiserverReport:
    return apiserver_report(data.settings, service=SERVICE, start=str(data.at - 600),
                            end=str(data.at))  # fmt: skip


def _row(report: ApiserverReport, endpoint: str) -> dict[str, Any]:
    frame = report.endpoints
    (row,) = frame[frame["endpoint"] == endpoint].to_dict(orient="records")
    return row


def _promtool(data: Data, query: str) -> dict[str, float]:
    proc = subprocess.run(
        [str(data.promtool), "query", "instant", "-o", "json", f"--time={data.at}",
         "http://127.0.0.1:9090", query],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {i["metric"].get("span_name", ""): float(i["value"][1]) for i in json.loads(proc.stdout)}


def test_trace_quantiles_equal_numpy_over_the_spans_sent(report: ApiserverReport) -> None:
    assert report.traces_found == sum(map(len, DURATIONS.values()))
    for endpoint, durations in DURATIONS.items():
        row = _row(report, endpoint)
        assert row["traces_n"] == len(durations)
        p50, p90, p99 = np.percentile(durations, [50, 90, 99])
        assert row["traces_p50_ms"] == pytest.approx(p50, abs=1e-6)
        assert row["traces_p90_ms"] == pytest.approx(p90, abs=1e-6)
        assert row["traces_p99_ms"] == pytest.approx(p99, abs=1e-6)
        assert row["traces_max_ms"] == pytest.approx(max(durations), abs=1e-6)
        assert row["traces_error_pct"] == pytest.approx(
            100 * ERRORS.get(endpoint, 0) / len(durations)
        )


def test_span_metric_columns_equal_promtool(data: Data, report: ApiserverReport) -> None:
    assert report.naming == "tempo" and report.evaluated_at == data.at
    calls = _promtool(data, report.query("sm_calls"))
    quantiles = {q: _promtool(data, report.query(f"sm_p{q}")) for q in (50, 90, 99)}
    assert set(calls) == set(DURATIONS)
    for endpoint in DURATIONS:
        row = _row(report, endpoint)
        assert row["sm_calls"] == pytest.approx(calls[endpoint], rel=1e-12)
        for q in (50, 90, 99):
            assert row[f"sm_p{q}_ms"] == pytest.approx(quantiles[q][endpoint] * 1000, rel=1e-12)


def test_span_metric_and_trace_p99_agree_within_one_bucket(report: ApiserverReport) -> None:
    # Both sides saw exactly the same spans, so the interpolated p99 lies in the bucket that
    # holds the exact one (docs/reference/tempo.md §11.1: 2 ms * 2^n buckets).
    for endpoint in DURATIONS:
        row = _row(report, endpoint)
        assert row["p99_within_bucket"] == "yes", row
        assert abs(row["p99_diff_ms"]) <= row["sm_bucket_ms"]
    assert report.sm_bounds_ms[:4] == (2.0, 4.0, 8.0, 16.0)


def test_exemplar_delays_of_the_spans_sent(report: ApiserverReport) -> None:
    delays = report.delays[report.delays["source"] == "exemplars"]["delay_s"]
    assert len(delays) >= 1
    # From span end to the generator's collection (every 15 s) plus the push: positive, and
    # well under the generator's series staleness.
    assert ((delays > 0) & (delays < 120)).all(), list(delays)


def test_apiserver_column_equals_prometheus_histogram_quantile(data: Data) -> None:
    report = apiserver_report(data.settings, service="apiserver", start=str(data.at - 600),
                              end=str(data.at))  # fmt: skip
    row = _row(report, LIST)
    # Only LIST configmaps at namespace scope maps to this span name.
    selector = ('apiserver_request_duration_seconds_bucket{verb="LIST",resource="configmaps",'
                'scope="namespace",subresource=""}')  # fmt: skip
    for q, column in ((0.5, "apiserver_p50_ms"), (0.99, "apiserver_p99_ms")):
        want = _promtool(data, f"histogram_quantile({q}, sum by (le) (increase({selector}[600s])))")
        assert row[column] == pytest.approx(want[""] * 1000, rel=1e-9)
    count = _promtool(data, f"sum(increase({selector.replace('_bucket', '_count')}[600s]))")
    assert row["apiserver_n"] == pytest.approx(count[""], rel=1e-9)
    assert row["apiserver_n"] >= APISERVER_REQUESTS * 0.9  # increase() extrapolates
    # The traced requests are in the trace columns too (a trusted sampled parent is always
    # traced, docs/reference/apiserver.md §4).
    assert row["traces_n"] >= APISERVER_REQUESTS


def test_html_and_png(report: ApiserverReport, tmp_path: Path) -> None:
    page = render_html(report)
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 3
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert not re.search(r"""(src|href)=['"](https?:)?//""", page)
    for endpoint in DURATIONS:
        assert endpoint in page
    write_png(report, str(tmp_path / "main.png"))
    assert (tmp_path / "main.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_adds_every_stage_of_a_smoke_run(data: Data) -> None:
    # The CLI's --probe: a smoke run first, whose delays the report shows.
    smoke_report = run_smoke(with_kubeconfig(data.settings, os.environ))
    report = apiserver_report(
        data.settings, service=SERVICE, since="10m", smoke_report=smoke_report
    )
    smoke = report.delays[report.delays["source"] == "smoke"]
    stages = " ".join(smoke["stage"])
    for stage in ("tempo.trace_by_id", "tempo.search", "prometheus.span_metrics"):
        assert stage in stages
    assert (smoke["delay_s"] >= 0).all()


def test_a_service_without_data_is_an_empty_report(data: Data) -> None:
    report = apiserver_report(data.settings, service=f"nobody-{RUN}", since="10m")
    assert report.empty and report.traces_found == 0
    table = report.table()
    assert table.rows == () and table.notes[-1].startswith("no data: no spans or span-metrics")
