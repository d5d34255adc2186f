"""One tenant's ingester instance: live traces, their cut into the searchable set, and limits.

Paths are in grafana/tempo at tag v2.9.0 (read for facts; nothing copied).

* Visibility (modules/ingester/instance.go): a trace is found by ID as soon as the push returns
  (``FindTraceByID`` reads the live-traces map first), but search, tag lookups and TraceQL only
  see it once the ingester has *cut* it from the live map into the head block
  (``CutCompleteTraces``): after ``trace_idle_period`` without new spans, or
  ``trace_live_period`` after it went live. Spans that arrive for an already-cut trace make a
  new live entry until the next cut; every cut counts in ``tempo_ingester_traces_created_total``
  (``writeTraceToHeadBlock``).
* Limits, checked per trace segment in ``instance.push``, in this order:
  ``max_traces_per_user`` (the live-traces count; refused as ``live_traces_exceeded``), then
  ``max_bytes_per_trace`` with the size tracker of pkg/tracesizes (the running total of segment
  bytes, kept growing even when refused; entries idle since the previous block cut are cleared
  at each block cut, ``CutBlockIfReady``); refused as ``trace_too_large``.
* Trace by ID (``FindTraceByID``): the live part first, then the cut parts, combined with
  pkg/model/trace/combine.go: once the combined size passes ``max_bytes_per_trace`` the rest is
  left out and the answer is partial.

Memory is bounded (README "Memory"): traces idle for longer than ``retention`` are dropped, and
when more than ``max_spans`` spans are held the least recently appended traces go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from tempo_standin.model import SpanRecord

__all__ = ["AppendResult", "CutTrace", "ReadResult", "TraceStore"]

SEGMENT_HEADER = 8  # pkg/model/v2/segment_decoder.go: uint32 start + uint32 end before the proto


@dataclass(slots=True)
class _Segment:
    size: int  # proto bytes of the per-trace tempopb.Trace of one push
    cut: bool = False


@dataclass(slots=True)
class _Trace:
    spans: list[SpanRecord] = field(default_factory=list)
    span_ids: set[bytes] = field(default_factory=set)
    segments: list[_Segment] = field(default_factory=list)
    last_append: float = 0.0
    live_since: float | None = None  # set while the trace has spans not yet cut
    live_bytes: int = 0
    cut_count: int = 0


@dataclass(frozen=True, slots=True)
class CutTrace:
    """A trace that was just cut (logged for the benchmark)."""

    trace_id: bytes
    spans: int
    first: bool


@dataclass(slots=True)
class AppendResult:
    created: list[bytes] = field(default_factory=list)  # trace IDs seen for the first time
    stored: int = 0
    too_large: int = 0  # spans refused as trace_too_large
    live_exceeded: int = 0  # spans refused as live_traces_exceeded
    received_bytes: int = 0  # segment bytes offered (tempo_ingester_bytes_received_total)


@dataclass(frozen=True, slots=True)
class ReadResult:
    spans: list[SpanRecord]
    partial: bool
    inspected_bytes: int


class TraceStore:
    def __init__(
        self,
        *,
        idle_period: float,
        live_period: float,
        retention: float,
        max_spans: int,
        max_spans_per_trace: int,
        max_bytes_per_trace: int = 0,
        max_live_traces: int = 0,
        max_block_duration: float = 1800.0,
        now: float = 0.0,
    ) -> None:
        self._lock = threading.Lock()
        self._traces: OrderedDict[bytes, _Trace] = OrderedDict()
        self._groups: dict[bytes, tuple[Any, Any, str, str]] = {}
        self._idle = idle_period
        self._live = live_period
        self._retention = retention
        self._max_spans = max_spans
        self._max_per_trace = max_spans_per_trace
        self._max_bytes = max_bytes_per_trace
        self._max_live = max_live_traces
        self._max_block_duration = max_block_duration
        self._span_count = 0
        self._live_count = 0
        self._live_bytes = 0
        # pkg/tracesizes: trace ID -> [total bytes offered, last offer time].
        self._sizes: dict[bytes, list[float]] = {}
        self._last_block_cut = now
        self._head_has_data = False

    # --- writes -----------------------------------------------------------------------------

    def intern_group(self, key: bytes, resource: Any, scope: Any, rs_url: str, ss_url: str) -> None:
        """Remember the resource/scope a group key stands for (by-ID responses rebuild them)."""
        with self._lock:
            if key not in self._groups:
                self._groups[key] = (resource, scope, rs_url, ss_url)

    def append_segment(
        self, trace_id: bytes, records: list[SpanRecord], size: int, now: float
    ) -> AppendResult:
        """One trace's spans from one push (``instance.push``)."""
        return self.append_segments([(trace_id, records, size)], now)

    def append_segments(
        self, segments: list[tuple[bytes, list[SpanRecord], int]], now: float
    ) -> AppendResult:
        out = AppendResult()
        with self._lock:
            for trace_id, records, size in segments:
                self._append(trace_id, records, size, now, out)
        return out

    def append(self, records: list[SpanRecord], now: float) -> AppendResult:
        """Spans grouped by trace, each group one segment sized by its spans (tests)."""
        by_trace: dict[bytes, list[SpanRecord]] = {}
        for rec in records:
            by_trace.setdefault(rec.trace_id, []).append(rec)
        return self.append_segments(
            [(tid, recs, sum(r.size for r in recs)) for tid, recs in by_trace.items()], now
        )

    def _append(
        self,
        trace_id: bytes,
        records: list[SpanRecord],
        size: int,
        now: float,
        out: AppendResult,
    ) -> None:
        """One segment; the caller holds the lock."""
        offered = size + SEGMENT_HEADER
        out.received_bytes += offered
        if self._max_live and self._live_count >= self._max_live:
            out.live_exceeded += len(records)
            return
        if self._max_bytes:
            entry = self._sizes.get(trace_id)
            if entry is None:
                entry = self._sizes[trace_id] = [0.0, now]
            entry[0] += offered
            entry[1] = now
            if entry[0] > self._max_bytes:
                out.too_large += len(records)
                return
        tr = self._traces.get(trace_id)
        if tr is None:
            tr = self._traces[trace_id] = _Trace()
            out.created.append(trace_id)
        else:
            self._traces.move_to_end(trace_id)
        if tr.live_since is None:
            tr.live_since = now
            self._live_count += 1
        tr.last_append = now
        tr.live_bytes += offered
        self._live_bytes += offered
        segment = len(tr.segments)
        tr.segments.append(_Segment(size))
        for rec in records:
            # Tempo's combiner deduplicates spans by ID when the trace is read; the
            # stand-in keeps the first copy only.
            if rec.span_id in tr.span_ids:
                continue
            if len(tr.spans) >= self._max_per_trace:  # the stand-in's memory bound
                out.too_large += 1
                continue
            rec.segment = segment
            tr.spans.append(rec)
            tr.span_ids.add(rec.span_id)
            out.stored += 1
            self._span_count += 1

    def cut(self, now: float) -> list[CutTrace]:
        """Move idle (or long-lived) live traces into the searchable set."""
        out: list[CutTrace] = []
        with self._lock:
            for trace_id, tr in self._traces.items():
                if tr.live_since is None:
                    continue
                if now - tr.last_append >= self._idle or now - tr.live_since >= self._live:
                    for rec in tr.spans:
                        rec.searchable = True
                    for seg in tr.segments:
                        seg.cut = True
                    tr.live_since = None
                    self._live_count -= 1
                    self._live_bytes -= tr.live_bytes
                    tr.live_bytes = 0
                    tr.cut_count += 1
                    self._head_has_data = True
                    out.append(CutTrace(trace_id, len(tr.spans), tr.cut_count == 1))
        return out

    def cut_block_if_ready(self, now: float) -> bool:
        """``CutBlockIfReady``: every ``max_block_duration`` (when the head block holds data) the
        size tracker forgets traces not pushed to since the previous block cut."""
        with self._lock:
            if not self._head_has_data or now - self._last_block_cut < self._max_block_duration:
                return False
            since = self._last_block_cut
            for trace_id in [t for t, (_, ts) in self._sizes.items() if ts < since]:
                del self._sizes[trace_id]
            self._last_block_cut = now
            self._head_has_data = False
            return True

    def evict(self, now: float) -> int:
        """Drop traces past retention or beyond the span cap. Returns traces dropped."""
        dropped = 0
        with self._lock:
            while self._traces:
                trace_id, tr = next(iter(self._traces.items()))
                if now - tr.last_append > self._retention or self._span_count > self._max_spans:
                    del self._traces[trace_id]
                    self._sizes.pop(trace_id, None)
                    self._span_count -= len(tr.spans)
                    if tr.live_since is not None:
                        self._live_count -= 1
                        self._live_bytes -= tr.live_bytes
                    dropped += 1
                else:
                    break
        return dropped

    # --- reads ------------------------------------------------------------------------------

    def get(self, trace_id: bytes) -> list[SpanRecord]:
        """Every span held for the trace, live or cut (no size limit)."""
        with self._lock:
            tr = self._traces.get(trace_id)
            return list(tr.spans) if tr else []

    def read(self, trace_id: bytes, max_bytes: int) -> ReadResult:
        """Trace by ID as the ingester combines it: live segments first, then cut ones, each in
        push order; once the combined size exceeds ``max_bytes`` (0: no limit) the remaining
        segments are left out (the crossing one is kept, as in combine.go)."""
        with self._lock:
            tr = self._traces.get(trace_id)
            if tr is None:
                return ReadResult([], False, 0)
            order = [i for i, s in enumerate(tr.segments) if not s.cut]
            order += [i for i, s in enumerate(tr.segments) if s.cut]
            kept: set[int] = set()
            total = 0
            partial = False
            for i in order:
                kept.add(i)
                total += tr.segments[i].size
                if max_bytes and total > max_bytes:
                    partial = True  # marked partial even when nothing was left out
                    break
            spans = [s for s in tr.spans if s.segment in kept]
            inspected = sum(s.size for s in tr.segments)
        return ReadResult(spans, partial, inspected)

    def group(self, key: bytes) -> tuple[Any, Any, str, str]:
        with self._lock:
            return self._groups[key]

    def searchable(self) -> list[tuple[bytes, list[SpanRecord]]]:
        """Snapshot of cut spans per trace, in the order the traces were first written."""
        with self._lock:
            out = []
            for trace_id, tr in self._traces.items():
                spans = [s for s in tr.spans if s.searchable]
                if spans:
                    out.append((trace_id, spans))
        out.sort(key=lambda item: item[1][0].received)
        return out

    def live_traces(self) -> int:
        with self._lock:
            return self._live_count

    def live_trace_bytes(self) -> int:
        with self._lock:
            return self._live_bytes

    def counts(self) -> tuple[int, int]:
        """(traces, spans) held."""
        with self._lock:
            return len(self._traces), self._span_count
