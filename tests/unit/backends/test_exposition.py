"""The Prometheus text exposition parser and its family sums."""

from __future__ import annotations

import math
import re

import pytest

from tracecheck.backends.exposition import parse_exposition

# The collector's default telemetry: no _total suffix (docs/reference/collector.md §6).
COLLECTOR_DEFAULT = """\
# HELP otelcol_receiver_accepted_spans Number of spans successfully pushed into the pipeline.
# TYPE otelcol_receiver_accepted_spans counter
otelcol_receiver_accepted_spans{receiver="otlp",service_instance_id="a1",transport="grpc"} 12
otelcol_receiver_accepted_spans{receiver="otlp",service_instance_id="a1",transport="http"} 3
# HELP otelcol_receiver_refused_spans Number of spans that could not be pushed into the pipeline.
# TYPE otelcol_receiver_refused_spans counter
otelcol_receiver_refused_spans{receiver="otlp",service_instance_id="a1",transport="grpc"} 0
# TYPE otelcol_exporter_sent_spans counter
otelcol_exporter_sent_spans{exporter="otlp/tempo",service_instance_id="a1"} 14
otelcol_exporter_sent_spans{exporter="debug",service_instance_id="a1"} 15
# TYPE otelcol_exporter_queue_size gauge
otelcol_exporter_queue_size{exporter="otlp/tempo"} 0
"""

# An explicitly configured Prometheus reader: _total suffix (docs/reference/collector.md §6).
COLLECTOR_TOTAL = """\
# TYPE otelcol_receiver_accepted_spans_total counter
otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"} 7
# TYPE otelcol_exporter_sent_spans_total counter
otelcol_exporter_sent_spans_total{exporter="otlp"} 5
"""

# Tempo's receiver shim has no _total, the distributor has (docs/reference/tempo.md §12).
TEMPO = """\
# HELP tempo_receiver_accepted_spans The number of spans successfully pushed into the pipeline.
# TYPE tempo_receiver_accepted_spans counter
tempo_receiver_accepted_spans{receiver="otlp/otlp_receiver",transport="grpc"} 42
# TYPE tempo_distributor_spans_received_total counter
tempo_distributor_spans_received_total{tenant="single-tenant"} 42
# TYPE tempo_metrics_generator_spans_discarded_total counter
tempo_metrics_generator_spans_discarded_total{reason="outside_metrics_ingestion_slack",tenant="t"} 2
tempo_metrics_generator_spans_discarded_total{reason="span_metrics_filtered",tenant="t"} 1
"""


def test_sum_without_total_suffix_matches_default_collector_names() -> None:
    exp = parse_exposition(COLLECTOR_DEFAULT)
    assert exp.sum("otelcol_receiver_accepted_spans") == 15.0
    assert exp.sum("otelcol_receiver_accepted_spans_total") == 15.0
    assert exp.sum("otelcol_receiver_accepted_spans", {"transport": "grpc"}) == 12.0
    assert exp.sum("otelcol_exporter_sent_spans", {"exporter": "otlp/tempo"}) == 14.0
    assert exp.sum("otelcol_receiver_refused_spans") == 0.0
    assert exp.types["otelcol_exporter_queue_size"] == "gauge"
    assert exp.help["otelcol_receiver_accepted_spans"].startswith("Number of spans")


def test_sum_with_total_suffix_matches_configured_reader_names() -> None:
    exp = parse_exposition(COLLECTOR_TOTAL)
    assert exp.resolve("otelcol_receiver_accepted_spans") == "otelcol_receiver_accepted_spans_total"
    assert exp.sum("otelcol_receiver_accepted_spans") == 7.0
    assert exp.sum("otelcol_exporter_sent_spans_total") == 5.0


def test_absent_family_sums_to_zero_but_has_tells_the_difference() -> None:
    exp = parse_exposition(COLLECTOR_TOTAL)
    assert exp.sum("otelcol_exporter_enqueue_failed_spans") == 0.0
    assert not exp.has("otelcol_exporter_enqueue_failed_spans")
    assert exp.has("otelcol_exporter_sent_spans")
    assert exp.value("otelcol_exporter_enqueue_failed_spans") is None


def test_both_spellings_present_are_not_double_counted() -> None:
    exp = parse_exposition("x_total 2\nx 3\n")
    assert exp.sum("x_total") == 2.0
    assert exp.sum("x") == 3.0


def test_regex_filter_and_missing_label_matches_empty_string() -> None:
    exp = parse_exposition(TEMPO)
    reasons = re.compile("outside_.*")
    assert exp.sum("tempo_metrics_generator_spans_discarded", {"reason": reasons}) == 2.0
    assert exp.sum("tempo_receiver_accepted_spans", {"tenant": ""}) == 42.0
    assert exp.sum("tempo_distributor_spans_received", {"tenant": ""}) == 0.0


def test_value_of_single_sample_and_error_for_several() -> None:
    exp = parse_exposition(TEMPO)
    assert exp.value("tempo_distributor_spans_received_total") == 42.0
    with pytest.raises(ValueError, match="2 samples"):
        exp.value("tempo_metrics_generator_spans_discarded_total")


def test_special_values_timestamps_and_escapes() -> None:
    text = (
        'a{path="C:\\\\dir",msg="say \\"hi\\"\\nbye"} NaN\nb +Inf 1700000000000\nc -Inf\nd 1.5e3\n'
    )
    exp = parse_exposition(text)
    a, b, c, d = exp.samples
    assert a.labels == {"path": "C:\\dir", "msg": 'say "hi"\nbye'}
    assert math.isnan(a.value)
    assert b.value == math.inf and b.timestamp == 1_700_000_000_000
    assert c.value == -math.inf and c.timestamp is None
    assert d.value == 1500.0


def test_openmetrics_exemplar_eof_and_utf8_quoted_names() -> None:
    text = (
        "# TYPE http_request_duration_seconds histogram\n"
        'http_request_duration_seconds_bucket{le="0.5"} 3 # {trace_id="abc"} 0.2 1700000000.1\n'
        '{"my.metric","service.name"="api"} 4\n'
        "# EOF\n"
    )
    exp = parse_exposition(text)
    assert [s.name for s in exp.samples] == ["http_request_duration_seconds_bucket", "my.metric"]
    assert exp.samples[0].value == 3.0
    assert exp.samples[1].labels == {"service.name": "api"}
    assert exp.sum("my.metric", {"service.name": "api"}) == 4.0


def test_whitespace_and_trailing_comma_tolerated() -> None:
    exp = parse_exposition('  m { a = "1" , } \t 2  \n')
    assert exp.samples[0].labels == {"a": "1"}
    assert exp.samples[0].value == 2.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("m{a=1} 2", "line 1, column 5: expected '\"'"),
        ('m{a="1" 2', "expected ',' or '}'"),
        ('m{a="1} 2', "unterminated quoted string"),
        ("m", "expected a value"),
        ("m 1 2 3", "expected a value and an optional timestamp"),
        ("m one", "invalid value 'one'"),
        ("m 1_000", "invalid value '1_000'"),
        ('m{a="x\\q"} 1', "invalid escape"),
        ('m{a="1",a="2"} 1', "duplicate label 'a'"),
        ("ok 1\n9bad 1", "line 2, column 1: expected a metric or label name"),
        ("{} 1", "sample without a metric name"),
    ],
)
def test_malformed_lines_name_line_and_column(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_exposition(text)
    assert message in str(info.value)
    assert str(info.value).startswith("line ")
