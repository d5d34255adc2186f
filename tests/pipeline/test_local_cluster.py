"""The local cluster (issue 12): kube-controller-manager, kube-scheduler and kwok's simulated
nodes on the real local kube-apiserver, driven with the real kubectl built from the same
Kubernetes version.

A Deployment goes through the whole control plane: the deployment and replicaset controllers
create Pods, the scheduler binds them to a simulated Node against its capacity, kwok reports
them Running and Ready, and the Deployment becomes Available. Deleting its namespace completes
through the namespace controller and the garbage collector, with no finalizer cleared by hand.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from kube import Kubectl

from tracecheck.polling import Probe, SystemClock, poll_until
from tracecheck.stack.local import LocalStack
from tracecheck.stack.local.cluster import NODE_CAPACITY, NODES

NODE_NAMES = {name for name, _ in NODES}


@pytest.fixture(scope="module")
def kubectl(local_pipeline: LocalStack) -> Kubectl:
    return Kubectl.of(local_pipeline)


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A scratch namespace, deleted afterwards (the namespace controller finishes the job)."""
    name = f"tc-cluster-{secrets.token_hex(3)}"
    kubectl.run("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl.run("delete", "namespace", name, "--ignore-not-found", "--wait=false")


def test_simulated_nodes_are_ready_with_their_capacity(kubectl: Kubectl) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl.json("get", "nodes")["items"]}
    assert set(nodes) >= NODE_NAMES
    for name in NODE_NAMES:
        status = nodes[name]["status"]
        ready = {c["type"]: c["status"] for c in status["conditions"]}
        assert ready["Ready"] == "True", name
        assert status["allocatable"] == status["capacity"] == dict(NODE_CAPACITY)
        assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
        assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10247
        assert nodes[name]["metadata"]["labels"]["kubernetes.io/hostname"] == name
    assert "node-role.kubernetes.io/control-plane" in nodes["minikube"]["metadata"]["labels"]
    # kwok heartbeats with a Lease per Node, as a kubelet does.
    leases = kubectl.json("get", "leases", "-n", "kube-node-lease")["items"]
    assert {lease["metadata"]["name"] for lease in leases} >= NODE_NAMES


@pytest.mark.parametrize(
    ("component", "port"), [("kube-controller-manager", 10257), ("kube-scheduler", 10259)]
)
def test_controller_manager_and_scheduler_answer_healthz_over_verified_tls(
    local_pipeline: LocalStack, component: str, port: int
) -> None:
    tls = ssl.create_default_context(cafile=str(local_pipeline.pki.ca_cert))
    resp = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=tls, trust_env=False)
    assert (resp.status_code, resp.text) == (200, "ok")
    # Anything beyond the always-allowed health paths needs credentials (delegated authn/z).
    metrics = httpx.get(f"https://127.0.0.1:{port}/metrics", verify=tls, trust_env=False)
    assert metrics.status_code == 403, component


def _view_resources(kubectl: Kubectl) -> tuple[set[str], set[str]]:
    """The resources ClusterRole ``view`` grants, and the managers of its fields."""
    view = kubectl.json("get", "clusterrole", "view", "--show-managed-fields")
    assert view["aggregationRule"]["clusterRoleSelectors"]
    resources = {r for rule in view.get("rules") or [] for r in rule.get("resources", [])}
    return resources, {f["manager"] for f in view["metadata"]["managedFields"]}


def _wait_view(kubectl: Kubectl, resource: str, present: bool) -> set[str]:
    def probe() -> Probe[set[str]]:
        resources, managers = _view_resources(kubectl)
        return Probe((resource in resources) == present, managers, f"view grants {resources}")

    outcome = poll_until(probe, 30.0, SystemClock(), initial=0.2, cap=1.0)
    assert outcome.ok, (
        f"{resource} {'never appeared in' if present else 'stayed in'} view: {outcome.seen}"
    )
    assert outcome.value is not None
    return outcome.value


def test_controllers_aggregate_the_view_role(kubectl: Kubectl) -> None:
    """Filled by kube-controller-manager's clusterrole-aggregation controller, not by `up`.

    A ClusterRole labelled aggregate-to-view, with a resource no other role names, makes the
    controller rewrite ``view`` now, whatever an older state directory left in it; deleting it
    makes the controller take the rule out again.
    """
    resources, _ = _view_resources(kubectl)
    assert {"pods", "deployments", "configmaps"} <= resources
    assert "secrets" not in resources
    name = f"tc-aggregate-{secrets.token_hex(3)}"
    resource = f"probes{name.rsplit('-', 1)[1]}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"},
        },
        "rules": [{"apiGroups": ["tracecheck.invalid"], "resources": [resource], "verbs": ["get"]}],
    }
    kubectl.run("create", "-f", "-", stdin=json.dumps(role))
    try:
        managers = _wait_view(kubectl, resource, present=True)
        assert "clusterrole-aggregation-controller" in managers
    finally:
        kubectl.run("delete", "clusterrole", name, "--ignore-not-found")
    _wait_view(kubectl, resource, present=False)


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: registry.example/web:1.0
          ports: [{containerPort: 8080}]
          resources:
            requests: {cpu: 500m, memory: 1Gi}
"""


def test_a_deployment_becomes_available_on_simulated_nodes(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.run("apply", "-n", namespace, "-f", "-", stdin=DEPLOYMENT)
    kubectl.run(
        "wait",
        "-n",
        namespace,
        "deployment/web",
        "--for=condition=Available",
        "--timeout=60s",
        timeout=90,
    )
    deployment = kubectl.json("get", "-n", namespace, "deployment", "web")
    assert deployment["status"]["availableReplicas"] == 3
    assert deployment["status"]["readyReplicas"] == 3
    pods = kubectl.json("get", "-n", namespace, "pods", "-l", "app=web")["items"]
    assert len(pods) == 3
    for pod in pods:
        assert pod["spec"]["nodeName"] in NODE_NAMES  # bound by kube-scheduler
        assert pod["status"]["phase"] == "Running"  # reported by kwok
        assert pod["status"]["podIP"].startswith("10.244.")
        owner = pod["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "ReplicaSet" and owner["name"].startswith("web-")
    events = kubectl.json("get", "events", "-n", namespace)["items"]
    scheduled = [e for e in events if e["reason"] == "Scheduled"]
    assert len(scheduled) == 3
    assert all(
        "default-scheduler" in (e.get("reportingComponent"), e.get("source", {}).get("component"))
        for e in scheduled
    )


def test_a_pod_above_node_capacity_stays_pending_with_the_schedulers_reason(
    kubectl: Kubectl, namespace: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "huge"},
        "spec": {
            "containers": [
                {
                    "name": "huge",
                    "image": "registry.example/huge:1.0",
                    "resources": {"requests": {"cpu": "5"}},
                }
            ]
        },
    }
    kubectl.run("apply", "-n", namespace, "-f", "-", stdin=json.dumps(pod))

    def probe() -> Probe[dict[str, Any]]:
        got = kubectl.json("get", "-n", namespace, "pod", "huge")
        conditions = {c["type"]: c for c in got["status"].get("conditions", [])}
        scheduled = conditions.get("PodScheduled", {})
        return Probe(scheduled.get("reason") == "Unschedulable", scheduled, str(scheduled))

    outcome = poll_until(probe, 30.0, SystemClock(), initial=0.2, cap=1.0)
    assert outcome.ok, outcome.seen
    assert outcome.value is not None
    assert "Insufficient cpu" in outcome.value["message"]
    assert kubectl.json("get", "-n", namespace, "pod", "huge")["status"]["phase"] == "Pending"


def test_a_deleted_namespace_disappears(kubectl: Kubectl) -> None:
    """Namespace deletion completes: its Deployment, ReplicaSet and Pods go (garbage collector,
    kwok for the Pods), then the namespace controller removes the kubernetes finalizer."""
    name = f"tc-cluster-del-{secrets.token_hex(3)}"
    kubectl.run("create", "namespace", name)
    kubectl.run("apply", "-n", name, "-f", "-", stdin=DEPLOYMENT)
    kubectl.run(
        "wait",
        "-n",
        name,
        "deployment/web",
        "--for=condition=Available",
        "--timeout=60s",
        timeout=90,
    )
    kubectl.run("delete", "namespace", name, "--wait=true", "--timeout=60s", timeout=90)
    gone = subprocess.run(
        [kubectl.binary, "--kubeconfig", kubectl.kubeconfig, "get", "namespace", name],
        capture_output=True,
        text=True,
        check=False,
    )
    assert gone.returncode == 1
    assert f'namespaces "{name}" not found' in gone.stderr


def test_a_stopped_kwok_is_down_then_restarted_with_its_nodes_ready(
    local_pipeline: LocalStack,
    stopped_component: Callable[[str], AbstractContextManager[None]],
    kubectl: Kubectl,
) -> None:
    with stopped_component("kwok"):
        during = {c.name: c for c in local_pipeline.status().components}
        assert (during["kwok"].pid, during["kwok"].detail) == (None, "not running")
        assert during["kube-scheduler"].ready
    after = {c.name: c for c in local_pipeline.status().components}
    assert after["kwok"].ready and after["kwok"].pid is not None
    nodes = kubectl.json("get", "nodes")["items"]
    ready = {
        n["metadata"]["name"]
        for n in nodes
        if {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"] == "True"
    }
    assert ready >= NODE_NAMES
