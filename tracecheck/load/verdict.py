"""The values of an accounting and how a hop settles.

:class:`HopCount` is one row of the accounting table (expected, observed, lost, basis, why),
:class:`Accounting` the whole run with its verdict, and :func:`settle` the polling rule every hop
uses: done as soon as the hop counted everything expected; settled when its count stopped moving
for ``quiet`` seconds while nothing is in flight (or its own loss counters explain the
shortfall); else unsettled at its deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tracecheck.load._deps import BackendError, Clock, ExitCode, Status
from tracecheck.load.ledger import ShardRecord
from tracecheck.load.readback import SampleCheck

__all__ = [
    "DEFAULT_OPTIONS",
    "HOPS",
    "SKIPPABLE",
    "AccountOptions",
    "Accounting",
    "HopCount",
    "Reading",
    "Settled",
    "settle",
]

HOPS: Mapping[str, str] = {
    "client": "client -> collector: spans sent by the generator",
    "receiver": "collector receiver: spans acknowledged",
    "exporter": "collector exporter: spans sent on",
    "tempo": "Tempo distributor: spans received",
    "found": "Tempo: the run's spans found by TraceQL",
    "samples": "Tempo: sampled traces read back by ID",
    "span_metrics": "Prometheus: span-metrics calls of the load's service",
}
#: What ``--skip`` accepts: the counter groups and the slower downstream hops.
SKIPPABLE = ("collector", "tempo", "found", "samples", "span-metrics")


@dataclass(frozen=True, slots=True)
class AccountOptions:
    max_loss_pct: float = 0.0
    samples: int = 5  # traces read back by ID
    skip: frozenset[str] = frozenset()  # names from SKIPPABLE
    receiver: str = "otlp"  # the collector receiver's label
    exporter: str = ""  # the collector exporter's label ("": every otlp* exporter)
    quiet_s: float = 2.0  # a counter unchanged this long, nothing queued: settled


DEFAULT_OPTIONS = AccountOptions()


@dataclass(frozen=True, slots=True)
class HopCount:
    """One hop's row of the accounting table."""

    hop: str
    expected: int
    observed: int | None  # None: not measured (skipped or unreadable)
    lost: int
    basis: str  # exact | bound | "not measured"
    status: Status
    settled: bool = True
    elapsed_s: float = 0.0
    detail: str = ""
    cause: str = ""  # why spans were lost here, when known
    counters: Mapping[str, float] = field(default_factory=dict)
    note: str = ""  # why a count is a bound (other senders, Prometheus scrapes, a reset)

    @property
    def title(self) -> str:
        return HOPS[self.hop]

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.lost / self.expected if self.expected else 0.0

    @property
    def passed_on(self) -> int:
        return self.expected - self.lost


@dataclass(frozen=True, slots=True)
class Accounting:
    run_id: str
    records: tuple[ShardRecord, ...]
    hops: tuple[HopCount, ...]
    samples: SampleCheck | None
    max_loss_pct: float
    missing_shards: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()
    elapsed_s: float = 0.0

    @property
    def planned(self) -> int:
        return sum(r.planned_spans for r in self.records)

    def hop(self, name: str) -> HopCount | None:
        return next((h for h in self.hops if h.hop == name), None)

    @property
    def delivered(self) -> int:
        """Spans that reached the last hop of the chain that was measured."""
        chain = [h for h in self.hops if h.hop not in ("span_metrics", "samples")]
        return chain[-1].passed_on if chain else 0

    @property
    def lost_total(self) -> int:
        return self.planned - self.delivered

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.lost_total / self.planned if self.planned else 0.0

    @property
    def first_loss(self) -> HopCount | None:
        return next((h for h in self.hops if h.lost > 0), None)

    @property
    def over_limit(self) -> bool:
        """Whether the loss exceeds ``max_loss_pct`` (end to end, or in span-metrics)."""
        planned = self.planned or 1
        sm = self.hop("span_metrics")
        sm_pct = 100.0 * sm.lost / planned if sm is not None else 0.0
        return self.loss_pct > self.max_loss_pct or sm_pct > self.max_loss_pct

    @property
    def exit_code(self) -> int:
        statuses = {h.status for h in self.hops}
        if Status.ERROR in statuses:
            return int(ExitCode.BACKEND)
        if Status.FAIL in statuses or self.missing_shards:
            return int(ExitCode.CHECK_FAILED)
        return int(ExitCode.OK)

    def rows(self) -> list[dict[str, Any]]:
        """The accounting table."""
        first = self.first_loss
        out = []
        for h in self.hops:
            out.append(
                {
                    "hop": h.hop,
                    "expected": h.expected,
                    "observed": h.observed,
                    "lost": h.lost,
                    "loss_pct": round(h.loss_pct, 3),
                    "basis": h.basis,
                    "first_loss": "<- first" if first is not None and h is first else "",
                    "note": h.cause or h.note,
                }
            )
        return out


@dataclass(frozen=True, slots=True)
class Reading:
    """One poll of a hop: ``observed`` (load's spans), whether it is complete, whether it may be
    called final when it stops changing, and what changing means (``key``)."""

    observed: int
    done: bool
    can_settle: bool
    key: tuple[float, ...]
    counters: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Settled:
    reading: Reading | None
    settled: bool
    error: str
    elapsed: float


def settle(
    read: Callable[[], Reading],
    *,
    until: float,
    clock: Clock,
    quiet: float,
    seen: Callable[[Reading], None] | None = None,
) -> Settled:
    """Poll ``read`` until done, or unchanged for ``quiet`` s while it may settle, or ``until``
    (a monotonic time) passes. A BackendError is kept and polling goes on until ``until``."""
    start = clock.monotonic()
    last: Reading | None = None
    stable_since = start
    interval = 0.1
    error = ""
    while True:
        try:
            r = read()
        except BackendError as exc:
            error = str(exc)
        else:
            error = ""
            if seen is not None:
                seen(r)
            now = clock.monotonic()
            if r.done:
                return Settled(r, True, "", now - start)
            if last is None or r.key != last.key:
                stable_since = now
            elif r.can_settle and now - stable_since >= quiet:
                return Settled(r, True, "", now - start)
            last = r
        now = clock.monotonic()
        if now >= until:
            return Settled(last, False, error, now - start)
        clock.sleep(min(interval, until - now))
        interval = min(interval * 1.6, 1.0)
