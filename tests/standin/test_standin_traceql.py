"""TraceQL evaluation: which spans each query returns on a trace with every part TraceQL can
address (tql_trace.py), the spanset attributes of aggregates and by(), Tempo's storage-layer
pre-filter, and parse/validation failures in Tempo's words, also through HTTP."""

from __future__ import annotations

import pytest
from standin_helpers import Running, get_json, poll, send_grpc
from tempo_standin.traceql import ParseError, ValidationError, compile_query, parse
from tempo_standin.traceql.ast import EvalError
from tempo_standin.traceql.eval import MULTIPLE_SPANSETS, run
from tql_trace import ALL, LINK_TID, TID, apiserver_groups, build_view, request

ROOT, KV, RANGE, LIST, DECODE = ALL


def _names(query: str) -> list[list[str]]:
    view, _ = build_view()
    return [[s.rec.name for s in ss.spans] for ss in run(compile_query(query), view)]


def _flat(query: str) -> list[str]:
    got = _names(query)
    assert len(got) <= 1, got
    return got[0] if got else []


MATCHES: list[tuple[str, list[str]]] = [
    ("{}", ALL),
    ("{ true }", ALL),
    ("{ false }", []),
    ('{ name = "List" }', [LIST]),
    ('{ span:name = "List" }', [LIST]),
    ('{ name =~ "etcd.*" }', [KV]),
    ('{ name =~ "KV" }', []),  # regexes are fully anchored
    ('{ name !~ "etcd.*" }', [ROOT, RANGE, LIST, DECODE]),
    ('{ name > "R" }', [RANGE, DECODE, KV]),  # byte order: "R" < "Range" < "d..." < "e..."
    ("{ status = error }", [KV]),
    ("{ span:status = ok }", [LIST]),
    ("{ status = unset }", [ROOT, RANGE, DECODE]),
    ("{ status != ok }", [ROOT, KV, RANGE, DECODE]),
    ("{ kind = server }", [ROOT, RANGE]),
    ("{ span:kind = client }", [KV]),
    ("{ kind = internal }", [LIST, DECODE]),
    ("{ duration > 100ms }", [ROOT]),
    ("{ span:duration >= 50ms && duration < 1s }", [ROOT, LIST]),
    ("{ duration <= 3ms }", [RANGE, DECODE]),
    ("{ duration > 0.1s }", [ROOT]),
    ('{ statusMessage = "deadline" }', [KV]),
    ('{ statusMessage = "" }', [ROOT, RANGE, LIST, DECODE]),
    ("{ span.http.status_code = 200 }", [ROOT]),
    ("{ span.http.status_code = 200.0 }", [ROOT]),
    ('{ span.http.status_code = "200" }', []),  # different types never match
    ("{ span.http.status_code != 404 }", [ROOT]),  # an absent attribute never matches
    ("{ span.size > 2 }", [ROOT, RANGE, LIST]),
    ("{ span.size > 1 }", [ROOT, RANGE, LIST, DECODE]),  # int and float compare as numbers
    ('{ .http.method = "GET" }', [ROOT]),
    ('{ .service.name = "etcd" }', [RANGE]),  # unscoped: the span, else the resource
    ('{ resource.service.name = "apiserver" }', [ROOT, KV, LIST, DECODE]),
    ('{ resource.k8s.ns = "default" && kind = internal }', [LIST, DECODE]),
    ('{ span."audit-id" = "abc-123" }', [ROOT]),
    ('{ span.http.target =~ ".*watch=true" }', [ROOT]),
    ("{ span.sampled = true }", [ROOT]),
    ('{ span.tags = "b" }', [LIST]),  # an array matches when an element does
    ('{ "b" = span.tags }', [LIST]),
    ("{ span.http.method != nil }", [ROOT]),
    ("{ nil != span.http.method }", [ROOT]),
    # events, links, instrumentation scope
    ('{ event:name = "exception" }', [KV]),
    ('{ event:name = "retry" }', [KV]),  # any of the span's events
    ('{ event.exception.type = "Again" }', [KV]),
    ("{ event:timeSinceStart > 4ms }", [KV]),
    ("{ event.bytes = 10 }", [ROOT]),
    ('{ link.link.kind = "follows" }', [ROOT]),
    ('{ .link.kind = "follows" }', [ROOT]),  # unscoped names reach links too
    (f'{{ link:traceID = "{LINK_TID.hex().lstrip("0")}" }}', [ROOT]),
    ('{ link:spanID = "0011223344556677" }', [ROOT]),
    ('{ instrumentation:name = "go.etcd.io/etcd" }', [RANGE]),
    ('{ instrumentation:version = "1.34.0" }', [ROOT, KV, LIST, DECODE]),
    ('{ instrumentation.lib = "otel" }', [ROOT, KV, LIST, DECODE]),
    # trace-level intrinsics
    ('{ rootServiceName = "apiserver" }', ALL),
    ('{ rootName = "GET /api/v1/pods" && kind = client }', [KV]),
    (
        '{ trace:rootService = "apiserver" && trace:rootName =~ "GET.*" && kind = server }',
        [ROOT, RANGE],
    ),
    ("{ traceDuration > 100ms }", ALL),
    ("{ trace:duration < 100ms }", []),
    (f'{{ trace:id = "{TID.hex().lstrip("0")}" && kind = server }}', [ROOT, RANGE]),
    ('{ span:id = "0000000000000004" }', [DECODE]),
    # IDs compare as bytes either way round (README "Not matched")
    ('{ "4" = span:id }', [DECODE]),
    (f'{{ trace:id = "{TID.hex().upper()}" }}', ALL),
    ('{ span:parentID = "0000000000000003" }', [DECODE]),
    ("{ nestedSetParent = -1 }", [ROOT]),
    ("{ nestedSetLeft = 1 }", [ROOT]),
    # expressions
    ("{ span.size + 1 = 4 }", [LIST]),
    ("{ span.size * 2 > 10 }", [ROOT, RANGE]),
    ("{ span.size / 2 = 1 }", [LIST]),  # int / int is integer division
    ("{ span.size / 2.0 = 1.5 }", [LIST]),
    ("{ 2 ^ 3 = 9 }", ALL),  # ast_execute.go intPow(rhs, lhs): Tempo computes 3^2
    ("{ -span.size < -5 }", [ROOT, RANGE]),
    ("{ !(kind = server) }", []),  # storage fetched only server spans (see below)
    ("{ true && false || true }", ALL),
    ('{ (name = "List" || name = "Range") && kind = internal }', [LIST]),
    ('{ name = "List" || (kind = server && resource.service.name = "etcd") }', [RANGE, LIST]),
    ("{ `etcdserverpb.KV/Range` = name }", [KV]),
    # spanset operators
    ('{ name = "List" } && { kind = server }', [ROOT, RANGE, LIST]),
    ('{ name = "List" } && { name = "nope" }', []),
    ('{ name = "nope" } || { name = "List" }', [LIST]),
    ('({ name = "List" } || { name = "x" }) && { kind = client }', [KV, LIST]),
    ("{ kind = server } >> { }", [KV, RANGE, LIST, DECODE]),
    ('{ resource.service.name = "etcd" } << { }', [ROOT, KV]),
    ("{ kind = server } > { }", [KV, LIST]),
    ('{ name = "decode" } < { }', [LIST]),
    ('{ name = "List" } ~ { }', [KV]),
    ("{ } ~ { }", [KV, LIST]),
    ("{ kind = server } !>> { }", [ROOT]),
    ('{ name = "decode" } !<< { }', [KV, RANGE, DECODE]),
    ("{ } !> { }", [ROOT]),
    ('{ name = "decode" } !< { }', [ROOT, KV, RANGE, DECODE]),
    ('{ name = "List" } !~ { }', [ROOT, RANGE, LIST, DECODE]),
    ("{ kind = client } &>> { kind = server }", [KV, RANGE]),
    ('{ name = "decode" } &<< { kind = server }', [ROOT, DECODE]),
    ("{ kind = client } &> { }", [KV, RANGE]),
    ('{ name = "decode" } &< { }', [LIST, DECODE]),
    ('{ name = "List" } &~ { kind = client }', [KV, LIST]),
    ('{ name = "nope" } !>> { kind = server }', [ROOT, RANGE]),
    ("{ } >> { } >> { }", [RANGE, DECODE]),
    ('({ } | count() > 1) >> ({ name = "decode" })', [DECODE]),
    # pipelines
    ("{ } | { kind = server }", [ROOT, RANGE]),
    ("{ kind = server } | count() = 2", [ROOT, RANGE]),
    ("{ kind = server } | count() > 2", []),
    # storage fetches only the spans the pipeline's conditions select, so count() sees 2
    ("count() = 2 | { kind = server }", [ROOT, RANGE]),
    ("{ } | max(duration) > 100ms", ALL),
    ("{ } | min(duration) > 100ms", []),
    ("{ } | sum(duration) > 200ms", ALL),
    ("{ } | avg(duration) > 40ms", ALL),
    ("{ } | avg(span.size) = 5.5", ALL),  # sumInto: only the first value's type is summed
    ("select(span.size)", ALL),
    ('{ name = "List" } | select(span.http.method, resource.service.name)', [LIST]),
    ("{ } | by(resource.service.name) | coalesce()", [ROOT, KV, LIST, DECODE, RANGE]),
]


@pytest.mark.parametrize(("query", "expected"), MATCHES, ids=[q for q, _ in MATCHES])
def test_queries_match_the_expected_spans(query: str, expected: list[str]) -> None:
    # A result spanset keeps the trace's span order (start time); structural unions are in
    # tree order, as Tempo's nested-set walk yields them.
    assert sorted(_flat(query)) == sorted(expected)


def test_prefilter_follows_tempos_storage_layer() -> None:
    # ast_conditions.go: { !(x) } pushes x down, so only spans satisfying x reach the engine,
    # which then refuses them all; a || with a constant pushes only the attribute condition;
    # a static on the left keeps the operator as written (5 < .size fetches size < 5).
    assert _flat("{ !(span.size = 3) }") == []
    assert _flat("{ span.size = 3 || true }") == [LIST]
    assert _flat("{ 5 < span.size }") == []
    assert _flat("{ span.size > 5 }") == [ROOT, RANGE]


def test_aggregates_and_groups_carry_spanset_attributes() -> None:
    view, _ = build_view()
    (ss,) = run(compile_query("{ } | count() > 3 | avg(duration) > 1ms"), view)
    assert [(k, v.string()) for k, v in ss.attributes] == [
        ("count()", "5"),
        ("avg(duration)", "42ms"),
    ]
    groups = run(compile_query("{ } | by(resource.service.name) | count() > 0"), view)
    got = {
        tuple((k, v.string(False)) for k, v in g.attributes): [s.rec.name for s in g.spans]
        for g in groups
    }
    assert got == {
        (("by(resource.service.name)", "apiserver"), ("count()", "4")): [ROOT, KV, LIST, DECODE],
        (("by(resource.service.name)", "etcd"), ("count()", "1")): [RANGE],
    }
    with pytest.raises(EvalError, match="consider using coalesce"):
        run(compile_query("({ } | by(kind)) >> ({ })"), view)
    assert MULTIPLE_SPANSETS.startswith("spanset operators are not supported")


ERRORS: list[tuple[str, str]] = [
    ("blerg", "parse error at line 1, col 1: syntax error: unexpected IDENTIFIER"),
    ("", "parse error : syntax error: unexpected $end"),
    ("{ .a = }", "parse error at line 1, col 8: syntax error: unexpected }"),
    ("{ .a = 1", "parse error at line 1, col 9: syntax error: unexpected $end"),
    ("{ .a = 1 } &&",
     "parse error at line 1, col 14: syntax error: unexpected $end, expecting { or ("),
    ("{ .a = 1 } | by(.x) && { }",
     "parse error at line 0, col 21: syntax error: unexpected &&, expecting with"),
    ("{ .a = 1 } | count() > 1 | rate( }",
     "parse error at line 1, col 34: syntax error: unexpected }, expecting )"),
    ("{ span.a = nil }",
     "parse error at line 1, col 16: syntax error: unexpected }, expecting = or !="),
    ('{ .a = "x\\q" }', "parse error at line 1, col 8: invalid char escape"),
]  # fmt: skip


@pytest.mark.parametrize(("query", "message"), ERRORS, ids=[q or "<empty>" for q, _ in ERRORS])
def test_parse_errors_are_tempos(query: str, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(query)
    assert str(info.value) == message


VALIDATION: list[tuple[str, str]] = [
    ("{ name = 1 }", "binary operations must operate on the same type: name = 1"),
    ("{ kind = error }", "binary operations must operate on the same type: kind = error"),
    ("{ status > error }", "illegal operation for the given types: status > error"),
    ('{ .a =~ "(" }', "invalid regex: `(`"),
    ("{ 1 + 1 }", "span filter field expressions must resolve to a boolean: { 2 }"),
    ("{ parent.a = 1 }", "parent not yet supported"),
    ("{ childCount > 1 }", "intrinsic (childCount) not yet supported"),
    ("{} | quantile_over_time(duration, 1.5)", "quantile must be between 0 and 1: 1.5"),
]


@pytest.mark.parametrize(("query", "message"), VALIDATION, ids=[q for q, _ in VALIDATION])
def test_validation_errors_are_tempos(query: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        compile_query(query)
    assert str(info.value) == message


def test_queries_through_http(standin: Running) -> None:
    import time

    send_grpc(standin.grpc_port, request(TID, time.time_ns() - 10**9, apiserver_groups()))
    q = '{ span."audit-id" = "abc-123" }'
    traces = poll(lambda: get_json(standin.http, "/api/search", q=q).get("traces"))
    assert traces[0]["traceID"] == TID.hex().lstrip("0")
    both = get_json(standin.http, "/api/search", q="{ status = error } && { kind = server }")
    assert both["traces"][0]["spanSets"][0]["matched"] == 3
    desc = get_json(standin.http, "/api/search", q="{ kind = server } >> { kind = internal }")
    spans = desc["traces"][0]["spanSets"][0]["spans"]
    assert [s["name"] for s in spans] == [LIST, DECODE]
    for query, status, text in [
        (
            "{ name = 1 }",
            400,
            "invalid TraceQL query: binary operations must operate on the same type: name = 1",
        ),
        (
            "{ .a = }",
            400,
            "invalid TraceQL query: parse error at line 1, col 8: syntax error: unexpected }",
        ),
        ("{ parent.a = 1 }", 400, "invalid TraceQL query: parent not yet supported"),
        ("({ } | by(kind)) > ({ })", 500, MULTIPLE_SPANSETS),
    ]:
        r = standin.http.get("/api/search", params={"q": query})
        assert (r.status_code, r.text) == (status, text), query


def test_query_size_limit() -> None:
    # modules/frontend/config.go: max_query_expression_size_bytes 128 KiB. (Over HTTP the
    # stand-in's request line limit, 64 KiB, answers 414 first.)
    from tempo_standin.api import HttpError
    from tempo_standin.queryapi import compile_or_400

    long = "{ " + " || ".join(f'.a = "{i}"' for i in range(20000)) + " }"
    with pytest.raises(HttpError) as info:
        compile_or_400(long)
    assert info.value.status == 400
    assert info.value.body.startswith(
        "TraceQL expression exceeds the configured maximum size of 131072 bytes"
    )
