"""OTLP trace export requests built straight in the protobuf wire format, without message objects.

A load generator that builds one protobuf ``Span`` object per span spends its CPU on object
churn, not on sending. Here the request is encoded **once** as a template and each batch only
patches fixed-width fields in a copy of it:

* ``trace_id`` (16 bytes), ``span_id`` and ``parent_span_id`` (8 bytes each) are ``bytes``
  fields whose length never changes;
* ``start_time_unix_nano`` / ``end_time_unix_nano`` are ``fixed64``: always 8 bytes;
* everything else (names, kinds, the run ID and shard attributes, the resource) is constant for
  a whole load, so its bytes are written once.

Layout of one request (field numbers from opentelemetry-proto ``trace/v1/trace.proto`` and
``collector/trace/v1/trace_service.proto``)::

    ExportTraceServiceRequest.resource_spans (1) {
      ResourceSpans.resource (1)     service.name, tracecheck.run_id, tracecheck.load.shard
      ResourceSpans.scope_spans (2) {
        ScopeSpans.scope (1)          name "tracecheck.load"
        ScopeSpans.spans (2) ...      T traces x S spans: one fixed-length *trace record*
      }                               (S length-delimited Span messages) repeated T times
    }

Because every trace record has the same length R, the batch body is ``header + record * T``
and one byte of one field in every trace is the extended slice ``body[offset::R]``: bytearray
slice assignment patches that byte in all T traces in one C-level call. A batch of T traces
with S spans costs about ``30 * S`` such calls whatever T is, instead of ``T * S`` Python
objects. Fields are written in field-number order with minimal varints, which is exactly how
the protobuf runtime serialises, so the bytes equal ``SerializeToString()`` of the same request
built with message objects (tests/unit/load/test_encode.py checks that byte for byte).

The trace shape (``S`` spans, heap order): span 0 is the root, kind SERVER, named
``GET /load``, lasting :data:`ROOT_DURATION_NS`; span ``p > 0`` is an INTERNAL child of span
``(p - 1) // 2`` named ``load-step-<p>``, in its own slot of the root's duration. All spans of
one request end at the same instant (the batch's send time): pacing is per request, not per
span.

IDs are reproducible: batch ``b`` of shard ``k`` draws its IDs from a
:class:`random.Random` seeded with BLAKE2b(seed, shard, b), so any trace of a load can be
rebuilt from (seed, shard, batch number, its index in the batch) without replaying the
stream, e.g. to read sampled traces back from Tempo and compare them span for span. A span ID
is 7 random bytes followed by ``p + 1`` (its position in the trace), so it is never zero and
unique within its trace.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_SPANS_PER_TRACE",
    "ROOT_DURATION_NS",
    "RUN_ID_ATTRIBUTE",
    "SCOPE_NAME",
    "SHARD_ATTRIBUTE",
    "SpanRecord",
    "TraceTemplate",
    "varint",
]

RUN_ID_ATTRIBUTE = "tracecheck.run_id"  # the same key tracecheck smoke tags its spans with
SHARD_ATTRIBUTE = "tracecheck.load.shard"
SCOPE_NAME = "tracecheck.load"
ROOT_DURATION_NS = 10_000_000  # 10 ms: inside one bucket of Tempo's and the OTel histograms
# The last span-ID byte holds the span's position + 1, so a trace has at most 255 spans.
MAX_SPANS_PER_TRACE = 255

_SPAN_KIND_INTERNAL = 1  # opentelemetry.proto.trace.v1.Span.SpanKind
_SPAN_KIND_SERVER = 2
_RANDOM_SPAN_ID_BYTES = 7

# Wire types (protobuf encoding guide).
_VARINT, _I64, _LEN = 0, 1, 2


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint, the minimal encoding."""
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, _LEN) + varint(len(payload)) + payload


def _string_kv(key: str, value: str) -> bytes:
    # KeyValue { string key = 1; AnyValue value = 2 }, AnyValue { string string_value = 1 }
    any_value = _len_field(1, value.encode())
    return _len_field(1, key.encode()) + _len_field(2, any_value)


def _int_kv(key: str, value: int) -> bytes:
    # AnyValue { int64 int_value = 3 }: a oneof member is written even when it is 0.
    any_value = _key(3, _VARINT) + varint(value & 0xFFFF_FFFF_FFFF_FFFF)
    return _len_field(1, key.encode()) + _len_field(2, any_value)


def _placeholder(body: bytearray, at: dict[str, int], name: str, key: bytes, value: bytes) -> None:
    """Append a field with a placeholder value; remember where the value starts."""
    body.extend(key)
    at[name] = len(body)
    body.extend(value)


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span as the template means it (the slow, obvious description of the fast bytes)."""

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes  # b"" for the root
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind value
    start_ns: int
    end_ns: int
    attributes: tuple[tuple[str, str | int], ...]


@dataclass(frozen=True, slots=True)
class _SpanLayout:
    position: int
    parent: int  # -1 for the root
    name: str
    kind: int
    start_offset_ns: int  # relative to the batch's end time (negative)
    end_offset_ns: int
    # Offsets of the patched fields' first byte inside the trace record.
    trace_id_at: int
    span_id_at: int
    parent_id_at: int  # -1 for the root
    start_at: int
    end_at: int


class TraceTemplate:
    """Encodes batches of ``spans_per_trace``-span traces as ExportTraceServiceRequest bytes.

    Immutable after construction and safe to share between threads: :meth:`build` works on a
    copy. ``traces_per_request`` is the usual batch size; :meth:`build` takes any smaller count
    for a last, partial batch.
    """

    def __init__(
        self,
        *,
        service: str,
        run_id: str,
        shard: int,
        seed: int,
        spans_per_trace: int,
        traces_per_request: int,
    ) -> None:
        if not 1 <= spans_per_trace <= MAX_SPANS_PER_TRACE:
            raise ValueError(f"spans_per_trace must be 1 to {MAX_SPANS_PER_TRACE}")
        if traces_per_request < 1:
            raise ValueError("traces_per_request must be at least 1")
        self.service = service
        self.run_id = run_id
        self.shard = shard
        self.seed = seed
        self.spans_per_trace = spans_per_trace
        self.traces_per_request = traces_per_request
        run_kv, shard_kv = _string_kv(RUN_ID_ATTRIBUTE, run_id), _int_kv(SHARD_ATTRIBUTE, shard)
        # Span.attributes (9) and Resource.attributes (1): repeated KeyValue.
        self._span_attributes = _len_field(9, run_kv) + _len_field(9, shard_kv)
        resource = _len_field(1, _string_kv("service.name", service))
        resource += _len_field(1, run_kv) + _len_field(1, shard_kv)
        self._resource_field = _len_field(1, resource)  # ResourceSpans.resource
        self._scope_field = _len_field(1, _len_field(1, SCOPE_NAME.encode()))  # ScopeSpans.scope
        self._layouts, record = self._encode_record()
        self._record = bytes(record)
        self.record_size = len(record)
        self._headers: dict[int, bytes] = {}

    # -- the template ------------------------------------------------------------------------

    def _encode_record(self) -> tuple[tuple[_SpanLayout, ...], bytearray]:
        """One trace's spans, IDs and times zeroed, and where each patched field sits."""
        count = self.spans_per_trace
        slot = ROOT_DURATION_NS // count
        record = bytearray()
        layouts = []
        for p in range(count):
            parent = (p - 1) // 2 if p else -1
            if p == 0:
                name, kind = "GET /load", _SPAN_KIND_SERVER
                start_off, end_off = -ROOT_DURATION_NS, 0
            else:
                name, kind = f"load-step-{p}", _SPAN_KIND_INTERNAL
                start_off = -ROOT_DURATION_NS + p * slot
                end_off = start_off + slot // 2
            body = bytearray()
            at: dict[str, int] = {}
            _placeholder(body, at, "trace_id", _key(1, _LEN) + varint(16), b"\0" * 16)
            # A span ID's last byte is its position + 1: constant, so only 7 bytes are patched.
            _placeholder(body, at, "span_id", _key(2, _LEN) + varint(8), bytes(7) + bytes([p + 1]))
            if parent >= 0:
                parent_id = bytes(7) + bytes([parent + 1])
                _placeholder(body, at, "parent_id", _key(4, _LEN) + varint(8), parent_id)
            body.extend(_len_field(5, name.encode()))
            body.extend(_key(6, _VARINT) + varint(kind))
            _placeholder(body, at, "start", _key(7, _I64), bytes(8))
            _placeholder(body, at, "end", _key(8, _I64), bytes(8))
            body.extend(self._span_attributes)
            head = _key(2, _LEN) + varint(len(body))  # ScopeSpans.spans
            base = len(record) + len(head)
            record.extend(head)
            record.extend(body)
            layouts.append(
                _SpanLayout(
                    position=p,
                    parent=parent,
                    name=name,
                    kind=kind,
                    start_offset_ns=start_off,
                    end_offset_ns=end_off,
                    trace_id_at=base + at["trace_id"],
                    span_id_at=base + at["span_id"],
                    parent_id_at=base + at["parent_id"] if parent >= 0 else -1,
                    start_at=base + at["start"],
                    end_at=base + at["end"],
                )
            )
        return tuple(layouts), record

    def header(self, traces: int) -> bytes:
        """Everything before the first trace record in a request of ``traces`` traces."""
        cached = self._headers.get(traces)
        if cached is not None:
            return cached
        scope_spans_len = len(self._scope_field) + traces * self.record_size
        scope_spans_key = _key(2, _LEN) + varint(scope_spans_len)  # ResourceSpans.scope_spans
        resource_spans_len = len(self._resource_field) + len(scope_spans_key) + scope_spans_len
        header = (
            _key(1, _LEN)  # ExportTraceServiceRequest.resource_spans
            + varint(resource_spans_len)
            + self._resource_field
            + scope_spans_key
            + self._scope_field
        )
        if len(self._headers) < 64:
            self._headers[traces] = header
        return header

    def request_size(self, traces: int) -> int:
        """Bytes of an uncompressed request with ``traces`` traces."""
        return len(self.header(traces)) + traces * self.record_size

    # -- building a batch --------------------------------------------------------------------

    def _rng(self, batch: int) -> random.Random:
        digest = hashlib.blake2b(
            f"tracecheck.load/{self.seed}/{self.shard}/{batch}".encode(), digest_size=16
        ).digest()
        return random.Random(int.from_bytes(digest, "big"))

    def _draw(self, batch: int, traces: int) -> tuple[bytes, bytes]:
        """(trace IDs: ``traces`` x 16 bytes, row by row; span-ID columns: for each position
        ``p`` and byte ``k``, ``traces`` bytes at ``(p * 7 + k) * traces``)."""
        rng = self._rng(batch)
        trace_ids = rng.randbytes(16 * traces)
        span_columns = rng.randbytes(_RANDOM_SPAN_ID_BYTES * self.spans_per_trace * traces)
        return trace_ids, span_columns

    def build(self, batch: int, end_ns: int, traces: int | None = None) -> bytes:
        """The serialized ExportTraceServiceRequest for batch number ``batch``.

        ``end_ns``: unix nanoseconds at which every root span (and so the batch) ends;
        ``traces``: traces in this request (default ``traces_per_request``).
        """
        count = self.traces_per_request if traces is None else traces
        if count < 1:
            raise ValueError("a request holds at least one trace")
        record = bytearray(self._record)
        pack = struct.pack_into
        for lay in self._layouts:
            pack("<Q", record, lay.start_at, end_ns + lay.start_offset_ns)
            pack("<Q", record, lay.end_at, end_ns + lay.end_offset_ns)
        header = self.header(count)
        body = bytearray(header)
        body += record * count
        h, size = len(header), self.record_size
        trace_ids, span_columns = self._draw(batch, count)
        for k in range(16):
            column = trace_ids[k::16]
            for lay in self._layouts:
                body[h + lay.trace_id_at + k :: size] = column
        for lay in self._layouts:
            for k in range(_RANDOM_SPAN_ID_BYTES):
                start = (lay.position * _RANDOM_SPAN_ID_BYTES + k) * count
                column = span_columns[start : start + count]
                body[h + lay.span_id_at + k :: size] = column
                for child in self._children(lay.position):
                    body[h + child.parent_id_at + k :: size] = column
        return bytes(body)

    def _children(self, position: int) -> Sequence[_SpanLayout]:
        first = 2 * position + 1
        return self._layouts[first : first + 2]

    # -- the same batch, described slowly ------------------------------------------------------

    def ids(self, batch: int, traces: int | None = None) -> list[tuple[bytes, tuple[bytes, ...]]]:
        """(trace ID, span IDs by position) of each trace in batch ``batch``, the slow way."""
        count = self.traces_per_request if traces is None else traces
        trace_ids, columns = self._draw(batch, count)
        out = []
        for i in range(count):
            spans = []
            for p in range(self.spans_per_trace):
                random_part = bytes(
                    columns[(p * _RANDOM_SPAN_ID_BYTES + k) * count + i]
                    for k in range(_RANDOM_SPAN_ID_BYTES)
                )
                spans.append(random_part + bytes([p + 1]))
            out.append((trace_ids[16 * i : 16 * i + 16], tuple(spans)))
        return out

    def spans(self, batch: int, end_ns: int, traces: int | None = None) -> list[SpanRecord]:
        """Every span of batch ``batch`` as :class:`SpanRecord`, in request order."""
        attrs: tuple[tuple[str, str | int], ...] = (
            (RUN_ID_ATTRIBUTE, self.run_id),
            (SHARD_ATTRIBUTE, self.shard),
        )
        out = []
        for trace_id, span_ids in self.ids(batch, traces):
            for lay in self._layouts:
                out.append(
                    SpanRecord(
                        trace_id=trace_id,
                        span_id=span_ids[lay.position],
                        parent_span_id=span_ids[lay.parent] if lay.parent >= 0 else b"",
                        name=lay.name,
                        kind=lay.kind,
                        start_ns=end_ns + lay.start_offset_ns,
                        end_ns=end_ns + lay.end_offset_ns,
                        attributes=attrs,
                    )
                )
        return out

    @property
    def resource_attributes(self) -> tuple[tuple[str, str | int], ...]:
        return (
            ("service.name", self.service),
            (RUN_ID_ATTRIBUTE, self.run_id),
            (SHARD_ATTRIBUTE, self.shard),
        )
