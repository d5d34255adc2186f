"""How much a Prometheus counter rose since a baseline, robust to resets and to clock skew.

An instant query gives a counter's latest value, which is not enough: when the writer (Tempo's
metrics-generator, a collector connector) restarts, or drops and recreates a series, the series
starts again from 0 under the same labels, and "after - before" can read 0 or less although the
spans were counted. So both the baseline and the later reading fetch the raw samples
(``selector[window]``), and the increase is summed sample by sample after the baseline's last
sample, a drop counting as a reset (the new value is all increase), as PromQL's ``increase()``
does but without its extrapolation. Samples are compared by their own timestamps, written by the
generator's clock, so skew between that clock and tracecheck's does not matter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends.prometheus import PrometheusClient

__all__ = ["CounterSnapshot", "SeriesKey", "increase", "snapshot"]

SeriesKey = frozenset[tuple[str, str]]

#: How far back the baseline looks for a series' last sample (Prometheus's default lookback).
LOOKBACK_S = 300


@dataclass(frozen=True, slots=True)
class CounterSnapshot:
    selector: str
    taken_at: float  # unix seconds (tracecheck's clock) when the baseline was read
    last: Mapping[SeriesKey, tuple[float, float]]  # per series: (sample timestamp, value)


def _key(labels: Mapping[str, str]) -> SeriesKey:
    return frozenset(labels.items())


def snapshot(
    prom: PrometheusClient, selector: str, *, now: float, timeout: float | None = None
) -> CounterSnapshot:
    """The last sample of every series matching ``selector`` (a plain series selector)."""
    result = prom.query(f"{selector}[{LOOKBACK_S}s]", timeout=timeout)
    last = {_key(s.labels): s.points[-1] for s in result.series if s.points}
    return CounterSnapshot(selector, now, last)


def increase(
    prom: PrometheusClient, base: CounterSnapshot, *, now: float, timeout: float | None = None
) -> dict[SeriesKey, float]:
    """Per series, how much it rose after ``base`` (series new since then start from 0)."""
    window = max(60, math.ceil(now - base.taken_at) + 60)
    result = prom.query(f"{base.selector}[{window}s]", timeout=timeout)
    out: dict[SeriesKey, float] = {}
    for s in result.series:
        key = _key(s.labels)
        t0, prev = base.last.get(key, (-math.inf, 0.0))
        rose = 0.0
        for t, v in s.points:
            if t <= t0:
                continue
            rose += v - prev if v >= prev else v
            prev = v
        out[key] = rose
    return out
