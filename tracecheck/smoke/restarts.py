"""Span-metrics that stay right when Tempo's metrics-generator restarts before or during a run.

What a restart does to the series tracecheck watches (docs/reference/tempo.md §11.3, §18.3):

* nothing survives it: every counter starts again from 0 under the **same labels**
  (``__metrics_gen_instance`` is the host name, kept by a StatefulSet), so a counter whose new
  value equals the old one shows no drop: an *equal-value reset*, invisible to "a drop is a
  reset" arithmetic;
* the first collection of each new series writes a 0 stamped at the end of the previous
  minute; when the old process wrote that series after that instant, Prometheus refuses the
  **whole** remote-write request (400, out of order), and the generator does not retry a 4xx:
  that collection's samples and **exemplars** are lost for good; counters show up one
  collection later, exemplars never;
* spans received but not yet collected when the old process stopped are lost (no collection
  at shutdown).

How the checks stay right, without any per-run label value:

1. **Known restart times.** Tempo's ``process_start_time_seconds`` (monolithic Tempo, or the
   generator behind ``tempo.url``: used only when that ``/metrics`` carries generator series) is
   read at the baseline and while polling. A series' sample stamped at or after a start time,
   whose previous sample is before it, starts a new counter: its value is all increase
   (:func:`increase`). Stamps and start time come from the same clock (Tempo's).
2. **Re-probes.** A new synthetic trace (same run ID, new trace ID) is sent when the data of the
   latest one may be lost: the generator restarted after the baseline (its spans may not have
   been collected), or its remote write dropped a batch (``samples_failed`` /
   ``exemplars_failed`` rose: the exemplar went with it). After a restart, the re-probe for a
   dropped batch waits until no batch can be refused for the restart any more (the first
   minute that starts after the new process: :meth:`Restarts.safe_from`), since the next
   collections may be refused too. At most :data:`MAX_RESENDS`; a re-probe gives the checks
   their deadline again, counted from its send, at most once over. A re-probe's data has
   passed no hop: once one is wanted, a component of a hop the run's trace had passed that
   stops answering (the collector) ends the checks waiting for it as blocked, instead of
   letting them wait out their deadline.
3. **Ambiguous gaps.** Without a start time (Tempo's ``/metrics`` unreadable or not the
   generator's), a series whose samples stop for more than :data:`GAP_FACTOR` times its own
   cadence and resume at a value not below the last one may be a fresh counter or a
   continuing one. Then the check measures again from a fresh baseline taken after the gap,
   with a new trace (the lead's re-probe), instead of guessing.

A check then accepts any trace of the run: span-metrics must rise by the spans of one to all
of the traces sent (a lost trace counts nothing), exemplars may carry any of their trace IDs.
"""

from __future__ import annotations

import itertools
import math
import statistics
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from tracecheck.backends.prometheus import SeriesKey
from tracecheck.errors import BackendError
from tracecheck.smoke.engine import Sent
from tracecheck.smoke.synth import RUN_ID_ATTRIBUTE, SyntheticTrace, build_trace

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends.prometheus import PromQuerier
    from tracecheck.smoke.engine import SmokeContext

__all__ = [
    "GAP_FACTOR",
    "MAX_RESENDS",
    "Increase",
    "Restarts",
    "SeriesState",
    "Snapshot",
    "increase",
    "restarts",
    "snapshot",
]

#: How far back a baseline looks (Prometheus's default lookback).
LOOKBACK_S = 300
#: A pause longer than this many cadences is a writer outage: one missed collection (a
#: refused batch, a restart) makes a pause of two cadences.
GAP_FACTOR = 1.5
#: Cadence assumed for a series with fewer than two samples: the generator's default
#: collection interval (docs/reference/tempo.md §11.3).
DEFAULT_CADENCE = 15.0
#: New traces a run sends at most after its first.
MAX_RESENDS = 2
#: Seconds a reading of Tempo's /metrics stays fresh for the three metrics checks.
REFRESH_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class SeriesState:
    """One series at the baseline: its last sample (unix seconds, value) and cadence (the
    median spacing of its samples in the lookback; None with fewer than two)."""

    last: tuple[float, float]
    cadence: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    selector: str
    taken_at: float  # tracecheck's clock, unix seconds
    series: Mapping[SeriesKey, SeriesState]


def _key(labels: Mapping[str, str]) -> SeriesKey:
    return frozenset(labels.items())


def snapshot(
    prom: PromQuerier, selector: str, *, now: float, timeout: float | None = None
) -> Snapshot:
    """The last sample and cadence of every series matching ``selector``."""
    result = prom.query(f"{selector}[{LOOKBACK_S}s]", timeout=timeout)
    series = {}
    for s in result.series:
        if not s.points:
            continue
        times = [t for t, _ in s.points[-12:]]
        gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
        series[_key(s.labels)] = SeriesState(
            s.points[-1], statistics.median(gaps) if gaps else None
        )
    return Snapshot(selector, now, series)


@dataclass(frozen=True, slots=True)
class Increase:
    """How much the series rose after a baseline. ``ambiguous`` lists the series (their
    labels, one line each) where a writer outage without a known restart leaves a fresh counter
    and a continuing one indistinguishable; ``restarted`` counts series that crossed a known
    restart."""

    per_series: Mapping[SeriesKey, float]
    restarted: int = 0
    ambiguous: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        return math.fsum(self.per_series.values())


def increase(
    prom: PromQuerier,
    base: Snapshot,
    *,
    now: float,
    restarts: Sequence[float] = (),
    timeout: float | None = None,
) -> Increase:
    """Per series, how much it rose after ``base``, sample by sample.

    A sample lower than the one before is a reset (its value is all increase), as in PromQL's
    ``increase()`` but without extrapolation. So is the first sample at or after a known
    restart time whose predecessor is before it, even when its value is not lower (an
    equal-value reset). A series new since the baseline starts from 0.
    """
    window = max(60, math.ceil(now - base.taken_at) + 60)
    result = prom.query(f"{base.selector}[{window}s]", timeout=timeout)
    starts = sorted(restarts)
    per: dict[SeriesKey, float] = {}
    restarted = 0
    ambiguous: list[str] = []
    for s in result.series:
        key = _key(s.labels)
        state = base.series.get(key)
        t_prev, prev = state.last if state is not None else (-math.inf, 0.0)
        cadence = (state.cadence if state is not None else None) or DEFAULT_CADENCE
        rose = 0.0
        crossed = False
        gap = False
        for t, v in s.points:
            if t <= (state.last[0] if state is not None else -math.inf):
                continue
            if any(t_prev < r <= t for r in starts):
                rose += v
                crossed = True
            elif v < prev:
                rose += v
            else:
                # A pause only leaves a doubt when the counter stood above 0: from 0 (a new
                # series' first zero) a fresh and a continuing counter rise alike.
                paused = math.isfinite(t_prev) and t - t_prev > GAP_FACTOR * cadence
                if paused and prev > 0 and not crossed:
                    gap = True
                rose += v - prev
            t_prev, prev = t, v
        per[key] = rose
        restarted += crossed
        if gap:
            shown = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "__name__")
            ambiguous.append(f"{{{shown}}}")
    return Increase(per, restarted, tuple(ambiguous))


# -- the run's metrics-generator and its re-probes ----------------------------------------------


@dataclass
class Restarts:
    """Shared by the three metrics checks of one run (``ctx.metrics_state["restarts"]``)."""

    #: Every trace sent for the metrics checks, with when it was sent; [0] is the run's.
    traces: list[tuple[SyntheticTrace, Sent]] = field(default_factory=list)
    #: Distinct process start times of the generator seen during the run (Tempo's clock).
    starts: list[float] = field(default_factory=list)
    #: The start time at the baseline (None: unknown).
    start_at_baseline: float | None = None
    #: Whether process_start_time_seconds is the generator's (its /metrics has generator series).
    known: bool = False
    #: samples_failed + exemplars_failed of the generator when the latest trace was sent.
    dropped_at_send: float | None = None
    dropped_now: float | None = None
    #: Re-probes tried (sent or not), at most MAX_RESENDS.
    resends: int = 0
    #: Re-probes tried for a restart (one per restart seen, whichever check tries it first).
    restart_claims: int = 0
    #: Why each re-probe that was sent was sent (in the order of ``traces[1:]``).
    reasons: list[str] = field(default_factory=list)
    #: Re-probes that could not be sent: (the error, why it was wanted).
    unsent: list[tuple[str, str]] = field(default_factory=list)
    #: The checks that now wait for a re-probe's data, which has passed no hop yet: ``*`` after
    #: a restart (every metrics check), a check's name when only its data was lost (the
    #: exemplars check after a dropped batch, a check that measured from a fresh baseline).
    waiting: set[str] = field(default_factory=set)
    #: Monotonic time a re-probe waits for (the end of the window in which the generator's
    #: batches can still be refused after its restart); None: none waiting.
    scheduled: float | None = None
    last_read_mono: float = -1e9
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self, ctx: SmokeContext, *, force: bool = False) -> None:
        """Read Tempo's /metrics (at most every REFRESH_EVERY s) and note a new start time or
        dropped batches."""
        now = ctx.clock.monotonic()
        with self.lock:
            if not force and now - self.last_read_mono < REFRESH_EVERY:
                return
            self.last_read_mono = now
        try:
            exp = ctx.tempo().self_metrics(timeout=min(2.0, ctx.settings.tempo.timeout))
        except BackendError:
            return  # down or restarting: the next read will tell
        from tracecheck.diagnose.facts import SINGLE_TENANT, tempo_metric_facts

        facts = tempo_metric_facts(exp, ctx.settings.tempo.tenant or SINGLE_TENANT)
        start = facts["process_start"]
        dropped = math.fsum(r.failed + r.exemplars_failed for r in facts["remote_write"])
        with self.lock:
            self.known = bool(facts["generator"]) and start is not None
            if start is not None and start not in self.starts:
                self.starts.append(start)
                if self.start_at_baseline is None:
                    self.start_at_baseline = start
            self.dropped_now = dropped
            if self.dropped_at_send is None:
                self.dropped_at_send = dropped

    def restart_times(self) -> list[float]:
        with self.lock:
            return list(self.starts) if self.known else []

    def restarted_during_run(self) -> bool:
        with self.lock:
            return self.known and len(self.starts) > 1

    def why_resend(self) -> str:
        """Why the latest trace's data may be lost ("" if no reason to think so)."""
        with self.lock:
            return self._cause()[1]

    def _cause(self) -> tuple[str, str]:
        """(``restart``, ``dropped`` or "", why); the caller holds :attr:`lock`."""
        if self.known and len(self.starts) > 1 + self.restart_claims:
            return "restart", (
                f"the metrics-generator restarted at {_t(self.starts[-1])} "
                "(process_start_time_seconds): spans it had not yet collected are lost"
            )
        if (
            self.dropped_now is not None
            and self.dropped_at_send is not None
            and self.dropped_now > self.dropped_at_send
        ):
            return "dropped", (
                "the metrics-generator's remote write dropped "
                f"{self.dropped_now - self.dropped_at_send:g} samples/exemplars after the "
                "latest send (a 4xx, e.g. out-of-order zeros after a restart): its exemplar "
                "went with them"
            )
        return "", ""

    def safe_from(self) -> float | None:
        """Unix time (Tempo's clock) from which the generator's batches can no longer be
        refused for its restart: a new series' 0 sample is stamped at the end of the minute
        before its collection, so once a collection falls in a minute that started after the
        new process did (plus the one second Tempo subtracts), no 0 can be older than a
        sample the old process wrote. None: no restart known."""
        with self.lock:
            if not self.known or not self.starts:
                return None
            latest = max(self.starts)
        return math.ceil((latest + 1.0) / 60.0) * 60.0

    def step(self, ctx: SmokeContext, check: str, *, exemplars: bool) -> None:
        """One round between polls: read the generator; re-probe when the latest trace's data
        may be lost. A restart re-probes at once (spans not yet collected are gone; counters
        of a new trace show up even if a batch is refused). A refused batch re-probes only for
        the exemplars check (counters are cumulative and recover at the next collection) and,
        after a restart, only once no batch can be refused for it any more (:meth:`safe_from`),
        so the new trace's exemplar is not refused in turn."""
        self.refresh(ctx)
        with self.lock:
            kind, why = self._cause()
        if not kind:
            return
        restarted = kind == "restart"
        if not (exemplars or restarted):
            return
        waiter = "*" if restarted else check
        if not restarted:
            safe = self.safe_from()
            now = ctx.clock.time()
            if safe is not None and now < safe:
                with self.lock:
                    self.waiting.add(waiter)
                    self.scheduled = ctx.clock.monotonic() + (safe - now)
                return
        self.resend(ctx, why, check=waiter, answers=kind)

    def resend(
        self, ctx: SmokeContext, reason: str, *, check: str = "*", answers: str = ""
    ) -> SyntheticTrace | None:
        """Send a new trace (same run ID, new trace ID) unless MAX_RESENDS were tried; the
        trace, or None. From then on ``check`` (``*``: every metrics check) waits for the
        re-probe's data, which must pass every hop again: a collector that stopped after the
        run's trace passed it blocks the check, whether or not this send got through. A send
        that fails gives no deadline extension and is told in :meth:`note`.

        ``answers``: the cause (``restart`` or ``dropped``) this re-probe answers. The three
        checks poll in parallel and see the same cause at once; the first to claim it here
        sends, and the others find it answered (one restart must not use up every re-probe,
        leaving none for a batch its restart makes the generator drop)."""
        with self.lock:
            self.waiting.add(check)
            if self.resends >= MAX_RESENDS or not self.traces:
                return None
            if answers and self._cause()[0] != answers:
                return None  # another check answered it a moment ago
            if answers == "restart":
                self.restart_claims += 1
            self.resends += 1
            self.dropped_at_send = self.dropped_now
            base = self.traces[0][0]
            n = self.resends
        trace = _retrace(base, ctx.seed + n, int(ctx.clock.time() * 1e9))
        try:
            ctx.collector().export(
                trace.to_otlp(),
                protocol=ctx.settings.collector.protocol,
                timeout=ctx.settings.deadlines.send,
            )
        except BackendError as exc:
            with self.lock:
                self.unsent.append((str(exc), reason))
                self.scheduled = None
            return None
        sent = Sent(ctx.clock.monotonic(), ctx.clock.time())
        with self.lock:
            self.traces.append((trace, sent))
            self.reasons.append(reason)
            self.scheduled = None
        return trace

    def waits_for_reprobe(self, check: str) -> bool:
        """Whether ``check`` now waits for a re-probe's data (see :attr:`waiting`)."""
        with self.lock:
            return "*" in self.waiting or check in self.waiting

    def extension(self, deadline: float) -> float:
        """Seconds added to the metrics checks' deadlines: a re-probe gets the deadline again,
        counted from its send, at most once over."""
        with self.lock:
            if not self.traces:
                return 0.0
            first, last = self.traces[0][1].mono, self.traces[-1][1].mono
            if self.scheduled is not None:
                last = max(last, self.scheduled)
        return min(deadline, max(0.0, last - first))

    def trace_ids(self) -> list[bytes]:
        with self.lock:
            return [t.trace_id for t, _ in self.traces]

    def count(self) -> int:
        with self.lock:
            return len(self.traces)

    def note(self) -> str:
        """What happened, for a check's detail ("" when nothing did)."""
        with self.lock:
            parts = []
            if self.known and len(self.starts) > 1:
                parts.append(
                    "metrics-generator restarted at "
                    + ", ".join(_t(s) for s in self.starts[1:])
                    + " (process_start_time_seconds)"
                )
            if len(self.traces) > 1:
                ids = ", ".join(t.trace_id_hex for t, _ in self.traces[1:])
                parts.append(f"re-probed with trace {ids} ({'; '.join(self.reasons)})")
            if self.unsent:
                error, reason = self.unsent[-1]
                tries = f"{len(self.unsent)} re-probes" if len(self.unsent) > 1 else "a re-probe"
                parts.append(f"{tries} could not be sent ({error}), wanted because {reason}")
        return "; ".join(parts)


def restarts(ctx: SmokeContext) -> Restarts:
    """The run's :class:`Restarts` (created on first use, with the run's trace)."""
    with ctx._lock:
        state = ctx.metrics_state.get("restarts")
        if not isinstance(state, Restarts):
            state = Restarts()
            ctx.metrics_state["restarts"] = state
    with state.lock:
        if not state.traces and ctx.trace is not None and ctx.sent is not None:
            state.traces.append((ctx.trace, ctx.sent))
    return state


def _retrace(base: SyntheticTrace, seed: int, end_ns: int) -> SyntheticTrace:
    """A new synthetic trace with ``base``'s run ID (search by run ID finds every trace of the
    run) and services: new seed, new IDs, same span names (so no new series)."""
    fresh = build_trace(
        seed=seed,
        end_ns=end_ns,
        client_service=base.client_service,
        server_service=base.server_service,
    )
    spans = tuple(
        replace(s, attributes={**s.attributes, RUN_ID_ATTRIBUTE: base.run_id}) for s in fresh.spans
    )
    return replace(fresh, run_id=base.run_id, spans=spans)


def _t(ts: float) -> str:
    from tracecheck.diagnose.hops import fmt_time

    return fmt_time(ts)
