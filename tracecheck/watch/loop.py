"""The round loop of ``tracecheck watch``: the smoke plan again and again, one round at a time.

Schedule: the first round starts at once; round *n* is due ``interval`` after round *n-1* was
due (a fixed rate, not "interval after the last one ended"), plus a random offset of up to
``jitter x interval`` so that watchers started together drift apart. Rounds never overlap: a round
that takes longer than the interval is an *overrun* (counted); the next one then starts at once
and the schedule restarts from there, so a slow pipeline is never hit by a burst of catch-up
rounds. ``interval`` 0 runs rounds back to back (no overruns).

Stopping: ``stop`` (a :class:`threading.Event`, set by SIGTERM/SIGINT in :func:`watch`) ends the
wait between rounds at once. A round in progress gets ``grace`` seconds to finish; after that it
is *abandoned*: the loop returns without it. Each round is called in a thread of its own, so the
loop never waits on a round longer than ``grace`` after a stop, whatever the round does. The
smoke plan has no cancellation hook; :class:`tracecheck.watch.worker.ProcessRounds` (what
:func:`tracecheck.watch.watch` uses) runs it in a worker process, which the watch terminates
after an abandoned round, so the round really stops.

Time comes from an injected :class:`~tracecheck.polling.Clock`: with a
:class:`~tracecheck.polling.FakeClock` the loop's waits advance the fake time instead of sleeping,
so the schedule is tested without sleeping.
"""

from __future__ import annotations

import math
import random
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tracecheck.config import Settings
from tracecheck.errors import BackendError, TracecheckError, UsageError
from tracecheck.polling import Clock, SystemClock
from tracecheck.watch._smoke import Report

__all__ = [
    "LoopSummary",
    "RoundRecord",
    "WatchLoop",
    "parse_interval",
    "smoke_rounds",
    "validate_fraction",
]

#: How often a thread waiting on a round looks at ``stop`` (seconds of real time).
_STOP_POLL = 0.1
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_interval(value: float | str, option: str = "--interval") -> float:
    """Seconds from a number or ``30s``/``5m``/``250ms``/``1h``; >= 0 and finite.

    >>> parse_interval("5m"), parse_interval(0), parse_interval("1.5")
    (300.0, 0.0, 1.5)
    """
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise UsageError(
            "watch", option, f"expected seconds >= 0 (e.g. 60, 30s, 5m), not {value!r}"
        )
    return seconds


def validate_fraction(value: float, option: str = "--jitter") -> float:
    """A fraction in [0, 1] (the jitter, as a share of the interval)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise UsageError("watch", option, f"expected a fraction from 0 to 1, not {value!r}")
    return float(value)


def smoke_rounds(settings: Settings) -> Callable[[int], Report]:
    """A round function: the smoke plan with ``settings``. Each call builds its own context
    (fresh clients and baselines) and its own synthetic trace, so its own run ID: with
    ``--seed S`` round *n* uses seed S+n (reproducible, yet distinct); with no seed the seed comes
    from the round's start time."""
    from tracecheck.watch._smoke import smoke

    seed = settings.smoke.seed

    def run(index: int) -> Report:
        s = settings.replace(**{"smoke.seed": seed + index}) if seed else settings
        return smoke(s)

    return run


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """One finished round: its report, or the exception that ended it."""

    index: int  # 0-based
    started: float  # clock.time() when it began
    duration: float  # seconds (monotonic)
    report: Report | None
    error: BaseException | None = None
    overrun: bool = False  # took longer than the interval


@dataclass(frozen=True, slots=True)
class LoopSummary:
    rounds: int  # rounds finished
    overruns: int
    abandoned: bool  # the last round was still running when the grace period ended
    stopped: bool  # ended by ``stop`` (not by the rounds limit)


class WatchLoop:
    """Runs ``run_round(index)`` on the schedule until ``stop`` is set or ``rounds`` are done.

    ``run_round`` returns a report; an exception it raises is an error round, except in the
    first round, where a configuration or usage error (a :class:`TracecheckError` that is not a
    :class:`BackendError`: a bad kubeconfig, an unknown check) is raised again, so a bad
    configuration ends the watch at start. ``on_round`` gets each finished round (metrics, log);
    ``on_start`` each round's index as it starts.
    """

    def __init__(
        self,
        run_round: Callable[[int], Report],
        *,
        interval: float,
        jitter: float = 0.0,
        grace: float = 10.0,
        clock: Clock | None = None,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
        on_round: Callable[[RoundRecord], None] = lambda r: None,
        on_start: Callable[[int], None] = lambda i: None,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.run_round = run_round
        self.interval = parse_interval(interval)
        self.jitter = validate_fraction(jitter)
        self.grace = parse_interval(grace, "--grace")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.stop = stop if stop is not None else threading.Event()
        self.rng = rng or random.Random()
        self.on_round = on_round
        self.on_start = on_start
        self.log = log

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` or until ``stop``; True when stopped. The system clock waits on the
        event itself (a stop ends the wait at once); an injected clock advances its own time."""
        if isinstance(self.clock, SystemClock):
            return self.stop.wait(seconds)
        self.clock.sleep(seconds)
        return self.stop.is_set()

    def run(self, rounds: int | None = None) -> LoopSummary:
        if rounds is not None and rounds < 1:
            raise UsageError("watch", "--rounds", f"expected at least 1, not {rounds}")
        clock = self.clock
        due = clock.monotonic()  # when the current round is due (without jitter)
        start_at = due
        done = overruns = 0
        while not self.stop.is_set():
            wait = start_at - clock.monotonic()
            if wait > 0 and self._sleep(wait):
                break
            if self.stop.is_set():
                break
            record = self._round(done)
            if record is None:
                return LoopSummary(done, overruns, abandoned=True, stopped=True)
            done += 1
            overruns += record.overrun
            self.on_round(record)
            if rounds is not None and done >= rounds:
                return LoopSummary(done, overruns, abandoned=False, stopped=False)
            now = clock.monotonic()
            due += self.interval
            if due < now:  # overran (or interval 0): restart the schedule now, no catch-up burst
                due = now
            offset = self.rng.uniform(0, self.jitter * self.interval) if self.interval else 0.0
            start_at = due + offset
        return LoopSummary(done, overruns, abandoned=False, stopped=True)

    def _round(self, index: int) -> RoundRecord | None:
        """Run one round in a worker thread; None if it was abandoned after a stop."""
        clock = self.clock
        started_wall = clock.time()
        started = clock.monotonic()
        box: dict[str, object] = {}
        finished = threading.Event()

        def work() -> None:
            try:
                box["report"] = self.run_round(index)
            except BaseException as exc:  # handed to the loop's thread, which decides
                box["error"] = exc
            finally:
                finished.set()

        self.on_start(index)
        worker = threading.Thread(target=work, name=f"tracecheck-watch-round-{index}", daemon=True)
        worker.start()
        while not finished.wait(_STOP_POLL):
            if self.stop.is_set():
                self.log(f"stopping: waiting up to {self.grace:g}s for round {index + 1} to finish")
                if not finished.wait(self.grace):
                    self.log(f"round {index + 1} abandoned after {self.grace:g}s")
                    return None
                break
        duration = clock.monotonic() - started
        error = box.get("error")
        if isinstance(error, BaseException):
            configuration = isinstance(error, TracecheckError) and not isinstance(
                error, BackendError
            )
            if index == 0 and configuration:
                raise error
            if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit: not ours
                raise error
        report = box.get("report")
        return RoundRecord(
            index=index,
            started=started_wall,
            duration=duration,
            report=report if isinstance(report, Report) else None,
            error=error if isinstance(error, BaseException) else None,
            overrun=self.interval > 0 and duration > self.interval,
        )
