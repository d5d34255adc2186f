"""The ledger span: what a shard tells the accountant survives the trip, stays under Tempo's
attribute size limit, and is kept out of the run's own counts."""

from __future__ import annotations

import dataclasses

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracecheck.backends.tempo import decode_attributes
from tracecheck.load.encode import RUN_ID_ATTRIBUTE
from tracecheck.load.ledger import (
    LEDGER_ATTRIBUTE,
    LEDGER_OF_ATTRIBUTE,
    LEDGER_SERVICE,
    MAX_LEDGER_BYTES,
    ShardRecord,
    ledger_request,
    ledger_trace_id,
    record_from_span_attributes,
)
from tracecheck.load.run import LoadResult, Refusals, ranges


def result(**kw: object) -> LoadResult:
    args: dict[str, object] = {
        "run_id": "8f0e2c1a-5b7d-4e3f-9a11-0c2d3e4f5a6b",
        "shard": 3,
        "shards": 4,
        "seed": 123456789,
        "service": "tracecheck-load",
        "protocol": "grpc",
        "address": "collector:4317",
        "compression": "gzip",
        "target_rate": 500.0,
        "duration_s": 60.0,
        "spans_per_trace": 5,
        "traces_per_request": 102,
        "concurrency": 4,
        "planned_spans": 30_000,
        "planned_traces": 6_000,
        "planned_requests": 59,
        "sent_spans": 29_490,
        "sent_traces": 5_898,
        "sent_requests": 58,
        "rejected_spans": 0,
        "refused_final_spans": 510,
        "failed_spans": 0,
        "unsent_spans": 0,
        "refusals": {"UNAVAILABLE": Refusals(2, 1_020)},
        "errors": {},
        "retries": 1,
        "started_at": 1_767_225_600.25,
        "elapsed_s": 60.1,
        "achieved_rate": 490.7,
        "late_requests": 0,
        "max_lag_s": 0.01,
        "mean_lag_s": 0.001,
        "end_lag_s": 0.0,
        "cpu_s": 0.2,
        "messages": ("data refused due to high memory usage",),
        "unaccepted": ((17, 18),),
    }
    args.update(kw)
    return LoadResult(**args)  # type: ignore[arg-type]


def test_a_record_survives_the_ledger_json() -> None:
    rec = ShardRecord.from_result(result())
    back = ShardRecord.from_ledger(rec.to_ledger())
    assert back == dataclasses.replace(rec, messages=())
    assert back.refused_attempt_spans == 1_020 and back.refusals == {"UNAVAILABLE": 1_020}
    assert back.accepted(17) is False and back.accepted(16) is True
    assert back.attempted_spans == 30_000


def test_too_many_unaccepted_ranges_are_dropped_not_truncated() -> None:
    many = ranges(range(0, 4000, 2))  # 2,000 separate ranges
    rec = ShardRecord.from_result(result(unaccepted=many, planned_requests=4000))
    text = rec.to_ledger()
    assert len(text.encode()) <= MAX_LEDGER_BYTES
    back = ShardRecord.from_ledger(text)
    assert back.unaccepted is None
    assert back.accepted(5) is None  # unknown, not "accepted"


def test_the_ledger_span_is_its_own_trace_outside_the_runs_counts() -> None:
    rec = ShardRecord.from_result(result())
    request = ExportTraceServiceRequest.FromString(ledger_request(rec))
    (rs,) = request.resource_spans
    (span,) = rs.scope_spans[0].spans
    assert span.trace_id == ledger_trace_id(rec.run_id, 3)
    assert ledger_trace_id(rec.run_id, 3) != ledger_trace_id(rec.run_id, 2)
    assert span.start_time_unix_nano == 1_767_225_600_250_000_000
    assert span.end_time_unix_nano - span.start_time_unix_nano == 60_100_000_000
    resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
    assert resource == {"service.name": LEDGER_SERVICE}
    keys = {kv.key for kv in span.attributes}
    assert RUN_ID_ATTRIBUTE not in keys  # the run's TraceQL count must not include it
    assert LEDGER_OF_ATTRIBUTE in keys and LEDGER_ATTRIBUTE in keys
    # As Tempo's JSON returns the attributes:
    attrs = decode_attributes(
        [
            {"key": kv.key, "value": {"stringValue": kv.value.string_value}}
            if kv.value.HasField("string_value")
            else {"key": kv.key, "value": {"intValue": str(kv.value.int_value)}}
            for kv in span.attributes
        ]
    )
    assert record_from_span_attributes(rec.run_id, attrs) == dataclasses.replace(rec, messages=())


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {LEDGER_OF_ATTRIBUTE: "another-run", LEDGER_ATTRIBUTE: "{}"},
        {LEDGER_OF_ATTRIBUTE: "r", LEDGER_ATTRIBUTE: '{"v": 99}'},
        {LEDGER_OF_ATTRIBUTE: "r", LEDGER_ATTRIBUTE: "not json"},
        {LEDGER_OF_ATTRIBUTE: "r", LEDGER_ATTRIBUTE: '{"v": 1, "run": "r"}'},
    ],
)
def test_what_is_not_a_ledger_of_the_run_is_refused(attrs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        record_from_span_attributes("r", attrs)


def test_ranges_compress_request_numbers() -> None:
    assert ranges([7, 0, 1, 2, 9, 8]) == ((0, 3), (7, 10))
    assert ranges([]) == ()
