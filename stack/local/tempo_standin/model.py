"""Span records held by the store, decoded once at ingest from OTLP protobuf."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "KIND_NAMES",
    "STATUS_NAMES",
    "LinkRecord",
    "SpanRecord",
    "decode_any_value",
    "decode_attributes",
    "trace_id_to_search_hex",
]

# OTLP enum values -> TraceQL keywords (TraceQL docs, "Intrinsic fields": status, kind).
STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}
KIND_NAMES = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
# OTLP enum names as Tempo's jsonpb and the span-metrics labels spell them (gogo jsonpb writes
# enum names; modules/generator/processor/spanmetrics/spanmetrics.go labels span_kind and
# status_code with the enum's String()).
SPAN_KIND_ENUM = {
    0: "SPAN_KIND_UNSPECIFIED",
    1: "SPAN_KIND_INTERNAL",
    2: "SPAN_KIND_SERVER",
    3: "SPAN_KIND_CLIENT",
    4: "SPAN_KIND_PRODUCER",
    5: "SPAN_KIND_CONSUMER",
}
STATUS_CODE_ENUM = {0: "STATUS_CODE_UNSET", 1: "STATUS_CODE_OK", 2: "STATUS_CODE_ERROR"}


def decode_any_value(value: Any) -> Any:
    """An OTLP AnyValue as a Python value (str, bool, int, float, bytes, list, dict, None)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [decode_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: decode_any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def decode_attributes(kvs: Any) -> dict[str, Any]:
    """Repeated KeyValue -> dict (the last value of a duplicated key wins)."""
    return {kv.key: decode_any_value(kv.value) for kv in kvs}


def trace_id_to_search_hex(trace_id: bytes) -> str:
    """Search-response trace ID: hex with leading zeros stripped (pkg/util/traceid.go
    TraceIDToHexString at v2.9.0)."""
    return trace_id.hex().lstrip("0")


@dataclass(frozen=True, slots=True)
class LinkRecord:
    trace_id: bytes
    span_id: bytes
    attributes: dict[str, Any]


@dataclass(slots=True, eq=False)
class SpanRecord:
    """One span with its resource context. ``searchable`` flips when the trace is cut."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    resource_attributes: dict[str, Any]
    links: tuple[LinkRecord, ...]
    service: str
    size: int
    proto: Any  # opentelemetry.proto.trace.v1.Span, kept for by-ID responses
    group_key: bytes  # serialized (Resource, InstrumentationScope, schema URLs)
    received: float
    searchable: bool = False
    in_generator: bool = False  # accepted by the metrics-generator (ingestion slack)
    segment: int = 0  # index of the push (segment) of its trace that brought it

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def is_root(self) -> bool:
        return not self.parent_span_id or self.parent_span_id == b"\x00" * 8
