"""Per-hop accounting on fakes and a fake clock: which hop lost, how much, why, which numbers are
exact and which are bounds, when a hop settles, and the exit code."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from tracecheck.backends.prometheus import QueryResult, RangeSeries
from tracecheck.backends.tempo import MetricsSeries, Span, Trace
from tracecheck.config import Settings
from tracecheck.errors import Unreachable
from tracecheck.load.account import AccountOptions, account
from tracecheck.load.encode import SCOPE_NAME, SHARD_ATTRIBUTE
from tracecheck.load.hops import counter_hop
from tracecheck.load.ledger import ShardRecord
from tracecheck.load.readback import choose_samples
from tracecheck.load.report import accounting_report
from tracecheck.load.sources import HistoryCounters
from tracecheck.polling import FakeClock
from tracecheck.results import Status

T0 = 1_700_000_000.0


def record(**kw: Any) -> ShardRecord:
    args: dict[str, Any] = {
        "run_id": "run1",
        "shard": 0,
        "shards": 1,
        "seed": 7,
        "service": "svc",
        "protocol": "grpc",
        "spans_per_trace": 5,
        "traces_per_request": 100,
        "target_rate": 1000.0,
        "duration_s": 10.0,
        "planned_spans": 10_000,
        "planned_traces": 2_000,
        "planned_requests": 20,
        "sent_spans": 10_000,
        "rejected_spans": 0,
        "refused_final_spans": 0,
        "failed_spans": 0,
        "unsent_spans": 0,
        "refused_attempt_spans": 0,
        "started_at": T0,
        "elapsed_s": 10.0,
        "achieved_rate": 1000.0,
    }
    args.update(kw)
    return ShardRecord(**args)


class Counters:
    """A CounterSource whose values come from functions of the fake clock's elapsed time."""

    exact = True
    where = "http://collector:8888/metrics"
    exporters = ("otlp",)

    def __init__(
        self,
        clock: FakeClock,
        collector: Callable[[float], dict[str, float]],
        tempo: Callable[[float], dict[str, float]],
    ) -> None:
        self.clock, self.start = clock, clock.monotonic()
        self._c, self._t = collector, tempo

    def collector(self) -> dict[str, float]:
        base = {"accepted": 0.0, "refused": 0.0, "failed": 0.0, "sent": 0.0, "send_failed": 0.0}
        return {**base, "enqueue_failed": 0.0, "queue_size": 0.0, **self._c(self.elapsed)}

    def tempo(self) -> dict[str, float]:
        return {"received": 0.0, "accepted": 0.0, "refused": 0.0, **self._t(self.elapsed)}

    def fresh(self, group: str, after: float) -> bool:
        return True

    def resolution(self, group: str) -> float:
        return 0.0 if self.exact else 15.0  # Prometheus history scraped every 15 s

    @property
    def elapsed(self) -> float:
        return self.clock.monotonic() - self.start


class FakeTempo:
    address = "http://tempo:3200"

    def __init__(self, clock: FakeClock, found: Callable[[float], dict[int, int]]) -> None:
        self.clock, self.start, self.found = clock, clock.monotonic(), found
        self.records: dict[bytes, tuple[Any, ...]] = {}
        self.queries: list[str] = []

    def metrics_query_instant(
        self, q: str, *, start: float, end: float, timeout: float | None = None
    ) -> tuple[Any, ...]:
        self.queries.append(q)
        counts = self.found(self.clock.monotonic() - self.start)
        return tuple(
            MetricsSeries({f"span.{SHARD_ATTRIBUTE}": k}, ((int(end * 1000), float(v)),))
            for k, v in counts.items()
        )

    def trace(self, trace_id: bytes, **kw: Any) -> Trace:
        return Trace(trace_id, self.records.get(trace_id, ()))


class FakeBackends:
    def __init__(self, tempo: FakeTempo) -> None:
        self._tempo = tempo

    def tempo(self) -> FakeTempo:
        return self._tempo


class FakeSpanMetrics:
    def __init__(self, clock: FakeClock, rose: Callable[[float], float]) -> None:
        self.clock, self.start, self.rose = clock, clock.monotonic(), rose

    def increase(self, now: float) -> tuple[Any, float]:
        return None, self.rose(self.clock.monotonic() - self.start)


def store(tempo: FakeTempo, records: list[ShardRecord], *, rename: str = "") -> None:
    """Put the sampled traces into the fake Tempo, as Tempo would return them."""
    for sample in choose_samples(records, 5):
        spans = []
        for s in sample.spans:
            attrs = dict(s.attributes)
            spans.append(
                Span(
                    trace_id=s.trace_id,
                    span_id=s.span_id,
                    parent_span_id=s.parent_span_id,
                    name=rename or s.name,
                    kind="SPAN_KIND_SERVER" if s.kind == 2 else "SPAN_KIND_INTERNAL",
                    start_ns=s.start_ns + 5_000,
                    end_ns=s.end_ns + 5_000,
                    status_code="STATUS_CODE_UNSET",
                    status_message="",
                    attributes=attrs,
                    resource={"service.name": "svc", **attrs},
                    scope_name=SCOPE_NAME,
                )
            )
        tempo.records[sample.trace_id] = tuple(spans)


def run(
    records: list[ShardRecord],
    *,
    collector: Callable[[float], dict[str, float]] = lambda t: {},
    tempo: Callable[[float], dict[str, float]] = lambda t: {},
    found: Callable[[float], dict[int, int]] = lambda t: {0: 10_000},
    span_metrics: Callable[[float], float] = lambda t: 10_000.0,
    options: AccountOptions | None = None,
    ledgers: int = 0,
    rename: str = "",
    exact: bool = True,
) -> tuple[Any, FakeClock]:
    clock = FakeClock(T0 + 20)
    counters = Counters(clock, collector, tempo)
    counters.exact = exact
    fake = FakeTempo(clock, found)
    store(fake, records, rename=rename)
    acc = account(
        Settings(),
        records,
        backends=FakeBackends(fake),  # type: ignore[arg-type]
        clock=clock,
        counters=counters,
        span_metrics=FakeSpanMetrics(clock, span_metrics),  # type: ignore[arg-type]
        options=options or AccountOptions(),
        ledgers=ledgers,
    )
    return acc, clock


CLEAN_COLLECTOR = {"accepted": 10_001.0, "sent": 10_001.0}
CLEAN_TEMPO = {"received": 10_001.0, "accepted": 10_001.0}


def test_a_clean_load_is_exact_at_every_hop_and_exits_0() -> None:
    acc, _ = run(
        [record()],
        collector=lambda t: CLEAN_COLLECTOR,
        tempo=lambda t: CLEAN_TEMPO,
        ledgers=1,
    )
    rows = {r["hop"]: r for r in acc.rows()}
    assert [r["hop"] for r in acc.rows()] == [
        "client", "receiver", "exporter", "tempo", "found", "samples", "span_metrics",
    ]  # fmt: skip
    for hop in ("client", "receiver", "exporter", "tempo", "found", "span_metrics"):
        assert (rows[hop]["expected"], rows[hop]["observed"], rows[hop]["lost"]) == (
            10_000,
            10_000,
            0,
        ), hop
        assert rows[hop]["basis"] == "exact", hop
    assert rows["samples"]["observed"] == 5
    assert acc.first_loss is None and acc.lost_total == 0
    assert acc.exit_code == 0
    assert all(h.status is Status.PASS for h in acc.hops)


def test_refusals_are_lost_at_the_receiver_with_the_collectors_words() -> None:
    r = record(
        sent_spans=6_000,
        refused_final_spans=4_000,
        refused_attempt_spans=4_000,
        refusals={"UNAVAILABLE": 4_000},
        messages=("data refused due to high memory usage",),
        unaccepted=((0, 8),),
    )
    acc, _ = run(
        [r],
        collector=lambda t: {"accepted": 6_000.0, "refused": 4_000.0, "sent": 6_000.0},
        tempo=lambda t: {"received": 6_000.0, "accepted": 6_000.0},
        found=lambda t: {0: 6_000},
        span_metrics=lambda t: 6_000.0,
    )
    first = acc.first_loss
    assert first is not None and first.hop == "receiver"
    assert (first.expected, first.observed, first.lost) == (10_000, 6_000, 4_000)
    assert "UNAVAILABLE" in first.cause and "memory_limiter" in first.cause
    assert first.status is Status.FAIL
    # Downstream hops expect only what the receiver passed on, and lost nothing more.
    assert [(h.hop, h.expected, h.lost) for h in acc.hops[2:5]] == [
        ("exporter", 6_000, 0),
        ("tempo", 6_000, 0),
        ("found", 6_000, 0),
    ]
    assert acc.hop("samples").status is Status.PASS  # type: ignore[union-attr]
    assert acc.lost_total == 4_000 and acc.loss_pct == 40.0
    assert acc.exit_code == 1


def test_a_loss_within_max_loss_is_a_warning_and_exits_0() -> None:
    acc, _ = run(
        [record()],
        collector=lambda t: {"accepted": 10_000.0, "sent": 9_990.0, "enqueue_failed": 10.0},
        tempo=lambda t: {"received": 9_990.0},
        found=lambda t: {0: 9_990},
        span_metrics=lambda t: 9_990.0,
        options=AccountOptions(max_loss_pct=0.5),
    )
    exporter = acc.hop("exporter")
    assert exporter is not None and exporter.lost == 10
    assert "enqueue failed +10" in exporter.cause and "queue was full" in exporter.cause
    assert exporter.status is Status.WARN and acc.first_loss is exporter
    assert acc.exit_code == 0
    strict, _ = run(
        [record()],
        collector=lambda t: {"accepted": 10_000.0, "sent": 9_990.0, "enqueue_failed": 10.0},
        tempo=lambda t: {"received": 9_990.0},
        found=lambda t: {0: 9_990},
        span_metrics=lambda t: 9_990.0,
    )
    assert strict.hop("exporter").status is Status.FAIL  # type: ignore[union-attr]
    assert strict.exit_code == 1


def test_other_senders_make_a_counter_hop_a_bound_and_its_loss_counters_judge_it() -> None:
    # The collector also carried 500 spans of kube-apiserver; 200 spans were refused by Tempo.
    acc, _ = run(
        [record()],
        collector=lambda t: {"accepted": 10_500.0, "sent": 10_500.0},
        tempo=lambda t: {"received": 10_300.0, "refused": 200.0},
        found=lambda t: {0: 9_800},
        span_metrics=lambda t: 9_800.0,
    )
    exporter, tempo = acc.hop("exporter"), acc.hop("tempo")
    assert exporter is not None and tempo is not None
    assert (exporter.observed, exporter.lost, exporter.basis) == (10_500, 0, "bound")
    assert "+500 from other senders" in exporter.detail
    assert (tempo.lost, tempo.basis) == (200, "bound")
    assert "refused +200" in tempo.cause
    assert acc.first_loss is tempo and acc.hop("found").lost == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "signals", "reset", "want"),
    [
        (1000, 0, False, (1000, 0, "exact")),
        (1200, 0, False, (1200, 0, "bound")),
        (900, 0, False, (900, 100, "bound")),
        (900, 100, False, (900, 100, "exact")),
        (1100, 50, False, (1100, 50, "bound")),
        (1000, 0, True, (1000, 0, "bound")),
    ],
)
def test_counter_hop_rules(
    raw: float, signals: float, reset: bool, want: tuple[int, int, str]
) -> None:
    observed, lost, basis, _ = counter_hop(
        "exporter", 1000, raw, signals, ledgers=0, exact_source=True, reset=reset,
        signal_names="send failed",
    )  # fmt: skip
    assert (observed, lost, basis) == want


def test_tempo_discards_explain_the_shortfall_and_settle_the_found_hop_early() -> None:
    acc, _ = run(
        [record()],
        collector=lambda t: CLEAN_COLLECTOR,
        tempo=lambda t: {**CLEAN_TEMPO, "discarded:live_traces_exceeded": 1_500.0},
        found=lambda t: {0: 8_500},
        span_metrics=lambda t: 10_000.0,
        ledgers=1,
    )
    found = acc.hop("found")
    assert found is not None and (found.lost, found.settled) == (1_500, True)
    assert "live_traces_exceeded +1,500" in found.cause and "max_traces_per_user" in found.cause
    assert found.elapsed_s < Settings().deadlines.search
    assert acc.first_loss is found and acc.exit_code == 1


def test_an_unexplained_shortfall_waits_for_the_deadline_then_counts_as_lost() -> None:
    acc, _ = run(
        [record()],
        collector=lambda t: CLEAN_COLLECTOR,
        tempo=lambda t: CLEAN_TEMPO,
        found=lambda t: {0: 9_000 if t < 1000 else 10_000},
        ledgers=1,
    )
    found = acc.hop("found")
    assert found is not None and not found.settled and found.lost == 1_000
    assert found.elapsed_s >= Settings().deadlines.search - 1
    assert "not searchable" in found.cause


def test_a_hop_found_late_within_its_deadline_is_not_lost() -> None:
    acc, _ = run(
        [record()],
        collector=lambda t: CLEAN_COLLECTOR,
        tempo=lambda t: CLEAN_TEMPO,
        found=lambda t: {0: 10_000 if t > 6 else int(t * 1000)},
        span_metrics=lambda t: 10_000.0 if t > 20 else 0.0,
        ledgers=1,
    )
    assert acc.lost_total == 0 and acc.exit_code == 0
    assert acc.hop("found").elapsed_s > 6  # type: ignore[union-attr]


def test_a_count_from_prometheus_history_must_stand_still_over_a_scrape_interval() -> None:
    # `load --account` reads Tempo's counter as Prometheus scraped it: the first scrape after
    # the run may precede the exporter's last batches; the next one, 15 s on, shows them.
    acc, _ = run(
        [record()],
        collector=lambda t: CLEAN_COLLECTOR,
        tempo=lambda t: CLEAN_TEMPO if t > 8 else {"received": 0.0},
        ledgers=1,
        exact=False,
    )
    tempo = acc.hop("tempo")
    assert tempo is not None
    assert (tempo.observed, tempo.lost, tempo.basis) == (10_000, 0, "bound")
    assert tempo.elapsed_s > 8
    assert acc.exit_code == 0


def test_an_unreadable_backend_is_an_error_exit_3() -> None:
    def down(t: float) -> dict[str, float]:
        raise Unreachable("tempo", "http://tempo:3200/metrics", "connection refused")

    acc, _ = run([record()], collector=lambda t: CLEAN_COLLECTOR, tempo=down, ledgers=1)
    tempo = acc.hop("tempo")
    assert tempo is not None and tempo.status is Status.ERROR and tempo.observed is None
    assert "connection refused" in tempo.detail
    assert acc.exit_code == 3


def test_a_sampled_trace_that_differs_fails_the_samples_hop() -> None:
    acc, _ = run(
        [record()], collector=lambda t: CLEAN_COLLECTOR, tempo=lambda t: CLEAN_TEMPO,
        ledgers=1, rename="renamed",
    )  # fmt: skip
    samples = acc.hop("samples")
    assert samples is not None and samples.status is Status.FAIL
    assert "name 'renamed', expected 'GET /load'" in samples.detail
    assert acc.exit_code == 1


def test_shards_are_added_up_and_a_short_shard_is_named() -> None:
    shards = [
        record(shard=0, shards=2, planned_spans=5_000, sent_spans=5_000, planned_traces=1_000),
        record(shard=1, shards=2, planned_spans=5_000, sent_spans=5_000, planned_traces=1_000),
    ]
    acc, _ = run(
        shards,
        collector=lambda t: {"accepted": 10_002.0, "sent": 10_002.0},
        tempo=lambda t: {"received": 10_002.0},
        found=lambda t: {0: 5_000, 1: 4_000},
        span_metrics=lambda t: 10_000.0,
        ledgers=2,
    )
    found = acc.hop("found")
    assert found is not None and (found.expected, found.observed, found.lost) == (
        10_000,
        9_000,
        1_000,
    )
    assert "shard 1 4,000 of 5,000" in found.detail
    assert acc.planned == 10_000
    report = accounting_report(acc, started_at=T0, finished_at=T0 + 30, target={})
    assert report.exit_code == 1
    assert report.tables["summary"][0]["first_loss"] == "found"
    assert [r["shard"] for r in report.tables["shards"]] == [0, 1]


def test_skipped_hops_are_not_measured_and_do_not_fail() -> None:
    acc, _ = run(
        [record()],
        options=AccountOptions(skip=frozenset({"collector", "tempo", "span-metrics"})),
    )
    assert [(h.hop, h.basis) for h in acc.hops if h.status is Status.SKIP] == [
        ("exporter", "not measured"),
        ("tempo", "not measured"),
        ("span_metrics", "not measured"),
    ]
    assert acc.exit_code == 0


def test_the_generator_falling_behind_is_lost_at_the_client() -> None:
    r = dataclasses.replace(record(), unsent_spans=2_000, sent_spans=8_000, unaccepted=((16, 20),))
    acc, _ = run(
        [r],
        collector=lambda t: {"accepted": 8_000.0, "sent": 8_000.0},
        tempo=lambda t: {"received": 8_000.0},
        found=lambda t: {0: 8_000},
        span_metrics=lambda t: 8_000.0,
    )
    client = acc.hop("client")
    assert client is not None and client is acc.first_loss
    assert (client.expected, client.observed, client.lost) == (10_000, 8_000, 2_000)
    assert "fell behind" in client.cause


def test_a_ledger_lost_with_the_load_never_makes_a_count_negative() -> None:
    # The exporter failed everything: the load's 4,000 spans and the ledger span.
    observed, lost, basis, note = counter_hop(
        "exporter", 4_000, 0, 4_001, ledgers=1, exact_source=True, reset=False,
        signal_names="send failed",
    )  # fmt: skip
    assert (observed, lost, basis) == (0, 4_000, "exact")
    assert note == "4,000 short; send failed +4,001"


def test_spans_still_queued_at_a_hops_deadline_but_found_later_are_late_not_lost() -> None:
    # The exporter's queue drains into a slow Tempo: at its deadline it has sent 73,910 of
    # 80,000; all 80,000 are found in Tempo a little later.
    acc, _ = run(
        [record(planned_spans=80_000, sent_spans=80_000, planned_traces=16_000)],
        collector=lambda t: {"accepted": 80_001.0, "sent": 73_911.0, "queue_size": 1.0},
        tempo=lambda t: {"received": 73_911.0 if t < 12 else 80_001.0},
        found=lambda t: {0: 80_000 if t > 15 else 0},
        span_metrics=lambda t: 80_000.0,
        ledgers=1,
    )
    exporter = acc.hop("exporter")
    assert exporter is not None and not exporter.settled
    assert (exporter.expected, exporter.lost, exporter.status) == (80_000, 0, Status.PASS)
    assert exporter.cause.startswith("6,090 spans were still in flight at the hop's deadline")
    assert [(h.hop, h.expected, h.lost) for h in acc.hops if h.hop in ("tempo", "found")] == [
        ("tempo", 80_000, 0),
        ("found", 80_000, 0),
    ]
    assert acc.hop("span_metrics").expected == 80_000  # type: ignore[union-attr]
    assert acc.first_loss is None and acc.exit_code == 0


class FakeProm:
    def __init__(self, points: list[tuple[float, float]]) -> None:
        self.points = points

    def query(self, q: str, **kw: Any) -> Any:
        from tracecheck.backends.prometheus import QueryResult, RangeSeries

        return QueryResult("matrix", (), (RangeSeries({"service": "svc"}, tuple(self.points)),))


def test_a_generator_restart_that_prometheus_never_saw_as_a_reset_is_still_counted() -> None:
    from tracecheck.backends.prometheus import CounterSnapshot
    from tracecheck.load.sources import increase_across_restart

    now = T0
    key = frozenset({"service": "svc"}.items())
    base = CounterSnapshot('calls{service="svc"}', now - 5, {key: (now - 303, 408.0)})
    # The restarted generator's 0 sample was refused (out of order); 4,000 is all new spans.
    prom = FakeProm([(now - 303, 408.0), (now - 58, 4_000.0), (now - 43, 4_000.0)])
    got = increase_across_restart(prom, base, now=now, restart_at=now - 70)
    assert got == 4_000.0
    assert increase_across_restart(prom, base, now=now, restart_at=None) == 3_592.0
    # A restart before the baseline sample changes nothing.
    assert increase_across_restart(prom, base, now=now, restart_at=now - 400) == 3_592.0


@pytest.mark.parametrize("fmt", ["table", "json", "junit", "markdown"])
def test_the_accounting_renders_in_every_smoke_format(fmt: str) -> None:
    from tracecheck.output import render

    r = record(sent_spans=9_000, refused_final_spans=1_000, refused_attempt_spans=1_000,
               refusals={"UNAVAILABLE": 1_000}, unaccepted=((0, 2),))  # fmt: skip
    acc, _ = run(
        [r],
        collector=lambda t: {"accepted": 9_000.0, "refused": 1_000.0, "sent": 9_000.0},
        tempo=lambda t: {"received": 9_000.0},
        found=lambda t: {0: 9_000},
        span_metrics=lambda t: 9_000.0,
    )
    report = accounting_report(acc, started_at=T0, finished_at=T0 + 30, target={"protocol": "grpc"})
    text = render(report, fmt)
    assert "load.receiver" in text and "run1" in text
    if fmt == "json":
        data = json.loads(text)
        assert data["command"] == "load" and data["exit_code"] == 1
        assert data["tables"]["summary"][0]["first_loss"] == "receiver"
    if fmt == "table":
        assert "Accounting" in text and "<- first" in text
        assert text.rstrip().endswith("-> exit 1")


class ScrapedProm:
    """Answers every query with the same raw samples, and counts the queries."""

    def __init__(self, series: tuple[RangeSeries, ...]) -> None:
        self.series = series
        self.queries: list[str] = []

    def query(self, q: str, *, at: float | None = None, timeout: float | None = None) -> Any:
        self.queries.append(q)
        return QueryResult("matrix", (), self.series)


class PromBackends:
    def __init__(self, prom: ScrapedProm) -> None:
        self.prom = prom

    def prometheus(self) -> ScrapedProm:
        return self.prom


def history(*series: tuple[float, ...]) -> tuple[HistoryCounters, ScrapedProm]:
    prom = ScrapedProm(
        tuple(
            RangeSeries({"instance": f"tempo-{i}"}, tuple((t, 1.0) for t in times))
            for i, times in enumerate(series)
        )
    )
    source = HistoryCounters(Settings(), PromBackends(prom), T0, clock=FakeClock(T0))  # type: ignore[arg-type]
    return source, prom


def test_prometheus_history_reads_its_resolution_from_the_scrape_spacing() -> None:
    # Two Tempo instances scraped every 5 s and every 15 s (one scrape late): the slower counts.
    source, prom = history((100.0, 105.0, 110.0, 115.0), (100.0, 115.0, 131.0, 145.0))
    assert source.resolution("tempo") == 15.0
    assert source.resolution("tempo") == 15.0
    assert len(prom.queries) == 1  # read once per run
    assert prom.queries[0].endswith("[120s]")
    assert "tempo_distributor_spans_received" in prom.queries[0]
    # A single sample tells no interval: Prometheus's default scrape interval.
    assert history((100.0,))[0].resolution("tempo") == 60.0
