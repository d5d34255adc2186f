"""The smoke plan against a simulated pipeline with an injected clock.

The fakes model what the real parts do with the synthetic trace (Tempo makes it visible by ID
after ``tempo_delay``, searchable after ``search_delay``; span-metrics appear after
``metrics_delay``), so the plan's logic -- stages, baselines, dependencies, deadlines, delays,
exit codes -- is tested without sockets. The real pipeline is tested in tests/pipeline/.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

from tracecheck.backends import Backends
from tracecheck.backends.collector import PipelineCounters
from tracecheck.backends.prometheus import Exemplar, ExemplarSeries, QueryResult, RangeSeries
from tracecheck.backends.tempo import BuildInfo, SearchResult, Span, SpanSet, Trace, TraceSummary
from tracecheck.config import Settings, load_settings
from tracecheck.errors import ExitCode, Unreachable
from tracecheck.polling import FakeClock
from tracecheck.results import Status
from tracecheck.smoke.engine import SmokeContext
from tracecheck.smoke.plan import default_checks, smoke
from tracecheck.smoke.synth import RUN_ID_ATTRIBUTE

TEMPO_BUCKETS = [0.002 * 2**i for i in range(14)] + [float("inf")]


@dataclass
class Export:
    protocol: str
    address: str
    spans: int
    rejected_spans: int = 0
    error_message: str = ""
    attempts: int = 1
    elapsed: float = 0.01


@dataclass
class Counters:
    accepted: float = 0
    refused: float = 0
    sent: float = 0
    send_failed: float = 0
    enqueue_failed: float = 0


@dataclass
class Pipeline:
    clock: FakeClock
    tempo_delay: float = 1.0
    search_delay: float = 6.0
    metrics_delay: float = 16.0
    tempo_keeps_data: bool = True
    tempo_up: bool = True
    exemplar_storage: bool | None = True
    rejected: int = 0
    other_traffic: int = 0
    spans: list[tuple[float, Span]] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)

    # -- collector
    def health(self, *, timeout: float | None = None) -> None:
        pass

    def export(
        self, request: Any, *, protocol: str | None = None, timeout: float | None = None
    ) -> Export:
        now = self.clock.monotonic()
        n = 0
        for rs in request.resource_spans:
            service = next(
                kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name"
            )
            for ss in rs.scope_spans:
                for s in ss.spans:
                    n += 1
                    attrs = {
                        kv.key: getattr(kv.value, kv.value.WhichOneof("value"))
                        for kv in s.attributes
                    }
                    span = Span(
                        trace_id=s.trace_id,
                        span_id=s.span_id,
                        parent_span_id=s.parent_span_id,
                        name=s.name,
                        kind=[
                            "SPAN_KIND_UNSPECIFIED",
                            "SPAN_KIND_INTERNAL",
                            "SPAN_KIND_SERVER",
                            "SPAN_KIND_CLIENT",
                        ][s.kind],
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        status_code=["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"][
                            s.status.code
                        ],
                        status_message=s.status.message,
                        attributes=attrs,
                        resource={"service.name": service},
                        scope_name=ss.scope.name,
                    )
                    if self.tempo_keeps_data:
                        self.spans.append((now, span))
        self.counters.accepted += n
        self.counters.sent += n
        return Export(protocol or "grpc", "localhost:4317", n, rejected_spans=self.rejected)

    def counters_now(self) -> PipelineCounters:
        return PipelineCounters(**asdict(self.counters))

    # -- tempo
    def visible(self, delay: float) -> list[Span]:
        return [s for t, s in self.spans if self.clock.monotonic() >= t + delay]

    def ready(self, *, timeout: float | None = None) -> None:
        if not self.tempo_up:
            raise Unreachable("tempo", "http://localhost:3200/ready", "connection refused")

    def buildinfo(self, *, timeout: float | None = None) -> BuildInfo:
        return BuildInfo("2.9.0", "rev", "main", "go1.25")

    def trace(self, trace_id: bytes, **kw: Any) -> Trace:
        return Trace(
            trace_id, tuple(s for s in self.visible(self.tempo_delay) if s.trace_id == trace_id)
        )

    def search(self, query: str, **kw: Any) -> SearchResult:
        run_id = re.search(r'"([0-9a-f]+)"', query)
        assert run_id is not None and RUN_ID_ATTRIBUTE in query
        hits = [
            s
            for s in self.visible(self.search_delay)
            if s.attributes.get(RUN_ID_ATTRIBUTE) == run_id.group(1)
        ]
        if not hits:
            return SearchResult((), {})
        summary = TraceSummary(
            hits[0].trace_id,
            "tracecheck-client",
            "GET /checkout",
            0,
            240,
            (SpanSet((), len(hits), {}),),
        )
        return SearchResult((summary,), {})

    # -- prometheus
    def exemplar_storage_enabled(self, **kw: Any) -> bool | None:
        return self.exemplar_storage

    def label_values(self, label: str, **kw: Any) -> tuple[str, ...]:
        return tuple(sorted({s["__name__"] for s in self.series()}))

    def series(self) -> list[dict[str, Any]]:
        out: dict[tuple[tuple[str, str], ...], float] = defaultdict(float)
        spans = self.visible(self.metrics_delay)
        for _ in range(self.other_traffic):
            spans = [*spans, spans[1]] if len(spans) > 1 else spans
        by_id = {s.span_id: s for s in spans}
        for s in spans:
            base = {
                "service": s.service_name,
                "span_name": s.name,
                "span_kind": s.kind,
                "status_code": s.status_code,
            }
            out[tuple(sorted({**base, "__name__": "traces_spanmetrics_calls_total"}.items()))] += 1
            secs = s.duration_ns / 1e9
            for le in TEMPO_BUCKETS:
                if secs <= le:
                    le_s = "+Inf" if le == float("inf") else f"{le:g}"
                    key = {**base, "__name__": "traces_spanmetrics_latency_bucket", "le": le_s}
                    out[tuple(sorted(key.items()))] += 1
            parent = by_id.get(s.parent_span_id)
            if (
                parent is not None
                and parent.kind == "SPAN_KIND_CLIENT"
                and s.kind == "SPAN_KIND_SERVER"
            ):
                edge = {
                    "__name__": "traces_service_graph_request_total",
                    "client": parent.service_name,
                    "server": s.service_name,
                }
                out[tuple(sorted(edge.items()))] += 1
        return [dict(k) | {"_value": v} for k, v in out.items()]

    def query(self, q: str, **kw: Any) -> QueryResult:
        # The checks read raw samples (selector[window]); one point per series at "now".
        m = re.fullmatch(r"([a-z_]+)\{(.*)\}\[(\d+)s\]", q)
        assert m is not None, q
        want = dict(re.findall(r'([a-z_]+)="([^"]*)"', m.group(2)))
        now = self.clock.time()
        series = tuple(
            RangeSeries({k: v for k, v in s.items() if k != "_value"}, ((now, s["_value"]),))
            for s in self.series()
            if s["__name__"] == m.group(1) and all(s.get(k) == v for k, v in want.items())
        )
        return QueryResult("matrix", (), series)

    def query_exemplars(self, q: str, **kw: Any) -> tuple[ExemplarSeries, ...]:
        spans = self.visible(self.metrics_delay)
        if not spans or not self.exemplar_storage:
            return ()
        # One exemplar per trace seen (Prometheus keeps the latest few per series).
        tids = dict.fromkeys(s.trace_id.hex().lstrip("0") for s in spans)
        exemplars = tuple(Exemplar({"traceID": tid}, 0.19, 0.0) for tid in tids)
        return (ExemplarSeries({"service": "tracecheck-server"}, exemplars),)


class Shim:
    """Routes the three client interfaces to one Pipeline."""

    def __init__(self, p: Pipeline, role: str) -> None:
        self.p, self.role = p, role

    def __getattr__(self, name: str) -> Any:
        if self.role == "collector" and name == "counters":
            return lambda **kw: self.p.counters_now()
        if self.role == "prometheus" and name == "ready":
            return lambda **kw: None
        return getattr(self.p, name)

    def close(self) -> None:
        pass


def run(p: Pipeline, settings: Settings | None = None) -> Any:
    settings = settings or load_settings(env={"TRACECHECK_SMOKE_SEED": "1234"})
    backends = Backends(
        settings,
        collector=Shim(p, "collector"),  # type: ignore[arg-type]
        tempo=Shim(p, "tempo"),  # type: ignore[arg-type]
        prometheus=Shim(p, "prometheus"),  # type: ignore[arg-type]
    )
    ctx = SmokeContext(settings, p.clock, workers=1, backends=backends)
    checks = [c for c in default_checks(settings) if c.group != "apiserver"]
    return smoke(settings, context=ctx, checks=checks)


def test_healthy_pipeline_passes_with_measured_delays() -> None:
    clock = FakeClock()
    report = run(Pipeline(clock))
    assert {r.name: r.status for r in report.results} == {
        "preflight.collector": Status.PASS,
        "preflight.tempo": Status.PASS,
        "preflight.prometheus": Status.PASS,
        "send": Status.PASS,
        "collector.exported": Status.PASS,
        "tempo.trace_by_id": Status.PASS,
        "tempo.search": Status.PASS,
        "prometheus.span_metrics": Status.PASS,
        "prometheus.exemplars": Status.PASS,
        "prometheus.service_graph": Status.PASS,
    }
    assert report.exit_code == ExitCode.OK
    by_id = report.result("tempo.trace_by_id")
    assert 1.0 <= by_id.delay <= 1.0 + 1.0  # visible after 1 s; polls at most 1 s apart
    sm = report.result("prometheus.span_metrics")
    assert 16.0 <= sm.delay <= 17.0
    assert "+4 (expected 4)" in sm.detail and "le=0.256" in sm.detail
    assert report.result("tempo.search").detail.endswith("5 spans matched")
    latency = {row["stage"]: row for row in report.tables["pipeline_latency"]}
    assert latency["tempo.trace_by_id"]["delay_s"] == round(by_id.delay, 3)
    assert report.run_id and len(report.trace_id) == 32


def test_tempo_down_is_an_error_and_its_checks_are_skipped() -> None:
    report = run(Pipeline(FakeClock(), tempo_up=False))
    r = report.result("preflight.tempo")
    assert r.status is Status.ERROR and "connection refused" in r.detail and "Tempo" in r.hint
    for name in (
        "tempo.trace_by_id",
        "tempo.search",
        "prometheus.span_metrics",
        "prometheus.service_graph",
    ):
        assert report.result(name).status is Status.SKIP
        assert "preflight.tempo" in report.result(name).detail
    assert report.result("send").status is Status.PASS
    assert report.exit_code == ExitCode.BACKEND


def test_spans_lost_after_the_collector_fail_within_the_deadline() -> None:
    clock = FakeClock()
    settings = load_settings(
        env={"TRACECHECK_SMOKE_SEED": "5", "TRACECHECK_DEADLINES_TRACE_BY_ID": "4"}
    )
    report = run(Pipeline(clock, tempo_keeps_data=False), settings)
    r = report.result("tempo.trace_by_id")
    assert r.status is Status.FAIL
    assert r.elapsed == pytest.approx(4.0, abs=0.01)
    assert "not found yet" in r.detail
    assert "collector exported the spans" in r.hint and "Tempo" in r.hint
    assert report.exit_code == ExitCode.CHECK_FAILED


def test_exemplar_storage_off_is_a_warning_not_a_silent_pass() -> None:
    report = run(Pipeline(FakeClock(), exemplar_storage=False))
    r = report.result("prometheus.exemplars")
    assert r.status is Status.WARN and "--enable-feature=exemplar-storage" in r.detail
    assert report.exit_code == ExitCode.OK


def test_extra_calls_from_other_traffic_warn() -> None:
    report = run(Pipeline(FakeClock(), other_traffic=1))
    r = report.result("prometheus.span_metrics")
    assert r.status is Status.WARN and "other traffic" in r.detail


def test_partial_success_fails_the_send_and_skips_the_rest() -> None:
    report = run(Pipeline(FakeClock(), rejected=2))
    assert report.result("send").status is Status.FAIL
    assert "2 rejected" in report.result("send").detail
    assert report.result("tempo.search").status is Status.SKIP
    assert report.exit_code == ExitCode.CHECK_FAILED


def test_only_pulls_in_requirements_and_skips_the_rest() -> None:
    settings = load_settings(
        env={"TRACECHECK_SMOKE_SEED": "9", "TRACECHECK_SMOKE_ONLY": "tempo.search"}
    )
    report = run(Pipeline(FakeClock()), settings)
    ran = {r.name for r in report.results if r.status is not Status.SKIP}
    assert ran == {"preflight.collector", "preflight.tempo", "send", "tempo.search"}
    assert report.result("prometheus.exemplars").detail == "not selected (--only/--skip)"


def test_skip_a_requirement_skips_its_dependents() -> None:
    settings = load_settings(
        env={"TRACECHECK_SMOKE_SEED": "9", "TRACECHECK_SMOKE_SKIP": "preflight.prometheus"}
    )
    report = run(Pipeline(FakeClock()), settings)
    assert report.result("prometheus.span_metrics").status is Status.SKIP
    assert (
        "preflight.prometheus, which was not selected"
        in report.result("prometheus.span_metrics").detail
    )
    assert report.result("tempo.trace_by_id").status is Status.PASS


def test_runs_sharing_their_clients_start_from_fresh_baselines() -> None:
    """A watch loop runs the plan again and again over the same clients: each run has its own
    seed, trace and baselines, so the second run's increase counts only its own spans."""
    p = Pipeline(FakeClock())
    settings = load_settings()  # no fixed seed: each run derives one from the clock
    shims = {role: Shim(p, role) for role in ("collector", "tempo", "prometheus")}
    backends = Backends(settings, **shims)  # type: ignore[arg-type]
    checks = [c for c in default_checks(settings) if c.group != "apiserver"]
    reports = []
    for _ in range(2):
        ctx = SmokeContext(settings, p.clock, workers=1, backends=backends)
        reports.append(smoke(settings, context=ctx, checks=checks))
        p.clock.advance(120)
    first, second = reports
    assert first.run_id != second.run_id and first.trace_id != second.trace_id
    for report in reports:
        assert report.exit_code == ExitCode.OK, [(r.name, r.detail) for r in report.results]
        assert "+4 (expected 4)" in report.result("prometheus.span_metrics").detail
    # The clients belong to the caller: a run does not take them away.
    assert backends.tempo() is shims["tempo"]
