"""Open-loop pacing on a monotonic clock, and how far behind the schedule the sender fell.

Request ``k`` is *due* at ``start + k * interval`` whatever happened to the requests before it
(open loop: a slow answer does not slow the arrivals, it makes the next ones late). Workers
claim the next request, wait for its due time, and send it; a worker that claims a request
after its due time sends at once and the lateness is recorded. Nothing is skipped to catch up:
a generator that cannot keep up shows it as lag, never as a silently lower rate. Past the
schedule's end plus ``overrun`` seconds, the requests not yet sent are abandoned and counted
unsent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tracecheck.load._deps import Clock

__all__ = ["LATE_AFTER", "Lag", "Schedule", "Slot"]

# A request dispatched later than this after its due time counts as late.
LATE_AFTER = 0.1
# Sleep at most this long at a time, so a cancel is noticed.
_NAP = 0.25


@dataclass(frozen=True, slots=True)
class Slot:
    index: int
    due: float  # monotonic seconds


@dataclass(frozen=True, slots=True)
class Lag:
    """How far behind the schedule the dispatches were."""

    late_requests: int  # dispatched more than LATE_AFTER after their due time
    max_s: float  # the largest lateness
    mean_s: float
    last_s: float  # the lateness of the last request dispatched (still behind at the end?)


class Schedule:
    """``total`` requests, one every ``interval`` seconds from :meth:`start`. Thread-safe."""

    def __init__(self, total: int, interval: float, clock: Clock, *, overrun: float) -> None:
        self.total = total
        self.interval = interval
        self.clock = clock
        self.overrun = overrun
        self.start_at = 0.0
        self._next = 0
        self._lock = threading.Lock()
        self._late = 0
        self._max = 0.0
        self._sum = 0.0
        self._count = 0
        self._last = 0.0
        self._last_index = -1
        self.cancelled = threading.Event()

    def start(self) -> None:
        self.start_at = self.clock.monotonic()

    @property
    def end_due(self) -> float:
        """Due time of the last request."""
        return self.start_at + (self.total - 1) * self.interval

    @property
    def hard_end(self) -> float:
        """After this, nothing more is sent."""
        return self.end_due + self.overrun

    def claim(self) -> Slot | None:
        """The next request to send, or None when every request has been claimed."""
        with self._lock:
            if self._next >= self.total or self.cancelled.is_set():
                return None
            index = self._next
            self._next += 1
        return Slot(index, self.start_at + index * self.interval)

    def wait(self, slot: Slot) -> float | None:
        """Sleep until ``slot`` is due; its lateness in seconds, or None if it must not be sent
        (past :attr:`hard_end`, or cancelled)."""
        clock = self.clock
        while True:
            if self.cancelled.is_set():
                return None
            now = clock.monotonic()
            if now >= slot.due:
                break
            clock.sleep(min(slot.due - now, _NAP))
        if now > self.hard_end:
            return None
        late = now - slot.due
        with self._lock:
            self._count += 1
            self._sum += late
            self._max = max(self._max, late)
            if late > LATE_AFTER:
                self._late += 1
            if slot.index > self._last_index:
                self._last_index, self._last = slot.index, late
        return late

    def abandon(self) -> range:
        """Stop handing out requests; the indices that were never claimed."""
        with self._lock:
            left = range(self._next, self.total)
            self._next = self.total
        return left

    def lag(self) -> Lag:
        with self._lock:
            mean = self._sum / self._count if self._count else 0.0
            return Lag(self._late, self._max, mean, self._last)

    def behind(self, now: float) -> float:
        """Seconds the dispatches are behind schedule at ``now`` (0 when on time): the age of
        the oldest due request not yet claimed."""
        with self._lock:
            nxt = self._next
        if nxt >= self.total:
            return 0.0
        return max(0.0, now - (self.start_at + nxt * self.interval))
