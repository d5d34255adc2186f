"""A load's accounting as the :class:`~tracecheck.results.Report` every command renders.

One check per hop (``load.client``, ``load.receiver``, ... ``load.span_metrics``: PASS, WARN
for a tolerated loss, FAIL, ERROR when a backend could not be read, SKIP), plus the ledger's,
and tables: ``accounting`` (expected, observed, lost, loss %, basis, the first hop that lost,
why) and ``shards`` (what each sending process did). So ``--output table|json|junit|markdown``
work as for smoke, and the exit code comes from the one place that decides it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tracecheck.load._deps import CheckResult, Report, Status, __version__
from tracecheck.load.account import HOPS, Accounting, HopCount
from tracecheck.load.ledger import ShardRecord

__all__ = ["accounting_report", "shard_rows"]

_HINTS = {
    "client": "the generator could not keep its schedule: raise --concurrency, use --shards, "
    "or give it a quieter machine",
    "receiver": "the collector refused or failed requests: its memory_limiter (UNAVAILABLE, "
    "'data refused due to high memory usage'), its size limits, or it was unreachable",
    "exporter": "the collector could not hand spans on: sending queue full (enqueue failed) or "
    "the next hop refused or was down past the retries (send failed)",
    "tempo": "spans left the collector but Tempo did not count them: refused pushes, another "
    "Tempo, or the exporter's endpoint",
    "found": "Tempo received spans it does not return: discarded (live-traces limit, trace "
    "size), or not yet searchable (trace_idle_period, flush_check_period)",
    "samples": "a trace came back different or not at all",
    "span_metrics": "the metrics-generator did not count every span: span-metrics processor, "
    "ingestion slack, remote write to Prometheus",
}


def _check(h: HopCount, first: HopCount | None) -> CheckResult:
    detail = h.detail
    if h.cause and h.cause not in detail:
        detail += f"; {h.cause}"
    if first is h:
        detail = "first hop that lost spans: " + detail
    data: dict[str, Any] = {
        "expected": h.expected,
        "observed": h.observed,
        "lost": h.lost,
        "loss_pct": round(h.loss_pct, 3),
        "basis": h.basis,
        "settled": h.settled,
        "cause": h.cause,
        "counters": {k: round(v, 3) for k, v in h.counters.items()},
    }
    return CheckResult(
        name=f"load.{h.hop}",
        title=HOPS[h.hop],
        status=h.status,
        elapsed=h.elapsed_s,
        detail=detail,
        hint=_HINTS.get(h.hop, "") if h.status in (Status.FAIL, Status.ERROR) else "",
        hop=h.hop,
        data=data,
    )


def shard_rows(records: Sequence[ShardRecord]) -> list[dict[str, Any]]:
    return [
        {
            "shard": r.shard,
            "planned": r.planned_spans,
            "sent": r.attempted_spans,
            "acknowledged": r.sent_spans,
            "refused": r.refused_final_spans,
            "failed": r.failed_spans,
            "unsent": r.unsent_spans,
            "rate": round(r.target_rate, 1),
            "achieved": round(r.achieved_rate, 1),
            "max_lag_s": round(r.max_lag_s, 3),
        }
        for r in sorted(records, key=lambda r: r.shard)
    ]


def accounting_report(
    acc: Accounting,
    *,
    started_at: float,
    finished_at: float,
    target: Mapping[str, Any],
    command: str = "load",
    extra: Sequence[CheckResult] = (),
    tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Report:
    """The report of one accounted run; ``extra`` checks (the ledger's) go first."""
    first = acc.first_loss
    checks = [*extra, *(_check(h, first) for h in acc.hops)]
    summary = {
        "planned": acc.planned,
        "delivered": acc.delivered,
        "lost": acc.lost_total,
        "loss_pct": round(acc.loss_pct, 3),
        "max_loss_pct": acc.max_loss_pct,
        "first_loss": first.hop if first else "",
        "why": first.cause if first else "",
    }
    return Report(
        run_id=acc.run_id,
        trace_id="",
        started_at=started_at,
        finished_at=finished_at,
        results=tuple(checks),
        target=dict(target),
        tables={
            "summary": [summary],
            "accounting": acc.rows(),
            "shards": shard_rows(acc.records),
            **(tables or {}),
        },
        tool_version=__version__,
        command=command,
    )
