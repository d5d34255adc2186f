from __future__ import annotations

import json
from importlib import resources

import jsonschema
import pytest

from tracecheck.errors import ExitCode, UsageError
from tracecheck.output import parse_output, render_json, render_junit, render_markdown, render_text
from tracecheck.results import CheckResult, Report, Status, exit_code


def _report(*statuses: Status) -> Report:
    results = tuple(
        CheckResult(
            name=f"group.check_{i}",
            title=f"check {i}",
            status=s,
            elapsed=0.5 + i,
            delay=1.25 if s is Status.PASS else None,
            detail=f"detail {i} | with pipe",
            hint="look at hop" if s in (Status.FAIL, Status.ERROR) else "",
            hop="collector -> tempo",
            deadline=10.0,
            attempts=3,
            data={"n": i, "inf": float("inf")},
        )
        for i, s in enumerate(statuses)
    )
    return Report(
        run_id="abc123",
        trace_id="00" + "ab" * 15,
        started_at=1_764_000_000.0,
        finished_at=1_764_000_012.5,
        results=results,
        target={"tempo": "http://localhost:3200"},
        tables={"pipeline_latency": [{"stage": "tempo", "delay_s": 1.25}]},
        tool_version="0.1.0",
    )


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ((Status.PASS, Status.WARN, Status.SKIP), ExitCode.OK),
        ((Status.PASS, Status.FAIL, Status.SKIP), ExitCode.CHECK_FAILED),
        ((Status.FAIL, Status.ERROR), ExitCode.BACKEND),
        ((), ExitCode.OK),
    ],
)
def test_exit_code_is_decided_by_the_worst_status(
    statuses: tuple[Status, ...], code: ExitCode
) -> None:
    assert exit_code(_report(*statuses).results) == code


def test_json_matches_the_published_schema() -> None:
    report = _report(Status.PASS, Status.FAIL, Status.SKIP)
    data = json.loads(render_json(report))
    schema = json.loads(resources.files("tracecheck").joinpath("schema/report-v1.json").read_text())
    jsonschema.validate(data, schema)
    assert data["exit_code"] == 1
    assert data["counts"] == {"PASS": 1, "WARN": 0, "FAIL": 1, "ERROR": 0, "SKIP": 1}
    assert data["checks"][1]["hint"] == "look at hop"
    assert data["checks"][0]["data"]["inf"] == "+Inf"  # JSON has no infinity: Prometheus's spelling
    assert data["started_at"] == "2025-11-24T16:00:00.000Z"
    assert data["duration_s"] == 12.5


def test_junit_maps_statuses_to_failure_error_skipped() -> None:
    from junitparser import Error, Failure, JUnitXml, Skipped

    xml = render_junit(_report(Status.PASS, Status.FAIL, Status.ERROR, Status.SKIP, Status.WARN))
    suite = next(iter(JUnitXml.fromstring(xml)))
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (5, 1, 1, 1)
    kinds = {case.name: [type(r) for r in case.result] for case in suite}
    assert kinds["group.check_1"] == [Failure] and kinds["group.check_2"] == [Error]
    assert kinds["group.check_3"] == [Skipped] and kinds["group.check_0"] == []
    props = {p.name: p.value for p in suite.properties()}
    assert props["run_id"] == "abc123"


def test_plain_text_and_markdown() -> None:
    report = _report(Status.PASS, Status.FAIL)
    text = render_text(report, color=False, width=100)
    assert "group.check_1  FAIL" in text
    assert "Hints\n  group.check_1: look at hop" in text
    assert "Pipeline latency" in text
    assert text.rstrip().endswith("-> exit 1")
    assert "\x1b[" not in text
    md = render_markdown(report)
    assert "| group.check_0 | PASS |" in md and "detail 0 \\| with pipe" in md
    rich = render_text(report, color=True, width=100)
    assert "\x1b[" in rich and "FAIL" in rich


def test_parse_output() -> None:
    assert parse_output("json") == ("json", None)
    assert parse_output("junit:out/x.xml") == ("junit", "out/x.xml")
    with pytest.raises(UsageError, match="unknown format 'yaml'"):
        parse_output("yaml")
    with pytest.raises(UsageError, match="empty path"):
        parse_output("json:")
