"""OTLP ingest: gRPC TraceService and OTLP/HTTP ``POST /v1/traces`` (protobuf and JSON).

Receiver behaviour follows the OpenTelemetry Collector's otlpreceiver v0.132.0, which Tempo 2.9.0
vendors as its distributor's receiver (vendor/go.opentelemetry.io/collector/receiver/otlpreceiver
/otlphttp.go): HTTP accepts only POST (405 otherwise), ``application/x-protobuf`` and
``application/json`` (415 otherwise), answers 400 with a ``google.rpc.Status`` in the request's
encoding when the body cannot be decoded, and replies with an empty
``ExportTraceServiceResponse`` in the request's encoding. OTLP/JSON uses hex IDs and integer
enums (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding), unlike Tempo's own
query JSON.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cramjam
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tempo_standin.model import LinkRecord, SpanRecord, decode_attributes

__all__ = [
    "IngestError",
    "InvalidRequest",
    "NoOrgID",
    "TraceSegment",
    "TraceServicer",
    "decode_http_body",
    "decode_json_request",
    "records_from_request",
    "rpc_status_bytes",
    "segments_from_request",
    "validate_ids",
    "varint",
]


class IngestError(Exception):
    """A push the receiver answers with an error: ``rpc_code`` is the gRPC status code, and
    ``http_status`` the OTLP/HTTP status the collector's otlpreceiver maps it to
    (receiver/otlpreceiver/internal/errors GetHTTPStatusCodeFromStatus)."""

    rpc_code = 13  # INTERNAL
    http_status = 500


class InvalidRequest(IngestError):
    """The distributor refused the whole request (gRPC INVALID_ARGUMENT, HTTP 400)."""

    rpc_code = 3
    http_status = 400


class NoOrgID(IngestError):
    """Multitenancy is on and the push has no single ``X-Scope-OrgID``. Tempo's receiver
    middleware returns dskit's ``no org id`` error, which the otlpreceiver turns into gRPC
    UNAVAILABLE / HTTP 503 (modules/distributor/receiver/middleware.go at v2.9.0)."""

    rpc_code = 14
    http_status = 503

    def __init__(self) -> None:
        super().__init__("no org id")


@dataclass(slots=True)
class TraceSegment:
    """The spans of one trace in one request: what Tempo's distributor sends to the ingester as
    one segment. ``size`` is the proto size of that per-trace ``tempopb.Trace``."""

    trace_id: bytes
    records: list[SpanRecord] = field(default_factory=list)
    size: int = 0


def _field_size(n: int) -> int:
    """Bytes of a length-delimited field with a one-byte tag and an ``n``-byte payload."""
    return 1 + ((n.bit_length() + 6) // 7 or 1) + n


def validate_ids(req: trace_service_pb2.ExportTraceServiceRequest) -> None:
    """Tempo's distributor rejects the whole request when one span has a trace ID that is not
    16 bytes or a span ID that is not 8 bytes or all zero (modules/distributor/distributor.go
    requestsByTraceID, pkg/validation/validate.go at v2.9.0). An all-zero trace ID is accepted."""
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                if len(span.trace_id) != 16:
                    raise InvalidRequest(
                        f"trace ids must be 128 bit, received {len(span.trace_id) * 8} bits"
                    )
                if len(span.span_id) != 8 or not any(span.span_id):
                    raise InvalidRequest(
                        "span ids must be 64 bit and not all zero, received "
                        f"{len(span.span_id) * 8} bits"
                    )


def segments_from_request(
    req: trace_service_pb2.ExportTraceServiceRequest, now: float
) -> tuple[list[TraceSegment], list[tuple[bytes, Any, Any, str, str]]]:
    """Per-trace segments (first-seen order) and the resource/scope groups of a validated request.

    A segment's size follows the distributor's rebatching (requestsByTraceID): one
    ``ResourceSpans{resource, [ScopeSpans{scope, spans}]}`` per trace and scope, schema URLs
    dropped.
    """
    segments: dict[bytes, TraceSegment] = {}
    groups: list[tuple[bytes, Any, Any, str, str]] = []
    for rs in req.resource_spans:
        res_attrs = decode_attributes(rs.resource.attributes)
        svc = res_attrs.get("service.name", "")
        service = svc if isinstance(svc, str) else str(svc)
        res_bytes = rs.resource.SerializeToString(deterministic=True)
        resource_field = _field_size(len(res_bytes)) if rs.HasField("resource") else 0
        for ss in rs.scope_spans:
            h = hashlib.sha1(res_bytes)
            h.update(b"\x00" + rs.schema_url.encode())
            h.update(b"\x00" + ss.scope.SerializeToString(deterministic=True))
            h.update(b"\x00" + ss.schema_url.encode())
            key = h.digest()
            groups.append((key, rs.resource, ss.scope, rs.schema_url, ss.schema_url))
            scope_field = _field_size(ss.scope.ByteSize()) if ss.HasField("scope") else 0
            spans_bytes: dict[bytes, int] = {}
            for span in ss.spans:
                trace_id = bytes(span.trace_id)
                seg = segments.get(trace_id)
                if seg is None:
                    seg = segments[trace_id] = TraceSegment(trace_id)
                copy = trace_pb2.Span()
                copy.CopyFrom(span)
                size = span.ByteSize()
                spans_bytes[trace_id] = spans_bytes.get(trace_id, 0) + _field_size(size)
                links = tuple(
                    LinkRecord(
                        bytes(lk.trace_id), bytes(lk.span_id), decode_attributes(lk.attributes)
                    )
                    for lk in span.links
                )
                seg.records.append(
                    SpanRecord(
                        trace_id=trace_id,
                        span_id=bytes(span.span_id),
                        parent_span_id=bytes(span.parent_span_id),
                        name=span.name,
                        kind=int(span.kind),
                        start_ns=int(span.start_time_unix_nano),
                        end_ns=int(span.end_time_unix_nano),
                        status_code=int(span.status.code),
                        status_message=span.status.message,
                        attributes=decode_attributes(span.attributes),
                        resource_attributes=res_attrs,
                        links=links,
                        service=service,
                        size=size,
                        proto=copy,
                        group_key=key,
                        received=now,
                    )
                )
            for trace_id, nbytes in spans_bytes.items():
                scope_spans = _field_size(scope_field + nbytes)
                segments[trace_id].size += _field_size(resource_field + scope_spans)
    return list(segments.values()), groups


def records_from_request(
    req: trace_service_pb2.ExportTraceServiceRequest, now: float
) -> tuple[list[SpanRecord], list[tuple[bytes, Any, Any, str, str]]]:
    """The request's spans as records (trace by trace) and its resource/scope groups."""
    segments, groups = segments_from_request(req, now)
    return [r for seg in segments for r in seg.records], groups


def _hex_to_b64(value: Any) -> Any:
    if isinstance(value, str) and value:
        try:
            return base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            return value  # left for the protobuf parser to reject
    return value


def decode_json_request(body: bytes) -> trace_service_pb2.ExportTraceServiceRequest:
    """OTLP/JSON -> request. IDs are hex in OTLP/JSON; the proto3 JSON parser wants base64."""
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("top level is not an object")
    for rs in doc.get("resourceSpans", doc.get("resource_spans", [])) or []:
        for ss in rs.get("scopeSpans", rs.get("scope_spans", [])) or []:
            for span in ss.get("spans", []) or []:
                for k in (
                    "traceId",
                    "spanId",
                    "parentSpanId",
                    "trace_id",
                    "span_id",
                    "parent_span_id",
                ):
                    if k in span:
                        span[k] = _hex_to_b64(span[k])
                for link in span.get("links", []) or []:
                    for k in ("traceId", "spanId", "trace_id", "span_id"):
                        if k in link:
                            link[k] = _hex_to_b64(link[k])
    req = trace_service_pb2.ExportTraceServiceRequest()
    json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    return req


def decode_http_body(body: bytes, encoding: str) -> bytes:
    """Undo Content-Encoding (the collector's defaults: gzip, zstd, zlib, snappy, deflate, lz4)."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc == "gzip":
        return gzip.decompress(body)
    if enc in ("zlib", "deflate"):
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    if enc == "zstd":
        return bytes(cramjam.zstd.decompress(body))
    if enc == "snappy":
        try:
            return bytes(cramjam.snappy.decompress_raw(body))
        except Exception:
            return bytes(cramjam.snappy.decompress(body))
    if enc == "lz4":
        return bytes(cramjam.lz4.decompress(body))
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def rpc_status_bytes(code: int, message: str) -> bytes:
    """A ``google.rpc.Status{code=1, message=2}`` encoded by hand (no googleapis dependency)."""
    msg = message.encode()
    out = bytearray()
    if code:
        out += b"\x08" + varint(code)
    if msg:
        out += b"\x12" + varint(len(msg)) + msg
    return bytes(out)


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (for messages encoded by hand)."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_GRPC_CODES = {3: "INVALID_ARGUMENT", 13: "INTERNAL", 14: "UNAVAILABLE"}


class TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC TraceService.Export. ``ingest(request, transport, org_ids)`` raises
    :class:`IngestError` for an answer other than OK; ``org_ids`` are the ``x-scope-orgid``
    metadata values."""

    def __init__(
        self,
        ingest: Callable[[trace_service_pb2.ExportTraceServiceRequest, str, list[str]], None],
        log: Callable[[str], None],
    ) -> None:
        self._ingest = ingest
        self._log = log

    def Export(self, request: Any, context: Any) -> Any:  # gRPC method name
        import grpc

        org_ids = [v for k, v in context.invocation_metadata() if k == "x-scope-orgid"]
        try:
            self._ingest(request, "grpc", org_ids)
        except IngestError as exc:
            code = getattr(grpc.StatusCode, _GRPC_CODES.get(exc.rpc_code, "INTERNAL"))
            context.abort(code, str(exc))
        except Exception as exc:  # a stand-in bug: refuse the batch like a failed pipeline push
            self._log(f"ingest failed (grpc): {type(exc).__name__}: {exc}")
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        return trace_service_pb2.ExportTraceServiceResponse()
