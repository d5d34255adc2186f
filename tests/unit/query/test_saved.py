"""tracecheck.query.saved: the shipped query files, the header format, parameters, shaping, running.

Running goes through the real clients to a real HTTP server on 127.0.0.1 (``http_server``).
The saved queries against the real local pipeline are in tests/pipeline/test_queries_pipeline.py.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from servers import Recorded, TestServer

from tracecheck.config import load_settings
from tracecheck.errors import ConfigError, ExitCode, QueryError
from tracecheck.polling import FakeClock
from tracecheck.query.saved import (
    KINDS,
    Param,
    SavedQuery,
    get_query,
    list_queries,
    load_queries,
    parse_query_file,
    queries_dir,
    run_saved,
    shape,
)
from tracecheck.query.syntax import check_promql
from tracecheck.results import ResultTable
from tracecheck.stack.local.paths import find_repo_root

REPO_QUERIES = find_repo_root(Path(__file__).parent) / "queries"
NOW = 1_750_000_000.0
SHIPPED = load_queries(REPO_QUERIES)


def test_the_library_has_the_queries_issue_5_asks_for() -> None:
    names = {q.name for q in SHIPPED}
    assert {
        "apiserver-slowest-requests",
        "apiserver-error-spans",
        "apiserver-latency-spanmetrics",
        "etcd-latency",
        "red-per-service",
        "service-graph-edges",
        "pipeline-health",
    } <= names
    files = {p.name for p in REPO_QUERIES.iterdir() if p.suffix in (".traceql", ".promql")}
    assert len(SHIPPED) == len(files)  # every file loads; none is skipped


def test_source_checkout_reads_the_repository_directory() -> None:
    # This test runs from the editable install: there is no tracecheck/queries copy.
    assert Path(str(queries_dir())).resolve() == REPO_QUERIES
    assert load_queries() == SHIPPED


@pytest.mark.parametrize("query", SHIPPED, ids=lambda q: q.name)
def test_every_shipped_query_renders_with_its_defaults_and_parses(query: SavedQuery) -> None:
    values = {p.name: "x" for p in query.params if p.required}
    text = query.render(values)
    assert "${" not in text
    assert query.kind in KINDS[query.language]
    assert query.columns and len(set(query.columns)) == len(query.columns)
    if query.language == "promql":
        check_promql(text)
        # Span-metric queries say which family they are written for.
        if "spanmetrics" in text:
            assert query.naming == "tempo"
        if "span_metrics" in text:
            assert query.naming == "otel"
    else:
        assert text.lstrip().startswith("{")
        assert "#" not in text  # TraceQL has no comments


def test_span_metric_queries_come_in_both_flavours() -> None:
    tempo = {q.name for q in SHIPPED if q.naming == "tempo"}
    otel = {q.name.removesuffix("-otel") for q in SHIPPED if q.naming == "otel"}
    assert otel and otel <= tempo


def test_tempo_flavour_uses_the_tempo_names_and_labels() -> None:
    text = get_query("apiserver-latency-spanmetrics", SHIPPED).render()
    assert 'traces_spanmetrics_latency_bucket{service="apiserver"' in text
    assert "traces_span_metrics" not in text
    otel = get_query("apiserver-latency-spanmetrics-otel", SHIPPED).render()
    assert 'traces_span_metrics_duration_milliseconds_bucket{service_name="apiserver"' in otel
    assert otel.count("/ 1000") == 3  # milliseconds -> seconds for each quantile


# -- parameters ----------------------------------------------------------------------------------


def test_string_parameters_are_escaped_so_they_stay_one_literal() -> None:
    q = get_query("apiserver-error-spans", SHIPPED)
    text = q.render({"service": 'a"b\\c'})
    assert 'resource.service.name = "a\\"b\\\\c"' in text
    promql = get_query("red-per-service", SHIPPED).render({"span_kind": 'x"}) or vector(1'})
    check_promql(promql)  # still one valid expression: the value could not break out
    assert 'span_kind=~"x\\"}) or vector(1"' in promql


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        (Param("w", "duration"), "5x", "is not a duration"),
        (Param("w", "duration"), "5m] or vector(1", "is not a duration"),
        (Param("n", "number"), "1) or vector(1", "is not a number"),
        (Param("n", "number"), "nan", "finite number"),
        (Param("i", "int"), "1.5", "whole number"),
        (Param("l", "identifier"), "a) or (b", "identifier"),
        (Param("s"), "two\nlines", "single line"),
    ],
)
def test_parameter_values_are_checked_against_their_type(
    param: Param, value: str, expected: str
) -> None:
    with pytest.raises(QueryError, match=re.escape(expected)) as err:
        param.render(value, "q")
    assert f"parameter {param.name}" in str(err.value)
    assert err.value.exit_code is ExitCode.CONFIG


def test_valid_typed_values_pass_unchanged() -> None:
    assert Param("w", "duration").render("1h30m", "q") == "1h30m"
    assert Param("n", "number").render("0.99", "q") == "0.99"
    assert Param("i", "int").render("-3", "q") == "-3"
    assert Param("l", "identifier").render("span.http.method", "q") == "span.http.method"


def test_unknown_parameter_lists_the_valid_ones() -> None:
    q = get_query("apiserver-latency-spanmetrics", SHIPPED)
    with pytest.raises(QueryError) as err:
        q.render({"windw": "5m"})
    assert str(err.value) == (
        "query at apiserver-latency-spanmetrics: unknown parameter windw; "
        "apiserver-latency-spanmetrics takes service (default 'apiserver'), "
        "window (default '1h')"
    )


def test_missing_required_parameter_names_it() -> None:
    q = get_query("apiserver-trace-by-audit-id", SHIPPED)
    with pytest.raises(QueryError) as err:
        q.render()
    message = str(err.value)
    assert "missing parameter audit_id" in message
    assert "give --param audit_id=VALUE" in message
    assert err.value.exit_code == 4


def test_unknown_query_name_suggests_and_lists_the_names() -> None:
    with pytest.raises(QueryError) as err:
        get_query("apiserver-slowest", SHIPPED)
    message = str(err.value)
    assert message.startswith(
        "query at apiserver-slowest: no saved query 'apiserver-slowest' (did you mean "
        "apiserver-slowest-requests"
    )
    assert err.value.exit_code == 4
    assert len(err.value.cause) <= 300 and not message.endswith("…")  # never cut by the cap
    listed = message.split("; choose from ", 1)[1]
    shown = [q.name for q in SHIPPED if q.name in listed.split(" and ")[0].split(", ")]
    more = int(listed.rsplit(" and ", 1)[1].split()[0]) if " more (" in listed else 0
    assert shown and len(shown) + more == len(SHIPPED)
    if more:
        assert listed.endswith(f"and {more} more (tracecheck query list)")


def test_unknown_query_name_in_a_small_library_lists_all() -> None:
    pool = SHIPPED[:3]
    with pytest.raises(QueryError) as err:
        get_query("zzz", pool)
    assert str(err.value) == (
        f"query at zzz: no saved query 'zzz'; choose from {', '.join(q.name for q in pool)}"
    )


def test_list_shows_every_query_with_its_parameters() -> None:
    table = list_queries(SHIPPED)
    assert table.columns == (
        "name", "language", "kind", "naming", "params", "columns", "description"
    )  # fmt: skip
    by_name = {r["name"]: r for r in table.rows}
    assert by_name["apiserver-trace-by-audit-id"]["params"] == "audit_id"
    assert by_name["apiserver-latency-spanmetrics"]["params"] == "service=apiserver window=1h"
    assert by_name["pipeline-health"]["columns"] == "job, counter, value"
    assert list_queries(()).notes == ("no data: no saved queries found",)
    assert table.notes == ()  # the shipped queries pass the offline lint


def test_list_lints_promql_offline_as_warnings_only() -> None:
    # promql-parser refuses a backtick string with a backslash (Prometheus 3.8 accepts it) and
    # a missing parenthesis (Prometheus refuses it too): both are warnings, listed, never fatal.
    raw = parse_query_file(
        "# name: raw\n# description: d\n# param: port=8080\n# columns: v\n"
        'up{instance=~`.*:\\d+`, port="${port}"}\n',
        "raw.promql",
    )
    broken = parse_query_file(
        "# name: broken\n# description: d\n# columns: v\nsum(rate(up[5m])\n", "broken.promql"
    )
    table = list_queries((broken, raw))
    assert [r["name"] for r in table.rows] == ["broken", "raw"]
    assert len(table.notes) == 2
    assert table.notes[0].startswith(
        "warning: broken.promql: the local parser (promql-parser) refuses it at line 1, col 4:"
    )
    assert table.notes[1].startswith(
        "warning: raw.promql: the local parser (promql-parser) refuses it at line 1, col "
    )
    assert "unknown escape sequence 'd'" in table.notes[1]
    assert all(n.endswith("; Prometheus decides when it runs") for n in table.notes)


# -- the header format ---------------------------------------------------------------------------

GOOD = """\
# name: q
# description: d
# param: a=1
# columns: x, y
up{a="${a}"}
"""


def test_minimal_file_and_defaults() -> None:
    q = parse_query_file(GOOD, "q.promql")
    assert (q.language, q.kind, q.params, q.columns) == (
        "promql", "instant", (Param("a", "string", "1", ""),), ("x", "y")
    )  # fmt: skip
    assert q.render() == 'up{a="1"}'


@pytest.mark.parametrize(
    ("text", "filename", "cause"),
    [
        (GOOD, "q.sql", "not a .traceql or .promql file"),
        (GOOD, "other.promql", "name 'q' must equal the file name 'other'"),
        (GOOD.replace("# description: d\n", ""), "q.promql", "missing '# description:'"),
        (GOOD.replace("# columns: x, y\n", ""), "q.promql", "missing '# columns:'"),
        (GOOD.replace("# columns", "# kind: search\n# columns"), "q.promql", "kind 'search'"),
        (GOOD.replace("${a}", "${b}"), "q.promql", "undeclared parameter(s) in the query: b"),
        (GOOD.replace("# param: a=1", "# param: a=1\n# param: z=2"), "q.promql",
         "declared but unused parameter(s): z"),
        (GOOD.replace("a=1", "a:float=1"), "q.promql", "type 'float'"),
        (GOOD.replace("a=1", "a:duration=1x"), "q.promql", "default of parameter a"),
        (GOOD.replace("# name", "# nme"), "q.promql", "unknown header key 'nme'"),
        (GOOD.replace("# columns: x, y", "# columns: x\n# sort: -z"), "q.promql",
         "sort column 'z' is not among the columns"),
        (GOOD.replace("# columns: x, y", "# columns: x\n# pivot: p 0.5"), "q.promql",
         "pivot '0.5': write LABEL [VALUE=COLUMN ...]"),
        ("# name: q\n# description: d\n# columns: x\n", "q.traceql", "no query after the header"),
        (GOOD.replace("# name: q", "#name q"), "q.promql", "line 1: header lines"),
    ],
)  # fmt: skip
def test_malformed_files_are_config_errors_naming_the_file(
    text: str, filename: str, cause: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_query_file(text, filename)
    assert str(err.value).startswith(f"query at {filename}: ")
    assert cause in str(err.value)


def test_required_parameter_and_typed_parameter_syntax() -> None:
    q = parse_query_file(
        "# name: t\n# description: d\n# param: id  the id\n# param: w:duration=5m  window\n"
        '# columns: x\n{ span.id = "${id}" && duration > ${w} }\n',
        "t.traceql",
    )
    assert q.params == (
        Param("id", "string", None, "the id"),
        Param("w", "duration", "5m", "window"),
    )
    assert q.param("id").required and not q.param("w").required
    assert q.render({"id": "7"}) == '{ span.id = "7" && duration > 5m }'


# -- shaping -------------------------------------------------------------------------------------


def _saved(**kw: Any) -> SavedQuery:
    base: dict[str, Any] = dict(
        name="q", language="promql", kind="instant", description="d", params=(),
        columns=("span_name", "rate_per_s", "p99_s"), body="x", path="q.promql",
    )  # fmt: skip
    base.update(kw)
    return SavedQuery(**base)


def test_pivot_turns_measures_into_columns_and_sorts() -> None:
    raw = ResultTable(
        ("measure", "span_name", "time", "value"),
        (
            {"measure": "rate_per_s", "span_name": "GET", "time": "t", "value": 2.0},
            {"measure": "p99_s", "span_name": "GET", "time": "t", "value": 0.004},
            {"measure": "rate_per_s", "span_name": "POST", "time": "t", "value": 1.0},
            {"measure": "p99_s", "span_name": "POST", "time": "t", "value": 0.5},
            {"measure": "rate_per_s", "span_name": "LIST", "time": "t", "value": 0.1},
            {"measure": "p99_s", "span_name": "LIST", "time": "t", "value": math.nan},
        ),
    )
    table = shape(_saved(pivot="measure", sort="-p99_s"), raw)
    assert table.columns == ("span_name", "rate_per_s", "p99_s")
    assert [r["span_name"] for r in table.rows] == ["POST", "GET", "LIST"]  # NaN last
    assert table.rows[0] == {"span_name": "POST", "rate_per_s": 1.0, "p99_s": 0.5}
    assert table.notes == ()


def test_pivot_renames_numeric_label_values() -> None:
    raw = ResultTable(
        ("name", "p", "value"),
        (
            {"name": "Range", "p": 0.5, "value": 0.001},
            {"name": "Range", "p": 0.99, "value": 0.004},
            {"name": "Range", "p": ".9", "value": 0.002},  # a string spelling of 0.9
        ),
    )
    q = _saved(columns=("name", "p50_s", "p90_s", "p99_s"), pivot="p",
               pivot_names=(("0.5", "p50_s"), ("0.9", "p90_s"), ("0.99", "p99_s")))  # fmt: skip
    assert shape(q, raw).rows == (
        {"name": "Range", "p50_s": 0.001, "p90_s": 0.002, "p99_s": 0.004},
    )


def test_a_declared_column_missing_from_the_result_is_noted() -> None:
    raw = ResultTable(("span_name", "value"), ({"span_name": "GET", "value": 1.0},))
    table = shape(_saved(columns=("span_name", "p99_s")), raw)
    assert table.rows == ({"span_name": "GET", "p99_s": None},)
    assert table.notes == ("column(s) not in the result: p99_s",)


def test_shape_keeps_no_data_and_limits_with_a_note() -> None:
    empty = ResultTable(("value",), (), ("no data: nothing",))
    assert shape(_saved(), empty).notes == ("no data: nothing",)
    many = ResultTable(("span_name",), tuple({"span_name": str(i)} for i in range(5)))
    limited = shape(_saved(columns=("span_name",)), many, max_rows=2)
    assert len(limited.rows) == 2 and limited.notes[-1].startswith("limited to the first 2 of 5")


# -- running against a real HTTP server ----------------------------------------------------------


def _answer(payload: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _form(rec: Recorded) -> dict[str, str]:
    raw = rec.body.decode() if rec.method == "POST" else rec.path.partition("?")[2]
    return {k: v[0] for k, v in parse_qs(raw).items()}


def test_run_saved_promql_substitutes_checks_and_pivots(http_server: TestServer) -> None:
    def handler(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        return _answer({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"service": "api", "measure": m}, "value": [NOW, v]}
            for m, v in (("rate_per_s", "2"), ("error_ratio", "0.5"), ("p50_s", "0.01"),
                         ("p99_s", "0.2"))
        ]}})  # fmt: skip

    http_server.handler = handler
    settings = load_settings(flags={"prometheus.url": http_server.url})
    table = run_saved(settings, "red-per-service", {"window": "10m"}, clock=FakeClock(NOW),
                      queries=SHIPPED)  # fmt: skip
    sent = _form(http_server.requests[0])["query"]
    assert sent == get_query("red-per-service", SHIPPED).render({"window": "10m"})
    assert "[10m]" in sent and "[5m]" not in sent
    assert table.columns == ("service", "rate_per_s", "error_ratio", "p50_s", "p99_s")
    assert table.rows == (
        {"service": "api", "rate_per_s": 2.0, "error_ratio": 0.5, "p50_s": 0.01, "p99_s": 0.2},
    )


def test_run_saved_traceql_uses_the_files_limit_and_spss(http_server: TestServer) -> None:
    http_server.handler = lambda rec: _answer({"traces": []})
    settings = load_settings(flags={"tempo.url": http_server.url})
    table = run_saved(settings, "apiserver-slowest-requests", {"min_duration": "250ms"},
                      since="30m", clock=FakeClock(NOW), queries=SHIPPED)  # fmt: skip
    sent = _form(http_server.requests[0])
    assert (sent["limit"], sent["spss"]) == ("100", "5")
    assert "duration > 250ms" in sent["q"]
    assert int(sent["start"]) == int(NOW - 1800)
    assert table.empty and table.notes[0].startswith("no data: no trace matched")
    assert table.columns == get_query("apiserver-slowest-requests", SHIPPED).columns


def test_run_saved_refuses_options_of_the_other_language(http_server: TestServer) -> None:
    settings = load_settings(flags={"tempo.url": http_server.url,
                                    "prometheus.url": http_server.url})  # fmt: skip
    with pytest.raises(QueryError, match="--at/--range are for PromQL"):
        run_saved(settings, "apiserver-error-spans", at="now", queries=SHIPPED)
    with pytest.raises(QueryError, match="--since/--start/--end are for TraceQL"):
        run_saved(settings, "pipeline-health", since="1h", queries=SHIPPED)
    assert http_server.requests == []
