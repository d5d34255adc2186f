"""The apiserver latency table: attribute keys matched loosely, verbs derived like the
apiserver's RequestInfo, WATCH excluded by default, percentiles and error % asserted by value."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

from tracecheck.backends.tempo import SearchSpan, Span
from tracecheck.latency.table import (
    COLUMNS,
    PERCENTILES,
    TABLE_COLUMNS,
    latency_rows,
    latency_table,
    parse_request,
    spans_frame,
)

T0 = 1_700_000_000_000_000_000


def server_span(
    name: str,
    ms: float,
    attrs: dict[str, Any],
    *,
    status: str = "STATUS_CODE_UNSET",
    kind: str = "SPAN_KIND_SERVER",
    i: int = 1,
) -> Span:
    return Span(
        trace_id=bytes(15) + bytes([i % 256]),
        span_id=bytes(7) + bytes([i % 256]),
        parent_span_id=b"",
        name=name,
        kind=kind,
        start_ns=T0,
        end_ns=T0 + int(ms * 1e6),
        status_code=status,
        status_message="",
        attributes=attrs,
        resource={"service.name": "apiserver"},
        scope_name="otelhttp",
    )


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("GET", "/api/v1/namespaces/default", ("GET", "namespaces", False, False)),
        ("GET", "/api/v1/namespaces", ("LIST", "namespaces", False, False)),
        ("GET", "/api/v1/namespaces/default/pods?limit=1", ("LIST", "pods", False, False)),
        ("GET", "/api/v1/namespaces/default/pods/web-0", ("GET", "pods", False, False)),
        ("HEAD", "/api/v1/nodes/n1", ("GET", "nodes", False, False)),
        ("GET", "/api/v1/pods?watch=true&resourceVersion=5", ("WATCH", "pods", True, True)),
        ("GET", "/api/v1/pods?watch=1", ("WATCH", "pods", True, True)),
        ("GET", "/api/v1/pods?watch=", ("WATCH", "pods", True, True)),
        ("GET", "/api/v1/pods?watch=false", ("LIST", "pods", False, False)),
        ("GET", "/api/v1/pods?watch=0&watch=1", ("LIST", "pods", False, False)),
        ("GET", "/api/v1/watch/namespaces/default/pods", ("WATCH", "pods", True, True)),
        ("GET", "/apis/apps/v1/namespaces/x/deployments/d/status", ("GET", "deployments", False,
                                                                    False)),
        ("POST", "/api/v1/namespaces/default/configmaps", ("POST", "configmaps", False, False)),
        ("PUT", "/api/v1/namespaces/default/configmaps/c", ("PUT", "configmaps", False, False)),
        ("PATCH", "/api/v1/nodes/n1", ("PATCH", "nodes", False, False)),
        ("DELETE", "/api/v1/namespaces/default/configmaps", ("DELETE", "configmaps", False,
                                                             False)),
        ("PUT", "/api/v1/namespaces/ns1/finalize", ("PUT", "namespaces", False, False)),
        ("POST", "/api/v1/namespaces/d/pods/p/exec?command=ls", ("CONNECT", "pods", False, True)),
        ("GET", "/api/v1/namespaces/d/pods/p/log?follow=true", ("CONNECT", "pods", False, True)),
        ("GET", "/api/v1/namespaces/d/services/s/proxy/x", ("CONNECT", "services", False, True)),
        ("GET", "/readyz", ("GET", "", False, False)),
        ("GET", "/version", ("GET", "", False, False)),
        ("GET", "/apis/apps/v1", ("GET", "", False, False)),
        ("POST", "/apis/authentication.k8s.io/v1", ("POST", "", False, False)),
        ("get", "/api/v1/nodes", ("LIST", "nodes", False, False)),
    ],
)  # fmt: skip
def test_parse_request_follows_request_info(
    method: str, target: str, expected: tuple[str, str, bool, bool]
) -> None:
    assert parse_request(method, target) == expected


def test_frame_reads_old_and_new_semantic_convention_keys() -> None:
    old = server_span(
        "GET /api/v1/namespaces/{:namespace}/pods",
        12.5,
        {
            "http.method": "GET",
            "http.target": "/api/v1/namespaces/default/pods?limit=1",
            "http.status_code": 200,
            "user_agent.original": "tracecheck/0.1",
            "audit-id": "a-1",
        },
    )
    new = server_span(
        "GET /api/v1/namespaces/{:namespace}/pods",
        3.0,
        {
            "http.request.method": "GET",
            "url.path": "/api/v1/namespaces/default/pods",
            "url.query": "watch=true",
            "http.response.status_code": "200",
            "http.user_agent": "kubectl/v1.34",
        },
        i=2,
    )
    frame = spans_frame([old, new])
    assert list(frame.columns) == list(COLUMNS)
    first, second = frame.to_dict(orient="records")
    assert first["verb"] == "LIST" and first["resource"] == "pods"
    assert first["http_method"] == "GET"
    assert first["target"] == "/api/v1/namespaces/default/pods?limit=1"
    assert first["user_agent"] == "tracecheck/0.1"
    assert first["audit_id"] == "a-1"
    assert first["status_code"] == 200
    assert first["kind"] == "SERVER" and first["service"] == "apiserver"
    assert first["duration_ms"] == 12.5
    assert not first["is_watch"] and not first["long_running"]
    assert first["trace_id"] == "00" * 15 + "01" and first["span_id"] == "00" * 7 + "01"
    assert second["target"] == "/api/v1/namespaces/default/pods?watch=true"
    assert second["verb"] == "WATCH" and bool(second["is_watch"]) and bool(second["long_running"])
    assert second["user_agent"] == "kubectl/v1.34"
    assert second["status_code"] == 200


def test_handler_spans_carry_their_own_verb_and_resource() -> None:
    child = server_span(
        "List", 4.0, {"verb": "list", "resource": "pods"}, kind="SPAN_KIND_INTERNAL"
    )
    row = spans_frame([child]).iloc[0]
    assert (row["kind"], row["verb"], row["resource"]) == ("INTERNAL", "LIST", "pods")
    assert row["http_method"] == "" and row["target"] == ""
    assert pd.isna(row["status_code"])


def test_search_spans_are_accepted() -> None:
    hit = SearchSpan(
        span_id=bytes.fromhex("0102030405060708"),
        name="GET",
        start_ns=T0,
        duration_ns=2_500_000,
        attributes={"http.target": "/readyz", "http.method": "GET"},
    )
    row = spans_frame([hit]).iloc[0]
    assert row["name"] == "GET" and row["duration_ms"] == 2.5
    assert row["span_id"] == "0102030405060708" and row["trace_id"] == ""
    assert row["service"] == "" and row["kind"] == ""


@dataclass
class Plain:
    """Anything span-shaped: only name, attributes and start/end."""

    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


def test_duration_falls_back_to_start_and_end() -> None:
    row = spans_frame([Plain("x", T0, T0 + 7_000_000)]).iloc[0]
    assert row["duration_ms"] == 7.0


def test_percentiles_count_max_by_value() -> None:
    spans = [
        server_span("GET", float(ms), {"http.method": "GET", "http.target": "/readyz"}, i=ms)
        for ms in range(1, 101)
    ]
    table = latency_table(spans_frame(spans))
    assert list(table.columns) == ["name", *TABLE_COLUMNS]
    assert TABLE_COLUMNS == ("count", "error_pct", "p50_ms", "p90_ms", "p99_ms", "max_ms")
    assert PERCENTILES == (0.5, 0.9, 0.99)
    row = table.iloc[0]
    assert row["count"] == 100
    # Linear interpolation over 1..100 ms: p50 = 50.5, p90 = 90.1, p99 = 99.01.
    assert row["p50_ms"] == pytest.approx(50.5)
    assert row["p90_ms"] == pytest.approx(90.1)
    assert row["p99_ms"] == pytest.approx(99.01)
    assert row["max_ms"] == 100.0
    assert row["error_pct"] == 0.0


def test_errors_are_5xx_or_error_status_not_4xx() -> None:
    def span(status: int, otel: str = "STATUS_CODE_UNSET") -> Span:
        attrs = {"http.method": "GET", "http.target": "/version", "http.status_code": status}
        return server_span("GET", 1.0, attrs, status=otel)

    spans = [span(200), span(403), span(404), span(500), span(200, "STATUS_CODE_ERROR")]
    rows = latency_rows(spans)
    assert rows == [
        {
            "name": "GET",
            "count": 5,
            "error_pct": 40.0,
            "p50_ms": 1.0,
            "p90_ms": 1.0,
            "p99_ms": 1.0,
            "max_ms": 1.0,
        }
    ]


def test_watch_is_excluded_unless_asked() -> None:
    name = "GET /api/v1/namespaces/{:namespace}/pods"
    lists = [
        server_span(name, 5.0, {"http.method": "GET", "http.target": "/api/v1/namespaces/d/pods"})
        for _ in range(3)
    ]
    watch = server_span(
        name, 60_000.0, {"http.method": "GET", "http.target": "/api/v1/namespaces/d/pods?watch=1"}
    )
    frame = spans_frame([*lists, watch])
    without = latency_table(frame, by=("name", "verb"))
    assert without[["name", "verb", "count", "max_ms"]].values.tolist() == [[name, "LIST", 3, 5.0]]
    with_watch = latency_table(frame, by=("name", "verb"), include_watch=True)
    assert with_watch[["verb", "count", "max_ms"]].values.tolist() == [
        ["LIST", 3, 5.0],
        ["WATCH", 1, 60_000.0],
    ]
    merged = latency_table(frame, include_watch=True)
    assert merged.iloc[0]["count"] == 4 and merged.iloc[0]["max_ms"] == 60_000.0


def test_rows_are_ordered_by_count_then_keys_and_json_safe() -> None:
    spans = [server_span("b", 1.0, {}), server_span("a", 2.0, {}), server_span("c", 3.0, {})]
    spans += [server_span("c", 5.0, {})]
    rows = latency_rows(spans, by=("name", "service"))
    assert [(r["name"], r["count"]) for r in rows] == [("c", 2), ("a", 1), ("b", 1)]
    assert rows[0]["service"] == "apiserver" and rows[0]["p50_ms"] == 4.0
    json.dumps(rows)  # plain Python values only
    assert all(type(r["count"]) is int for r in rows)


def test_empty_input_gives_an_empty_table_with_the_columns() -> None:
    frame = spans_frame([])
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 0
    table = latency_table(frame, by=("name", "verb"))
    assert list(table.columns) == ["name", "verb", *TABLE_COLUMNS] and len(table) == 0
    assert latency_rows([]) == []


def test_unknown_group_column_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown column\(s\) \['nope'\]"):
        latency_table(spans_frame([]), by=("nope",))
