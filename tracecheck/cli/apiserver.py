"""``tracecheck apiserver probe|check-config``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from tracecheck.cli.shared import (
    APISERVER,
    PROMETHEUS,
    TEMPO,
    Done,
    Group,
    ProgressLine,
    argument,
    color,
    output_option,
    outputs_option,
    term_width,
    uses_settings,
    write,
)
from tracecheck.errors import ExitCode
from tracecheck.output import FINDING_FORMATS, REPORT_FORMATS

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.config import Settings

__all__ = ["group"]


@click.group(
    "apiserver",
    cls=Group,
    help="The apiserver leg: traced requests, the TracingConfiguration file.",
    no_args_is_help=True,
)
def group() -> None:
    pass


@group.command("probe")
@outputs_option(REPORT_FORMATS)
@uses_settings(TEMPO, PROMETHEUS, APISERVER)
@click.option(
    "--requests", type=int, default=None, metavar="<int>", help="Traced requests (default 4)."
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    metavar="<list[str]>",
    help="Path to GET with a traceparent (repeatable).",
)
@click.option(
    "--allow-writes/--no-allow-writes",
    default=False,
    show_default=True,
    help="Also create and delete a ConfigMap (needs --namespace).",
)
@click.option("--namespace", default=None, metavar="<str>", help="Namespace for --allow-writes.")
def apiserver_probe(
    settings: Settings,
    outputs: list[tuple[str, str | None]],
    requests: int | None,
    paths: tuple[str, ...],
    allow_writes: bool,
    namespace: str | None,
) -> None:
    """Send traced requests to kube-apiserver and find its spans in Tempo and Prometheus.

    Says which mode ran: a credential in system:masters / system:monitoring has its traceparent
    honoured (parent/child); any other starts its own traces (found by Audit-Id or span link).
    Example: tracecheck apiserver probe --context viewer --requests 20
    """
    from tracecheck.output import render
    from tracecheck.smoke.plan import probe

    progress = ProgressLine(sys.stderr.isatty())
    try:
        report = probe(
            settings,
            requests=requests,
            paths=paths,
            allow_writes=allow_writes,
            namespace=namespace,
            progress=progress,
        )
    finally:
        progress.clear()
    for fmt, dest in outputs:
        write(render(report, fmt, color=color() and dest is None, width=term_width()), dest)
    raise Done(report.exit_code)


@group.command("check-config")
@argument("file", "A TracingConfiguration YAML file.", type=click.Path())
@output_option(FINDING_FORMATS)
def apiserver_check_config(file: str, output: str) -> None:
    """Validate a kube-apiserver TracingConfiguration; every message names line and field.

    Exit 4 on any error, 0 with warnings only. Example:
    tracecheck apiserver check-config stack/apiserver/tracing-config.yaml
    """
    from tracecheck.output import render_findings
    from tracecheck.results import has_errors
    from tracecheck.stack.tracingconfig import check_tracing_config

    findings = check_tracing_config(file)
    click.echo(render_findings(findings, output, file, what="TracingConfiguration"))
    raise Done(ExitCode.CONFIG if has_errors(findings) else ExitCode.OK)
