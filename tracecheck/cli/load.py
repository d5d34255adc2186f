"""``tracecheck load``: rate-controlled synthetic load, accounted at every hop; ``--ramp`` and
``--account RUN_ID``."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

import click

from tracecheck.cli.shared import (
    COLLECTOR,
    PROMETHEUS,
    TEMPO,
    Done,
    Flag,
    color,
    csv_items,
    deadline_flag,
    outputs_option,
    term_width,
    uses_settings,
    write,
)
from tracecheck.errors import UsageError
from tracecheck.output import REPORT_FORMATS

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.config import Settings

__all__ = ["load"]

#: Settings this command sets besides the systems' own flags.
LOAD_FLAGS = (
    Flag(("--compression",), ("collector.compression",), "gzip or none."),
    Flag(
        ("--span-metrics-naming",),
        ("smoke.span_metrics_naming",),
        "auto, tempo or otel (span-metrics names).",
    ),
    deadline_flag(),
)

_SECONDS = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class Seconds(click.ParamType[float]):
    """Seconds: ``10``, ``2.5``, ``10s``, ``2m``, ``1h``."""

    name = "seconds"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        m = _SECONDS.fullmatch(str(value))
        if not m:
            # A negative or odd value still reaches the load's own check (one line, exit 2).
            try:
                return float(value)
            except ValueError:
                self.fail(f"{value!r} is not a duration (e.g. 10, 10s, 2m)", param, ctx)
        return float(m.group(1)) * _UNIT[m.group(2)]


def _percent(value: str) -> float:
    text = value.strip().removesuffix("%").strip()
    try:
        pct = float(text)
    except ValueError:
        raise UsageError(
            "load", "", f"--max-loss {value!r}: a percentage, e.g. 0, 0.1 or 1%"
        ) from None
    if not 0 <= pct <= 100:
        raise UsageError("load", "", f"--max-loss {value!r}: must be 0 to 100 (%)")
    return pct


class _Line:
    """One live status line on stderr (a terminal only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K" + text[: term_width() - 1])
            sys.stderr.flush()

    def load(self, p: Any) -> None:
        self(
            f"load: {p.elapsed_s:.0f} s, sent {p.sent_spans:,} of {p.due_spans:,} due, "
            f"refused {p.refused_spans:,}, failed {p.failed_spans:,}, behind {p.behind_s:.2f} s"
        )

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


@click.command()
@click.option("--rate", type=float, default=None, metavar="<float>",
              help="Spans per second, all shards together (required).")  # fmt: skip
@click.option("--duration", type=Seconds(), default=None, metavar="<seconds>",
              help="How long to send, e.g. 60 or 2m (required).")  # fmt: skip
@click.option("--max-spans", type=int, default=10_000_000, show_default=True, metavar="<int>",
              help="Hard bound on the spans of the whole load.")  # fmt: skip
@click.option("--spans-per-trace", type=int, default=5, show_default=True, metavar="<int>",
              help="Spans per trace (1-255).")  # fmt: skip
@click.option("--batch-spans", type=int, default=512, show_default=True, metavar="<int>",
              help="Spans per request (whole traces).")  # fmt: skip
@click.option("--concurrency", type=int, default=4, show_default=True, metavar="<int>",
              help="Requests in flight at most.")  # fmt: skip
@click.option("--retry", type=int, default=0, show_default=True, metavar="<int>",
              help="Retries of a refused request (0: every refusal is visible).")  # fmt: skip
@click.option("--timeout", type=Seconds(), default=None, metavar="<seconds>",
              help="Per request (default: collector.timeout).")  # fmt: skip
@click.option("--service", default="tracecheck-load", show_default=True, metavar="<str>",
              help="service.name of the load's spans.")  # fmt: skip
@click.option("--run-id", default="", metavar="<str>",
              help="Run ID on every span (default: random; shards share one).")  # fmt: skip
@click.option("--shards", type=int, default=1, show_default=True, metavar="<int>",
              help="Processes sharing the load.")  # fmt: skip
@click.option("--shard", type=int, default=0, show_default=True, metavar="<int>",
              help="This process's shard (0 to --shards - 1).")  # fmt: skip
@click.option("--seed", "load_seed", type=int, default=0, show_default=True, metavar="<int>",
              help="ID seed (0: from the run ID).")  # fmt: skip
@click.option("--max-loss", default="0", show_default=True, metavar="<percent>",
              help="Loss tolerated before exit 1, % of planned spans.")  # fmt: skip
@click.option("--samples", type=int, default=5, show_default=True, metavar="<int>",
              help="Traces read back by ID and compared span for span.")  # fmt: skip
@click.option("--skip", "skip_hops", multiple=True, metavar="<list[str]>",
              help="Do not account: collector, tempo, found, samples, span-metrics.")  # fmt: skip
@click.option("--receiver", default="otlp", show_default=True, metavar="<str>",
              help="The collector receiver's metrics label.")  # fmt: skip
@click.option("--exporter", default="", metavar="<str>",
              help="The collector exporter's metrics label (default: otlp*).")  # fmt: skip
@click.option("--ledger/--no-ledger", default=True, show_default=True,
              help="End with this shard's ledger span (for --account).")  # fmt: skip
@click.option("--ramp", "ramp_spec", default=None, metavar="<START:END:STEP>",
              help="Raise the rate step by step until a hop gives way.")  # fmt: skip
@click.option("--step-duration", type=Seconds(), default=None, metavar="<seconds>",
              help="With --ramp: seconds per step.")  # fmt: skip
@click.option("--account", "account_id", default=None, metavar="<run id>",
              help="Account a run other processes sent (their ledger spans).")  # fmt: skip
@outputs_option(REPORT_FORMATS)
@uses_settings(COLLECTOR, TEMPO, PROMETHEUS, extra=LOAD_FLAGS)
def load(settings: Settings, outputs: list[tuple[str, str | None]], **opts: Any) -> None:
    """Send spans at a fixed rate and count them at every hop: the client, the collector's
    receiver and exporter, Tempo's distributor, Tempo by TraceQL (plus sampled traces read
    back by ID), span-metrics in Prometheus. Exit 1 when the loss exceeds --max-loss.

    Example: tracecheck load --rate 2000 --duration 10s --output table --output json:load.json
    """
    from tracecheck.load import LoadSpec, RetryPolicy
    from tracecheck.load.account import SKIPPABLE, AccountOptions
    from tracecheck.output import render

    skip = frozenset(csv_items(opts["skip_hops"], "--skip"))
    unknown = sorted(skip - set(SKIPPABLE))
    if unknown:
        raise UsageError(
            "load", "", f"--skip {', '.join(unknown)}: choose from {', '.join(SKIPPABLE)}"
        )
    if opts["samples"] < 0:
        raise UsageError("load", "", "--samples must be 0 or more")
    options = AccountOptions(
        max_loss_pct=_percent(opts["max_loss"]),
        samples=opts["samples"],
        skip=skip,
        receiver=opts["receiver"],
        exporter=opts["exporter"],
    )
    line = _Line(sys.stderr.isatty() and not any(p is None and f != "table" for f, p in outputs))
    account_id, ramp_spec = opts["account_id"], opts["ramp_spec"]
    sending = [o for o in ("rate", "duration") if opts[o] is not None]
    try:
        if account_id is not None:
            if sending or ramp_spec:
                raise UsageError(
                    "load", "", "--account reads a finished run: no --rate, --duration or --ramp"
                )
            from tracecheck.load.flow import account_run

            report = account_run(settings, account_id, options, progress=line)
        else:
            spec = LoadSpec(
                rate=opts["rate"],
                duration=opts["duration"],
                spans_per_trace=opts["spans_per_trace"],
                batch_spans=opts["batch_spans"],
                concurrency=opts["concurrency"],
                max_spans=opts["max_spans"],
                service=opts["service"],
                run_id=opts["run_id"],
                shard=opts["shard"],
                shards=opts["shards"],
                seed=opts["load_seed"],
                retry=RetryPolicy(attempts=opts["retry"]),
                timeout=opts["timeout"],
            )
            if ramp_spec is not None:
                report = _ramp(settings, spec, ramp_spec, opts, options, sending, line)
            else:
                if opts["step_duration"] is not None:
                    raise UsageError("load", "", "--step-duration goes with --ramp")
                from tracecheck.load.flow import load_and_account

                report, _ = load_and_account(
                    settings, spec, options, ledger=opts["ledger"], load_progress=line.load,
                    progress=line,
                )  # fmt: skip
    finally:
        line.clear()
    for fmt, path in outputs:
        write(render(report, fmt, color=color() and path is None, width=term_width()), path)
    raise Done(report.exit_code)


def _ramp(
    settings: Settings,
    spec: Any,
    ramp_spec: str,
    opts: dict[str, Any],
    options: Any,
    sending: list[str],
    line: _Line,
) -> Any:
    import dataclasses

    from tracecheck.load.ramp import parse_ramp, run_ramp

    if sending:
        raise UsageError(
            "load", "", "--ramp sets the rates: no --rate or --duration (use --step-duration)"
        )
    if opts["step_duration"] is None:
        raise UsageError("load", "", "--ramp needs --step-duration (seconds per step)")
    if opts["step_duration"] <= 0:
        raise UsageError(
            "load", "", f"--step-duration must be positive, not {opts['step_duration']:g}"
        )
    start, end, step = parse_ramp(ramp_spec)
    # Span-metrics settle on the generator's collection interval (15 s): skipped per step.
    options = dataclasses.replace(options, skip=options.skip | {"span-metrics"})
    return run_ramp(
        settings, spec, start, end, step, opts["step_duration"], options,
        load_progress=line.load, progress=line,
    )  # fmt: skip
