"""Which checks make up ``tracecheck smoke`` and ``tracecheck apiserver probe``, and the two
functions that run them.

The pipeline's checks (:mod:`~tracecheck.smoke.pipeline_checks`) come first, then the
apiserver leg (:mod:`~tracecheck.smoke.apiserver_checks`, group ``apiserver``, so
``--skip apiserver`` drops it). Both are listed here directly: the engine knows no check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from tracecheck.backends import Backends
from tracecheck.config import Settings
from tracecheck.errors import UsageError
from tracecheck.polling import Clock, SystemClock
from tracecheck.results import Report
from tracecheck.smoke.apiserver_checks import checks as apiserver_checks
from tracecheck.smoke.engine import Check, Progress, SmokeContext, run_plan
from tracecheck.smoke.pipeline_checks import PrometheusPreflight, TempoPreflight, pipeline_checks

__all__ = ["default_checks", "probe", "smoke"]


def default_checks(settings: Settings) -> list[Check]:
    """The checks of ``tracecheck smoke``, in display order."""
    return [*pipeline_checks(settings), *apiserver_checks(settings)]


def smoke(
    settings: Settings,
    *,
    clock: Clock | None = None,
    progress: Callable[[Progress], None] | None = None,
    checks: Sequence[Check] | None = None,
    backends: Backends | None = None,
    context: SmokeContext | None = None,
) -> Report:
    """Run ``tracecheck smoke`` and return its report (the CLI renders it and sets the exit code).

    Each call is a fresh run: new baselines, a new synthetic trace (its seed from ``clock``
    unless ``smoke.seed`` is set). A caller that runs it again and again (a watch loop) passes
    the same ``backends`` to keep its connections, and may inject ``clock``. ``checks``
    replaces the default plan (:func:`default_checks`).

    >>> report = smoke(load_settings())              # doctest: +SKIP
    >>> report.exit_code, report.result("tempo.search").status
    """
    plan = list(checks) if checks is not None else default_checks(settings)
    return run_plan(
        settings, plan, clock=clock, progress=progress, backends=backends, context=context
    )


def probe(
    settings: Settings,
    *,
    requests: int | None = None,
    paths: Sequence[str] = (),
    allow_writes: bool = False,
    namespace: str | None = None,
    clock: Clock | None = None,
    progress: Callable[[Progress], None] | None = None,
    backends: Backends | None = None,
    context: SmokeContext | None = None,
) -> Report:
    """``tracecheck apiserver probe``: the apiserver leg on its own (Tempo and Prometheus
    preflights plus the four apiserver checks), read-only unless ``allow_writes``.

    ``requests`` overrides ``apiserver.requests`` (traced requests; the burst in link mode is at
    least ``apiserver.burst``), ``paths`` the paths requested. ``allow_writes`` with
    ``namespace`` also creates and deletes a ConfigMap there, so write paths (``POST``,
    ``DELETE``, etcd ``Txn``) are traced too. The report's tables hold the apiserver latency
    table; its exit code follows the usual rules.

    >>> report = probe(load_settings(), requests=8)            # doctest: +SKIP
    >>> report.result("apiserver.trace").status, report.tables["apiserver_latency"][:1]
    """
    if allow_writes and not namespace:
        raise UsageError("apiserver", "--allow-writes", "needs --namespace NS (where to write)")
    if namespace and not allow_writes:
        raise UsageError("apiserver", "--namespace", "only used with --allow-writes")
    if requests is not None and requests < 1:
        raise UsageError("apiserver", "--requests", f"must be at least 1, not {requests}")
    if any(not p.startswith("/") for p in paths):
        bad = next(p for p in paths if not p.startswith("/"))
        raise UsageError("apiserver", "--path", f"{bad!r} must start with /")
    changes: dict[str, Any] = {"smoke.only": (), "smoke.skip": ()}
    if requests is not None:
        changes["apiserver.requests"] = requests
    if paths:
        changes["apiserver.paths"] = tuple(paths)
    settings = settings.replace(**changes)
    plan: list[Check] = [TempoPreflight(), PrometheusPreflight()]
    plan += apiserver_checks(settings, writes_namespace=namespace if allow_writes else None)
    ctx = context or SmokeContext(settings, clock or SystemClock(), backends=backends)
    ctx.settings = settings  # a given context runs with the probe's settings too
    report = run_plan(settings, plan, progress=progress, context=ctx)
    # No synthetic trace here: the report's trace is the apiserver leg's.
    return replace(
        report, trace_id=str(ctx.target.get("apiserver_trace_id", "")), command="apiserver probe"
    )
