"""Rules, the watch and the diagnosis, from facts given by hand (no sockets)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tracecheck.backends import Backends
from tracecheck.config import load_settings
from tracecheck.diagnose import hops
from tracecheck.diagnose.diagnosis import Candidate, CheckInfo, diagnose
from tracecheck.diagnose.facts import (
    CollectorFacts,
    Inspection,
    PrometheusFacts,
    RemoteWrite,
    TempoFacts,
)
from tracecheck.diagnose.reading import Reading
from tracecheck.diagnose.rules import exporter_stuck, fact_blocks, findings
from tracecheck.diagnose.watch import Watch
from tracecheck.errors import Unreachable
from tracecheck.polling import FakeClock
from tracecheck.results import CheckResult, Status

UP = Reading("up", 0.0)


def collector(
    t: float, *, sent: float, queue: float, accepted: float = 5
) -> tuple[float, float, CollectorFacts]:
    facts = CollectorFacts(
        "c",
        UP,
        UP,
        accepted=accepted,
        sent=sent,
        send_failed=0,
        queue_size=queue,
        exporters=("otlp",),
    )
    return (t, 1000 + t, facts)


def test_an_exporter_is_stuck_only_when_every_reading_of_the_grace_period_says_so() -> None:
    stuck = [collector(t, sent=10, queue=1) for t in (0, 2, 4, 6, 8)]
    block = exporter_stuck(stuck, dead_after=8)
    assert block is not None and block.hop == hops.EXPORT and block.component == "collector"
    assert "sent +0" in block.evidence and "1 request(s)" in block.evidence
    assert exporter_stuck(stuck[:4], dead_after=8) is None  # 6 s: not yet
    moving = [*stuck[:4], collector(8, sent=11, queue=1)]
    assert exporter_stuck(moving, dead_after=8) is None
    drained = [*stuck[:4], collector(8, sent=10, queue=0)]
    assert exporter_stuck(drained, dead_after=8) is None


def test_configuration_facts_that_kill_a_hop() -> None:
    prom = PrometheusFacts("http://p", UP, remote_write_receiver=False)
    tempo = TempoFacts(
        "http://t",
        "single-tenant",
        UP,
        active_processors={"span-metrics": 0.0, "service-graphs": 1.0},
    )
    config = TempoFacts(
        "http://t", "single-tenant", UP, processors=("service-graphs",), remote_write_urls=()
    )
    got = fact_blocks(prom, config, tempo, [], [], dead_after=8)
    assert set(got) == {hops.REMOTE_WRITE, hops.GENERATOR_SPAN_METRICS}
    assert got[hops.REMOTE_WRITE].component == "prometheus"  # the flag wins over the config
    assert "web.enable-remote-write-receiver=false" in got[hops.REMOTE_WRITE].evidence
    assert "[service-graphs]" in got[hops.GENERATOR_SPAN_METRICS].evidence
    # A generator with no instance for the tenant yet proves nothing about its processors.
    assert fact_blocks(None, None, TempoFacts("t", "x", UP), [], [], dead_after=8) == {}


class Down:
    """A client that refuses every connection (what a stopped component does)."""

    def __getattr__(self, name: str) -> Any:
        def refuse(*a: Any, **kw: Any) -> None:
            raise Unreachable(name, "http://x", "connection refused")

        return refuse


class Up:
    def __getattr__(self, name: str) -> Any:
        return lambda *a, **kw: None


def test_the_watch_declares_a_component_dead_only_after_the_grace_period() -> None:
    clock = FakeClock()
    settings = load_settings(flags={"collector.metrics_url": ""})
    tempo: Any = Up()
    backends = Backends(settings, collector=Up(), tempo=tempo, prometheus=Up())  # type: ignore[arg-type]
    watch = Watch(backends, clock, ["collector", "tempo"], dead_after=8)
    watch.jobs = lambda: {  # type: ignore[method-assign]
        c: (watch._prober(c), 1.0) for c in ("collector", "tempo")
    }
    watch.tick()
    backends._given["tempo"] = Down()
    path = (hops.COLLECTOR, hops.EXPORT, hops.TEMPO)
    for _ in range(8):
        clock.advance(1)
        watch.tick()
        assert watch.blocking(path) is None  # 0..7 s of refusals: could be a restart
    clock.advance(1)
    watch.tick()
    block = watch.blocking(path)
    assert block is not None and block.down and block.component == "tempo"
    assert block.hop == hops.EXPORT  # the first hop of the path that Tempo's death kills
    assert "stopped answering" in block.evidence and "9 probes" in block.evidence
    # It answers again: the outage ends, nothing blocks any more.
    backends._given["tempo"] = Up()
    clock.advance(1)
    watch.tick()
    assert watch.blocking(path) is None and watch.outages[0].ended is not None


INFOS = {
    "collector.exported": CheckInfo(
        "collector.exported", "synthetic", (hops.COLLECTOR, hops.EXPORT), "collector"
    ),
    "tempo.search": CheckInfo(
        "tempo.search", "synthetic", (hops.COLLECTOR, hops.EXPORT, hops.TEMPO), "tempo"
    ),
    "prometheus.span_metrics": CheckInfo(
        "prometheus.span_metrics",
        "synthetic",
        (
            hops.COLLECTOR,
            hops.EXPORT,
            hops.TEMPO,
            hops.GENERATOR_SPAN_METRICS,
            hops.REMOTE_WRITE,
            hops.PROMETHEUS,
        ),
        "prometheus",
    ),
    "apiserver.requests": CheckInfo(
        "apiserver.requests", "apiserver", (hops.ETCD, hops.APISERVER), "apiserver"
    ),
}


def result(name: str, status: Status, hint: str = "a guess") -> CheckResult:
    return CheckResult(name=name, title=name, status=status, hint=hint)


def test_the_upstream_most_candidate_that_explains_a_failure_is_the_diagnosis() -> None:
    results = [
        result("collector.exported", Status.FAIL),
        result("tempo.search", Status.ERROR),
        result("prometheus.span_metrics", Status.FAIL),
        result("apiserver.requests", Status.PASS, ""),
    ]
    tempo_down = Candidate(
        hops.TEMPO,
        "tempo",
        "Tempo stopped answering",
        ("Tempo at t stopped answering at 10:00:00Z",),
        "start Tempo",
        1.0,
        down=True,
    )
    remote_write = Candidate(
        hops.REMOTE_WRITE, "tempo", "remote write fails", ("samples failed +3",)
    )
    d, marked = diagnose(INFOS, results, [remote_write, tempo_down])
    assert d is not None and d.conclusive and (d.component, d.hop) == ("tempo", hops.TEMPO)
    assert (
        d.summary.startswith("Tempo at t stopped answering")
        and "2 later failures follow" in d.summary
    )
    by = {r.name: r for r in marked}
    assert by["tempo.search"].hint.startswith("Tempo at t stopped answering")  # asks Tempo
    assert by["collector.exported"].hint == "follows from Tempo stopped answering"
    assert by["prometheus.span_metrics"].follows_from == hops.TEMPO
    assert by["apiserver.requests"].hint == ""


def test_without_a_candidate_the_diagnosis_says_it_is_inconclusive() -> None:
    results = [result("prometheus.span_metrics", Status.FAIL)]
    d, marked = diagnose(INFOS, results, [])
    assert d is not None and not d.conclusive and d.summary.startswith("inconclusive")
    assert d.unexplained == ("prometheus.span_metrics",) and marked[0].hint == "a guess"


def test_a_failure_the_diagnosis_does_not_explain_keeps_its_hint() -> None:
    results = [
        result("tempo.search", Status.ERROR),
        result("apiserver.requests", Status.ERROR, "own"),
    ]
    tempo_down = Candidate(
        hops.TEMPO, "tempo", "Tempo stopped answering", ("Tempo stopped",), down=True
    )
    d, marked = diagnose(INFOS, results, [tempo_down])
    assert d is not None and d.unexplained == ("apiserver.requests",)
    assert "not explained by it: apiserver.requests" in d.summary
    assert {r.name: r.hint for r in marked}["apiserver.requests"] == "own"


def test_a_component_that_refused_the_credentials_is_not_asked_again() -> None:
    from dataclasses import replace as changed

    from tracecheck.diagnose.diagnosis import diagnose_run

    hint = "tempo refused the credentials sent: check tempo.headers"
    refused = changed(
        result("tempo.search", Status.ERROR, hint), data={"credentials_refused": "tempo"}
    )
    results = [refused, result("prometheus.span_metrics", Status.FAIL)]
    asked: list[list[str]] = []

    def read(components: Any, since: Any) -> Inspection:
        asked.append(list(components))
        return Inspection(0, 1)

    settings = load_settings(flags={"tempo.url": "http://127.0.0.1:1"})
    with Backends(settings) as backends:
        d, marked = diagnose_run(
            INFOS, results, backends=backends, watch=None, blocks={}, read=read
        )
    assert asked and "tempo" not in asked[0] and "prometheus" in asked[0]
    assert d is not None and d.conclusive and (d.component, d.hop) == ("tempo", hops.TEMPO)
    assert d.summary.startswith(hint)
    by = {r.name: r for r in marked}
    assert by["tempo.search"].hint == hint  # what to set, unchanged
    assert by["prometheus.span_metrics"].follows_from == hops.TEMPO


def test_doctor_findings_from_two_readings() -> None:
    t0 = TempoFacts(
        "http://t",
        "single-tenant",
        UP,
        metrics=UP,
        remote_write=(RemoteWrite("u", failed=0),),
        config=UP,
        processors=("span-metrics", "service-graphs"),
        remote_write_urls=("u",),
    )
    t1 = replace(t0, remote_write=(RemoteWrite("u", failed=7),))
    c0 = CollectorFacts("c", UP, UP, accepted=10, sent=10, queue_size=1, exporters=("otlp",))
    c1 = CollectorFacts("c", UP, UP, accepted=15, sent=10, queue_size=2, exporters=("otlp",))
    p = PrometheusFacts(
        "http://p", UP, remote_write_receiver=True, exemplar_storage=False, write_answers={"204": 9}
    )
    found = findings(Inspection(0, 1, c1, t1, p), Inspection(0, 1, c0, t0, p))
    errors = {(f.component, f.field) for f in found if f.level == "error"}
    assert ("collector", "exporter") in errors and ("tempo", "remote_write") in errors
    assert [f.field for f in found if f.level == "warning"] == ["exemplar storage"]
    assert all(f.evidence and f.fix for f in found if f.level == "error")
    healthy = findings(
        Inspection(
            0,
            1,
            c0,
            t0,
            PrometheusFacts("p", UP, remote_write_receiver=True, exemplar_storage=True),
        )
    )
    assert healthy == []
    # A Prometheus whose flags could not be read: the finding says it is a guess.
    guess = findings(
        Inspection(
            0, 1, prometheus=PrometheusFacts("p", UP, flags=Reading("forbidden", 0, "HTTP 403"))
        )
    )
    assert guess and "a guess" in guess[0].message
