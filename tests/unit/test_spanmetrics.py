"""Span-metric family choice (docs/reference/collector.md §7, docs/reference/tempo.md §11.1)
and PromQL quoting."""

from __future__ import annotations

import pytest

from tracecheck.spanmetrics import OTEL_MS, OTEL_S, TEMPO, candidates, quote

TEMPO_NAMES = ["traces_spanmetrics_calls_total", "traces_spanmetrics_latency_bucket"]
OTEL_S_NAMES = ["traces_span_metrics_calls_total", "traces_span_metrics_duration_seconds_bucket"]


@pytest.mark.parametrize(
    ("names", "preference", "expected"),
    [
        # A fresh pipeline has no series yet: watch every family the preference allows.
        ([], "auto", (TEMPO, OTEL_MS, OTEL_S)),
        ([], "tempo", (TEMPO,)),
        ([], "otel", (OTEL_MS, OTEL_S)),
        # A family counts as present only with both its calls and its latency series.
        (TEMPO_NAMES, "auto", (TEMPO,)),
        (TEMPO_NAMES[:1], "auto", (TEMPO, OTEL_MS, OTEL_S)),
        (OTEL_S_NAMES, "auto", (OTEL_S,)),
        (OTEL_S_NAMES + TEMPO_NAMES, "auto", (TEMPO, OTEL_S)),
        # The preference wins over what exists.
        (TEMPO_NAMES, "otel", (OTEL_MS, OTEL_S)),
        (OTEL_S_NAMES, "tempo", (TEMPO,)),
    ],
)
def test_candidates(names: list[str], preference: str, expected: tuple[object, ...]) -> None:
    assert candidates(names, preference) == expected


def test_selector_quotes_values_as_promql_strings() -> None:
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert (
        TEMPO.selector(TEMPO.calls, 'svc "x"', span_kind="SPAN_KIND_SERVER")
        == 'traces_spanmetrics_calls_total{service="svc \\"x\\"",span_kind="SPAN_KIND_SERVER"}'
    )
    assert (
        OTEL_MS.selector(OTEL_MS.calls, "api")
        == 'traces_span_metrics_calls_total{service_name="api"}'
    )
