"""TempoClient against httpx.MockTransport with payloads shaped like Tempo 2.9's
(docs/reference/tempo.md).

Shapes follow the reference: proto3 JSON for traces (base64 IDs, int64 as strings, enum names,
zero values omitted; §4.2), v1 ``batches`` and v2 ``trace.resourceSpans`` (§4.3), search hex IDs
with leading zeros stripped (§5.2-5.3), TraceQL metrics series (§7.2).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tracecheck.backends.tempo import TempoClient
from tracecheck.config import TempoSettings
from tracecheck.errors import HTTPStatusError, NotReady, ProtocolError, QueryError

TRACE_HEX = "00f067aa0ba902b7a3ce8e1a2bcd7f91"  # a leading 00 byte: search prints it stripped
ROOT_HEX = "00f067aa0ba902b7"
SERVER_HEX = "53995c3f42cd8ad8"
CHILD_HEX = "0020000000000001"
LINKED_TRACE_HEX = "4bf92f3577b34da6a3ce929d0e0e4736"


def b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def attr(key: str, **value: Any) -> dict[str, Any]:
    return {"key": key, "value": value}


def span(span_hex: str, name: str, **extra: Any) -> dict[str, Any]:
    out = {
        "traceId": b64(TRACE_HEX),
        "spanId": b64(span_hex),
        "name": name,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000250000000",
    }
    out.update(extra)
    return out


def resource_spans() -> list[dict[str, Any]]:
    server = span(
        SERVER_HEX,
        "GET /api/checkout",
        parentSpanId=b64(ROOT_HEX),
        kind="SPAN_KIND_SERVER",
        attributes=[
            attr("http.response.status_code", intValue="200"),
            attr("ratio", doubleValue=0.5),
            attr("cached", boolValue=True),
            attr("tags", arrayValue={"values": [{"stringValue": "a"}, {"intValue": "7"}]}),
            attr("nested", kvlistValue={"values": [attr("x", stringValue="y")]}),
            attr("blob", bytesValue=base64.b64encode(b"\x00\x01").decode()),
            attr("nan", doubleValue="NaN"),
        ],
        status={"code": "STATUS_CODE_ERROR", "message": "card declined"},
        links=[
            {
                "traceId": b64(LINKED_TRACE_HEX),
                "spanId": b64("00f067aa0ba902b7"),
                "attributes": [attr("link.kind", stringValue="follows")],
            }
        ],
    )
    child = span(CHILD_HEX, "SELECT orders", parentSpanId=b64(SERVER_HEX), kind="SPAN_KIND_CLIENT")
    return [
        {
            "resource": {"attributes": [attr("service.name", stringValue="tracecheck-client")]},
            "scopeSpans": [
                {
                    "scope": {"name": "tracecheck", "version": "0.1.0"},
                    # The root: no parent, kind UNSPECIFIED and status UNSET are zero: omitted.
                    "spans": [span(ROOT_HEX, "checkout")],
                }
            ],
        },
        {
            "resource": {"attributes": [attr("service.name", stringValue="tracecheck-server")]},
            "scopeSpans": [
                {
                    "scope": {"name": "tracecheck"},
                    # grafana/tempo#6533: the same span twice during the hot window.
                    "spans": [server, child, dict(server)],
                }
            ],
        },
    ]


Route = Callable[[httpx.Request], httpx.Response]


class Router:
    """A MockTransport handler: routes by path, records every request."""

    def __init__(self, routes: dict[str, Route | tuple[int, Any]]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get(request.url.path)
        if route is None:
            return httpx.Response(404, text="404 page not found\n")
        if callable(route):
            return route(request)
        status, body = route
        if isinstance(body, (dict, list)):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=body)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def client(router: Router, **settings: Any) -> TempoClient:
    return TempoClient(
        TempoSettings(url="http://tempo:3200", **settings), transport=httpx.MockTransport(router)
    )


V2 = f"/api/v2/traces/{TRACE_HEX}"
V1 = f"/api/traces/{TRACE_HEX}"


# -- trace by ID --------------------------------------------------------------------------------


def test_trace_v2_found_decodes_every_field() -> None:
    router = Router({V2: (200, {"trace": {"resourceSpans": resource_spans()}})})
    with client(router) as tempo:
        trace = tempo.trace(TRACE_HEX)
    assert trace.found and not trace.partial
    assert trace.trace_id == bytes.fromhex(TRACE_HEX)
    assert [s.span_id.hex() for s in trace.spans] == [ROOT_HEX, SERVER_HEX, CHILD_HEX]
    root, server, child = trace.spans
    assert root.parent_span_id == b""
    assert (root.kind, root.status_code, root.status_message) == (
        "SPAN_KIND_UNSPECIFIED",
        "STATUS_CODE_UNSET",
        "",
    )
    assert root.service_name == "tracecheck-client"
    assert root.scope_name == "tracecheck"
    assert server.parent_span_id == bytes.fromhex(ROOT_HEX)
    assert child.parent_span_id == bytes.fromhex(SERVER_HEX)
    assert server.kind == "SPAN_KIND_SERVER" and child.kind == "SPAN_KIND_CLIENT"
    assert (server.status_code, server.status_message) == ("STATUS_CODE_ERROR", "card declined")
    assert server.service_name == "tracecheck-server"
    assert server.start_ns == 1_700_000_000_000_000_000
    assert server.duration_ns == 250_000_000 and server.duration_ms == 250.0
    a = server.attributes
    assert a["http.response.status_code"] == 200 and isinstance(a["http.response.status_code"], int)
    assert a["ratio"] == 0.5 and a["cached"] is True
    assert a["tags"] == ["a", 7]
    assert a["nested"] == {"x": "y"}
    assert a["blob"] == b"\x00\x01"
    assert isinstance(a["nan"], float) and math.isnan(a["nan"])
    (link,) = server.links
    assert link.trace_id.hex() == LINKED_TRACE_HEX
    assert link.span_id.hex() == "00f067aa0ba902b7"
    assert link.attributes == {"link.kind": "follows"}
    assert trace.span(SERVER_HEX) is server
    assert trace.span(b64(CHILD_HEX)) is child
    assert router.requests[0].headers["accept"] == "application/json"


def test_trace_v2_200_with_empty_trace_is_not_found_and_no_fallback() -> None:
    # §4.3: v2 never answers 404 for a missing trace: 200 with an empty trace.
    router = Router({V2: (200, {"trace": {}, "metrics": {"inspectedBytes": "0"}})})
    with client(router) as tempo:
        trace = tempo.trace(TRACE_HEX)
    assert not trace.found and trace.spans == ()
    assert router.paths() == [V2]


def test_trace_v2_partial_status_is_surfaced() -> None:
    message = "Trace exceeds maximum size of 5000000 bytes, a partial trace is returned"
    body = {
        "trace": {"resourceSpans": resource_spans()[:1]},
        "status": "PARTIAL",
        "message": message,
    }
    with client(Router({V2: (200, body)})) as tempo:
        trace = tempo.trace(TRACE_HEX)
    assert trace.partial and trace.message == message
    assert trace.found and len(trace.spans) == 1


def test_trace_falls_back_to_v1_on_old_tempo_and_remembers() -> None:
    # Tempo < 2.6 has no v2 route: 404 from the router; v1 names the list "batches".
    router = Router({V1: (200, {"batches": resource_spans()})})
    with client(router) as tempo:
        first = tempo.trace(TRACE_HEX)
        second = tempo.trace(TRACE_HEX)
    assert first.found and len(first.spans) == 3
    assert [(s.span_id, s.name) for s in second.spans] == [(s.span_id, s.name) for s in first.spans]
    assert router.paths() == [V2, V1, V1]


def test_trace_v1_404_is_not_found() -> None:
    router = Router({V1: (404, "")})
    with client(router) as tempo:
        trace = tempo.trace(TRACE_HEX)
    assert not trace.found
    assert router.paths() == [V2, V1]


def test_trace_with_no_trace_route_at_all_is_a_status_error_not_not_found() -> None:
    # A wrong port or path prefix: neither v2 nor v1 exists, the router's own 404 both times.
    router = Router({})
    with client(router) as tempo:
        for _ in range(2):
            with pytest.raises(HTTPStatusError) as info:
                tempo.trace(TRACE_HEX)
            assert str(info.value) == (
                f"tempo at http://tempo:3200{V1}: HTTP 404: 404 page not found (not Tempo's "
                "query API: a wrong port, or Tempo runs with an http_api_prefix other than "
                "tempo.api_prefix '' (its /status/config names it))"
            )
    # Nothing was learnt about the API version: the second call asked v2 again.
    assert router.paths() == [V2, V1, V2, V1]


def test_trace_v1_422_too_large_is_partial_without_spans() -> None:
    router = Router({V1: (422, "trace exceeds max size (max bytes: 5000000)")})
    with client(router) as tempo:
        trace = tempo.trace(TRACE_HEX)
    assert not trace.found and trace.partial
    assert trace.message == "HTTP 422: trace exceeds max size (max bytes: 5000000)"


def test_trace_window_is_whole_seconds_widened_outwards_and_tenant_sent() -> None:
    router = Router({V2: (200, {"trace": {}})})
    with client(router, tenant="team-a") as tempo:
        tempo.trace(bytes.fromhex(TRACE_HEX), start=1_700_000_000.7, end=1_700_000_010.2)
    (req,) = router.requests
    assert dict(req.url.params) == {"start": "1700000000", "end": "1700000011"}
    assert req.headers["x-scope-orgid"] == "team-a"


def test_trace_accepts_stripped_and_base64_ids_and_requests_32_hex() -> None:
    router = Router({V2: (200, {"trace": {}})})
    with client(router) as tempo:
        tempo.trace(TRACE_HEX.lstrip("0"))
        tempo.trace(b64(TRACE_HEX))
    assert router.paths() == [V2, V2]


def test_invalid_trace_id_is_a_query_error_before_any_request() -> None:
    router = Router({})
    with client(router) as tempo, pytest.raises(QueryError) as info:
        tempo.trace("not-a-trace-id!")
    assert str(info.value) == (
        "tempo at http://tempo:3200: invalid trace ID: 'not-a-trace-id!' is neither hex nor base64"
    )
    assert router.requests == []


def test_trace_garbage_json_and_wrong_shape_are_protocol_errors() -> None:
    gateway = Router({V2: (200, "<html>gateway</html>")})
    with client(gateway) as tempo, pytest.raises(ProtocolError) as info:
        tempo.trace(TRACE_HEX)
    assert str(info.value) == (
        f"tempo at http://tempo:3200{V2}: invalid JSON (Expecting value at position 0): "
        "<html>gateway</html>"
    )
    bad = {"trace": {"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "!!"}]}]}]}}
    with client(Router({V2: (200, bad)})) as tempo, pytest.raises(ProtocolError) as info:
        tempo.trace(TRACE_HEX)
    assert str(info.value).startswith(f"tempo at http://tempo:3200{V2}: malformed trace: ")


def test_trace_500_is_a_status_error() -> None:
    router = Router({V2: (500, "error querying ingesters: context canceled\n")})
    with client(router) as tempo, pytest.raises(HTTPStatusError) as info:
        tempo.trace(TRACE_HEX)
    assert info.value.status == 500
    assert info.value.cause == "HTTP 500: error querying ingesters: context canceled"


# -- search ------------------------------------------------------------------------------------

SEARCH = {
    "traces": [
        {
            "traceID": TRACE_HEX.lstrip("0"),  # §5.3: leading zeros stripped
            "rootServiceName": "tracecheck-client",
            "rootTraceName": "checkout",
            "startTimeUnixNano": "1700000000000000000",
            "durationMs": 250,
            "spanSet": {"spans": [], "matched": 2},  # deprecated, equals spanSets[0]
            "spanSets": [
                {
                    "spans": [
                        {
                            "spanID": SERVER_HEX,
                            "name": "GET /api/checkout",
                            "startTimeUnixNano": "1700000000000000000",
                            "durationNanos": "250000000",
                            "attributes": [attr("status", stringValue="error")],
                        }
                    ],
                    "matched": 2,
                    "attributes": [attr("tracecheck.run_id", stringValue="r-1")],
                }
            ],
            "serviceStats": {"tracecheck-server": {"spanCount": 2, "errorCount": 1}},
        },
        {
            # A sub-millisecond trace whose root has not arrived: no durationMs key (§5.3).
            "traceID": "1" * 32,
            "rootServiceName": "<root span not yet received>",
            "startTimeUnixNano": "1700000001000000000",
        },
        {
            # Tempo < 2.2: only the singular spanSet.
            "traceID": "2" * 32,
            "rootServiceName": "old",
            "spanSet": {"spans": [{"spanID": "00000000000000ab", "name": "x"}], "matched": 1},
        },
    ],
    "metrics": {"inspectedTraces": 3, "inspectedBytes": "21345", "totalBlocks": 13},
}


def test_search_decodes_hits_and_matches_stripped_ids_as_bytes() -> None:
    router = Router({"/api/search": (200, SEARCH)})
    with client(router) as tempo:
        result = tempo.search(
            '{ span.tracecheck.run_id = "r-1" }', start=1_699_999_990.5, end=1_700_000_030.2
        )
    req = router.requests[0]
    assert dict(req.url.params) == {
        "q": '{ span.tracecheck.run_id = "r-1" }',
        "start": "1699999990",
        "end": "1700000031",
        "limit": "20",
        "spss": "3",
    }
    hit = result.find(TRACE_HEX)
    assert hit is not None and hit is result.traces[0]
    assert hit.trace_id == bytes.fromhex(TRACE_HEX)
    assert (hit.root_service, hit.root_name, hit.duration_ms) == (
        "tracecheck-client",
        "checkout",
        250,
    )
    (ss,) = hit.span_sets
    assert ss.matched == 2 and hit.matched == 2
    assert ss.attributes == {"tracecheck.run_id": "r-1"}
    (sp,) = ss.spans
    assert sp.span_id == bytes.fromhex(SERVER_HEX)
    assert (sp.duration_ns, sp.attributes) == (250_000_000, {"status": "error"})
    second = result.traces[1]
    assert (second.duration_ms, second.root_name, second.span_sets) == (0, "", ())
    assert second.root_service == "<root span not yet received>"
    third = result.traces[2]
    assert third.span_sets[0].spans[0].span_id == bytes.fromhex("00000000000000ab")
    assert result.metrics == {"inspectedTraces": 3, "inspectedBytes": 21345, "totalBlocks": 13}
    assert result.find("f" * 32) is None


def test_search_400_carries_tempos_text() -> None:
    text = (
        "invalid TraceQL query: parse error at line 1, col 1: syntax error: unexpected IDENTIFIER"
    )
    with client(Router({"/api/search": (400, text)})) as tempo, pytest.raises(QueryError) as info:
        tempo.search("nonsense", start=1_700_000_000, end=1_700_000_060)
    assert str(info.value) == f"tempo at http://tempo:3200/api/search: HTTP 400: {text}"
    assert info.value.exit_code == 4


def test_400_and_not_ready_texts_never_show_a_configured_credential() -> None:
    secret = "tempo-token-0123456789"
    # A proxy in front of Tempo echoes the request headers; the excerpt would cut the token.
    echo = f"bad request: {'h' * 160} Authorization: Bearer {secret}"
    router = Router({"/api/search": (400, echo), "/ready": (503, echo)})
    headers = (("Authorization", f"Bearer {secret}"),)
    with client(router, headers=headers) as tempo:
        with pytest.raises(QueryError) as rejected:
            tempo.search("{}", start=1_700_000_000, end=1_700_000_060)
        with pytest.raises(NotReady) as not_ready:
            tempo.ready()
    for error in (rejected.value, not_ready.value):
        assert secret[:6] not in str(error)
        assert str(error).endswith("Authorization: ***")


@pytest.mark.parametrize(
    ("kwargs", "cause"),
    [
        (
            {"start": 1_700_000_000_000, "end": 1_700_000_060_000},
            "start/end look like milliseconds",
        ),
        ({"start": 1_700_000_060, "end": 1_700_000_000}, "end (1700000000) is before start"),
        ({"start": 1, "end": 2, "limit": 0}, "limit must be positive, not 0"),
        ({"start": 1, "end": 2, "spss": 0}, "spss must be positive, not 0"),
    ],
)
def test_search_bad_arguments_are_refused_before_sending(kwargs: Any, cause: str) -> None:
    router = Router({})
    with client(router) as tempo, pytest.raises(QueryError) as info:
        tempo.search("{}", **kwargs)
    assert cause in str(info.value)
    assert router.requests == []


# -- tags ---------------------------------------------------------------------------------------


def test_tag_names_and_scopes() -> None:
    router = Router(
        {
            "/api/search/tags": (
                200,
                {"tagNames": ["service.name", "http.method", "service.name"]},
            ),
            "/api/v2/search/tags": (
                200,
                {
                    "scopes": [
                        {"name": "resource", "tags": ["service.name"]},
                        {"name": "span", "tags": ["http.method"]},
                        {"name": "intrinsic", "tags": ["duration", "name"]},
                    ],
                    "metrics": {"inspectedBytes": "10"},
                },
            ),
        }
    )
    with client(router) as tempo:
        assert tempo.tag_names(scope="span", start=10, end=20) == ("http.method", "service.name")
        scopes = tempo.tag_scopes(query="{}")
    assert dict(router.requests[0].url.params) == {"scope": "span", "start": "10", "end": "20"}
    assert scopes == {
        "resource": ("service.name",),
        "span": ("http.method",),
        "intrinsic": ("duration", "name"),
    }


def test_tag_values_v2_typed_values_and_v1_fallback() -> None:
    v2 = Router(
        {
            "/api/v2/search/tag/resource.service.name/values": (
                200,
                {
                    "tagValues": [
                        {"type": "string", "value": "apiserver"},
                        {"type": "string", "value": "etcd"},
                    ]
                },
            )
        }
    )
    with client(v2) as tempo:
        assert tempo.tag_values("resource.service.name", query="{}") == ("apiserver", "etcd")
    assert dict(v2.requests[0].url.params) == {"q": "{}"}
    v1 = Router({"/api/search/tag/service.name/values": (200, {"tagValues": ["a", "b"]})})
    with client(v1) as tempo:
        assert tempo.tag_values("service.name", query="{}") == ("a", "b")
    assert v1.paths() == [
        "/api/v2/search/tag/service.name/values",
        "/api/search/tag/service.name/values",
    ]
    assert dict(v1.requests[1].url.params) == {}  # v1 takes no q


@pytest.mark.parametrize(
    ("path", "body", "call", "cause"),
    [
        ("/api/search/tags", {"tagNames": {}}, "tag_names", "malformed tagNames"),
        ("/api/v2/search/tags", {"scopes": "span"}, "tag_scopes", "malformed scopes"),
        ("/api/v2/search/tags", {"scopes": [{"tags": 3}]}, "tag_scopes", "malformed tags"),
        ("/api/v2/search/tag/x/values", {"tagValues": "a"}, "tag_values", "malformed tagValues"),
    ],
)
def test_tag_answers_of_the_wrong_shape_are_protocol_errors(
    path: str, body: Any, call: str, cause: str
) -> None:
    with client(Router({path: (200, body)})) as tempo, pytest.raises(ProtocolError) as info:
        method = getattr(tempo, call)
        method("x") if call == "tag_values" else method()
    assert str(info.value).startswith(f"tempo at http://tempo:3200{path}: {cause}: expected a list")


def test_tag_values_invalid_tag_is_a_query_error() -> None:
    router = Router({"/api/v2/search/tag/bad tag/values": (400, "invalid tag: bad tag")})
    with client(router) as tempo, pytest.raises(QueryError, match="HTTP 400: invalid tag"):
        tempo.tag_values("bad tag")
    assert router.requests[0].url.raw_path == b"/api/v2/search/tag/bad%20tag/values"


# -- TraceQL metrics ----------------------------------------------------------------------------


def test_metrics_query_range_decodes_series() -> None:
    body = {
        "series": [
            {
                "labels": [
                    attr("resource.service.name", stringValue="apiserver"),
                    attr("p", doubleValue=0.99),
                ],
                "samples": [
                    {"timestampMs": "1700000000000", "value": 0.25},
                    {"timestampMs": "1700000015000"},  # value 0 omitted by jsonpb
                    {"timestampMs": "1700000030000", "value": "NaN"},
                ],
            }
        ],
        "metrics": {"inspectedBytes": "100"},
        "status": "PARTIAL",
        "message": "some blocks skipped",
    }
    router = Router({"/api/metrics/query_range": (200, body)})
    query = '{ resource.service.name="apiserver" } | quantile_over_time(duration, .99)'
    with client(router) as tempo:
        (series,) = tempo.metrics_query_range(
            query, start=1_700_000_000, end=1_700_000_060.5, step="15s"
        )
        result = tempo.metrics_query_range_result(query, start=1_700_000_000, end=1_700_000_060)
    assert series.labels == {"resource.service.name": "apiserver", "p": 0.99}
    assert series.samples[:2] == ((1_700_000_000_000, 0.25), (1_700_000_015_000, 0.0))
    assert series.samples[2][0] == 1_700_000_030_000 and math.isnan(series.samples[2][1])
    assert result.partial and result.message == "some blocks skipped"
    assert dict(router.requests[0].url.params) == {
        "q": query,
        "start": "1700000000000000000",
        "end": "1700000060500000000",
        "step": "15s",
    }


def test_metrics_query_instant_and_errors() -> None:
    body = {
        "series": [{"labels": [attr("__name__", stringValue="rate")], "value": 1.5}, {"labels": []}]
    }
    router = Router(
        {
            "/api/metrics/query": (200, body),
            "/api/metrics/query_range": (400, "not a metrics query"),
        }
    )
    with client(router) as tempo:
        first, second = tempo.metrics_query_instant("{} | rate()", start=100, end=160)
        assert first.labels == {"__name__": "rate"} and first.samples == ((160_000, 1.5),)
        assert second.samples == ((160_000, 0.0),)
        with pytest.raises(QueryError) as info:
            tempo.metrics_query_range("{}", start=100, end=160)
        assert str(info.value) == (
            "tempo at http://tempo:3200/api/metrics/query_range: HTTP 400: not a metrics query"
        )
        with pytest.raises(QueryError, match="must be after start"):
            tempo.metrics_query_range("{} | rate()", start=160, end=160)


# -- health, identity, own metrics -------------------------------------------------------------


def test_ready_echo_buildinfo_and_self_metrics() -> None:
    buildinfo = {
        "version": "2.9.0",
        "revision": "607c7fb69",
        "branch": "HEAD",
        "buildUser": "root@host",
        "buildDate": "2025-10-08",
        "goVersion": "go1.25.1",
    }
    router = Router(
        {
            "/ready": (200, "ready\n"),
            "/api/echo": (200, "echo\n"),
            "/api/status/buildinfo": (200, buildinfo),
            "/metrics": (200, 'tempo_distributor_spans_received_total{tenant="single-tenant"} 9\n'),
        }
    )
    with client(router) as tempo:
        tempo.ready()
        tempo.echo()
        info = tempo.buildinfo()
        exp = tempo.self_metrics()
    assert (info.version, info.revision, info.branch, info.go_version) == (
        "2.9.0",
        "607c7fb69",
        "HEAD",
        "go1.25.1",
    )
    assert exp.sum("tempo_distributor_spans_received") == 9.0
    assert "/status/buildinfo" not in router.paths()  # §3: that path crashes the handler


def test_not_ready_carries_tempos_reason() -> None:
    body = "Ingester not ready: waiting for 15s after being ready\n"
    with client(Router({"/ready": (503, body)})) as tempo, pytest.raises(NotReady) as info:
        tempo.ready()
    assert str(info.value) == (
        "tempo at http://tempo:3200/ready: HTTP 503: "
        "Ingester not ready: waiting for 15s after being ready"
    )


def test_ready_with_an_unexpected_body_is_not_ready() -> None:
    router = Router({"/ready": (200, "<html>login</html>")})
    with client(router) as tempo, pytest.raises(NotReady, match="unexpected answer: <html>login"):
        tempo.ready()


def test_echo_missing_is_a_status_error() -> None:
    with client(Router({})) as tempo, pytest.raises(HTTPStatusError) as info:
        tempo.echo()
    assert info.value.status == 404


def test_buildinfo_not_an_object_is_a_protocol_error() -> None:
    router = Router({"/api/status/buildinfo": (200, json.loads("[1, 2]"))})
    with client(router) as tempo, pytest.raises(ProtocolError, match="expected a JSON object"):
        tempo.buildinfo()
