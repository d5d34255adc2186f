"""``tracecheck stack apply production`` on the local cluster: its claims name no StorageClass,
so they bind only through the cluster's default class (kube-controller-manager's hostPath
provisioner, ``cluster.HOSTPATH_CLASS``), and the rollout waits complete on kwok's nodes.

Runs after test_stack_rollout.py (same namespace): waits until that module's objects are gone.
"""

from __future__ import annotations

from pathlib import Path

from kube import Kubectl
from test_stack_rollout import NS, WORKLOADS, cli

from tracecheck.polling import Probe, SystemClock, poll_until
from tracecheck.stack.local import LocalStack
from tracecheck.stack.local import cluster as clustermod
from tracecheck.stack.local.paths import find_repo_root

PRODUCTION = find_repo_root(Path(__file__).parent) / "stack" / "overlays" / "production"


def test_apply_production_binds_its_claims_through_the_default_class(
    local_pipeline: LocalStack,
) -> None:
    def gone() -> Probe[None]:  # the namespace, and every volume that served a claim in it
        namespaces = Kubectl.of(local_pipeline).run("get", "namespaces", "-o", "name")
        volumes = Kubectl.of(local_pipeline).json("get", "pv")["items"]
        ours = [v["metadata"]["name"] for v in volumes
                if (v["spec"].get("claimRef") or {}).get("namespace") == NS]  # fmt: skip
        return Probe(f"namespace/{NS}\n" not in namespaces and not ours, None, ours)

    assert poll_until(gone, 120.0, SystemClock(), initial=0.5, cap=2.0).ok
    rendered = cli(local_pipeline, "stack", "render", str(PRODUCTION)).stdout
    try:
        applied = cli(local_pipeline, "stack", "apply", str(PRODUCTION), "--timeout", "120")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        rollouts = [line for line in applied.stdout.splitlines() if line.startswith("rollout ")]
        assert sorted(line.split(":")[0] for line in rollouts) == sorted(
            f"rollout {kind} {NS}/{name}" for kind, name in WORKLOADS
        )
        assert all(": ok " in line for line in rollouts), rollouts

        claims = Kubectl.of(local_pipeline).json("-n", NS, "get", "pvc")["items"]
        bound = {
            c["metadata"]["name"]: (c["status"]["phase"], c["spec"]["storageClassName"])
            for c in claims
        }
        assert bound == {
            name: ("Bound", clustermod.HOSTPATH_CLASS)
            for name in ("grafana-data", "prometheus-data", "tempo-data")
        }
        volumes = Kubectl.of(local_pipeline).json("get", "pv")["items"]
        assert {v["spec"]["claimRef"]["name"] for v in volumes} == set(bound)
        assert all(v["spec"]["hostPath"]["path"].startswith("/tmp/hostpath_pv/") for v in volumes)
    finally:
        Kubectl.of(local_pipeline).run("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                stdin=rendered)  # fmt: skip
    # The provisioned volumes go with their claims (reclaimPolicy Delete), directories included.
    assert poll_until(gone, 120.0, SystemClock(), initial=0.5, cap=2.0).ok
