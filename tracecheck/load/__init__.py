"""``tracecheck load``: rate-controlled synthetic OTLP traffic, counted span by span.

    >>> from tracecheck import load_settings
    >>> from tracecheck.load import LoadSpec, run_load
    >>> result = run_load(load_settings(), LoadSpec(rate=2000, duration=10))  # doctest: +SKIP
    >>> result.sent_spans, result.refusals, result.achieved_rate, result.max_lag_s

Modules: :mod:`~tracecheck.load.encode` (requests built in the protobuf wire format from one
template), :mod:`~tracecheck.load.spec` (what to send, checked), :mod:`~tracecheck.load.pacing`
(open-loop schedule), :mod:`~tracecheck.load.send` (OTLP gRPC and HTTP senders),
:mod:`~tracecheck.load.run` (the load and its :class:`LoadResult`). grpc and protobuf are
imported only when a load runs.
"""

from __future__ import annotations

from tracecheck.load.run import LoadProgress, LoadResult, Refusals, run_load
from tracecheck.load.spec import DEFAULT_MAX_SPANS, LoadPlan, LoadSpec, RetryPolicy, plan_load

__all__ = [
    "DEFAULT_MAX_SPANS",
    "LoadPlan",
    "LoadProgress",
    "LoadResult",
    "LoadSpec",
    "Refusals",
    "RetryPolicy",
    "plan_load",
    "run_load",
]
