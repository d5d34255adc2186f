"""tracecheck.latency.report: the pure pieces (histogram quantile, bucket width, endpoint
mapping) and ``apiserver_report`` end to end against a real HTTP server answering as Tempo
and Prometheus.

The numbers are checked against independent computations: numpy percentiles of the span
durations served, and hand-computed histogram quantiles.
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import pytest
from servers import Recorded, TestServer

from tracecheck.config import load_settings
from tracecheck.latency.charts import (
    chart_delays,
    chart_errors,
    chart_latency,
    render_html,
    write_html,
    write_png,
)
from tracecheck.latency.histograms import apiserver_endpoint, bucket_width, histogram_quantile
from tracecheck.latency.report import (
    ENDPOINT_COLUMNS,
    SUMMARY_COLUMNS,
    ApiserverReport,
    apiserver_report,
)
from tracecheck.output import render_table
from tracecheck.polling import FakeClock

NOW = 1_750_000_000.0
INF = math.inf

# -- histogram_quantile, as Prometheus computes it -----------------------------------------------


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(0.1, 10), (0.2, 20), (INF, 20)], 0.1),  # rank 10 closes the first bucket
        (0.75, [(0.1, 10), (0.2, 20), (INF, 20)], 0.15),  # halfway into (0.1, 0.2]
        (1.0, [(0.1, 10), (0.2, 20), (INF, 20)], 0.2),
        (0.25, [(0.1, 10), (0.2, 20), (INF, 20)], 0.05),  # the first bucket starts at 0
        (0.9, [(0.1, 5), (INF, 10)], 0.1),  # rank in +Inf: the largest finite bound
        (0.5, [(INF, 10), (0.2, 8), (0.1, 4)], 0.125),  # unsorted input is sorted
        (0.5, [(0.1, 6), (0.2, 5), (INF, 10)], 0.0833333333),  # decreasing counts made monotonic
    ],
)
def test_histogram_quantile(q: float, buckets: list[tuple[float, float]], expected: float) -> None:
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_without_observations_or_inf_bucket_is_nan() -> None:
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0), (INF, 0)]))
    assert math.isnan(histogram_quantile(0.5, [(0.1, 3), (0.2, 5)]))  # no +Inf bucket
    assert math.isnan(histogram_quantile(0.5, []))


def test_bucket_width() -> None:
    bounds = [2.0, 4.0, 8.0, 16.0]
    assert bucket_width(0.5, bounds) == 2.0  # (0, 2]
    assert bucket_width(4.0, bounds) == 2.0  # (2, 4]: an upper bound belongs to its bucket
    assert bucket_width(9.0, bounds) == 8.0  # (8, 16]
    assert bucket_width(17.0, bounds) is None  # the +Inf bucket has no width
    assert bucket_width(math.nan, bounds) is None


# -- apiserver metric labels -> span names (docs/reference/apiserver.md §5.1) ------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"verb": "LIST", "version": "v1", "resource": "pods", "scope": "namespace"},
         "GET /api/v1/namespaces/{:namespace}/pods"),
        ({"verb": "LIST", "version": "v1", "resource": "nodes", "scope": "cluster"},
         "GET /api/v1/nodes"),
        ({"verb": "GET", "group": "apps", "version": "v1", "resource": "deployments",
          "subresource": "status", "scope": "resource"},
         "GET /apis/apps/v1/namespaces/{:namespace}/deployments/{:name}/status"),
        ({"verb": "POST", "version": "v1", "resource": "pods", "scope": "resource"},
         "POST /api/v1/namespaces/{:namespace}/pods"),
        ({"verb": "APPLY", "version": "v1", "resource": "configmaps", "scope": "resource"},
         "PATCH /api/v1/namespaces/{:namespace}/configmaps/{:name}"),
        ({"verb": "DELETECOLLECTION", "version": "v1", "resource": "pods", "scope": "namespace"},
         "DELETE /api/v1/namespaces/{:namespace}/pods"),
        ({"verb": "GET", "resource": "", "scope": ""}, "GET"),  # non-resource: the method only
        ({"verb": "CONNECT", "version": "v1", "resource": "pods", "scope": "resource"}, None),
    ],
)  # fmt: skip
def test_apiserver_endpoint(labels: dict[str, str], expected: str | None) -> None:
    assert apiserver_endpoint(labels) == expected


def test_apiserver_endpoint_resolves_named_scope_against_known_span_names() -> None:
    labels = {"verb": "GET", "version": "v1", "resource": "nodes", "scope": "resource"}
    assert apiserver_endpoint(labels, {"GET /api/v1/nodes/{:name}"}) == "GET /api/v1/nodes/{:name}"
    # Unknown: namespaced is the common case...
    assert apiserver_endpoint(labels) == "GET /api/v1/namespaces/{:namespace}/nodes/{:name}"
    # ...and a known namespaced form wins.
    pods = {"verb": "GET", "version": "v1", "resource": "pods", "scope": "resource"}
    known = {"GET /api/v1/namespaces/{:namespace}/pods/{:name}"}
    assert apiserver_endpoint(pods, known) == "GET /api/v1/namespaces/{:namespace}/pods/{:name}"


# -- the report against a scripted Tempo + Prometheus --------------------------------------------

PODS = "GET /api/v1/namespaces/{:namespace}/pods"
NODE = "GET /api/v1/nodes/{:name}"
# Durations (ms) of the spans Tempo returns, per endpoint: what the trace columns must reflect.
DURATIONS = {PODS: [1.5, 2.5, 3.0, 4.0, 7.5, 9.0, 30.0], NODE: [0.4, 0.6, 0.9]}
ERROR_SPAN = (NODE, 0.9)  # answered 503
WATCH_MS = 60_000.0  # a WATCH on the pods collection: excluded from the trace columns
TRACE_IDS: list[str] = []


def _search_body() -> dict[str, Any]:
    traces = []
    n = 0
    for name, durations in DURATIONS.items():
        for d in durations:
            n += 1
            status = 503 if (name, d) == ERROR_SPAN else 200
            target = "/api/v1/namespaces/default/pods" if name == PODS else "/api/v1/nodes/n1"
            traces.append(_trace(n, name, d, target, status))
    traces.append(_trace(99, PODS, WATCH_MS, "/api/v1/namespaces/default/pods?watch=true", 200))
    TRACE_IDS[:] = [t["traceID"] for t in traces]
    return {"traces": traces, "metrics": {}}


def _trace(n: int, name: str, ms: float, target: str, status: int) -> dict[str, Any]:
    start_ns = int((NOW - 600 + n) * 1e9)
    return {
        "traceID": f"{n:032x}".lstrip("0"),
        "rootServiceName": "apiserver",
        "rootTraceName": name,
        "startTimeUnixNano": str(start_ns),
        "durationMs": int(ms),
        "spanSets": [{"matched": 1, "spans": [{
            "spanID": f"{n:016x}", "name": name, "startTimeUnixNano": str(start_ns),
            "durationNanos": str(int(ms * 1e6)),
            "attributes": [
                {"key": "http.method", "value": {"stringValue": "GET"}},
                {"key": "http.target", "value": {"stringValue": target}},
                {"key": "http.status_code", "value": {"intValue": str(status)}},
            ],
        }]}],
    }  # fmt: skip


def _vector(samples: list[tuple[dict[str, str], float]]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [NOW, str(v)]} for labels, v in samples
    ]}}  # fmt: skip


# Span-metric buckets (seconds, Tempo layout) and the answers to the PromQL the report sends.
SM_BOUNDS = [0.002, 0.004, 0.008, 0.016, 0.032]
API_BUCKETS = {  # apiserver_request_duration_seconds_bucket increases for LIST pods
    0.005: 4.0, 0.025: 6.0, 0.05: 7.0, INF: 7.0,
}  # fmt: skip


def prom_answer(query: str) -> dict[str, Any]:
    if query.startswith("sum(count_over_time(traces_spanmetrics_calls_total"):
        assert query.endswith("[3600s]))")  # the report's whole window
        return _vector([({}, 10.0)])
    if query.startswith("sum(count_over_time(traces_span_metrics_calls_total"):
        return _vector([])
    if "STATUS_CODE_ERROR" in query and "increase" in query:
        return _vector([({"span_name": NODE}, 1.0)])
    if query.startswith("sum by (span_name) (increase(traces_spanmetrics_calls_total"):
        return _vector([({"span_name": PODS}, 8.0), ({"span_name": NODE}, 3.0)])
    m = re.match(r"histogram_quantile\(([0-9.]+), sum by \(le, span_name\)", query)
    if m:
        q = float(m.group(1))
        return _vector(
            [
                ({"span_name": PODS}, {0.5: 0.0035, 0.9: 0.0125, 0.99: 0.0301}[q]),
                ({"span_name": NODE}, {0.5: 0.0006, 0.9: 0.0011, 0.99: 0.0019}[q]),
            ]
        )
    if query.startswith("sum by (le, span_name) (increase(traces_spanmetrics_latency_bucket"):
        return _vector(
            [({"span_name": PODS, "le": str(le)}, 1.0) for le in SM_BOUNDS]
            + [({"span_name": PODS, "le": "+Inf"}, 8.0)]
        )
    if query.startswith("sum by (le, verb, group, version, resource, subresource, scope)"):
        labels = {
            "verb": "LIST",
            "group": "",
            "version": "v1",
            "resource": "pods",
            "subresource": "",
            "scope": "namespace",
        }
        return _vector(
            [
                ({**labels, "le": "+Inf" if le == INF else str(le)}, c)
                for le, c in API_BUCKETS.items()
            ]
        )
    raise AssertionError(f"unexpected query {query}")  # pragma: no cover


def serve(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
    path = rec.path.partition("?")[0]
    form = {k: v[0] for k, v in parse_qs(rec.body.decode() or rec.path.partition("?")[2]).items()}
    if path == "/api/search":
        body: Any = _search_body()
    elif path.startswith("/api/v1/label/__name__/values"):
        body = {
            "status": "success",
            "data": ["traces_spanmetrics_calls_total", "traces_spanmetrics_latency_bucket"],
        }
    elif path == "/api/v1/query":
        body = prom_answer(form["query"])
    elif path == "/api/v1/query_range":
        start, step = float(form["start"]), float(form["step"])
        body = {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [{"metric": {}, "values": [[start + i * step, "0"] for i in range(3)]}],
            },
        }
    elif path == "/api/v1/query_exemplars":
        tid = TRACE_IDS[0]
        end_s = (NOW - 600 + 1) + 1.5 / 1000  # the first span's end
        body = {
            "status": "success",
            "data": [
                {
                    "seriesLabels": {"span_name": PODS},
                    "exemplars": [
                        {"labels": {"traceID": tid}, "value": "0.0015", "timestamp": end_s + 7.25},
                        {
                            "labels": {"traceID": "f" * 32},
                            "value": "1",
                            "timestamp": NOW,
                        },  # not ours
                    ],
                }
            ],
        }
    else:  # pragma: no cover
        return 404, {}, b"not found"
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


@pytest.fixture
def report(http_server: TestServer) -> ApiserverReport:
    http_server.handler = serve
    settings = load_settings(flags={"tempo.url": http_server.url,
                                    "prometheus.url": http_server.url})  # fmt: skip
    return apiserver_report(settings, since="1h", clock=FakeClock(NOW))


def _row(report: ApiserverReport, endpoint: str) -> dict[str, Any]:
    frame = report.endpoints
    (rec,) = frame[frame["endpoint"] == endpoint].to_dict(orient="records")
    return rec


def test_trace_quantiles_equal_numpy_over_the_spans_served(report: ApiserverReport) -> None:
    for endpoint, durations in DURATIONS.items():
        row = _row(report, endpoint)
        assert row["traces_n"] == len(durations)  # the WATCH is left out
        want = np.percentile(durations, [50, 90, 99])  # linear, like pandas
        got = [row["traces_p50_ms"], row["traces_p90_ms"], row["traces_p99_ms"]]
        assert got == pytest.approx(list(want))
        assert row["traces_max_ms"] == max(durations)
    assert _row(report, NODE)["traces_error_pct"] == pytest.approx(100 / 3)
    assert any("1 WATCH/long-running spans left out" in n for n in report.notes)


def test_span_metric_columns_difference_and_bucket_caveat(report: ApiserverReport) -> None:
    pods = _row(report, PODS)
    assert (pods["sm_calls"], pods["sm_p50_ms"], pods["sm_p99_ms"]) == pytest.approx(
        (8.0, 3.5, 30.1)
    )
    assert pods["sm_error_pct"] == 0.0
    assert pods["p99_diff_ms"] == pytest.approx(30.1 - np.percentile(DURATIONS[PODS], 99))
    # The exact p99 (29.37 ms) lies in (16, 32] ms: the bucket is 16 ms wide.
    assert pods["sm_bucket_ms"] == 16.0 and pods["p99_within_bucket"] == "yes"
    node = _row(report, NODE)
    assert node["sm_error_pct"] == pytest.approx(100 / 3)
    assert report.naming == "tempo"
    assert report.sm_bounds_ms == tuple(b * 1000 for b in SM_BOUNDS)
    assert any("interpolated inside histogram buckets" in n for n in report.notes)


def test_apiserver_metric_quantiles_from_the_merged_buckets(report: ApiserverReport) -> None:
    pods = _row(report, PODS)
    assert pods["apiserver_n"] == 7.0
    buckets = list(API_BUCKETS.items())
    assert pods["apiserver_p99_ms"] == pytest.approx(histogram_quantile(0.99, buckets) * 1000)
    # By hand: rank 6.93 of 7 falls in (0.025, 0.05] holding 1 -> 25 + 25 * 0.93 ms.
    assert pods["apiserver_p99_ms"] == pytest.approx(48.25)
    # rank 3.5 falls in the first bucket (0, 0.005] holding 4 -> 5 ms * 3.5 / 4.
    assert pods["apiserver_p50_ms"] == pytest.approx(4.375)
    assert math.isnan(_row(report, NODE)["apiserver_p99_ms"])  # no series maps to it


def test_queries_are_recorded_and_evaluated_at_the_end(report: ApiserverReport) -> None:
    assert report.evaluated_at == NOW and report.start == NOW - 3600
    assert report.query("sm_p99").startswith(
        "histogram_quantile(0.99, sum by (le, span_name) (increase(traces_spanmetrics_latency_"
        'bucket{service="apiserver",span_kind="SPAN_KIND_SERVER"}[3600s])))'
    )
    assert report.query("traces").startswith(
        '{ resource.service.name = "apiserver" && kind = server }'
    )
    # Every HTTP attribute the latency table reads, under either semantic convention.
    selected = report.query("traces").rpartition("select(")[2].rstrip(")").split(", ")
    assert selected == [
        "span.http.method", "span.http.request.method", "span.http.target", "span.url.path",
        "span.url.query", "span.http.status_code", "span.http.response.status_code",
    ]  # fmt: skip


def test_delays_from_exemplars_of_found_traces(report: ApiserverReport) -> None:
    assert list(report.delays["stage"]) == ["span end -> span-metrics sample (exemplar)"]
    assert report.delays["delay_s"].tolist() == pytest.approx([7.25], abs=1e-3)


def test_error_series_from_three_sources(report: ApiserverReport) -> None:
    sources = set(report.errors["source"])
    assert sources == {"span-metrics", "apiserver 5xx", "traces"}
    traces = report.errors[report.errors["source"] == "traces"]
    # 11 spans found, the WATCH left out: 10 requests, one of them a 503.
    assert traces["requests"].sum() == 10
    total_errors = (traces["error_pct"] / 100 * traces["requests"]).sum()
    assert total_errors == pytest.approx(1.0)


def test_table_and_renderers(report: ApiserverReport, tmp_path: Any) -> None:
    table = report.table()
    assert table.columns == SUMMARY_COLUMNS
    assert [r["endpoint"] for r in table.rows] == [PODS, NODE]  # busiest first
    assert report.table(full=True).columns == ENDPOINT_COLUMNS
    text = render_table(table, "table")
    assert "interpolated inside histogram buckets" in text
    page = render_html(report)
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 3
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    # Self-contained: nothing is loaded from elsewhere.
    assert not re.search(r"""(src|href)=['"](https?:)?//""", page)
    assert "GET /api/v1/namespaces/{:namespace}/pods" in page
    write_html(report, str(tmp_path / "out" / "r.html"))
    write_png(report, str(tmp_path / "r.png"))
    assert (tmp_path / "out" / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


def test_empty_report_is_no_data_not_a_crash(http_server: TestServer) -> None:
    def empty(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        path = rec.path.partition("?")[0]
        if path == "/api/search":
            body: Any = {"traces": []}
        elif path.startswith("/api/v1/label"):
            body = {"status": "success", "data": []}
        elif path == "/api/v1/query_range":
            body = {"status": "success", "data": {"resultType": "matrix", "result": []}}
        else:
            body = {"status": "success", "data": {"resultType": "vector", "result": []}}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    http_server.handler = empty
    settings = load_settings(flags={"tempo.url": http_server.url,
                                    "prometheus.url": http_server.url})  # fmt: skip
    report = apiserver_report(settings, since="15m", service="nobody", clock=FakeClock(NOW))
    assert report.empty and report.naming == ""
    table = report.table()
    assert table.rows == ()
    assert table.notes[-1].startswith("no data: no spans or span-metrics of service 'nobody'")
    assert any("no span-metrics for service 'nobody'" in n for n in report.notes)
    assert any("not in Prometheus for this window" in n for n in report.notes)
    for chart in (chart_latency, chart_delays, chart_errors):
        assert chart(report).axes  # draws a "no data" panel
    assert "no data" in render_html(report)
