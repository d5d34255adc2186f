"""``tracecheck watch``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from tracecheck.cli.shared import APISERVER, COLLECTOR, PROMETHEUS, TEMPO, Done, uses_settings
from tracecheck.cli.smoke import SMOKE_FLAGS

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.config import Settings

__all__ = ["watch"]


@click.command()
@click.option(
    "--interval",
    default="60s",
    show_default=True,
    metavar="<str>",
    help="Time between round starts: 60, 30s, 5m (0: back to back).",
)
@click.option(
    "--jitter",
    type=float,
    default=0.1,
    show_default=True,
    metavar="<float>",
    help="Random delay of each round, up to this share of the interval.",
)
@click.option(
    "--listen",
    default="127.0.0.1:9464",
    show_default=True,
    metavar="<str>",
    help="HOST:PORT of /metrics, /healthz, /ready and /report.json (:PORT: every interface).",
)
@click.option(
    "--grace",
    default="10s",
    show_default=True,
    metavar="<str>",
    help="After SIGTERM/SIGINT, how long a running round may finish before it is abandoned.",
)
@click.option(
    "--rounds",
    type=int,
    default=None,
    metavar="<int>",
    help="Stop after this many rounds (default: until SIGTERM/SIGINT).",
)
@uses_settings(COLLECTOR, TEMPO, PROMETHEUS, APISERVER, extra=SMOKE_FLAGS)
def watch(
    settings: Settings,
    interval: str,
    jitter: float,
    listen: str,
    grace: str,
    rounds: int | None,
) -> None:
    """Run the smoke plan every interval and serve its verdicts as Prometheus metrics.

    One round at a time (a slow round is never overlapped), each with its own run ID; a failing
    round is data, not an exit. SIGTERM or SIGINT ends the watch with exit 0. One log line a
    round on stderr; /report.json holds the last round's report (smoke JSON schema).

    Example: tracecheck watch --interval 30s --listen 0.0.0.0:9464 --skip apiserver
    """
    from tracecheck.watch import watch as run_watch

    code = run_watch(
        settings, interval=interval, jitter=jitter, listen=listen, grace=grace, rounds=rounds
    )
    raise Done(code)
