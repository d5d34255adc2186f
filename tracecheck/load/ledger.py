"""What each shard of a load sent, as the accountant needs it, and how it travels: the ledger span.

A load from several processes (the Indexed Job's pods, or ``--shards``/``--shard`` by hand) is
accounted by a process that sent none of it: ``tracecheck load --account RUN_ID``. It must learn
what every shard planned and what the collector acknowledged. Each shard therefore ends its load
with one **ledger span** through the same pipeline:

* in its own trace, whose ID is derived from (run ID, shard) (:func:`ledger_trace_id`), so the
  accountant reads shard ``k``'s ledger **by trace ID**, which Tempo answers as soon as the
  span is stored, without waiting for the trace to become searchable;
* tagged ``tracecheck.load.ledger_of = RUN_ID``, not ``tracecheck.run_id``, and sent by the
  service ``tracecheck-load-ledger``: the run's TraceQL count and its span-metrics never include
  a ledger;
* carrying the shard's :class:`ShardRecord` as compact JSON (``tracecheck.load.ledger``, kept
  under Tempo's default ``max_attribute_bytes`` of 2048) and its time range as the span's.

Why a span and not the pods' JSON outputs: the accountant then needs nothing but the backends it
already reads (no shared volume, no ``kubectl logs`` plumbing, any number of machines), and a
ledger that the pipeline lost is itself a finding: the shard is named as missing. The price is
one span per shard in the collector's and Tempo's counters, which the accounting subtracts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tracecheck.load.encode import SHARD_ATTRIBUTE
from tracecheck.load.run import LoadResult

__all__ = [
    "LEDGER_ATTRIBUTE",
    "LEDGER_OF_ATTRIBUTE",
    "LEDGER_SERVICE",
    "ShardRecord",
    "ledger_request",
    "ledger_trace_id",
    "record_from_span_attributes",
    "totals",
]

LEDGER_SERVICE = "tracecheck-load-ledger"
LEDGER_OF_ATTRIBUTE = "tracecheck.load.ledger_of"
LEDGER_ATTRIBUTE = "tracecheck.load.ledger"
SHARDS_ATTRIBUTE = "tracecheck.load.shards"
LEDGER_SPAN_NAME = "tracecheck load ledger"
LEDGER_VERSION = 1
# Tempo's default overrides.defaults.global.max_attribute_bytes truncates longer values.
MAX_LEDGER_BYTES = 2000
# At most this many unaccepted request ranges travel in a ledger (else: unknown).
MAX_RANGES = 24


@dataclass(frozen=True, slots=True)
class ShardRecord:
    """One shard's load: what it planned, what the collector acknowledged, how to rebuild it.

    Made from a :class:`~tracecheck.load.run.LoadResult` in the sending process, or decoded from
    a ledger span by the accountant. ``unaccepted`` is None when unknown (too many ranges for a
    ledger): sampled read-backs then cannot tell a lost trace from a refused one.
    """

    run_id: str
    shard: int
    shards: int
    seed: int
    service: str
    protocol: str
    spans_per_trace: int
    traces_per_request: int
    target_rate: float
    duration_s: float
    planned_spans: int
    planned_traces: int
    planned_requests: int
    sent_spans: int  # acknowledged (OK answers, minus partial_success rejections)
    rejected_spans: int
    refused_final_spans: int
    failed_spans: int
    unsent_spans: int
    refused_attempt_spans: int  # spans in refused attempts (what the receiver counts refused)
    refusals: Mapping[str, int] = field(default_factory=dict)  # spans per refusal code
    errors: Mapping[str, int] = field(default_factory=dict)  # requests per error cause
    started_at: float = 0.0  # unix seconds
    elapsed_s: float = 0.0
    achieved_rate: float = 0.0
    max_lag_s: float = 0.0
    unaccepted: tuple[tuple[int, int], ...] | None = ()
    messages: tuple[str, ...] = ()

    @property
    def attempted_spans(self) -> int:
        return self.planned_spans - self.unsent_spans

    @property
    def sending_rate(self) -> float:
        """Spans sent (acknowledged or not) per second of the schedule or of the send."""
        span = max(self.elapsed_s, self.planned_spans / self.target_rate if self.target_rate else 0)
        return self.attempted_spans / span if span > 0 else 0.0

    @property
    def finished_at(self) -> float:
        return self.started_at + self.elapsed_s

    def traces_in(self, request: int) -> int:
        return min(self.traces_per_request, self.planned_traces - request * self.traces_per_request)

    def accepted(self, request: int) -> bool | None:
        """Whether request ``request`` was accepted whole; None when the ledger cannot say."""
        if not 0 <= request < self.planned_requests:
            return False
        if self.unaccepted is None:
            return None
        return not any(a <= request < b for a, b in self.unaccepted)

    @classmethod
    def from_result(cls, r: LoadResult) -> ShardRecord:
        return cls(
            run_id=r.run_id,
            shard=r.shard,
            shards=r.shards,
            seed=r.seed,
            service=r.service,
            protocol=r.protocol,
            spans_per_trace=r.spans_per_trace,
            traces_per_request=r.traces_per_request,
            target_rate=r.target_rate,
            duration_s=r.duration_s,
            planned_spans=r.planned_spans,
            planned_traces=r.planned_traces,
            planned_requests=r.planned_requests,
            sent_spans=r.sent_spans,
            rejected_spans=r.rejected_spans,
            refused_final_spans=r.refused_final_spans,
            failed_spans=r.failed_spans,
            unsent_spans=r.unsent_spans,
            refused_attempt_spans=r.refused_spans,
            refusals={code: x.spans for code, x in r.refusals.items()},
            errors=dict(r.errors),
            started_at=r.started_at,
            elapsed_s=r.elapsed_s,
            achieved_rate=r.achieved_rate,
            max_lag_s=r.max_lag_s,
            unaccepted=r.unaccepted,
            messages=r.messages,
        )

    # -- the ledger's JSON ------------------------------------------------------------------

    def to_ledger(self) -> str:
        """Compact JSON (short keys) under :data:`MAX_LEDGER_BYTES`."""
        data: dict[str, Any] = {
            "v": LEDGER_VERSION,
            "run": self.run_id,
            "shard": self.shard,
            "shards": self.shards,
            "seed": self.seed,
            "svc": self.service,
            "proto": self.protocol,
            "spt": self.spans_per_trace,
            "tpr": self.traces_per_request,
            "rate": round(self.target_rate, 3),
            "dur": round(self.duration_s, 3),
            "plan": [self.planned_spans, self.planned_traces, self.planned_requests],
            "sent": self.sent_spans,
            "rej": self.rejected_spans,
            "ref": self.refused_final_spans,
            "fail": self.failed_spans,
            "unsent": self.unsent_spans,
            "refatt": self.refused_attempt_spans,
            "refusals": dict(self.refusals),
            "errors": dict(self.errors),
            "t0": round(self.started_at, 3),
            "el": round(self.elapsed_s, 3),
            "ach": round(self.achieved_rate, 1),
            "lag": round(self.max_lag_s, 3),
            "bad": None
            if self.unaccepted is None or len(self.unaccepted) > MAX_RANGES
            else [list(r) for r in self.unaccepted],
        }
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        if len(text.encode()) > MAX_LEDGER_BYTES:
            data["bad"] = None
            data["errors"] = {k: v for k, v in list(data["errors"].items())[:3]}
            text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        return text

    @classmethod
    def from_ledger(cls, text: str) -> ShardRecord:
        """Decode :meth:`to_ledger`'s JSON; ValueError if it is not a ledger this version reads."""
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or d.get("v") != LEDGER_VERSION:
                raise ValueError(f"not a version-{LEDGER_VERSION} ledger")
            planned = d["plan"]
            bad = d.get("bad")
            return cls(
                run_id=str(d["run"]),
                shard=int(d["shard"]),
                shards=int(d["shards"]),
                seed=int(d["seed"]),
                service=str(d["svc"]),
                protocol=str(d["proto"]),
                spans_per_trace=int(d["spt"]),
                traces_per_request=int(d["tpr"]),
                target_rate=float(d["rate"]),
                duration_s=float(d["dur"]),
                planned_spans=int(planned[0]),
                planned_traces=int(planned[1]),
                planned_requests=int(planned[2]),
                sent_spans=int(d["sent"]),
                rejected_spans=int(d["rej"]),
                refused_final_spans=int(d["ref"]),
                failed_spans=int(d["fail"]),
                unsent_spans=int(d["unsent"]),
                refused_attempt_spans=int(d["refatt"]),
                refusals={str(k): int(v) for k, v in dict(d.get("refusals") or {}).items()},
                errors={str(k): int(v) for k, v in dict(d.get("errors") or {}).items()},
                started_at=float(d["t0"]),
                elapsed_s=float(d["el"]),
                achieved_rate=float(d.get("ach", 0.0)),
                max_lag_s=float(d.get("lag", 0.0)),
                unaccepted=None if bad is None else tuple((int(a), int(b)) for a, b in bad),
            )
        except (KeyError, TypeError, IndexError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed ledger: {exc}") from None


def ledger_trace_id(run_id: str, shard: int) -> bytes:
    """The trace ID of shard ``shard``'s ledger: anyone who knows the run ID can read it."""
    return hashlib.blake2b(
        f"tracecheck.load.ledger/{run_id}/{shard}".encode(), digest_size=16
    ).digest()


def _ledger_span_id(run_id: str, shard: int) -> bytes:
    digest = hashlib.blake2b(
        f"tracecheck.load.ledger-span/{run_id}/{shard}".encode(), digest_size=8
    )
    raw = digest.digest()
    return raw if any(raw) else b"\x00" * 7 + b"\x01"


def ledger_request(record: ShardRecord) -> bytes:
    """A serialized ExportTraceServiceRequest holding the one ledger span of ``record``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    _attrs(rs.resource.attributes, {"service.name": LEDGER_SERVICE})
    ss = rs.scope_spans.add()
    ss.scope.name = "tracecheck.load"
    span = ss.spans.add()
    span.trace_id = ledger_trace_id(record.run_id, record.shard)
    span.span_id = _ledger_span_id(record.run_id, record.shard)
    span.name = LEDGER_SPAN_NAME
    span.kind = Span.SPAN_KIND_INTERNAL
    # Microseconds: a float of unix seconds holds no more.
    span.start_time_unix_nano = round(record.started_at * 1e6) * 1000
    span.end_time_unix_nano = round(record.finished_at * 1e6) * 1000
    _attrs(
        span.attributes,
        {
            LEDGER_OF_ATTRIBUTE: record.run_id,
            SHARD_ATTRIBUTE: record.shard,
            SHARDS_ATTRIBUTE: record.shards,
            LEDGER_ATTRIBUTE: record.to_ledger(),
        },
    )
    body: bytes = request.SerializeToString()
    return body


def _attrs(target: Any, values: Mapping[str, str | int]) -> None:
    for key, value in values.items():
        kv = target.add()
        kv.key = key
        if isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = value


def record_from_span_attributes(run_id: str, attributes: Mapping[str, Any]) -> ShardRecord:
    """The :class:`ShardRecord` a ledger span carries; ValueError when it is not ``run_id``'s."""
    if attributes.get(LEDGER_OF_ATTRIBUTE) != run_id:
        raise ValueError(f"not a ledger of run {run_id}")
    text = attributes.get(LEDGER_ATTRIBUTE)
    if not isinstance(text, str):
        raise ValueError(f"the ledger span has no {LEDGER_ATTRIBUTE} attribute")
    record = ShardRecord.from_ledger(text)
    if record.run_id != run_id:
        raise ValueError(f"the ledger names run {record.run_id}, not {run_id}")
    return record


def totals(records: Sequence[ShardRecord]) -> dict[str, int]:
    """Span counts summed over shards."""
    keys = (
        "planned_spans",
        "sent_spans",
        "rejected_spans",
        "refused_final_spans",
        "failed_spans",
        "unsent_spans",
        "refused_attempt_spans",
    )
    return {k: sum(int(getattr(r, k)) for r in records) for k in keys}
