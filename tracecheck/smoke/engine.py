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
from tracecheck.results import CheckResult, Report, Status
from tracecheck.smoke.synth import SyntheticTrace

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends.apiserver import ApiserverClient, TrustMode, UserInfo
    from tracecheck.backends.collector import CollectorClient
    from tracecheck.backends.prometheus import PrometheusClient
    from tracecheck.backends.tempo import TempoClient
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
    ) -> PollOutcome[T]:
        """Poll ``probe(timeout)`` until done or this check's deadline passes.

        Each request gets the time left before the deadline (at least MIN_REQUEST_TIMEOUT, at
        most ``request_timeout``), so a stalled backend cannot hold the check past its deadline.
        """
        deadline = self.deadline(ctx) or 0.0
        end = ctx.clock.monotonic() + deadline
        started = ctx.clock.monotonic()

        def wrapped() -> Probe[T]:
            left = end - ctx.clock.monotonic()
            outcome = probe(max(MIN_REQUEST_TIMEOUT, min(request_timeout, left)))
            ctx.progress(
                Progress(self.name, "poll", outcome.seen, ctx.clock.monotonic() - started, deadline)
            )
            return outcome

        s = ctx.settings.smoke
        return poll_until(wrapped, deadline, ctx.clock, initial=s.poll_initial, cap=s.poll_max)

    def measured(self, ctx: SmokeContext, outcome: PollOutcome[Any]) -> dict[str, Any]:
        """:meth:`poll_fields` plus, once the data was seen, ``delay``: keyword arguments for
        :meth:`result`.

        A poll whose last probe could not reach its backend is not a FAIL: the error is raised
        again, and the plan turns it into an ERROR naming that backend.
        """
        if not outcome.ok and outcome.error is not None:
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
    """Run the plan stage by stage; the checks of one stage run in parallel."""
    names = {c.name for c in checks}
    by_stage = {stage: [c for c in checks if c.stage == stage] for stage in STAGES}
    with ThreadPoolExecutor(max_workers=max(1, ctx.workers)) as pool:
        for stage in STAGES:
            if stage == "send":
                ready = [c for c in by_stage["verify"] if _blocked(c, ctx, names) is None]
                for done in [pool.submit(_baseline, c, ctx) for c in ready]:
                    done.result()
            # _run_one records each result as soon as it is known, so a later check of the same
            # stage can use it for its hint (e.g. whether the collector exported the spans).
            for fut in [pool.submit(_run_one, c, ctx, names) for c in by_stage[stage]]:
                fut.result()
    return tuple(ctx.results[c.name] for c in checks)


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
    ctx.progress(Progress(check.name, "done", result.status.value, result.elapsed, result.deadline))
    return result


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
    try:
        run_checks(plan, ctx)
    finally:
        ctx.close()
    selected = {c.name for c in plan}
    results = tuple(
        ctx.results[c.name]
        if c.name in selected
        else c.result(Status.SKIP, "not selected (--only/--skip)")
        for c in every
    )
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
    )
    tables: dict[str, Any] = {"pipeline_latency": report.pipeline_latency(), **ctx.tables}
    from dataclasses import replace

    return replace(report, tables=tables)
