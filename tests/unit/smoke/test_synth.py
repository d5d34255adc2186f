from __future__ import annotations

from dataclasses import replace

from tracecheck.backends.tempo import Span, Trace
from tracecheck.smoke.synth import RUN_ID_ATTRIBUTE, build_trace, compare_trace

END = 1_764_000_000_000_000_000


def test_same_seed_same_trace_and_ids_are_valid() -> None:
    a = build_trace(seed=42, end_ns=END)
    b = build_trace(seed=42, end_ns=END)
    c = build_trace(seed=43, end_ns=END)
    assert a == b
    assert a.trace_id != c.trace_id and a.run_id != c.run_id
    assert len(a.trace_id) == 16 and a.trace_id[0] == 0 and any(a.trace_id)
    assert len({s.span_id for s in a.spans}) == 5
    assert all(len(s.span_id) == 8 and any(s.span_id) for s in a.spans)


def test_shape_kinds_parents_and_timing() -> None:
    t = build_trace(seed=7, end_ns=END, client_service="c", server_service="s")
    client, server = t.span("client"), t.span("server")
    assert (
        client.parent_span_id == b"" and client.kind == "SPAN_KIND_CLIENT" and client.service == "c"
    )
    assert server.parent_span_id == client.span_id and server.kind == "SPAN_KIND_SERVER"
    assert t.span("query").parent_span_id == t.span("load").span_id
    assert t.span("charge").status_code == "STATUS_CODE_ERROR"
    assert t.end_ns == END and client.end_ns == END
    assert round(server.duration_s, 3) == 0.19
    assert t.count_for("s") == 4 and t.count_for("c") == 1
    for s in t.spans:
        assert client.start_ns <= s.start_ns and s.end_ns <= client.end_ns
        assert s.attributes[RUN_ID_ATTRIBUTE] == t.run_id


def test_to_otlp_groups_spans_by_service() -> None:
    t = build_trace(seed=1, end_ns=END)
    req = t.to_otlp()
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    parsed = ExportTraceServiceRequest.FromString(req.SerializeToString())
    services = []
    for rs in parsed.resource_spans:
        attrs = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
        services.append((attrs["service.name"], len(rs.scope_spans[0].spans)))
        assert attrs[RUN_ID_ATTRIBUTE] == t.run_id
    assert services == [("tracecheck-client", 1), ("tracecheck-server", 4)]
    server = parsed.resource_spans[1].scope_spans[0].spans[0]
    assert server.trace_id == t.trace_id and server.parent_span_id == t.span("client").span_id
    attrs = {kv.key: kv.value for kv in server.attributes}
    assert attrs["http.response.status_code"].int_value == 200
    server_spans = parsed.resource_spans[1].scope_spans[0].spans
    charge = next(s for s in server_spans if s.name == "charge-card")
    assert charge.status.code == 2 and charge.status.message.startswith("card declined")


def _as_tempo(t) -> Trace:  # type: ignore[no-untyped-def]
    spans = tuple(
        Span(
            trace_id=s.trace_id,
            span_id=s.span_id,
            parent_span_id=s.parent_span_id,
            name=s.name,
            kind=s.kind,
            start_ns=s.start_ns,
            end_ns=s.end_ns,
            status_code=s.status_code,
            status_message=s.status_message,
            attributes={**s.attributes, "added.by.processor": "x"},
            resource={"service.name": s.service},
            scope_name="tracecheck",
            links=(),
        )
        for s in t.spans
    )
    return Trace(trace_id=t.trace_id, spans=spans)


def test_compare_accepts_an_identical_trace_with_extra_attributes() -> None:
    t = build_trace(seed=3, end_ns=END)
    assert compare_trace(t, _as_tempo(t)) == []


def test_compare_reports_each_difference() -> None:
    t = build_trace(seed=3, end_ns=END)
    got = _as_tempo(t)
    spans = list(got.spans)
    spans[1] = replace(spans[1], parent_span_id=b"\x01" * 8, name="GET /other")
    spans[2] = replace(
        spans[2], attributes={k: v for k, v in spans[2].attributes.items() if k != RUN_ID_ATTRIBUTE}
    )
    spans[4] = replace(spans[4], attributes={**spans[4].attributes, "payment.amount": 1.0})
    del spans[3]
    problems = compare_trace(t, replace(got, spans=tuple(spans)))
    text = "\n".join(problems)
    assert "span server" in text and "parent 0101010101010101" in text
    assert "name 'GET /other' != 'GET /checkout'" in text
    assert (
        f"span load ({t.span('load').span_id.hex()}): attribute {RUN_ID_ATTRIBUTE} missing" in text
    )
    assert "span query" in text and "missing" in text
    assert "payment.amount=1.0 != 42.5" in text
    assert len(problems) == 5


def test_compare_reports_a_lost_status_message() -> None:
    t = build_trace(seed=3, end_ns=END)
    got = _as_tempo(t)
    charge = t.span("charge")
    spans = tuple(
        replace(s, status_message="") if s.span_id == charge.span_id else s for s in got.spans
    )
    assert compare_trace(t, replace(got, spans=spans)) == [
        f"span charge ({charge.span_id.hex()}): status message '' != "
        "'card declined (synthetic error)'"
    ]
