"""tracecheck.query.adhoc: time parsing, step selection, Prometheus's verdict on PromQL and the
offline lint, retries after 429/503, result tables.

Backends are real HTTP servers on 127.0.0.1 (the ``http_server`` fixture) answering with the
JSON shapes of docs/reference/tempo.md §5/§7 and docs/reference/prometheus.md §1-§2, so the
real clients decode them.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import pytest
from servers import Recorded, TestServer

from tracecheck.config import Settings, load_settings
from tracecheck.errors import BackendError, ExitCode, HTTPStatusError, QueryError, UsageError
from tracecheck.output import iso, render_table
from tracecheck.polling import FakeClock
from tracecheck.query.adhoc import run_promql, run_traceql
from tracecheck.query.syntax import PromQLSyntaxError, check_promql
from tracecheck.query.window import (
    MAX_POINTS,
    choose_step,
    format_duration,
    parse_duration,
    parse_time,
    resolve_window,
)
from tracecheck.results import ResultTable

NOW = 1_750_000_000.0


def settings_for(server: TestServer) -> Settings:
    return load_settings(flags={"tempo.url": server.url, "prometheus.url": server.url})


def json_answer(payload: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def form(rec: Recorded) -> dict[str, str]:
    if rec.method == "POST":
        return {k: v[0] for k, v in parse_qs(rec.body.decode()).items()}
    return {k: v[0] for k, v in parse_qs(rec.path.partition("?")[2]).items()}


# -- durations and times -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("15m", 900.0), ("1h30m", 5400.0), ("2d", 172800.0), ("500ms", 0.5),
     ("1w", 604800.0), ("42", 42.0), ("0.25", 0.25)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m5", "1.5.5s", "15 minutes", "-5m", "1x"])
def test_parse_duration_refuses_garbage(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_duration(text, what="--since")
    assert "--since" in str(err.value)
    assert err.value.exit_code is ExitCode.USAGE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-31T12:00:00Z", datetime(2025, 1, 31, 12, tzinfo=UTC).timestamp()),
        ("2025-01-31T13:00:00+01:00", datetime(2025, 1, 31, 12, tzinfo=UTC).timestamp()),
        ("2025-01-31T12:00:00", datetime(2025, 1, 31, 12, tzinfo=UTC).timestamp()),  # naive: UTC
        ("2025-01-31T12:00:00.250Z", datetime(2025, 1, 31, 12, tzinfo=UTC).timestamp() + 0.25),
        ("1700000000", 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("now", NOW),
        ("15m", NOW - 900),
        ("now-1h", NOW - 3600),
    ],
)
def test_parse_time(text: str, expected: float) -> None:
    assert parse_time(text, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["1700000000000", "1700000000000000000"])
def test_parse_time_refuses_milliseconds_and_nanoseconds(text: str) -> None:
    with pytest.raises(UsageError, match="milliseconds or nanoseconds"):
        parse_time(text, now=NOW, what="--start")


def test_parse_time_refuses_garbage_naming_the_formats() -> None:
    with pytest.raises(UsageError) as err:
        parse_time("yesterday", now=NOW, what="--at")
    assert "RFC 3339" in str(err.value) and "--at" in str(err.value)


def test_resolve_window_defaults_and_overrides() -> None:
    assert resolve_window(now=NOW) == (NOW - 3600, NOW)
    assert resolve_window(since="15m", now=NOW) == (NOW - 900, NOW)
    assert resolve_window(start="2h", end="1h", now=NOW) == (NOW - 7200, NOW - 3600)
    assert resolve_window(since=60.0, end="1700000000", now=NOW) == (1_699_999_940.0, 1.7e9)


def test_resolve_window_refuses_since_with_start_and_an_inverted_window() -> None:
    with pytest.raises(UsageError, match="not both"):
        resolve_window(since="1h", start="2h", now=NOW)
    with pytest.raises(UsageError, match="must be before"):
        resolve_window(start="1h", end="2h", now=NOW)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (3600, 90, 86400, 120, 0.2)] == [
        "1h", "90s", "1d", "2m", "1s"
    ]  # fmt: skip


# -- step selection ------------------------------------------------------------------------------


def test_given_step_over_the_point_limit_names_the_smallest_step_that_fits() -> None:
    span = 30 * 86400.0  # 30 days at 15 s = 172,800 points
    with pytest.raises(QueryError) as err:
        choose_step(0.0, span, "15s")
    message = str(err.value)
    assert "172,800 points" in message and "11,000" in message
    assert err.value.exit_code is ExitCode.CONFIG
    suggested = parse_duration(message.rsplit("--step ", 1)[1].split()[0])
    assert math.floor(span / suggested) <= MAX_POINTS
    assert math.floor(span / (suggested - 1)) > MAX_POINTS  # and it is the smallest whole second


def test_given_step_at_the_limit_is_accepted() -> None:
    assert choose_step(0.0, 11_000.0, "1s") == 1.0
    with pytest.raises(QueryError):
        choose_step(0.0, 11_001.0, "1s")


@pytest.mark.parametrize(
    "span", [60.0, 3600.0, 86400.0, 30 * 86400.0, 365 * 86400.0, 50 * 365 * 86400.0]
)
def test_chosen_step_is_round_and_under_the_limit(span: float) -> None:
    step = choose_step(0.0, span)
    assert span / step <= MAX_POINTS
    assert span / step <= 250  # about 250 points, never more
    assert step >= 1.0


# -- the offline PromQL lint (promql-parser, positioned locally) -----------------------------------


@pytest.mark.parametrize(
    ("query", "line", "col"),
    [
        ("sum(rate(foo[5m])) by (le", 1, 23),  # the unclosed parenthesis
        ('foo{a="b}', 1, 7),  # the unterminated string's quote
        ("foo +", 1, 6),  # end of input
        ("1 +* 2", 1, 4),
        ("sum by (le) foo", 1, 13),
        ("foo  bar", 1, 6),
        ("foo @ bar", 1, 7),
        ("$x", 1, 1),
        ('foo{a~"b"}', 1, 6),
        ("unknownfn(foo)", 1, 1),
        ("rate(foo[5m]) + rate(bar)", 1, 17),  # the call whose argument has the wrong type
        ("foo[5x]", 1, 5),
        ("sum(\n  rate(foo[5m])\n) by (le) )", 3, 11),
        ("histogram_quantile(0.9,\n  sum by (le) (rate(x[5m]) \n  bar", 2, 15),  # unclosed
        ("sum(rate(x[5m]))\n  bar", 2, 3),  # two expressions side by side
    ],
)
def test_invalid_promql_points_at_the_error(query: str, line: int, col: int) -> None:
    with pytest.raises(PromQLSyntaxError) as err:
        check_promql(query)
    exc = err.value
    assert (exc.line, exc.col) == (line, col), str(exc)
    assert f"line {line}, col {col}" in str(exc)
    assert "\n" not in str(exc)  # one line
    assert exc.exit_code is ExitCode.CONFIG
    assert isinstance(exc, QueryError)
    pointer_line, caret = exc.pointer().split("\n")
    assert caret == " " * (col - 1) + "^"
    assert pointer_line == query.split("\n")[line - 1]


@pytest.mark.parametrize(
    "query",
    [
        'sum by (le, span_name) (rate(traces_spanmetrics_latency_bucket{service="apiserver"}[5m]))',
        'foo{a="b",} # trailing comma and a comment',
        '{"service.name"="x"}',  # Prometheus 3 quoted UTF-8 names
        "rate(foo[5m:1m] offset -1m @ start())",
        "a and on(b) c or ignoring(x) d * on(z) group_left(y) e",
        "histogram_quantile(0.9, foo) > bool 1",
    ],
)
def test_valid_promql_passes(query: str) -> None:
    check_promql(query)


def test_empty_promql_is_refused() -> None:
    with pytest.raises(PromQLSyntaxError, match="empty query"):
        check_promql("   ")


# -- PromQL against a real HTTP server -----------------------------------------------------------


def bad_data(message: str) -> tuple[int, dict[str, str], bytes]:
    """Prometheus v3.8.0's answer to a query its parser refuses (web/api/v1/api.go
    invalidParamError; the shape checked against the local pipeline's Prometheus in
    tests/pipeline/test_promql_verdict_pipeline.py)."""
    return json_answer(
        {"status": "error", "errorType": "bad_data",
         "error": f'invalid parameter "query": {message}'},
        status=400,
    )  # fmt: skip


def test_prometheus_decides_what_the_local_parser_refuses(http_server: TestServer) -> None:
    # promql-parser refuses backticks with a backslash; Prometheus 3.8 accepts them.
    query = 'label_replace(up, "port", "$1", "instance", `.*:(\\d+)`)'
    with pytest.raises(PromQLSyntaxError):
        check_promql(query)
    http_server.handler = lambda rec: json_answer(
        {"status": "success", "data": {"resultType": "vector", "result": []}}
    )
    table = run_promql(settings_for(http_server), query, clock=FakeClock(NOW))
    assert form(http_server.requests[0])["query"] == query  # sent as written
    assert table.empty


def test_prometheus_refusal_keeps_its_message_and_position(http_server: TestServer) -> None:
    http_server.handler = lambda rec: bad_data("1:26: parse error: unclosed left parenthesis")
    query = "sum(rate(up[5m])) by (job"
    with pytest.raises(PromQLSyntaxError) as err:
        run_promql(settings_for(http_server), query, clock=FakeClock(NOW))
    exc = err.value
    assert str(exc) == (
        f'prometheus at {http_server.url}/api/v1/query: bad_data: invalid parameter "query": '
        "1:26: parse error: unclosed left parenthesis"
    )
    assert (exc.line, exc.col, exc.offset) == (1, 26, 25)
    assert exc.message == "parse error: unclosed left parenthesis"
    assert exc.pointer() == f"{query}\n{' ' * 25}^"
    assert exc.exit_code is ExitCode.CONFIG and isinstance(exc, QueryError)


def test_prometheus_byte_columns_become_character_columns(http_server: TestServer) -> None:
    # Prometheus counts bytes on the line (posrange.StartPosInput): "é" is two.
    http_server.handler = lambda rec: bad_data(
        "2:12: parse error: unexpected character inside braces: '~'"
    )
    query = 'sum(\n  été{a~"b"})'
    with pytest.raises(PromQLSyntaxError) as err:
        run_promql(settings_for(http_server), query, clock=FakeClock(NOW))
    assert (err.value.line, err.value.col) == (2, 10)
    assert err.value.pointer() == '  été{a~"b"})\n' + " " * 9 + "^"


@pytest.mark.parametrize(
    ("query", "message", "suggestion"),
    [
        ("rat(up)", '1:1: parse error: unknown function with name "rat"',
         "did you mean rate or irate?"),
        ('sort_by_label(up, "job")', '1:1: parse error: function "sort_by_label" is not enabled',
         "this Prometheus runs without --enable-feature=promql-experimental-functions"),
        ("up anchored", "1:1: parse error: anchored modifier is experimental and not enabled",
         "this Prometheus runs without --enable-feature=promql-extended-range-selectors"),
        ("rate(up[5m+1m])", "1:9: parse error: experimental duration expression is not enabled",
         "this Prometheus runs without --enable-feature=promql-duration-expr"),
        # Evaluation, not parsing: an instant query has step 0; its line:col is not ours.
        ("rate(up[step()])", "7:13: duration must be greater than 0",
         "step() is 0 in an instant query: run it as a range query (--range)"),
        ("up +", "1:5: parse error: unexpected end of input", ""),
    ],
)  # fmt: skip
def test_refusals_get_a_suggestion(
    http_server: TestServer, query: str, message: str, suggestion: str
) -> None:
    http_server.handler = lambda rec: bad_data(message)
    with pytest.raises(PromQLSyntaxError) as err:
        run_promql(settings_for(http_server), query, clock=FakeClock(NOW))
    assert err.value.suggestion == suggestion
    assert str(err.value).endswith(f"{message} ({suggestion})" if suggestion else message)
    if message.startswith("7:13"):
        assert err.value.line is None and err.value.pointer() == ""


def test_an_empty_query_goes_to_prometheus_too(http_server: TestServer) -> None:
    http_server.handler = lambda rec: bad_data(
        "unknown position: parse error: no expression found in input"
    )
    with pytest.raises(PromQLSyntaxError) as err:
        run_promql(settings_for(http_server), "", clock=FakeClock(NOW))
    assert err.value.message == "parse error: no expression found in input"
    assert err.value.pointer() == ""


def test_prometheus_unreachable_is_a_backend_error_whatever_the_query(free_port: int) -> None:
    s = load_settings(flags={"prometheus.url": f"http://127.0.0.1:{free_port}"})
    with pytest.raises(BackendError) as err:
        run_promql(s, "sum(up", clock=FakeClock(NOW))
    assert str(err.value) == (
        f"prometheus at http://127.0.0.1:{free_port}/api/v1/query: connection refused"
    )
    assert err.value.exit_code is ExitCode.BACKEND


# -- overload: 429 / 503 and Retry-After ----------------------------------------------------------


def overloaded(answers: list[tuple[int, str]], final: Any) -> Any:
    """A handler answering each (status, Retry-After) in turn, then ``final``."""
    queue = list(answers)

    def handler(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if queue:
            status, after = queue.pop(0)
            headers = {"Retry-After": after} if after else {}
            return status, headers, b"too many outstanding requests\n"
        return final  # type: ignore[no-any-return]

    return handler


def test_query_honours_retry_after_then_succeeds(http_server: TestServer) -> None:
    http_server.handler = overloaded(
        [(429, "2"), (503, ""), (429, "3")], json_answer({"traces": [], "metrics": {}})
    )
    clock = FakeClock(NOW)
    table = run_traceql(settings_for(http_server), "{ }", clock=clock)
    assert table.empty and len(http_server.requests) == 4
    assert clock.sleeps == [2.0, 0.5, 3.0]  # Retry-After, else a 0.5 s pause


def test_query_gives_up_in_one_line_when_the_wait_passes_the_timeout(
    http_server: TestServer,
) -> None:
    http_server.handler = overloaded([(429, "4"), (429, "30")], json_answer({}))
    clock = FakeClock(NOW)
    with pytest.raises(HTTPStatusError) as err:
        run_traceql(settings_for(http_server), "{ }", clock=clock)
    assert str(err.value) == (
        f"tempo at {http_server.url}/api/search: HTTP 429: too many outstanding requests; "
        "still unavailable after 2 attempts in 4.0 s (Retry-After 30 s would pass the 10 s "
        "timeout, tempo.timeout)"
    )
    assert err.value.exit_code is ExitCode.BACKEND
    assert clock.sleeps == [4.0]


def test_prometheus_503_retry_after_is_honoured(http_server: TestServer) -> None:
    envelope = json.dumps({"status": "error", "errorType": "unavailable", "error": "starting"})

    def handler(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        if len(http_server.requests) == 1:
            return 503, {"Retry-After": "1", "Content-Type": "application/json"}, envelope.encode()
        return json_answer({"status": "success", "data": {"resultType": "vector", "result": []}})

    http_server.handler = handler
    clock = FakeClock(NOW)
    assert run_promql(settings_for(http_server), "up", clock=clock).empty
    assert clock.sleeps == [1.0] and len(http_server.requests) == 2


def test_other_errors_are_not_retried(http_server: TestServer) -> None:
    http_server.handler = lambda rec: (500, {"Retry-After": "1"}, b"boom")
    with pytest.raises(HTTPStatusError, match=r"HTTP 500: boom$"):
        run_traceql(settings_for(http_server), "{ }", clock=FakeClock(NOW))
    assert len(http_server.requests) == 1


def test_instant_vector_rows(http_server: TestServer) -> None:
    http_server.handler = lambda rec: json_answer({
        "status": "success",
        "data": {"resultType": "vector", "result": [
            {"metric": {"job": "b", "__name__": "up"}, "value": [NOW, "1"]},
            {"metric": {"job": "a", "__name__": "up", "instance": "x:1"}, "value": [NOW, "NaN"]},
        ]},
    })  # fmt: skip
    table = run_promql(settings_for(http_server), "up", clock=FakeClock(NOW))
    assert form(http_server.requests[0]) == {"query": "up", "time": f"{NOW:.0f}"}
    assert table.columns == ("__name__", "instance", "job", "time", "value")
    assert table.kind == "promql-vector"
    assert [r["job"] for r in table.rows] == ["b", "a"]
    assert table.rows[0]["value"] == 1.0 and math.isnan(table.rows[1]["value"])
    assert table.rows[0]["time"] == iso(NOW)
    assert table.notes == ()
    assert json.loads(render_table(table, "json"))["rows"][1]["value"] == "NaN"


def test_at_is_sent_as_the_evaluation_time(http_server: TestServer) -> None:
    http_server.handler = lambda rec: json_answer(
        {"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "2"]}}
    )
    table = run_promql(settings_for(http_server), "1+1", at="2023-11-14T22:13:20Z",
                       clock=FakeClock(NOW))  # fmt: skip
    assert form(http_server.requests[0])["time"] == "1700000000"
    assert table.columns == ("value", "time") and table.rows == (
        {"value": 2.0, "time": iso(1.7e9)},
    )


def test_range_query_rows_and_auto_step(http_server: TestServer) -> None:
    http_server.handler = lambda rec: json_answer({
        "status": "success",
        "data": {"resultType": "matrix", "result": [
            {"metric": {"job": "a"}, "values": [[NOW - 60, "1"], [NOW, "2"]]},
        ]},
    })  # fmt: skip
    table = run_promql(settings_for(http_server), "up", range_="1h", clock=FakeClock(NOW))
    sent = form(http_server.requests[0])
    assert (float(sent["start"]), float(sent["end"]), float(sent["step"])) == (
        NOW - 3600,
        NOW,
        15.0,
    )
    assert table.kind == "promql-matrix"
    assert table.columns == ("job", "time", "value")
    assert [r["value"] for r in table.rows] == [1.0, 2.0]
    assert "step 15s" in table.notes


def test_range_over_the_point_limit_is_refused_before_sending(http_server: TestServer) -> None:
    with pytest.raises(QueryError, match="over Prometheus's limit of 11,000"):
        run_promql(settings_for(http_server), "up", range_="30d", step="15s", clock=FakeClock(NOW))
    assert http_server.requests == []


def test_empty_result_is_a_no_data_note_not_an_error(http_server: TestServer) -> None:
    http_server.handler = lambda rec: json_answer(
        {"status": "success", "data": {"resultType": "vector", "result": []}}
    )
    table = run_promql(settings_for(http_server), 'up{job="nope"}', clock=FakeClock(NOW))
    assert table.empty
    assert table.notes == (f"no data: the query returned no series at {iso(NOW)}",)
    text = render_table(table, "table")
    assert text == f"no data: the query returned no series at {iso(NOW)}\n"  # no empty table
    assert json.loads(render_table(table, "json"))["rows"] == []


def test_backend_rejection_is_a_one_line_query_error(http_server: TestServer) -> None:
    # A query promql-parser accepts but Prometheus refuses at evaluation (many-to-many).
    http_server.handler = lambda rec: json_answer(
        {"status": "error", "errorType": "execution",
         "error": "found duplicate series for the match group {} on the right hand-side\n"
                  "of the operation"},
        status=422,
    )  # fmt: skip
    with pytest.raises(QueryError) as err:
        run_promql(settings_for(http_server), "a * on() b", clock=FakeClock(NOW))
    assert "execution: found duplicate series" in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.exit_code == 4


def test_warnings_and_infos_become_notes(http_server: TestServer) -> None:
    http_server.handler = lambda rec: json_answer({
        "status": "success", "warnings": ["w1"], "infos": ["metric might not be a counter"],
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [NOW, "0"]}]},
    })  # fmt: skip
    table = run_promql(settings_for(http_server), "rate(x[5m])", clock=FakeClock(NOW))
    assert table.notes == ("warning: w1", "info: metric might not be a counter")
    assert table.columns == ("time", "value")


def test_large_results_are_limited_with_a_note(http_server: TestServer) -> None:
    result = [{"metric": {"i": str(i)}, "value": [NOW, str(i)]} for i in range(25)]
    http_server.handler = lambda rec: json_answer(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    )
    table = run_promql(settings_for(http_server), "x", max_rows=10, clock=FakeClock(NOW))
    assert len(table.rows) == 10
    assert table.notes == (
        "limited to the first 10 of 25 rows; narrow the query or raise --max-rows",
    )
    full = run_promql(settings_for(http_server), "x", max_rows=None, clock=FakeClock(NOW))
    assert len(full.rows) == 25 and full.notes == ()


# -- TraceQL against a real HTTP server ----------------------------------------------------------

SEARCH = {
    "traces": [
        {
            # Tempo strips leading zeros from trace IDs (docs/reference/tempo.md §5.3).
            "traceID": "af7651916cd43dd8448eb211c80319c",
            "rootServiceName": "apiserver",
            "rootTraceName": "GET /api/v1/namespaces/{:namespace}/pods",
            "startTimeUnixNano": "1750000000000000000",
            "durationMs": 12,
            "spanSets": [
                {
                    "spans": [
                        {
                            "spanID": "00f067aa0ba902b7",
                            "name": "GET /api/v1/namespaces/{:namespace}/pods",
                            "startTimeUnixNano": "1750000000001000000",
                            "durationNanos": "11500000",
                            "attributes": [
                                {"key": "http.target", "value": {"stringValue": "/api/v1/x"}},
                                {"key": "http.status_code", "value": {"intValue": "200"}},
                            ],
                        }
                    ],
                    "matched": 4,
                }
            ],
        },
        {"traceID": "1" * 32, "rootServiceName": "<root span not yet received>",
         "startTimeUnixNano": "1750000001000000000"},
    ],
    "metrics": {"inspectedTraces": 2},
}  # fmt: skip


def test_search_rows_notes_and_parameters(http_server: TestServer) -> None:
    http_server.handler = lambda rec: json_answer(SEARCH)
    table = run_traceql(settings_for(http_server), '{ resource.service.name = "apiserver" }',
                        since="15m", limit=2, spss=1, clock=FakeClock(NOW))  # fmt: skip
    sent = form(http_server.requests[0])
    assert sent == {"q": '{ resource.service.name = "apiserver" }', "start": str(int(NOW - 900)),
                    "end": str(int(NOW)), "limit": "2", "spss": "1"}  # fmt: skip
    assert table.kind == "traceql-search"
    assert table.columns[:9] == ("trace_id", "trace_start", "root_service", "root_name",
                                 "trace_duration_ms", "span_id", "span_name", "span_start",
                                 "span_duration_ms")  # fmt: skip
    assert table.columns[9:] == ("http.target", "http.status_code")
    first, second = table.rows
    assert first["trace_id"] == "0af7651916cd43dd8448eb211c80319c"  # padded back to 32
    assert first["span_id"] == "00f067aa0ba902b7"
    assert first["span_duration_ms"] == 11.5 and first["http.status_code"] == 200
    assert first["trace_start"] == iso(NOW)
    assert second["trace_id"] == "1" * 32 and second.get("span_id") is None
    assert any("limited to 2 traces" in n and "more may exist" in n for n in table.notes)
    assert "3 matched spans not shown: at most 1 spans per span set (raise --spss, max 100)" in (
        table.notes
    )


def test_search_with_no_hits_is_a_no_data_note(http_server: TestServer) -> None:
    http_server.handler = lambda rec: json_answer({"traces": [], "metrics": {}})
    table = run_traceql(settings_for(http_server), "{ }", clock=FakeClock(NOW))
    assert table.empty
    assert table.notes == (f"no data: no trace matched between {iso(NOW - 3600)} and {iso(NOW)}",)
    assert render_table(table, "markdown").startswith("_no data: no trace matched")


def test_tempo_rejection_is_one_line_with_what_is_at_the_position(
    http_server: TestServer,
) -> None:
    # Tempo's own text (modules/frontend/search_handlers_test.go via docs/reference/tempo.md §8.1).
    http_server.handler = lambda rec: (
        400, {}, b"invalid TraceQL query: parse error at line 1, col 3: syntax error: "
                 b"unexpected IDENTIFIER\n",
    )  # fmt: skip
    with pytest.raises(QueryError) as err:
        run_traceql(settings_for(http_server), "{ resource.x = }", clock=FakeClock(NOW))
    message = str(err.value)
    assert message.startswith("tempo at http://127.0.0.1:")
    assert "HTTP 400: invalid TraceQL query: parse error at line 1, col 3" in message
    assert message.endswith("(near 'resource.x = }')")
    assert "\n" not in message and err.value.exit_code == 4


def test_metrics_range_rows(http_server: TestServer) -> None:
    http_server.handler = lambda rec: json_answer({
        "series": [
            {"labels": [{"key": "name", "value": {"stringValue": "GET"}},
                        {"key": "p", "value": {"doubleValue": 0.99}}],
             "samples": [{"timestampMs": "1750000000000", "value": 0.25},
                         {"timestampMs": "1750000060000"}]},
        ],
        "status": "PARTIAL", "message": "some blocks were not read",
    })  # fmt: skip
    query = "{ } | quantile_over_time(duration, .99) by (name)"
    table = run_traceql(settings_for(http_server), query, metrics=True, step="60s",
                        clock=FakeClock(NOW))  # fmt: skip
    rec = http_server.requests[0]
    assert rec.path.startswith("/api/metrics/query_range?")
    assert form(rec)["step"] == "60s"
    assert table.kind == "traceql-metrics"
    assert table.columns == ("name", "p", "time", "value")
    assert table.rows == (
        {"name": "GET", "p": 0.99, "time": iso(NOW), "value": 0.25},
        {"name": "GET", "p": 0.99, "time": iso(NOW + 60), "value": 0.0},  # jsonpb omits 0
    )
    assert table.notes == ("Tempo answered PARTIAL: some blocks were not read",)


def test_metrics_instant_rows(http_server: TestServer) -> None:
    http_server.handler = lambda rec: json_answer(
        {"series": [{"labels": [{"key": "__name__", "value": {"stringValue": "rate"}}],
                     "value": 1.5}]}
    )  # fmt: skip
    table = run_traceql(settings_for(http_server), "{ } | rate()", metrics=True, instant=True,
                        clock=FakeClock(NOW))  # fmt: skip
    assert http_server.requests[0].path.startswith("/api/metrics/query?")
    assert table.columns == ("__name__", "value")
    assert table.rows == ({"__name__": "rate", "value": 1.5},)
    assert table.notes == ()


def test_metrics_instant_carries_tempos_status_and_message(http_server: TestServer) -> None:
    # QueryInstantResponse has status/message like the range answer (Tempo 2.9,
    # modules/frontend/metrics_query_handler.go copies them when a limit cut the answer).
    http_server.handler = lambda rec: json_answer({
        "series": [{"labels": [{"key": "name", "value": {"stringValue": "GET"}}], "value": 2}],
        "status": "PARTIAL", "message": "Response exceeds maximum series limit of 1",
    })  # fmt: skip
    table = run_traceql(settings_for(http_server), "{ } | rate() by (name)", metrics=True,
                        instant=True, clock=FakeClock(NOW))  # fmt: skip
    assert table.rows == ({"name": "GET", "value": 2.0},)
    assert table.notes == ("Tempo answered PARTIAL: Response exceeds maximum series limit of 1",)


def test_metrics_with_no_series_is_a_no_data_note(http_server: TestServer) -> None:
    http_server.handler = lambda rec: json_answer({"series": []})
    table = run_traceql(settings_for(http_server), "{ } | rate()", metrics=True,
                        clock=FakeClock(NOW))  # fmt: skip
    assert table.empty and table.notes[0].startswith("no data: no series between")


# -- rendering -----------------------------------------------------------------------------------


def test_render_formats() -> None:
    table = ResultTable(
        ("name", "value"),
        ({"name": "a|b", "value": 1.5}, {"name": "c", "value": math.inf}),
        ("limited to the first 2 of 3 rows; narrow the query or raise --max-rows",),
    )
    text = render_table(table, "table")
    assert text.splitlines()[0].split() == ["name", "value"]
    assert text.splitlines()[-1] == table.notes[0]
    assert render_table(table, "csv") == "name,value\na|b,1.5\nc,+Inf\n"
    md = render_table(table, "markdown")
    assert "| a\\|b | 1.5 |" in md and md.rstrip().endswith(f"_{table.notes[0]}_")
    data = json.loads(render_table(table, "json"))
    assert data["rows"] == [{"name": "a|b", "value": 1.5}, {"name": "c", "value": "+Inf"}]
    assert data["notes"] == list(table.notes)
    with pytest.raises(UsageError, match="choose from table, json, csv, markdown"):
        render_table(table, "yaml")
