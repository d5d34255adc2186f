"""``tracecheck doctor``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from tracecheck.cli.shared import (
    APISERVER,
    COLLECTOR,
    PROMETHEUS,
    TEMPO,
    Done,
    color,
    csv_items,
    outputs_option,
    term_width,
    uses_settings,
    write,
)
from tracecheck.errors import UsageError
from tracecheck.output import DOCTOR_FORMATS

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.config import Settings

__all__ = ["doctor"]

_COMPONENTS = ("apiserver", "collector", "tempo", "prometheus")


@click.command()
@outputs_option(DOCTOR_FORMATS)
@uses_settings(COLLECTOR, TEMPO, PROMETHEUS, APISERVER)
@click.option(
    "--observe",
    type=float,
    default=None,
    metavar="<float>",
    help="Seconds between the two readings compared (default 6; 0: one reading).",
)
@click.option(
    "--skip",
    "skip",
    multiple=True,
    metavar="<list[str]>",
    help="Components not to read: apiserver, collector, tempo, prometheus (repeatable).",
)
def doctor(
    settings: Settings,
    outputs: list[tuple[str, str | None]],
    observe: float | None,
    skip: tuple[str, ...],
) -> None:
    """Inspect the live pipeline without sending anything: reachability, versions,
    configuration facts, self-metric alarms, the apiserver's tracing configuration where
    readable; findings with severity, component, evidence and fix. Exit 1 when a finding is
    an error.

    Example: tracecheck doctor --skip apiserver --output markdown:doctor.md
    """
    from tracecheck.diagnose.doctor import DEFAULT_OBSERVE
    from tracecheck.diagnose.doctor import doctor as run_doctor
    from tracecheck.output import render_doctor

    skipped = csv_items(skip, "--skip")
    unknown = [s for s in skipped if s not in _COMPONENTS]
    if unknown:
        raise UsageError(
            "doctor",
            "--skip",
            f"unknown component {unknown[0]!r}; choose from {', '.join(_COMPONENTS)}",
        )
    wait = DEFAULT_OBSERVE if observe is None else observe
    if wait < 0:
        raise UsageError("doctor", "--observe", f"must be 0 or more seconds, not {wait:g}")
    components = [c for c in _COMPONENTS if c not in skipped]
    report = run_doctor(settings, observe=wait, components=components)
    for fmt, path in outputs:
        write(render_doctor(report, fmt, color=color() and path is None, width=term_width()), path)
    raise Done(report.exit_code)
