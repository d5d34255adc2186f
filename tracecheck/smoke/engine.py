"""The engine of ``tracecheck smoke``: checks, the shared context of a run, and the runner.

A run goes in three stages; the checks of a stage run in parallel:

1. ``preflight``: every backend answers its readiness endpoint;
2. ``send``: the synthetic trace goes to the collector (other legs, such as the apiserver's
   traced requests, send here too). Before it, every later check takes its baseline
   (``before_send``), so counters are compared with their value from before the send;
3. ``verify``: each check polls its backend until the data is visible or its deadline passes,
   recording the send-to-visible delay. Together those delays form the pipeline latency table.

A check that cannot run because a check it ``requires`` did not pass is SKIPped; one whose
backend is unreachable is an ERROR (exit 3); one whose data does not arrive is a FAIL (exit 1)
with a hint naming the likely broken hop. The checks themselves live in
:mod:`~tracecheck.smoke.pipeline_checks` and :mod:`~tracecheck.smoke.apiserver_checks`;
:mod:`~tracecheck.smoke.plan` lists them.

**Early verdicts.** From the end of the preflights to the end of the run a
:class:`~tracecheck.diagnose.watch.Watch` keeps asking each component that passed its preflight
whether it is alive, and reads the configuration facts and self-metrics that make a hop
certainly dead. A check declares the hops its data passes (``path``, names from
:mod:`tracecheck.diagnose.hops`) and the component it asks (``backend``); while it polls, the
first hop of its path that its data has not yet passed (``confirms`` of the checks that passed
record what the data got past) and that the watch knows dead ends the poll at once: the check
is an ERROR when the dead component is the one it asks, else a FAIL "blocked by ...". A healthy
run is never stopped early, so its timing is unchanged.

**Diagnosis.** When a check failed, or the watch saw a component go down, the run ends with
:func:`tracecheck.diagnose.diagnosis.diagnose_run`: the components are read once more, and the
report gets one :class:`~tracecheck.results.Diagnosis` naming the first broken hop with its
evidence; the later failures are marked as following from it.

Why one module (about 650 lines): the check base class, the run's state and the runner decide
together when a check runs, polls, is blocked and how its result reads; the watch and the
diagnosis they start live in :mod:`tracecheck.diagnose`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tracecheck._version import __version__
from tracecheck.backends import Backends
from tracecheck.config import Settings
from tracecheck.errors import BackendError, UsageError
from tracecheck.polling import Clock, PollOutcome, Probe, SystemClock, poll_until
from tracecheck.results import CheckResult, Diagnosis, Report, Status
from tracecheck.smoke.synth import SyntheticTrace

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends.apiserver import ApiserverClient, TrustMode, UserInfo
    from tracecheck.backends.collector import CollectorClient
    from tracecheck.backends.prometheus import PrometheusClient
    from tracecheck.backends.tempo import TempoClient
    from tracecheck.diagnose.facts import Inspection
    from tracecheck.diagnose.hops import Block
    from tracecheck.diagnose.watch import Watch
    from tracecheck.spanmetrics import Naming

__all__ = [
    "MIN_REQUEST_TIMEOUT",
    "STAGES",
    "ApiserverLeg",
    "Check",
    "Progress",
    "RequestRecord",
    "Sent",
    "SmokeContext",
    "run_checks",
    "run_plan",
    "select_checks",
]

T = TypeVar("T")
STAGES = ("preflight", "send", "verify")
#: Shortest request timeout a poll may use when a deadline is close; bounds the overrun.
MIN_REQUEST_TIMEOUT = 0.5


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress event for live displays: a check started, polled, or finished."""

    check: str
    state: str  # "start", "poll", "done"
    message: str
    elapsed: float
    deadline: float | None


@dataclass(frozen=True, slots=True)
class Sent:
    """When a leg's data left tracecheck: ``mono`` (monotonic, delays count from it) and
    ``wall`` (unix seconds, for the report)."""

    mono: float
    wall: float


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One traced request of the apiserver leg as sent: our parent span ID and the answer."""

    method: str
    path: str
    span_id: bytes
    status: int
    audit_id: str
    started: float  # unix seconds
    elapsed: float  # seconds
    message: str = ""  # the apiserver's Status message for a 4xx/5xx

    def label(self) -> str:
        return f"{self.method} {self.path}"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "span_id": self.span_id.hex(),
            "status": self.status,
            "audit_id": self.audit_id,
            "elapsed_ms": round(self.elapsed * 1000, 3),
        }


@dataclass
class ApiserverLeg:
    """What the apiserver checks hand each other (set by the check named on each line)."""

    mode: TrustMode | None = None  # apiserver.reachable: how our traceparent is treated
    user: UserInfo | None = None  # apiserver.reachable: who we are (None: unknown)
    trace_id: bytes = b""  # apiserver.requests: the leg's own trace ID
    started: float | None = None  # apiserver.requests: unix time the first request went out
    requests: list[RequestRecord] = field(default_factory=list)  # apiserver.requests
    sent: Sent | None = None  # apiserver.requests: when the last answer came back


def _no_progress(event: Progress) -> None:
    pass


@dataclass
class SmokeContext:
    """One run's shared state: settings, clock, the backend clients, and what the checks hand
    each other, each a typed field set by the check its comment names.

    A new context is a fresh run: fresh baselines, a new seed (unless ``smoke.seed`` fixes
    it). ``backends`` may be shared between runs; the clients it opened are closed at the end
    of the run unless it was passed in (then its owner closes them).
    """

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    progress: Callable[[Progress], None] = _no_progress
    backends: Backends | None = None
    #: Threads per stage; 1 runs checks one after another (deterministic, for tests).
    workers: int = 16

    seed: int = 0  # run_plan: settings.smoke.seed, else derived from the clock
    trace: SyntheticTrace | None = None  # send (or given beforehand)
    sent: Sent | None = None  # send: when the collector accepted the synthetic trace
    exemplar_storage: bool | None = None  # preflight.prometheus (None: could not tell)
    span_metric_families: tuple[Naming, ...] | None = None  # the first span-metrics check
    apiserver: ApiserverLeg = field(default_factory=ApiserverLeg)
    #: What each check's ``before_send`` returned, by check name (see :meth:`baseline`).
    baselines: dict[str, object] = field(default_factory=dict)
    #: A backend error a check's ``before_send`` raised: the check ends as an ERROR with it.
    baseline_errors: dict[str, BackendError] = field(default_factory=dict)
    results: dict[str, CheckResult] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)  # the report's "target" section
    #: End checks early when the watch knows a hop of their path dead, and diagnose the run
    #: (see the module docstring); False polls every check to its deadline and adds no
    #: diagnosis (the behaviour before issue 9, for comparisons).
    early_verdict: bool = True
    #: The watch of this run (run_checks starts one after the preflights when early_verdict is
    #: on and the clock is the system's; tests may inject one).
    watch: Watch | None = None
    #: The blocks that ended checks early, by check name.
    blocks: dict[str, Block] = field(default_factory=dict)
    #: Hops each flow's data is known to have passed (the ``confirms`` of checks that passed).
    passed: dict[str, set[str]] = field(default_factory=dict)
    #: Per-run state of the metrics checks (restarts of the metrics-generator, re-probes).
    metrics_state: dict[str, Any] = field(default_factory=dict)
    #: How the diagnosis reads the components once more: ``(components, services_since)`` ->
    #: Inspection. None: tracecheck.diagnose.facts.inspect with this run's clients when the
    #: clock is the system's, else nothing is read (tests with fake clients inject one).
    inspector: Callable[[Sequence[str], float | None], Inspection] | None = None
    _own_backends: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.backends is None:
            self.backends = Backends(self.settings, clock=self.clock)
            self._own_backends = True

    # Clients are opened on first use, so a run that skips a backend never touches it.
    def collector(self) -> CollectorClient:
        return self._backends.collector()

    def tempo(self) -> TempoClient:
        return self._backends.tempo()

    def prometheus(self) -> PrometheusClient:
        return self._backends.prometheus()

    def apiserver_client(self) -> ApiserverClient:
        return self._backends.apiserver()

    @property
    def _backends(self) -> Backends:
        assert self.backends is not None  # set in __post_init__
        return self.backends

    def close(self) -> None:
        """Close the clients this run opened (not those of a ``backends`` passed in)."""
        if self._own_backends:
            self._backends.close()

    def synthetic(self) -> SyntheticTrace:
        """The synthetic trace (a check that needs it requires ``send``, which sets it)."""
        if self.trace is None:
            raise RuntimeError("no synthetic trace: a check needing it ran before send")
        return self.trace

    def baseline(self, check: Check, kind: type[T]) -> T:
        """The baseline ``check.before_send`` returned, checked to be a ``kind``."""
        value = self.baselines.get(check.name)
        if not isinstance(value, kind):
            raise RuntimeError(f"{check.name}: no {kind.__name__} baseline (got {value!r})")
        return value


class Check:
    """One verifiable claim about the pipeline. Subclasses set the class attributes and ``run``."""

    name: ClassVar[str]
    title: ClassVar[str]
    stage: ClassVar[str] = "verify"
    hop: ClassVar[str] = ""
    #: Checks that must PASS or WARN before this one runs (an instance may narrow them).
    requires: tuple[str, ...] = ()
    #: Attribute of ``DeadlineSettings`` bounding this check (None: no polling).
    deadline_key: ClassVar[str | None] = None
    #: What to look at when the check cannot reach its backend.
    error_hint: ClassVar[str] = ""
    #: The data flow the check follows ("synthetic" or "apiserver"; "" for none).
    flow: ClassVar[str] = ""
    #: The hops (tracecheck.diagnose.hops) the check's data passes, upstream first.
    path: tuple[str, ...] = ()
    #: The component the check asks ("collector", "tempo", "prometheus", "apiserver").
    backend: ClassVar[str] = ""
    #: Hops of its flow that a PASS of this check shows the data got past.
    confirms: ClassVar[tuple[str, ...]] = ()

    @property
    def group(self) -> str:
        return self.name.split(".", 1)[0]

    def deadline(self, ctx: SmokeContext) -> float | None:
        if self.deadline_key is None:
            return None
        value: float = getattr(ctx.settings.deadlines, self.deadline_key)
        return value

    def before_send(self, ctx: SmokeContext) -> object:
        """Take a baseline before the send stage (runs only if ``requires`` passed so far).

        What it returns is kept as this check's baseline (:meth:`SmokeContext.baseline`);
        None means "no baseline"."""
        return None

    def sent(self, ctx: SmokeContext) -> Sent | None:
        """When the data this check looks for was sent: delays count from there."""
        return ctx.sent

    def run(self, ctx: SmokeContext) -> CheckResult:
        raise NotImplementedError

    # -- helpers for subclasses -------------------------------------------------------------

    def result(self, status: Status, detail: str, **kw: Any) -> CheckResult:
        kw.setdefault("hop", self.hop)
        return CheckResult(name=self.name, title=self.title, status=status, detail=detail, **kw)

    def budget(self, ctx: SmokeContext) -> Callable[[], float]:
        """A function giving the seconds left before this check's deadline (at least
        MIN_REQUEST_TIMEOUT): a check making several requests passes it to each, so together
        they cannot outlast the deadline."""
        end = ctx.clock.monotonic() + (self.deadline(ctx) or 0.0)
        return lambda: max(MIN_REQUEST_TIMEOUT, end - ctx.clock.monotonic())

    def poll(
        self,
        ctx: SmokeContext,
        probe: Callable[[float], Probe[T]],
        *,
        request_timeout: float,
        extend: Callable[[], float] | None = None,
    ) -> PollOutcome[T]:
        """Poll ``probe(timeout)`` until done or this check's deadline passes.

        Each request gets the time left before the deadline (at least MIN_REQUEST_TIMEOUT, at
        most ``request_timeout``), so a stalled backend cannot hold the check past its deadline.
        The poll ends early when a hop ahead of the check's data is known dead (:meth:`blocked`);
        ``extend`` moves the deadline (a re-probe, :mod:`tracecheck.smoke.restarts`).
        """
        deadline = self.deadline(ctx) or 0.0
        started = ctx.clock.monotonic()

        def end() -> float:
            return started + deadline + (max(0.0, extend()) if extend is not None else 0.0)

        def wrapped() -> Probe[T]:
            left = end() - ctx.clock.monotonic()
            outcome = probe(max(MIN_REQUEST_TIMEOUT, min(request_timeout, left)))
            ctx.progress(
                Progress(self.name, "poll", outcome.seen, ctx.clock.monotonic() - started, deadline)
            )
            return outcome

        s = ctx.settings.smoke
        return poll_until(
            wrapped,
            deadline,
            ctx.clock,
            initial=s.poll_initial,
            cap=s.poll_max,
            stop=lambda: self.blocked(ctx),
            extend=extend,
        )

    def ahead(self, ctx: SmokeContext) -> tuple[str, ...]:
        """The hops of :attr:`path` the data has not passed yet, plus the hop of the component
        this check asks (it must stay alive whatever the data passed)."""
        passed = ctx.passed.get(self.flow, set())
        hops = [h for h in self.path if h not in passed]
        # A component's name is its hop's (tracecheck.diagnose.hops).
        if self.backend and self.backend not in hops:
            hops.append(self.backend)
        return tuple(hops)

    def again(self, ctx: SmokeContext) -> tuple[str, ...]:
        """Hops the data passed but must pass again (a re-probe of data that was lost): they
        block the check only when their component stopped answering. None by default."""
        return ()

    def blocked(self, ctx: SmokeContext) -> str:
        """Why this check's poll should end now ("" to go on): a hop ahead is dead, or the
        component of a hop the data must pass :meth:`again` stopped answering."""
        watch = ctx.watch
        if watch is None or not ctx.early_verdict:
            return ""
        again = self.again(ctx)
        block = watch.blocking(again, facts=False) if again else None
        if block is None:
            block = watch.blocking(self.ahead(ctx))
        if block is None:
            return ""
        with ctx._lock:
            ctx.blocks.setdefault(self.name, block)
        return block.evidence

    def measured(self, ctx: SmokeContext, outcome: PollOutcome[Any]) -> dict[str, Any]:
        """:meth:`poll_fields` plus, once the data was seen, ``delay``: keyword arguments for
        :meth:`result`.

        A poll whose last probe could not reach its backend is not a FAIL: the error is raised
        again, and the plan turns it into an ERROR naming that backend. A poll ended early
        (``stopped``: a hop ahead is dead) is left to the engine, which says so.
        """
        if not outcome.ok and outcome.error is not None and not outcome.stopped:
            raise outcome.error
        fields = self.poll_fields(ctx, outcome)
        if outcome.ok:
            fields["delay"] = self.delay(ctx, outcome)
        return fields

    def poll_fields(self, ctx: SmokeContext, outcome: PollOutcome[Any]) -> dict[str, Any]:
        """``elapsed``, ``attempts`` and ``deadline`` of a poll, for :meth:`result`."""
        return {
            "elapsed": outcome.elapsed,
            "attempts": outcome.attempts,
            "deadline": self.deadline(ctx),
        }

    def delay(self, ctx: SmokeContext, outcome: PollOutcome[Any]) -> float | None:
        """Seconds from the end of the send to the first poll that saw the data."""
        sent = self.sent(ctx)
        if outcome.found_at is None or sent is None:
            return None
        return max(0.0, outcome.found_at - sent.mono)


# --------------------------------------------------------------------------------------------
# running


def select_checks(checks: Sequence[Check], only: Iterable[str], skip: Iterable[str]) -> list[Check]:
    """Apply ``--only`` / ``--skip`` (check names or group names such as ``apiserver``).

    ``--only`` keeps the named checks plus what they require; ``--skip`` drops checks, and the
    checks that need them are reported as SKIP. Unknown names raise :class:`UsageError`.
    """
    only, skip = list(only), list(skip)
    names = {c.name for c in checks}
    # Groups of legs that may be absent from this plan (not installed) are still valid names.
    groups = {c.group for c in checks} | {"apiserver"}
    for n in only + skip:
        if n not in names and n not in groups:
            valid = ", ".join(sorted(names | groups))
            raise UsageError("smoke", "--only/--skip", f"unknown check {n!r}; choose from {valid}")

    def matches(c: Check, sel: list[str]) -> bool:
        return c.name in sel or c.group in sel

    selected = list(checks)
    if only:
        by_name = {c.name: c for c in checks}
        keep = {c.name for c in checks if matches(c, only)}
        frontier = list(keep)
        while frontier:
            for req in by_name[frontier.pop()].requires:
                if req in by_name and req not in keep:
                    keep.add(req)
                    frontier.append(req)
        selected = [c for c in checks if c.name in keep]
    return [c for c in selected if not matches(c, skip)]


def run_checks(checks: Sequence[Check], ctx: SmokeContext) -> tuple[CheckResult, ...]:
    """Run the plan stage by stage; the checks of one stage run in parallel. Between the
    preflights and the end, the watch runs (see the module docstring)."""
    names = {c.name for c in checks}
    by_stage = {stage: [c for c in checks if c.stage == stage] for stage in STAGES}
    started_watch = False
    try:
        with ThreadPoolExecutor(max_workers=max(1, ctx.workers)) as pool:
            for stage in STAGES:
                if stage == "send":
                    started_watch = _start_watch(checks, ctx)
                    ready = [c for c in by_stage["verify"] if _blocked(c, ctx, names) is None]
                    for done in [pool.submit(_baseline, c, ctx) for c in ready]:
                        done.result()
                # _run_one records each result as soon as it is known, so a later check of the
                # same stage can use it for its hint (e.g. whether the collector exported).
                for fut in [pool.submit(_run_one, c, ctx, names) for c in by_stage[stage]]:
                    fut.result()
    finally:
        if started_watch and ctx.watch is not None:
            ctx.watch.stop()
    return tuple(ctx.results[c.name] for c in checks)


#: The preflight that shows each watchable component alive.
_PREFLIGHT_OF = {
    "collector": "preflight.collector",
    "tempo": "preflight.tempo",
    "prometheus": "preflight.prometheus",
    "apiserver": "apiserver.reachable",
}


def _start_watch(checks: Sequence[Check], ctx: SmokeContext) -> bool:
    """Start the run's watch over the components a later check needs (also those whose
    preflight failed: watched, a component down from the start is established dead after the
    grace period like any other); False when there is none to start (injected, disabled, or a
    test clock)."""
    if not ctx.early_verdict or ctx.watch is not None or not isinstance(ctx.clock, SystemClock):
        return False
    from tracecheck.diagnose.hops import HOP_COMPONENTS
    from tracecheck.diagnose.watch import Watch

    needed = {
        comp
        for c in checks
        if c.stage != "preflight"
        for hop in (*c.path, c.backend)
        for comp in HOP_COMPONENTS.get(hop, (hop,))
    }
    components = [
        comp
        for comp, pre in _PREFLIGHT_OF.items()
        if comp in needed and ctx.results.get(pre) is not None
    ]
    if not components:
        return False
    ctx.watch = Watch(ctx._backends, ctx.clock, components)
    ctx.watch.start()
    return True


def _blocked(check: Check, ctx: SmokeContext, names: set[str]) -> str | None:
    for req in check.requires:
        if req not in names:
            return f"needs {req}, which was not selected"
        res = ctx.results.get(req)
        if res is not None and not res.ok:
            return f"needs {req}, which is {res.status.value}"
    return None


def _baseline(check: Check, ctx: SmokeContext) -> None:
    try:
        value = check.before_send(ctx)
    except BackendError as exc:
        with ctx._lock:
            ctx.baseline_errors[check.name] = exc
        return
    if value is not None:
        with ctx._lock:
            ctx.baselines[check.name] = value


def _run_one(check: Check, ctx: SmokeContext, names: set[str]) -> CheckResult:
    blocked = _blocked(check, ctx, names)
    result = check.result(Status.SKIP, blocked) if blocked is not None else _execute(check, ctx)
    with ctx._lock:
        ctx.results[check.name] = result
        if result.status is Status.PASS and check.flow:
            ctx.passed.setdefault(check.flow, set()).update(check.confirms)
    return result


def _execute(check: Check, ctx: SmokeContext) -> CheckResult:
    ctx.progress(Progress(check.name, "start", check.title, 0.0, check.deadline(ctx)))
    started = ctx.clock.monotonic()
    try:
        err = ctx.baseline_errors.get(check.name)
        if err is not None:
            raise err
        result = check.run(ctx)
    except BackendError as exc:
        result = check.result(
            Status.ERROR,
            str(exc),
            hint=check.error_hint or f"{exc.system} could not be asked",
            deadline=check.deadline(ctx),
        )
    if result.elapsed == 0.0:
        result = _with_elapsed(result, ctx.clock.monotonic() - started)
    block = ctx.blocks.get(check.name)
    if block is not None and not result.ok:
        result = _ended_early(check, result, block)
    ctx.progress(Progress(check.name, "done", result.status.value, result.elapsed, result.deadline))
    return result


def _ended_early(check: Check, result: CheckResult, block: Block) -> CheckResult:
    """The result of a check whose poll the watch ended: an ERROR when the component it asks
    stopped answering, else a FAIL "blocked by" the hop; what the last poll saw stays."""
    from dataclasses import replace

    own = block.down and block.component == check.backend
    status = Status.ERROR if own else Status.FAIL
    head = "gave up" if own else f"blocked by {block.short()}"
    detail = f"{head} after {result.elapsed:.1f} s: {block.evidence}"
    if result.detail:
        detail += f"; last poll: {result.detail}"
    data = dict(result.data)
    data["blocked_by"] = {"hop": block.hop, "component": block.component}
    return replace(result, status=status, detail=detail, data=data)


def _with_elapsed(result: CheckResult, elapsed: float) -> CheckResult:
    from dataclasses import replace

    return replace(result, elapsed=elapsed)


def run_plan(
    settings: Settings,
    checks: Sequence[Check],
    *,
    clock: Clock | None = None,
    progress: Callable[[Progress], None] | None = None,
    backends: Backends | None = None,
    context: SmokeContext | None = None,
) -> Report:
    """Run ``checks`` (narrowed by ``settings.smoke.only``/``skip``) and return the report.

    The checks not selected are in the report as SKIP, in the order given. Each call is a
    fresh run (new baselines, a new seed unless ``smoke.seed`` fixes it); ``backends`` lets
    runs share their clients (a watch loop), ``clock`` injects time. ``context`` is a run's
    state prepared by the caller (tests); when given, ``clock`` and ``backends`` are its own.
    """
    ctx = context or SmokeContext(settings, clock or SystemClock(), backends=backends)
    if progress is not None:
        ctx.progress = progress
    every = list(checks)
    plan = select_checks(every, settings.smoke.only, settings.smoke.skip)
    started = ctx.clock.time()
    if not ctx.seed:
        ctx.seed = settings.smoke.seed or int(ctx.clock.time() * 1e6)
    ctx.target.update(
        {
            "collector": settings.collector.endpoint
            if settings.collector.protocol == "grpc"
            else settings.collector.http_url,
            "tempo": settings.tempo.url,
            "prometheus": settings.prometheus.url,
        }
    )
    selected = {c.name for c in plan}
    diagnosis = None
    try:
        run_checks(plan, ctx)
        results = tuple(
            ctx.results[c.name]
            if c.name in selected
            else c.result(Status.SKIP, "not selected (--only/--skip)")
            for c in every
        )
        if _needs_diagnosis(results, ctx):
            diagnosis, results = _diagnose(plan, results, ctx)
    finally:
        ctx.close()
    trace = ctx.trace
    report = Report(
        run_id=trace.run_id if trace else "",
        trace_id=trace.trace_id_hex if trace else "",
        started_at=started,
        finished_at=ctx.clock.time(),
        results=results,
        target=dict(ctx.target),
        tables={},
        tool_version=__version__,
        diagnosis=diagnosis,
    )
    tables: dict[str, Any] = {"pipeline_latency": report.pipeline_latency(), **ctx.tables}
    from dataclasses import replace

    return replace(report, tables=tables)


def _diagnose(
    plan: Sequence[Check], results: tuple[CheckResult, ...], ctx: SmokeContext
) -> tuple[Diagnosis | None, tuple[CheckResult, ...]]:
    from tracecheck.diagnose.diagnosis import CheckInfo, diagnose_run
    from tracecheck.diagnose.facts import Inspection, inspect

    def read(components: Sequence[str], since: float | None) -> Inspection:
        if ctx.inspector is not None:
            return ctx.inspector(components, since)
        if isinstance(ctx.clock, SystemClock):
            watched = ctx.watch is not None and "apiserver" in ctx.watch.components
            return inspect(
                ctx.settings,
                ctx._backends,
                components=components,
                timeout=2.0,
                services_since=since,
                etcd=not watched,  # the watch probed etcd; its checks answer slowly when down
            )
        return Inspection(ctx.clock.time(), ctx.clock.time())  # fake clients: nothing to read

    info = {c.name: CheckInfo(c.name, c.flow, c.path, c.backend, c.confirms, c.group) for c in plan}
    return diagnose_run(
        info, results, backends=ctx._backends, watch=ctx.watch, blocks=ctx.blocks, read=read
    )


def _needs_diagnosis(results: Sequence[CheckResult], ctx: SmokeContext) -> bool:
    """A run needs a diagnosis when a check failed, errored or warned, or when the watch saw a
    component go down or a hop blocked even though every check passed (never with
    ``early_verdict`` off: the behaviour before issue 9)."""
    if not ctx.early_verdict:
        return False
    if any(r.status in (Status.FAIL, Status.ERROR, Status.WARN) for r in results):
        return True
    watch = ctx.watch
    return watch is not None and bool(watch.outages or watch.fact_blocks())
