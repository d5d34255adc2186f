"""What every command shares: the option declarations, settings, outputs and the terminal.

Options that set a setting are declared once here, as :class:`Flag` values grouped by system
(:data:`COLLECTOR`, :data:`TEMPO`, :data:`PROMETHEUS`, :data:`APISERVER`), and a command takes
the groups it needs with one decorator, which also adds ``--config`` and ``--tenant`` (fanned
out to the systems the command talks to) and calls the command with the resolved
:class:`~tracecheck.config.Settings` (defaults < TOML < ``TRACECHECK_*`` < flags, the
kubeconfig default chain applied when the command talks to the apiserver)::

    @click.command()
    @uses_settings(TEMPO, PROMETHEUS)
    @output_option(TABLE_FORMATS)
    def my_command(settings: Settings, output: str) -> None:
        \"\"\"What it does. Example: tracecheck my-command --tempo-url http://tempo:3200\"\"\"
        show_table(run_something(settings), output)

This module and its siblings are the only ones that import click; the core never does.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tracecheck.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from tracecheck.config import Settings
    from tracecheck.results import ResultTable

__all__ = [
    "APISERVER",
    "COLLECTOR",
    "PROMETHEUS",
    "TEMPO",
    "Done",
    "Flag",
    "Group",
    "LazyGroup",
    "ProgressLine",
    "argument",
    "color",
    "csv_items",
    "echo_err",
    "output_option",
    "outputs_option",
    "pairs",
    "show_table",
    "term_width",
    "uses_settings",
    "window_options",
    "write",
]

F = TypeVar("F", bound=Callable[..., Any])

# Metavars as the help has always shown them.
_METAVAR = {str: "<str>", int: "<int>", float: "<float>"}


class Done(Exception):
    """Raised by a command to end with ``code`` after it printed its result."""

    def __init__(self, code: int) -> None:
        self.code = code


class Group(click.Group):
    """A command group whose help lists its commands in the order they were added."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


class LazyGroup(Group):
    """A :class:`Group` whose commands are imported when one is used, not when it is listed.

    ``lazy`` maps each command name to ``(module, attribute, summary)``, in help order;
    ``summary`` is the first paragraph of that command's help, which ``--help`` shortens the way
    click does for a loaded command. ``tracecheck --help`` then imports no command module, and
    ``tracecheck query ...`` only :mod:`tracecheck.cli.query` (click's "lazily loading
    subcommands" pattern). A unit test keeps each summary equal to the command's own help.
    """

    def __init__(self, *args: Any, lazy: Mapping[str, tuple[str, str, str]], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.lazy, *(name for name in self.commands if name not in self.lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            import importlib

            module, attribute, _ = self.lazy[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            # click suggests from the commands loaded so far; suggest from every command.
            raise click.exceptions.NoSuchCommand(
                exc.command_name, possibilities=self.list_commands(ctx), ctx=ctx
            ) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # What click.Group.format_commands does, with a stand-in Command carrying the summary
        # for every command not imported yet (so the shortening is click's own).
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            cmd = self.commands.get(name) or click.Command(name, help=self.lazy[name][2])
            if not cmd.hidden:
                rows.append((name, cmd))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


def argument(name: str, help: str, **kw: Any) -> Callable[[F], F]:
    """A positional argument with its help (listed under "Positional arguments")."""
    return click.argument(name, help=help, metavar=name, **kw)


# -- parsing --------------------------------------------------------------------------------------


def pairs(values: Sequence[str] | None, option: str) -> dict[str, str]:
    """``NAME=VALUE`` items (repeatable options) as a dict: the one parser for all of them."""
    out: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=option)
        out[key.strip()] = value.strip()
    return out


def csv_items(values: Sequence[str] | None, option: str) -> tuple[str, ...]:
    """Repeatable and/or comma-separated items: ``--skip a,b --skip c`` -> ``(a, b, c)``."""
    return tuple(p.strip() for v in values or () for p in v.split(",") if p.strip())


# -- options that set settings --------------------------------------------------------------------


class Flag:
    """An option that sets ``keys`` (``section.field``) of the settings.

    ``multiple`` options are repeatable; ``parse`` turns what was given into the value
    (:func:`pairs` for headers). A ``bool`` flag is spelt ``--on/--off``. (A plain class: a
    dataclass would import and build more than ``tracecheck --help`` should pay for.)
    """

    __slots__ = ("decls", "help", "keys", "multiple", "parse", "type")

    def __init__(
        self,
        decls: tuple[str, ...],
        keys: tuple[str, ...],
        help: str,
        type: Any = str,
        multiple: bool = False,
        parse: Callable[[Sequence[str] | None, str], Any] | None = None,
    ) -> None:
        self.decls, self.keys, self.help, self.type = decls, keys, help, type
        self.multiple, self.parse = multiple, parse

    @property
    def name(self) -> str:
        """The option's first long name, e.g. ``--tempo-url``."""
        return next(d for d in self.decls if d.startswith("--")).split("/")[0]

    @property
    def dest(self) -> str:
        return self.name[2:].replace("-", "_")

    def option(self, *, help: str | None = None) -> Callable[[F], F]:
        """The click option alone (its value passed through, not into settings)."""
        kw: dict[str, Any] = {"help": help or self.help, "default": None}
        if self.type is bool:
            kw["default"] = None
        else:
            kw["type"] = self.type
            kw["metavar"] = _METAVAR.get(self.type, "<str>")
        if self.multiple:
            kw["multiple"] = True
            kw["default"] = ()
            kw["metavar"] = f"<list[{kw['metavar'][1:-1]}]>"
        return click.option(*self.decls, self.dest, **kw)

    def value(self, raw: Any) -> Any:
        """The setting's value from what click parsed (None: not given)."""
        if self.multiple and not raw:
            return None
        return self.parse(raw, self.name) if self.parse is not None else raw


COLLECTOR = (
    Flag(("--protocol",), ("collector.protocol",), "grpc or http (OTLP/HTTP protobuf)."),
    Flag(("--collector-endpoint",), ("collector.endpoint",), "OTLP/gRPC host:port."),
    Flag(("--collector-http-url",), ("collector.http_url",), "OTLP/HTTP base URL."),
    Flag(("--collector-health-url",), ("collector.health_url",), "health_check URL ('' to skip)."),
    Flag(("--collector-metrics-url",), ("collector.metrics_url",), "Collector self-metrics URL."),
    Flag(("--insecure/--tls",), ("collector.insecure",), "Plaintext or TLS OTLP.", type=bool),
    Flag(("--collector-ca-file",), ("collector.ca_file",), "CA bundle for the collector's TLS."),
    Flag(
        ("--collector-header",),
        ("collector.headers",),
        "NAME=VALUE header on exports.",
        multiple=True,
        parse=pairs,
    ),
)
TEMPO = (
    Flag(("--tempo-url",), ("tempo.url",), "Tempo HTTP API base URL."),
    Flag(
        ("--tempo-api-prefix",),
        ("tempo.api_prefix",),
        "Tempo's http_api_prefix, e.g. /tempo (/ready stays at the root).",
    ),
    Flag(
        ("--tempo-header",),
        ("tempo.headers",),
        "NAME=VALUE header for Tempo.",
        multiple=True,
        parse=pairs,
    ),
)
PROMETHEUS = (
    Flag(("--prometheus-url",), ("prometheus.url",), "Prometheus base URL."),
    Flag(
        ("--prometheus-header",),
        ("prometheus.headers",),
        "NAME=VALUE header for Prometheus.",
        multiple=True,
        parse=pairs,
    ),
)
APISERVER = (
    Flag(("--kubeconfig",), ("apiserver.kubeconfig",), "kubeconfig for the apiserver leg."),
    Flag(("--context",), ("apiserver.context",), "kubeconfig context."),
)
_GROUPS = {"collector": COLLECTOR, "tempo": TEMPO, "prometheus": PROMETHEUS}
_NAMES = {"collector": "collector", "tempo": "Tempo", "prometheus": "Prometheus"}


def _tenant(systems: Sequence[str]) -> Flag:
    """``--tenant``: X-Scope-OrgID for every multi-tenant system the command talks to."""
    names = [_NAMES[s] for s in systems]
    said = ", ".join(names) if len(names) > 2 else " and ".join(names)
    return Flag(("--tenant",), tuple(f"{s}.tenant" for s in systems), f"X-Scope-OrgID for {said}.")


def uses_settings(*groups: Sequence[Flag], extra: Sequence[Flag] = ()) -> Callable[[F], F]:
    """Give a command ``--config``, the flags of ``groups`` (:data:`COLLECTOR`, :data:`TEMPO`,
    :data:`PROMETHEUS`, :data:`APISERVER`), ``--tenant`` for the multi-tenant ones and the
    command's own setting flags (``extra``); the command is called with ``settings=``.

    With :data:`APISERVER`, ``apiserver.kubeconfig`` is filled from the default chain
    (``KUBECONFIG``, the local pipeline's, ``~/.kube/config``) when nothing chose one.
    """
    systems = [s for s, g in _GROUPS.items() if any(g is x for x in groups)]
    flags = [f for g in groups for f in g if g is not APISERVER]
    if systems:
        flags.append(_tenant(systems))
    flags += [f for g in groups if g is APISERVER for f in g]
    flags += list(extra)
    apiserver = any(g is APISERVER for g in groups)

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def run(**kwargs: Any) -> Any:
            config = kwargs.pop("config")
            given: dict[str, Any] = {}
            for flag in flags:
                value = flag.value(kwargs.pop(flag.dest))
                for key in flag.keys:
                    if key.endswith(".*"):  # NAME=VALUE items, each a setting of the section
                        for name, item in (value or {}).items():
                            given[f"{key[:-2]}.{name}"] = item
                    else:
                        given[key] = value
            kwargs["settings"] = load_settings(config, given, kubeconfig=apiserver)
            return fn(**kwargs)

        wrapped: Any = run
        for flag in reversed(flags):
            wrapped = flag.option()(wrapped)
        wrapped = config_option(wrapped)
        return wrapped  # type: ignore[no-any-return]

    return decorate


def config_option(fn: F) -> F:
    return click.option(
        "--config",
        type=click.Path(),
        metavar="<path>",
        default=None,
        help="TOML settings file (also TRACECHECK_CONFIG).",
    )(fn)


def load_settings(
    config: str | Path | None, flags: Mapping[str, Any], *, kubeconfig: bool = False
) -> Settings:
    """Settings from ``--config`` (else ``TRACECHECK_CONFIG``), the environment and ``flags``;
    with ``kubeconfig``, the kubeconfig default chain applied. The CLI is where the
    environment is read."""
    from pathlib import Path

    from tracecheck.config import load_settings as load
    from tracecheck.config import with_kubeconfig

    path = (
        Path(config)
        if config
        else (
            Path(os.environ["TRACECHECK_CONFIG"]) if os.environ.get("TRACECHECK_CONFIG") else None
        )
    )
    settings = load(path, os.environ, flags)
    return with_kubeconfig(settings, os.environ) if kubeconfig else settings


def deadline_flag() -> Flag:
    """``--deadline CHECK=SECONDS`` (repeatable): one flag for every ``deadlines.*`` setting."""
    return Flag(
        ("--deadline",),
        ("deadlines.*",),
        "CHECK=SECONDS, e.g. search=45 (repeatable).",
        multiple=True,
        parse=pairs,
    )


# -- options that are not settings ----------------------------------------------------------------


def output_option(formats: Sequence[str], default: str = "table") -> Callable[[F], F]:
    """``-o/--output FORMAT``, checked against ``formats`` before anything runs."""

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        from tracecheck.output import check_format

        check_format(value, formats)
        return value

    return click.option(
        "--output",
        "-o",
        default=default,
        show_default=True,
        metavar="<str>",
        callback=check,
        help=f"{', '.join(formats[:-1])} or {formats[-1]}.",
    )


def outputs_option(formats: Sequence[str]) -> Callable[[F], F]:
    """``-o/--output FORMAT[:PATH]`` (repeatable; default ``table`` on stdout): the command gets
    ``outputs``, a list of ``(format, path or None)``."""

    def parse(
        ctx: click.Context, param: click.Parameter, value: Sequence[str]
    ) -> list[tuple[str, str | None]]:
        from tracecheck.output import parse_output

        return [parse_output(spec, formats) for spec in (value or ("table",))]

    return click.option(
        "--output",
        "-o",
        "outputs",
        multiple=True,
        metavar="<list[str]>",
        callback=parse,
        help=f"{', '.join(formats[:-1])} or {formats[-1]}, optionally :PATH (repeatable). "
        "Default: table.",
    )


def window_options(fn: F) -> F:
    """``--since``, ``--start``, ``--end``: the time window of a query or report."""
    for decl, text in reversed(
        (
            ("--since", "Window ending now, e.g. 15m, 1h (default 1h)."),
            ("--start", "Window start: RFC 3339 or unix seconds."),
            ("--end", "Window end: RFC 3339 or unix seconds."),
        )
    ):
        fn = click.option(decl, default=None, metavar="<str>", help=text)(fn)
    return fn


def max_rows_option(fn: F) -> F:
    return click.option(
        "--max-rows",
        type=int,
        default=10_000,
        show_default=True,
        metavar="<int>",
        help="Rows printed at most (a note says what was cut).",
    )(fn)


# -- the terminal ---------------------------------------------------------------------------------


def echo_err(message: str) -> None:
    click.echo(f"tracecheck: {message}", err=True)


def write(text: str, path: str | None) -> None:
    """``text`` to stdout, or to ``path``; a file that cannot be written is a ConfigError."""
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from pathlib import Path

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError("output", path, f"cannot write: {exc.strerror or exc}") from exc


def color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def term_width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 20)).columns


def show_table(table: ResultTable, fmt: str) -> None:
    """A query's table on stdout; with CSV the notes go to stderr (CSV has no room for them)."""
    from tracecheck.output import render_table

    write(render_table(table, fmt, width=term_width()), None)
    if fmt == "csv":
        for note in table.notes:
            echo_err(note)


class ProgressLine:
    """One live status line on stderr while checks wait (only on a terminal); a component not
    yet ready (event state ``wait``) shows what it last said. With ``log_waits`` (no terminal),
    each new answer of a component not yet ready is written as a line of its own instead."""

    def __init__(self, enabled: bool, *, log_waits: bool = False) -> None:
        self.enabled = enabled
        self.log_waits = log_waits
        self.waiting: dict[str, str] = {}
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        if event.state == "wait" and self.log_waits and not self.enabled:
            with self.lock:
                if self.waiting.get(event.check) == event.message:
                    return  # logged already: only what changes is written
                self.waiting[event.check] = event.message
            echo_err(f"waiting for {event.check} ({event.elapsed:.0f} s): {event.message}")
            return
        if not self.enabled:
            return
        with self.lock:
            if event.state == "done":
                self.waiting.pop(event.check, None)
            else:
                left = f"{event.elapsed:.0f}/{event.deadline:.0f}s" if event.deadline else ""
                said = f" ({event.message})" if event.state == "wait" else ""
                self.waiting[event.check] = f"{event.check} {left}".strip() + said
            line = "waiting: " + ", ".join(self.waiting.values()) if self.waiting else ""
            sys.stderr.write("\r\033[K" + line[: term_width() - 1])
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
