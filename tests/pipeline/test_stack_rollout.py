"""``tracecheck stack apply minikube`` rolling out for real on the local cluster, and
``tracecheck smoke --port-forward`` through the real kube-apiserver to the stack's Services.

The minikube overlay is applied by the CLI as a user would (into ``monitoring``), with the
smoke CronJob's schedule brought to every minute: Deployments and the DaemonSet become ready on
kwok's simulated nodes, the local PersistentVolumes bind on the node they name, the CronJob
creates a Job. kwok's PortForward objects (``cluster.forward_stack_pods``) then lead each
simulated Pod's ports to the real local collector, Tempo stand-in and Prometheus, so the
smoke's streams go CLI -> kr8s -> kube-apiserver -> kwok's kubelet port -> the component.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from kube import Kubectl

from tracecheck.errors import Unreachable
from tracecheck.polling import Probe, SystemClock, poll_until
from tracecheck.stack.local import LocalStack
from tracecheck.stack.local import cluster as clustermod
from tracecheck.stack.local.paths import find_repo_root
from tracecheck.stack.local.pipeline import APISERVER_URL
from tracecheck.stack.portforward import FORWARDS, PortForwards

NS = "monitoring"
WORKLOADS = {
    ("Deployment", "grafana"),
    ("Deployment", "otel-collector"),
    ("Deployment", "prometheus"),
    ("Deployment", "tempo"),
    ("DaemonSet", "otel-agent"),
}


def cli(stack: LocalStack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACECHECK_")}
    env["KUBECONFIG"] = str(stack.kubeconfig)
    proc = subprocess.run(
        [sys.executable, "-m", "tracecheck", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def kustomization(tmp: Path, resources: list[str], patches: list[dict[str, Any]]) -> Path:
    """A kustomization in ``tmp`` (kustomize wants relative paths to other directories)."""
    import yaml

    tmp.mkdir(parents=True, exist_ok=True)
    rel = [os.path.relpath(r, tmp) if os.path.isabs(r) else r for r in resources]
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump({"resources": rel, "patches": patches}))
    return tmp


@pytest.fixture(scope="module")
def deployed(
    local_pipeline: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.CompletedProcess[str]]:
    """``tracecheck stack apply`` of the minikube overlay (CronJob every minute); everything
    it created is deleted afterwards and waited for."""
    minikube = find_repo_root(Path(__file__).parent) / "stack" / "overlays" / "minikube"
    every_minute = {
        "target": {"group": "batch", "version": "v1", "kind": "CronJob"},
        "patch": json.dumps([{"op": "replace", "path": "/spec/schedule", "value": "* * * * *"}]),
    }
    target = kustomization(tmp_path_factory.mktemp("minikube"), [str(minikube)], [every_minute])
    rendered = cli(local_pipeline, "stack", "render", str(target)).stdout

    def gone() -> Probe[None]:  # a previous run's objects may still be terminating
        left = Kubectl.of(local_pipeline).run("get", "namespaces,persistentvolumes", "-o", "name")
        stale = f"namespace/{NS}\n" in left or "persistentvolume/tracecheck-" in left
        return Probe(not stale, None, f"a previous run's objects are still there: {left}")

    assert poll_until(gone, 120.0, SystemClock(), initial=0.5, cap=2.0).ok
    try:
        yield cli(local_pipeline, "stack", "apply", str(target), "--timeout", "120")
    finally:
        # Not waited for here (the namespace controller takes a while): the next run waits.
        Kubectl.of(local_pipeline).run(
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "-f",
            "-",
            stdin=rendered,
        )


def test_apply_minikube_rolls_out_on_the_simulated_nodes(
    local_pipeline: LocalStack, deployed: subprocess.CompletedProcess[str]
) -> None:
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    rollouts = {
        tuple(line.split(":")[0].split()[1:]): line
        for line in deployed.stdout.splitlines()
        if line.startswith("rollout ")
    }
    assert set(rollouts) == {(kind, f"{NS}/{name}") for kind, name in WORKLOADS}
    assert all(": ok " in line for line in rollouts.values()), rollouts
    assert deployed.stdout.rstrip().endswith("next: tracecheck smoke")

    pods = Kubectl.of(local_pipeline).json("-n", NS, "get", "pods")["items"]
    running = {
        p["metadata"]["labels"]["app.kubernetes.io/name"]: p
        for p in pods
        if p["status"].get("phase") == "Running"
    }
    assert set(running) >= {"grafana", "otel-collector", "prometheus", "tempo", "otel-agent"}
    nodes = {name for name, _ in clustermod.NODES}
    assert all(p["spec"]["nodeName"] in nodes for p in running.values())
    # Each claim is bound to its local PV, and the pod runs on the node that PV names.
    claims = Kubectl.of(local_pipeline).json("-n", NS, "get", "pvc")["items"]
    bound = {c["metadata"]["name"]: (c["status"]["phase"], c["spec"]["volumeName"]) for c in claims}
    assert bound == {
        f"{app}-data": ("Bound", f"tracecheck-{app}-data")
        for app in ("grafana", "prometheus", "tempo")
    }
    for app in ("grafana", "prometheus", "tempo"):
        assert running[app]["spec"]["nodeName"] == "minikube"


def test_an_unschedulable_rollout_names_the_workload_and_the_schedulers_reason(
    local_pipeline: LocalStack, tmp_path: Path
) -> None:
    """A request above every node's capacity: `apply` ends with exit 1 and one line naming the
    Deployment and what the scheduler said."""
    ns = "tc-unschedulable"
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "too-big", "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": "too-big"}},
                "template": {
                    "metadata": {"labels": {"app": "too-big"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "image": "registry.invalid/none:1",
                                "resources": {"requests": {"cpu": "64"}},
                            }
                        ]
                    },
                },
            },
        },
    ]
    (tmp_path / "objects.yaml").write_text("\n---\n".join(json.dumps(o) for o in objects))
    target = kustomization(tmp_path, ["objects.yaml"], [])
    try:
        proc = cli(local_pipeline, "stack", "apply", str(target), "--timeout", "5")
    finally:
        Kubectl.of(local_pipeline).run(
            "delete", "namespace", ns, "--ignore-not-found", "--wait=false"
        )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("rollout ")]
    assert line.startswith(f"rollout Deployment {ns}/too-big: NOT READY: pod too-big-"), line
    assert "not scheduled: 0/2 nodes are available: 2 Insufficient cpu." in line, line
    assert "next:" not in proc.stdout


def _answers(port: int) -> str:
    """What a stream through 127.0.0.1:``port`` did with a request: "" when bytes came back
    (any server, gRPC ones too, answers an HTTP/1.0 request with something), else why not."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            return "" if s.recv(1) else "closed without an answer"
    except OSError as exc:
        return str(exc)


@pytest.fixture(scope="module")
def forwarded(local_pipeline: LocalStack, deployed: subprocess.CompletedProcess[str]) -> list[str]:
    """kwok PortForwards for the stack's Pods, in effect: kwok learns of a new PortForward
    through its informer, and a stream opened before that is refused ("no forward found"), so
    every forward is tried until it carries an answer."""
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    with clustermod.api(APISERVER_URL, local_pipeline.pki) as client:
        pods = clustermod.forward_stack_pods(client, NS)
    assert len(pods) == 3, pods

    def probe() -> Probe[None]:
        with PortForwards(str(local_pipeline.kubeconfig), "privileged", forwards=FORWARDS) as pf:
            failed = {o.forward.name: _answers(o.local_port) for o in pf.opened}
            failed = {name: why for name, why in failed.items() if why}
            return Probe(not failed, None, f"{failed} {pf.failures}")

    outcome = poll_until(probe, 60.0, SystemClock(), initial=0.5, cap=2.0)
    assert outcome.ok, f"forwards not in effect after 60 s: {outcome.seen} {outcome.error}"
    return pods


def test_smoke_through_port_forwards_passes_and_closes_them(
    local_pipeline: LocalStack, forwarded: list[str]
) -> None:
    proc = cli(local_pipeline, "smoke", "--port-forward", "--output", "json", timeout=180)
    assert proc.stdout, f"exit {proc.returncode}, no report: {proc.stderr}"
    report = json.loads(proc.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert proc.returncode == 0, (statuses, proc.stderr)
    assert set(statuses.values()) == {"PASS"}
    lines = [x for x in proc.stderr.splitlines() if x.startswith("port-forward ")]
    assert [x.split(":")[0] for x in lines] == [f"port-forward {f.name}" for f in FORWARDS]
    ports = [int(x.rsplit(":", 1)[1]) for x in lines]
    collector = next(c for c in report["checks"] if c["name"] == "preflight.collector")
    assert f"127.0.0.1:{ports[2]}" in collector["detail"]  # the health check, forwarded
    assert all(any(pod in x for pod in forwarded) for x in lines)
    for port in ports:  # closed on exit
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_forward_killed_mid_run_fails_fast_and_is_named(
    local_pipeline: LocalStack,
    forwarded: list[str],
    stopped_component: Callable[[str], AbstractContextManager[None]],
) -> None:
    """The kubelet end (kwok) goes away while the forwards are open: a request through one is
    refused at once (closed, not hung), and the forward says why."""
    tempo = next(f for f in FORWARDS if f.name == "tempo")
    with PortForwards(str(local_pipeline.kubeconfig), "privileged", forwards=[tempo]) as pf:
        (opened,) = pf.opened
        url = f"http://127.0.0.1:{opened.local_port}/ready"
        assert httpx.get(url, timeout=10).status_code == 200
        with stopped_component("kwok"):
            started = time.monotonic()
            with pytest.raises(httpx.TransportError):
                httpx.get(url, timeout=30)
            elapsed = time.monotonic() - started
        assert elapsed < 25, f"{elapsed:.1f} s: waited for the client's timeout"
        assert pf.failures, "no reason recorded"
        assert pf.failures[0].startswith(f"port-forward tempo: pod {opened.pod} port 3200: "), (
            pf.failures
        )


def test_port_forward_bad_input_is_one_line_exit_4(
    local_pipeline: LocalStack, forwarded: list[str]
) -> None:
    cases = {
        ("--namespace", "tc-no-such-namespace"): "namespace 'tc-no-such-namespace' not found",
        ("--port-forward-to", "tempo=no-such-svc"): f"Service {NS}/no-such-svc (forward tempo) "
        "not found",
        ("--port-forward-to", "prometheus=prometheus:9999"): "has no port 9999",
    }
    for args, said in cases.items():
        proc = cli(local_pipeline, "smoke", "--port-forward", *args)
        assert proc.returncode == 4, (args, proc.stderr)
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("tracecheck: error: port-forward at "), line
        assert said in line, line


def test_port_forward_without_a_ready_pod_is_unreachable(
    local_pipeline: LocalStack, forwarded: list[str]
) -> None:
    """A Service whose selector matches no Pod: exit 3's Unreachable, naming the Service."""
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "tc-nobody", "namespace": NS},
        "spec": {"selector": {"app": "tc-nobody"}, "ports": [{"port": 3200}]},
    }
    Kubectl.of(local_pipeline).run("apply", "-f", "-", stdin=json.dumps(svc))
    try:
        tempo = next(f for f in FORWARDS if f.name == "tempo")
        with (
            pytest.raises(Unreachable) as err,
            PortForwards(
                str(local_pipeline.kubeconfig),
                "privileged",
                forwards=[tempo],
                overrides={"tempo": ("tc-nobody", None)},
            ),
        ):
            pass
        assert str(err.value).endswith(f"Service {NS}/tc-nobody (forward tempo) has no ready Pod")
    finally:
        Kubectl.of(local_pipeline).run("-n", NS, "delete", "service", "tc-nobody")


def test_the_cronjob_creates_a_job_on_its_schedule(
    local_pipeline: LocalStack, deployed: subprocess.CompletedProcess[str]
) -> None:
    """kube-controller-manager's cronjob controller runs the Job at the next minute; kwok
    completes its Pod. (Last in the module: the other tests use most of that minute.)"""

    def probe() -> Probe[dict[str, Any]]:
        jobs = Kubectl.of(local_pipeline).json("-n", NS, "get", "jobs")["items"]
        owned = [
            j
            for j in jobs
            if any(o["kind"] == "CronJob" for o in j["metadata"].get("ownerReferences", []))
        ]
        done = [j for j in owned if j["status"].get("succeeded")]
        return Probe(bool(done), done[0] if done else None, f"{len(owned)} jobs, none succeeded")

    outcome = poll_until(probe, 90.0, SystemClock(), initial=1.0, cap=2.0)
    assert outcome.ok, outcome.seen
    assert outcome.value is not None
    assert outcome.value["metadata"]["name"].startswith("tracecheck-smoke-")
