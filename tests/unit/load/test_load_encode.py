"""The wire-format request builder: what it builds decodes with opentelemetry-proto to exactly the
spans meant, and equals byte for byte the same request built with protobuf message objects."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2

from tracecheck.load.encode import (
    MAX_SPANS_PER_TRACE,
    ROOT_DURATION_NS,
    RUN_ID_ATTRIBUTE,
    SCOPE_NAME,
    SHARD_ATTRIBUTE,
    SpanRecord,
    TraceTemplate,
    varint,
)

END_NS = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z


def template(**kw: Any) -> TraceTemplate:
    args: dict[str, Any] = {
        "service": "tracecheck-load",
        "run_id": "run-4f2a9c",
        "shard": 3,
        "seed": 42,
        "spans_per_trace": 5,
        "traces_per_request": 7,
    }
    args.update(kw)
    return TraceTemplate(**args)


def with_objects(t: TraceTemplate, spans: list[SpanRecord]) -> bytes:
    """The request the slow, obvious way: protobuf message objects, serialized."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in t.resource_attributes:
        kv = rs.resource.attributes.add()
        kv.key = key
        if isinstance(value, str):
            kv.value.string_value = value
        else:
            kv.value.int_value = value
    ss = rs.scope_spans.add()
    ss.scope.name = SCOPE_NAME
    for s in spans:
        span = ss.spans.add()
        span.trace_id = s.trace_id
        span.span_id = s.span_id
        span.parent_span_id = s.parent_span_id
        span.name = s.name
        span.kind = s.kind  # type: ignore[assignment]
        span.start_time_unix_nano = s.start_ns
        span.end_time_unix_nano = s.end_ns
        for key, value in s.attributes:
            kv = span.attributes.add()
            kv.key = key
            if isinstance(value, str):
                kv.value.string_value = value
            else:
                kv.value.int_value = value
    return request.SerializeToString()


@pytest.mark.parametrize(
    ("spans_per_trace", "traces", "shard"),
    [(1, 1, 0), (5, 7, 3), (2, 300, 0), (12, 40, 65535), (MAX_SPANS_PER_TRACE, 2, 9)],
)
def test_fast_bytes_equal_the_protobuf_serialization(
    spans_per_trace: int, traces: int, shard: int
) -> None:
    t = template(spans_per_trace=spans_per_trace, traces_per_request=traces, shard=shard)
    for batch in (0, 1, 977):
        fast = t.build(batch, END_NS)
        assert fast == with_objects(t, t.spans(batch, END_NS))
        assert len(fast) == t.request_size(traces)


def test_a_partial_last_batch_is_as_meant_too() -> None:
    t = template(traces_per_request=50)
    fast = t.build(12, END_NS, traces=3)
    assert fast == with_objects(t, t.spans(12, END_NS, traces=3))
    decoded = ExportTraceServiceRequest.FromString(fast)
    assert len(decoded.resource_spans[0].scope_spans[0].spans) == 3 * 5


def test_decoded_spans_are_the_meant_trace_shape() -> None:
    t = template(spans_per_trace=5, traces_per_request=4)
    decoded = ExportTraceServiceRequest.FromString(t.build(5, END_NS))
    (rs,) = decoded.resource_spans
    resource = {kv.key: kv.value for kv in rs.resource.attributes}
    assert resource["service.name"].string_value == "tracecheck-load"
    assert resource[RUN_ID_ATTRIBUTE].string_value == "run-4f2a9c"
    assert resource[SHARD_ATTRIBUTE].int_value == 3
    (ss,) = rs.scope_spans
    assert ss.scope.name == SCOPE_NAME
    spans = list(ss.spans)
    assert len(spans) == 20
    ids = t.ids(5)
    for i, (trace_id, span_ids) in enumerate(ids):
        trace = spans[5 * i : 5 * i + 5]
        assert {s.trace_id for s in trace} == {trace_id}
        assert [s.span_id for s in trace] == list(span_ids)
        root, *children = trace
        assert root.parent_span_id == b""
        assert root.kind == trace_pb2.Span.SPAN_KIND_SERVER
        assert root.name == "GET /load"
        assert (root.start_time_unix_nano, root.end_time_unix_nano) == (
            END_NS - ROOT_DURATION_NS,
            END_NS,
        )
        # Heap order: span p's parent is span (p - 1) // 2.
        assert [c.parent_span_id for c in children] == [
            span_ids[0],
            span_ids[0],
            span_ids[1],
            span_ids[1],
        ]
        for p, c in enumerate(children, start=1):
            assert c.name == f"load-step-{p}"
            assert c.kind == trace_pb2.Span.SPAN_KIND_INTERNAL
            assert root.start_time_unix_nano <= c.start_time_unix_nano
            assert c.start_time_unix_nano < c.end_time_unix_nano <= root.end_time_unix_nano
        for s in trace:
            attrs = {kv.key: kv.value for kv in s.attributes}
            assert attrs[RUN_ID_ATTRIBUTE].string_value == "run-4f2a9c"
            assert attrs[SHARD_ATTRIBUTE].int_value == 3
            assert len(s.trace_id) == 16 and len(s.span_id) == 8


def test_ids_are_reproducible_per_batch_and_differ_between_batches_and_shards() -> None:
    a = template()
    assert a.build(3, END_NS) == template().build(3, END_NS)
    assert a.ids(3) == template().ids(3)
    trace_ids = {tid for b in range(200) for tid, _ in a.ids(b)}
    assert len(trace_ids) == 200 * 7
    other_shard = {tid for b in range(200) for tid, _ in template(shard=4).ids(b)}
    other_seed = {tid for b in range(200) for tid, _ in template(seed=43).ids(b)}
    assert not trace_ids & other_shard and not trace_ids & other_seed
    for _, span_ids in a.ids(0):
        assert len(set(span_ids)) == 5
        assert all(sid[-1] == p + 1 for p, sid in enumerate(span_ids))


def test_times_are_patched_per_batch_and_ids_stay() -> None:
    t = template()
    one = ExportTraceServiceRequest.FromString(t.build(1, END_NS)).resource_spans[0]
    two = ExportTraceServiceRequest.FromString(t.build(1, END_NS + 5_000)).resource_spans[0]
    s1, s2 = one.scope_spans[0].spans, two.scope_spans[0].spans
    assert [s.span_id for s in s1] == [s.span_id for s in s2]
    shifts = {b.end_time_unix_nano - a.end_time_unix_nano for a, b in zip(s1, s2, strict=True)}
    assert shifts == {5_000}


def test_varint_is_minimal_and_matches_protobuf() -> None:
    for value in (0, 1, 127, 128, 300, 2**32, 2**63 - 1):
        span = trace_pb2.Span(dropped_attributes_count=value & 0xFFFFFFFF)
        want = span.SerializeToString()
        if value & 0xFFFFFFFF:
            assert want == b"\x50" + varint(value & 0xFFFFFFFF)
    assert varint(300) == b"\xac\x02"
    with pytest.raises(ValueError):
        varint(-1)


def test_template_refuses_shapes_it_cannot_encode() -> None:
    with pytest.raises(ValueError, match="spans_per_trace"):
        template(spans_per_trace=MAX_SPANS_PER_TRACE + 1)
    with pytest.raises(ValueError, match="traces_per_request"):
        template(traces_per_request=0)
    with pytest.raises(ValueError, match="at least one trace"):
        template().build(0, END_NS, traces=0)
