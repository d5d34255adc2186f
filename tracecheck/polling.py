"""Injected time and the one polling primitive.

Check code never sleeps on its own: it calls :func:`poll_until` with a probe, a deadline and a
:class:`Clock`. Tests inject :class:`FakeClock`, whose ``sleep`` only advances the time.

The schedule polls quickly at first (``initial``), then backs off by ``factor`` up to ``cap``
(about 1 s), so a verdict follows the data within about a second without hammering a backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from tracecheck.errors import AuthError, BackendError

__all__ = ["Clock", "FakeClock", "PollOutcome", "Probe", "SystemClock", "poll_until"]

T = TypeVar("T")


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic clock (for deadlines and elapsed times)."""

    def time(self) -> float:
        """Unix time in seconds (for timestamps sent to and read from backends)."""

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock for tests: ``sleep`` advances both clocks instantly."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._mono = 0.0
        self._wall = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._wall

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._mono += seconds
        self._wall += seconds


@dataclass(frozen=True, slots=True)
class Probe(Generic[T]):
    """What one poll saw: ``done`` ends the wait; ``seen`` describes the observation."""

    done: bool
    value: T | None = None
    seen: str = ""


@dataclass(frozen=True, slots=True)
class PollOutcome(Generic[T]):
    ok: bool
    value: T | None
    attempts: int
    elapsed: float  # seconds from the first probe to the last answer
    seen: str  # what the last probe saw (for the FAIL detail)
    error: BackendError | None  # the last error, if the last probe raised one
    # monotonic time at which the successful probe started: the earliest moment the data is
    # known to have been visible (the probe before it started ``interval`` earlier).
    found_at: float | None = None


def poll_until(
    probe: Callable[[], Probe[T]],
    deadline: float,
    clock: Clock,
    *,
    initial: float = 0.05,
    factor: float = 1.6,
    cap: float = 1.0,
) -> PollOutcome[T]:
    """Call ``probe`` until it reports ``done`` or ``deadline`` seconds have passed.

    A :class:`BackendError` raised by the probe does not end the wait (the backend may recover
    within the deadline); it is kept, and returned in ``error`` if the last probe also failed.
    An :class:`AuthError` (401/403) ends the wait at once, returned in ``error``: credentials
    do not fix themselves, and waiting out the deadline would only hide the cause.
    Any other exception propagates. The last probe is never later than the deadline, and the
    function returns at most one request time after it.
    """
    start = clock.monotonic()
    end = start + deadline
    interval = initial
    attempts = 0
    seen = ""
    error: BackendError | None = None
    while True:
        attempts += 1
        began = clock.monotonic()
        try:
            result = probe()
        except AuthError as exc:
            return PollOutcome(False, None, attempts, clock.monotonic() - start, str(exc), exc)
        except BackendError as exc:
            error = exc
            seen = str(exc)
        else:
            error = None
            seen = result.seen
            if result.done:
                return PollOutcome(
                    True, result.value, attempts, clock.monotonic() - start, seen, None, began
                )
        now = clock.monotonic()
        if now >= end:
            return PollOutcome(False, None, attempts, now - start, seen, error)
        clock.sleep(min(interval, end - now))
        interval = min(interval * factor, cap)
