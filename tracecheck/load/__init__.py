"""``tracecheck load``: rate-controlled synthetic OTLP traffic, counted span by span.

    >>> from tracecheck import load_settings
    >>> from tracecheck.load import LoadSpec, run_load
    >>> result = run_load(load_settings(), LoadSpec(rate=2000, duration=10))  # doctest: +SKIP
    >>> result.sent_spans, result.refusals, result.achieved_rate, result.max_lag_s

Sent and accounted at every hop (the ``tracecheck load`` command), a ramp, a run sent elsewhere:

    >>> from tracecheck.load import load_and_account, run_ramp, account_run
    >>> spec = LoadSpec(rate=2000, duration=10)
    >>> report, result = load_and_account(load_settings(), spec)  # doctest: +SKIP
    >>> report.exit_code, report.tables["accounting"]  # doctest: +SKIP

Modules: :mod:`~tracecheck.load.encode` (requests built in the protobuf wire format from one
template), :mod:`~tracecheck.load.spec` (what to send, checked), :mod:`~tracecheck.load.pacing`
(open-loop schedule), :mod:`~tracecheck.load.send` (OTLP gRPC and HTTP senders),
:mod:`~tracecheck.load.run` (the load and its :class:`LoadResult`); the accounting:
:mod:`~tracecheck.load.ledger` (what a shard sent, and its ledger span),
:mod:`~tracecheck.load.counters` and :mod:`~tracecheck.load.sources` (where each hop is read),
:mod:`~tracecheck.load.verdict`, :mod:`~tracecheck.load.hops` and
:mod:`~tracecheck.load.account` (each hop, settled, and the verdict),
:mod:`~tracecheck.load.readback` (sampled traces by ID), :mod:`~tracecheck.load.report` (the
Report), :mod:`~tracecheck.load.flow` (load then account; ``--account``) and
:mod:`~tracecheck.load.ramp`. grpc and protobuf are imported only when a load runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracecheck.load.run import LoadProgress, LoadResult, Refusals, run_load
from tracecheck.load.spec import DEFAULT_MAX_SPANS, LoadPlan, LoadSpec, RetryPolicy, plan_load

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.load.account import Accounting, AccountOptions, HopCount
    from tracecheck.load.flow import account_run, load_and_account
    from tracecheck.load.ramp import run_ramp

# The accounting reads every backend; a process that only sends (the generator benchmark,
# whose CPU time counts its imports) does not import it until it is used.
_LAZY = {
    "AccountOptions": "account",
    "Accounting": "account",
    "HopCount": "account",
    "account_run": "flow",
    "load_and_account": "flow",
    "run_ramp": "ramp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tracecheck.load' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"tracecheck.load.{module}"), name)


__all__ = [
    "DEFAULT_MAX_SPANS",
    "AccountOptions",
    "Accounting",
    "HopCount",
    "LoadPlan",
    "LoadProgress",
    "LoadResult",
    "LoadSpec",
    "Refusals",
    "RetryPolicy",
    "account_run",
    "load_and_account",
    "plan_load",
    "run_load",
    "run_ramp",
]
