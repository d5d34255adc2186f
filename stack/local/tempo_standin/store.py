"""Thread-safe in-memory trace store with Tempo's ingester visibility rules.

tempo-api.md §10: a trace is found by ID as soon as the push returns (live-traces map), but
search, tag lookups and TraceQL only see it once the ingester has *cut* it from the live map
into the head block: after ``trace_idle_period`` without new spans, or ``trace_live_period``
after it went live. Spans that arrive for an already-cut trace are live again until the next
cut, exactly like a new live-trace entry for the same ID in Tempo.

Memory is bounded (README "Memory"): traces idle for longer than ``retention`` are dropped, and
when more than ``max_spans`` spans are held the least recently appended traces go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from tempo_standin.model import SpanRecord

__all__ = ["CutTrace", "TraceStore"]


@dataclass(slots=True)
class _Trace:
    spans: list[SpanRecord] = field(default_factory=list)
    span_ids: set[bytes] = field(default_factory=set)
    last_append: float = 0.0
    live_since: float | None = None  # set while the trace has spans not yet cut
    cut_count: int = 0


@dataclass(frozen=True, slots=True)
class CutTrace:
    """A trace that just became searchable (logged for the benchmark)."""

    trace_id: bytes
    spans: int
    first: bool


class TraceStore:
    def __init__(
        self,
        *,
        idle_period: float,
        live_period: float,
        retention: float,
        max_spans: int,
        max_spans_per_trace: int,
    ) -> None:
        self._lock = threading.Lock()
        self._traces: OrderedDict[bytes, _Trace] = OrderedDict()
        self._groups: dict[bytes, tuple[Any, Any, str, str]] = {}
        self._idle = idle_period
        self._live = live_period
        self._retention = retention
        self._max_spans = max_spans
        self._max_per_trace = max_spans_per_trace
        self._span_count = 0

    # --- writes -----------------------------------------------------------------------------

    def intern_group(self, key: bytes, resource: Any, scope: Any, rs_url: str, ss_url: str) -> None:
        """Remember the resource/scope a group key stands for (by-ID responses rebuild them)."""
        with self._lock:
            if key not in self._groups:
                self._groups[key] = (resource, scope, rs_url, ss_url)

    def append(self, records: list[SpanRecord], now: float) -> tuple[list[bytes], int, int]:
        """Add spans. Returns (new trace IDs, spans stored, spans refused as trace_too_large).

        A span whose ID is already held for the trace is ignored (Tempo's combiner deduplicates
        spans by ID, tempo-api.md §14 #6533).
        """
        created: list[bytes] = []
        stored = 0
        too_large = 0
        with self._lock:
            for rec in records:
                tr = self._traces.get(rec.trace_id)
                if tr is None:
                    tr = _Trace()
                    self._traces[rec.trace_id] = tr
                    created.append(rec.trace_id)
                else:
                    self._traces.move_to_end(rec.trace_id)
                if rec.span_id in tr.span_ids:
                    continue
                if len(tr.spans) >= self._max_per_trace:
                    too_large += 1
                    continue
                tr.spans.append(rec)
                tr.span_ids.add(rec.span_id)
                tr.last_append = now
                if tr.live_since is None:
                    tr.live_since = now
                stored += 1
                self._span_count += 1
        return created, stored, too_large

    def cut(self, now: float) -> list[CutTrace]:
        """Move idle (or long-lived) live traces into the searchable set (§10)."""
        out: list[CutTrace] = []
        with self._lock:
            for trace_id, tr in self._traces.items():
                if tr.live_since is None:
                    continue
                if now - tr.last_append >= self._idle or now - tr.live_since >= self._live:
                    for rec in tr.spans:
                        rec.searchable = True
                    tr.live_since = None
                    tr.cut_count += 1
                    out.append(CutTrace(trace_id, len(tr.spans), tr.cut_count == 1))
        return out

    def evict(self, now: float) -> int:
        """Drop traces past retention or beyond the span cap. Returns traces dropped."""
        dropped = 0
        with self._lock:
            while self._traces:
                trace_id, tr = next(iter(self._traces.items()))
                if now - tr.last_append > self._retention or self._span_count > self._max_spans:
                    del self._traces[trace_id]
                    self._span_count -= len(tr.spans)
                    dropped += 1
                else:
                    break
        return dropped

    # --- reads ------------------------------------------------------------------------------

    def get(self, trace_id: bytes) -> list[SpanRecord]:
        """Every span held for the trace, live or cut (by-ID visibility, §10)."""
        with self._lock:
            tr = self._traces.get(trace_id)
            return list(tr.spans) if tr else []

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
            return sum(1 for tr in self._traces.values() if tr.live_since is not None)

    def counts(self) -> tuple[int, int]:
        """(traces, spans) held."""
        with self._lock:
            return len(self._traces), self._span_count
