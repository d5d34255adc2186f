"""``tracecheck report apiserver``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from tracecheck.cli.shared import (
    PROMETHEUS,
    TEMPO,
    Group,
    echo_err,
    output_option,
    show_table,
    uses_settings,
    window_options,
)
from tracecheck.output import TABLE_FORMATS

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.config import Settings

__all__ = ["group"]


@click.group(
    "report", cls=Group, help="Latency reports with tables and plots.", no_args_is_help=True
)
def group() -> None:
    pass


@group.command("apiserver")
@uses_settings(TEMPO, PROMETHEUS)
@window_options
@click.option("--service", default="apiserver", show_default=True, metavar="<str>",
              help="service.name of the apiserver's spans.")  # fmt: skip
@click.option("--limit", type=int, default=1000, show_default=True, metavar="<int>",
              help="Traces read from Tempo at most.")  # fmt: skip
@click.option("--probe/--no-probe", default=False, show_default=True,
              help="Run tracecheck smoke first to measure every stage's delay.")  # fmt: skip
@click.option("--full/--no-full", default=False, show_default=True,
              help="Every column, not the summary.")  # fmt: skip
@click.option("--html", default=None, metavar="<str>", help="Write a self-contained HTML report.")
@click.option("--png", default=None, metavar="<str>", help="Write the main chart as PNG.")
@output_option(TABLE_FORMATS)
def report_apiserver(
    settings: Settings,
    since: str | None,
    start: str | None,
    end: str | None,
    service: str,
    limit: int,
    probe: bool,
    full: bool,
    html: str | None,
    png: str | None,
    output: str,
) -> None:
    """Per-endpoint apiserver latency from traces, span-metrics and the apiserver's own metrics.

    Example: tracecheck report apiserver --since 1h --html report.html
    """
    from tracecheck.latency.charts import write_html, write_png
    from tracecheck.latency.report import apiserver_report

    smoke_report = None
    if probe:  # the smoke run measures every stage's delay; latency never runs smoke itself
        from tracecheck.config import with_kubeconfig
        from tracecheck.smoke.plan import smoke

        smoke_report = smoke(with_kubeconfig(settings, os.environ))
    report = apiserver_report(
        settings,
        since=since,
        start=start,
        end=end,
        service=service,
        trace_limit=limit,
        smoke_report=smoke_report,
    )
    show_table(report.table(full=full), output)
    if html:
        write_html(report, html)
        echo_err(f"wrote {html}")
    if png:
        write_png(report, png)
        echo_err(f"wrote {png}")
