"""Per-hop accounting of a load: the same spans counted at every hop tracecheck can read.

Hops, in pipeline order (each hop's *expected* is what the hop before it passed on)::

    client        planned spans -> spans the generator sent (the rest fell behind: unsent)
    receiver      spans sent -> spans the collector acknowledged (its answers: refusals, errors)
    exporter      acknowledged -> otelcol_exporter_sent_spans (send failed, enqueue failed)
    tempo         exported -> tempo_distributor_spans_received_total (receiver refused)
    found         received -> the run's spans in Tempo by TraceQL (discarded, by reason)
    span_metrics  received -> span-metrics calls of the load's service in Prometheus

``samples`` (K traces read back by ID, span for span) sits beside ``found``; ``span_metrics``
beside it too (Tempo's distributor forwards every span it received to the metrics-generator,
also the ones the ingester then discards).

Each hop is polled until it **settles** or its deadline (counted from the end of the send)
passes: done as soon as it counted everything expected; otherwise settled when its count stopped
moving with nothing in flight, or when the hop's own loss counters explain the shortfall; else
reported unsettled at the deadline (what was missing is lost, as far as anyone can tell then).

Which numbers are exact (see :mod:`tracecheck.load.counters` for the counter hops):

* client, receiver: the generator's own tally and the collector's answers: exact;
* exporter, tempo: the components' counters count every sender: exact when they match, a
  bound when other senders added spans (kube-apiserver does in the local pipeline);
* found: exact (only the run's spans carry its run ID);
* span_metrics: exact per service (bound if another sender used the load's service name).

The verdict: the end-to-end loss (planned minus found) and span-metrics' shortfall, as a
percentage of the planned spans, must not exceed ``max_loss_pct``; every hop that lost spans is
FAIL when it does and WARN when it is tolerated, and the first one is named.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from tracecheck.load._deps import Backends, Clock, Settings, Status
from tracecheck.load.hops import (
    HopRun,
    client_hop,
    exporter_hop,
    found_hop,
    receiver_hop,
    samples_hop,
    span_metrics_hop,
    tempo_hop,
)
from tracecheck.load.ledger import ShardRecord
from tracecheck.load.sources import CounterSource, SpanMetrics
from tracecheck.load.verdict import (
    DEFAULT_OPTIONS,
    HOPS,
    SKIPPABLE,
    Accounting,
    AccountOptions,
    HopCount,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "HOPS",
    "SKIPPABLE",
    "AccountOptions",
    "Accounting",
    "HopCount",
    "account",
    "reconcile",
]


def account(
    settings: Settings,
    records: Sequence[ShardRecord],
    *,
    backends: Backends,
    clock: Clock,
    counters: CounterSource | None,
    span_metrics: SpanMetrics | None,
    span_metrics_error: str = "",
    options: AccountOptions = DEFAULT_OPTIONS,
    ledgers: int = 0,
    missing_shards: Sequence[int] = (),
    notes: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> Accounting:
    """Count the load of ``records`` (one per shard of one run) at every hop.

    ``counters`` reads the collector and Tempo (None: those hops are not measured), and
    ``span_metrics`` the load service's calls (baselines taken before the load, or as of its
    start for ``--account``). ``ledgers`` ledger spans went through the collector and Tempo
    with the load and are subtracted there. Deadlines run from now.
    """
    if not records:
        raise ValueError("nothing to account: no shard records")
    run = HopRun(
        settings, backends, tuple(records), options, clock, counters, span_metrics,
        span_metrics_error, ledgers, clock.monotonic(), progress or (lambda _: None),
    )  # fmt: skip
    # The verdict needs the total loss, known only at the end: grade the hops as if it were
    # over the limit, then once more when the total is known.
    run.over = True
    client = client_hop(run.records)
    receiver = receiver_hop(run, client.passed_on)
    exporter = exporter_hop(run, receiver.passed_on)
    tempo = tempo_hop(run, exporter.passed_on)
    found = found_hop(run, tempo.passed_on)
    client, receiver, exporter, tempo, found = reconcile([client, receiver, exporter, tempo, found])
    sm = span_metrics_hop(run, tempo.passed_on)
    hops = [client, receiver, exporter, tempo, found, sm]
    over = Accounting(run.run_id, run.records, tuple(hops), None, options.max_loss_pct).over_limit
    run.over = over
    hops = [_regrade(h, over) for h in hops]
    lost_before = sum(h.lost for h in (client, receiver, exporter, tempo, found))
    sample_hop, check = samples_hop(run, found, lost_before)
    if sample_hop is not None:
        hops.insert(5, sample_hop)
    return Accounting(
        run.run_id,
        run.records,
        tuple(hops),
        check,
        options.max_loss_pct,
        tuple(missing_shards),
        tuple(notes),
        clock.monotonic() - run.started,
    )


def reconcile(chain: list[HopCount]) -> list[HopCount]:
    """Correct the chain with the exact count at its end (the run's spans found in Tempo).

    A counter hop that had not settled by its deadline (an exporter queue still draining into
    a slow Tempo) reports the spans it had not yet passed on as lost. When more spans of the
    run were then found in Tempo than that hop passed on, those spans were late, not lost:
    the hop's loss shrinks by that many, and every hop after it expects what it passed on.
    """
    found = chain[-1]
    if found.hop != "found" or found.observed is None:
        return chain
    seen = found.observed
    out: list[HopCount] = []
    for h in chain:
        expected = out[-1].passed_on if out else h.expected
        lost = min(h.lost, expected)
        cause = h.cause
        if h.hop in ("exporter", "tempo") and lost > 0 and seen > expected - lost:
            late = min(lost, seen - (expected - lost))
            lost -= late
            cause = (
                f"{late:,} spans were still in flight at the hop's deadline and were found in "
                f"Tempo later (late, not lost)" + (f"; {cause}" if lost and cause else "")
            )
        if h.hop == "found":
            lost = max(0, expected - seen)
            cause = cause if lost else ""
        status = h.status
        if lost == 0 and status in (Status.FAIL, Status.WARN):
            status = Status.PASS
        out.append(replace(h, expected=expected, lost=lost, cause=cause, status=status))
    return out


def _regrade(h: HopCount, over: bool) -> HopCount:
    if h.status in (Status.FAIL, Status.WARN) and h.lost > 0:
        return replace(h, status=Status.FAIL if over else Status.WARN)
    return h
