"""Waiting for Prometheus to hold what a test is about to query, by polling instead of sleeping.

A test that evaluates ``rate()``/``increase()`` needs two samples of every series in its window,
and a time ``at`` before which every sample has arrived. Remote write ships each series' samples
in order, so once a series has a sample stamped after ``at``, none stamped before ``at`` is still
on its way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from tracecheck.config import Settings
from tracecheck.polling import Probe, SystemClock, poll_until
from tracecheck.query.adhoc import run_promql


def _least(settings: Settings, query: str, at: int | None = None) -> float | None:
    table = run_promql(settings, query, at=None if at is None else str(at))
    values = [float(v) for v in table.column("value")]
    return min(values) if values else None


def settled(settings: Settings, selectors: Sequence[str], *, deadline: float = 180.0) -> int:
    """Pick ``at`` (unix seconds, rounded up) such that every series of ``selectors`` has two
    samples in the 10 minutes up to ``at``, then wait until each has a sample stamped after it;
    return ``at``.

    The two samples are counted AT ``at``, the time the test evaluates: rounding the clock down
    instead once put ``at`` a fraction of a second before a sample the count had seen, and
    ``rate()`` at ``at`` then had one sample and no answer."""
    chosen: list[int] = []

    def two_samples() -> Probe[None]:
        at = math.ceil(time.time())
        counts = {s: _least(settings, f"min(count_over_time({s}[10m]))", at) for s in selectors}
        short = [f"{s}: {n}" for s, n in counts.items() if n is None or n < 2]
        if not short:
            chosen.append(at)
        return Probe(not short, None, f"fewer than 2 samples at {at}: " + "; ".join(short))

    _wait("two samples of every series", two_samples, deadline)
    at = chosen[-1]

    def past_at() -> Probe[None]:
        newest = {s: _least(settings, f"min(timestamp({s}))") for s in selectors}
        behind = [f"{s}: {t}" for s, t in newest.items() if t is None or t <= at]
        return Probe(not behind, None, f"no sample after {at} yet: " + "; ".join(behind))

    _wait(f"a sample after {at} of every series", past_at, deadline)
    return at


def _wait(what: str, probe: Callable[[], Probe[None]], deadline: float) -> None:
    outcome = poll_until(probe, deadline, SystemClock(), initial=0.5, cap=3.0)
    assert outcome.ok, f"{what} not seen within {deadline:.0f} s; last: {outcome.seen}"
