"""The three things ``tracecheck load`` does, each ending in a :class:`Report`.

* :func:`load_and_account`: read every counter (the baseline, which is also the preflight of
  every backend the accounting needs), send the load, send this shard's ledger span, then
  account the run hop by hop.
* :func:`account_run` (``--account RUN_ID``): a run that other processes sent. Its shards are
  found by their ledger spans (:mod:`tracecheck.load.ledger`), the counter hops are read from
  Prometheus's history of the collector's and Tempo's counters, the rest as for a live load.
* :func:`send_ledger`: the ledger span of one shard, retried a few times (it is one span, and
  without it ``--account`` cannot count the shard).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from tracecheck.load._deps import (
    BackendError,
    Backends,
    CheckResult,
    Clock,
    Report,
    Settings,
    Status,
    SystemClock,
    UsageError,
    redact_url,
)
from tracecheck.load.account import DEFAULT_OPTIONS, AccountOptions, account
from tracecheck.load.ledger import (
    LEDGER_OF_ATTRIBUTE,
    ShardRecord,
    ledger_request,
    ledger_trace_id,
    record_from_span_attributes,
)
from tracecheck.load.report import accounting_report
from tracecheck.load.run import LoadProgress, LoadResult, run_load
from tracecheck.load.send import open_sender
from tracecheck.load.sources import HistoryCounters, LiveCounters, SpanMetrics, take_baseline
from tracecheck.load.spec import SYSTEM, LoadSpec, plan_load

__all__ = ["account_run", "load_and_account", "send_ledger", "target_of"]

LEDGER_ATTEMPTS = 3


def target_of(settings: Settings, protocol: str) -> dict[str, Any]:
    c = settings.collector
    return {
        "collector": c.endpoint if protocol == "grpc" else redact_url(c.http_url),
        "collector_metrics": redact_url(c.metrics_url),
        "tempo": redact_url(settings.tempo.url),
        "prometheus": redact_url(settings.prometheus.url),
        "protocol": protocol,
    }


def send_ledger(settings: Settings, result: LoadResult, clock: Clock) -> CheckResult:
    """Send ``result``'s ledger span; a CheckResult saying whether it went through."""
    record = ShardRecord.from_result(result)
    body = ledger_request(record)
    tid = ledger_trace_id(record.run_id, record.shard).hex()
    name, title = "load.ledger", "this shard's ledger span (for --account)"
    try:
        sender = open_sender(settings.collector, result.protocol, result.compression)
    except BackendError as exc:
        return CheckResult(name, title, Status.WARN, detail=f"not sent: {exc}")
    try:
        outcome = None
        for attempt in range(LEDGER_ATTEMPTS):
            outcome = sender.send(body, min(settings.collector.timeout, 10.0))
            if outcome.kind == "ok":
                return CheckResult(name, title, Status.PASS, detail=f"sent: trace {tid}")
            if attempt + 1 < LEDGER_ATTEMPTS:
                clock.sleep(0.5 * (attempt + 1))
    finally:
        sender.close()
    said = (
        f"{outcome.code}: {outcome.message}"
        if outcome and outcome.message
        else (outcome.code if outcome else "")
    )
    return CheckResult(
        name,
        title,
        Status.WARN,
        detail=f"not sent after {LEDGER_ATTEMPTS} attempts ({said}): --account {result.run_id} "
        f"cannot count shard {result.shard}",
    )


def load_and_account(
    settings: Settings,
    spec: LoadSpec,
    options: AccountOptions = DEFAULT_OPTIONS,
    *,
    ledger: bool = True,
    clock: Clock | None = None,
    backends: Backends | None = None,
    load_progress: Callable[[LoadProgress], None] | None = None,
    progress: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[Report, LoadResult]:
    """Send the load ``spec`` describes and account it at every hop.

    Raises UsageError/ConfigError for a load that cannot run, and a BackendError (one line,
    exit 3) when a backend the accounting needs cannot be read before anything is sent.
    """
    clock = clock or SystemClock()
    plan = plan_load(settings, spec)  # bad input: one line, before anything is read or sent
    if not settings.collector.metrics_url:  # self-metrics turned off ('') : not an error
        options = dataclasses.replace(options, skip=options.skip | {"collector"})
    spec = dataclasses.replace(spec, run_id=plan.run_id, seed=plan.seed)
    own = backends is None
    backends = backends or Backends(settings, clock=clock)
    say = progress or (lambda _: None)
    try:
        started = clock.time()
        say("reading the counters before the load")
        baseline = take_baseline(
            settings, backends, service=spec.service, clock=clock, skip=options.skip,
            receiver=options.receiver, exporter=options.exporter,
        )  # fmt: skip
        if baseline.errors:  # a backend the accounting needs cannot be read: send nothing
            raise baseline.errors[0]
        result = run_load(settings, spec, clock=clock, progress=load_progress, cancel=cancel)
        extra = [send_ledger(settings, result, clock)] if ledger else []
        ledgers = 1 if extra and extra[0].status is Status.PASS else 0
        counters = LiveCounters(
            settings, backends, baseline, receiver=options.receiver, exporter=options.exporter
        )
        sm = SpanMetrics(backends, baseline.span_metrics) if baseline.span_metrics else None
        acc = account(
            settings,
            [ShardRecord.from_result(result)],
            backends=backends,
            clock=clock,
            counters=counters,
            span_metrics=sm,
            span_metrics_error="no span-metrics series family to watch",
            options=options,
            ledgers=ledgers,
            progress=say,
        )
        report = accounting_report(
            acc,
            started_at=started,
            finished_at=clock.time(),
            target=target_of(settings, result.protocol),
            extra=extra,
        )
        return report, result
    finally:
        if own:
            backends.close()


def find_ledgers(
    settings: Settings, backends: Backends, run_id: str, clock: Clock
) -> tuple[list[ShardRecord], list[int]]:
    """Every shard's ledger of ``run_id`` (by trace ID, shard 0 first; a TraceQL search when
    shard 0's is missing), and the shards whose ledger is missing."""
    tempo = backends.tempo()

    def by_id(shard: int) -> ShardRecord | None:
        trace = tempo.trace(ledger_trace_id(run_id, shard))
        for span in trace.spans:
            try:
                return record_from_span_attributes(run_id, span.attributes)
            except ValueError:
                continue
        return None

    first = by_id(0)
    deadline = clock.monotonic() + settings.deadlines.trace_by_id
    while first is None and clock.monotonic() < deadline:
        clock.sleep(1.0)
        first = by_id(0)
    records: dict[int, ShardRecord] = {}
    shards = 0
    if first is not None:
        records[0] = first
        shards = first.shards
    else:
        now = clock.time()
        query = f'{{ span.{LEDGER_OF_ATTRIBUTE} = "{run_id}" }}'
        found = tempo.search(query, start=now - 7 * 86400, end=now, limit=1000)
        for hit in found.traces:
            for span in tempo.trace(hit.trace_id).spans:
                try:
                    r = record_from_span_attributes(run_id, span.attributes)
                except ValueError:
                    continue
                records[r.shard] = r
                shards = max(shards, r.shards)
    if not records:
        raise UsageError(
            SYSTEM,
            redact_url(settings.tempo.url),
            f"no ledger of run {run_id} in Tempo (a wrong run ID, or every shard's ledger span "
            "was lost)",
        )
    for shard in range(1, shards):
        if shard not in records:
            got = by_id(shard)
            if got is not None:
                records[shard] = got
    missing = [k for k in range(shards) if k not in records]
    return [records[k] for k in sorted(records)], missing


def account_run(
    settings: Settings,
    run_id: str,
    options: AccountOptions = DEFAULT_OPTIONS,
    *,
    clock: Clock | None = None,
    backends: Backends | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Account run ``run_id``, sent by other processes (each with its ledger span)."""
    clock = clock or SystemClock()
    own = backends is None
    backends = backends or Backends(settings, clock=clock)
    say = progress or (lambda _: None)
    try:
        started = clock.time()
        say(f"looking for the ledgers of run {run_id}")
        records, missing = find_ledgers(settings, backends, run_id, clock)
        shards = max(r.shards for r in records)
        since = min(r.started_at for r in records) - 1.0
        counters = None
        if not {"collector", "tempo"} <= options.skip:
            counters = HistoryCounters(
                settings, backends, since, clock=clock, receiver=options.receiver,
                exporter=options.exporter,
            )  # fmt: skip
        sm: SpanMetrics | None = None
        sm_error = ""
        if "span-metrics" not in options.skip:
            try:
                snaps = SpanMetrics.snapshots(
                    settings, backends, records[0].service, clock.time(), at=since
                )
                sm = SpanMetrics(backends, snaps)
            except BackendError as exc:
                sm_error = str(exc)
        ledger_check = CheckResult(
            "load.ledgers",
            "every shard's ledger span found",
            Status.FAIL if missing else Status.PASS,
            detail=f"{len(records)} of {shards} shards' ledgers found"
            + (f"; missing: shard {', '.join(map(str, missing))}" if missing else ""),
            hint="a shard that never ran, or whose ledger span the pipeline lost: its spans "
            "are found in Tempo but were not planned here"
            if missing
            else "",
        )
        acc = account(
            settings,
            records,
            backends=backends,
            clock=clock,
            counters=counters,
            span_metrics=sm,
            span_metrics_error=sm_error,
            options=options,
            ledgers=len(records),
            missing_shards=missing,
            progress=say,
        )
        return accounting_report(
            acc,
            started_at=started,
            finished_at=clock.time(),
            target=target_of(settings, records[0].protocol),
            command="load --account",
            extra=[ledger_check],
        )
    finally:
        if own:
            backends.close()
