"""``tracecheck smoke``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, NoReturn

import click

from tracecheck.cli.shared import (
    APISERVER,
    COLLECTOR,
    PROMETHEUS,
    TEMPO,
    Done,
    Flag,
    ProgressLine,
    color,
    csv_items,
    deadline_flag,
    outputs_option,
    term_width,
    uses_settings,
    write,
)
from tracecheck.output import REPORT_FORMATS

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.config import Settings

__all__ = ["SMOKE_FLAGS", "smoke"]


#: The settings of the plan itself (``[smoke]``, ``[deadlines]``).
SMOKE_FLAGS = (
    Flag(
        ("--only",),
        ("smoke.only",),
        "Run only these checks or groups.",
        multiple=True,
        parse=csv_items,
    ),
    Flag(
        ("--skip",),
        ("smoke.skip",),
        "Skip these checks or groups (e.g. apiserver).",
        multiple=True,
        parse=csv_items,
    ),
    Flag(("--span-metrics-naming",), ("smoke.span_metrics_naming",), "auto, tempo or otel."),
    deadline_flag(),
    Flag(
        ("--wait-ready",),
        ("smoke.wait_ready",),
        "After a deploy: ask the preflight checks again through connection refused and 503 "
        "for up to this long, e.g. 5m.",
    ),
    Flag(("--seed",), ("smoke.seed",), "Seed of the synthetic trace.", type=int),
    Flag(
        ("--client-service",),
        ("smoke.client_service",),
        "service.name of the synthetic CLIENT span.",
    ),
    Flag(
        ("--server-service",),
        ("smoke.server_service",),
        "service.name of the synthetic SERVER span.",
    ),
)


@click.command()
@outputs_option(REPORT_FORMATS)
@uses_settings(COLLECTOR, TEMPO, PROMETHEUS, APISERVER, extra=SMOKE_FLAGS)
@click.option(
    "--port-forward",
    is_flag=True,
    help="Reach the collector, Tempo and Prometheus through port-forwards to their Services "
    "(via the apiserver of --kubeconfig/--context), closed on exit.",
)
@click.option(
    "--namespace",
    default=None,
    metavar="<str>",
    help="Namespace of the Services for --port-forward (default: monitoring).",
)
@click.option(
    "--port-forward-to",
    multiple=True,
    metavar="NAME=SERVICE[:PORT]",
    help="Another Service or port for one forward, e.g. tempo=tempo-gateway:80.",
)
def smoke(
    settings: Settings,
    outputs: list[tuple[str, str | None]],
    port_forward: bool,
    namespace: str | None,
    port_forward_to: tuple[str, ...],
) -> None:
    """Send a synthetic trace and prove it reaches Tempo and Prometheus (and the apiserver's).

    Example: tracecheck smoke --wait-ready 5m --output table --output junit:reports/smoke.xml
    """
    if port_forward or namespace or port_forward_to:
        from tracecheck.stack.portforward import forwarded_settings, open_forwards

        with open_forwards(settings, namespace, port_forward_to, enabled=port_forward) as forwards:
            for opened in forwards.opened:
                click.echo(str(opened), err=True)
            try:
                _smoke(forwarded_settings(settings, forwards.opened), outputs)
            finally:
                for line in forwards.failures:  # why a forward's stream ended early
                    click.echo(line, err=True)
    else:
        _smoke(settings, outputs)


def _smoke(settings: Settings, outputs: list[tuple[str, str | None]]) -> NoReturn:
    """Run the smoke, write every output, and exit (``Done``) with the report's code."""
    from tracecheck.output import render
    from tracecheck.smoke.plan import smoke as run_smoke

    tty = sys.stderr.isatty()
    progress = ProgressLine(
        tty and not any(p is None and f != "table" for f, p in outputs),
        # Without a live line (CI, a CronJob's log, JSON on stdout) a readiness wait is logged
        # line by line, so a run that waits minutes says why.
        log_waits=settings.smoke.wait_ready > 0,
    )
    try:
        report = run_smoke(settings, progress=progress)
    finally:
        progress.clear()
    for fmt, path in outputs:
        write(render(report, fmt, color=color() and path is None, width=term_width()), path)
    raise Done(report.exit_code)
