"""The ``tracecheck`` command line: the only module that imports typer.

Each command reads its options, builds :class:`~tracecheck.config.Settings` once, calls one core
function, renders the result and exits with a code from :class:`~tracecheck.errors.ExitCode`.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from tracecheck.errors import ExitCode, TracecheckError

EXIT_CODES = """Exit codes: 0 all checks passed | 1 a check failed | 2 usage error |
3 a backend unreachable or erroring | 4 configuration or query error | 130 interrupted |
70 internal error."""

app = typer.Typer(
    name="tracecheck",
    help="Prove a kube-apiserver tracing pipeline (collector -> Tempo -> Prometheus) works.\n\n"
    + EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(
    help="Deploy the pipeline: Kubernetes manifests and the local pipeline.", no_args_is_help=True
)
local_app = typer.Typer(
    help="The local pipeline from real parts (etcd, kube-apiserver, collector, Prometheus, "
    "Tempo stand-in).",
    no_args_is_help=True,
)
apiserver_app = typer.Typer(
    help="The apiserver leg: traced requests, the TracingConfiguration file.", no_args_is_help=True
)
query_app = typer.Typer(
    help="Ad-hoc TraceQL and PromQL, and the saved queries in queries/.", no_args_is_help=True
)
report_app = typer.Typer(help="Latency reports with tables and plots.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
stack_app.add_typer(local_app, name="local")
app.add_typer(apiserver_app, name="apiserver")
app.add_typer(query_app, name="query")
app.add_typer(report_app, name="report")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="TOML settings file (also TRACECHECK_CONFIG).", show_default=False
    ),
]


class _Exit(Exception):
    """Raised by commands to end with an exit code after printing."""

    def __init__(self, code: int) -> None:
        self.code = code


def _settings(config: Path | None, flags: dict[str, Any]) -> Any:
    from tracecheck.config import load_settings

    path = config or (
        Path(os.environ["TRACECHECK_CONFIG"]) if os.environ.get("TRACECHECK_CONFIG") else None
    )
    return load_settings(path, os.environ, flags)


def _err(message: str) -> None:
    typer.echo(f"tracecheck: {message}", err=True)


def _write(text: str, path: str | None) -> None:
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        from tracecheck.errors import ConfigError

        raise ConfigError("output", path, f"cannot write: {exc.strerror or exc}") from exc


def _color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _kv(values: list[str] | None, option: str) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected NAME=VALUE, got {v!r}", param_hint=option)
        out[key.strip()] = value.strip()
    return out


def _csv(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(p.strip() for v in values for p in v.split(",") if p.strip())


def _with_kubeconfig(settings: Any) -> Any:
    """Settings whose apiserver.kubeconfig is filled when neither --kubeconfig, the TOML file nor
    TRACECHECK_APISERVER_KUBECONFIG chose one: KUBECONFIG, the local pipeline's kubeconfig,
    ~/.kube/config (empty: the in-cluster service account). The environment is read here, in
    the CLI, never in core code."""
    if settings.apiserver.kubeconfig:
        return settings
    from tracecheck.backends.apiserver import resolve_kubeconfig
    from tracecheck.stack.local import default_state_dir

    local = default_state_dir(os.environ) / "kubeconfig"
    found = resolve_kubeconfig("", os.environ, local)
    return settings.replace(**{"apiserver.kubeconfig": found}) if found else settings


class _ProgressLine:
    """One live status line on stderr while checks wait (only on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.waiting: dict[str, str] = {}
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        if not self.enabled:
            return
        with self.lock:
            if event.state == "done":
                self.waiting.pop(event.check, None)
            else:
                left = f"{event.elapsed:.0f}/{event.deadline:.0f}s" if event.deadline else ""
                self.waiting[event.check] = f"{event.check} {left}".strip()
            line = "waiting: " + ", ".join(self.waiting.values()) if self.waiting else ""
            sys.stderr.write("\r\033[K" + line[: _term_width() - 1])
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _term_width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 20)).columns


# -------------------------------------------------------------------------------------- smoke


@app.command()
def smoke(
    config: ConfigOpt = None,
    output: Annotated[
        list[str] | None,
        typer.Option(
            "--output",
            "-o",
            help="table, json, junit or markdown, optionally :PATH (repeatable). Default: table.",
        ),
    ] = None,
    only: Annotated[list[str] | None, typer.Option(help="Run only these checks or groups.")] = None,
    skip: Annotated[
        list[str] | None, typer.Option(help="Skip these checks or groups (e.g. apiserver).")
    ] = None,
    protocol: Annotated[str | None, typer.Option(help="grpc or http (OTLP/HTTP protobuf).")] = None,
    collector_endpoint: Annotated[str | None, typer.Option(help="OTLP/gRPC host:port.")] = None,
    collector_http_url: Annotated[str | None, typer.Option(help="OTLP/HTTP base URL.")] = None,
    collector_health_url: Annotated[
        str | None, typer.Option(help="health_check URL ('' to skip).")
    ] = None,
    collector_metrics_url: Annotated[
        str | None, typer.Option(help="Collector self-metrics URL.")
    ] = None,
    insecure: Annotated[
        bool | None, typer.Option("--insecure/--tls", help="Plaintext or TLS OTLP.")
    ] = None,
    collector_ca_file: Annotated[
        str | None, typer.Option(help="CA bundle for the collector's TLS.")
    ] = None,
    collector_header: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE header on exports.")
    ] = None,
    tempo_url: Annotated[str | None, typer.Option(help="Tempo HTTP API base URL.")] = None,
    tempo_header: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE header for Tempo.")
    ] = None,
    prometheus_url: Annotated[str | None, typer.Option(help="Prometheus base URL.")] = None,
    prometheus_header: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE header for Prometheus.")
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="X-Scope-OrgID for collector, Tempo, Prometheus.")
    ] = None,
    kubeconfig: Annotated[
        str | None, typer.Option(help="kubeconfig for the apiserver leg.")
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
    span_metrics_naming: Annotated[str | None, typer.Option(help="auto, tempo or otel.")] = None,
    deadline: Annotated[
        list[str] | None, typer.Option(help="CHECK=SECONDS, e.g. search=45 (repeatable).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the synthetic trace.")] = None,
    client_service: Annotated[
        str | None, typer.Option(help="service.name of the synthetic CLIENT span.")
    ] = None,
    server_service: Annotated[
        str | None, typer.Option(help="service.name of the synthetic SERVER span.")
    ] = None,
) -> None:
    """Send a synthetic trace and prove it reaches Tempo and Prometheus (and the apiserver's).

    Example: tracecheck smoke --output table --output junit:reports/smoke.xml
    """
    from tracecheck.output import parse_output, render
    from tracecheck.smoke.plan import smoke as run_smoke

    outputs = [parse_output(o) for o in (output or ["table"])]
    flags: dict[str, Any] = {
        "smoke.only": _csv(only),
        "smoke.skip": _csv(skip),
        "collector.protocol": protocol,
        "collector.endpoint": collector_endpoint,
        "collector.http_url": collector_http_url,
        "collector.health_url": collector_health_url,
        "collector.metrics_url": collector_metrics_url,
        "collector.insecure": insecure,
        "collector.ca_file": collector_ca_file,
        "collector.headers": _kv(collector_header, "--collector-header"),
        "tempo.url": tempo_url,
        "tempo.headers": _kv(tempo_header, "--tempo-header"),
        "prometheus.url": prometheus_url,
        "prometheus.headers": _kv(prometheus_header, "--prometheus-header"),
        "collector.tenant": tenant,
        "tempo.tenant": tenant,
        "prometheus.tenant": tenant,
        "apiserver.kubeconfig": kubeconfig,
        "apiserver.context": context,
        "smoke.client_service": client_service,
        "smoke.server_service": server_service,
        "smoke.span_metrics_naming": span_metrics_naming,
        "smoke.seed": seed,
    }
    for key, value in (_kv(deadline, "--deadline") or {}).items():
        flags[f"deadlines.{key}"] = value
    settings = _with_kubeconfig(_settings(config, flags))
    progress = _ProgressLine(
        sys.stderr.isatty() and not any(p is None and f != "table" for f, p in outputs)
    )
    try:
        report = run_smoke(settings, progress=progress)
    finally:
        progress.clear()
    for fmt, path in outputs:
        _write(render(report, fmt, color=_color() and path is None, width=_term_width()), path)
    raise _Exit(report.exit_code)


# ------------------------------------------------------------------------ stack (Kubernetes)

TargetArg = Annotated[
    str, typer.Argument(help="base, minikube, production, or a kustomization directory.")
]


@stack_app.command("render")
def stack_render(
    target: TargetArg = "base",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to FILE.")] = None,
) -> None:
    """Render the manifests with kustomize (multi-document YAML on stdout).

    Example: tracecheck stack render production -o pipeline.yaml
    """
    from tracecheck.stack.kustomize import render

    _write(render(target, env=os.environ), output)


@stack_app.command("validate")
def stack_validate(
    targets: Annotated[list[str] | None, typer.Argument(help="Targets (default: all).")] = None,
    k8s_version: Annotated[str, typer.Option(help="Kubernetes schema version.")] = "1.34",
) -> None:
    """Validate rendered manifests offline: Kubernetes schemas plus the pipeline's own checks.

    Exit 1 when any finding is an error. Example: tracecheck stack validate
    """
    from tracecheck.stack.kustomize import TARGETS, load_objects, render
    from tracecheck.stack.validate import validate

    errors = 0
    for target in targets or list(TARGETS):
        rendered = render(target, env=os.environ)
        findings = validate(rendered, k8s_version)
        errors += sum(f.level == "error" for f in findings)
        typer.echo(f"{target}: {len(load_objects(rendered))} objects, {len(findings)} findings")
        for f in findings:
            typer.echo(f"  {f}")
    raise _Exit(ExitCode.CHECK_FAILED if errors else ExitCode.OK)


@stack_app.command("apply")
def stack_apply(
    target: TargetArg = "base",
    kubeconfig: Annotated[str | None, typer.Option(help="kubeconfig (default: kubectl's).")] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Server-side dry run: admit, store nothing.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait for every rollout.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds per rollout.")] = 300.0,
) -> None:
    """Apply the manifests (server-side), wait for the rollouts, then suggest `tracecheck smoke`.

    Example: tracecheck stack apply minikube --context minikube
    """
    from tracecheck.stack.apply import apply
    from tracecheck.stack.kustomize import render

    result = apply(
        render(target, env=os.environ),
        kubeconfig=kubeconfig,
        context=context,
        wait=wait and not dry_run,
        dry_run="server" if dry_run else None,
        timeout=timeout,
        env=os.environ,
    )
    for line in result.applied:
        typer.echo(line)
    for r in result.rollouts:
        typer.echo(
            f"rollout {r.kind}/{r.name}: {'ok' if r.ok else 'NOT READY'} {r.detail}".rstrip()
        )
    for name in result.created_secrets:
        typer.echo(f"created secret {name} (random value, not shown)")
    for name in result.missing_secrets:
        typer.echo(f"missing secret {name}: create it before the pods can start")
    if result.ok and not dry_run:
        typer.echo(f"next: {result.next_step}")
    raise _Exit(ExitCode.OK if result.ok else ExitCode.CHECK_FAILED)


# --------------------------------------------------------------------------------- stack local

StateOpt = Annotated[
    Path | None,
    typer.Option(
        help="State directory (default: TRACECHECK_STATE_DIR or ~/.local/state/tracecheck/local)."
    ),
]


def _local(state_dir: Path | None, **kw: Any) -> Any:
    from tracecheck.stack import local as localstack

    def progress(msg: str) -> None:
        typer.echo(msg, err=True)

    return localstack.LocalStack(
        repo=localstack.find_repo_root(),
        state_dir=state_dir or localstack.default_state_dir(os.environ),
        cache_dir=localstack.default_cache_dir(os.environ),
        progress=progress,
        **kw,
    )


@local_app.command("up")
def local_up(
    state_dir: StateOpt = None,
    prometheus: Annotated[
        str, typer.Option(help="go (3.8 built from Go modules) or debian (2.42).")
    ] = "go",
    sampling_rate: Annotated[
        int | None, typer.Option(help="apiserver samplingRatePerMillion (default 250000).")
    ] = None,
) -> None:
    """Build what is missing, start the local pipeline in order, print where it listens.

    Example: tracecheck stack local up && tracecheck smoke
    """
    status = _local(state_dir, prometheus=prometheus, sampling_rate=sampling_rate).up()
    typer.echo(status.render())


@local_app.command("down")
def local_down(state_dir: StateOpt = None) -> None:
    """Stop everything `up` started. Example: tracecheck stack local down"""
    stopped = _local(state_dir).down()
    typer.echo("stopped: " + ", ".join(stopped) if stopped else "nothing was running")


@local_app.command("status")
def local_status(
    state_dir: StateOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable status.")] = False,
) -> None:
    """Each component's version, address, pid and readiness.

    Example: tracecheck stack local status --json
    """
    import json

    status = _local(state_dir).status()
    typer.echo(json.dumps(status.to_json(), indent=2) if json_ else status.render())


@local_app.command("env")
def local_env(state_dir: StateOpt = None) -> None:
    """Print the exports a shell needs. Example: eval "$(tracecheck stack local env)" """
    import shlex

    for key, value in _local(state_dir).env().items():
        typer.echo(f"export {key}={shlex.quote(value)}")


# ---------------------------------------------------------------------- shared query options

TempoUrlOpt = Annotated[str | None, typer.Option(help="Tempo HTTP API base URL.")]
PromUrlOpt = Annotated[str | None, typer.Option(help="Prometheus base URL.")]
TenantOpt = Annotated[str | None, typer.Option(help="X-Scope-OrgID for Tempo and Prometheus.")]
FormatOpt = Annotated[str, typer.Option("--output", "-o", help="table, json, csv or markdown.")]
SinceOpt = Annotated[str | None, typer.Option(help="Window ending now, e.g. 15m, 1h (default 1h).")]
StartOpt = Annotated[str | None, typer.Option(help="Window start: RFC 3339 or unix seconds.")]
EndOpt = Annotated[str | None, typer.Option(help="Window end: RFC 3339 or unix seconds.")]
MaxRowsOpt = Annotated[int, typer.Option(help="Rows printed at most (a note says what was cut).")]


def _query_settings(
    config: Path | None, tempo_url: str | None, prometheus_url: str | None, tenant: str | None
) -> Any:
    return _settings(
        config,
        {
            "tempo.url": tempo_url,
            "prometheus.url": prometheus_url,
            "tempo.tenant": tenant,
            "prometheus.tenant": tenant,
        },
    )


def _print_table(table: Any, fmt: str) -> None:
    """A query's table on stdout; with CSV the notes go to stderr (CSV has no room for them)."""
    from tracecheck.output import render_table

    text = render_table(table, fmt, width=_term_width())
    sys.stdout.write(text)
    if fmt == "csv":
        for note in table.notes:
            _err(note)


# ---------------------------------------------------------------------------------- apiserver


@apiserver_app.command("probe")
def apiserver_probe(
    config: ConfigOpt = None,
    requests: Annotated[int | None, typer.Option(help="Traced requests (default 4).")] = None,
    path: Annotated[
        list[str] | None, typer.Option(help="Path to GET with a traceparent (repeatable).")
    ] = None,
    allow_writes: Annotated[
        bool, typer.Option(help="Also create and delete a ConfigMap (needs --namespace).")
    ] = False,
    namespace: Annotated[str | None, typer.Option(help="Namespace for --allow-writes.")] = None,
    kubeconfig: Annotated[str | None, typer.Option(help="kubeconfig file.")] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
    tempo_url: TempoUrlOpt = None,
    prometheus_url: PromUrlOpt = None,
    tenant: TenantOpt = None,
    output: Annotated[
        list[str] | None,
        typer.Option("--output", "-o", help="table, json, junit, markdown[:PATH]."),
    ] = None,
) -> None:
    """Send traced requests to kube-apiserver and find its spans in Tempo and Prometheus.

    Says which mode ran: a credential in system:masters / system:monitoring has its traceparent
    honoured (parent/child); any other starts its own traces (found by Audit-Id or span link).
    Example: tracecheck apiserver probe --context viewer --requests 20
    """
    from tracecheck.output import parse_output, render
    from tracecheck.smoke.plan import probe

    outputs = [parse_output(o) for o in (output or ["table"])]
    flags = {
        "tempo.url": tempo_url,
        "prometheus.url": prometheus_url,
        "tempo.tenant": tenant,
        "prometheus.tenant": tenant,
        "apiserver.kubeconfig": kubeconfig,
        "apiserver.context": context,
    }
    progress = _ProgressLine(sys.stderr.isatty())
    try:
        report = probe(
            _with_kubeconfig(_settings(config, flags)),
            requests=requests,
            paths=path or (),
            allow_writes=allow_writes,
            namespace=namespace,
            progress=progress,
        )
    finally:
        progress.clear()
    for fmt, dest in outputs:
        _write(render(report, fmt, color=_color() and dest is None, width=_term_width()), dest)
    raise _Exit(report.exit_code)


@apiserver_app.command("check-config")
def apiserver_check_config(
    file: Annotated[Path, typer.Argument(help="A TracingConfiguration YAML file.")],
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    """Validate a kube-apiserver TracingConfiguration; every message names line and field.

    Exit 4 on any error, 0 with warnings only. Example:
    tracecheck apiserver check-config stack/apiserver/tracing-config.yaml
    """

    from tracecheck.output import render_findings
    from tracecheck.results import has_errors
    from tracecheck.stack.tracingconfig import check_tracing_config

    findings = check_tracing_config(file)
    fmt = "json" if output == "json" else "table"
    typer.echo(render_findings(findings, fmt, str(file), what="TracingConfiguration"))
    raise _Exit(ExitCode.CONFIG if has_errors(findings) else ExitCode.OK)


# -------------------------------------------------------------------------------------- query


@query_app.command("traceql")
def query_traceql(
    expr: Annotated[
        str, typer.Argument(help="TraceQL, e.g. '{ resource.service.name = \"apiserver\" }'.")
    ],
    config: ConfigOpt = None,
    since: SinceOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    limit: Annotated[int, typer.Option(help="Traces at most (search).")] = 20,
    spss: Annotated[int, typer.Option(help="Spans per span set (search).")] = 3,
    metrics: Annotated[bool, typer.Option(help="A TraceQL metrics query (| rate() ...).")] = False,
    instant: Annotated[bool, typer.Option(help="With --metrics: one value per series.")] = False,
    step: Annotated[str | None, typer.Option(help="With --metrics: step, e.g. 30s.")] = None,
    max_rows: MaxRowsOpt = 10_000,
    output: FormatOpt = "table",
    tempo_url: TempoUrlOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Run TraceQL against Tempo: a search (one row per matched span) or a metrics query.

    Example: tracecheck query traceql '{ span.http.target =~ "/api/v1/.*" }' --since 15m
    """
    from tracecheck.query.adhoc import run_traceql

    table = run_traceql(
        _query_settings(config, tempo_url, None, tenant),
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
    _print_table(table, output)


@query_app.command("promql")
def query_promql(
    expr: Annotated[str, typer.Argument(help="PromQL; checked locally before it is sent.")],
    config: ConfigOpt = None,
    at: Annotated[str | None, typer.Option(help="Evaluation time (instant) or range end.")] = None,
    range_: Annotated[
        str | None, typer.Option("--range", help="A range query over this duration, e.g. 1h.")
    ] = None,
    step: Annotated[str | None, typer.Option(help="Range step (kept under 11,000 points).")] = None,
    max_rows: MaxRowsOpt = 10_000,
    output: FormatOpt = "table",
    prometheus_url: PromUrlOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Run PromQL against Prometheus, instant (--at) or range (--range, --step).

    Example: tracecheck query promql 'sum by (span_name) (rate(traces_spanmetrics_calls_total[5m]))'
    """
    from tracecheck.query.adhoc import run_promql

    settings = _query_settings(config, None, prometheus_url, tenant)
    table = run_promql(settings, expr, at=at, range_=range_, step=step, max_rows=max_rows)
    _print_table(table, output)


@query_app.command("list")
def query_list(output: FormatOpt = "table") -> None:
    """List the saved queries (queries/*.traceql, *.promql) with their parameters.

    Example: tracecheck query list
    """
    from tracecheck.query.saved import list_queries

    _print_table(list_queries(), output)


@query_app.command("run")
def query_run(
    name: Annotated[str, typer.Argument(help="A saved query's name (tracecheck query list).")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE (repeatable).")
    ] = None,
    config: ConfigOpt = None,
    since: SinceOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    at: Annotated[str | None, typer.Option(help="PromQL evaluation time.")] = None,
    range_: Annotated[str | None, typer.Option("--range", help="PromQL range, e.g. 1h.")] = None,
    step: Annotated[str | None, typer.Option(help="Range or metrics step.")] = None,
    limit: Annotated[int | None, typer.Option(help="TraceQL: traces at most.")] = None,
    spss: Annotated[int | None, typer.Option(help="TraceQL: spans per span set.")] = None,
    max_rows: MaxRowsOpt = 10_000,
    output: FormatOpt = "table",
    tempo_url: TempoUrlOpt = None,
    prometheus_url: PromUrlOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Run a saved query with parameters.

    Example: tracecheck query run apiserver-slowest-requests --param min_duration=50ms
    """
    from tracecheck.query.saved import run_saved

    table = run_saved(
        _query_settings(config, tempo_url, prometheus_url, tenant),
        name,
        _kv(param, "--param") or {},
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
    _print_table(table, output)


# ------------------------------------------------------------------------------------- report


@report_app.command("apiserver")
def report_apiserver(
    config: ConfigOpt = None,
    since: SinceOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    service: Annotated[
        str, typer.Option(help="service.name of the apiserver's spans.")
    ] = "apiserver",
    limit: Annotated[int, typer.Option(help="Traces read from Tempo at most.")] = 1000,
    probe: Annotated[
        bool, typer.Option(help="Run tracecheck smoke first to measure every stage's delay.")
    ] = False,
    full: Annotated[bool, typer.Option(help="Every column, not the summary.")] = False,
    html: Annotated[str | None, typer.Option(help="Write a self-contained HTML report.")] = None,
    png: Annotated[str | None, typer.Option(help="Write the main chart as PNG.")] = None,
    output: FormatOpt = "table",
    tempo_url: TempoUrlOpt = None,
    prometheus_url: PromUrlOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Per-endpoint apiserver latency from traces, span-metrics and the apiserver's own metrics.

    Example: tracecheck report apiserver --since 1h --html report.html
    """
    from tracecheck.latency.charts import write_html, write_png
    from tracecheck.latency.report import apiserver_report

    settings = _query_settings(config, tempo_url, prometheus_url, tenant)
    smoke_report = None
    if probe:
        from tracecheck.smoke.plan import smoke as run_smoke

        smoke_report = run_smoke(_with_kubeconfig(settings))
    report = apiserver_report(
        settings,
        since=since,
        start=start,
        end=end,
        service=service,
        trace_limit=limit,
        smoke_report=smoke_report,
    )
    _print_table(report.table(full=full), output)
    if html:
        write_html(report, html)
        _err(f"wrote {html}")
    if png:
        write_png(report, png)
        _err(f"wrote {png}")


# --------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns (and exits with) a documented exit code."""
    # grpc logs failed TLS handshakes to stderr itself (a second line next to ours); set before
    # grpc is first imported, and only if the user did not choose a verbosity.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from typer import exceptions as tex
    from typer._click import exceptions as cex  # typer vendors click

    code: int
    try:
        app(args=argv, prog_name="tracecheck", standalone_mode=False)
        code = ExitCode.OK
    except _Exit as done:
        code = done.code
    except TracecheckError as exc:
        _err(f"error: {exc}")
        code = exc.exit_code
    except (tex.Abort, KeyboardInterrupt):
        _err("interrupted")
        code = ExitCode.INTERRUPTED
    except tex.Exit as exc:
        code = exc.exit_code
    except cex.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "", err=False)
        code = ExitCode.OK
    except tex.TyperException as exc:
        _err(f"usage: {exc.format_message()} (see --help)")
        code = ExitCode.USAGE
    except Exception as exc:  # a bug: one line, the traceback only on request
        if os.environ.get("TRACECHECK_DEBUG"):
            raise
        _err(f"internal error: {type(exc).__name__}: {exc} (TRACECHECK_DEBUG=1 shows a traceback)")
        code = ExitCode.INTERNAL
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    main()
