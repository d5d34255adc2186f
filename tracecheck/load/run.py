"""``run_load``: send a planned load and count what happened to every span.

Every span planned ends in exactly one of these, so they add up to ``planned_spans``:

* ``sent``: its request got an OK (minus spans a partial_success rejected, counted in
  ``rejected``);
* ``refused_final``: its request was refused (RESOURCE_EXHAUSTED, UNAVAILABLE, 429, 503) and
  the retry policy gave up;
* ``failed``: its request ended in another error (no connection, timeout, another status);
* ``unsent``: never sent: the schedule's end plus the overrun passed (the generator fell too far
  behind) or the load was cancelled.

``refusals`` counts every refused *attempt* by code (requests and spans): with retries, one
request refused twice then accepted counts twice there and once in ``sent``. That is what the
collector's ``otelcol_receiver_refused_spans`` counts too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from tracecheck.load._deps import Clock, ExitCode, Settings, SystemClock
from tracecheck.load.pacing import LATE_AFTER, Schedule, Slot
from tracecheck.load.send import Outcome, Sender, open_sender
from tracecheck.load.spec import LoadPlan, LoadSpec, plan_load

__all__ = ["LoadProgress", "LoadResult", "Refusals", "ranges", "run_load"]

# Progress is reported about this often (seconds on the load's clock).
PROGRESS_EVERY = 1.0


@dataclass(slots=True)
class Refusals:
    requests: int = 0
    spans: int = 0


@dataclass(frozen=True, slots=True)
class LoadProgress:
    """A snapshot while the load runs (the CLI prints one line per snapshot)."""

    elapsed_s: float
    due_spans: int  # spans due by now according to the schedule
    sent_spans: int
    refused_spans: int  # in refused attempts
    failed_spans: int
    behind_s: float  # how far the dispatches are behind schedule now


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one process sent. Phase-2 accounting compares these with every hop's counters."""

    run_id: str
    shard: int
    shards: int
    seed: int
    service: str
    protocol: str
    address: str
    compression: str
    target_rate: float  # spans per second for this process
    duration_s: float  # as asked
    spans_per_trace: int
    traces_per_request: int
    concurrency: int
    planned_spans: int
    planned_traces: int
    planned_requests: int
    sent_spans: int
    sent_traces: int
    sent_requests: int
    rejected_spans: int  # partial_success rejections inside OK answers
    refused_final_spans: int
    failed_spans: int
    unsent_spans: int
    refusals: dict[str, Refusals]  # per code, every refused attempt
    errors: dict[str, int]  # per cause, requests that ended in an error (last attempt)
    retries: int
    started_at: float  # unix seconds of the schedule's start
    elapsed_s: float  # schedule start to the last answer
    achieved_rate: float  # sent spans per second (see achieved_rate in the README)
    late_requests: int  # dispatched more than LATE_AFTER seconds after their due time
    max_lag_s: float
    mean_lag_s: float
    end_lag_s: float  # lateness of the last request dispatched
    cpu_s: float  # process CPU time used during the load (all threads)
    cancelled: bool = False
    messages: tuple[str, ...] = field(default=())  # first distinct server messages (<= 5)
    # Requests (by number) whose spans were not all accepted (refused, failed, unsent, or a
    # partial_success rejection), as half-open ranges [a, b): which traces may be missing
    # downstream, so sampled read-backs pick accepted ones.
    unaccepted: tuple[tuple[int, int], ...] = field(default=())

    @property
    def refused_spans(self) -> int:
        """Spans in refused attempts, all codes (what the receiver's refused counter adds)."""
        return sum(r.spans for r in self.refusals.values())

    @property
    def attempted_spans(self) -> int:
        return self.planned_spans - self.unsent_spans

    @property
    def behind(self) -> bool:
        """Whether the generator fell visibly behind its schedule."""
        return self.late_requests > 0 or self.unsent_spans > 0

    @property
    def clean(self) -> bool:
        """Every planned span was sent and accepted, on schedule."""
        return self.sent_spans == self.planned_spans and not self.refusals and not self.errors

    @property
    def exit_code(self) -> int:
        if self.cancelled:
            return int(ExitCode.INTERRUPTED)
        return int(ExitCode.OK) if self.sent_spans == self.planned_spans else int(
            ExitCode.CHECK_FAILED
        )  # fmt: skip

    def accepted(self, request: int) -> bool:
        """Whether every span of request number ``request`` was accepted."""
        return 0 <= request < self.planned_requests and not any(
            a <= request < b for a, b in self.unaccepted
        )

    @property
    def spans_per_cpu_s(self) -> float:
        return self.sent_spans / self.cpu_s if self.cpu_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["refused_spans"] = self.refused_spans
        data["spans_per_cpu_s"] = round(self.spans_per_cpu_s, 1)
        data["late_after_s"] = LATE_AFTER
        data["behind"] = self.behind
        data["exit_code"] = self.exit_code
        return data

    def summary(self) -> str:
        """A few lines for a terminal."""
        lines = [
            f"load {self.run_id} shard {self.shard}/{self.shards}: {self.protocol} to "
            f"{self.address}, {self.spans_per_trace} spans per trace, "
            f"{self.traces_per_request * self.spans_per_trace} spans per request, "
            f"concurrency {self.concurrency}",
            f"  sent      {self.sent_spans:,} of {self.planned_spans:,} spans "
            f"({self.sent_traces:,} traces, {self.sent_requests:,} requests) in "
            f"{self.elapsed_s:.1f} s: {self.achieved_rate:,.0f} spans/s "
            f"(target {self.target_rate:,.0f}); {self.cpu_s:.2f} CPU-s, "
            f"{self.spans_per_cpu_s:,.0f} spans per CPU-s",
        ]
        if self.refusals:
            parts = ", ".join(
                f"{code} {r.requests:,} requests / {r.spans:,} spans"
                for code, r in sorted(self.refusals.items())
            )
            lines.append(f"  refused   {parts}; given up {self.refused_final_spans:,} spans")
        if self.errors:
            parts = ", ".join(f"{cause} x{n:,}" for cause, n in sorted(self.errors.items()))
            lines.append(f"  errors    {parts}; {self.failed_spans:,} spans failed")
        if self.rejected_spans:
            lines.append(f"  rejected  {self.rejected_spans:,} spans (partial_success)")
        if self.retries:
            lines.append(f"  retries   {self.retries:,}")
        lag = (
            f"  schedule  {self.late_requests:,} requests late by more than {LATE_AFTER:g} s; "
            f"max lag {self.max_lag_s:.3f} s, mean {self.mean_lag_s:.3f} s, at the end "
            f"{self.end_lag_s:.3f} s"
        )
        if self.unsent_spans:
            lag += f"; {self.unsent_spans:,} spans never sent (behind schedule past the overrun)"
        lines.append(lag)
        for message in self.messages:
            lines.append(f"  server said: {message}")
        if self.cancelled:
            lines.append("  cancelled before the end")
        return "\n".join(lines)


class _Tally:
    """Counters shared by the workers (one lock; updates are per request, not per span)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent_spans = self.sent_traces = self.sent_requests = 0
        self.rejected = self.refused_final = self.failed = self.unsent = 0
        self.retries = 0
        self.refusals: dict[str, Refusals] = {}
        self.errors: dict[str, int] = {}
        self.messages: list[str] = []
        self.last_answer = 0.0
        self.unaccepted: set[int] = set()

    def attempt(self, outcome: Outcome, spans: int) -> None:
        with self.lock:
            if outcome.kind == "refused":
                r = self.refusals.setdefault(outcome.code, Refusals())
                r.requests += 1
                r.spans += spans
            if outcome.message and len(self.messages) < 5 and outcome.message not in self.messages:
                self.messages.append(outcome.message)

    def final(self, outcome: Outcome, index: int, spans: int, traces: int, now: float) -> None:
        with self.lock:
            self.last_answer = max(self.last_answer, now)
            if outcome.kind != "ok" or outcome.rejected:
                self.unaccepted.add(index)
            if outcome.kind == "ok":
                self.sent_requests += 1
                self.sent_spans += spans - outcome.rejected
                self.rejected += outcome.rejected
                self.sent_traces += traces
            elif outcome.kind == "refused":
                self.refused_final += spans
            else:
                self.failed += spans
                self.errors[outcome.code] = self.errors.get(outcome.code, 0) + 1


def run_load(
    settings: Settings,
    spec: LoadSpec,
    *,
    clock: Clock | None = None,
    sender: Sender | None = None,
    progress: Callable[[LoadProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> LoadResult:
    """Send the load ``spec`` describes to the collector in ``settings``; count every span.

    Raises UsageError/ConfigError for a spec that cannot run (before anything is sent) and a
    BackendError when the collector cannot take even an empty export (preflight). Refusals
    and errors during the load are data in the result. ``sender`` replaces the network (tests),
    ``clock`` the time; ``progress`` gets a snapshot about once a second; setting ``cancel``
    stops the load (requests in flight finish; the rest count unsent).
    """
    plan = plan_load(settings, spec)
    clock = clock or SystemClock()
    own = sender is None
    sender = sender or open_sender(settings.collector, plan.protocol, plan.compression)
    try:
        sender.preflight(min(plan.timeout, 10.0))
        return _run(plan, sender, clock, progress, cancel or threading.Event())
    finally:
        if own:
            sender.close()


def _run(
    plan: LoadPlan,
    sender: Sender,
    clock: Clock,
    progress: Callable[[LoadProgress], None] | None,
    cancel: threading.Event,
) -> LoadResult:
    template = plan.template()
    schedule = Schedule(plan.requests, plan.interval, clock, overrun=plan.overrun)
    schedule.cancelled = cancel
    tally = _Tally()
    retry = plan.spec.retry
    next_report = [PROGRESS_EVERY]
    report_lock = threading.Lock()

    def report(now: float) -> None:
        if progress is None:
            return
        elapsed = now - schedule.start_at
        with report_lock:
            if elapsed < next_report[0]:
                return
            next_report[0] = (int(elapsed / PROGRESS_EVERY) + 1) * PROGRESS_EVERY
        due_requests = min(plan.requests, int(elapsed / plan.interval) + 1)
        due = min(plan.spans, due_requests * plan.spans_per_request)
        with tally.lock:
            snap = LoadProgress(
                elapsed,
                due,
                tally.sent_spans,
                sum(r.spans for r in tally.refusals.values()),
                tally.failed,
                schedule.behind(now),
            )
        progress(snap)

    def send(slot: Slot) -> None:
        traces = plan.traces_in(slot.index)
        spans = traces * plan.spans_per_trace
        body = template.build(slot.index, int(clock.time() * 1e9), traces)
        delay = retry.initial
        attempt = 0
        while True:
            outcome = sender.send(body, plan.timeout)
            tally.attempt(outcome, spans)
            if outcome.kind == "ok" or not outcome.retryable or attempt >= retry.attempts:
                break
            wait = delay if outcome.wait is None else outcome.wait
            if wait > retry.maximum or cancel.is_set():
                break
            delay = min(delay * 2, retry.maximum)
            attempt += 1
            with tally.lock:
                tally.retries += 1
            clock.sleep(wait)
        tally.final(outcome, slot.index, spans, traces, clock.monotonic())

    crashed: list[BaseException] = []

    def worker() -> None:
        while True:
            slot = schedule.claim()
            if slot is None:
                return
            if schedule.wait(slot) is None:
                # Past the overrun or cancelled: this request and every unclaimed one.
                left = schedule.abandon()
                with tally.lock:
                    tally.unsent += _spans_in(plan, [slot.index, *left])
                    tally.unaccepted.update([slot.index, *left])
                return
            try:
                send(slot)
            except BaseException as exc:  # not an answer: stop everything, raise it below
                crashed.append(exc)
                cancel.set()
                with tally.lock:
                    tally.unsent += _spans_in(plan, [slot.index])
                    tally.unaccepted.add(slot.index)
                return
            report(clock.monotonic())

    cpu0 = time.process_time()
    wall0 = clock.time()
    schedule.start()
    threads = [
        threading.Thread(target=worker, name=f"tracecheck-load-{i}", daemon=True)
        for i in range(min(plan.spec.concurrency, plan.requests))
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        cancel.set()
        for t in threads:
            t.join()
    if crashed:
        raise crashed[0]
    cpu = time.process_time() - cpu0
    end = max(tally.last_answer, schedule.start_at)
    elapsed = end - schedule.start_at
    sched_len = plan.spans / plan.rate  # the schedule covers exactly the spans planned
    lag = schedule.lag()
    left = schedule.abandon()  # unclaimed after a cancel
    tally.unsent += _spans_in(plan, left)
    tally.unaccepted.update(left)
    return LoadResult(
        run_id=plan.run_id,
        shard=plan.spec.shard,
        shards=plan.spec.shards,
        seed=plan.seed,
        service=plan.spec.service,
        protocol=plan.protocol,
        address=sender.address,
        compression=plan.compression,
        target_rate=plan.rate,
        duration_s=plan.duration,
        spans_per_trace=plan.spans_per_trace,
        traces_per_request=plan.traces_per_request,
        concurrency=plan.spec.concurrency,
        planned_spans=plan.spans,
        planned_traces=plan.traces,
        planned_requests=plan.requests,
        sent_spans=tally.sent_spans,
        sent_traces=tally.sent_traces,
        sent_requests=tally.sent_requests,
        rejected_spans=tally.rejected,
        refused_final_spans=tally.refused_final,
        failed_spans=tally.failed,
        unsent_spans=tally.unsent,
        refusals=dict(tally.refusals),
        errors=dict(tally.errors),
        retries=tally.retries,
        started_at=wall0,
        elapsed_s=elapsed,
        achieved_rate=tally.sent_spans / max(elapsed, sched_len) if tally.sent_spans else 0.0,
        late_requests=lag.late_requests,
        max_lag_s=lag.max_s,
        mean_lag_s=lag.mean_s,
        end_lag_s=lag.last_s,
        cpu_s=cpu,
        cancelled=cancel.is_set(),
        messages=tuple(tally.messages),
        unaccepted=ranges(tally.unaccepted),
    )


def ranges(numbers: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Sorted numbers as half-open ranges: ``{0, 1, 2, 7}`` -> ``((0, 3), (7, 8))``."""
    out: list[list[int]] = []
    for n in sorted(set(numbers)):
        if out and out[-1][1] == n:
            out[-1][1] = n + 1
        else:
            out.append([n, n + 1])
    return tuple((a, b) for a, b in out)


def _spans_in(plan: LoadPlan, requests: Iterable[int]) -> int:
    return sum(plan.traces_in(i) for i in requests) * plan.spans_per_trace
