"""The watch loop's verdicts as Prometheus metrics (``prometheus_client``, in its own registry).

Every metric and its labels; labels are bounded: ``check`` and ``stage`` are check names of the
smoke plan, ``hop`` the hop each check exercises, ``status`` one of the five statuses, ``result``
pass/fail/error. A run ID or trace ID is never a label: the synthetic trace ID of a round rides
along as an *exemplar* (``traceID``) on the delay histogram, which Prometheus keeps only when
scraping OpenMetrics with exemplar storage on, and which Grafana links to Tempo.

==============================================  =========  ==================================
metric                                          type       labels
==============================================  =========  ==================================
tracecheck_rounds_total                         counter    result (pass, fail, error)
tracecheck_round_overruns_total                 counter    -
tracecheck_round_duration_seconds               histogram  -
tracecheck_round_in_progress                    gauge      -
tracecheck_last_round_timestamp_seconds         gauge      -
tracecheck_watch_interval_seconds               gauge      -
tracecheck_check_status                         gauge      check, hop, status (1: the last)
tracecheck_check_results_total                  counter    check, hop, status
tracecheck_check_consecutive_failures           gauge      check, hop
tracecheck_check_last_success_timestamp_seconds gauge      check, hop
tracecheck_stage_delay_seconds                  histogram  stage, hop (exemplar traceID)
tracecheck_stage_deadline_seconds               gauge      stage, hop
tracecheck_apiserver_traced_ratio               gauge      -
tracecheck_build_info                           gauge      version, tempo_version,
                                                           prometheus_version, kubernetes_version
tracecheck_worker_process_*                     (various)  the round worker process's figures
==============================================  =========  ==================================

A round's updates and a scrape exclude each other (one lock), so a scrape never sees half a
round: e.g. two statuses of one check at 1, or a round counted before its checks.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.metrics_core import Metric

from tracecheck.watch._smoke import Report, Status, __version__

__all__ = [
    "DELAY_BUCKETS",
    "RESULTS",
    "ROUND_BUCKETS",
    "CheckInfo",
    "WatchMetrics",
    "round_result",
]

#: Round results, from the round's exit code (0, 1, 3) or an exception (error).
RESULTS = ("pass", "fail", "error")
#: Send-to-visible delays: Tempo by ID within a second, search after the ingester's idle period
#: (seconds), span-metrics after a generator collection (15 s) and remote write; deadlines <= 60 s.
DELAY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120)
#: Whole rounds: seconds (span-metrics skipped) to a minute (every check, slow pipeline).
ROUND_BUCKETS = (0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300)
_FAILING = (Status.FAIL, Status.ERROR)
_OK = (Status.PASS, Status.WARN)
_VERSION_LIMIT = 64


@dataclass(frozen=True, slots=True)
class CheckInfo:
    """A check of the plan as the metrics need it: its name, its hop, and whether it measures a
    send-to-visible delay (a pipeline stage: its delay series exist before the first round)."""

    name: str
    hop: str
    measures_delay: bool = False


def round_result(exit_code: int) -> str:
    """``pass`` (exit 0), ``fail`` (1) or ``error`` (3, a backend could not be asked)."""
    return {0: "pass", 1: "fail"}.get(int(exit_code), "error")


class _Locked:
    """Collects ``inner`` while holding ``lock``: a scrape and a round update exclude each other."""

    def __init__(self, inner: CollectorRegistry, lock: threading.Lock) -> None:
        self._inner = inner
        self._lock = lock

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            return list(self._inner.collect())

    def describe(self) -> Iterable[Metric]:
        # Names for the registry (duplicate detection, ``/metrics?name[]=`` filtering).
        return self.collect()


class WatchMetrics:
    """The watch metrics in a registry of their own (never the global ``REGISTRY``).

    >>> m = WatchMetrics([CheckInfo("tempo.search", "tempo ingester -> search", True)])
    >>> from prometheus_client import generate_latest
    >>> b"tracecheck_rounds_total" in generate_latest(m.registry)
    True
    """

    def __init__(
        self,
        checks: Sequence[CheckInfo],
        *,
        interval: float = 0.0,
        process: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        inner = CollectorRegistry(auto_describe=True)
        r = inner
        self.rounds = Counter(
            "tracecheck_rounds", "Watch rounds finished, by result.", ["result"], registry=r
        )
        self.overruns = Counter(
            "tracecheck_round_overruns",
            "Rounds that took longer than the interval (the next one started late, never "
            "overlapping).",
            registry=r,
        )
        self.round_duration = Histogram(
            "tracecheck_round_duration_seconds",
            "Wall time of a round (every check of the smoke plan).",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.in_progress = Gauge(
            "tracecheck_round_in_progress", "1 while a round runs.", registry=r
        )
        self.last_round = Gauge(
            "tracecheck_last_round_timestamp_seconds",
            "Unix time the last round finished.",
            registry=r,
        )
        self.interval = Gauge(
            "tracecheck_watch_interval_seconds",
            "The configured interval between rounds.",
            registry=r,
        )
        self.status = Gauge(
            "tracecheck_check_status",
            "1 for the status of the check's last result, 0 for the other statuses.",
            ["check", "hop", "status"],
            registry=r,
        )
        self.results = Counter(
            "tracecheck_check_results",
            "Check results, by status.",
            ["check", "hop", "status"],
            registry=r,
        )
        self.consecutive = Gauge(
            "tracecheck_check_consecutive_failures",
            "Rounds in a row the check was FAIL or ERROR (0 after any other status).",
            ["check", "hop"],
            registry=r,
        )
        self.last_success = Gauge(
            "tracecheck_check_last_success_timestamp_seconds",
            "Unix time of the check's last PASS or WARN.",
            ["check", "hop"],
            registry=r,
        )
        self.delay = Histogram(
            "tracecheck_stage_delay_seconds",
            "Send-to-visible delay of a pipeline stage (exemplar traceID: the round's trace).",
            ["stage", "hop"],
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.deadline = Gauge(
            "tracecheck_stage_deadline_seconds",
            "The stage's deadline: a delay beyond it is a FAIL.",
            ["stage", "hop"],
            registry=r,
        )
        self.traced_ratio = Gauge(
            "tracecheck_apiserver_traced_ratio",
            "Share of the apiserver leg's requests whose trace was found in Tempo, last round "
            "(NaN when the leg did not run).",
            registry=r,
        )
        self.build = Info(
            "tracecheck_build",
            "tracecheck's version and the versions of Tempo, Prometheus and Kubernetes last seen.",
            registry=r,
        )
        self._versions = {
            "version": __version__,
            "tempo_version": "",
            "prometheus_version": "",
            "kubernetes_version": "",
        }
        self._consecutive: dict[tuple[str, str], int] = {}
        self._stages = {c.name for c in checks if c.measures_delay}
        with self._lock:
            self.interval.set(interval)
            self.traced_ratio.set(math.nan)
            self.build.info(self._versions)
            # Every series exists from the start (0), so rate() and absent() mean what they say.
            for result in RESULTS:
                self.rounds.labels(result)
            for check in checks:
                self._init_check(check.name, check.hop)
                if check.measures_delay:
                    self.delay.labels(check.name, check.hop)
        self._inner = inner
        self._generation = 0  # bumped by every update: the cached exposition is then stale
        self._cache: dict[str, tuple[int, bytes]] = {}
        #: Everything, for ``generate_latest(metrics.registry)`` and other library uses.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Locked(inner, self._lock))
        self._process: CollectorRegistry | None = None
        if process:
            # Process figures (RSS, CPU, open files) and the Python build, as every exporter has.
            from prometheus_client.gc_collector import GCCollector
            from prometheus_client.platform_collector import PlatformCollector
            from prometheus_client.process_collector import ProcessCollector

            self._process = CollectorRegistry(auto_describe=False)
            for collector in (
                ProcessCollector(registry=self._process),
                PlatformCollector(registry=self._process),
                GCCollector(registry=self._process),
            ):
                self.registry.register(collector)

    def add_worker(self, pid: Callable[[], int | None]) -> None:
        """Also expose the round worker process's figures (``tracecheck_worker_process_*``:
        memory, CPU, open files), read from /proc/<pid()> at each scrape."""
        if self._process is None:
            return
        from prometheus_client.process_collector import ProcessCollector

        collector = ProcessCollector(
            namespace="tracecheck_worker", pid=lambda: pid() or "none", registry=self._process
        )
        self.registry.register(collector)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The body and content type of a scrape, in the format ``accept`` asks for (the
        client library's negotiation: OpenMetrics with exemplars, or text 0.0.4).

        The watch metrics change only when a round updates them, so their encoding is cached
        per format until the next update; only the process metrics are encoded per scrape. A
        scrape therefore costs a copy, not a walk over some 500 series while a round competes
        for the interpreter.
        """
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        with self._lock:
            cached = self._cache.get(content_type)
            if cached is None or cached[0] != self._generation:
                cached = (self._generation, encoder(self._inner))
                self._cache[content_type] = cached
        body = cached[1]
        if self._process is not None:
            # Both halves come from the library's encoder; OpenMetrics allows one "# EOF" only.
            body = body.removesuffix(b"# EOF\n") + encoder(self._process)
        return body, content_type

    def _init_check(self, name: str, hop: str) -> None:
        for status in Status:
            self.status.labels(name, hop, status.value)
            self.results.labels(name, hop, status.value)
        self.consecutive.labels(name, hop)
        self._consecutive.setdefault((name, hop), 0)

    def round_started(self) -> None:
        with self._lock:
            self.in_progress.set(1)
            self._generation += 1

    def overrun(self) -> None:
        with self._lock:
            self.overruns.inc()
            self._generation += 1

    def round_finished(self, report: Report, *, duration: float, finished_at: float) -> str:
        """Record a finished round's report; returns its result (pass, fail, error)."""
        result = round_result(report.exit_code)
        trace_id = report.trace_id
        apiserver_trace = str(report.target.get("apiserver_trace_id", ""))
        with self._lock:
            for r in report.results:
                key = (r.name, r.hop)
                if key not in self._consecutive:
                    self._init_check(r.name, r.hop)
                for status in Status:
                    self.status.labels(r.name, r.hop, status.value).set(
                        1 if status is r.status else 0
                    )
                self.results.labels(r.name, r.hop, r.status.value).inc()
                n = self._consecutive[key] + 1 if r.status in _FAILING else 0
                self._consecutive[key] = n
                self.consecutive.labels(r.name, r.hop).set(n)
                if r.status in _OK:
                    self.last_success.labels(r.name, r.hop).set(finished_at)
                stage = r.name in self._stages or r.delay is not None
                if stage and r.deadline is not None and r.status is not Status.SKIP:
                    self.deadline.labels(r.name, r.hop).set(r.deadline)
                if r.delay is not None:
                    tid = apiserver_trace if r.name.startswith("apiserver.") else trace_id
                    self.delay.labels(r.name, r.hop).observe(
                        r.delay, exemplar={"traceID": tid} if tid else None
                    )
            self.traced_ratio.set(_traced_ratio(report))
            self._see_versions(report)
            self._finish(result, duration, finished_at)
        return result

    def round_failed(self, *, duration: float, finished_at: float) -> str:
        """Record a round that ended in an exception (no report): an ``error`` round."""
        with self._lock:
            self._finish("error", duration, finished_at)
        return "error"

    def _finish(self, result: str, duration: float, finished_at: float) -> None:
        self._generation += 1
        self.rounds.labels(result).inc()
        self.round_duration.observe(duration)
        self.last_round.set(finished_at)
        self.in_progress.set(0)

    def _see_versions(self, report: Report) -> None:
        seen = {
            "tempo_version": report.target.get("tempo_version"),
            "prometheus_version": report.target.get("prometheus_version"),
            "kubernetes_version": report.target.get("apiserver_version"),
        }
        changed = False
        for key, value in seen.items():
            text = _version_text(value)
            if text == "unknown" and self._versions[key]:
                continue  # not a version seen: keep the last one that was
            if text and text != self._versions[key]:
                self._versions[key] = text
                changed = True
        if changed:
            self.build.info(self._versions)

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        """Every sample as (name, labels, value): for tests and the soak benchmark."""
        for metric in self.registry.collect():
            for s in metric.samples:
                yield s.name, dict(s.labels), s.value


def _traced_ratio(report: Report) -> float:
    for r in report.results:
        if r.name == "apiserver.trace" and r.status is not Status.SKIP:
            sent, found = r.data.get("sent"), r.data.get("found")
            if isinstance(sent, int) and sent > 0 and isinstance(found, int):
                return found / sent
    return math.nan


def _version_text(value: object) -> str:
    """A version for a label: ``unknown (…cause…)`` becomes ``unknown``; capped in length."""
    if not isinstance(value, str) or not value:
        return ""
    if value.startswith("unknown"):
        return "unknown"
    return value[:_VERSION_LIMIT]
