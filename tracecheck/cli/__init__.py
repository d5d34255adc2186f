"""The ``tracecheck`` command line: a thin layer of click commands over the library.

    shared      option declarations every command reuses, settings, outputs, the terminal
    smoke       tracecheck smoke
    load        tracecheck load (--ramp, --account)
    stack       tracecheck stack render|validate|apply, tracecheck stack local up|down|status|env
    apiserver   tracecheck apiserver probe|check-config
    query       tracecheck query traceql|promql|list|run
    report      tracecheck report apiserver

Each command reads its options, gets :class:`~tracecheck.config.Settings` once (the
``uses_settings`` decorator), calls one core function, renders the result and exits with a code
from :class:`~tracecheck.errors.ExitCode`. A new command group is a module here with a
``group`` (or a command) that :data:`app` adds; see :mod:`tracecheck.cli.shared`.
"""

from __future__ import annotations

import os
import sys

import click

from tracecheck.cli import apiserver, load, query, report, smoke, stack
from tracecheck.cli.shared import Done, Group, echo_err
from tracecheck.errors import ExitCode, TracecheckError

__all__ = ["EXIT_CODES", "app", "main"]

EXIT_CODES = """Exit codes: 0 all checks passed | 1 a check failed | 2 usage error |
3 a backend unreachable or erroring | 4 configuration or query error | 130 interrupted |
70 internal error."""


@click.group(
    cls=Group,
    name="tracecheck",
    help="Prove a kube-apiserver tracing pipeline (collector -> Tempo -> Prometheus) works.\n\n"
    + EXIT_CODES,
    no_args_is_help=True,
    context_settings={"max_content_width": 80},
)
def app() -> None:
    pass


app.add_command(smoke.smoke)
app.add_command(load.load)
app.add_command(stack.group)
app.add_command(apiserver.group)
app.add_command(query.group)
app.add_command(report.group)


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
