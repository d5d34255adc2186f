"""Every rendered object is accepted by a REAL kube-apiserver (the local pipeline's v1.34):
server-side apply as a dry run, then for real into a scratch namespace, read back, cleaned up.

These tests prove admission (schemas, defaulting, validation, RBAC escalation checks, Pod
Security labels) and storage; they apply without waiting for rollouts. Cluster-scoped objects
get a suffix so that a run never touches another's; the scratch namespace and its objects are
deleted and waited for, which the local cluster's kube-controller-manager completes (namespace
controller, garbage collector, volume protection).
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube import Kubectl

from tracecheck.errors import AuthError, Unreachable, UsageError
from tracecheck.stack.apply import apply
from tracecheck.stack.kustomize import CLUSTER_SCOPED, TARGETS, load_objects, render, retarget
from tracecheck.stack.local import LocalStack
from tracecheck.stack.local.paths import find_repo_root


@pytest.fixture(scope="module")
def cluster(local_pipeline: LocalStack) -> Kubectl:
    """kubectl against the local pipeline."""
    return Kubectl.of(local_pipeline)


def cleanup(cluster: Kubectl, text: str, namespace: str) -> None:
    kubectl, kubeconfig = cluster.binary, cluster.kubeconfig
    base = [kubectl, "--kubeconfig", kubeconfig, "--context", "privileged"]
    for args, stdin in (
        (["delete", "--ignore-not-found", "-f", "-"], text),
        (["delete", "namespace", namespace, "--ignore-not-found"], None),
    ):
        subprocess.run(
            [*base, *args, "--wait=true", "--timeout=120s"],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.fixture
def scratch(cluster: Kubectl) -> Iterator[dict[str, str]]:
    """A scratch namespace name; whatever was applied there (recorded in ``["text"]``) and the
    namespace itself are removed afterwards."""
    ns = f"tc-manifests-{secrets.token_hex(3)}"
    state = {"namespace": ns, "text": ""}
    try:
        yield state
    finally:
        cleanup(cluster, state["text"] or "", ns)
        gone = subprocess.run(
            [
                cluster.binary,
                "--kubeconfig",
                cluster.kubeconfig,
                "--context",
                "privileged",
                "get",
                "namespace",
                ns,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        # Only a NotFound from the apiserver proves the namespace is gone: an unreachable
        # apiserver fails the same command, and must fail this check too.
        assert gone.returncode != 0 and "(NotFound)" in gone.stderr, (
            f"scratch namespace {ns} was not removed: {gone.stderr or gone.stdout}"
        )
        left = subprocess.run(
            [
                cluster.binary,
                "--kubeconfig",
                cluster.kubeconfig,
                "--context",
                "privileged",
                "get",
                "pv,storageclass,clusterrole,clusterrolebinding",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert left.returncode == 0, left.stderr
        assert ns not in left.stdout, left.stdout
        orphans = subprocess.run(
            [
                cluster.binary,
                "--kubeconfig",
                cluster.kubeconfig,
                "--context",
                "privileged",
                "-n",
                ns,
                "get",
                "deploy,ds,svc,cm,secret,sa,pvc,netpol,role,rolebinding,hpa,pdb,cronjob",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert orphans.returncode == 0, orphans.stderr
        assert orphans.stdout.strip() == "", orphans.stdout


def prepare(target: str, namespace: str) -> tuple[str, list[dict[str, Any]]]:
    text = retarget(render(target, env=os.environ), namespace, suffix=f"-{namespace}")
    return text, load_objects(text)


def only(objs: list[dict[str, Any]], *kinds: str) -> str:
    return yaml.safe_dump_all([o for o in objs if o["kind"] in kinds])


@pytest.mark.parametrize("target", TARGETS)
def test_real_apiserver_accepts_every_object_dry_run_then_applied(
    cluster: Kubectl, scratch: dict[str, str], target: str
) -> None:
    kubectl, kubeconfig = cluster.binary, cluster.kubeconfig
    ns = scratch["namespace"]
    text, objs = prepare(target, ns)
    scratch["text"] = text
    conn: dict[str, Any] = {"kubeconfig": kubeconfig, "context": "privileged", "kubectl": kubectl}

    # Namespaced objects need their namespace to exist even for a dry run (NamespaceLifecycle).
    apply(only(objs, "Namespace"), wait=False, **conn)
    dry = apply(text, dry_run="server", **conn)
    assert dry.dry_run == "server"
    assert len(dry.applied) == len(objs)
    assert all(line.endswith("serverside-applied (server dry run)") for line in dry.applied)
    stored = cluster.json("-n", ns, "get", "deployments,services,configmaps,cronjobs")
    # A dry run stores nothing (kube-root-ca.crt is kube-controller-manager's, in every namespace).
    assert [i for i in stored["items"] if i["metadata"]["name"] != "kube-root-ca.crt"] == []

    result = apply(text, wait=False, **conn)
    assert result.dry_run is None
    assert len(result.applied) == len(objs)
    assert all(line.endswith(" serverside-applied") for line in result.applied)
    assert result.created_secrets == (f"{ns}/grafana-admin",)
    assert result.missing_secrets == ()
    assert result.ok

    # Read back: every object exists, as rendered.
    for obj in objs:
        kind, name = obj["kind"], obj["metadata"]["name"]
        args = ["get", kind.lower(), name]
        if kind not in CLUSTER_SCOPED:
            args = ["-n", ns, *args]
        live = cluster.json(*args)
        assert live["metadata"]["name"] == name
        assert live["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tracecheck"
        if kind in ("Deployment", "DaemonSet"):
            want = obj["spec"]["template"]["spec"]
            got = live["spec"]["template"]["spec"]
            assert got["securityContext"] == want["securityContext"]
            assert (
                got["containers"][0]["securityContext"] == want["containers"][0]["securityContext"]
            )
            assert got["automountServiceAccountToken"] is False
    live_ns = cluster.json("get", "namespace", ns)
    assert live_ns["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == "restricted"

    # The generated admin password: random, stored, never echoed.
    secret = cluster.json("-n", ns, "get", "secret", "grafana-admin")
    password = base64.b64decode(secret["data"]["admin-password"]).decode()
    assert base64.b64decode(secret["data"]["admin-user"]).decode() == "admin"
    assert len(password) >= 32
    assert password not in repr(result) and password not in "\n".join(result.applied)

    # Idempotent: a second apply changes nothing and keeps the existing Secret.
    again = apply(text, wait=False, **conn)
    assert again.created_secrets == ()
    assert len(again.applied) == len(objs)
    secret_again = cluster.json("-n", ns, "get", "secret", "grafana-admin")
    assert secret_again["data"]["admin-password"] == secret["data"]["admin-password"]


def test_real_apiserver_accepts_the_component_variants(
    cluster: Kubectl, scratch: dict[str, str], tmp_path: Path
) -> None:
    kubectl, kubeconfig = cluster.binary, cluster.kubeconfig
    ns = scratch["namespace"]
    stack = find_repo_root(Path(__file__).parent) / "stack"
    (tmp_path / "v").mkdir()
    rel_stack = os.path.relpath(stack, tmp_path / "v")
    (tmp_path / "v" / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [f"{rel_stack}/overlays/production"],
                "components": [
                    f"{rel_stack}/components/collector-spanmetrics",
                    f"{rel_stack}/components/smoke-monitoring-cert",
                    f"{rel_stack}/components/watch",
                    f"{rel_stack}/components/load",
                ],
            }
        )
    )
    text, objs = prepare(str(tmp_path / "v"), ns)
    scratch["text"] = text
    conn: dict[str, Any] = {"kubeconfig": kubeconfig, "context": "privileged", "kubectl": kubectl}
    apply(only(objs, "Namespace"), wait=False, **conn)
    result = apply(text, wait=False, **conn)
    assert len(result.applied) == len(objs)
    # The monitoring-cert Secret cannot be generated: the operator must create it.
    assert result.missing_secrets == (f"{ns}/tracecheck-monitoring-kubeconfig",)
    assert not result.ok
    hpa = cluster.json("-n", ns, "get", "horizontalpodautoscaler", "otel-collector")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 1)
    # components/watch: the watcher, and Prometheus mounting its rules and scrape job.
    watch = cluster.json("-n", ns, "get", "deployment", "tracecheck-watch")
    assert watch["spec"]["template"]["spec"]["containers"][0]["args"][0] == "watch"
    prom = cluster.json("-n", ns, "get", "deployment", "prometheus")
    mounts = {
        m["mountPath"] for m in prom["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert {"/etc/prometheus-rules", "/etc/prometheus-targets"} <= mounts
    # The load component's Indexed Job is admitted as written.
    job = cluster.json("-n", ns, "get", "job", "tracecheck-load")
    assert job["spec"]["completionMode"] == "Indexed"


def test_rollout_wait_reports_a_deployment_that_never_becomes_ready(
    cluster: Kubectl, scratch: dict[str, str]
) -> None:
    kubectl, kubeconfig = cluster.binary, cluster.kubeconfig
    ns = scratch["namespace"]
    _, objs = prepare("base", ns)
    keep = [
        o
        for o in objs
        if o["kind"] == "Namespace"
        or (o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "tempo")
        or (o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("tempo-config"))
        or (o["kind"] == "Deployment" and o["metadata"]["name"] == "tempo")
    ]
    # More CPU than any of the local cluster's nodes has: the pod is never scheduled.
    tempo = next(o for o in keep if o["kind"] == "Deployment")
    resources = tempo["spec"]["template"]["spec"]["containers"][0]["resources"]
    resources["requests"]["cpu"] = resources["limits"]["cpu"] = "64"
    text = yaml.safe_dump_all(keep)
    scratch["text"] = text
    result = apply(
        text, kubeconfig=kubeconfig, context="privileged", kubectl=kubectl, wait=True, timeout=3
    )
    # The rollout cannot finish, and says so.
    (rollout,) = result.rollouts
    assert (rollout.kind, rollout.namespace, rollout.name, rollout.ok) == (
        "Deployment",
        ns,
        "tempo",
        False,
    )
    # The reason is the scheduler's, from the pod (not kubectl's "timed out").
    assert rollout.detail.startswith("pod tempo-"), rollout.detail
    assert "Insufficient cpu" in rollout.detail, rollout.detail
    assert not result.ok
    assert result.next_step == "tracecheck smoke"


def test_apply_as_a_read_only_user_is_an_auth_error(
    cluster: Kubectl, scratch: dict[str, str]
) -> None:
    kubectl, kubeconfig = cluster.binary, cluster.kubeconfig
    ns = scratch["namespace"]
    _, objs = prepare("base", ns)
    with pytest.raises(AuthError) as err:
        apply(
            only(objs, "ServiceAccount"), kubeconfig=kubeconfig, context="viewer", kubectl=kubectl
        )
    message = str(err.value)
    assert message.startswith("kubectl at context viewer: ")
    assert "forbidden" in message.lower()
    assert "\n" not in message


def test_apply_to_a_closed_port_is_unreachable(
    cluster: Kubectl, tmp_path: Path, free_port: int
) -> None:
    kubectl, kubeconfig = cluster.binary, cluster.kubeconfig
    port = free_port
    config = yaml.safe_load(Path(kubeconfig).read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    broken = tmp_path / "kubeconfig"
    broken.write_text(yaml.safe_dump(config))
    broken.chmod(0o600)
    with pytest.raises(Unreachable) as err:
        apply(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: never}\n",
            kubeconfig=str(broken),
            context="privileged",
            kubectl=kubectl,
        )
    assert f"127.0.0.1:{port}" in str(err.value)
    # Credentials from the kubeconfig never reach the message.
    for entry in config["users"]:
        for value in entry["user"].values():
            assert str(value)[:40] not in str(err.value)


def test_apply_refuses_a_client_side_dry_run() -> None:
    with pytest.raises(UsageError) as err:
        apply("", kubeconfig=None, context=None, dry_run="client", kubectl="kubectl")
    assert "only 'server'" in str(err.value)
