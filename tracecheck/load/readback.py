"""K sampled traces of a load read back from Tempo by ID and compared span for span.

A count says how many spans arrived, not that they arrived intact. Every trace of a load can be
rebuilt from its shard's seed and the request number (:meth:`TraceTemplate.spans
<tracecheck.load.encode.TraceTemplate.spans>`), so a few traces spread over the run and over
the shards are fetched by ID and compared: the same span IDs, parents, names, kinds, the run-ID
and shard attributes, the resource, the scope, each span's duration and its place relative to
the root span. Absolute times are not compared: a request's end time is its send time, which
only the sending process knew.

Only requests the collector acknowledged whole are sampled (a refused trace is missing for a
known reason). A shard whose ledger could not carry its list of unacknowledged requests is
sampled anyway and a missing trace is then reported as "missing or refused".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tracecheck.load._deps import BackendError, Trace
from tracecheck.load.encode import (
    RUN_ID_ATTRIBUTE,
    SCOPE_NAME,
    SHARD_ATTRIBUTE,
    SpanRecord,
    TraceTemplate,
)
from tracecheck.load.ledger import ShardRecord

__all__ = ["Sample", "SampleCheck", "choose_samples", "compare_trace", "read_back"]

_KIND_NAMES = {1: "SPAN_KIND_INTERNAL", 2: "SPAN_KIND_SERVER", 3: "SPAN_KIND_CLIENT"}


@dataclass(frozen=True, slots=True)
class Sample:
    shard: int
    request: int
    index: int  # the trace's position in its request
    trace_id: bytes
    spans: tuple[SpanRecord, ...]  # end times relative to the request's end (end_ns = 0)
    acknowledged: bool | None  # the collector acknowledged its request (None: unknown)


@dataclass(frozen=True, slots=True)
class SampleCheck:
    """What the read-back found."""

    checked: int
    matched: int
    missing: tuple[str, ...]  # trace IDs (hex) not found
    mismatched: tuple[str, ...]  # "<trace id>: <first difference>"
    error: str = ""  # a backend error that stopped the read-back

    @property
    def ok(self) -> bool:
        return not self.missing and not self.mismatched and not self.error

    def summary(self) -> str:
        parts = [f"{self.matched} of {self.checked} sampled traces match span for span"]
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {', '.join(self.missing[:3])}")
        if self.mismatched:
            parts.append(f"different {len(self.mismatched)}: {self.mismatched[0]}")
        if self.error:
            parts.append(f"read-back stopped: {self.error}")
        return "; ".join(parts)


def choose_samples(records: Sequence[ShardRecord], k: int) -> list[Sample]:
    """``k`` traces spread evenly over the shards and over each shard's requests, taking only
    acknowledged requests where that is known."""
    if k <= 0 or not records:
        return []
    per_shard = [
        k // len(records) + (1 if i < k % len(records) else 0) for i in range(len(records))
    ]
    out: list[Sample] = []
    for record, n in zip(records, per_shard, strict=True):
        if n == 0 or record.planned_requests == 0:
            continue
        bad: set[int] = set()
        for a, b in record.unaccepted or ():
            bad.update(range(a, b))
        # Traces of acknowledged requests, in order: (request, traces in it).
        accepted = [
            (r, record.traces_in(r)) for r in range(record.planned_requests) if r not in bad
        ]
        total = sum(n_traces for _, n_traces in accepted)
        if total == 0:
            continue
        template = TraceTemplate(
            service=record.service,
            run_id=record.run_id,
            shard=record.shard,
            seed=record.seed,
            spans_per_trace=record.spans_per_trace,
            traces_per_request=record.traces_per_request,
        )
        spread = total // n
        wanted = sorted(
            {min(total - 1, j * spread + spread // 2 + j) for j in range(min(n, total))}
        )
        position, i = 0, 0
        per = record.spans_per_trace
        for request, n_traces in accepted:
            while i < len(wanted) and wanted[i] < position + n_traces:
                index = wanted[i] - position
                spans = template.spans(request, 0, n_traces)
                mine = tuple(spans[index * per : (index + 1) * per])
                out.append(
                    Sample(
                        record.shard,
                        request,
                        index,
                        mine[0].trace_id,
                        mine,
                        record.accepted(request),
                    )
                )
                i += 1
            position += n_traces
            if i >= len(wanted):
                break
    return out


def compare_trace(sample: Sample, trace: Trace, service: str) -> str:
    """The first difference between ``sample`` and what Tempo returned ("" if none)."""
    got = {s.span_id: s for s in trace.spans}
    want = {s.span_id: s for s in sample.spans}
    if set(got) != set(want):
        extra, lost = len(set(got) - set(want)), len(set(want) - set(got))
        return f"{len(got)} spans, expected {len(want)} ({lost} missing, {extra} unexpected)"
    root_want = sample.spans[0]
    root_got = got[root_want.span_id]
    attrs = dict(root_want.attributes)
    for span_id, w in want.items():
        g = got[span_id]
        where = f"span {span_id.hex()}"
        if g.parent_span_id != w.parent_span_id:
            got_parent, want_parent = g.parent_span_id.hex() or "-", w.parent_span_id.hex() or "-"
            return f"{where}: parent {got_parent}, expected {want_parent}"
        if g.name != w.name:
            return f"{where}: name {g.name!r}, expected {w.name!r}"
        if g.kind != _KIND_NAMES.get(w.kind, str(w.kind)):
            return f"{where}: kind {g.kind}, expected {_KIND_NAMES.get(w.kind)}"
        if g.end_ns - g.start_ns != w.end_ns - w.start_ns:
            return (
                f"{where}: duration {g.end_ns - g.start_ns} ns, expected {w.end_ns - w.start_ns} ns"
            )
        if g.end_ns - root_got.end_ns != w.end_ns - root_want.end_ns:
            got_end, want_end = g.end_ns - root_got.end_ns, w.end_ns - root_want.end_ns
            return f"{where}: ends {got_end} ns from the root's end, expected {want_end}"
        for key in (RUN_ID_ATTRIBUTE, SHARD_ATTRIBUTE):
            if g.attributes.get(key) != attrs[key]:
                return f"{where}: {key}={g.attributes.get(key)!r}, expected {attrs[key]!r}"
        resource = {
            "service.name": service,
            RUN_ID_ATTRIBUTE: attrs[RUN_ID_ATTRIBUTE],
            SHARD_ATTRIBUTE: attrs[SHARD_ATTRIBUTE],
        }
        for key, value in resource.items():
            if g.resource.get(key) != value:
                return f"{where}: resource {key}={g.resource.get(key)!r}, expected {value!r}"
        if g.scope_name != SCOPE_NAME:
            return f"{where}: scope {g.scope_name!r}, expected {SCOPE_NAME!r}"
    return ""


def read_back(
    samples: Sequence[Sample],
    fetch: Callable[[bytes], Trace],
    services: Mapping[int, str],
) -> SampleCheck:
    """Fetch every sample by ID (``fetch``) and compare; ``services`` by shard."""
    matched = 0
    missing: list[str] = []
    mismatched: list[str] = []
    for sample in samples:
        hex_id = sample.trace_id.hex()
        try:
            trace = fetch(sample.trace_id)
        except BackendError as exc:
            return SampleCheck(len(samples), matched, tuple(missing), tuple(mismatched), str(exc))
        if not trace.found:
            label = hex_id if sample.acknowledged is not None else f"{hex_id} (missing or refused)"
            missing.append(label)
            continue
        diff = compare_trace(sample, trace, services[sample.shard])
        if diff:
            mismatched.append(f"{hex_id}: {diff}")
        else:
            matched += 1
    return SampleCheck(len(samples), matched, tuple(missing), tuple(mismatched))
