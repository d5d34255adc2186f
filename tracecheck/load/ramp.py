"""``--ramp START:END:STEP``: raise the rate step by step until the pipeline gives way.

Each step is a load of its own (run ID ``<run>-<rate>``) for ``--step-duration`` seconds,
accounted hop by hop like any load (without span-metrics, whose collection interval would
stretch every step by 15 s or more, unless asked for). The ramp stops at the first step where a
hop lost spans beyond ``--max-loss`` or the collector refused anything, and reports

* the **capacity**: the last clean rate (this setup's throughput without loss);
* the hop that gave way and why, in the hop's own words: the collector's memory_limiter
  refusing (UNAVAILABLE "data refused due to high memory usage"), its exporter's sending queue
  full (enqueue failed), Tempo discarding (the live-traces limit: ``live_traces_exceeded``)...

A step where the *generator* could not keep the rate (spans never sent, or less than 90 % of the
rate achieved) ends the ramp too, but blames no hop: the capacity is then only known to be at
least the last clean rate, and the report says to add ``--concurrency`` or ``--shards``.
Each step's accounting waits for its traces to become searchable, which also lets Tempo's live
traces drain before the next step, so the steps do not inherit each other's backlog.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tracecheck.load._deps import (
    Backends,
    CheckResult,
    Clock,
    Report,
    Settings,
    Status,
    SystemClock,
    UsageError,
    __version__,
)
from tracecheck.load.account import DEFAULT_OPTIONS, Accounting, AccountOptions, account
from tracecheck.load.flow import target_of
from tracecheck.load.ledger import ShardRecord
from tracecheck.load.run import LoadProgress, LoadResult, run_load
from tracecheck.load.sources import LiveCounters, SpanMetrics, take_baseline
from tracecheck.load.spec import SYSTEM, LoadSpec, plan_load

__all__ = ["MAX_STEPS", "RampStep", "parse_ramp", "run_ramp"]

MAX_STEPS = 100
# A step whose achieved rate is below this share of the target is the generator's limit.
GENERATOR_SHARE = 0.9
_NUMBER = r"\d+(?:\.\d+)?(?:[eE]\d+)?"


def parse_ramp(text: str) -> tuple[float, float, float]:
    """``START:END:STEP`` in spans per second; UsageError (exit 2) for anything else."""
    m = re.fullmatch(rf"\s*({_NUMBER})\s*:\s*({_NUMBER})\s*:\s*({_NUMBER})\s*", text or "")
    if not m:
        raise UsageError(SYSTEM, "", f"--ramp {text!r}: expected START:END:STEP spans/s")
    start, end, step = (float(g) for g in m.groups())
    if start <= 0 or step <= 0 or end < start:
        raise UsageError(SYSTEM, "", f"--ramp {text}: need 0 < START <= END and STEP > 0")
    if int((end - start) / step + 1e-9) + 1 > MAX_STEPS:
        raise UsageError(SYSTEM, "", f"--ramp {text}: more than {MAX_STEPS} steps")
    return start, end, step


def rates(start: float, end: float, step: float) -> list[float]:
    n = int((end - start) / step + 1e-9) + 1
    return [start + i * step for i in range(n)]


@dataclass(frozen=True, slots=True)
class RampStep:
    rate: float
    result: LoadResult
    accounting: Accounting
    verdict: str  # clean | pipeline | generator
    hop: str  # the hop that gave way (pipeline)
    why: str

    def row(self) -> dict[str, Any]:
        r, a = self.result, self.accounting
        return {
            "rate": round(self.rate, 1),
            "achieved": round(r.achieved_rate, 1),
            "sent": r.attempted_spans,
            "refused": r.refused_spans,
            "lost": a.lost_total,
            "loss_pct": round(a.loss_pct, 3),
            "max_lag_s": round(r.max_lag_s, 3),
            "verdict": self.verdict,
            "gave_way": self.hop,
            "why": self.why,
        }


def _judge(rate: float, result: LoadResult, acc: Accounting) -> tuple[str, str, str]:
    """(verdict, hop, why) of one step. The pipeline's refusals and losses are named first;
    a generator that did not keep the rate is blamed only when the pipeline was clean."""
    receiver = acc.hop("receiver")
    if result.refused_spans and receiver is not None:
        why = receiver.cause or f"refused {result.refused_spans:,} spans"
        return "pipeline", "receiver", why
    first = acc.first_loss
    if (
        first is not None
        and first.hop != "client"
        and (acc.over_limit or first.status is Status.FAIL)
    ):
        return "pipeline", first.hop, first.cause or first.detail
    sending = ShardRecord.from_result(result).sending_rate
    if result.unsent_spans or sending < GENERATOR_SHARE * rate:
        return (
            "generator",
            "client",
            f"the generator reached {sending:,.0f} of {rate:,.0f} spans/s "
            f"({result.unsent_spans:,} never sent, max lag {result.max_lag_s:.2f} s): add "
            "--concurrency or --shards; the pipeline was not the limit",
        )
    return "clean", "", ""


def run_ramp(
    settings: Settings,
    spec: LoadSpec,
    start: float,
    end: float,
    step: float,
    step_duration: float,
    options: AccountOptions = DEFAULT_OPTIONS,
    *,
    clock: Clock | None = None,
    backends: Backends | None = None,
    load_progress: Callable[[LoadProgress], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run the ramp; a Report with one check per step and a ``ramp.capacity`` verdict."""
    clock = clock or SystemClock()
    steps = rates(start, end, step)
    total = sum(steps) * step_duration
    if total > spec.max_spans:
        raise UsageError(
            SYSTEM,
            "",
            f"--ramp {start:g}:{end:g}:{step:g} x --step-duration {step_duration:g} s = "
            f"{total:,.0f} spans at most, over --max-spans {spec.max_spans:,}",
        )
    base = dataclasses.replace(
        spec, rate=steps[0], duration=step_duration, max_spans=spec.max_spans
    )
    plan = plan_load(settings, base)  # checks everything else once, before anything is sent
    if not settings.collector.metrics_url:
        options = dataclasses.replace(options, skip=options.skip | {"collector"})
    run_id = plan.run_id
    own = backends is None
    backends = backends or Backends(settings, clock=clock)
    say = progress or (lambda _: None)
    done: list[RampStep] = []
    started = clock.time()
    try:
        for rate in steps:
            step_spec = dataclasses.replace(
                base, rate=rate, run_id=f"{run_id}-{rate:.0f}"[:63], seed=0
            )
            say(f"ramp: {rate:,.0f} spans/s for {step_duration:g} s")
            baseline = take_baseline(
                settings, backends, service=spec.service, clock=clock, skip=options.skip,
                receiver=options.receiver, exporter=options.exporter,
            )  # fmt: skip
            if baseline.errors:
                raise baseline.errors[0]
            result = run_load(settings, step_spec, clock=clock, progress=load_progress)
            if result.cancelled:
                raise KeyboardInterrupt
            counters = LiveCounters(
                settings, backends, baseline, receiver=options.receiver, exporter=options.exporter
            )
            sm = SpanMetrics(backends, baseline.span_metrics) if baseline.span_metrics else None
            acc = account(
                settings, [ShardRecord.from_result(result)], backends=backends, clock=clock,
                counters=counters, span_metrics=sm, options=options, progress=say,
            )  # fmt: skip
            verdict, hop, why = _judge(rate, result, acc)
            done.append(RampStep(rate, result, acc, verdict, hop, why))
            if verdict != "clean":
                break
    finally:
        if own:
            backends.close()
    return _report(done, steps, settings, spec, run_id, started, clock.time(), step_duration)


def _report(
    done: list[RampStep],
    steps: list[float],
    settings: Settings,
    spec: LoadSpec,
    run_id: str,
    started: float,
    finished: float,
    step_duration: float,
) -> Report:
    checks = []
    for s in done:
        detail = (
            f"{s.result.attempted_spans:,} spans at {s.result.achieved_rate:,.0f} spans/s; "
            f"lost {s.accounting.lost_total:,} ({s.accounting.loss_pct:.2f} %)"
        )
        if s.verdict == "clean":
            status = Status.PASS
        else:
            status = Status.WARN
            detail += f"; gave way at the {s.hop} hop: {s.why}"
        checks.append(
            CheckResult(
                f"ramp.{s.rate:g}", f"{s.rate:,.0f} spans/s for {step_duration:g} s", status,
                elapsed=s.result.elapsed_s + s.accounting.elapsed_s, detail=detail, hop=s.hop,
                data=s.row(),
            )
        )  # fmt: skip
    clean = [s for s in done if s.verdict == "clean"]
    last = done[-1] if done else None
    capacity = clean[-1].rate if clean else None
    if last is not None and last.verdict == "clean":
        cap_status = Status.PASS
        cap = (
            f"no loss up to {steps[-1]:,.0f} spans/s (the end of the ramp): capacity at least "
            f"{capacity:,.0f} spans/s"
        )
    elif last is not None and last.verdict == "generator":
        cap_status = Status.WARN if clean else Status.FAIL
        cap = (
            f"capacity at least {capacity:,.0f} spans/s; " if capacity is not None else ""
        ) + f"the generator gave way at {last.rate:,.0f} spans/s: {last.why}"
    elif last is not None and capacity is not None:
        cap_status = Status.PASS
        cap = (
            f"capacity {capacity:,.0f} spans/s (the last clean step); gave way at "
            f"{last.rate:,.0f} spans/s at the {last.hop} hop: {last.why}"
        )
    else:
        cap_status = Status.FAIL
        rate = f"{last.rate:,.0f}" if last is not None else "?"
        why = f" at the {last.hop} hop: {last.why}" if last is not None else ""
        cap = f"no clean step: the first step ({rate} spans/s) already lost spans{why}"
    summary = {
        "capacity_spans_per_s": capacity,
        "gave_way_at": last.rate if last is not None and last.verdict != "clean" else None,
        "hop": last.hop if last is not None else "",
        "why": last.why if last is not None else "",
        "steps": len(done),
    }
    title = "the last clean rate and where the pipeline gave way"
    checks.append(CheckResult("ramp.capacity", title, cap_status, detail=cap, data=summary))
    tables: dict[str, Any] = {"ramp": [s.row() for s in done], "summary": [summary]}
    if last is not None and last.verdict != "clean":
        tables["accounting"] = last.accounting.rows()
    protocol = done[0].result.protocol if done else (spec.protocol or settings.collector.protocol)
    return Report(
        run_id=run_id,
        trace_id="",
        started_at=started,
        finished_at=finished,
        results=tuple(checks),
        target=target_of(settings, protocol),
        tables=tables,
        tool_version=__version__,
        command="load --ramp",
    )
