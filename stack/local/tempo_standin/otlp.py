"""OTLP ingest: gRPC TraceService and OTLP/HTTP ``POST /v1/traces`` (protobuf and JSON).

Receiver behaviour follows the OTel Collector's otlpreceiver, which Tempo embeds as its
distributor's receiver (collector-otlp.md §1-§2): HTTP accepts only POST (405 otherwise),
``application/x-protobuf`` and ``application/json`` (415 otherwise), answers 400 with a
``google.rpc.Status`` in the request's encoding when the body cannot be decoded, and replies
with an empty ``ExportTraceServiceResponse`` in the request's encoding. OTLP/JSON uses hex IDs
and integer enums (collector-otlp.md §2), unlike Tempo's own query JSON.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import zlib
from collections.abc import Callable
from typing import Any

import cramjam
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tempo_standin.model import LinkRecord, SpanRecord, decode_attributes

__all__ = [
    "TraceServicer",
    "decode_http_body",
    "decode_json_request",
    "records_from_request",
    "rpc_status_bytes",
    "varint",
]


def records_from_request(
    req: trace_service_pb2.ExportTraceServiceRequest, now: float
) -> tuple[list[SpanRecord], list[tuple[bytes, Any, Any, str, str]], int]:
    """Span records, resource/scope groups, and the count of spans with malformed IDs."""
    records: list[SpanRecord] = []
    groups: list[tuple[bytes, Any, Any, str, str]] = []
    bad = 0
    for rs in req.resource_spans:
        res_attrs = decode_attributes(rs.resource.attributes)
        svc = res_attrs.get("service.name", "")
        service = svc if isinstance(svc, str) else str(svc)
        res_bytes = rs.resource.SerializeToString(deterministic=True)
        for ss in rs.scope_spans:
            h = hashlib.sha1(res_bytes)
            h.update(b"\x00" + rs.schema_url.encode())
            h.update(b"\x00" + ss.scope.SerializeToString(deterministic=True))
            h.update(b"\x00" + ss.schema_url.encode())
            key = h.digest()
            groups.append((key, rs.resource, ss.scope, rs.schema_url, ss.schema_url))
            for span in ss.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8 or not any(span.trace_id):
                    bad += 1
                    continue
                copy = trace_pb2.Span()
                copy.CopyFrom(span)
                links = tuple(
                    LinkRecord(
                        bytes(lk.trace_id), bytes(lk.span_id), decode_attributes(lk.attributes)
                    )
                    for lk in span.links
                )
                records.append(
                    SpanRecord(
                        trace_id=bytes(span.trace_id),
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
                        size=span.ByteSize(),
                        proto=copy,
                        group_key=key,
                        received=now,
                    )
                )
    return records, groups, bad


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


class TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC TraceService.Export. The tenant header is ignored (single tenant, §2)."""

    def __init__(
        self,
        ingest: Callable[[trace_service_pb2.ExportTraceServiceRequest, str, int], None],
        refuse: Callable[[Any, Exception], None],
    ) -> None:
        self._ingest = ingest
        self._refuse = refuse

    def Export(self, request: Any, context: Any) -> Any:  # gRPC method name
        import grpc

        try:
            self._ingest(request, "grpc", request.ByteSize())
        except Exception as exc:  # a stand-in bug: refuse the batch like a failed pipeline push
            self._refuse(request, exc)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        return trace_service_pb2.ExportTraceServiceResponse()
