"""The metrics checks across a restart of Tempo's metrics-generator, against a simulation of
what the generator and Prometheus do (docs/reference/tempo.md §18.3), with an injected clock:

* the generator counts spans per series and collects every 15 s from its start; a series new
  in its registry writes a 0 stamped at the end of the previous minute, then its value;
* Prometheus refuses the whole batch when any sample is not newer than its series' last one
  (remote write answers 400, the generator drops it: ``samples_failed`` rises); exemplars go
  with the batch;
* a restart empties the registry (the same labels count again from 0) and changes
  ``process_start_time_seconds``; spans received but not collected are lost.

Unit tests of :func:`tracecheck.smoke.restarts.increase` come first.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

from tracecheck.backends import Backends
from tracecheck.backends.collector import PipelineCounters
from tracecheck.backends.exposition import parse_exposition
from tracecheck.backends.prometheus import Exemplar, ExemplarSeries, QueryResult, RangeSeries
from tracecheck.backends.tempo import BuildInfo
from tracecheck.config import load_settings
from tracecheck.errors import Unreachable
from tracecheck.polling import FakeClock
from tracecheck.results import Status
from tracecheck.smoke.engine import SmokeContext
from tracecheck.smoke.plan import default_checks, smoke
from tracecheck.smoke.restarts import Restarts, SeriesState, Snapshot, _retrace, increase
from tracecheck.smoke.synth import RUN_ID_ATTRIBUTE, build_trace

A = frozenset({("service", "s"), ("__name__", "calls_total")})


class Prom:
    def __init__(self, *points: tuple[float, float]) -> None:
        self.points = points

    def query(self, q: str, **kw: Any) -> QueryResult:
        return QueryResult("matrix", (), (RangeSeries(dict(A), self.points),))


def base(t: float, v: float, cadence: float | None = 15.0) -> Snapshot:
    return Snapshot("calls_total{}", t + 1, {A: SeriesState((t, v), cadence)})


def test_an_equal_value_reset_counts_when_the_restart_time_is_known() -> None:
    # Old process: 1 at t=100. New process (started at 110) counts our span: 1 again, its zero
    # refused. Without the start time the rise reads +0 and is a pause of 30 s: ambiguous.
    got = increase(Prom((100.0, 1.0), (130.0, 1.0)), base(100, 1), now=140, restarts=[110.0])
    assert got.total == 1 and got.restarted == 1 and not got.ambiguous
    blind = increase(Prom((100.0, 1.0), (130.0, 1.0)), base(100, 1), now=140)
    assert blind.total == 0 and blind.ambiguous == ("{service=s}",)


def test_an_accepted_zero_is_a_reset_and_a_drop_counts_its_value() -> None:
    got = increase(Prom((100.0, 3.0), (119.0, 0.0), (130.0, 1.0)), base(100, 3), now=140)
    assert got.total == 1 and not got.ambiguous
    drop = increase(Prom((100.0, 3.0), (115.0, 2.0)), base(100, 3), now=120)
    assert drop.total == 2


def test_a_steady_writer_is_neither_reset_nor_ambiguous() -> None:
    got = increase(
        Prom((85.0, 1.0), (100.0, 1.0), (115.0, 1.0), (130.0, 5.0)), base(100, 1), now=135
    )
    assert got.total == 4 and got.restarted == 0 and not got.ambiguous
    # A restart time before the baseline's last sample changes nothing.
    assert (
        increase(Prom((100.0, 1.0), (115.0, 5.0)), base(100, 1), now=120, restarts=[50.0]).total
        == 4
    )


def test_safe_from_is_the_first_minute_after_the_start_plus_one_second() -> None:
    r = Restarts(starts=[1_000_020.0], known=True)
    assert r.safe_from() == 1_000_080.0  # 16666 min + 60 s boundary after 1_000_021
    assert Restarts(starts=[1_000_079.5], known=True).safe_from() == 1_000_140.0
    assert Restarts().safe_from() is None


def test_a_re_probe_trace_keeps_the_run_id_and_the_span_names() -> None:
    first = build_trace(seed=1, end_ns=10**18)
    again = _retrace(first, 2, 10**18 + 10**9)
    assert again.run_id == first.run_id and again.trace_id != first.trace_id
    assert [s.name for s in again.spans] == [s.name for s in first.spans]
    assert {s.attributes[RUN_ID_ATTRIBUTE] for s in again.spans} == {first.run_id}


# -- a simulated generator ----------------------------------------------------------------------

BUCKETS = [0.002 * 2**i for i in range(14)] + [math.inf]
Key = tuple[tuple[str, str], ...]


def eolm(t: float) -> float:
    return t - t % 60 - 1


@dataclass
class World:
    clock: FakeClock
    interval: float = 15.0
    start: float = 0.0
    known: bool = True  # Tempo's /metrics readable
    counts: dict[Key, float] = field(default_factory=dict)
    new: set[Key] = field(default_factory=set)
    exemplars_pending: dict[Key, str] = field(default_factory=dict)
    prom: dict[Key, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    prom_exemplars: list[tuple[Key, str, float]] = field(default_factory=list)
    failed: float = 0.0
    collected_until: float = 0.0
    sent: float = 0.0
    traces: list[bytes] = field(default_factory=list)

    # -- the generator
    def restart(self) -> None:
        self.advance()
        self.start = self.clock.time()
        self.collected_until = self.start
        self.counts, self.new, self.exemplars_pending = {}, set(), {}

    def advance(self) -> None:
        now = self.clock.time()
        k = math.floor((self.collected_until - self.start) / self.interval) + 1
        while self.start + k * self.interval <= now:
            self.collect(self.start + k * self.interval)
            k += 1
        self.collected_until = now

    def collect(self, t: float) -> None:
        batch: list[tuple[Key, float, float]] = []
        for key, v in self.counts.items():
            if key in self.new and dict(key)["__name__"] != "traces_spanmetrics_latency_sum":
                batch.append((key, eolm(t), 0.0))
            batch.append((key, t, v))
        self.new.clear()
        refused = any(self.prom[k] and ts <= self.prom[k][-1][0] for k, ts, _ in batch)
        if refused:
            self.failed += len(batch)
        else:
            for k, ts, v in sorted(batch, key=lambda b: b[1]):
                self.prom[k].append((ts, v))
            for k, tid in self.exemplars_pending.items():
                self.prom_exemplars.append((k, tid, t))
        self.exemplars_pending = {}

    def count(self, key: dict[str, str], tid: str | None = None) -> None:
        k = tuple(sorted(key.items()))
        if k not in self.counts:
            self.counts[k] = 0.0
            self.new.add(k)
        self.counts[k] += 1
        if tid is not None:
            self.exemplars_pending[k] = tid

    def receive(self, request: Any) -> int:
        self.advance()
        n = 0
        spans = []
        for rs in request.resource_spans:
            service = next(
                a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
            )
            for ss in rs.scope_spans:
                for s in ss.spans:
                    n += 1
                    spans.append((service, s))
        by_id = {s.span_id: (svc, s) for svc, s in spans}
        kinds = [
            "SPAN_KIND_UNSPECIFIED",
            "SPAN_KIND_INTERNAL",
            "SPAN_KIND_SERVER",
            "SPAN_KIND_CLIENT",
        ]
        for service, s in spans:
            tid = s.trace_id.hex().lstrip("0")
            status = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"][s.status.code]
            labels = {
                "service": service,
                "span_name": s.name,
                "span_kind": kinds[s.kind],
                "status_code": status,
            }
            self.count({**labels, "__name__": "traces_spanmetrics_calls_total"})
            secs = (s.end_time_unix_nano - s.start_time_unix_nano) / 1e9
            for le in BUCKETS:
                if secs <= le:
                    le_s = "+Inf" if le == math.inf else f"{le:g}"
                    self.count(
                        {**labels, "__name__": "traces_spanmetrics_latency_bucket", "le": le_s}, tid
                    )
            parent = by_id.get(s.parent_span_id)
            if (
                parent is not None
                and kinds[parent[1].kind] == "SPAN_KIND_CLIENT"
                and kinds[s.kind] == "SPAN_KIND_SERVER"
            ):
                self.count(
                    {
                        "__name__": "traces_service_graph_request_total",
                        "client": parent[0],
                        "server": service,
                    }
                )
        return n

    # -- clients
    def health(self, **kw: Any) -> None:
        pass

    def ready(self, **kw: Any) -> None:
        pass

    def buildinfo(self, **kw: Any) -> BuildInfo:
        return BuildInfo("2.9.0", "", "", "")

    def export(
        self, request: Any, *, protocol: str | None = None, timeout: float | None = None
    ) -> Any:
        from types import SimpleNamespace

        n = self.receive(request)
        self.sent += n
        self.traces.append(request.resource_spans[0].scope_spans[0].spans[0].trace_id)
        return SimpleNamespace(protocol="grpc", address="x", spans=n, rejected_spans=0,
                               error_message="", attempts=1, elapsed=0.01)  # fmt: skip

    def counters(self, **kw: Any) -> PipelineCounters:
        return PipelineCounters(self.sent, 0, self.sent, 0, 0)

    def self_metrics(self, **kw: Any) -> Any:
        self.advance()
        if not self.known:
            raise Unreachable("tempo", "http://tempo/metrics", "connection refused")
        url = 'remote_name="a",tenant="single-tenant",url="http://p/api/v1/write"'
        return parse_exposition(
            f"process_start_time_seconds {self.start}\n"
            'tempo_metrics_generator_registry_collections_total{tenant="single-tenant"} 1\n'
            f"prometheus_remote_storage_samples_failed_total{{{url}}} {self.failed}\n"
        )

    def exemplar_storage_enabled(self, **kw: Any) -> bool:
        return True

    def label_values(self, label: str, **kw: Any) -> tuple[str, ...]:
        return ("traces_spanmetrics_calls_total", "traces_spanmetrics_latency_bucket")

    def query(self, q: str, **kw: Any) -> QueryResult:
        import re

        self.advance()
        m = re.fullmatch(r"([a-z_]+)\{(.*)\}\[(\d+)s\]", q)
        assert m is not None, q
        want = dict(re.findall(r'([a-z_]+)="([^"]*)"', m.group(2)))
        now, window = self.clock.time(), float(m.group(3))
        series = []
        for key, points in self.prom.items():
            labels = dict(key)
            if labels["__name__"] == m.group(1) and all(
                labels.get(k) == v for k, v in want.items()
            ):
                pts = tuple(p for p in points if now - window < p[0] <= now)
                if pts:
                    series.append(RangeSeries(labels, pts))
        return QueryResult("matrix", (), tuple(series))

    def query_exemplars(self, q: str, **kw: Any) -> tuple[ExemplarSeries, ...]:
        self.advance()
        ex = tuple(Exemplar({"traceID": tid}, 0.19, t) for _, tid, t in self.prom_exemplars)
        return (ExemplarSeries({"service": "tracecheck-server"}, ex),) if ex else ()


def run(world: World, *, restart_after: float | None = None) -> Any:
    settings = load_settings(env={"TRACECHECK_SMOKE_SEED": "77"})
    backends = Backends(settings, collector=world, tempo=world, prometheus=world)  # type: ignore[arg-type]
    ctx = SmokeContext(settings, world.clock, workers=1, backends=backends)
    checks = [
        c
        for c in default_checks(settings)
        if c.name.startswith(("preflight", "send", "prometheus"))
    ]
    if restart_after is not None:
        fired = []

        def progress(event: Any) -> None:
            if event.check == "send" and event.state == "done" and not fired:
                fired.append(1)
                world.clock.advance(restart_after)
                world.restart()

        return smoke(settings, context=ctx, checks=checks, progress=progress)
    return smoke(settings, context=ctx, checks=checks)


def warmed(known: bool = True) -> World:
    """A generator that counted one earlier run (every counter 1), then restarted within the
    same minute as its last collection: the new process's zeros will be refused."""
    clock = FakeClock(start=1_700_000_000.0 - 100)  # then 100 s later: a minute + 20 s
    world = World(clock, known=known)
    world.start = clock.time() - 200
    world.collected_until = world.start
    previous = build_trace(seed=5, end_ns=int(clock.time() * 1e9))
    world.export(previous.to_otlp())
    clock.advance(120)
    world.advance()  # the old process wrote every series every 15 s, the last at +15 s
    world.restart()
    clock.advance(1)
    return world


def statuses(report: Any) -> dict[str, Status]:
    return {r.name: r.status for r in report.results if r.name.startswith("prometheus")}


def test_restart_right_before_the_run_passes_with_an_equal_value_reset() -> None:
    world = warmed()
    report = run(world)
    assert statuses(report) == dict.fromkeys(statuses(report), Status.PASS), [
        (r.name, r.detail) for r in report.results
    ]
    assert world.failed > 0, "the first collection after the restart was refused"
    sm = report.result("prometheus.span_metrics")
    assert "+4" in sm.detail
    ex = report.result("prometheus.exemplars")
    assert "re-probe trace" in ex.detail and "dropped" in ex.detail


def test_without_the_restart_time_the_pause_is_re_baselined_not_guessed() -> None:
    world = warmed(known=False)
    report = run(world)
    sm = report.result("prometheus.span_metrics")
    assert sm.status is Status.PASS and "re-probed" in sm.detail, sm.detail
    assert "fresh baseline" in sm.detail


def test_restart_during_the_run_loses_the_trace_and_a_re_probe_passes() -> None:
    clock = FakeClock(start=1_700_000_000.0 + 25)
    world = World(clock)
    world.start = clock.time() - 10
    world.collected_until = world.start
    report = run(world, restart_after=1.0)
    assert statuses(report) == dict.fromkeys(statuses(report), Status.PASS), [
        (r.name, r.detail) for r in report.results
    ]
    sm = report.result("prometheus.span_metrics")
    assert "restarted" in sm.detail and "re-probed" in sm.detail
    assert len(world.traces) >= 2


@pytest.mark.parametrize("known", [True, False])
def test_a_healthy_generator_needs_no_re_probe(known: bool) -> None:
    clock = FakeClock(start=1_700_000_000.0)
    world = World(clock, known=known)
    world.start = clock.time() - 300
    world.collected_until = world.start
    report = run(world)
    assert statuses(report) == dict.fromkeys(statuses(report), Status.PASS)
    assert len(world.traces) == 1
    assert "re-probed" not in report.result("prometheus.span_metrics").detail


class StoppedCollector:
    """The world's collector until :attr:`down`: then its health probe and exports are
    refused, as a stopped collector's are."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.down = False

    def _refuse(self) -> None:
        if self.down:
            raise Unreachable("collector", "http://collector:13133/", "connection refused")

    def health(self, **kw: Any) -> None:
        self._refuse()

    def export(self, request: Any, **kw: Any) -> Any:
        self._refuse()
        return self.world.export(request, **kw)

    def counters(self, **kw: Any) -> PipelineCounters:
        self._refuse()
        return self.world.counters(**kw)


class TickingClock(FakeClock):
    """A fake clock that runs the run's watch once per sleep (as its threads would)."""

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.watch: Any = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.watch is not None:
            self.watch.tick()


def test_a_lost_exemplar_whose_re_probe_cannot_pass_the_stopped_collector_is_blocked() -> None:
    """The generator restarted right before the run, so the batch with the run's exemplar is
    refused, and the collector stops right after the send: the re-probe the exemplar needs
    cannot be sent. The exemplars check must end as blocked by the collector once the watch
    knows it dead, not wait out its deadline (the trace itself passed the collector, so
    without the re-probe the collector is not ahead of the check)."""
    from tracecheck.diagnose import hops
    from tracecheck.diagnose.watch import Watch

    world = warmed()
    clock = TickingClock(world.clock.time())
    clock._mono = world.clock.monotonic()
    world.clock = clock
    collector = StoppedCollector(world)
    settings = load_settings(env={"TRACECHECK_SMOKE_SEED": "77"})
    backends = Backends(settings, collector=collector, tempo=world, prometheus=world)  # type: ignore[arg-type]
    ctx = SmokeContext(settings, clock, workers=1, backends=backends)
    watch = Watch(backends, clock, ["collector"], dead_after=8)
    watch.jobs = lambda: {"collector": (watch._prober("collector"), 1.0)}  # type: ignore[method-assign]
    ctx.watch = watch
    checks = [
        c
        for c in default_checks(settings)
        if c.name.startswith(("preflight", "send", "prometheus"))
    ]

    def progress(event: Any) -> None:
        if event.check == "send" and event.state == "done":
            # The trace is through: what tempo.trace_by_id confirms when it passes.
            ctx.passed.setdefault("synthetic", set()).update((hops.COLLECTOR, hops.EXPORT))
            collector.down = True
            clock.watch = watch

    report = smoke(settings, context=ctx, checks=checks, progress=progress)
    ex = report.result("prometheus.exemplars")
    assert world.failed > 0, "the batch with the run's exemplar was refused"
    assert ex.status is Status.FAIL and "blocked by collector" in ex.detail, ex.detail
    assert ex.follows_from == hops.COLLECTOR
    assert ex.elapsed is not None and ex.elapsed < settings.deadlines.exemplars / 2, ex.elapsed
    assert "re-probe could not be sent" in ex.detail and "connection refused" in ex.detail
    # The counters recover at the next collection: span-metrics need no re-probe.
    assert report.result("prometheus.span_metrics").status is Status.PASS
    d = report.diagnosis
    assert d is not None and d.component == "collector", d


class HopWatch:
    """A watch that knows which hops are dead by a stopped component and which by a fact."""

    def __init__(self, *, down: dict[str, str], facts: dict[str, str]) -> None:
        self.down, self.facts = down, facts

    def blocking(self, hops_: Any, *, facts: bool = True) -> Any:
        from tracecheck.diagnose.hops import Block

        for hop in hops_:
            if hop in self.down:
                return Block(hop, self.down[hop], 0.0, "stopped answering", down=True)
            if facts and hop in self.facts:
                return Block(hop, self.facts[hop], None, "its exporter sent +0 spans")
        return None


@pytest.mark.parametrize(
    ("waiting", "down", "facts", "blocked_by"),
    [
        # The trace passed the collector and its exporter: with no re-probe awaited, neither
        # a stopped collector nor a stuck exporter stands between the check and its data.
        (set(), {"collector": "collector"}, {}, ""),
        # A re-probe must pass them again: a stopped collector blocks it...
        ({"*"}, {"collector": "collector"}, {}, "collector"),
        ({"prometheus.exemplars"}, {"collector": "collector"}, {}, "collector"),
        # ...another check's re-probe does not concern this one...
        ({"prometheus.span_metrics"}, {"collector": "collector"}, {}, ""),
        # ...and an exporter that sent nothing for a while (the restart's wake) does not.
        ({"*"}, {}, {"collector -> tempo": "collector"}, ""),
    ],
)
def test_a_re_probe_is_blocked_by_a_stopped_collector_only(
    waiting: set[str], down: dict[str, str], facts: dict[str, str], blocked_by: str
) -> None:
    from tracecheck.diagnose import hops
    from tracecheck.smoke.pipeline_checks import Exemplars

    assert hops.EXPORT == "collector -> tempo"
    settings = load_settings(env={})
    ctx = SmokeContext(settings, FakeClock(), workers=1)
    ctx.passed["synthetic"] = {hops.COLLECTOR, hops.EXPORT}
    ctx.metrics_state["restarts"] = Restarts(waiting=waiting)
    ctx.watch = HopWatch(down=down, facts=facts)  # type: ignore[assignment]
    ctx.span_metric_families = ()
    check = Exemplars()
    assert bool(check.blocked(ctx)) is bool(blocked_by)
    if blocked_by:
        assert ctx.blocks[check.name].component == blocked_by


def test_a_restart_two_checks_see_at_once_is_re_probed_once() -> None:
    """The metrics checks poll in parallel and see a restart in the same second: one re-probe
    answers it, so one is left for the batch the restart then makes the generator drop (CI:
    two restart re-probes used both, and the exemplar was lost for good)."""
    import threading
    import time

    from tracecheck.smoke.engine import Sent

    class SlowCollector:
        def __init__(self) -> None:
            self.sent = 0

        def export(self, request: Any, **kw: Any) -> None:
            time.sleep(0.05)  # a real send takes milliseconds: the other check polls meanwhile
            self.sent += 1

    settings = load_settings(env={"TRACECHECK_SMOKE_SEED": "77"})
    clock = FakeClock()
    collector = SlowCollector()
    backends = Backends(settings, collector=collector)  # type: ignore[arg-type]
    ctx = SmokeContext(settings, clock, workers=1, backends=backends)
    trace = build_trace(seed=5, end_ns=int(clock.time() * 1e9))
    now = clock.time()
    r = Restarts(traces=[(trace, Sent(0.0, now))], starts=[now - 600, now - 5], known=True)
    r.dropped_now = r.dropped_at_send = 0.0
    r.last_read_mono = clock.monotonic()  # fresh: no read of Tempo's /metrics
    barrier = threading.Barrier(3)

    def poll(check: str, exemplars: bool) -> None:
        barrier.wait()
        r.step(ctx, check, exemplars=exemplars)

    threads = [
        threading.Thread(target=poll, args=(name, name == "prometheus.exemplars"))
        for name in ("prometheus.span_metrics", "prometheus.exemplars", "prometheus.service_graph")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (collector.sent, r.resends, r.restart_claims) == (1, 1, 1)
    # The new process's first collection is refused: the exemplars check still has a re-probe.
    r.dropped_now = 108.0
    clock.advance(120)  # past safe_from
    r.last_read_mono = clock.monotonic()
    r.step(ctx, "prometheus.exemplars", exemplars=True)
    assert collector.sent == 2 and r.reasons[-1].startswith("the metrics-generator's remote write")
