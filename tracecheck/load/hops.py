"""Each hop of the accounting: what it expects, where it reads, when it has settled, why it lost.

The functions run in pipeline order; each takes what the hop before it passed on as its
``expected`` (see :mod:`tracecheck.load.account` for the chain and which hops are exact).

Why one module (about 630 lines): the seven hops share one state (:class:`HopRun`: deadlines
from the end of the send, the ledger spans to subtract, the counter source) and one set of rules
(what settles a hop, when a count is exact or a bound, how a cause is worded); kept together,
the whole chain reads top to bottom, and a rule changed for one hop is seen beside the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tracecheck.load._deps import BackendError, Backends, Clock, Settings, Status
from tracecheck.load.ledger import ShardRecord, totals
from tracecheck.load.readback import SampleCheck, choose_samples, read_back
from tracecheck.load.sources import CounterSource, SpanMetrics, found_count
from tracecheck.load.verdict import AccountOptions, HopCount, Reading, settle

__all__ = [
    "HopRun",
    "client_hop",
    "counter_hop",
    "exporter_hop",
    "found_hop",
    "receiver_cause",
    "receiver_hop",
    "samples_hop",
    "span_metrics_hop",
    "tempo_hop",
]


def _status(lost: int, over: bool) -> Status:
    if lost <= 0:
        return Status.PASS
    return Status.FAIL if over else Status.WARN


def _memory_limiter(message: str) -> str:
    return " (the collector's memory_limiter)" if "memory" in message.lower() else ""


def client_hop(records: Sequence[ShardRecord]) -> HopCount:
    t = totals(records)
    planned, unsent = t["planned_spans"], t["unsent_spans"]
    attempted = planned - unsent
    rate = sum(r.target_rate for r in records)
    achieved = sum(r.sending_rate for r in records)
    lag = max((r.max_lag_s for r in records), default=0.0)
    detail = (
        f"{attempted:,} of {planned:,} planned spans sent at {achieved:,.0f} spans/s "
        f"(target {rate:,.0f}); max lag {lag:.3f} s"
    )
    cause = (
        f"the generator fell behind: {unsent:,} spans never sent (max lag {lag:.2f} s); more "
        "--concurrency or --shards"
        if unsent
        else ""
    )
    return HopCount(
        "client", planned, attempted, unsent, "exact", Status.PASS, detail=detail, cause=cause
    )


def receiver_cause(records: Sequence[ShardRecord]) -> str:
    parts = []
    refusals: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in records:
        for code, spans in r.refusals.items():
            refusals[code] = refusals.get(code, 0) + spans
        for cause, n in r.errors.items():
            errors[cause] = errors.get(cause, 0) + n
    message = next((m for r in records for m in r.messages), "")
    for code, spans in sorted(refusals.items()):
        parts.append(f"refused {code} ({spans:,} spans in refused attempts)")
    if parts and message:
        parts[-1] += f": {message}{_memory_limiter(message)}"
    for cause, n in sorted(errors.items()):
        parts.append(f"failed: {cause} x{n:,}")
    rejected = sum(r.rejected_spans for r in records)
    if rejected:
        parts.append(f"partial_success rejected {rejected:,}")
    return "; ".join(parts)


def counter_hop(
    hop: str,
    expected: int,
    raw: float,
    signals: float,
    *,
    ledgers: int,
    exact_source: bool,
    reset: bool,
    signal_names: str,
) -> tuple[int, int, str, str]:
    """(observed, lost, basis, note) of a counter hop that counts every sender.

    ``raw`` is the counter's rise, ``ledgers`` the ledger spans in it, ``signals`` the rise of
    the hop's loss counters (which count every sender's losses too).
    """
    # The ledger spans travel with the load and may be lost with it: never below zero.
    observed = max(0, round(raw) - ledgers)
    excess = observed - expected
    signals_i = round(signals)
    if excess >= 0:
        lost = min(signals_i, expected)
        exact = exact_source and excess == 0 and signals_i == 0 and not reset
        basis = "exact" if exact else "bound"
        note = f"+{excess:,} from other senders" if excess > 0 else ""
        if lost:
            note += (", " if note else "") + f"{signal_names} +{signals_i:,} (all senders)"
    else:
        lost = min(expected, max(-excess, signals_i))
        # Exact when the loss counters account for the shortfall; else other senders may hide
        # more of it: a lower bound.
        explained = signals_i in (-excess, -excess + ledgers)
        basis = "exact" if exact_source and not reset and explained else "bound"
        note = f"{-excess:,} short" + (f"; {signal_names} +{signals_i:,}" if signals_i else "")
    if reset:
        note += (", " if note else "") + "a counter was reset (the process restarted)"
    if not exact_source:
        note += (", " if note else "") + "from Prometheus scrapes (all instances)"
    return observed, lost, basis, note


@dataclass
class HopRun:
    """State of one accounting pass."""

    settings: Settings
    backends: Backends
    records: tuple[ShardRecord, ...]
    options: AccountOptions
    clock: Clock
    counters: CounterSource | None
    span_metrics: SpanMetrics | None
    span_metrics_error: str
    ledgers: int
    started: float  # monotonic: end of the send
    progress: Callable[[str], None]
    over: bool = False
    hops: list[HopCount] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def until(self, deadline: float) -> float:
        return self.started + deadline

    @property
    def counter_deadline(self) -> float:
        """Counter hops: Prometheus history lags the counters by up to a scrape interval."""
        exact = self.counters is None or self.counters.exact
        return self.settings.deadlines.trace_by_id + (0.0 if exact else 30.0)

    @property
    def run_id(self) -> str:
        return self.records[0].run_id

    def fresh(self, group: str) -> bool:
        """Whether the counters of ``group`` were read after the run ended (and its ledgers
        were sent): always for a live scrape, after the next scrape for Prometheus history."""
        if self.counters is None:
            return False
        end = max(r.finished_at for r in self.records) + 1.0
        return self.counters.fresh(group, end)

    def quiet(self, group: str) -> float:
        """How long a counter of ``group`` must stand still to count as settled: the option's
        quiet time, plus one reading interval of the source (a Prometheus scrape interval), so
        that at least one later reading confirmed it."""
        source = 0.0 if self.counters is None else self.counters.resolution(group)
        return self.options.quiet_s + source

    def window(self) -> tuple[float, float]:
        # Spans start 10 ms before their request is sent: a little margin before the start.
        start = min(r.started_at for r in self.records) - 5.0
        return start, self.clock.time() + 1.0


def _unmeasured(hop: str, expected: int, why: str, status: Status = Status.SKIP) -> HopCount:
    return HopCount(hop, expected, None, 0, "not measured", status, detail=why)


def receiver_hop(run: HopRun, expected: int) -> HopCount:
    t = totals(run.records)
    acknowledged = t["sent_spans"]
    lost = expected - acknowledged
    cause = receiver_cause(run.records) if lost else ""
    detail = f"{acknowledged:,} acknowledged"
    counters: dict[str, float] = {}
    refused_att = t["refused_attempt_spans"]
    if refused_att:
        detail += f"; {refused_att:,} spans in refused attempts"
    status = _status(lost, run.over)
    elapsed = 0.0
    if run.counters is not None and "collector" not in run.options.skip:
        want = acknowledged + run.ledgers

        def read() -> Reading:
            c = run.counters.collector()  # type: ignore[union-attr]
            fresh = run.fresh("collector")
            return Reading(
                round(c["accepted"]), fresh and c["accepted"] >= want, fresh, (c["accepted"],), c
            )

        out = settle(
            read, until=run.until(run.counter_deadline), clock=run.clock, quiet=run.options.quiet_s
        )
        elapsed = out.elapsed
        if out.reading is not None:
            c = out.reading.counters
            counters = dict(c)
            accepted = round(c["accepted"]) - run.ledgers
            detail += (
                f"; collector counted accepted +{accepted:,}, refused "
                f"+{c['refused'] + c.get('failed', 0.0):,.0f}"
            )
            if accepted > acknowledged:
                detail += f" (+{accepted - acknowledged:,} from other senders)"
            elif accepted < acknowledged and run.counters.exact:
                detail += (
                    " (fewer than it acknowledged: is the metrics URL the collector the load "
                    f"was sent to? {run.counters.where})"
                )
                status = Status.WARN if status is Status.PASS else status
        elif out.error:
            detail += f"; collector counters unreadable: {out.error}"
    return HopCount(
        "receiver",
        expected,
        acknowledged,
        lost,
        "exact",
        status,
        elapsed_s=elapsed,
        detail=detail,
        cause=cause,
        counters=counters,
    )


def exporter_hop(run: HopRun, expected: int) -> HopCount:
    if run.counters is None or "collector" in run.options.skip:
        return _unmeasured(
            "exporter",
            expected,
            "skipped" if "collector" in run.options.skip else "no counter source",
        )
    want = expected + run.ledgers
    quiet = run.options.quiet_s

    def read() -> Reading:
        c = run.counters.collector()  # type: ignore[union-attr]
        out = c["sent"] + c["send_failed"] + c["enqueue_failed"]
        queued = c.get("queue_size", 0.0)
        fresh = run.fresh("collector")
        run.progress(f"collector exporter: sent +{c['sent']:,.0f} of {want:,}, queue {queued:.0f}")
        return Reading(
            round(c["sent"]) - run.ledgers,
            # Done when every span is accounted for (sent, or counted as failed) and nothing is
            # queued; a shortfall nothing explains waits for the deadline (a retry may be due).
            fresh and queued == 0 and out >= want,
            False,
            (c["sent"], c["send_failed"], c["enqueue_failed"], queued),
            c,
        )

    out = settle(read, until=run.until(run.counter_deadline), clock=run.clock, quiet=quiet)
    if out.reading is None:
        return HopCount(
            "exporter",
            expected,
            None,
            0,
            "not measured",
            Status.ERROR,
            settled=False,
            elapsed_s=out.elapsed,
            detail=f"collector counters unreadable: {out.error}",
        )
    c = out.reading.counters
    signals = c["send_failed"] + c["enqueue_failed"]
    observed, lost, basis, note = counter_hop(
        "exporter",
        expected,
        c["sent"],
        signals,
        ledgers=run.ledgers,
        exact_source=run.counters.exact,
        reset=bool(c.get("reset")),
        signal_names="send failed + enqueue failed",
    )
    causes = []
    if c["enqueue_failed"]:
        causes.append(
            f"enqueue failed +{c['enqueue_failed']:,.0f} (the exporter's sending queue was full)"
        )
    if c["send_failed"]:
        causes.append(
            f"send failed +{c['send_failed']:,.0f} (the next hop refused or was unreachable, "
            "retries exhausted)"
        )
    if c.get("queue_size"):
        causes.append(f"{c['queue_size']:,.0f} batches still queued")
    if not out.settled:
        causes.append(f"not settled after {out.elapsed:.0f} s")
    exporters = ", ".join(getattr(run.counters, "exporters", ())) or "otlp*"
    detail = f"exporter {exporters}: sent +{observed:,} of {expected:,}" + (
        f"; {note}" if note else ""
    )
    cause = "; ".join(causes) if lost else ""
    return HopCount(
        "exporter",
        expected,
        observed,
        lost,
        basis,
        _status(lost, run.over),
        out.settled,
        out.elapsed,
        detail,
        cause,
        dict(c),
        note,
    )


def tempo_hop(run: HopRun, expected: int) -> HopCount:
    if run.counters is None or "tempo" in run.options.skip:
        return _unmeasured(
            "tempo", expected, "skipped" if "tempo" in run.options.skip else "no counter source"
        )
    want = expected + run.ledgers

    def read() -> Reading:
        c = run.counters.tempo()  # type: ignore[union-attr]
        run.progress(f"Tempo distributor: received +{c['received']:,.0f} of {want:,}")
        fresh = run.fresh("tempo")
        return Reading(
            round(c["received"]) - run.ledgers,
            fresh and c["received"] >= want,
            fresh,
            (c["received"], c["refused"]),
            c,
        )

    # Tempo's count still rises after the send while the collector's exporter drains: standing
    # still must be seen over more than one reading of the source.
    out = settle(
        read, until=run.until(run.counter_deadline), clock=run.clock, quiet=run.quiet("tempo")
    )
    if out.reading is None:
        return HopCount(
            "tempo",
            expected,
            None,
            0,
            "not measured",
            Status.ERROR,
            settled=False,
            elapsed_s=out.elapsed,
            detail=f"Tempo counters unreadable: {out.error}",
        )
    c = out.reading.counters
    observed, lost, basis, note = counter_hop(
        "tempo",
        expected,
        c["received"],
        c["refused"],
        ledgers=run.ledgers,
        exact_source=run.counters.exact,
        reset=bool(c.get("reset")),
        signal_names="receiver refused",
    )
    detail = (
        f"tempo_distributor_spans_received_total +{observed:,} of {expected:,}; receiver "
        f"accepted +{c['accepted'] - run.ledgers:,.0f}, refused +{c['refused']:,.0f}"
        + (f"; {note}" if note else "")
    )
    cause = ""
    if lost:
        cause = (
            f"Tempo's receiver refused +{c['refused']:,.0f} spans"
            if c["refused"]
            else f"{lost:,} spans never reached Tempo"
        )
        if not out.settled:
            cause += f" (not settled after {out.elapsed:.0f} s)"
    return HopCount(
        "tempo",
        expected,
        observed,
        lost,
        basis,
        _status(lost, run.over),
        out.settled,
        out.elapsed,
        detail,
        cause,
        dict(c),
        note,
    )


def _discards(c: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith(prefix + ":") and v}


_DISCARD_WHY = {
    "live_traces_exceeded": "Tempo's live-traces limit: overrides max_traces_per_user, 10,000 "
    "per tenant by default",
    "trace_too_large": "max_bytes_per_trace",
    "rate_limited": "Tempo's ingestion rate limit",
    "outside_metrics_ingestion_slack": "span end times outside the generator's 30 s slack",
}


def _why(discards: Mapping[str, float]) -> str:
    return ", ".join(
        f"{reason} +{n:,.0f} ({_DISCARD_WHY.get(reason, 'discarded')})"
        for reason, n in sorted(discards.items())
    )


def found_hop(run: HopRun, expected: int) -> HopCount:
    if "found" in run.options.skip:
        return _unmeasured("found", expected, "skipped")
    start, _ = run.window()
    discards: dict[str, float] = {}

    def read() -> Reading:
        # A TraceQL count over many spans can take a while: up to the hop's deadline.
        left = run.until(run.settings.deadlines.search) - run.clock.monotonic()
        timeout = max(run.settings.tempo.timeout, left)
        per_shard = found_count(
            run.backends, run.run_id, start, run.clock.time() + 1.0, timeout=timeout
        )
        found = sum(per_shard.values())
        explained = False
        nonlocal discards
        if run.counters is not None and "tempo" not in run.options.skip and found < expected:
            try:
                discards = _discards(run.counters.tempo(), "discarded")
            except BackendError:
                discards = {}
            explained = found + sum(discards.values()) >= expected
        run.progress(f"Tempo: {found:,} of {expected:,} spans of run {run.run_id} searchable")
        counters = {f"shard {k}": float(v) for k, v in sorted(per_shard.items())}
        return Reading(found, found >= expected, explained, (float(found),), counters)

    out = settle(
        read,
        until=run.until(run.settings.deadlines.search),
        clock=run.clock,
        quiet=max(run.options.quiet_s, 3.0),
    )
    if out.reading is None:
        return HopCount(
            "found",
            expected,
            None,
            0,
            "not measured",
            Status.ERROR,
            settled=False,
            elapsed_s=out.elapsed,
            detail=f"TraceQL count failed: {out.error}",
        )
    found = out.reading.observed
    lost = max(0, expected - found)
    detail = f'{{ span.tracecheck.run_id = "{run.run_id}" }} counted {found:,} of {expected:,}'
    per_shard = out.reading.counters
    if len(run.records) > 1:
        short = [
            f"shard {r.shard} {int(per_shard.get(f'shard {r.shard}', 0)):,} of {r.sent_spans:,}"
            for r in run.records
            if int(per_shard.get(f"shard {r.shard}", 0)) < r.sent_spans
        ]
        if short:
            detail += "; short: " + ", ".join(short)
    if found > expected:
        detail += (
            f"; {found - expected:,} more than expected (a shard without a ledger, or spans "
            "counted twice)"
        )
    cause = ""
    if lost:
        cause = (
            f"Tempo discarded {_why(discards)}" if discards else f"{lost:,} spans not searchable"
        )
        if not out.settled:
            cause += f" after {out.elapsed:.0f} s"
    return HopCount(
        "found",
        expected,
        found,
        lost,
        "exact",
        _status(lost, run.over),
        out.settled,
        out.elapsed,
        detail,
        cause,
        dict(per_shard),
    )


def samples_hop(
    run: HopRun, found: HopCount, lost_before: int
) -> tuple[HopCount | None, SampleCheck | None]:
    """Read sampled traces back; ``lost_before`` spans were lost on the way (so a missing
    sample may be one of them: a WARN, unless nothing was lost: a FAIL)."""
    if "samples" in run.options.skip or run.options.samples <= 0 or "found" in run.options.skip:
        return None, None
    if found.passed_on <= 0:
        return None, None  # nothing of the run is expected in Tempo
    samples = choose_samples(run.records, run.options.samples)
    if not samples:
        return None, None
    start, end = run.window()
    tempo = run.backends.tempo()
    services = {r.shard: r.service for r in run.records}
    check = read_back(samples, lambda tid: tempo.trace(tid, start=start, end=end), services)
    if check.error:
        status = Status.ERROR
    elif check.mismatched:
        status = Status.FAIL
    elif check.missing:
        status = Status.WARN if lost_before > 0 else Status.FAIL
    else:
        status = Status.PASS
    hop = HopCount(
        "samples",
        check.checked,
        check.matched,
        0,
        "exact",
        status,
        detail=check.summary(),
        cause="" if check.ok else check.summary(),
    )
    return hop, check


def span_metrics_hop(run: HopRun, expected: int) -> HopCount:
    if "span-metrics" in run.options.skip:
        return _unmeasured("span_metrics", expected, "skipped")
    if run.span_metrics is None:
        return HopCount(
            "span_metrics",
            expected,
            None,
            0,
            "not measured",
            Status.ERROR,
            settled=False,
            detail=f"Prometheus unreadable: {run.span_metrics_error}",
        )
    sm = run.span_metrics
    service = run.records[0].service
    slack: dict[str, float] = {}

    def read() -> Reading:
        nonlocal slack
        fam, rose = sm.increase(run.clock.time())
        observed = round(rose)
        explained = False
        if observed < expected and run.counters is not None and "tempo" not in run.options.skip:
            try:
                slack = _discards(run.counters.tempo(), "generator_discarded")
            except BackendError:
                slack = {}
            explained = observed + sum(slack.values()) >= expected
        name = fam.calls if fam else "calls"
        run.progress(f"Prometheus: {name}{{service={service}}} +{observed:,} of {expected:,}")
        return Reading(
            observed,
            observed >= expected,
            explained,
            (float(observed),),
            {"family": 0.0 if fam is None or fam.flavour == "tempo" else 1.0},
        )

    out = settle(
        read,
        until=run.until(run.settings.deadlines.span_metrics),
        clock=run.clock,
        quiet=max(run.options.quiet_s, 3.0),
    )
    if out.reading is None:
        return HopCount(
            "span_metrics",
            expected,
            None,
            0,
            "not measured",
            Status.ERROR,
            settled=False,
            elapsed_s=out.elapsed,
            detail=f"Prometheus unreadable: {out.error}",
        )
    observed = out.reading.observed
    lost = max(0, expected - observed)
    flavour = "otel" if out.reading.counters.get("family") else "tempo"
    calls = (
        "traces_span_metrics_calls_total{service_name="
        if flavour == "otel"
        else "traces_spanmetrics_calls_total{service="
    )
    detail = f'{calls}"{service}"}} +{observed:,} of {expected:,}'
    basis = "exact"
    if observed > expected:
        basis = "bound"
        detail += f"; {observed - expected:,} more: another sender used service {service}"
    cause = ""
    if lost:
        cause = (
            f"metrics-generator discarded {_why(slack)}" if slack else f"{lost:,} spans not counted"
        )
        if not out.settled:
            cause += (
                f" after {out.elapsed:.0f} s (collection every 15 s, remote write batches for 5 s)"
            )
    return HopCount(
        "span_metrics",
        expected,
        observed,
        lost,
        basis,
        _status(lost, run.over),
        out.settled,
        out.elapsed,
        detail,
        cause,
    )
