"""The pipeline checks of ``tracecheck smoke``: preflights, the synthetic trace's send, and the
checks that poll the collector, Tempo and Prometheus until the trace and its span-metrics show.

=========================  =========  =======================================================
check                      stage      proves
=========================  =========  =======================================================
preflight.collector        preflight  the collector answers (health_check, else a gRPC connect)
preflight.tempo            preflight  Tempo is ready; its version
preflight.prometheus       preflight  Prometheus is ready; its version, exemplar storage
send                       send       the synthetic trace is accepted by the collector
collector.exported         verify     the collector's own metrics show the spans exported
tempo.trace_by_id          verify     Tempo returns every span sent, by trace ID
tempo.search               verify     TraceQL search finds the trace by its run_id
prometheus.span_metrics    verify     span-metrics calls rose by the spans sent; histogram
prometheus.exemplars       verify     the latency histogram's exemplars carry our trace ID
prometheus.service_graph   verify     the service-graph edge client -> server rose
=========================  =========  =======================================================

Why one module (about 800 lines): ten checks of one plan sharing the span-metric family cache
and the counter helpers; a file per check or per stage would scatter them. The restart-aware
arithmetic the three metrics checks share lives in :mod:`tracecheck.smoke.restarts`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from tracecheck.backends.collector import PipelineCounters
from tracecheck.backends.prometheus import CounterSnapshot, SeriesKey
from tracecheck.backends.tempo import NO_ORG_ID, Trace
from tracecheck.config import Settings
from tracecheck.diagnose import hops
from tracecheck.errors import (
    AuthError,
    BackendError,
    HTTPStatusError,
    NotReady,
    Unreachable,
)
from tracecheck.polling import Probe, poll_until
from tracecheck.results import CheckResult, Status
from tracecheck.smoke.engine import MIN_REQUEST_TIMEOUT, Check, Progress, Sent, SmokeContext
from tracecheck.smoke.restarts import (
    GAP_FACTOR,
    MAX_RESENDS,
    Increase,
    Restarts,
    Snapshot,
    increase,
    restarts,
    snapshot,
)
from tracecheck.smoke.synth import RUN_ID_ATTRIBUTE, build_trace, compare_trace
from tracecheck.spanmetrics import (
    NAMES_REGEX,
    SERVICE_GRAPH_REQUESTS,
    Naming,
    candidates,
    quote,
)

__all__ = [
    "TRUNCATED_HINT",
    "CallsBaseline",
    "CollectorExported",
    "CollectorPreflight",
    "Exemplars",
    "PrometheusPreflight",
    "ReadinessCheck",
    "SendTrace",
    "ServiceGraph",
    "SpanMetrics",
    "SpanMetricsBaseline",
    "TempoPreflight",
    "TempoSearch",
    "TempoTraceById",
    "auth_hint",
    "ends_on_auth_error",
    "pipeline_checks",
    "span_metric_families",
    "truncated_detail",
]


# --------------------------------------------------------------------------------------------
# credentials

_RunMethod = TypeVar("_RunMethod", bound=Callable[[Any, SmokeContext], CheckResult])


def auth_hint(error: AuthError) -> str:
    """What to change when ``error.system`` refused our credentials (401/403)."""
    section = error.system
    if error.system == "tempo" and NO_ORG_ID in error.cause:
        return (
            "Tempo is multi-tenant (multitenancy_enabled): give the tenant the collector writes "
            "as with --tenant or tempo.tenant (sent as X-Scope-OrgID)"
        )
    return (
        f"{section} refused the credentials sent: check {section}.headers (e.g. "
        f"Authorization=Bearer ...), {section}.tenant (X-Scope-OrgID) and {section}.cert_file"
    )


def ends_on_auth_error(run: _RunMethod) -> _RunMethod:
    """A check's ``run`` that turns a 401/403 into an ERROR at once, with :func:`auth_hint`
    (polls end on an AuthError instead of waiting out their deadline)."""

    @functools.wraps(run)
    def wrapped(self: Check, ctx: SmokeContext) -> CheckResult:
        try:
            return run(self, ctx)
        except AuthError as exc:
            return self.result(
                Status.ERROR,
                str(exc),
                hint=auth_hint(exc),
                deadline=self.deadline(ctx),
                # The diagnosis does not ask a component that refused the credentials again.
                data={"credentials_refused": exc.system},
            )

    return wrapped  # type: ignore[return-value]


#: What a check's hint says when no fact read explains its failure (the diagnosis
#: replaces it when one does).
_GUESS = "a guess, no fact read explains it: "


# --------------------------------------------------------------------------------------------
# truncated traces

#: Hint of a FAIL on a trace Tempo answered as PARTIAL (docs/reference/tempo.md §4.3).
TRUNCATED_HINT = (
    "the trace is over Tempo's max_bytes_per_trace (overrides.defaults.global."
    "max_bytes_per_trace, 5 MB by default, per tenant): the ingester refused the spans past the "
    'limit (tempo_discarded_spans_total{reason="trace_too_large"}) and Tempo answers what it '
    "kept; raise the limit, or look for another writer of the same trace ID"
)


def truncated_detail(trace: Trace) -> str:
    """What Tempo said about a trace it answered as PARTIAL, quoting its message (v2's
    ``message``, or v1's 422 text)."""
    said = trace.message or "status PARTIAL, no message"
    return f'Tempo truncated the trace: "{said}"'


# --------------------------------------------------------------------------------------------
# preflight


def _worth_waiting(error: BackendError) -> bool:
    """Whether a fresh deploy explains ``error``: refused, unreachable or timed out, "not
    ready", or a 502/503/504 (gRPC UNAVAILABLE) from a backend or the proxy before it. A
    401/403, a 404, a TLS failure or a garbled answer will not go away by waiting."""
    if isinstance(error, NotReady):
        return True
    if isinstance(error, Unreachable):
        return not error.cause.startswith("TLS")
    if isinstance(error, HTTPStatusError):
        return error.status in (502, 503, 504, "UNAVAILABLE")
    return False


class _NotWorthWaiting(Exception):
    """Carries an error that ends a readiness wait out of :func:`~tracecheck.polling.poll_until`
    (which keeps polling through every BackendError)."""

    def __init__(self, error: BackendError) -> None:
        self.error = error


class ReadinessCheck(Check):
    """A preflight check: one round of readiness questions, asked again and again through
    connection refused and 503 for up to ``smoke.wait_ready`` (``--wait-ready``) when that is
    set, so ``smoke`` right after a deploy waits for the backends instead of failing. Each
    refusal is reported as it changes (progress state ``wait``); the result says how long it
    waited and what the component last said."""

    stage = "preflight"
    deadline_key = "preflight"

    def deadline(self, ctx: SmokeContext) -> float | None:
        return max(ctx.settings.deadlines.preflight, ctx.settings.smoke.wait_ready)

    def ask(self, ctx: SmokeContext, left: Callable[[], float]) -> CheckResult:
        """One round of questions; ``left()`` is the timeout for each request."""
        raise NotImplementedError

    def run(self, ctx: SmokeContext) -> CheckResult:
        wait = ctx.settings.smoke.wait_ready
        per_round = ctx.settings.deadlines.preflight
        if not wait:
            return self.ask(ctx, self.budget(ctx))
        clock = ctx.clock
        started = clock.monotonic()
        end = started + max(wait, per_round)
        last: list[str] = []

        def probe() -> Probe[CheckResult]:
            round_end = min(end, clock.monotonic() + per_round)
            left = lambda: max(MIN_REQUEST_TIMEOUT, round_end - clock.monotonic())  # noqa: E731
            try:
                return Probe(True, self.ask(ctx, left), "ready")
            except BackendError as exc:
                if not _worth_waiting(exc):
                    raise _NotWorthWaiting(exc) from exc
                last.append(exc.cause)
                del last[:-1]
                elapsed = clock.monotonic() - started
                ctx.progress(Progress(self.name, "wait", str(exc), elapsed, wait))
                raise

        s = ctx.settings.smoke
        try:
            outcome = poll_until(probe, end - started, clock, initial=s.poll_initial,
                                 cap=max(s.poll_max, 1.0))  # fmt: skip
        except _NotWorthWaiting as stop:
            raise stop.error from None
        if outcome.ok and outcome.value is not None:
            if not last:
                return outcome.value
            detail = (
                f"{outcome.value.detail} (waited {outcome.elapsed:.1f} s, {outcome.attempts} "
                f"attempts; it last said: {last[-1]})"
            )
            return replace(outcome.value, detail=detail)
        error = outcome.error
        assert error is not None  # poll_until fails only after a BackendError here
        limit = f"--wait-ready {_duration(wait)}"
        if per_round > wait:
            limit = f"deadlines.preflight {_duration(per_round)}, longer than {limit}"
        cause = (
            f"not ready after waiting {_duration(outcome.elapsed)} ({limit}; "
            f"{outcome.attempts} attempts); last answer: {error.cause}"
        )
        raise type(error)(error.system, error.address, cause) if type(error) in (
            NotReady, Unreachable
        ) else NotReady(error.system, error.address, cause)  # fmt: skip


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{seconds:.1f}s"


class CollectorPreflight(ReadinessCheck):
    name = "preflight.collector"
    title = "collector reachable (health_check, else gRPC connect)"
    hop = "collector"
    error_hint = "is the OpenTelemetry Collector running and reachable (health_check on 13133)?"
    backend = "collector"

    def ask(self, ctx: SmokeContext, left: Callable[[], float]) -> CheckResult:
        c = ctx.settings.collector
        ctx.collector().health(timeout=left())
        how = (
            f"health_check {c.health_url} answered"
            if c.health_url
            else f"gRPC {c.endpoint} connected"
        )
        return self.result(Status.PASS, how)


class TempoPreflight(ReadinessCheck):
    name = "preflight.tempo"
    title = "Tempo ready (/ready) and its version"
    hop = "tempo"
    error_hint = "is Tempo running and its query frontend reachable (port 3200)?"
    backend = "tempo"

    @ends_on_auth_error
    def run(self, ctx: SmokeContext) -> CheckResult:
        return super().run(ctx)

    def ask(self, ctx: SmokeContext, left: Callable[[], float]) -> CheckResult:
        tempo = ctx.tempo()
        tempo.ready(timeout=left())
        try:
            version = tempo.buildinfo(timeout=left()).version
        except HTTPStatusError as exc:
            if exc.status != 404:
                raise
            prefix = tempo.configured_api_prefix(timeout=left())
            if prefix is not None and prefix != tempo.api_prefix:
                runs = f"http_api_prefix {prefix!r}" if prefix else "no http_api_prefix"
                fix = f"--tempo-api-prefix {prefix}" if prefix else "no --tempo-api-prefix"
                return self.result(
                    Status.ERROR,
                    f"ready, but {exc.address} answered 404: Tempo runs with {runs} (its "
                    "/status/config says so)",
                    hint=f"set {fix} (tempo.api_prefix = {prefix!r}): Tempo serves its API "
                    "under http_api_prefix and /ready, /status and /metrics at the root",
                )
            # buildinfo exists since 2.3 (docs/reference/tempo.md §13); older Tempo still
            # answers /ready.
            version = f"unknown ({exc.cause})"
        except BackendError as exc:
            if _worth_waiting(exc) and ctx.settings.smoke.wait_ready:
                raise
            version = f"unknown ({exc.cause})"
        ctx.target["tempo_version"] = version
        return self.result(Status.PASS, f"ready; version {version}", data={"version": version})


class PrometheusPreflight(ReadinessCheck):
    name = "preflight.prometheus"
    title = "Prometheus ready (/-/ready), its version and exemplar storage"
    hop = "prometheus"
    error_hint = "is Prometheus running and reachable (port 9090)?"
    backend = "prometheus"

    @ends_on_auth_error
    def run(self, ctx: SmokeContext) -> CheckResult:
        return super().run(ctx)

    def ask(self, ctx: SmokeContext, left: Callable[[], float]) -> CheckResult:
        prom = ctx.prometheus()
        prom.ready(timeout=left())
        version = prom.buildinfo(timeout=left()).version
        exemplars = prom.exemplar_storage_enabled(timeout=left())
        ctx.exemplar_storage = exemplars
        ctx.target["prometheus_version"] = version
        state = {True: "on", False: "OFF", None: "unknown"}[exemplars]
        return self.result(
            Status.PASS,
            f"ready; version {version}; exemplar storage {state}",
            data={"version": version, "exemplar_storage": exemplars},
        )


# --------------------------------------------------------------------------------------------
# send


class SendTrace(Check):
    name = "send"
    title = "synthetic trace accepted by the collector"
    stage = "send"
    hop = "client -> collector"
    requires = ("preflight.collector",)
    deadline_key = "send"
    error_hint = "the collector refused or dropped the export; check its OTLP receiver and logs"
    flow = "synthetic"
    path = (hops.COLLECTOR,)
    backend = "collector"

    def run(self, ctx: SmokeContext) -> CheckResult:
        s = ctx.settings
        trace = ctx.trace
        if trace is None:
            trace = build_trace(
                seed=ctx.seed,
                end_ns=int(ctx.clock.time() * 1e9),
                client_service=s.smoke.client_service,
                server_service=s.smoke.server_service,
            )
            ctx.trace = trace
        result = ctx.collector().export(
            trace.to_otlp(), protocol=s.collector.protocol, timeout=self.deadline(ctx)
        )
        ctx.sent = sent = Sent(ctx.clock.monotonic(), ctx.clock.time())
        data = {
            "protocol": result.protocol,
            "spans": result.spans,
            "attempts": result.attempts,
            "rejected_spans": result.rejected_spans,
            # unix time the export returned: delays of later checks are counted from here
            "sent_at": round(sent.wall, 6),
        }
        detail = (
            f"{result.spans} spans over {result.protocol} to {result.address} "
            f"in {result.elapsed * 1000:.0f} ms"
            + (f" after {result.attempts} attempts" if result.attempts > 1 else "")
        )
        if result.rejected_spans:
            return self.result(
                Status.FAIL,
                f"{detail}; partial success: {result.rejected_spans} rejected: "
                f"{result.error_message}",
                hint="the collector (or the backend behind it) rejected spans: see error_message",
                elapsed=result.elapsed,
                data=data,
            )
        if result.error_message:
            return self.result(
                Status.WARN,
                f"{detail}; warning: {result.error_message}",
                elapsed=result.elapsed,
                data=data,
            )
        return self.result(Status.PASS, detail, elapsed=result.elapsed, data=data)


# --------------------------------------------------------------------------------------------
# verify


class CollectorExported(Check):
    name = "collector.exported"
    title = "collector exported the spans (its own metrics), not only accepted them"
    hop = "collector -> tempo"
    requires = ("send",)
    deadline_key = "trace_by_id"
    error_hint = "the collector's self-metrics endpoint (8888) is not reachable"
    flow = "synthetic"
    path = (hops.COLLECTOR, hops.EXPORT)
    backend = "collector"
    confirms = (hops.COLLECTOR, hops.EXPORT)

    def before_send(self, ctx: SmokeContext) -> PipelineCounters | None:
        if not ctx.settings.collector.metrics_url:
            return None
        return ctx.collector().counters(timeout=ctx.settings.deadlines.preflight)

    def run(self, ctx: SmokeContext) -> CheckResult:
        if not ctx.settings.collector.metrics_url:
            return self.result(Status.SKIP, "collector.metrics_url is not set")
        before = ctx.baseline(self, PipelineCounters)
        expected = len(ctx.synthetic().spans)
        collector = ctx.collector()

        def probe(timeout: float) -> Probe[PipelineCounters]:
            now = collector.counters(timeout=timeout)
            sent = now.sent - before.sent
            return Probe(sent >= expected, now, f"exporter sent +{sent:g} of {expected} spans")

        outcome = self.poll(ctx, probe, request_timeout=ctx.settings.collector.timeout)
        measured = self.measured(ctx, outcome)
        if outcome.value is None:
            return self.result(
                Status.FAIL,
                f"{outcome.seen} within {outcome.elapsed:.1f} s",
                hint="the collector accepted the spans but did not export them: check its "
                "otlp exporter's endpoint (Tempo's OTLP port) and its logs",
                **measured,
            )
        now = outcome.value
        failed = (now.send_failed - before.send_failed) + (
            now.enqueue_failed - before.enqueue_failed
        )
        refused = now.refused - before.refused
        detail = f"accepted +{now.accepted - before.accepted:g}, sent +{now.sent - before.sent:g}"
        status = Status.PASS
        if failed > 0 or refused > 0:
            status = Status.WARN
            detail += f"; meanwhile {failed:g} failed and {refused:g} refused spans"
        return self.result(status, detail, **measured)


class TempoTraceById(Check):
    name = "tempo.trace_by_id"
    title = "Tempo returns every span sent, by trace ID, with IDs, parents, names, attributes"
    hop = "collector -> tempo"
    requires = ("send", "preflight.tempo")
    deadline_key = "trace_by_id"
    error_hint = "Tempo's query API failed while polling for the trace"
    flow = "synthetic"
    path = (hops.COLLECTOR, hops.EXPORT, hops.TEMPO)
    backend = "tempo"
    confirms = (hops.COLLECTOR, hops.EXPORT)

    @ends_on_auth_error
    def run(self, ctx: SmokeContext) -> CheckResult:
        trace = ctx.synthetic()
        tempo = ctx.tempo()
        # A ±10 min window around the trace (docs/reference/tempo.md §17 point 3).
        start = trace.start_ns / 1e9 - 600
        end = trace.end_ns / 1e9 + 600

        truncated: list[Trace] = []

        def probe(timeout: float) -> Probe[list[str]]:
            got = tempo.trace(trace.trace_id, start=start, end=end, timeout=timeout)
            if got.partial:
                # Tempo left spans out; waiting longer cannot bring them back.
                truncated.append(got)
                return Probe(True, None, truncated_detail(got))
            if not got.found:
                return Probe(False, None, "not found yet")
            problems = compare_trace(trace, got)
            seen = f"{len(got.spans)} of {len(trace.spans)} spans"
            if problems:
                seen += f"; {problems[0]}" + (
                    f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
                )
            return Probe(not problems, problems, seen)

        outcome = self.poll(ctx, probe, request_timeout=ctx.settings.tempo.timeout)
        measured = self.measured(ctx, outcome)
        if truncated:
            sent_ids = {s.span_id for s in trace.spans}
            back = sum(1 for s in truncated[0].spans if s.span_id in sent_ids)
            return self.result(
                Status.FAIL,
                f"trace {trace.trace_id_hex}: {outcome.seen}; {back} of the "
                f"{len(trace.spans)} spans sent came back",
                hint=TRUNCATED_HINT,
                data={"partial": True, "message": truncated[0].message},
                **measured,
            )
        if outcome.ok:
            return self.result(
                Status.PASS,
                f"trace {trace.trace_id_hex}: all {len(trace.spans)} spans match",
                **measured,
            )
        exported = ctx.results.get("collector.exported")
        if exported is not None and exported.ok:
            hint = "the collector exported the spans (collector.exported passed), so Tempo "
            hint += f"dropped them or cannot find them; {_GUESS}see Tempo's distributor and "
            hint += "ingester (tempo_discarded_spans_total)"
        else:
            seen = "was not measured" if exported is None else f"is {exported.status.value}"
            hint = f"the collector's export of the spans {seen} (collector.exported); {_GUESS}"
            hint += "the spans never left the collector or never reached Tempo's OTLP receiver "
            hint += "(Tempo 2.7+ binds receivers to localhost unless told 0.0.0.0)"
        return self.result(
            Status.FAIL,
            f"trace {trace.trace_id_hex} after {outcome.elapsed:.1f} s: {outcome.seen}",
            hint=hint,
            **measured,
        )


class TempoSearch(Check):
    name = "tempo.search"
    title = "TraceQL search finds the trace by its run_id within the time window"
    hop = "tempo ingester -> search"
    requires = ("send", "preflight.tempo")
    deadline_key = "search"
    error_hint = "Tempo's search API failed while polling"
    flow = "synthetic"
    path = (hops.COLLECTOR, hops.EXPORT, hops.TEMPO)
    backend = "tempo"

    @ends_on_auth_error
    def run(self, ctx: SmokeContext) -> CheckResult:
        trace = ctx.synthetic()
        tempo = ctx.tempo()
        query = f"{{ span.{RUN_ID_ATTRIBUTE} = {quote(trace.run_id)} }}"
        start = int(trace.start_ns / 1e9) - 300

        def probe(timeout: float) -> Probe[int]:
            end = int(ctx.clock.time()) + 60
            result = tempo.search(query, start=start, end=end, limit=20, timeout=timeout)
            # Search IDs are hex with leading zeros stripped (docs/reference/tempo.md §5.3): find()
            # compares bytes.
            hit = result.find(trace.trace_id)
            if hit is not None:
                return Probe(True, hit.matched, f"found; {hit.matched} spans matched")
            return Probe(False, None, f"not found yet ({len(result.traces)} other traces)")

        outcome = self.poll(ctx, probe, request_timeout=ctx.settings.tempo.timeout)
        measured = self.measured(ctx, outcome)
        if outcome.ok:
            matched = outcome.value or 0
            detail = f"{query} found trace {trace.trace_id_hex}; {matched} spans matched"
            status = Status.PASS
            if matched != len(trace.spans):
                status = Status.WARN
                detail += f" (expected {len(trace.spans)})"
            return self.result(status, detail, **measured)
        by_id = ctx.results.get("tempo.trace_by_id")
        hint = "Tempo holds the trace but search does not see it: the ingester makes a trace "
        hint += "searchable only trace_idle_period after its last span; check the search "
        hint += "time range and query frontend"
        if by_id is None or not by_id.ok:
            hint = "the trace is not in Tempo at all: see tempo.trace_by_id"
        return self.result(Status.FAIL, f"{query}: {outcome.seen}", hint=hint, **measured)


@dataclass(frozen=True, slots=True)
class SpanMetricsBaseline:
    """``prometheus.span_metrics``'s baseline: per name family, the calls counter and the
    latency buckets of the synthetic SERVER span (restart-aware snapshots)."""

    per_family: Mapping[Naming, tuple[Snapshot, Snapshot]]


@dataclass(frozen=True, slots=True)
class CallsBaseline:
    """A baseline of one calls counter per name family (the apiserver's span-metrics)."""

    per_family: Mapping[Naming, CounterSnapshot]


def span_metric_families(ctx: SmokeContext) -> tuple[Naming, ...]:
    """The span-metric name families to watch (tracecheck.spanmetrics.candidates), asked of
    Prometheus once per run and shared by every check that reads span-metrics."""
    cached = ctx.span_metric_families
    if cached is None:
        names = ctx.prometheus().label_values(
            "__name__",
            match=[f'{{__name__=~"{NAMES_REGEX}"}}'],
            timeout=ctx.settings.deadlines.preflight,
        )
        cached = candidates(names, ctx.settings.smoke.span_metrics_naming)
        ctx.span_metric_families = cached
    return cached


class _PrometheusCheck(Check):
    """Base of the three checks of Tempo's metrics-generator output in Prometheus. They share
    the run's :class:`~tracecheck.smoke.restarts.Restarts`: restart-aware increases, re-probes
    with a new trace when the latest one's data may be lost, and a deadline that a re-probe
    moves (see :mod:`tracecheck.smoke.restarts`)."""

    error_hint = "Prometheus's query API failed while polling"
    flow = "synthetic"
    backend = "prometheus"
    #: The generator's processor this check's series come from.
    processor_hop = hops.GENERATOR_SPAN_METRICS

    def __init__(self, *, via_tempo: bool = True) -> None:
        # Tempo's metrics-generator writes these series, so a Tempo that is down explains their
        # absence; the collector's connectors (otel naming) produce them without Tempo.
        self.via_tempo = via_tempo
        self.requires = ("send", "preflight.prometheus") + (
            ("preflight.tempo",) if via_tempo else ()
        )
        generator = (hops.TEMPO, self.processor_hop, hops.REMOTE_WRITE) if via_tempo else ()
        self.path = (hops.COLLECTOR, hops.EXPORT, *generator, hops.PROMETHEUS)

    def families(self, ctx: SmokeContext) -> tuple[Naming, ...]:
        return span_metric_families(ctx)

    def again(self, ctx: SmokeContext) -> tuple[str, ...]:
        """While this check waits for a re-probe's data (:mod:`tracecheck.smoke.restarts`): the
        hops the run's trace passed, which the re-probe must pass again. A stopped collector
        blocks it there; a fact about such a hop does not (an exporter that sent nothing for a
        while may be the wake of the very restart that asked for the re-probe, and it
        retries)."""
        if not self.restarts(ctx).waits_for_reprobe(self.name):
            return ()
        ahead = self.ahead(ctx)
        return tuple(h for h in self.path if h not in ahead)

    def ahead(self, ctx: SmokeContext) -> tuple[str, ...]:
        hops_ahead = super().ahead(ctx)
        # The collector's spanmetrics connector (otel naming) produces these series without
        # Tempo: when that family is watched and the collector the trace went to may run it (it
        # counts metric points, or its metrics cannot be read), Tempo's hops cannot block them.
        if any(f.flavour == "otel" for f in self.families(ctx)) and _connector_possible(ctx):
            hops_ahead = tuple(h for h in hops_ahead if h in (hops.COLLECTOR, hops.PROMETHEUS))
        return hops_ahead

    def restarts(self, ctx: SmokeContext) -> Restarts:
        return restarts(ctx)

    def take(self, ctx: SmokeContext, selector: str) -> Snapshot:
        return snapshot(
            ctx.prometheus(),
            selector,
            now=ctx.clock.time(),
            timeout=ctx.settings.deadlines.preflight,
        )

    def rose(self, ctx: SmokeContext, base: Snapshot, timeout: float) -> Increase:
        r = self.restarts(ctx)
        return increase(
            ctx.prometheus(),
            base,
            now=ctx.clock.time(),
            restarts=r.restart_times(),
            timeout=timeout,
        )

    def watch_generator(self, ctx: SmokeContext, *, exemplars: bool = False) -> None:
        """Between polls: note restarts and dropped batches of the generator; re-probe (send a
        new trace) when the latest trace's data may be lost. Only the exemplars check re-probes
        for a dropped batch: counters are cumulative and recover at the next collection."""
        if self.via_tempo:
            self.restarts(ctx).step(ctx, self.name, exemplars=exemplars)

    def extension(self, ctx: SmokeContext) -> Callable[[], float]:
        deadline = self.deadline(ctx) or 0.0
        return lambda: self.restarts(ctx).extension(deadline)

    def before_send(self, ctx: SmokeContext) -> object:
        if self.via_tempo:
            self.restarts(ctx).refresh(ctx, force=True)
        return None

    def sent(self, ctx: SmokeContext) -> Sent | None:
        return ctx.sent


def _connector_possible(ctx: SmokeContext) -> bool:
    watch = ctx.watch
    readings = watch.collector_readings() if watch is not None else []
    if not readings:
        return True  # cannot tell: do not let Tempo's hops block
    return readings[-1][2].metric_points is not False


class SpanMetrics(_PrometheusCheck):
    name = "prometheus.span_metrics"
    title = "span-metrics calls_total rose by the spans sent; the latency histogram has them"
    hop = "tempo metrics-generator -> prometheus"
    deadline_key = "span_metrics"

    def _queries(self, ctx: SmokeContext, fam: Naming) -> tuple[str, str]:
        service = ctx.settings.smoke.server_service
        calls = fam.selector(fam.calls, service)
        buckets = fam.selector(
            fam.latency_bucket, service, span_name="GET /checkout", span_kind="SPAN_KIND_SERVER"
        )
        return calls, buckets

    def _baseline(self, ctx: SmokeContext) -> SpanMetricsBaseline:
        base = {}
        for fam in self.families(ctx):
            calls, buckets = self._queries(ctx, fam)
            base[fam] = (self.take(ctx, calls), self.take(ctx, buckets))
        return SpanMetricsBaseline(base)

    def before_send(self, ctx: SmokeContext) -> SpanMetricsBaseline:
        super().before_send(ctx)
        return self._baseline(ctx)

    def run(self, ctx: SmokeContext) -> CheckResult:
        state = _Measure(ctx.baseline(self, SpanMetricsBaseline).per_family)
        trace = ctx.synthetic()
        per_trace = trace.count_for(ctx.settings.smoke.server_service)
        server = trace.span("server")
        r = self.restarts(ctx)
        rebaselined: list[str] = []

        def probe(timeout: float) -> Probe[tuple[Naming, float, dict[float, float], int]]:
            self.watch_generator(ctx)
            seen = []
            sent = r.count() - state.first  # traces that may count
            for fam, (calls_base, buckets_base) in state.base.items():
                got = self.rose(ctx, calls_base, timeout)
                if got.ambiguous and not rebaselined and r.count() <= MAX_RESENDS:
                    # A writer outage without a known restart: measure again from after it.
                    rebaselined.extend(got.ambiguous)
                    state.base = self._baseline(ctx).per_family
                    state.first = r.count()
                    r.resend(
                        ctx,
                        "the series paused longer than "
                        f"{GAP_FACTOR:g} times their cadence without a known restart "
                        f"({got.ambiguous[0]}): measured again from a fresh baseline",
                        check=self.name,
                    )
                    return Probe(False, None, f"{fam.calls} re-baselined after a writer outage")
                rose = got.total
                seen.append(f"{fam.calls} +{rose:g}")
                if rose >= per_trace:
                    deltas = _by_le(self.rose(ctx, buckets_base, timeout).per_series)
                    if deltas.get(float("inf"), 0.0) >= 1:
                        return Probe(
                            True, (fam, rose, deltas, max(1, sent)), f"{fam.calls} +{rose:g}"
                        )
                    seen[-1] += " (histogram not yet)"
            return Probe(False, None, ", ".join(seen) + f" of {per_trace}")

        outcome = self.poll(
            ctx, probe, request_timeout=ctx.settings.prometheus.timeout, extend=self.extension(ctx)
        )
        measured = self.measured(ctx, outcome)
        note = r.note()
        if not outcome.ok or outcome.value is None:
            return self.result(
                Status.FAIL,
                f"{outcome.seen} after {outcome.elapsed:.1f} s" + (f"; {note}" if note else ""),
                hint=self._fail_hint(ctx),
                **measured,
            )
        fam, rose, deltas, traces = outcome.value
        ctx.target["span_metrics_naming"] = fam.flavour
        duration = server.duration_s
        first = min((le for le, d in deltas.items() if d >= 1), default=float("inf"))
        lower = [le for le in deltas if le * fam.le_to_seconds < duration]
        misplaced = [le for le in lower if deltas[le] >= 1]
        expected = f"expected {per_trace}" if traces == 1 else (
            f"expected {per_trace} per trace, {traces} traces sent"
        )  # fmt: skip
        detail = (
            f"{fam.calls}{{{fam.service_label}={quote(ctx.settings.smoke.server_service)}}} "
            f"+{rose:g} ({expected}); SERVER span {duration * 1000:.0f} ms observed in "
            f"bucket le={_fmt_le(first)} ({fam.flavour} naming)"
        )
        if note:
            detail += f"; {note}"
        if misplaced or first * fam.le_to_seconds < duration:
            return self.result(
                Status.FAIL,
                detail + f"; but buckets below the duration rose: {sorted(misplaced)}",
                hint="the latency histogram's unit or buckets are wrong: the "
                f"{duration * 1000:.0f} ms SERVER span was counted in le={sorted(misplaced)}",
                **measured,
            )
        # One trace: exactly its spans. Several (re-probes): the spans of 1..n of them, since a
        # trace sent before a restart may have been lost with it.
        exact = (
            rose == per_trace
            if traces == 1
            else rose % per_trace == 0 and rose <= per_trace * traces
        )
        status = Status.PASS if exact else Status.WARN
        if status is Status.WARN:
            detail += "; more than expected: other traffic for this service"
        return self.result(
            status,
            detail,
            data={
                "naming": fam.flavour,
                "increase": rose,
                "expected": per_trace,
                "traces": traces,
                "trace_ids": [t.hex() for t in r.trace_ids()],
            },
            **measured,
        )

    def _fail_hint(self, ctx: SmokeContext) -> str:
        by_id = ctx.results.get("tempo.trace_by_id")
        where = (
            "Tempo holds the trace (tempo.trace_by_id passed), so its metrics-generator did not "
            "count it or its remote write did not reach Prometheus"
            if by_id is not None and by_id.ok
            else "the trace did not reach Tempo (see tempo.trace_by_id)"
        )
        return (
            f"{where}; {_GUESS}the span-metrics processor is off "
            "(overrides.defaults.metrics_generator.processors), Prometheus lacks "
            "--web.enable-remote-write-receiver, or the spans ended outside the generator's 30 s "
            "ingestion slack (clock skew)"
        )


@dataclass
class _Measure:
    """What a span-metrics poll measures from: the baselines, and the index of the first trace
    sent after them (a re-baseline after a writer outage moves both)."""

    base: Mapping[Naming, tuple[Snapshot, Snapshot]]
    first: int = 0


def _by_le(per_series: Mapping[SeriesKey, float]) -> dict[float, float]:
    """Bucket-counter increases summed per ``le`` bound."""
    out: dict[float, float] = {}
    for key, rose in per_series.items():
        le = float(dict(key).get("le", "nan"))
        if le == le:  # not NaN
            out[le] = out.get(le, 0.0) + rose
    return out


def _fmt_le(le: float) -> str:
    return "+Inf" if le == float("inf") else f"{le:g}"


class Exemplars(_PrometheusCheck):
    name = "prometheus.exemplars"
    title = "the latency histogram's exemplars carry the synthetic trace ID"
    hop = "tempo metrics-generator -> prometheus (exemplars)"
    deadline_key = "exemplars"

    def run(self, ctx: SmokeContext) -> CheckResult:
        from tracecheck.ids import parse_trace_id

        if ctx.exemplar_storage is False:
            return self.result(
                Status.WARN,
                "Prometheus runs without exemplar storage, so exemplars are dropped silently; "
                "start it with --enable-feature=exemplar-storage to verify them",
                hint="Prometheus's /api/v1/status/flags: enable-feature does not list "
                "exemplar-storage; start it with --enable-feature=exemplar-storage",
            )
        trace = ctx.synthetic()
        service = ctx.settings.smoke.server_service
        prom = ctx.prometheus()
        start = trace.start_ns / 1e9 - 60
        r = self.restarts(ctx)

        def probe(timeout: float) -> Probe[tuple[Naming, bytes]]:
            self.watch_generator(ctx, exemplars=True)
            wanted = r.trace_ids() or [trace.trace_id]
            count = 0
            for fam in self.families(ctx):
                selector = fam.selector(fam.latency_bucket, service)
                series = prom.query_exemplars(
                    selector, start=start, end=ctx.clock.time() + 60, timeout=timeout
                )
                for s in series:
                    for ex in s.exemplars:
                        count += 1
                        for label in fam.exemplar_labels:
                            value = ex.labels.get(label)
                            got = _which_trace(parse_trace_id, value, wanted) if value else None
                            if got is not None:
                                return Probe(True, (fam, got), f"exemplar {label}={value}")
            return Probe(False, None, f"{count} exemplars, none with our trace ID")

        outcome = self.poll(
            ctx, probe, request_timeout=ctx.settings.prometheus.timeout, extend=self.extension(ctx)
        )
        measured = self.measured(ctx, outcome)
        note = r.note()
        if outcome.ok and outcome.value is not None:
            fam, tid = outcome.value
            detail = f"{fam.latency_bucket}: {outcome.seen}"
            if tid != trace.trace_id:
                detail += f" (re-probe trace {tid.hex()})"
            if note:
                detail += f"; {note}"
            return self.result(Status.PASS, detail, **measured)
        unknown = ctx.exemplar_storage is None
        spans_ok = ctx.results.get("prometheus.span_metrics")
        observed = (
            "span-metrics of the trace arrived (prometheus.span_metrics passed) but no exemplar "
            "with its trace ID"
            if spans_ok is not None and spans_ok.ok
            else "no exemplar with the trace's ID arrived"
        )
        hint = (
            observed
            + "; "
            + _GUESS
            + (
                "Prometheus may lack --enable-feature=exemplar-storage (its flags could not be "
                "read)"
                if unknown
                else "a remote-write batch carrying it was refused; Tempo 2.9 always sends "
                "exemplars"
            )
        )
        return self.result(
            Status.FAIL,
            f"{outcome.seen} after {outcome.elapsed:.1f} s" + (f"; {note}" if note else ""),
            hint=hint,
            **measured,
        )


def _which_trace(parse: Callable[[str], bytes], value: str, wanted: list[bytes]) -> bytes | None:
    try:
        got = parse(value)
    except ValueError:
        return None
    return got if got in wanted else None


class ServiceGraph(_PrometheusCheck):
    name = "prometheus.service_graph"
    title = "the service-graph edge client -> server rose"
    hop = "tempo metrics-generator (service graphs) -> prometheus"
    deadline_key = "service_graph"
    processor_hop = hops.GENERATOR_SERVICE_GRAPHS

    def _query(self, ctx: SmokeContext) -> str:
        s = ctx.settings.smoke
        return (
            f"{SERVICE_GRAPH_REQUESTS}{{client={quote(s.client_service)},"
            f"server={quote(s.server_service)}}}"
        )

    def before_send(self, ctx: SmokeContext) -> Snapshot:
        super().before_send(ctx)
        return self.take(ctx, self._query(ctx))

    def run(self, ctx: SmokeContext) -> CheckResult:
        state = {"base": ctx.baseline(self, Snapshot)}
        query = self._query(ctx)
        r = self.restarts(ctx)
        rebaselined: list[str] = []

        def probe(timeout: float) -> Probe[float]:
            self.watch_generator(ctx)
            got = self.rose(ctx, state["base"], timeout)
            if got.ambiguous and not rebaselined and r.count() <= MAX_RESENDS:
                rebaselined.extend(got.ambiguous)
                state["base"] = self.take(ctx, query)
                r.resend(
                    ctx,
                    f"the edge series paused longer than {GAP_FACTOR:g} times its cadence "
                    "without a known restart: measured again from a fresh baseline",
                    check=self.name,
                )
                return Probe(False, None, "re-baselined after a writer outage")
            rose = got.total
            return Probe(rose >= 1, rose, f"+{rose:g}")

        outcome = self.poll(
            ctx, probe, request_timeout=ctx.settings.prometheus.timeout, extend=self.extension(ctx)
        )
        measured = self.measured(ctx, outcome)
        note = r.note()
        if outcome.ok:
            return self.result(
                Status.PASS, f"{query} {outcome.seen}" + (f"; {note}" if note else ""), **measured
            )
        return self.result(
            Status.FAIL,
            f"{query} {outcome.seen} after {outcome.elapsed:.1f} s" + (f"; {note}" if note else ""),
            hint="the edge tracecheck-client -> tracecheck-server did not rise; "
            + _GUESS
            + "the service-graphs processor is off, or the CLIENT and SERVER spans did not reach "
            "the same generator within its wait (10 s)",
            **measured,
        )


def pipeline_checks(settings: Settings) -> list[Check]:
    """The pipeline's checks, in display order (the apiserver leg follows them)."""
    via_tempo = settings.smoke.span_metrics_naming != "otel"
    return [
        CollectorPreflight(),
        TempoPreflight(),
        PrometheusPreflight(),
        SendTrace(),
        CollectorExported(),
        TempoTraceById(),
        TempoSearch(),
        SpanMetrics(via_tempo=via_tempo),
        Exemplars(via_tempo=via_tempo),
        ServiceGraph(via_tempo=via_tempo),
    ]
