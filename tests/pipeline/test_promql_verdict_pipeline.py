"""Prometheus decides whether PromQL is valid (issue 10): for a corpus of valid and invalid
queries, ``run_promql``'s verdict equals the verdict of Prometheus 3.8's own parser
(``/api/v1/parse_query``: the same ``parser.ParseExpr`` the query endpoints call,
web/api/v1/api.go), with Prometheus's message and position, on two real servers:

* the local pipeline's Prometheus, with the default features;
* a second Prometheus 3.8 started here with ``--enable-feature=promql-duration-expr,
  promql-extended-range-selectors,promql-experimental-functions``, so the issue's classes that
  a default Prometheus refuses (``x[5m] anchored``, ``rate(x[5m+1m])``, ``sort_by_label``) are
  also seen accepted.

The corpus holds the issue's classes (backtick raw strings with backslashes, ``anchored`` /
``smoothed`` / ``step`` as names, ``step()`` and ``min(step(), 5s)`` in ranges and after
``offset``), the shipped saved queries, hand-written valid and invalid queries, and mutations
of valid queries (truncations and single deletions), each invalid in its own way.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from servers import free_port

from tracecheck.config import load_settings
from tracecheck.errors import QueryError
from tracecheck.polling import Probe, SystemClock, poll_until
from tracecheck.query.adhoc import run_promql
from tracecheck.query.saved import load_queries
from tracecheck.query.syntax import PromQLSyntaxError, check_promql
from tracecheck.stack.local import LocalStack

pytestmark = pytest.mark.pipeline

FEATURES = "promql-duration-expr,promql-extended-range-selectors,promql-experimental-functions"

# The issue's classes: Prometheus 3.8 accepts these (some only with a feature on), and the
# local promql-parser check refused them.
ISSUE = [
    r"up{path=~`.*\.js`}",
    r'label_replace(up, "port", "$1", "instance", `.*:(\d+)`)',
    r"up{instance=~`127\.0\.0\.1:\d+`}",
    "sum by (anchored) (up)",
    "sum by (smoothed) (rate(up[5m]))",
    "anchored",
    'smoothed{job="x"}',
    'up{anchored="1", smoothed!="2"}',
    "step",
    "sum without (step) (up)",
    "rate(up[step()])",
    "up[min(step(), 5s)]",
    "rate(up[min(step(), 5s)])",
    "up offset min(step(), 1s)",
    "rate(up[max(step(), 1m)])",
    "up offset max(step(), 30s)",
    "up offset -step()",
    "rate(up[1m:step()])",
    "max_over_time(up[step()*2])",
    "rate(up[5m+1m])",
    "up offset (1m*2)",
    "up[5m] anchored",
    "rate(up[5m] smoothed)",
    "up anchored",
    'sort_by_label(up, "job")',
    "limitk(2, up)",
    "limit_ratio(0.5, up)",
    "mad_over_time(up[5m])",
    "double_exponential_smoothing(up[5m], 0.5, 0.5)",
    "info(up)",
    "ts_of_max_over_time(up[5m])",
]

VALID = [
    "up",
    "sum(rate(up[5m])) by (job)",
    "sum by (job) (rate(up[5m]))",
    'histogram_quantile(0.99, sum by (le, span_name) (rate(traces_spanmetrics_latency_bucket{service="apiserver"}[5m])))',  # noqa: E501
    "topk(3, up)",
    'count_values("v", up)',
    "quantile(0.9, up)",
    "up @ start()",
    "up @ 1700000000",
    "rate(up[5m:1m])",
    "up offset -5m",
    "-up",
    "+1",
    "1 + 2 * 3 ^ 2",
    "up == bool 1",
    "up and on(job) up",
    "up * on(job) group_left(instance) up",
    "up unless ignoring(instance) up",
    "absent(nonexistent_metric)",
    "vector(1)",
    "time()",
    '{__name__="up"}',
    '{"up"}',
    '{"service.name"="x"}',
    'sum by ("service.name") (up)',
    "up # a comment",
    '"a string"',
    "0x1F",
    "1e3",
    "Inf",
    "-NaN",
    "sort_desc(up)",
    "first_over_time(up[5m])",
    "histogram_avg(up)",
    "rate(up[1d1h])",
    "up[5m] @ end()",
    "clamp(up, 0, 1)",
    'label_join(up, "x", ",", "job", "instance")',
    "predict_linear(up[5m], 60)",
    "count(up) > 0",
    "sum(up)\n  / ignoring(job)\n  count(up)",
    "(up)",
    "((up + 1))",
    'up{job=~"a|b", instance!~"x.*"}',
    "up{job='single'}",
    'up{job="a\\nb"}',
    "atan2(up, up)",
    "up atan2 up",
    "group by (job) (up)",
    "stddev_over_time(up[1h])",
]

INVALID = [
    "",
    "   ",
    "sum(up",
    "sum(rate(up[5m])) by (job",
    "up{",
    'up{a="b}',
    "up{a=~}",
    "rate(up)",
    "rate(up[5x])",
    "unknownfn(up)",
    "rat(up)",
    "histogram_quantil(0.9, up)",
    "sum by (job up",
    "1 +",
    "+",
    "(",
    ")",
    "up[5m",
    "up[-5m]",
    "up offset",
    "up @",
    "topk(up)",
    "quantile(up)",
    "count_values(up)",
    "up == bool",
    "1 and 1",
    "sum(up) by job",
    'up{job="a",,}',
    'up{="a"}',
    'up{job=~"["}',
    "$x",
    "up bar",
    'up{job="a"} {job="b"}',
    "{}",
    '{job=~".*"}',
    "histogram_quantile(0.9)",
    "absent_over_time(up)",
    "rate(1)",
    "sum(1, 2)",
    '"a" + 1',
    'up > "a"',
    "ü + 1",
    'up{job="a\\q"}',
    "`raw",
    "up[5m][5m]",
    "up offset 5m offset 5m",
    "up @ 1 @ 2",
    "sum without job (up)",
    "group_left",
    "on(job) up",
    "up * on job up",
    "sum(\n  rate(up[5m])\n) by (job) )",
    "histogram_quantile(0.9,\n  sum by (le) (rate(up[5m]) \n  bar",
    "sum(rate(up[5m]))\n  bar",
    "rate(up[5m]+1m)",
    'up{job="é"} +',
    "sum(up) bool",
    "up and",
    "up or on() group_left up",
    "-",
    "1 / / 2",
    "up[5m] offset",
    "up[1h:]:5m",
    "count_values(1, up)",
    "label_replace(up)",
    "vector()",
    "time(1)",
    "up{job}",
    "up{job=}",
    'up{job=="a"}',
]

# Valid queries cut short or missing one character: each a different kind of error.
MUTATED_FROM = [
    "sum by (job) (rate(up[5m]))",
    'histogram_quantile(0.9, sum by (le) (rate(x_bucket{a="b"}[5m])))',
    "up * on(job) group_left(instance) up offset 1m",
    'label_replace(up, "p", "$1", "instance", ".*:(.*)")',
    "max_over_time(rate(up[5m])[1h:1m])",
    'topk(3, sum without (instance) (up{job!="x"})) > bool 0',
    "rate(up[5m] offset 1h @ end())",
]


def mutations(query: str) -> list[str]:
    cuts = [query[:i] for i in range(3, len(query), 5)]
    drops = [query[:i] + query[i + 1 :] for i in range(1, len(query), 6)]
    return cuts + drops


def corpus() -> list[str]:
    shipped = []
    for q in load_queries():
        if q.language == "promql":
            values = {p.name: "x" for p in q.params if p.required}
            shipped.append(q.render(values))
    mutated = [m for base in MUTATED_FROM for m in mutations(base)]
    return list(dict.fromkeys([*ISSUE, *VALID, *INVALID, *shipped, *mutated]))


@dataclass(frozen=True)
class Verdict:
    valid: bool
    position: tuple[int, int] | None = None  # (line, column in characters), 1-based
    message: str = ""


def prometheus_verdict(url: str, query: str) -> Verdict:
    """/api/v1/parse_query's answer, read without tracecheck's code."""
    data = urllib.parse.urlencode({"query": query}).encode()
    req = urllib.request.Request(f"{url}/api/v1/parse_query", data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.load(resp)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
    if body["status"] == "success":
        return Verdict(True)
    assert body["errorType"] == "bad_data", body
    rest = body["error"].removeprefix('invalid parameter "query": ')
    where, _, message = rest.partition(": ")
    if where[:1].isdigit():
        line, col = (int(x) for x in where.split(":"))
        text = query.split("\n")[line - 1].encode()
        return Verdict(False, (line, len(text[: col - 1].decode(errors="ignore")) + 1), message)
    return Verdict(False, None, message)


def tracecheck_verdict(url: str, query: str) -> tuple[Verdict, str]:
    """What ``run_promql`` says: refused as unparsable (a parse error), or accepted (a result,
    or a refusal of the evaluation such as step() = 0 in an instant query)."""
    settings = load_settings(flags={"prometheus.url": url})
    try:
        run_promql(settings, query, max_rows=10)
    except PromQLSyntaxError as exc:
        if exc.message.startswith("parse error"):
            position = (exc.line, exc.col) if exc.line is not None else None
            return Verdict(False, position, exc.message), exc.suggestion  # type: ignore[arg-type]
        return Verdict(True), "evaluation refused"
    except QueryError as exc:
        return Verdict(True), f"evaluation refused: {exc.cause}"
    return Verdict(True), ""


def local_verdict(query: str) -> Verdict:
    """What the old local gate (promql-parser, positioned by tracecheck) said."""
    try:
        check_promql(query)
    except PromQLSyntaxError as exc:
        return Verdict(False, (exc.line, exc.col), exc.message)  # type: ignore[arg-type]
    return Verdict(True)


def local_parser_valid(query: str) -> bool:
    return local_verdict(query).valid


@pytest.fixture(scope="module")
def featured_prometheus(
    local_pipeline: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A second Prometheus 3.8 with the experimental PromQL features on (loopback, free port)."""
    folder = tmp_path_factory.mktemp("prometheus-features")
    (folder / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            str(local_pipeline.binary("prometheus")),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--enable-feature={FEATURES}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )

    def ready() -> Probe[None]:
        assert proc.poll() is None, (folder / "prometheus.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                return Probe(resp.status == 200)
        except OSError:
            return Probe(False)

    try:
        assert poll_until(ready, 60.0, SystemClock()).ok, "the second Prometheus never got ready"
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def check_corpus(url: str, label: str) -> None:
    queries = corpus()
    agree, old_agree, refused, evaluation, both, old_where = 0, 0, 0, 0, 0, 0
    wrong: list[str] = []
    for q in queries:
        theirs = prometheus_verdict(url, q)
        ours, note = tracecheck_verdict(url, q)
        old = local_verdict(q)
        old_agree += old.valid == theirs.valid
        if not old.valid and not theirs.valid and theirs.position is not None:
            both += 1
            old_where += old.position == theirs.position
        refused += not theirs.valid
        evaluation += note.startswith("evaluation")
        if ours == theirs:
            agree += 1
        else:
            wrong.append(f"{q!r}: prometheus {theirs}, tracecheck {ours}")
    summary = (
        f"{label}: {len(queries)} queries ({refused} refused by Prometheus, {evaluation} parsed "
        f"but refused at evaluation); tracecheck agrees on {agree}/{len(queries)}, messages and "
        f"positions included; the local parser alone would agree on {old_agree}/{len(queries)}"
        f" and put {old_where} of {both} common refusals at Prometheus's position"
    )
    print(summary, file=sys.stderr)
    assert not wrong, summary + "\n" + "\n".join(wrong)
    assert len(queries) >= 250 and 60 <= refused <= len(queries) - 60  # a corpus of both kinds


def test_verdicts_equal_the_pipelines_prometheus(local_pipeline: LocalStack) -> None:
    check_corpus("http://127.0.0.1:9090", "Prometheus 3.8, default features")


def test_verdicts_equal_a_prometheus_with_the_features_on(featured_prometheus: str) -> None:
    check_corpus(featured_prometheus, f"Prometheus 3.8, --enable-feature={FEATURES}")


def test_the_issues_classes_are_no_longer_refused_locally(featured_prometheus: str) -> None:
    # What the old local gate refused although Prometheus accepts it: the reason for issue 10.
    refused_locally = [q for q in ISSUE if not local_parser_valid(q)]
    accepted = [q for q in refused_locally if prometheus_verdict(featured_prometheus, q).valid]
    assert r"up{path=~`.*\.js`}" in accepted and "sum by (anchored) (up)" in accepted
    assert "up offset min(step(), 1s)" in accepted and "rate(up[5m+1m])" in accepted
    for q in accepted:
        ours, _ = tracecheck_verdict(featured_prometheus, q)
        assert ours.valid, q
