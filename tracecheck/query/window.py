"""Time windows of queries and reports: ``--since``, ``--start``, ``--end``, ``--at``, steps.

* :func:`parse_duration` / :func:`parse_time` read durations (``15m``, ``1h30m``) and times
  (RFC 3339, unix seconds, ``now``, or relative like ``15m`` / ``now-15m``);
* :func:`resolve_window` turns ``--since`` / ``--start`` / ``--end`` into ``(start, end)``;
* :func:`choose_step` picks or checks a range step against Prometheus's 11,000-point limit.

Bad input is a :class:`~tracecheck.errors.UsageError` (exit 2) naming the flag.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from tracecheck.backends.prometheus import MAX_POINTS
from tracecheck.errors import QueryError, UsageError
from tracecheck.output import iso

__all__ = [
    "DEFAULT_SINCE",
    "MAX_POINTS",
    "TARGET_POINTS",
    "choose_step",
    "format_duration",
    "parse_duration",
    "parse_time",
    "resolve_window",
]

#: Default look-back of ``--since`` (seconds).
DEFAULT_SINCE = 3600.0
#: Points a range query aims at when no step is given (like Prometheus's UI, ~range/250).
TARGET_POINTS = 250

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,  # Prometheus: a year is always 365 days
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w|y)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w|y))+$")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds in ``15m``, ``1h30m``, ``90s``, ``500ms``, ``2d``, or a plain number of seconds.

    >>> parse_duration("1h30m")
    5400.0
    """
    raw = text.strip()
    if _NUMBER.match(raw):
        value = float(raw)
    elif _DURATION.match(raw):
        value = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(raw))
    else:
        raise UsageError(
            "query", what, f"{text!r} is not a duration (e.g. 90s, 15m, 1h30m, 2d, or seconds)"
        )
    if not math.isfinite(value) or value < 0:
        raise UsageError("query", what, f"{text!r} is not a non-negative duration")
    return value


def parse_time(text: str, *, now: float, what: str = "time") -> float:
    """Unix seconds from RFC 3339 (``2025-01-31T12:00:00Z``), unix seconds (``1700000000``,
    ``1700000000.5``), ``now``, or a time relative to ``now``: ``15m`` / ``now-15m`` mean
    15 minutes ago. A naive RFC 3339 time (no offset) is taken as UTC.

    Values that look like milliseconds or nanoseconds are refused rather than guessed.
    """
    raw = text.strip()
    if not raw:
        raise UsageError("query", what, "empty time")
    if raw == "now":
        return now
    if raw.startswith("now-"):
        return now - parse_duration(raw[4:], what=what)
    if _NUMBER.match(raw):
        value = float(raw)
        if value > 1e11:
            raise UsageError(
                "query", what, f"{text!r} looks like milliseconds or nanoseconds; give seconds"
            )
        return value
    if _DURATION.match(raw):
        return now - parse_duration(raw, what=what)
    try:
        stamp = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise UsageError(
            "query",
            what,
            f"{text!r} is not a time: use RFC 3339 (2025-01-31T12:00:00Z), unix seconds, "
            "or a relative time like 15m",
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def resolve_window(
    *,
    since: str | float | None = None,
    start: str | None = None,
    end: str | None = None,
    now: float,
    default_since: float = DEFAULT_SINCE,
) -> tuple[float, float]:
    """``(start, end)`` in unix seconds from ``--since`` / ``--start`` / ``--end``.

    ``end`` defaults to now; ``start`` to ``end - since`` (``since`` defaults to 1 h).
    ``--since`` together with ``--start`` is a usage error.
    """
    if since is not None and start is not None:
        raise UsageError("query", "--since/--start", "give --since or --start, not both")
    end_s = parse_time(end, now=now, what="--end") if end is not None else now
    if start is not None:
        start_s = parse_time(start, now=now, what="--start")
    else:
        span = (
            default_since
            if since is None
            else (float(since) if isinstance(since, (int, float)) else parse_duration(since))
        )
        if span <= 0:
            raise UsageError("query", "--since", "must be a positive duration")
        start_s = end_s - span
    if not end_s > start_s:
        raise UsageError(
            "query", "--start/--end", f"start ({iso(start_s)}) must be before end ({iso(end_s)})"
        )
    return start_s, end_s


def format_duration(seconds: float) -> str:
    """A PromQL duration for a range selector: ``3600`` -> ``1h``, ``90`` -> ``90s``."""
    s = max(1, round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


_NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400)  # fmt: skip


def choose_step(
    start: float,
    end: float,
    step: str | float | None = None,
    *,
    max_points: int = MAX_POINTS,
    target_points: int = TARGET_POINTS,
) -> float:
    """The step (seconds) of a range query over ``[start, end]``.

    With ``step`` given, it is checked: more than ``max_points`` points per series (Prometheus
    refuses ``(end-start)/step > 11000`` with ``bad_data``, docs/reference/prometheus.md §2) is a
    :class:`QueryError` naming the smallest step that fits. Without, a round step giving about
    ``target_points`` points is chosen (never more than ``max_points``).
    """
    span = end - start
    if span <= 0:
        raise UsageError("query", "--range", "the range must be positive")
    if step is not None:
        value = (
            float(step) if isinstance(step, (int, float)) else parse_duration(step, what="--step")
        )
        if value <= 0:
            raise UsageError("query", "--step", "must be a positive duration")
        points = math.floor(span / value)
        if points > max_points:
            smallest = math.ceil(span / max_points)
            raise QueryError(
                "prometheus",
                "",
                f"a range of {format_duration(span)} at step {value:g}s is {points:,} points per "
                f"series, over Prometheus's limit of {max_points:,}; use --step "
                f"{format_duration(smallest)} or more",
            )
        return value
    wanted = span / target_points
    for nice in _NICE_STEPS:
        if nice >= wanted:
            return float(nice)
    return float(math.ceil(wanted / 86400) * 86400)
