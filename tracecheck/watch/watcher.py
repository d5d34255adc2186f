"""``tracecheck watch``: the smoke plan on a schedule, its verdicts as Prometheus metrics.

:func:`watch` is what the CLI calls; :class:`Watcher` is the same with its parts exposed (the
metrics registry, the HTTP server, the last report) for tests and embedding.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from tracecheck.config import Settings
from tracecheck.errors import ExitCode, UsageError
from tracecheck.polling import Clock, SystemClock
from tracecheck.watch._smoke import Report, Status, default_checks, render_json, select_checks
from tracecheck.watch.loop import (
    LoopSummary,
    RoundRecord,
    WatchLoop,
    parse_interval,
    smoke_rounds,
    validate_fraction,
)
from tracecheck.watch.server import DEFAULT_LISTEN, WatchServer, WatchState, parse_listen
from tracecheck.watch.worker import ProcessRounds

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_INTERVAL",
    "DEFAULT_JITTER",
    "Watcher",
    "smoke_rounds",
    "stop_on_signals",
    "watch",
]

DEFAULT_INTERVAL = 60.0
DEFAULT_JITTER = 0.1
#: Seconds a round may still run after SIGTERM/SIGINT before it is abandoned. Below the
#: Deployment's terminationGracePeriodSeconds (30), so the exit is always ours.
DEFAULT_GRACE = 10.0
_SHOWN_PROBLEMS = 3


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Watcher:
    """The parts of a watch: checked options, metrics, HTTP server, loop.

    Building one validates everything that can be checked before a round (interval, jitter,
    grace, listen address syntax, --only/--skip names): a mistake is a :class:`UsageError`
    (exit 2). :meth:`run` binds the address (:class:`ConfigError`, exit 4, when it is in use),
    then loops until ``stop`` is set or ``rounds`` are done.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        interval: float | str = DEFAULT_INTERVAL,
        jitter: float = DEFAULT_JITTER,
        listen: str = DEFAULT_LISTEN,
        grace: float | str = DEFAULT_GRACE,
        clock: Clock | None = None,
        stop: threading.Event | None = None,
        log: Callable[[str], None] | None = None,
        run_round: Callable[[int], Report] | None = None,
        process_metrics: bool = True,
    ) -> None:
        from tracecheck.watch.metrics import CheckInfo, WatchMetrics

        self.settings = settings
        self.interval = parse_interval(interval)
        self.jitter = validate_fraction(jitter)
        self.grace = parse_interval(grace, "--grace")
        parse_listen(listen)
        every = default_checks(settings)
        select_checks(every, settings.smoke.only, settings.smoke.skip)  # UsageError on a bad name
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.stop = stop if stop is not None else threading.Event()
        self.log = log or _stderr
        self.metrics = WatchMetrics(
            # A stage: a verify check that polls under a deadline and so measures a delay.
            [
                CheckInfo(c.name, c.hop, c.stage == "verify" and c.deadline_key is not None)
                for c in every
            ],
            interval=self.interval,
            process=process_metrics,
        )
        self.state = WatchState()
        self.server = WatchServer(listen, self.metrics, self.state)
        self.last: RoundRecord | None = None
        self._worker: ProcessRounds | None = None
        if run_round is None:
            # The plan runs in a worker process: scrapes never wait for a round's CPU, and an
            # abandoned round is really stopped (tracecheck.watch.worker).
            self._worker = ProcessRounds(settings)
            self.metrics.add_worker(lambda: self._worker.pid if self._worker else None)
        self._run_round = run_round or self._worker or smoke_rounds(settings)

    def run(self, rounds: int | None = None) -> LoopSummary:
        """Serve the endpoints and run rounds; the server is closed on the way out."""
        if rounds is not None and rounds < 1:
            raise UsageError("watch", "--rounds", f"expected at least 1, not {rounds}")
        self.server.start()
        try:
            self.log(
                f"tracecheck watch: {self.server.url}/metrics; a round every "
                f"{self.interval:g}s (jitter up to {self.jitter * self.interval:g}s)"
                + (f", {rounds} rounds" if rounds else "")
            )
            loop = WatchLoop(
                self._run_round,
                interval=self.interval,
                jitter=self.jitter,
                grace=self.grace,
                clock=self.clock,
                stop=self.stop,
                on_round=self._record,
                on_start=lambda i: self.metrics.round_started(),
                log=self.log,
            )
            summary = loop.run(rounds)
            how = "abandoned the last round" if summary.abandoned else "stopped"
            self.log(
                f"tracecheck watch: {how} after {summary.rounds} rounds "
                f"({summary.overruns} overran the interval)"
            )
            return summary
        finally:
            if self._worker is not None:
                self._worker.close()  # cancels a round abandoned after the grace period
            self.server.close()

    def _record(self, record: RoundRecord) -> None:
        self.last = record
        finished_at = record.started + record.duration
        if record.overrun:
            self.metrics.overrun()
        if record.report is not None:
            report = record.report
            result = self.metrics.round_finished(
                report, duration=record.duration, finished_at=finished_at
            )
            self.state.publish(render_json(report))
            self.log(_round_line(record, result, report))
        else:
            self.metrics.round_failed(duration=record.duration, finished_at=finished_at)
            err = record.error
            cause = f"{type(err).__name__}: {err}" if err is not None else "no report"
            self.log(
                f"{_now(record.started)} round {record.index + 1} error in "
                f"{record.duration:.1f}s: {cause}"
            )


def _now(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _round_line(record: RoundRecord, result: str, report: Report) -> str:
    counts = ", ".join(f"{n} {s.lower()}" for s, n in report.counts().items() if n)
    line = (
        f"{_now(record.started)} round {record.index + 1} {result} in {record.duration:.1f}s "
        f"(run {report.run_id or '-'}): {counts}"
    )
    if record.overrun:
        line += "; overran the interval"
    bad = [r for r in report.results if r.status in (Status.FAIL, Status.ERROR)]
    for r in bad[:_SHOWN_PROBLEMS]:
        line += f"; {r.name} {r.status.value} [{r.hop}]: {r.detail}"
    if len(bad) > _SHOWN_PROBLEMS:
        line += f"; +{len(bad) - _SHOWN_PROBLEMS} more"
    return line


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (the loop then finishes or abandons its round and
    returns); the previous handlers come back at once, so a second signal acts as usual (a
    second Ctrl-C interrupts, exit 130). Only the main thread can set handlers: elsewhere this
    does nothing and the caller sets ``stop`` itself."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def handler(signum: int, frame: object) -> None:
        # No I/O here (a handler may interrupt a write to the same stream): the loop logs.
        stop.set()
        restore()

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        restore()


def watch(
    settings: Settings,
    *,
    interval: float | str = DEFAULT_INTERVAL,
    jitter: float = DEFAULT_JITTER,
    listen: str = DEFAULT_LISTEN,
    rounds: int | None = None,
    grace: float | str = DEFAULT_GRACE,
    clock: Clock | None = None,
    stop: threading.Event | None = None,
    log: Callable[[str], None] | None = None,
    handle_signals: bool = True,
) -> int:
    """Run the smoke plan every ``interval`` seconds (``60``, ``30s``, ``5m``; plus up to
    ``jitter`` x interval), serving /metrics, /healthz, /ready and /report.json on ``listen``,
    until SIGTERM/SIGINT (or ``stop``) or ``rounds`` rounds; returns 0.

    A failing or erroring round is data (metrics, a log line), never an exception. Raised, with
    the exit code on the exception: :class:`UsageError` (2) for a bad interval, jitter, grace,
    rounds, listen address or check name; :class:`ConfigError` (4) when ``listen`` cannot be
    bound, or the first round finds the configuration unusable (e.g. the kubeconfig).

    >>> watch(load_settings(), interval="30s", rounds=3)   # doctest: +SKIP
    0
    """
    watcher = Watcher(
        settings,
        interval=interval,
        jitter=jitter,
        listen=listen,
        grace=grace,
        clock=clock,
        stop=stop,
        log=log,
    )
    with stop_on_signals(watcher.stop) if handle_signals else contextlib.nullcontext():
        watcher.run(rounds)
    return int(ExitCode.OK)
