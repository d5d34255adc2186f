"""/api/search: visibility after the idle period, response shape, parameters and their errors."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from standin_helpers import (
    CLIENT,
    ERROR,
    SERVER,
    Running,
    SpanSpec,
    export_request,
    get_json,
    poll,
    send_grpc,
)


def _tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def _sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _send_trace(r: Running, tid: bytes, run_id: str, *, children: int = 2) -> None:
    now = time.time_ns()
    spans = [
        SpanSpec(
            tid,
            _sid(1),
            "root",
            SERVER,
            start_ns=now - 20_000_000,
            duration_ns=20_000_000,
            attrs={"run_id": run_id},
        )
    ]
    for i in range(children):
        spans.append(
            SpanSpec(
                tid,
                _sid(2 + i),
                f"child-{i}",
                CLIENT,
                parent=_sid(1),
                start_ns=now - 10_000_000 + i,
                duration_ns=1_000_000,
                status=ERROR if i == 0 else 0,
                attrs={"run_id": run_id, "idx": i},
            )
        )
    send_grpc(r.grpc_port, export_request("svc", spans))


def _search(r: Running, q: str, **params: str) -> dict:
    return get_json(r.http, "/api/search", q=q, **params)  # type: ignore[no-any-return]


def _traces(r: Running, q: str, **params: str) -> list[dict]:
    # gogo jsonpb leaves an empty "traces" out of the document
    return _search(r, q, **params).get("traces", [])  # type: ignore[no-any-return]


def test_search_sees_a_trace_only_after_the_idle_period(
    make_standin: Callable[..., Running],
) -> None:
    # Search does not cover live traces; the cut happens after trace_idle_period.
    r = make_standin(trace_idle_period=1.5)
    tid = _tid(0x0ABC)
    _send_trace(r, tid, "vis-1")
    q = '{ span.run_id = "vis-1" }'
    assert len(get_json(r.http, f"/api/v2/traces/{tid.hex()}")["trace"]["resourceSpans"]) == 1
    found = poll(lambda: _traces(r, q), timeout=20)
    assert found[0]["traceID"] == "abc"  # util.TraceIDToHexString: leading zeros stripped
    visible = r.log_matching(f"trace {tid.hex()} visible by id at ")
    searchable = r.log_matching(f"trace {tid.hex()} searchable at ")
    assert len(visible) == len(searchable) == 1
    t_visible = float(visible[0].split()[-1])
    t_searchable = float(re.search(r"searchable at ([\d.]+)", searchable[0]).group(1))  # type: ignore[union-attr]
    # The cut never happens before the trace has been idle for trace_idle_period.
    assert t_searchable - t_visible >= 1.5


def test_live_period_cuts_a_trace_that_keeps_receiving_spans(
    make_standin: Callable[..., Running],
) -> None:
    # trace_live_period bounds how long a busy trace stays out of search.
    r = make_standin(trace_idle_period=30.0, trace_live_period=1.0)
    tid = _tid(0x77)
    _send_trace(r, tid, "live-1")
    found = poll(lambda: _traces(r, '{ span.run_id = "live-1" }'), timeout=20)
    assert found[0]["traceID"] == "77"


def test_search_response_shape(standin: Running) -> None:
    tid = _tid(0x00FF_0000_0000_0000_0000_0000_0000_1234)
    _send_trace(standin, tid, "shape-1", children=5)
    doc = poll(
        lambda: (
            _traces(standin, '{ span.run_id = "shape-1" }')
            and _search(standin, '{ span.run_id = "shape-1" }')
        )
    )
    (t,) = doc["traces"]
    assert t["traceID"] == tid.hex().lstrip("0")
    assert t["rootServiceName"] == "svc"
    assert t["rootTraceName"] == "root"
    assert t["durationMs"] == 20
    assert isinstance(t["startTimeUnixNano"], str)
    # engine.go: spanSets[] and the deprecated spanSet (= spanSets[0]); spss default 3.
    assert t["spanSet"] == t["spanSets"][0]
    ss = t["spanSets"][0]
    assert ss["matched"] == 6
    assert len(ss["spans"]) == 3
    first = ss["spans"][0]
    assert first["spanID"] == "0000000000000001"  # util.SpanIDToHexString: padded to 16
    assert first["durationNanos"] == "20000000"
    assert first["attributes"] == [{"key": "run_id", "value": {"stringValue": "shape-1"}}]
    assert t["serviceStats"] == {"svc": {"spanCount": 6, "errorCount": 1}}
    assert doc["metrics"]["inspectedTraces"] >= 1
    assert int(doc["metrics"]["inspectedBytes"]) > 0


def test_spss_limit_and_most_recent(standin: Running) -> None:
    for i in range(3):
        _send_trace(standin, _tid(0x500 + i), "multi")
        time.sleep(0.01)
    poll(lambda: len(_traces(standin, '{ span.run_id = "multi" }')) == 3)
    one = _search(standin, '{ span.run_id = "multi" }', spss="1", limit="2")
    assert len(one["traces"]) == 2
    assert all(len(t["spanSets"][0]["spans"]) == 1 for t in one["traces"])
    # with (most_recent=true) keeps the most recent traces, newest first (combine.go).
    recent = _search(standin, '{ span.run_id = "multi" } with (most_recent=true)', limit="1")
    assert recent["traces"][0]["traceID"] == "502"


def test_status_intrinsic_appears_on_matched_spans(standin: Running) -> None:
    _send_trace(standin, _tid(0x900), "st-1")
    doc = poll(lambda: _traces(standin, '{ span.run_id = "st-1" && status = error }'))
    spans = doc[0]["spanSets"][0]["spans"]
    assert len(spans) == 1
    attrs = {a["key"]: a["value"] for a in spans[0]["attributes"]}
    assert attrs == {"run_id": {"stringValue": "st-1"}, "status": {"stringValue": "error"}}


def test_root_span_not_yet_received(standin: Running) -> None:
    tid = _tid(0x321)
    child = SpanSpec(
        tid,
        _sid(9),
        "orphan",
        CLIENT,
        parent=_sid(8),
        duration_ns=400_000,
        attrs={"run_id": "orph"},
    )
    send_grpc(standin.grpc_port, export_request("svc", [child]))
    (t,) = poll(lambda: _traces(standin, '{ .run_id = "orph" }'))
    assert t["rootServiceName"] == "<root span not yet received>"
    assert "rootTraceName" not in t
    # A sub-millisecond trace has no durationMs key (uint32 zero omitted).
    assert "durationMs" not in t


def test_time_range_filters_traces(standin: Running) -> None:
    _send_trace(standin, _tid(0x444), "range-1")
    poll(lambda: _traces(standin, '{ .run_id = "range-1" }'))
    now = int(time.time())
    inside = _search(standin, '{ .run_id = "range-1" }', start=str(now - 60), end=str(now + 60))
    assert len(inside["traces"]) == 1
    before = _search(standin, '{ .run_id = "range-1" }', start=str(now - 7200), end=str(now - 3600))
    assert "traces" not in before  # gogo jsonpb omits the empty list


def test_legacy_tag_search(standin: Running) -> None:
    _send_trace(standin, _tid(0x555), "Tag-Search-One")
    poll(lambda: _traces(standin, '{ .run_id = "Tag-Search-One" }'))
    doc = get_json(standin.http, "/api/search", tags="run_id=search-one")
    (t,) = doc["traces"]
    assert t["traceID"] == "555"
    assert "spanSets" not in t and "spanSet" not in t  # absent for tags searches
    assert "traces" not in get_json(standin.http, "/api/search", tags='run_id="no such"')
    assert "traces" not in get_json(
        standin.http, "/api/search", tags="run_id=search-one", minDuration="1s"
    )


def test_parameter_errors(standin: Running) -> None:
    cases = [
        ({"q": "{}", "tags": "a=b"}, "invalid request: can't specify tags and q in the same query"),
        ({"limit": "0"}, "invalid limit: must be a positive number"),
        ({"limit": "ten"}, 'invalid limit: strconv.Atoi: parsing "ten": invalid syntax'),
        ({"spss": "-1"}, "invalid spss: must be a positive number"),
        ({"limit": "300000"}, "limit 300000 exceeds max limit 262144"),
        ({"spss": "101"}, "spans per span set exceeds 100. received 101"),
        (
            {"start": "1700000000000", "end": "1700000001000"},
            'invalid start: strconv.ParseInt: parsing "1700000000000": value out of range',
        ),
        (
            {"start": "1700000100", "end": "1700000000"},
            "http parameter start must be before end. received start=1700000100 end=1700000000",
        ),
        (
            {"start": "1700000000", "end": "1701000000"},
            "range specified by start and end exceeds 168h0m0s. "
            "received start=1700000000 end=1701000000",
        ),
        ({"minDuration": "fast"}, 'invalid minDuration: time: invalid duration "fast"'),
        (
            {"minDuration": "2s", "maxDuration": "1s"},
            "invalid maxDuration: must be greater than minDuration",
        ),
    ]
    for params, text in cases:
        r = standin.http.get("/api/search", params=params)
        assert (r.status_code, r.text) == (400, text), params


def test_bad_traceql_is_400_in_tempos_format(standin: Running) -> None:
    # Tempo's text for a query that starts with an identifier (goyacc, parse.go).
    r = standin.http.get("/api/search", params={"q": "blerg"})
    assert r.status_code == 400
    assert r.text == (
        "invalid TraceQL query: parse error at line 1, col 1: syntax error: unexpected IDENTIFIER"
    )
    assert "content-type" not in r.headers
    # The validator's refusals are 400 with its message (async_query_validator_middleware.go).
    r = standin.http.get("/api/search", params={"q": "{ .a = 1 } | count() > 2.5s"})
    assert r.status_code == 200
    r = standin.http.get("/api/search", params={"q": '{ .a = 1 } | count() > "2"'})
    assert (r.status_code, r.text) == (
        400,
        "invalid TraceQL query: parse error at line 1, col 24: syntax error: unexpected STRING",
    )
    r = standin.http.get("/api/search", params={"q": "{ duration = ok }"})
    assert (r.status_code, r.text) == (
        400,
        "invalid TraceQL query: binary operations must operate on the same type: duration = ok",
    )


def test_results_are_newest_first(standin: Running) -> None:
    # pkg/traceql/combine.go: the combiner lists the traces it kept by start time, newest first.
    base = time.time_ns() - 5_000_000_000
    for i, offset_ms in enumerate((0, 2000, 1000)):
        tid = _tid(0xA00 + i)
        span = SpanSpec(tid, _sid(1), "r", SERVER, start_ns=base + offset_ms * 1_000_000,
                        attrs={"run_id": "order"})  # fmt: skip
        send_grpc(standin.grpc_port, export_request("svc", [span]))
    poll(lambda: len(_traces(standin, '{ .run_id = "order" }')) == 3)
    assert [t["traceID"] for t in _traces(standin, '{ .run_id = "order" }')] == [
        "a01",
        "a02",
        "a00",
    ]


def test_spansets_attributes_and_selected_fields(standin: Running) -> None:
    from tql_trace import TID, apiserver_groups, request

    send_grpc(standin.grpc_port, request(TID, time.time_ns() - 10**9, apiserver_groups()))
    poll(lambda: _traces(standin, "{ }"))
    # by(): one spanset per group, each with its by(...) attribute; spanSet is the first.
    (t,) = _traces(standin, "{ } | by(resource.service.name) | count() > 0")
    sets = {ss["attributes"][0]["value"]["stringValue"]: ss for ss in t["spanSets"]}
    assert set(sets) == {"apiserver", "etcd"}
    assert t["spanSet"] == t["spanSets"][0]
    assert sets["apiserver"]["matched"] == 4 and len(sets["apiserver"]["spans"]) == 3
    assert sets["etcd"]["attributes"] == [
        {"key": "by(resource.service.name)", "value": {"stringValue": "etcd"}},
        {"key": "count()", "value": {"intValue": "1"}},
    ]
    # A span carries what the query named (intrinsics by name; never name/duration/IDs),
    # and only values that satisfy their condition.
    (t,) = _traces(
        standin,
        "{ status = error || span.size > 5 } | select(event:name, instrumentation:name, "
        "span:duration, trace:id)",
        spss="10",
    )
    spans = {s["name"]: s for s in t["spanSets"][0]["spans"]}
    assert set(spans) == {"GET /api/v1/pods", "etcdserverpb.KV/Range", "Range"}
    kv = {a["key"]: a["value"] for a in spans["etcdserverpb.KV/Range"]["attributes"]}
    assert kv == {
        "status": {"stringValue": "error"},
        "event:name": {"stringValue": "exception"},
        "instrumentation:name": {"stringValue": "k8s.io/apiserver"},
    }
    root = {a["key"]: a["value"] for a in spans["GET /api/v1/pods"]["attributes"]}
    assert root["size"] == {"intValue": "7"}
    assert "status" not in root  # unset does not satisfy status = error
    # A metrics query on /api/search runs its spanset part (engine.go ExecuteSearch).
    (t,) = _traces(standin, "{ kind = server } | rate() by (name)")
    assert t["spanSets"][0]["matched"] == 2
    # A statically false query answers nothing (RootExpr.IsNoop).
    assert _search(standin, "{ 1 = 2 }") == {"metrics": {"completedJobs": 1, "totalJobs": 1}}
