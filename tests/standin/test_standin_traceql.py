"""TraceQL subset: table tests of accepted queries (with the spans they match) and of rejected
queries (with Tempo's ``parse error at line 1, col N`` text), plus a pass through HTTP."""

from __future__ import annotations

import time

import pytest
from standin_helpers import (
    CLIENT,
    ERROR,
    INTERNAL,
    OK,
    SERVER,
    Running,
    SpanSpec,
    export_request,
    get_json,
    poll,
    send_grpc,
)
from tempo_standin.model import SpanRecord
from tempo_standin.otlp import records_from_request
from tempo_standin.traceql import TraceQLError, TraceView, evaluate, parse

TID = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
LINK_TID = bytes.fromhex("00aa" + "bb" * 14)
ROOT, KV, LIST, ETCD = (bytes([0, 0, 0, 0, 0, 0, 0, n]) for n in (1, 2, 3, 4))


def _trace() -> tuple[TraceView, list[SpanRecord]]:
    t0 = time.time_ns() - 1_000_000_000
    api = export_request(
        "apiserver",
        [
            SpanSpec(
                TID,
                ROOT,
                "GET /api/v1/pods",
                SERVER,
                start_ns=t0,
                duration_ns=150_000_000,
                attrs={
                    "http.method": "GET",
                    "http.status_code": 200,
                    "audit-id": "abc-123",
                    "http.target": "/api/v1/pods?watch=true",
                    "sampled": True,
                    "ratio": 0.25,
                },
                links=[(LINK_TID, b"\x00\x11\x22\x33\x44\x55\x66\x77")],
            ),
            SpanSpec(
                TID,
                KV,
                "etcdserverpb.KV/Range",
                CLIENT,
                parent=ROOT,
                start_ns=t0 + 10_000_000,
                duration_ns=5_000_000,
                status=ERROR,
                status_message="deadline",
                attrs={"rpc.system": "grpc", "db.system": "etcd"},
            ),
            SpanSpec(
                TID,
                LIST,
                "List",
                INTERNAL,
                parent=ROOT,
                start_ns=t0 + 20_000_000,
                duration_ns=50_000_000,
                status=OK,
                attrs={"resource": "pods", "verb": "list", "tags": ["a", "b"]},
            ),
        ],
        resource={"k8s.ns": "default"},
    )
    etcd = export_request(
        "etcd",
        [
            SpanSpec(
                TID,
                ETCD,
                "Range",
                SERVER,
                parent=KV,
                start_ns=t0 + 11_000_000,
                duration_ns=3_000_000,
            )
        ],
    )
    records = records_from_request(api, time.time())[0] + records_from_request(etcd, time.time())[0]
    return TraceView.of(TID, records), records


ALL = ["GET /api/v1/pods", "etcdserverpb.KV/Range", "Range", "List"]
START_ORDER = ALL

ACCEPTED: list[tuple[str, list[str]]] = [
    ("{}", ALL),
    ("{ }", ALL),
    ('{ name = "List" }', ["List"]),
    ('{ span:name = "List" }', ["List"]),
    ('{ name =~ "etcd.*" }', ["etcdserverpb.KV/Range"]),
    ('{ name =~ "KV" }', []),  # §13 (2.7.0): regexes are fully anchored
    ('{ name !~ "etcd.*" }', ["GET /api/v1/pods", "Range", "List"]),
    ("{ status = error }", ["etcdserverpb.KV/Range"]),
    ("{ span:status = ok }", ["List"]),
    ("{ status = unset }", ["GET /api/v1/pods", "Range"]),
    ("{ kind = server }", ["GET /api/v1/pods", "Range"]),
    ("{ span:kind = client }", ["etcdserverpb.KV/Range"]),
    ("{ kind != server }", ["etcdserverpb.KV/Range", "List"]),
    ("{ duration > 100ms }", ["GET /api/v1/pods"]),
    ("{ span:duration >= 50ms && duration < 1s }", ["GET /api/v1/pods", "List"]),
    ("{ duration <= 3ms }", ["Range"]),
    ("{ duration > 0.1s }", ["GET /api/v1/pods"]),
    ("{ duration < 1.5ms }", []),
    ("{ span.http.status_code = 200 }", ["GET /api/v1/pods"]),
    ("{ span.http.status_code = 200.0 }", ["GET /api/v1/pods"]),
    ("{ 200 = span.http.status_code }", ["GET /api/v1/pods"]),
    ("{ span.http.status_code >= 200 && span.http.status_code < 300 }", ["GET /api/v1/pods"]),
    ('{ span.http.status_code = "200" }', []),  # different types never match
    ("{ span.http.status_code != 404 }", ["GET /api/v1/pods"]),  # absent attribute: no match
    ('{ .http.method = "GET" }', ["GET /api/v1/pods"]),
    ('{ .service.name = "etcd" }', ["Range"]),  # unscoped falls back to the resource
    (
        '{ resource.service.name = "apiserver" }',
        ["GET /api/v1/pods", "etcdserverpb.KV/Range", "List"],
    ),
    ('{ resource.k8s.ns = "default" && kind = internal }', ["List"]),
    ('{ span."audit-id" = "abc-123" }', ["GET /api/v1/pods"]),
    ('{ span.http.target !~ ".*watch=.*" }', []),
    ('{ span.http.target =~ ".*watch=true" }', ["GET /api/v1/pods"]),
    ("{ span.sampled = true }", ["GET /api/v1/pods"]),
    ("{ span.ratio > 0.2 }", ["GET /api/v1/pods"]),
    ('{ span.tags = "b" }', ["List"]),  # arrays match when an element does
    ("{ span.http.method != nil }", ["GET /api/v1/pods"]),
    ('{ rootServiceName = "apiserver" }', ALL),
    ('{ rootName = "GET /api/v1/pods" && kind = client }', ["etcdserverpb.KV/Range"]),
    (
        '{ trace:rootService = "apiserver" && trace:rootName =~ "GET.*" && kind = server }',
        ["GET /api/v1/pods", "Range"],
    ),
    ("{ traceDuration > 100ms }", ALL),
    ("{ trace:duration < 100ms }", []),
    (f'{{ trace:id = "{TID.hex()}" && kind = server }}', ["GET /api/v1/pods", "Range"]),
    (f'{{ trace:id = "{TID.hex().lstrip("0")}" && name = "List" }}', ["List"]),
    (f'{{ link:traceID = "{LINK_TID.hex()}" }}', ["GET /api/v1/pods"]),
    (f'{{ link:traceID = "{LINK_TID.hex().upper()}" }}', ["GET /api/v1/pods"]),
    ('{ link:spanID = "0011223344556677" }', ["GET /api/v1/pods"]),
    ('{ span:id = "0000000000000003" }', ["List"]),
    ('{ statusMessage = "deadline" }', ["etcdserverpb.KV/Range"]),
    ('{ (name = "List" || name = "Range") && kind = internal }', ["List"]),
    ('{ name = "List" || (kind = server && resource.service.name = "etcd") }', ["Range", "List"]),
    ('{ name = "List" } && { kind = server }', ["GET /api/v1/pods", "Range", "List"]),
    ('{ name = "List" } && { name = "nope" }', []),
    ('{ name = "nope" } || { name = "List" }', ["List"]),
    (
        '({ name = "List" } || { name = "x" }) && { kind = client }',
        ["etcdserverpb.KV/Range", "List"],
    ),
    (
        "{ kind = server } | select(span.http.method, resource.service.name)",
        ["GET /api/v1/pods", "Range"],
    ),
    ('{ name = "List" } with (most_recent=true)', ["List"]),
    ("{ true }", ALL),
    ("{ false }", []),
    ("{ span.ratio > -1 }", ["GET /api/v1/pods"]),
    ("{ `etcdserverpb.KV/Range` = name }", ["etcdserverpb.KV/Range"]),
]


@pytest.mark.parametrize(("query", "expected"), ACCEPTED, ids=[q for q, _ in ACCEPTED])
def test_accepted_queries_match_the_expected_spans(query: str, expected: list[str]) -> None:
    view, _ = _trace()
    matched = evaluate(parse(query), view)
    # The spanset is ordered by start time.
    assert [s.name for s in matched] == [n for n in START_ORDER if n in expected]


REJECTED: list[tuple[str, int, str]] = [
    ("blerg", 1, "syntax error: unexpected IDENTIFIER"),
    ("{ .a = }", 8, "syntax error: unexpected CLOSE_BRACE"),
    ("{ .a = 1", 9, "syntax error: unexpected $end"),
    ("", 1, "syntax error: unexpected $end"),
    ("{ name = 1 }", 8, "binary operations must operate on the same type: name = 1"),
    ("{ kind = error }", 8, "binary operations must operate on the same type: kind = error"),
    ("{ status > error }", 10, "illegal operation for the given type: status > error"),
    ("{ .a = 1 } >> { .b = 2 }", 12, "unsupported by the Tempo stand-in: structural operator >>"),
    ("{ .a = 1 } ~ { .b = 2 }", 12, "unsupported by the Tempo stand-in: structural operator ~"),
    ("{ .a = 1 } | count() > 1", 14, "unsupported by the Tempo stand-in: count()"),
    ("{ .a = 1 } | avg(duration) > 1s", 14, "unsupported by the Tempo stand-in: avg()"),
    ("{ .a = 1 } | by(.x)", 14, "unsupported by the Tempo stand-in: by()"),
    ("{ .a + 1 = 2 }", 6, "unsupported by the Tempo stand-in: arithmetic +"),
    ('{ event.name = "x" }', 3, "unsupported by the Tempo stand-in: event. attributes"),
    ('{ event:name = "x" }', 3, "unsupported by the Tempo stand-in: intrinsic event:name"),
    ("{ childCount > 1 }", 3, "unsupported by the Tempo stand-in: intrinsic childCount"),
    ("{ !(.a = 1) }", 3, "unsupported by the Tempo stand-in: negation !"),
    ('{ .a =~ "(" }', 6, "error parsing regexp: "),
    ("{ name }", 3, "unsupported by the Tempo stand-in: a field without a comparison"),
    (
        '{ name = "a" } | rate() | count_over_time()',
        25,
        "unsupported by the Tempo stand-in: stage after a metrics function",
    ),
    ('{ .a = "unterminated }', 8, "literal not terminated"),  # col of the opening quote
    ("{ .a = 1 } { .b = 2 }", 12, "syntax error: unexpected OPEN_BRACE"),
    ("{ span:unknown = 1 }", 3, "syntax error: unexpected IDENTIFIER"),
]


@pytest.mark.parametrize(
    ("query", "col", "message"), REJECTED, ids=[q or "<empty>" for q, _, _ in REJECTED]
)
def test_rejected_queries_give_tempos_error_format(query: str, col: int, message: str) -> None:
    with pytest.raises(TraceQLError) as info:
        parse(query)
    text = str(info.value)
    assert text.startswith(f"parse error at line 1, col {col}: {message}"), text


def test_metrics_stage_parses_functions_and_grouping() -> None:
    q = parse(
        '{ resource.service.name = "apiserver" } | quantile_over_time(duration, .5, .9, 0.99)'
        " by (span:name, resource.service.name)"
    )
    assert q.metrics is not None
    assert q.metrics.function == "quantile_over_time"
    assert q.metrics.quantiles == (0.5, 0.9, 0.99)
    assert [f.label() for f in q.metrics.by] == ["span:name", "resource.service.name"]
    for fn in (
        "rate()",
        "count_over_time()",
        "avg_over_time(duration)",
        "max_over_time(span.size)",
    ):
        assert parse("{} | " + fn).metrics is not None
    with pytest.raises(TraceQLError):
        parse("{} | quantile_over_time(duration)")  # at least one quantile
    with pytest.raises(TraceQLError):
        parse("{} | quantile_over_time(duration, 1.5)")


def test_queries_through_http(standin: Running) -> None:
    _view, records = _trace()
    # Re-send the same spans over gRPC so the HTTP path evaluates the same trace.
    t0 = records[0].start_ns
    send_grpc(
        standin.grpc_port,
        export_request(
            "apiserver",
            [
                SpanSpec(
                    TID,
                    ROOT,
                    "GET /api/v1/pods",
                    SERVER,
                    start_ns=t0,
                    duration_ns=150_000_000,
                    attrs={"audit-id": "abc-123"},
                ),
                SpanSpec(
                    TID,
                    KV,
                    "etcdserverpb.KV/Range",
                    CLIENT,
                    parent=ROOT,
                    start_ns=t0 + 1,
                    status=ERROR,
                ),
            ],
        ),
    )
    q = '{ span."audit-id" = "abc-123" }'
    traces = poll(lambda: get_json(standin.http, "/api/search", q=q)["traces"])
    assert traces[0]["traceID"] == TID.hex().lstrip("0")
    both = get_json(standin.http, "/api/search", q="{ status = error } && { kind = server }")
    assert both["traces"][0]["spanSets"][0]["matched"] == 2
    r = standin.http.get("/api/search", params={"q": "{ name = 1 }"})
    assert r.status_code == 400
    assert r.text == (
        "invalid TraceQL query: parse error at line 1, col 8: "
        "binary operations must operate on the same type: name = 1"
    )
