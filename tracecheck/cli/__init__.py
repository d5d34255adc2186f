"""The ``tracecheck`` command line: a thin layer of click commands over the library.

    shared      option declarations every command reuses, settings, outputs, the terminal
    smoke       tracecheck smoke
    doctor      tracecheck doctor
    load        tracecheck load (--ramp, --account)
    stack       tracecheck stack render|validate|apply, tracecheck stack local up|down|status|env
    apiserver   tracecheck apiserver probe|check-config
    query       tracecheck query traceql|promql|list|run
    report      tracecheck report apiserver
    watch       tracecheck watch

Each command reads its options, gets :class:`~tracecheck.config.Settings` once (the
``uses_settings`` decorator), calls one core function, renders the result and exits with a code
from :class:`~tracecheck.errors.ExitCode`. A new command group is a module here with a
``group`` (or a command) listed in :data:`COMMANDS`, imported only when it runs; see
:mod:`tracecheck.cli.shared`.
"""

from __future__ import annotations

import os
import sys

import click

from tracecheck.cli.shared import Done, LazyGroup, echo_err
from tracecheck.errors import ExitCode, TracecheckError

__all__ = ["COMMANDS", "EXIT_CODES", "app", "main"]

EXIT_CODES = """Exit codes: 0 all checks passed | 1 a check failed | 2 usage error |
3 a backend unreachable or erroring | 4 configuration or query error | 130 interrupted |
70 internal error."""


#: Every command, in help order: (module, attribute, the first paragraph of its help). Imported
#: only when used, so ``--help`` and each command pay for no other (tests/unit/test_cli_lazy.py
#: keeps the summaries equal to the commands' own help).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "smoke": (
        "tracecheck.cli.smoke",
        "smoke",
        "Send a synthetic trace and prove it reaches Tempo and Prometheus (and the apiserver's).",
    ),
    "doctor": (
        "tracecheck.cli.doctor",
        "doctor",
        "Inspect the live pipeline without sending anything: reachability, versions, "
        "configuration facts, self-metric alarms, the apiserver's tracing configuration where "
        "readable; findings with severity, component, evidence and fix.",
    ),
    "watch": (
        "tracecheck.cli.watch",
        "watch",
        "Run the smoke plan every interval and serve its verdicts as Prometheus metrics.",
    ),
    "load": (
        "tracecheck.cli.load",
        "load",
        "Send spans at a fixed rate and count them at every hop: the client, the collector's "
        "receiver and exporter, Tempo's distributor, Tempo by TraceQL (plus sampled traces read "
        "back by ID), span-metrics in Prometheus.",
    ),
    "stack": (
        "tracecheck.cli.stack",
        "group",
        "Deploy the pipeline: Kubernetes manifests and the local pipeline.",
    ),
    "apiserver": (
        "tracecheck.cli.apiserver",
        "group",
        "The apiserver leg: traced requests, the TracingConfiguration file.",
    ),
    "query": (
        "tracecheck.cli.query",
        "group",
        "Ad-hoc TraceQL and PromQL, and the saved queries in queries/.",
    ),
    "report": ("tracecheck.cli.report", "group", "Latency reports with tables and plots."),
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    name="tracecheck",
    help="Prove a kube-apiserver tracing pipeline (collector -> Tempo -> Prometheus) works.\n\n"
    + EXIT_CODES,
    no_args_is_help=True,
    context_settings={"max_content_width": 80},
)
def app() -> None:
    pass


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns (and exits with) a documented exit code."""
    # grpc logs failed TLS handshakes to stderr itself (a second line next to ours); set before
    # grpc is first imported, and only if the user did not choose a verbosity.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    code: int
    try:
        done = app.main(args=argv, prog_name="tracecheck", standalone_mode=False)
        code = done if isinstance(done, int) else ExitCode.OK
    except Done as done:
        code = done.code
    except TracecheckError as exc:
        echo_err(f"error: {exc}")
        code = exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        echo_err("interrupted")
        code = ExitCode.INTERRUPTED
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else "")
        code = ExitCode.OK
    except click.ClickException as exc:
        echo_err(f"usage: {exc.format_message()} (see --help)")
        code = ExitCode.USAGE
    except Exception as exc:  # a bug: one line, the traceback only on request
        if os.environ.get("TRACECHECK_DEBUG"):
            raise
        echo_err(
            f"internal error: {type(exc).__name__}: {exc} (TRACECHECK_DEBUG=1 shows a traceback)"
        )
        code = ExitCode.INTERNAL
    if argv is None:
        sys.exit(code)
    return code
