"""The watch round loop on an injected clock: schedule, jitter, overruns, stop, grace, errors.

Rounds are functions that advance a FakeClock by their duration, so nothing here sleeps except
the grace tests, which wait a fraction of a second of real time for a blocked worker thread.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from tracecheck.errors import ConfigError, ExitCode, Unreachable, UsageError
from tracecheck.polling import FakeClock
from tracecheck.watch import RoundRecord, WatchLoop, parse_interval, smoke_rounds
from tracecheck.watch._smoke import CheckResult, Report, Status


def report(index: int, status: Status = Status.PASS) -> Report:
    return Report(
        run_id=f"run{index}",
        trace_id="",
        started_at=0.0,
        finished_at=0.0,
        results=(CheckResult("preflight.tempo", "t", status, hop="tempo"),),
    )


class Rounds:
    """A round function: round i lasts durations[i] fake seconds; records its start time."""

    def __init__(self, clock: FakeClock, durations: Sequence[float]) -> None:
        self.clock = clock
        self.durations = list(durations)
        self.starts: list[float] = []

    def __call__(self, index: int) -> Report:
        self.starts.append(self.clock.monotonic())
        self.clock.advance(self.durations[index % len(self.durations)])
        return report(index)


def loop(
    run: Callable[[int], Report],
    clock: FakeClock,
    *,
    interval: float = 10.0,
    jitter: float = 0.0,
    **kw: object,
) -> tuple[WatchLoop, list[RoundRecord]]:
    seen: list[RoundRecord] = []
    w = WatchLoop(
        run,
        interval=interval,
        jitter=jitter,
        clock=clock,
        on_round=seen.append,
        **kw,  # type: ignore[arg-type]
    )
    return w, seen


def test_rounds_start_at_a_fixed_rate_not_interval_after_the_last_ended() -> None:
    clock = FakeClock()
    rounds = Rounds(clock, [2.0, 3.5, 1.0, 2.0])
    w, seen = loop(rounds, clock, interval=10.0)
    summary = w.run(rounds=4)
    assert rounds.starts == [0.0, 10.0, 20.0, 30.0]
    assert clock.sleeps == [8.0, 6.5, 9.0]
    assert (summary.rounds, summary.overruns, summary.stopped) == (4, 0, False)
    assert [r.duration for r in seen] == [2.0, 3.5, 1.0, 2.0]
    assert [r.report.run_id for r in seen if r.report] == ["run0", "run1", "run2", "run3"]


def test_an_overrunning_round_is_counted_and_the_next_starts_at_once_without_catch_up() -> None:
    clock = FakeClock()
    rounds = Rounds(clock, [3.0, 25.0, 3.0, 3.0])
    w, seen = loop(rounds, clock, interval=10.0)
    summary = w.run(rounds=4)
    # Round 2 (due at 10) ran until 35: round 3 starts then, never two at once, and the slots
    # at 20 and 30 it missed are not made up with a burst; the schedule restarts from 35.
    assert rounds.starts == [0.0, 10.0, 35.0, 45.0]
    assert [r.overrun for r in seen] == [False, True, False, False]
    assert summary.overruns == 1


def test_jitter_delays_each_start_by_up_to_its_share_of_the_interval() -> None:
    clock = FakeClock()
    rounds = Rounds(clock, [1.0])
    w, _ = loop(rounds, clock, interval=10.0, jitter=0.2, rng=random.Random(7))
    w.run(rounds=6)
    expected = random.Random(7)
    offsets = [expected.uniform(0, 2.0) for _ in range(5)]
    assert rounds.starts == pytest.approx(
        [0.0] + [10.0 * (i + 1) + o for i, o in enumerate(offsets)]
    )
    assert all(0 <= o <= 2.0 for o in offsets) and len(set(offsets)) == 5


def test_interval_zero_runs_rounds_back_to_back_without_overruns() -> None:
    clock = FakeClock()
    rounds = Rounds(clock, [1.5])
    w, seen = loop(rounds, clock, interval=0.0, jitter=0.5)
    summary = w.run(rounds=3)
    assert rounds.starts == [0.0, 1.5, 3.0]
    assert clock.sleeps == []
    assert summary.overruns == 0 and not any(r.overrun for r in seen)


def test_stop_between_rounds_ends_the_loop_before_the_next_round() -> None:
    clock = FakeClock()
    rounds = Rounds(clock, [1.0])
    stop = threading.Event()
    seen: list[RoundRecord] = []

    def on_round(r: RoundRecord) -> None:
        seen.append(r)
        if r.index == 1:
            stop.set()

    w = WatchLoop(rounds, interval=10.0, clock=clock, stop=stop, on_round=on_round)
    summary = w.run()
    assert (summary.rounds, summary.stopped, summary.abandoned) == (2, True, False)
    assert len(rounds.starts) == 2


def test_a_stop_during_a_round_lets_it_finish_within_the_grace_period() -> None:
    stop = threading.Event()
    release = threading.Event()
    lines: list[str] = []

    def run(index: int) -> Report:
        stop.set()  # the signal arrives while the round runs
        release.wait(5)
        return report(index)

    threading.Timer(0.3, release.set).start()
    w = WatchLoop(run, interval=60.0, grace=5.0, clock=FakeClock(), stop=stop, log=lines.append)
    seen: list[RoundRecord] = []
    w.on_round = seen.append
    summary = w.run()
    assert (summary.rounds, summary.abandoned, summary.stopped) == (1, False, True)
    assert seen[0].report is not None
    assert lines == ["stopping: waiting up to 5s for round 1 to finish"]


def test_a_round_still_running_after_the_grace_period_is_abandoned_in_bounded_time() -> None:
    stop = threading.Event()
    release = threading.Event()
    lines: list[str] = []

    def run(index: int) -> Report:
        stop.set()
        release.wait(30)  # a round stuck far beyond the grace period
        return report(index)

    w = WatchLoop(run, interval=60.0, grace=0.3, clock=FakeClock(), stop=stop, log=lines.append)
    began = time.monotonic()
    summary = w.run()
    took = time.monotonic() - began
    release.set()
    assert (summary.rounds, summary.abandoned) == (0, True)
    assert took < 2.0, took
    assert lines[-1] == "round 1 abandoned after 0.3s"


def test_a_backend_error_or_a_bug_in_a_round_is_an_error_round_and_the_loop_goes_on() -> None:
    clock = FakeClock()
    errors: list[BaseException] = [
        Unreachable("tempo", "http://127.0.0.1:3200/ready", "connection refused"),
        RuntimeError("a bug"),
    ]

    def run(index: int) -> Report:
        clock.advance(1.0)
        if index < len(errors):
            raise errors[index]
        return report(index)

    w, seen = loop(run, clock, interval=5.0)
    summary = w.run(rounds=3)
    assert summary.rounds == 3
    assert [type(r.error).__name__ for r in seen] == ["Unreachable", "RuntimeError", "NoneType"]
    assert [r.report is not None for r in seen] == [False, False, True]


def test_a_configuration_error_in_the_first_round_ends_the_watch_with_it() -> None:
    bad = ConfigError("apiserver", "/nonexistent/kubeconfig", "cannot read: No such file")

    def run(index: int) -> Report:
        raise bad

    w, seen = loop(run, FakeClock())
    with pytest.raises(ConfigError) as info:
        w.run(rounds=3)
    assert info.value is bad and info.value.exit_code == ExitCode.CONFIG
    assert seen == []


def test_a_configuration_error_in_a_later_round_is_an_error_round() -> None:
    clock = FakeClock()

    def run(index: int) -> Report:
        clock.advance(1.0)
        if index == 1:
            raise ConfigError("apiserver", "/k", "kubeconfig vanished")
        return report(index)

    w, seen = loop(run, clock)
    assert w.run(rounds=3).rounds == 3
    assert isinstance(seen[1].error, ConfigError)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0.0), (2.5, 2.5), ("45", 45.0), ("30s", 30.0), ("5m", 300.0), ("250ms", 0.25)],
)
def test_interval_spellings(value: float | str, seconds: float) -> None:
    assert parse_interval(value) == seconds


@pytest.mark.parametrize("value", [-1, "-5s", "soon", "", float("nan"), float("inf"), "5 days"])
def test_an_invalid_interval_is_a_one_line_usage_error(value: float | str) -> None:
    with pytest.raises(UsageError) as info:
        WatchLoop(lambda i: report(i), interval=value)
    message = str(info.value)
    assert message.startswith("watch at --interval: expected seconds >= 0") and "\n" not in message
    assert info.value.exit_code == ExitCode.USAGE == 2


@pytest.mark.parametrize(
    ("option", "kw"), [("--jitter", {"jitter": 1.5}), ("--grace", {"grace": -1})]
)
def test_invalid_jitter_and_grace_are_usage_errors(option: str, kw: dict[str, float]) -> None:
    with pytest.raises(UsageError, match=f"^watch at {option}: "):
        WatchLoop(lambda i: report(i), interval=1.0, **kw)  # type: ignore[arg-type]


def test_rounds_must_be_at_least_one() -> None:
    with pytest.raises(UsageError, match="--rounds: expected at least 1"):
        WatchLoop(lambda i: report(i), interval=1.0, clock=FakeClock()).run(rounds=0)


def test_each_round_gets_its_own_seed_and_so_its_own_run_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tracecheck.config import load_settings
    from tracecheck.watch import _smoke

    seeds: list[int] = []

    def fake_smoke(settings: object) -> Report:
        seeds.append(settings.smoke.seed)  # type: ignore[attr-defined]
        return report(len(seeds))

    monkeypatch.setattr(_smoke, "smoke", fake_smoke)
    fixed = smoke_rounds(load_settings(env={}, flags={"smoke.seed": 41}))
    for i in range(3):
        fixed(i)
    derived = smoke_rounds(load_settings(env={}))
    derived(5)
    # --seed S: round n uses S+n; no seed: 0 is passed on, and the plan derives one from the time.
    assert seeds == [41, 42, 43, 0]
