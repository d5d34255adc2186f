"""TraceQL metrics and tag discovery against a running stand-in."""

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
    poll(lambda: len(get_json(r.http, "/api/search", q="{}").get("traces", [])) == 4)
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
    # engine_metrics.go UngroupedAggregator: an ungrouped query carries __name__=<function>.
    assert series["labels"] == [{"key": "__name__", "value": {"stringValue": "count_over_time"}}]
    # filter_server_spans (default true): the non-root CLIENT span is not counted.
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
    # Labels are named as Tempo prints the field: span:name is the intrinsic "name".
    assert all(s["labels"][0]["key"] == "name" for s in grouped["series"])
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
    # engine_metrics.go: durations are bucketed by the next power of two of their nanoseconds
    # (10ms -> 2^24 ns, 20/30ms -> 2^25 ns, 1s -> 2^30 ns) and Log2Quantile interpolates
    # exponentially: the median is halfway (in log2) through the 2^25 bucket's range, and p99
    # needs all four samples, so it is the top bucket's bound.
    assert math.isclose(by_p[0.5], 2**24 / 1e9 * 2**0.5)
    assert by_p[0.99] == 2**30 / 1e9
    # An ungrouped quantile series has only its p label (its by() is the hidden bucket).
    names = {lb["key"] for x in q["series"] for lb in x["labels"]}
    assert names == {"p"}


def test_metrics_errors(standin: Running, make_standin: Callable[..., Running]) -> None:
    r = standin.http.get("/api/metrics/query_range", params={"q": "{ }"})
    assert (r.status_code, r.text) == (400, "not a metrics query")
    r = standin.http.get("/api/metrics/query_range", params={"q": "{ .a = } | rate()"})
    assert r.status_code == 400
    assert r.text == "compiling query: parse error at line 1, col 8: syntax error: unexpected }"
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
    # engine.go ExecuteTagValues: an unparsable q is ignored.
    ignored = get_json(standin.http, "/api/v2/search/tag/name/values", q="{ nonsense")
    assert len(ignored["tagValues"]) == 3
    # parse.go ParseIdentifier: an invalid tag name gives 400.
    assert standin.http.get("/api/v2/search/tag/not%20a%20tag/values").status_code == 400


@pytest.mark.parametrize("path", ["/api/search/tags", "/api/v2/search/tag/name/values"])
def test_tags_do_not_see_live_traces(make_standin: Callable[..., Running], path: str) -> None:
    # Tag lookups read the head block, like search; live traces are not in it yet.
    r = make_standin(trace_idle_period=3600.0, trace_live_period=3600.0)
    send_grpc(r.grpc_port, export_request("live", [SpanSpec(b"\x01" * 16, b"\x01" * 8, "x")]))
    doc = get_json(r.http, path)
    assert doc.get("tagNames", doc.get("tagValues")) == []


def _err(r: Running, path: str, **params: str) -> tuple[int, str]:
    resp = r.http.get(path, params=params)
    return resp.status_code, resp.text


def test_metrics_limits_and_their_texts(standin: Running) -> None:
    # modules/frontend: 3h maximum range (metrics_query_range_sharder.go, config.go), at most
    # 10,000 intervals with the minimum step rounded down (metrics_query_range_handler.go),
    # steps read by pkg/api/http.go parseSecondsOrDuration.
    rng = "/api/metrics/query_range"
    t = 1_700_000_000
    three_h = {"start": str(t), "end": str(t + 3 * 3600)}
    assert _err(standin, rng, q="{} | rate()", **three_h)[0] == 200
    over = {"start": str(t), "end": str(t + 3 * 3600 + 1)}
    text = "metrics query time range exceeds the maximum allowed duration of 3h0m0s"
    assert _err(standin, rng, q="{} | rate()", **over) == (400, text)
    assert _err(standin, "/api/metrics/query", q="{} | rate()", **over) == (400, text)
    # a statically false query answers nothing before the range is checked
    assert _err(standin, rng, q="{ false } | rate()", **over)[0] == 200
    ns = {"start": str(t * 10**9), "end": str(t * 10**9 + 10_000_000_001)}
    assert _err(standin, rng, q="{} | rate()", step="0.0005", **ns) == (
        400,
        "step of 500µs is too small, minimum step for given range is 1ms",
    )
    assert _err(standin, rng, q="{} | rate()", step="0", **three_h) == (
        400,
        "step of 0s is too small, minimum step for given range is 1.08s",
    )
    assert _err(standin, rng, q="{} | rate()", step="fast", **three_h) == (
        400,
        'rpc error: code = Code(400) desc = cannot parse "fast" to a valid duration',
    )
    back = {"start": str(t + 60), "end": str(t)}
    assert _err(standin, rng, q="{} | rate()", **back) == (400, "end must be greater than start")
    assert _err(standin, "/api/metrics/query", q="{} | rate()", **back) == (
        400,
        "end must be greater than start",
    )
    assert _err(standin, rng, q="{ } | rate() | topk(0)", **three_h) == (
        400,
        "compiling query: limit must be greater than 0",
    )
    assert _err(standin, rng, q="{ } | compare({ }, 0)", **three_h) == (
        400,
        "compiling query: compare() top number of values must be integer greater than 0",
    )


@pytest.mark.parametrize(
    ("range_s", "step_s"),
    [(3600, 15), (7200, 30), (3000, 10), (600, 2), (120, 1), (10800, 45)],
)
def test_default_step_rounds_down(standin: Running, range_s: int, step_s: int) -> None:
    # engine_metrics.go DefaultQueryRangeStep: range/240, rounded down to 5 s (1 s below 5 s).
    t = 1_700_000_040  # a multiple of 5, 10, 15, 30 and 45 s... and of 2 s
    doc = get_json(
        standin.http,
        "/api/metrics/query_range",
        q="{} | rate()",
        start=str(t),
        end=str(t + range_s),
    )
    stamps = [int(s["timestampMs"]) for s in doc["series"][0]["samples"]]
    assert stamps[1] - stamps[0] == step_s * 1000
    # AlignRequest: start rounded down, then one extra leading interval; end rounded up.
    first = (t - t % step_s) * 1000
    end = t + range_s
    last = (end + (step_s - end % step_s) % step_s) * 1000
    assert stamps[0] == first and stamps[-1] == last
    assert len(stamps) == (last - first) // (step_s * 1000) + 1


def test_intervals_are_right_closed_with_a_leading_step(standin: Running) -> None:
    now = _load(standin)
    step = 60
    doc = _range(standin, "{ kind = server } | count_over_time()", now, step="60s")
    (series,) = doc["series"]
    stamps = [int(s["timestampMs"]) // 1000 for s in series["samples"]]
    # start = now - 300 is aligned down to the step; the extra leading interval ends there.
    assert stamps[0] == (now - 300) - (now - 300) % step
    assert stamps == list(range(stamps[0], stamps[-1] + 1, step))
    assert stamps[-1] == (now + 60) + (step - (now + 60) % step) % step
    assert sum(_values(series)) == 4


def test_interval_of_a_span_on_a_boundary(make_standin: Callable[..., Running]) -> None:
    # IntervalMapperQueryRange: (T - step, T]; a span starting exactly at T counts in T.
    # (The spans are recent: the generator drops spans outside its 30 s ingestion slack.)
    r = make_standin(filter_server_spans=False)
    t = (int(time.time()) // 10) * 10 - 10
    spans = [
        SpanSpec((0x9900 + i).to_bytes(16, "big"), (1).to_bytes(8, "big"), "b", SERVER,
                 start_ns=(t + off) * 10**9)
        for i, off in enumerate((0, 1, 10))
    ]  # fmt: skip
    send_grpc(r.grpc_port, export_request("edge", spans))
    poll(lambda: len(get_json(r.http, "/api/search", q="{}").get("traces", [])) == 3)
    doc = get_json(r.http, "/api/metrics/query_range", q="{} | count_over_time()",
                   start=str(t - 10), end=str(t + 20), step="10s")  # fmt: skip
    counts = {int(s["timestampMs"]) // 1000: s.get("value", 0) for s in doc["series"][0]["samples"]}
    assert counts[t] == 1  # the span at exactly t
    assert counts[t + 10] == 2  # t+1 .. t+10
    assert counts[t + 20] == 0


def test_empty_results(standin: Running) -> None:
    now = int(time.time())
    params = {"start": str(now - 600), "end": str(now)}
    # An ungrouped rate/count always has its series (zeros: jsonpb omits each value) ...
    doc = get_json(standin.http, "/api/metrics/query_range", q="{} | rate()", **params)
    (series,) = doc["series"]
    assert series["labels"] == [{"key": "__name__", "value": {"stringValue": "rate"}}]
    assert series["samples"] and all("value" not in s for s in series["samples"])
    inst = get_json(standin.http, "/api/metrics/query", q="{} | count_over_time()", **params)
    assert inst["series"] == [
        {"labels": [{"key": "__name__", "value": {"stringValue": "count_over_time"}}]}
    ]
    # ... while grouped or NaN-valued answers have none, and jsonpb then leaves "series" out.
    for q in ("{} | rate() by (name)", "{} | max_over_time(duration)"):
        doc = get_json(standin.http, "/api/metrics/query_range", q=q, **params)
        assert "series" not in doc, q


def test_functions_over_attributes_histograms_and_topk(standin: Running) -> None:
    now = _load(standin)
    codes = _instant(standin, "{} | sum_over_time(span.http.status_code)", now)["series"]
    assert codes[0]["value"] == 200 + 200 + 200 + 500
    avg = _instant(standin, "{} | avg_over_time(span.http.status_code) by (name)", now)
    by_name = {s["labels"][0]["value"]["stringValue"]: s["value"] for s in avg["series"]}
    assert by_name == {"GET /a": 200.0, "GET /b": 350.0}
    hist = _instant(standin, "{} | histogram_over_time(duration)", now)["series"]
    buckets = {s["labels"][0]["value"]["doubleValue"]: s["value"] for s in hist}
    assert all(s["labels"][0]["key"] == "__bucket" for s in hist)
    assert buckets == {2**24 / 1e9: 1.0, 2**25 / 1e9: 2.0, 2**30 / 1e9: 1.0}
    top = _instant(standin, "{} | max_over_time(duration) by (span.http.status_code) | topk(1)",
                   now)["series"]  # fmt: skip
    assert [s["labels"][0]["value"]["intValue"] for s in top] == ["500"]
    bottom = _instant(
        standin, "{} | max_over_time(duration) by (span.http.status_code) | bottomk(1)", now
    )["series"]
    assert [s["labels"][0]["value"]["intValue"] for s in bottom] == ["200"]
    # Series come sorted as the frontend sorts them: by label count, then key and value.
    multi = _instant(standin, "{} | count_over_time() by (name, span.http.status_code)", now)
    keys = [
        [lb["value"].get("stringValue") or lb["value"].get("intValue") for lb in s["labels"]]
        for s in multi["series"]
    ]
    assert keys == [["GET /a", "200"], ["GET /b", "200"], ["GET /b", "500"]]


def test_compare_splits_baseline_and_selection(standin: Running) -> None:
    # engine_metrics_compare.go: per attribute and value, counts for the spans the filter
    # selects and for the others, plus totals; at most top-N values per attribute.
    now = _load(standin)
    doc = _instant(standin, "{ } | compare({ span.http.status_code = 500 }, 1)", now)
    got = {
        (s["labels"][0]["value"]["stringValue"], s["labels"][1]["key"],
         next(iter(s["labels"][1]["value"].values()))): s.get("value", 0)
        for s in doc["series"]
    }  # fmt: skip
    assert all(s["labels"][0]["key"] == "__meta_type" for s in doc["series"])
    assert got[("selection", "span.http.status_code", "500")] == 1
    assert got[("baseline", "span.http.status_code", "200")] == 3
    assert got[("baseline_total", "span.http.status_code", "nil")] == 3
    assert got[("selection_total", "name", "nil")] == 1
    assert got[("baseline", "name", "GET /a")] == 2  # top 1 of the baseline's two names
    assert ("baseline", "name", "GET /b") not in got
    assert got[("selection", "status", "error")] == 1
    assert not any(k[1] in ("duration", "span:id", "trace:id") for k in got)
