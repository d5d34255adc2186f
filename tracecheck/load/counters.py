"""The pipeline's own span counters around a load: the collector's and Tempo's self-metrics.

A counter hop compares how much a counter rose during the load with what the load put in. Those
counters count every sender, not only the load: in the local pipeline kube-apiserver exports to
the same collector, and both collectors export to the same Tempo. So a counter hop is

* **exact** when it rose by exactly the load's spans and no loss counter moved (nothing else
  sent in the window);
* a **bound** when it rose by more (``+N from other senders``): the load's own loss there is
  then judged from the hop's loss counters (refused, send failed, enqueue failed), which may
  also include other senders' losses, so the loss is an upper bound;
* short when it rose by less than the load's spans: at least that many of them were lost.

A counter that went *down* was reset (the process restarted during the load); it is read from
zero and the hop is a bound. Names are matched with or without ``_total`` (the collector's
reader configuration decides; :class:`~tracecheck.backends.exposition.Exposition`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tracecheck.load._deps import Exposition

__all__ = [
    "CollectorCounts",
    "TempoCounts",
    "collector_counts",
    "rise",
    "tempo_counts",
]

# The exporters that carry spans onward in the shipped configurations: otlp, otlp/<name>,
# otlphttp[/<name>]. Connectors (spanmetrics, servicegraph) are not exporters in these metrics.
DEFAULT_EXPORTERS = re.compile(r"otlp(http)?(/.*)?")


def rise(after: float, before: float) -> tuple[float, bool]:
    """(increase, was reset): a counter below its baseline restarted from 0."""
    if after >= before:
        return after - before, False
    return after, True


@dataclass(frozen=True, slots=True)
class CollectorCounts:
    """The collector counters a load is accounted with, at one moment."""

    accepted: float
    refused: float
    failed: float  # otelcol_receiver_failed_spans (collector >= 0.132): internal errors
    sent: float
    send_failed: float
    enqueue_failed: float
    queue_size: float  # batches waiting in the exporters' sending queues (a gauge)
    exporters: tuple[str, ...]  # the exporters summed

    def since(self, base: CollectorCounts) -> tuple[dict[str, float], bool]:
        """Increases of every counter since ``base``; whether any counter was reset."""
        out: dict[str, float] = {}
        reset = False
        for name in ("accepted", "refused", "failed", "sent", "send_failed", "enqueue_failed"):
            value, was_reset = rise(getattr(self, name), getattr(base, name))
            out[name] = value
            reset = reset or was_reset
        out["queue_size"] = self.queue_size
        return out, reset


def collector_counts(
    exp: Exposition, *, receiver: str = "otlp", exporter: str = ""
) -> CollectorCounts:
    """Span counters of ``receiver`` (all transports) and of ``exporter`` (every OTLP exporter
    when empty) from one scrape of the collector's self-metrics."""
    rec = {"receiver": receiver} if receiver else {}
    pattern: re.Pattern[str] = re.compile(re.escape(exporter)) if exporter else DEFAULT_EXPORTERS
    ex = {"exporter": pattern}
    names = sorted(
        {
            s.labels.get("exporter", "")
            for s in exp.select("otelcol_exporter_sent_spans", ex)
            + exp.select("otelcol_exporter_send_failed_spans", ex)
        }
    )
    return CollectorCounts(
        accepted=exp.sum("otelcol_receiver_accepted_spans", rec),
        refused=exp.sum("otelcol_receiver_refused_spans", rec),
        failed=exp.sum("otelcol_receiver_failed_spans", rec),
        sent=exp.sum("otelcol_exporter_sent_spans", ex),
        send_failed=exp.sum("otelcol_exporter_send_failed_spans", ex),
        enqueue_failed=exp.sum("otelcol_exporter_enqueue_failed_spans", ex),
        queue_size=exp.sum("otelcol_exporter_queue_size", {**ex, "data_type": "traces"})
        if exp.has("otelcol_exporter_queue_size", {"data_type": "traces"})
        else exp.sum("otelcol_exporter_queue_size", ex),
        exporters=tuple(names),
    )


@dataclass(frozen=True, slots=True)
class TempoCounts:
    """Tempo 2.9's ingest counters (the stand-in exposes the same names), at one moment."""

    received: float  # tempo_distributor_spans_received_total
    accepted: float  # tempo_receiver_accepted_spans (no _total)
    refused: float  # tempo_receiver_refused_spans
    discarded: Mapping[str, float] = field(default_factory=dict)  # per reason
    generator_discarded: Mapping[str, float] = field(default_factory=dict)  # per reason

    def since(self, base: TempoCounts) -> tuple[dict[str, float], bool]:
        out: dict[str, float] = {}
        reset = False
        for name in ("received", "accepted", "refused"):
            value, was_reset = rise(getattr(self, name), getattr(base, name))
            out[name] = value
            reset = reset or was_reset
        for prefix, now, then in (
            ("discarded", self.discarded, base.discarded),
            ("generator_discarded", self.generator_discarded, base.generator_discarded),
        ):
            for reason, value in now.items():
                up, was_reset = rise(value, then.get(reason, 0.0))
                reset = reset or was_reset
                if up:
                    out[f"{prefix}:{reason}"] = up
        return out, reset


def tempo_counts(exp: Exposition, *, tenant: str = "") -> TempoCounts:
    """Tempo's counters from one scrape; ``tenant`` narrows the per-tenant ones."""
    t = {"tenant": tenant} if tenant else {}
    discarded: dict[str, float] = {}
    for s in exp.select("tempo_discarded_spans_total", t):
        reason = s.labels.get("reason", "")
        discarded[reason] = discarded.get(reason, 0.0) + s.value
    generator: dict[str, float] = {}
    for s in exp.select("tempo_metrics_generator_spans_discarded_total", t):
        reason = s.labels.get("reason", "")
        generator[reason] = generator.get(reason, 0.0) + s.value
    return TempoCounts(
        received=exp.sum("tempo_distributor_spans_received_total", t),
        accepted=exp.sum("tempo_receiver_accepted_spans"),
        refused=exp.sum("tempo_receiver_refused_spans"),
        discarded=discarded,
        generator_discarded=generator,
    )
