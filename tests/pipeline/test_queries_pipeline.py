"""Every saved query against the local pipeline (real collector, Prometheus 3.8, kube-apiserver,
the Tempo stand-in), plus ad-hoc TraceQL/PromQL and their bad inputs.

The data the queries need is made here: OTLP spans with a per-run service name go through the
collector (Tempo's span-metrics and service graphs) and through the span-metrics collector (the
connector's ``traces_span_metrics_*``), and real apiserver requests are made with the privileged
kubeconfig. PromQL answers are compared with ``promtool query instant`` against the same
Prometheus at the same evaluation time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from settle import settled

from tracecheck.config import Settings, load_settings
from tracecheck.errors import ExitCode, QueryError
from tracecheck.output import render_table
from tracecheck.polling import Probe, SystemClock, poll_until
from tracecheck.query.adhoc import run_promql, run_traceql
from tracecheck.query.saved import get_query, load_queries, run_saved
from tracecheck.query.syntax import PromQLSyntaxError
from tracecheck.results import ResultTable
from tracecheck.stack.local import LocalStack

pytestmark = [pytest.mark.pipeline, pytest.mark.slow]

RUN = uuid.uuid4().hex[:8]
SERVICE = f"tcq-{RUN}"  # via the collector -> Tempo (span-metrics, service graph)
CLIENT = f"tcq-client-{RUN}"
OTEL_SERVICE = f"tcq-otel-{RUN}"  # via the span-metrics collector (connector names)
PODS = "GET /api/v1/namespaces/{:namespace}/pods"
NODE = "GET /api/v1/nodes/{:name}"
# Known durations (ms): PODS answers 200, NODE 500 (status error).
PODS_MS = [3.0, 5.0, 6.0, 9.0, 12.0, 20.0, 35.0, 70.0]
NODE_MS = [1.5, 2.5]
ETCD = (("etcdserverpb.KV/Range", "SPAN_KIND_CLIENT", 0.8), ("List(recursive=true) etcd3",
        "SPAN_KIND_INTERNAL", 1.2))  # fmt: skip
SHIPPED = load_queries()


@dataclass(frozen=True)
class Sent:
    settings: Settings
    audit_id: str
    promtool: Path
    at: int  # an evaluation time whose samples have all arrived


def _attr(key: str, value: Any) -> Any:
    from opentelemetry.proto.common.v1 import common_pb2

    kv = common_pb2.KeyValue(key=key)
    if isinstance(value, int):
        kv.value.int_value = value
    else:
        kv.value.string_value = str(value)
    return kv


def build_request(service: str, client: str | None, audit_id: str) -> Any:
    """SERVER spans of two endpoints with known durations (each a trace; the first of each
    endpoint has a CLIENT parent in ``client`` for a service-graph edge), etcd child spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1 import trace_pb2

    req = ExportTraceServiceRequest()
    server_rs = req.resource_spans.add()
    server_rs.resource.attributes.append(_attr("service.name", service))
    server = server_rs.scope_spans.add().spans
    client_spans = None
    if client:
        client_rs = req.resource_spans.add()
        client_rs.resource.attributes.append(_attr("service.name", client))
        client_spans = client_rs.scope_spans.add().spans
    # End times a little in the past: the generator drops spans ending outside +-30 s of its
    # clock (docs/reference/tempo.md §11.3).
    end_ns = time.time_ns() - 2 * 10**9
    items = [(PODS, ms, 200) for ms in PODS_MS] + [(NODE, ms, 500) for ms in NODE_MS]
    for i, (name, ms, status) in enumerate(items):
        trace_id, span_id = os.urandom(16), os.urandom(8)
        start = end_ns - int(ms * 1e6)
        span = server.add(trace_id=trace_id, span_id=span_id, name=name,
                          kind=trace_pb2.Span.SPAN_KIND_SERVER,
                          start_time_unix_nano=start, end_time_unix_nano=end_ns)  # fmt: skip
        target = "/api/v1/namespaces/default/pods?limit=1" if name == PODS else "/api/v1/nodes/n1"
        span.attributes.extend([_attr("http.method", "GET"), _attr("http.target", target),
                                _attr("http.status_code", status)])  # fmt: skip
        if status >= 500:
            span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
            span.attributes.append(_attr("audit-id", audit_id))
        if client_spans is not None and i in (0, len(PODS_MS)):
            parent = os.urandom(8)
            span.parent_span_id = parent
            client_spans.add(trace_id=trace_id, span_id=parent, name=name,
                             kind=trace_pb2.Span.SPAN_KIND_CLIENT,
                             start_time_unix_nano=start - 100_000,
                             end_time_unix_nano=end_ns + 100_000)  # fmt: skip
        if i == 0:
            for etcd_name, kind, etcd_ms in ETCD:
                server.add(trace_id=trace_id, span_id=os.urandom(8), parent_span_id=span_id,
                           name=etcd_name, kind=trace_pb2.Span.SpanKind.Value(kind),
                           start_time_unix_nano=start + 100_000,
                           end_time_unix_nano=start + 100_000 + int(etcd_ms * 1e6))  # fmt: skip
    return req


def wait_for(what: str, probe: Any, deadline: float = 120.0) -> Any:
    outcome = poll_until(probe, deadline, SystemClock(), initial=0.5, cap=3.0)
    assert outcome.ok, f"{what} not seen within {deadline:.0f} s; last: {outcome.seen}"
    return outcome.value


@pytest.fixture(scope="module")
def sent(local_pipeline: LocalStack) -> Sent:
    from tracecheck.backends.apiserver import ApiserverClient, load_credentials, traceparent
    from tracecheck.backends.collector import CollectorClient

    settings = load_settings(flags={"apiserver.kubeconfig": str(local_pipeline.kubeconfig)})
    audit_id = str(uuid.uuid4())
    with CollectorClient(settings.collector) as collector:
        result = collector.export(build_request(SERVICE, CLIENT, audit_id))
        assert result.accepted_spans > 0
    spanmetrics = settings.replace(**{"collector.endpoint": "127.0.0.1:4327"})
    with CollectorClient(spanmetrics.collector) as collector:
        collector.export(build_request(OTEL_SERVICE, None, str(uuid.uuid4())))
    # Real apiserver requests for the apiserver_request_duration_seconds query (sampled: a
    # trusted traceparent is always traced, docs/reference/apiserver.md §4).
    creds = load_credentials(str(local_pipeline.kubeconfig))
    with ApiserverClient(creds) as api:
        for _ in range(10):
            api.send("GET", "/api/v1/namespaces/default/configmaps",
                     traceparent=traceparent(os.urandom(16), os.urandom(8)))  # fmt: skip

    def searchable() -> Probe[None]:
        t = run_traceql(settings, f'{{ resource.service.name = "{SERVICE}" }}', since="10m",
                        limit=50)  # fmt: skip
        return Probe(len(t.rows) >= len(PODS_MS) + len(NODE_MS), None, f"{len(t.rows)} rows")

    def in_prometheus() -> Probe[None]:
        q = (f'sum(traces_spanmetrics_calls_total{{service="{SERVICE}"}}) + '
             f'sum(traces_span_metrics_calls_total{{service_name="{OTEL_SERVICE}"}}) + '
             f'sum(traces_service_graph_request_total{{server="{SERVICE}"}}) + '
             'sum(apiserver_request_duration_seconds_count{resource="configmaps"})')  # fmt: skip
        t = run_promql(settings, q)
        return Probe(not t.empty, None, "span-metrics, service graph or apiserver missing")

    wait_for("spans in Tempo search", searchable, 60.0)
    wait_for("span-metrics, connector metrics and service graph in Prometheus", in_prometheus)
    # rate() over the window needs two samples of each series, and PromQL is evaluated at a
    # time before which every sample has arrived by remote write (docs/reference/tempo.md
    # §11.3): polled, not slept.
    at = settled(
        settings,
        [
            f'traces_spanmetrics_calls_total{{service="{SERVICE}"}}',
            f'traces_span_metrics_calls_total{{service_name="{OTEL_SERVICE}"}}',
            f'traces_service_graph_request_total{{server="{SERVICE}"}}',
            'apiserver_request_duration_seconds_count{resource="configmaps"}',
        ],
    )
    return Sent(settings, audit_id, local_pipeline.binary("promtool"), at)


# -- every saved query ---------------------------------------------------------------------------

PARAMS: dict[str, dict[str, str]] = {
    "apiserver-slowest-requests": {"service": SERVICE, "min_duration": "1ms"},
    "apiserver-error-spans": {"service": SERVICE},
    "apiserver-latency-traceql": {"service": SERVICE},
    "etcd-latency": {"service": SERVICE},
    "apiserver-latency-spanmetrics": {"service": SERVICE, "window": "10m"},
    "apiserver-latency-spanmetrics-otel": {"service": OTEL_SERVICE, "window": "10m"},
    "red-per-service": {"window": "10m"},
    "red-per-service-otel": {"window": "10m"},
    "service-graph-edges": {"window": "10m"},
    "apiserver-request-duration": {"window": "10m"},
    "pipeline-health": {},
}
# The rows that come from this run's data (other rows may come from other tests and traffic).
OURS: dict[str, Mapping[str, str]] = {
    "red-per-service": {"service": SERVICE},
    "red-per-service-otel": {"service_name": OTEL_SERVICE},
    "service-graph-edges": {"client": CLIENT, "server": SERVICE},
    "apiserver-request-duration": {"verb": "LIST", "resource": "configmaps"},
}


def test_every_shipped_query_has_test_parameters() -> None:
    assert set(PARAMS) | {"apiserver-trace-by-audit-id"} == {q.name for q in SHIPPED}


def _run(sent: Sent, name: str) -> ResultTable:
    params = dict(PARAMS.get(name, {}))
    if name == "apiserver-trace-by-audit-id":
        params["audit_id"] = sent.audit_id
    q = get_query(name, SHIPPED)
    if q.language == "traceql":
        return run_saved(sent.settings, name, params, since="10m", queries=SHIPPED)
    return run_saved(sent.settings, name, params, queries=SHIPPED)


@pytest.mark.parametrize("name", [q.name for q in SHIPPED])
def test_saved_query_runs_and_returns_its_declared_columns(sent: Sent, name: str) -> None:
    q = get_query(name, SHIPPED)
    table = _run(sent, name)
    assert table.columns == q.columns
    assert not any(n.startswith("column(s) not in the result") for n in table.notes), table.notes
    want = OURS.get(name, {})
    rows = [r for r in table.rows if all(r.get(k) == v for k, v in want.items())]
    assert rows, f"{name}: no rows of this run's data; notes: {table.notes}"
    for column in q.columns:
        values = [r[column] for r in rows if r.get(column) is not None]
        assert values, f"{name}: column {column} is empty in {rows}"


def test_search_queries_return_the_spans_sent(sent: Sent) -> None:
    slowest = _run(sent, "apiserver-slowest-requests")
    durations = slowest.column("span_duration_ms")
    assert durations == sorted(durations, reverse=True)  # the file sorts slowest first
    assert sorted(round(d, 3) for d in durations) == sorted(PODS_MS + NODE_MS)
    assert set(slowest.column("http.target")) == {"/api/v1/namespaces/default/pods?limit=1",
                                                  "/api/v1/nodes/n1"}  # fmt: skip
    errors = _run(sent, "apiserver-error-spans")
    assert sorted(errors.column("span_duration_ms")) == pytest.approx(NODE_MS)
    assert set(errors.column("http.status_code")) == {500}
    by_audit = _run(sent, "apiserver-trace-by-audit-id")
    assert sorted(by_audit.column("span_duration_ms")) == pytest.approx(NODE_MS)


def test_traceql_metrics_queries_see_the_spans_sent(sent: Sent) -> None:
    import numpy as np

    latency = {r["name"]: r for r in _run(sent, "apiserver-latency-traceql").rows}
    assert set(latency) == {PODS, NODE}
    for name, sent_ms in ((PODS, PODS_MS), (NODE, NODE_MS)):
        # TraceQL quantiles are estimates (Tempo: log2 buckets); they stay within the span's
        # range, and order p50 <= p90 <= p99.
        row = latency[name]
        assert row["p50_s"] <= row["p90_s"] <= row["p99_s"]
        assert min(sent_ms) / 2 <= row["p50_s"] * 1000 <= max(sent_ms) * 2
        assert row["p99_s"] * 1000 <= max(sent_ms) * 2
        assert np.median(sent_ms) / 2 <= row["p50_s"] * 1000
    etcd = {r["name"] for r in _run(sent, "etcd-latency").rows}
    assert etcd == {name for name, _, _ in ETCD}


# -- PromQL: equal to promtool -------------------------------------------------------------------


def promtool_instant(
    promtool: Path, query: str, at: int
) -> dict[frozenset[tuple[str, str]], float]:
    proc = subprocess.run(
        [str(promtool), "query", "instant", "-o", "json", f"--time={at}",
         "http://127.0.0.1:9090", query],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    return {frozenset(item["metric"].items()): float(item["value"][1]) for item in data}


def ours_instant(
    settings: Settings, query: str, at: int
) -> dict[frozenset[tuple[str, str]], float]:
    table = run_promql(settings, query, at=str(at), max_rows=None)
    labels = [c for c in table.columns if c not in ("time", "value")]
    return {
        frozenset((k, r[k]) for k in labels if r.get(k) is not None): r["value"] for r in table.rows
    }


def _same(a: Mapping[Any, float], b: Mapping[Any, float]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], rel=1e-12) for k in a
    )


@pytest.mark.parametrize("name", [q.name for q in SHIPPED if q.language == "promql"])
def test_promql_answers_equal_promtool(sent: Sent, name: str) -> None:
    text = get_query(name, SHIPPED).render(PARAMS[name])
    ours = ours_instant(sent.settings, text, sent.at)
    theirs = promtool_instant(sent.promtool, text, sent.at)
    assert ours, f"{name}: no data"
    assert _same(ours, theirs), f"{name}:\nours   {ours}\npromtool {theirs}"


# -- ad-hoc queries and bad input ----------------------------------------------------------------


def test_invalid_traceql_is_the_backends_400_in_one_line(sent: Sent) -> None:
    with pytest.raises(QueryError) as err:
        run_traceql(sent.settings, "{ resource.service.name = }", since="5m")
    message = str(err.value)
    assert message.startswith("tempo at http://")
    assert "HTTP 400: invalid TraceQL query: parse error at line 1, col" in message
    assert "(near " in message and "\n" not in message
    assert err.value.exit_code is ExitCode.CONFIG


def test_search_query_sent_as_metrics_is_refused(sent: Sent) -> None:
    with pytest.raises(QueryError, match="not a metrics query"):
        run_traceql(sent.settings, f'{{ resource.service.name = "{SERVICE}" }}', metrics=True)


def test_traceql_metrics_range_rows(sent: Sent) -> None:
    table = run_traceql(sent.settings, f'{{ resource.service.name = "{SERVICE}" && kind = server }}'
                        " | count_over_time() by (name)", since="10m", metrics=True,
                        step="60s")  # fmt: skip
    assert table.columns == ("name", "time", "value")
    per_name: dict[str, float] = {}
    for r in table.rows:
        per_name[r["name"]] = per_name.get(r["name"], 0.0) + r["value"]
    assert per_name == {PODS: len(PODS_MS), NODE: len(NODE_MS)}


def test_invalid_promql_is_refused_by_prometheus_at_its_position(sent: Sent) -> None:
    with pytest.raises(PromQLSyntaxError) as err:
        run_promql(sent.settings, "sum(rate(up[5m])) by (job")
    # Prometheus's verdict and position (the end of input), not a local parser's.
    assert (err.value.line, err.value.col) == (1, 26)
    assert err.value.message == "parse error: unclosed left parenthesis"
    assert str(err.value).startswith("prometheus at http://localhost:9090/api/v1/query: bad_data:")


def test_promql_prometheus_refuses_is_one_line(sent: Sent) -> None:
    # promql-parser accepts it; Prometheus refuses it when evaluating (several `up` series on
    # each side match the empty group).
    with pytest.raises(QueryError) as err:
        run_promql(sent.settings, "up * on() up")
    message = str(err.value)
    assert message.startswith("prometheus at http://localhost:9090/api/v1/query: execution: ")
    assert "execution: found duplicate series" in message and "\n" not in message


def test_range_over_the_point_limit_is_refused(sent: Sent) -> None:
    with pytest.raises(QueryError, match="over Prometheus's limit of 11,000; use --step 236s"):
        run_promql(sent.settings, "up", range_="30d", step="15s")


def test_range_query_rows(sent: Sent) -> None:
    # vector(1) has a point at every step whatever the pipeline's age: 5m / 30s + 1 (both ends
    # are inclusive in query_range).
    table = run_promql(sent.settings, "vector(1)", range_="5m", step="30s")
    assert table.kind == "promql-matrix"
    assert len(table.rows) == 11 and set(table.column("value")) == {1.0}
    times = table.column("time")
    assert times == sorted(times) and len(set(times)) == 11


def test_empty_results_are_no_data_not_errors(sent: Sent) -> None:
    table = run_promql(sent.settings, f'up{{job="nobody-{RUN}"}}')
    assert table.empty and table.notes[0].startswith("no data: the query returned no series")
    assert render_table(table, "table").startswith("no data:")
    saved = run_saved(sent.settings, "apiserver-error-spans", {"service": f"nobody-{RUN}"},
                      since="5m", queries=SHIPPED)  # fmt: skip
    assert saved.empty and saved.notes[0].startswith("no data: no trace matched")


def test_unknown_name_and_missing_parameter(sent: Sent) -> None:
    with pytest.raises(QueryError, match="no saved query 'nope'"):
        run_saved(sent.settings, "nope", queries=SHIPPED)
    with pytest.raises(QueryError, match="missing parameter audit_id"):
        run_saved(sent.settings, "apiserver-trace-by-audit-id", since="5m", queries=SHIPPED)
