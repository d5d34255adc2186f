"""``tracecheck stack render|validate|apply`` and ``tracecheck stack local up|down|status|env``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from tracecheck.cli.shared import APISERVER, Done, Group, argument, write
from tracecheck.errors import ExitCode

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.stack.local import LocalStack

__all__ = ["group", "local"]


@click.group(
    "stack",
    cls=Group,
    help="Deploy the pipeline: Kubernetes manifests and the local pipeline.",
    no_args_is_help=True,
)
def group() -> None:
    pass


_TARGET_HELP = "base, minikube, production, or a kustomization directory."


@group.command("render")
@argument("target", _TARGET_HELP, default="base", required=False)
@click.option("--output", "-o", default=None, metavar="<str>", help="Write to FILE.")
def stack_render(target: str, output: str | None) -> None:
    """Render the manifests with kustomize (multi-document YAML on stdout).

    Example: tracecheck stack render production -o pipeline.yaml
    """
    from tracecheck.stack.kustomize import render

    write(render(target, env=os.environ), output)


@group.command("validate")
@argument("targets", "Targets (default: all).", nargs=-1, required=False)
@click.option(
    "--k8s-version",
    default="1.34",
    show_default=True,
    metavar="<str>",
    help="Kubernetes schema version.",
)
def stack_validate(targets: tuple[str, ...], k8s_version: str) -> None:
    """Validate rendered manifests offline: Kubernetes schemas plus the pipeline's own checks.

    Exit 1 when any finding is an error. Example: tracecheck stack validate
    """
    from tracecheck.results import has_errors
    from tracecheck.stack.kustomize import TARGETS, load_objects, render
    from tracecheck.stack.validate import validate

    failed = False
    for target in targets or TARGETS:
        rendered = render(target, env=os.environ)
        findings = validate(rendered, k8s_version)
        failed |= has_errors(findings)
        click.echo(f"{target}: {len(load_objects(rendered))} objects, {len(findings)} findings")
        for f in findings:
            click.echo(f"  {f}")
    raise Done(ExitCode.CHECK_FAILED if failed else ExitCode.OK)


@group.command("apply")
@argument("target", _TARGET_HELP, default="base", required=False)
@APISERVER[0].option(help="kubeconfig (default: kubectl's).")
@APISERVER[1].option()
@click.option("--dry-run", is_flag=True, help="Server-side dry run: admit, store nothing.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for every rollout.")
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    metavar="<float>",
    help="Seconds per rollout.",
)
def stack_apply(
    target: str,
    kubeconfig: str | None,
    context: str | None,
    dry_run: bool,
    wait: bool,
    timeout: float,
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
        click.echo(line)
    for r in result.rollouts:
        state = "ok" if r.ok else "NOT READY:"
        click.echo(f"rollout {r.kind} {r.namespace}/{r.name}: {state} {r.detail}".rstrip())
    for name in result.created_secrets:
        click.echo(f"created secret {name} (random value, not shown)")
    for name in result.missing_secrets:
        click.echo(f"missing secret {name}: create it before the pods can start")
    if result.ok and not dry_run:
        click.echo(f"next: {result.next_step}")
    raise Done(ExitCode.OK if result.ok else ExitCode.CHECK_FAILED)


# -- the local pipeline ---------------------------------------------------------------------------


@group.group(
    "local",
    cls=Group,
    help="The local pipeline from real parts (etcd, kube-apiserver, collector, Prometheus, "
    "Tempo stand-in).",
    no_args_is_help=True,
)
def local() -> None:
    pass


_state_dir = click.option(
    "--state-dir",
    type=click.Path(),
    default=None,
    metavar="<path>",
    help="State directory (default: TRACECHECK_STATE_DIR or ~/.local/state/tracecheck/local).",
)


def _local(state_dir: str | None, **kw: Any) -> LocalStack:
    from pathlib import Path

    from tracecheck.config import default_cache_dir, default_state_dir
    from tracecheck.stack.local import LocalStack, find_repo_root

    def progress(msg: str) -> None:
        click.echo(msg, err=True)

    return LocalStack(
        repo=find_repo_root(),
        state_dir=Path(state_dir) if state_dir else default_state_dir(os.environ),
        cache_dir=default_cache_dir(os.environ),
        progress=progress,
        **kw,
    )


@local.command("up")
@_state_dir
@click.option(
    "--prometheus",
    default="go",
    show_default=True,
    metavar="<str>",
    help="go (3.8 built from Go modules) or debian (2.42).",
)
@click.option(
    "--sampling-rate",
    type=int,
    default=None,
    metavar="<int>",
    help="apiserver samplingRatePerMillion (default 250000).",
)
def local_up(state_dir: str | None, prometheus: str, sampling_rate: int | None) -> None:
    """Build what is missing, start the local pipeline in order, print where it listens.

    Example: tracecheck stack local up && tracecheck smoke
    """
    status = _local(state_dir, prometheus=prometheus, sampling_rate=sampling_rate).up()
    click.echo(status.render())


@local.command("down")
@_state_dir
def local_down(state_dir: str | None) -> None:
    """Stop everything `up` started. Example: tracecheck stack local down"""
    stopped = _local(state_dir).down()
    click.echo("stopped: " + ", ".join(stopped) if stopped else "nothing was running")


@local.command("status")
@_state_dir
@click.option("--json", "json_", is_flag=True, help="Machine-readable status.")
def local_status(state_dir: str | None, json_: bool) -> None:
    """Each component's version, address, pid and readiness.

    Example: tracecheck stack local status --json
    """
    import json

    status = _local(state_dir).status()
    click.echo(json.dumps(status.to_json(), indent=2) if json_ else status.render())


@local.command("env")
@_state_dir
def local_env(state_dir: str | None) -> None:
    """Print the exports a shell needs. Example: eval "$(tracecheck stack local env)" """
    import shlex

    for key, value in _local(state_dir).env().items():
        click.echo(f"export {key}={shlex.quote(value)}")
