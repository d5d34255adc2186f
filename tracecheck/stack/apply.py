"""``tracecheck stack apply``: the rendered manifests sent to a cluster.

:func:`apply` runs ``kubectl apply --server-side`` (optionally as a server-side dry run),
creates the generated Secrets the manifests expect (:data:`GENERATED_SECRETS`), and waits for
the rollouts. kubectl's failures become one-line errors naming the context.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tracecheck.errors import (
    AuthError,
    BackendError,
    ConfigError,
    Unreachable,
    UsageError,
    excerpt,
    one_line,
)
from tracecheck.stack.kustomize import EXTERNAL_SECRETS, load_objects, pod_view
from tracecheck.stack.tools import kubectl_command

__all__ = ["GENERATED_SECRETS", "ApplyResult", "RolloutStatus", "apply"]


# Secrets that ``apply`` generates when missing: name -> key -> generator. Grafana's admin
# password is created at deploy time so that it is never a literal in a manifest.
GENERATED_SECRETS: dict[str, dict[str, Callable[[], str]]] = {
    "grafana-admin": {
        "admin-user": lambda: "admin",
        "admin-password": lambda: secrets.token_urlsafe(24),
    },
}


_ROLLOUT_KINDS = ("Deployment", "DaemonSet", "StatefulSet")


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """The outcome of ``kubectl rollout status`` for one workload."""

    kind: str
    namespace: str
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What :func:`apply` did. ``applied`` holds kubectl's lines (``deployment.apps/tempo
    serverside-applied``); ``created_secrets`` the generated Secrets (names only, never values);
    ``missing_secrets`` external Secrets that must be created by hand."""

    applied: tuple[str, ...]
    dry_run: str | None
    rollouts: tuple[RolloutStatus, ...] = ()
    created_secrets: tuple[str, ...] = ()
    missing_secrets: tuple[str, ...] = ()
    next_step: str = "tracecheck smoke"

    @property
    def ok(self) -> bool:
        """True when every awaited rollout completed and no required Secret is missing."""
        return all(r.ok for r in self.rollouts) and not self.missing_secrets


def _run(
    command: Sequence[str], stdin: str | None, timeout: float, where: str
) -> subprocess.CompletedProcess[str]:
    """Run kubectl; ``where`` (the context or kubeconfig) is the address in its errors."""
    try:
        return subprocess.run(
            list(command), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except OSError as exc:
        raise ConfigError("kubectl", command[0], f"cannot run: {exc.strerror or exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise Unreachable("kubectl", where, f"no answer within {timeout:.0f} s") from exc


def _kubectl_error(where: str, stderr: str) -> BackendError:
    text = excerpt(stderr, 400)
    lowered = text.lower()
    if any(
        s in lowered
        for s in ("unable to connect", "connection refused", "no such host", "i/o timeout")
    ):
        return Unreachable("kubectl", where, text)
    if any(s in lowered for s in ("forbidden", "unauthorized", "you must be logged in")):
        return AuthError("kubectl", where, text)
    return BackendError("kubectl", where, text)


def apply(
    rendered: str,
    *,
    kubeconfig: str | None,
    context: str | None,
    wait: bool = True,
    dry_run: str | None = None,
    timeout: float = 300.0,
    kubectl: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ApplyResult:
    """Apply ``rendered`` with ``kubectl apply --server-side`` (field manager ``tracecheck``).

    ``dry_run="server"`` asks the apiserver to admit and default every object without storing
    it. Otherwise, after applying, Secrets the manifests expect and :data:`GENERATED_SECRETS`
    knows (Grafana's admin password) are created with random values when missing, and with
    ``wait`` every Deployment, DaemonSet and StatefulSet is awaited (``kubectl rollout status``,
    ``timeout`` seconds each). Then run ``tracecheck smoke``. ``kubectl`` is the binary
    (default: :func:`~tracecheck.stack.tools.kubectl_command` over ``PATH`` in ``env``).

    Raises :class:`UsageError` for a bad ``dry_run``, :class:`Unreachable` / :class:`AuthError` /
    :class:`BackendError` when kubectl or the apiserver refuses.
    """
    if dry_run not in (None, "server"):
        raise UsageError(
            "kubectl", "--dry-run", f"only 'server' with server-side apply, not {dry_run!r}"
        )
    objects = load_objects(rendered)
    base = [kubectl or kubectl_command(env)]
    if kubeconfig:
        base += ["--kubeconfig", kubeconfig]
    if context:
        base += ["--context", context]
    where = f"context {context}" if context else (kubeconfig or "current context")
    command = [*base, "apply", "--server-side", "--field-manager=tracecheck", "-f", "-"]
    if dry_run:
        command.append(f"--dry-run={dry_run}")
        _require_namespaces(base, objects, where, timeout)
    proc = _run(command, rendered, timeout, where)
    if proc.returncode != 0:
        raise _kubectl_error(where, proc.stderr or proc.stdout)
    applied = tuple(line.strip() for line in proc.stdout.splitlines() if line.strip())
    if dry_run:
        return ApplyResult(applied=applied, dry_run=dry_run)
    created, missing = _ensure_secrets(base, objects, where, timeout)
    rollouts: list[RolloutStatus] = []
    if wait:
        for obj in objects:
            if obj.get("kind") in _ROLLOUT_KINDS:
                rollouts.append(_rollout(base, obj, timeout, where))
    return ApplyResult(
        applied=applied,
        dry_run=None,
        rollouts=tuple(rollouts),
        created_secrets=tuple(created),
        missing_secrets=tuple(missing),
    )


def _require_namespaces(
    base: list[str], objects: list[dict[str, Any]], where: str, timeout: float
) -> None:
    """A server-side dry run stores nothing, so objects in a namespace that the same apply would
    create are refused one by one ("namespaces ... not found"): say so once, up front."""
    created = [o["metadata"]["name"] for o in objects if o.get("kind") == "Namespace"]
    for name in created:
        proc = _run(
            [*base, "get", "namespace", name, "-o", "name", "--ignore-not-found"],
            None,
            timeout,
            where,
        )
        if proc.returncode != 0:
            raise _kubectl_error(where, proc.stderr)
        if not proc.stdout.strip():
            raise ConfigError(
                "kubectl",
                where,
                f"namespace {name!r} does not exist and a server-side dry run cannot create it: "
                f"create it first (kubectl create namespace {name}) or apply without --dry-run",
            )


def _external_secrets(objects: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    wanted: list[tuple[str, str]] = []
    for obj in objects:
        view = pod_view(obj)
        if view is None:
            continue
        for name in view.annotations.get(EXTERNAL_SECRETS, "").split(","):
            if name.strip() and (view.namespace, name.strip()) not in wanted:
                wanted.append((view.namespace, name.strip()))
    return wanted


def _ensure_secrets(
    base: list[str], objects: list[dict[str, Any]], where: str, timeout: float
) -> tuple[list[str], list[str]]:
    import yaml

    created: list[str] = []
    missing: list[str] = []
    for namespace, name in _external_secrets(objects):
        proc = _run(
            [*base, "-n", namespace, "get", "secret", name, "-o", "name", "--ignore-not-found"],
            None,
            timeout,
            where,
        )
        if proc.returncode != 0:
            raise _kubectl_error(where, proc.stderr)
        if proc.stdout.strip():
            continue
        generators = GENERATED_SECRETS.get(name)
        if generators is None:
            missing.append(f"{namespace}/{name}")
            continue
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/part-of": "tracecheck"},
                "annotations": {"tracecheck.io/generated-by": "tracecheck stack apply"},
            },
            "type": "Opaque",
            "stringData": {key: gen() for key, gen in generators.items()},
        }
        # Values travel on stdin only: never in argv (visible in /proc) nor in messages.
        proc = _run([*base, "create", "-f", "-"], yaml.safe_dump(secret), timeout, where)
        if proc.returncode != 0:
            raise _kubectl_error(where, f"creating Secret {namespace}/{name} failed")
        created.append(f"{namespace}/{name}")
    return created, missing


def _rollout(base: list[str], obj: dict[str, Any], timeout: float, where: str) -> RolloutStatus:
    kind = str(obj["kind"])
    meta = obj.get("metadata") or {}
    ns, name = str(meta.get("namespace") or "default"), str(meta.get("name"))
    proc = _run(
        [
            *base,
            "-n",
            ns,
            "rollout",
            "status",
            f"{kind.lower()}/{name}",
            f"--timeout={timeout:.0f}s",
        ],
        None,
        timeout + 30,
        where,
    )
    if proc.returncode == 0:
        lines = proc.stdout.strip().splitlines()  # progress lines, then the outcome
        return RolloutStatus(kind, ns, name, True, excerpt(lines[-1] if lines else "", 200))
    reason = _why_not_ready(base, kind, ns, name, timeout, where)
    said = reason or excerpt(proc.stderr or proc.stdout, 200)
    return RolloutStatus(kind, ns, name, False, one_line(said, 400))


def _why_not_ready(
    base: list[str], kind: str, namespace: str, name: str, timeout: float, where: str
) -> str | None:
    """The reason the cluster gives for a rollout that did not finish, from its pods: the
    scheduler's (condition PodScheduled=False: ``0/2 nodes are available: 2 Insufficient cpu``,
    an unbound claim), the kubelet's (a container waiting: ``ImagePullBackOff``) or, without
    pods, the workload controller's (condition ``ReplicaFailure``: a quota, an admission
    refusal). None when the cluster names none or cannot be asked."""
    import json

    def get(*args: str) -> dict[str, Any] | None:
        proc = _run([*base, "-n", namespace, "get", *args, "-o", "json"], None, timeout, where)
        if proc.returncode != 0:
            return None
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    workload = get(f"{kind.lower()}/{name}")
    if workload is None:
        return None
    labels = ((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    pods = get("pods", "-l", ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    for pod in (pods or {}).get("items", []) if labels else []:
        pod_name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                why = cond.get("message") or cond.get("reason") or "not scheduled"
                return f"pod {pod_name} not scheduled: {why}"
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
                detail = f": {waiting['message']}" if waiting.get("message") else ""
                return (
                    f"pod {pod_name} container {container.get('name')} {waiting['reason']}{detail}"
                )
    for cond in (workload.get("status") or {}).get("conditions") or []:
        failed = cond.get("type") == "ReplicaFailure" and cond.get("status") == "True"
        stalled = cond.get("reason") == "ProgressDeadlineExceeded"
        if failed or stalled:
            return f"{cond.get('reason')}: {cond.get('message') or cond.get('type')}"
    return None
