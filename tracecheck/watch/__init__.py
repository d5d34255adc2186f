"""``tracecheck watch``: continuous end-to-end verification of the tracing pipeline.

The smoke plan runs every interval (:mod:`tracecheck.watch.loop`); each round's verdicts become
Prometheus metrics (:mod:`tracecheck.watch.metrics`) served with the last report on an HTTP
endpoint (:mod:`tracecheck.watch.server`), for the alert rules in
``stack/prometheus/rules/tracecheck.rules.yaml`` and the dashboard's pipeline-health row.

    >>> from tracecheck.config import load_settings
    >>> import tracecheck
    >>> tracecheck.watch(load_settings(), interval="1m", listen="127.0.0.1:9464")  # doctest: +SKIP
    0

The package is callable: ``tracecheck.watch(...)`` is :func:`tracecheck.watch.watcher.watch`.
"""

from __future__ import annotations

from tracecheck._callable import make_callable
from tracecheck.watch.loop import LoopSummary, RoundRecord, WatchLoop, parse_interval
from tracecheck.watch.server import DEFAULT_LISTEN, WatchServer, WatchState, parse_listen
from tracecheck.watch.watcher import (
    DEFAULT_GRACE,
    DEFAULT_INTERVAL,
    DEFAULT_JITTER,
    Watcher,
    smoke_rounds,
    stop_on_signals,
    watch,
)

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_INTERVAL",
    "DEFAULT_JITTER",
    "DEFAULT_LISTEN",
    "LoopSummary",
    "RoundRecord",
    "WatchLoop",
    "WatchServer",
    "WatchState",
    "Watcher",
    "parse_interval",
    "parse_listen",
    "smoke_rounds",
    "stop_on_signals",
    "watch",
]

make_callable(__name__, "tracecheck.watch.watcher", "watch")
