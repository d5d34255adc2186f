"""TraceQL metrics (§7, §8.2) and tag discovery (§6) against a running stand-in."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytest
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

DURATIONS_MS = (10, 20, 30, 1000)


def _load(r: Running) -> int:
    """Four SERVER spans of service "api" (two names) and one child CLIENT span; returns now."""
    now = time.time_ns()
    spans = []
    for i, ms in enumerate(DURATIONS_MS):
        spans.append(
            SpanSpec(
                (0x7000 + i).to_bytes(16, "big"),
                (1).to_bytes(8, "big"),
                "GET /a" if i % 2 == 0 else "GET /b",
                SERVER,
                start_ns=now - ms * 1_000_000,
                duration_ns=ms * 1_000_000,
                status=ERROR if i == 3 else 0,
                attrs={"http.status_code": 500 if i == 3 else 200, "http.method": "GET"},
            )
        )
    spans.append(
        SpanSpec(
            (0x7000).to_bytes(16, "big"),
            (2).to_bytes(8, "big"),
            "SELECT",
            CLIENT,
            parent=(1).to_bytes(8, "big"),
            start_ns=now - 5_000_000,
            duration_ns=2_000_000,
        )
    )
    send_grpc(r.grpc_port, export_request("api", spans, resource={"k8s.namespace": "web"}))
    poll(lambda: len(get_json(r.http, "/api/search", q="{}")["traces"]) == 4)
    return now // 10**9


def _range(r: Running, q: str, now: int, **extra: str) -> dict:
    params = {"q": q, "start": str(now - 300), "end": str(now + 60), **extra}
    return get_json(r.http, "/api/metrics/query_range", **params)  # type: ignore[no-any-return]


def _instant(r: Running, q: str, now: int) -> dict:
    params = {"q": q, "start": str(now - 300), "end": str(now + 60)}
    return get_json(r.http, "/api/metrics/query", **params)  # type: ignore[no-any-return]


def _values(series: dict) -> list[float]:
    # jsonpb omits a zero double: a sample without "value" is 0.
    return [s.get("value", 0.0) for s in series["samples"]]


def test_count_rate_and_grouping(standin: Running) -> None:
    now = _load(standin)
    doc = _range(standin, '{ resource.service.name = "api" } | count_over_time()', now, step="60s")
    (series,) = doc["series"]
    # §7.2: an ungrouped query carries __name__=<function>.
    assert series["labels"] == [{"key": "__name__", "value": {"stringValue": "count_over_time"}}]
    # filter_server_spans (default true, §7.4): the non-root CLIENT span is not counted.
    assert sum(_values(series)) == 4
    assert all(isinstance(s["timestampMs"], str) for s in series["samples"])
    stamps = [int(s["timestampMs"]) for s in series["samples"]]
    assert stamps == sorted(stamps) and all(t % 60_000 == 0 for t in stamps)
    rate = _range(standin, "{} | rate()", now, step="10s")["series"][0]
    assert math.isclose(sum(v * 10 for v in _values(rate)), 4.0)
    assert any("value" not in s for s in rate["samples"])  # zero samples present, value omitted
    grouped = _range(standin, "{ kind = server } | count_over_time() by (span:name)", now)
    by_name = {s["labels"][0]["value"]["stringValue"]: sum(_values(s)) for s in grouped["series"]}
    assert by_name == {"GET /a": 2, "GET /b": 2}
    assert all(s["labels"][0]["key"] == "span:name" for s in grouped["series"])
    by_status = _range(
        standin, "{} | count_over_time() by (span.http.status_code, resource.k8s.namespace)", now
    )
    labels = sorted(
        (s["labels"][0]["value"]["intValue"], s["labels"][1]["value"]["stringValue"])
        for s in by_status["series"]
    )
    assert labels == [("200", "web"), ("500", "web")]


def test_duration_aggregates(standin: Running) -> None:
    now = _load(standin)
    expect = [ms / 1000 for ms in DURATIONS_MS]
    inst = _instant(standin, "{ kind = server } | avg_over_time(duration)", now)
    (s,) = inst["series"]
    assert math.isclose(s["value"], sum(expect) / 4)
    assert math.isclose(
        _instant(standin, "{} | sum_over_time(duration)", now)["series"][0]["value"], sum(expect)
    )
    assert _instant(standin, "{} | max_over_time(duration)", now)["series"][0]["value"] == 1.0
    assert math.isclose(
        _instant(standin, "{} | min_over_time(duration)", now)["series"][0]["value"], 0.01
    )
    q = _instant(standin, "{} | quantile_over_time(duration, .5, .99)", now)
    by_p = {
        next(lb["value"]["doubleValue"] for lb in x["labels"] if lb["key"] == "p"): x["value"]
        for x in q["series"]
    }
    assert set(by_p) == {0.5, 0.99}
    # log2 buckets: the median lies in the bucket holding 20 ms, the p99 in the one holding 1 s.
    assert 2**-6 <= by_p[0.5] <= 2**-5
    assert 0.5 <= by_p[0.99] <= 1.0
    names = {lb["key"] for x in q["series"] for lb in x["labels"]}
    assert names == {"__name__", "p"}


def test_metrics_errors(standin: Running, make_standin: Callable[..., Running]) -> None:
    r = standin.http.get("/api/metrics/query_range", params={"q": "{ }"})
    assert (r.status_code, r.text) == (400, "not a metrics query")
    r = standin.http.get("/api/metrics/query_range", params={"q": "{ .a = } | rate()"})
    assert r.status_code == 400
    assert (
        r.text
        == "compiling query: parse error at line 1, col 8: syntax error: unexpected CLOSE_BRACE"
    )
    r = standin.http.get(
        "/api/metrics/query_range",
        params={"q": "{} | rate()", "start": "1700000000", "end": "1700003600", "step": "0.1s"},
    )
    assert (r.status_code, r.text) == (
        400,
        "step of 100ms is too small, minimum step for given range is 360ms",
    )
    no_local_blocks = make_standin(processors=("span-metrics",))
    r = no_local_blocks.http.get("/api/metrics/query_range", params={"q": "{} | rate()"})
    assert (r.status_code, r.text) == (500, "localblocks processor not found")


def test_tags_v1_and_v2(standin: Running) -> None:
    _load(standin)
    names = get_json(standin.http, "/api/search/tags")["tagNames"]
    assert names == ["http.method", "http.status_code", "k8s.namespace", "service.name"]
    span_only = get_json(standin.http, "/api/search/tags", scope="span")["tagNames"]
    assert span_only == ["http.method", "http.status_code"]
    v2 = get_json(standin.http, "/api/v2/search/tags")["scopes"]
    scopes = {s["name"]: s["tags"] for s in v2}
    assert scopes["resource"] == ["k8s.namespace", "service.name"]
    assert scopes["span"] == ["http.method", "http.status_code"]
    assert "duration" in scopes["intrinsic"] and "trace:rootService" in scopes["intrinsic"]
    bad = standin.http.get("/api/search/tags", params={"scope": "nope"})
    assert bad.status_code == 400


def test_tag_values(standin: Running) -> None:
    _load(standin)
    v1 = get_json(standin.http, "/api/search/tag/service.name/values")
    assert v1["tagValues"] == ["api"]
    svc = get_json(standin.http, "/api/v2/search/tag/resource.service.name/values")
    assert svc["tagValues"] == [{"type": "string", "value": "api"}]
    codes = get_json(standin.http, "/api/v2/search/tag/span.http.status_code/values")
    assert codes["tagValues"] == [{"type": "int", "value": "200"}, {"type": "int", "value": "500"}]
    status = get_json(standin.http, "/api/v2/search/tag/status/values")
    assert status["tagValues"] == [
        {"type": "keyword", "value": "error"},
        {"type": "keyword", "value": "unset"},
    ]
    names = get_json(
        standin.http, "/api/v2/search/tag/name/values", q="{ span.http.status_code = 500 }"
    )
    assert names["tagValues"] == [{"type": "string", "value": "GET /b"}]
    # §6: an invalid q is silently ignored.
    ignored = get_json(standin.http, "/api/v2/search/tag/name/values", q="{ nonsense")
    assert len(ignored["tagValues"]) == 3
    # §6: an invalid tag name gives 400.
    assert standin.http.get("/api/v2/search/tag/not%20a%20tag/values").status_code == 400


@pytest.mark.parametrize("path", ["/api/search/tags", "/api/v2/search/tag/name/values"])
def test_tags_do_not_see_live_traces(make_standin: Callable[..., Running], path: str) -> None:
    # §6/§10: tag lookups read the head block, like search; live traces are not in it yet.
    r = make_standin(trace_idle_period=3600.0, trace_live_period=3600.0)
    send_grpc(r.grpc_port, export_request("live", [SpanSpec(b"\x01" * 16, b"\x01" * 8, "x")]))
    doc = get_json(r.http, path)
    assert doc.get("tagNames", doc.get("tagValues")) == []
