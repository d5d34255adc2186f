"""``tracecheck query traceql|promql|list|run``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from tracecheck.cli.shared import (
    PROMETHEUS,
    TEMPO,
    Done,
    Group,
    argument,
    echo_err,
    max_rows_option,
    output_option,
    pairs,
    show_table,
    uses_settings,
    window_options,
)
from tracecheck.output import TABLE_FORMATS

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.config import Settings

__all__ = ["group"]


@contextlib.contextmanager
def _caret() -> Iterator[None]:
    """A PromQL refusal with a position: the one-line error, then the query line and a caret
    under the position Prometheus named (stderr, exit 4)."""
    from tracecheck.query.syntax import PromQLSyntaxError

    try:
        yield
    except PromQLSyntaxError as exc:
        echo_err(f"error: {exc}")
        for line in exc.pointer().splitlines():
            click.echo(f"  {line}", err=True)
        raise Done(exc.exit_code) from None


@click.group(
    "query",
    cls=Group,
    help="Ad-hoc TraceQL and PromQL, and the saved queries in queries/.",
    no_args_is_help=True,
)
def group() -> None:
    pass


@group.command("traceql")
@argument("expr", "TraceQL, e.g. '{ resource.service.name = \"apiserver\" }'.")
@uses_settings(TEMPO)
@window_options
@click.option("--limit", type=int, default=20, show_default=True, metavar="<int>",
              help="Traces at most (search).")  # fmt: skip
@click.option("--spss", type=int, default=3, show_default=True, metavar="<int>",
              help="Spans per span set (search).")  # fmt: skip
@click.option("--metrics/--no-metrics", default=False, show_default=True,
              help="A TraceQL metrics query (| rate() ...).")  # fmt: skip
@click.option("--instant/--no-instant", default=False, show_default=True,
              help="With --metrics: one value per series.")  # fmt: skip
@click.option("--step", default=None, metavar="<str>", help="With --metrics: step, e.g. 30s.")
@max_rows_option
@output_option(TABLE_FORMATS)
def query_traceql(
    settings: Settings,
    expr: str,
    since: str | None,
    start: str | None,
    end: str | None,
    limit: int,
    spss: int,
    metrics: bool,
    instant: bool,
    step: str | None,
    max_rows: int,
    output: str,
) -> None:
    """Run TraceQL against Tempo: a search (one row per matched span) or a metrics query.

    Example: tracecheck query traceql '{ span.http.target =~ "/api/v1/.*" }' --since 15m
    """
    from tracecheck.query.adhoc import run_traceql

    table = run_traceql(
        settings,
        expr,
        since=since,
        start=start,
        end=end,
        limit=limit,
        spss=spss,
        metrics=metrics,
        instant=instant,
        step=step,
        max_rows=max_rows,
    )
    show_table(table, output)


@group.command("promql")
@argument("expr", "PromQL; Prometheus decides whether it is valid.")
@uses_settings(PROMETHEUS)
@click.option("--at", default=None, metavar="<str>", help="Evaluation time (instant) or range end.")
@click.option("--range", "range_", default=None, metavar="<str>",
              help="A range query over this duration, e.g. 1h.")  # fmt: skip
@click.option("--step", default=None, metavar="<str>",
              help="Range step (kept under 11,000 points).")  # fmt: skip
@max_rows_option
@output_option(TABLE_FORMATS)
def query_promql(
    settings: Settings,
    expr: str,
    at: str | None,
    range_: str | None,
    step: str | None,
    max_rows: int,
    output: str,
) -> None:
    """Run PromQL against Prometheus, instant (--at) or range (--range, --step).

    Example: tracecheck query promql 'sum by (span_name) (rate(traces_spanmetrics_calls_total[5m]))'
    """
    from tracecheck.query.adhoc import run_promql

    with _caret():
        table = run_promql(settings, expr, at=at, range_=range_, step=step, max_rows=max_rows)
    show_table(table, output)


@group.command("list")
@output_option(TABLE_FORMATS)
def query_list(output: str) -> None:
    """List the saved queries (queries/*.traceql, *.promql) with their parameters.

    Example: tracecheck query list
    """
    from tracecheck.query.saved import list_queries

    show_table(list_queries(), output)


@group.command("run")
@argument("name", "A saved query's name (tracecheck query list).")
@click.option("--param", "-p", "params", multiple=True, metavar="<list[str]>",
              help="KEY=VALUE (repeatable).")  # fmt: skip
@uses_settings(TEMPO, PROMETHEUS)
@window_options
@click.option("--at", default=None, metavar="<str>", help="PromQL evaluation time.")
@click.option("--range", "range_", default=None, metavar="<str>", help="PromQL range, e.g. 1h.")
@click.option("--step", default=None, metavar="<str>", help="Range or metrics step.")
@click.option("--limit", type=int, default=None, metavar="<int>", help="TraceQL: traces at most.")
@click.option("--spss", type=int, default=None, metavar="<int>",
              help="TraceQL: spans per span set.")  # fmt: skip
@max_rows_option
@output_option(TABLE_FORMATS)
def query_run(
    settings: Settings,
    name: str,
    params: tuple[str, ...],
    since: str | None,
    start: str | None,
    end: str | None,
    at: str | None,
    range_: str | None,
    step: str | None,
    limit: int | None,
    spss: int | None,
    max_rows: int,
    output: str,
) -> None:
    """Run a saved query with parameters.

    Example: tracecheck query run apiserver-slowest-requests --param min_duration=50ms
    """
    from tracecheck.query.saved import run_saved

    with _caret():
        table = run_saved(
            settings,
            name,
            pairs(params, "--param"),
            since=since,
            start=start,
            end=end,
            at=at,
            range_=range_,
            step=step,
            limit=limit,
            spss=spss,
            max_rows=max_rows,
        )
    show_table(table, output)
