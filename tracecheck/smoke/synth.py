"""The deterministic synthetic trace that ``tracecheck smoke`` sends.

Like tempo-vulture's ``TraceInfo`` (docs/reference/tempo.md §15), everything derives from a
seed, so the expected trace can be rebuilt and diffed against what comes back. One trace per run:

    tracecheck-client  CLIENT   GET /checkout          240 ms  (root)
    tracecheck-server  SERVER   GET /checkout          190 ms  child of the CLIENT span
    tracecheck-server  INTERNAL load-cart               25 ms  child of SERVER
    tracecheck-server  CLIENT   SELECT shop.carts       12 ms  child of load-cart (db.system)
    tracecheck-server  INTERNAL charge-card             70 ms  child of SERVER, status ERROR

The CLIENT -> SERVER pair gives a service-graph edge; the durations sit inside one bucket of
both Tempo's (2 ms * 2^n) and the OpenTelemetry connector's default histograms, away from
bucket bounds. Every span carries ``tracecheck.run_id`` for TraceQL search. The trace ID's first
byte is zero on purpose: Tempo's search strips leading zeros from trace IDs
(docs/reference/tempo.md §5.3), so every run exercises that quirk.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from tracecheck.backends.tempo import Trace

__all__ = ["RUN_ID_ATTRIBUTE", "SyntheticSpan", "SyntheticTrace", "build_trace", "compare_trace"]

RUN_ID_ATTRIBUTE = "tracecheck.run_id"
SCOPE_NAME = "tracecheck"

AttrValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class SyntheticSpan:
    key: str  # stable role name: client, server, load, query, charge
    service: str
    name: str
    kind: str  # SPAN_KIND_* enum name
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes  # b"" for the root
    start_ns: int
    end_ns: int
    status_code: str = "STATUS_CODE_UNSET"
    status_message: str = ""
    attributes: Mapping[str, AttrValue] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True, slots=True)
class SyntheticTrace:
    run_id: str
    seed: int
    trace_id: bytes
    spans: tuple[SyntheticSpan, ...]
    client_service: str
    server_service: str

    def span(self, key: str) -> SyntheticSpan:
        for s in self.spans:
            if s.key == key:
                return s
        raise KeyError(key)

    @property
    def trace_id_hex(self) -> str:
        return self.trace_id.hex()

    def count_for(self, service: str) -> int:
        """Spans of ``service``: what its span-metrics ``calls_total`` must rise by."""
        return sum(1 for s in self.spans if s.service == service)

    @property
    def start_ns(self) -> int:
        return min(s.start_ns for s in self.spans)

    @property
    def end_ns(self) -> int:
        return max(s.end_ns for s in self.spans)

    def to_otlp(self) -> ExportTraceServiceRequest:
        """The OTLP export request: one ResourceSpans per service."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
        from opentelemetry.proto.trace.v1 import trace_pb2

        request = ExportTraceServiceRequest()
        for service in (self.client_service, self.server_service):
            rs = request.resource_spans.add()
            _set_attrs(
                rs.resource.attributes,
                {"service.name": service, RUN_ID_ATTRIBUTE: self.run_id},
            )
            ss = rs.scope_spans.add()
            ss.scope.name = SCOPE_NAME
            for s in self.spans:
                if s.service != service:
                    continue
                span = ss.spans.add()
                span.trace_id = s.trace_id
                span.span_id = s.span_id
                span.parent_span_id = s.parent_span_id
                span.name = s.name
                span.kind = trace_pb2.Span.SpanKind.Value(s.kind)
                span.start_time_unix_nano = s.start_ns
                span.end_time_unix_nano = s.end_ns
                span.status.code = trace_pb2.Status.StatusCode.Value(s.status_code)
                span.status.message = s.status_message
                _set_attrs(span.attributes, s.attributes)
        return request


def _set_attrs(target: Any, attrs: Mapping[str, AttrValue]) -> None:
    for key, value in attrs.items():
        kv = target.add()
        kv.key = key
        # bool before int: bool is an int subclass.
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        else:
            kv.value.string_value = value


def _id(rng: random.Random, size: int) -> bytes:
    while True:
        value = rng.randbytes(size)
        if any(value):
            return value


def build_trace(
    *,
    seed: int,
    end_ns: int,
    client_service: str = "tracecheck-client",
    server_service: str = "tracecheck-server",
) -> SyntheticTrace:
    """Build the synthetic trace for ``seed``, ending at ``end_ns`` (unix nanoseconds).

    Spans must end near "now": Tempo's metrics-generator drops spans whose end is more than
    30 s away from its clock (docs/reference/tempo.md §11.3, ingestion slack).
    """
    rng = random.Random(seed)
    run_id = rng.randbytes(6).hex()
    trace_id = b"\x00" + _id(rng, 15)
    ids = {key: _id(rng, 8) for key in ("client", "server", "load", "query", "charge")}
    ms = 1_000_000
    root_start = end_ns - 240 * ms
    common: dict[str, AttrValue] = {RUN_ID_ATTRIBUTE: run_id, "tracecheck.seed": seed}

    def mk(
        key: str,
        service: str,
        name: str,
        kind: str,
        parent: str,
        start_ms: int,
        dur_ms: int,
        attrs: Mapping[str, AttrValue],
        status: tuple[str, str] = ("STATUS_CODE_UNSET", ""),
    ) -> SyntheticSpan:
        start = root_start + start_ms * ms
        return SyntheticSpan(
            key=key,
            service=service,
            name=name,
            kind=kind,
            trace_id=trace_id,
            span_id=ids[key],
            parent_span_id=ids[parent] if parent else b"",
            start_ns=start,
            end_ns=start + dur_ms * ms,
            status_code=status[0],
            status_message=status[1],
            attributes={**common, "tracecheck.span": key, **attrs},
        )

    spans = (
        mk(
            "client",
            client_service,
            "GET /checkout",
            "SPAN_KIND_CLIENT",
            "",
            0,
            240,
            {
                "http.request.method": "GET",
                "url.full": f"http://{server_service}/checkout",
                "server.address": server_service,
                "peer.service": server_service,
            },
        ),
        mk(
            "server",
            server_service,
            "GET /checkout",
            "SPAN_KIND_SERVER",
            "client",
            20,
            190,
            {
                "http.request.method": "GET",
                "http.route": "/checkout",
                "http.response.status_code": 200,
            },
        ),
        mk("load", server_service, "load-cart", "SPAN_KIND_INTERNAL", "server", 30, 25, {}),
        mk(
            "query",
            server_service,
            "SELECT shop.carts",
            "SPAN_KIND_CLIENT",
            "load",
            35,
            12,
            {"db.system": "postgresql", "db.name": "shop", "db.operation": "SELECT"},
        ),
        mk(
            "charge",
            server_service,
            "charge-card",
            "SPAN_KIND_INTERNAL",
            "server",
            100,
            70,
            {"payment.amount": 42.5, "payment.declined": True},
            ("STATUS_CODE_ERROR", "card declined (synthetic error)"),
        ),
    )
    return SyntheticTrace(run_id, seed, trace_id, spans, client_service, server_service)


def compare_trace(expected: SyntheticTrace, got: Trace) -> list[str]:
    """Differences between the trace sent and the trace Tempo returned, one line each.

    Spans are matched by span ID (bytes); parents, names, kinds, services, status code and
    message, timestamps and every attribute sent must come back. Extra attributes added on the
    way (by a collector processor, say) are allowed.
    """
    problems: list[str] = []
    by_id = {s.span_id: s for s in got.spans}
    for want in expected.spans:
        have = by_id.get(want.span_id)
        label = f"span {want.key} ({want.span_id.hex()})"
        if have is None:
            problems.append(f"{label}: missing")
            continue
        if have.trace_id != want.trace_id:
            problems.append(f"{label}: trace ID {have.trace_id.hex()} != {want.trace_id.hex()}")
        if have.parent_span_id != want.parent_span_id:
            problems.append(
                f"{label}: parent {have.parent_span_id.hex() or '(none)'} "
                f"!= {want.parent_span_id.hex() or '(none)'}"
            )
        if have.name != want.name:
            problems.append(f"{label}: name {have.name!r} != {want.name!r}")
        if have.kind != want.kind:
            problems.append(f"{label}: kind {have.kind} != {want.kind}")
        if have.service_name != want.service:
            problems.append(f"{label}: service {have.service_name!r} != {want.service!r}")
        if have.status_code != want.status_code:
            problems.append(f"{label}: status {have.status_code} != {want.status_code}")
        elif have.status_message != want.status_message:
            problems.append(
                f"{label}: status message {have.status_message!r} != {want.status_message!r}"
            )
        if have.start_ns != want.start_ns or have.end_ns != want.end_ns:
            problems.append(f"{label}: timestamps differ")
        for key, value in want.attributes.items():
            if key not in have.attributes:
                problems.append(f"{label}: attribute {key} missing")
            elif not _same_value(have.attributes[key], value):
                problems.append(f"{label}: attribute {key}={have.attributes[key]!r} != {value!r}")
    extra = set(by_id) - {s.span_id for s in expected.spans}
    if extra:
        problems.append(f"{len(extra)} unexpected span(s) in the trace")
    return problems


def _same_value(have: object, want: AttrValue) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return have is want
    if isinstance(want, (int, float)) and isinstance(have, (int, float)):
        return float(have) == float(want)
    return have == want
