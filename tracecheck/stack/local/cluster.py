"""The local cluster: kube-controller-manager, kube-scheduler and kwok's simulated nodes.

They turn the local kube-apiserver into a cluster where objects go through their real
lifecycle: Deployments get ReplicaSets and Pods (kube-controller-manager), Pods get a node
(kube-scheduler), and kwok plays the kubelets: it keeps the simulated Nodes Ready (with a Lease
heartbeat) and moves Pods through their phases, with the stages kwok's own default cluster
(`kwokctl`) runs. Namespaces are deleted by the namespace controller, aggregated ClusterRoles
such as ``view`` are filled by the clusterrole-aggregation controller.

The Nodes are created by ``up`` (kwok manages Nodes, it does not create them). They look like a
two-node minikube cluster, so manifests written for minikube (local PersistentVolumes pinned to
the node ``minikube``, the agent DaemonSet on the control-plane node) schedule unchanged:

==============  ====================================  =====================================
node            labels                                capacity (= allocatable)
==============  ====================================  =====================================
minikube        node-role.kubernetes.io/control-plane  4 CPU, 16Gi memory, 110 pods
minikube-m02    (worker)                              4 CPU, 16Gi memory, 110 pods
==============  ====================================  =====================================

Both report InternalIP 127.0.0.1 and kubelet port 10247: kwok's server, which the apiserver
reaches for ``kubectl port-forward``/logs/exec (with kwok's PortForward and ClusterPortForward
resources a simulated pod's port leads to a real local port).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracecheck.errors import StackError, excerpt, one_line
from tracecheck.stack.local import pki as pkimod
from tracecheck.stack.local.supervisor import HttpReady

if TYPE_CHECKING:
    import httpx

__all__ = [
    "CLUSTER_COMPONENTS",
    "NODES",
    "NODE_CAPACITY",
    "STACK_FORWARDS",
    "Api",
    "ApiReady",
    "bootstrap",
    "controller_manager_argv",
    "forward_stack_pods",
    "kwok_argv",
    "node_manifest",
    "nodes_ready",
    "scheduler_argv",
    "scheduler_config_text",
    "view_aggregated",
]

CLUSTER_COMPONENTS = ("kube-controller-manager", "kube-scheduler", "kwok")
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259
KWOK_PORT = 10247
# Pod IPs kwok hands out; apart from the Service range (pki.SERVICE_CIDR, 10.0.0.0/24).
POD_CIDR = "10.244.0.0/16"
NODE_IP = "127.0.0.1"
NODE_CAPACITY: Mapping[str, str] = {
    "cpu": "4",
    "memory": "16Gi",
    "pods": "110",
    "ephemeral-storage": "100Gi",
}
# (name, control plane?)
NODES: tuple[tuple[str, bool], ...] = (("minikube", True), ("minikube-m02", False))
# kwok manages the Nodes carrying this annotation (as `kwokctl` clusters do).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# kwok's default stages (build.sh copies them from the kwok module beside the binary).
KWOK_STAGES = (
    "node-initialize.yaml",
    "node-heartbeat-with-lease.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)
KWOK_CRDS = ("kwok.x-k8s.io_portforwards.yaml", "kwok.x-k8s.io_clusterportforwards.yaml")
KWOK_CRD_KINDS = ("PortForward", "ClusterPortForward")
KWOK_ROLE = "kwok-controller"
VIEW_BINDING = "tracecheck-viewer-view"
#: The default StorageClass: kube-controller-manager's in-tree hostPath provisioner.
HOSTPATH_CLASS = "tracecheck-hostpath"
# The stack's Pods (by app.kubernetes.io/name, stack/base) and where their container ports lead
# on the local pipeline (stack/local/substitutions.yaml): a simulated Pod has no container, so
# kwok's PortForward sends the apiserver's port-forward streams to the real local component.
STACK_FORWARDS: Mapping[str, Mapping[int, int]] = {
    "otel-collector": {4317: 4317, 4318: 4318, 8888: 8888, 13133: 13133},
    "tempo": {3200: 3200, 4317: 4417, 4318: 4418},
    "prometheus": {9090: 9090},
}
FIELD_MANAGER = "tracecheck"


# -- process arguments ----------------------------------------------------------------------


def _serving(component: str, p: pkimod.Pki, port: int) -> list[str]:
    """Secure serving on 127.0.0.1 with the component's certificate. Requests are authenticated
    (client certificates of the local CA, or tokens through a TokenReview with the component's
    kubeconfig) and authorized by SubjectAccessReview; the health paths are always allowed.
    ``--authentication-skip-lookup``: the apiserver runs without a front proxy, so there is no
    request-header CA to look up in ConfigMap kube-system/extension-apiserver-authentication
    (the lookup would fail and be retried forever)."""
    kubeconfig = str(p.kubeconfig(component))
    return [
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--authentication-skip-lookup=true",
        f"--client-ca-file={p.ca_cert}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={p.component_serving_cert(component)}",
        f"--tls-private-key-file={p.component_serving_key(component)}",
    ]


def controller_manager_argv(binary: Path, p: pkimod.Pki, state: Path) -> list[str]:
    """kube-controller-manager as identity ``system:kube-controller-manager``; each controller
    acts with its own ServiceAccount's token (``--use-service-account-credentials``, as kubeadm
    runs it), signed by the apiserver's service-account key."""
    return [
        str(binary),
        f"--kubeconfig={p.kubeconfig('kube-controller-manager')}",
        *_serving("kube-controller-manager", p, CONTROLLER_MANAGER_PORT),
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={p.sa_key}",
        # Published as ConfigMap kube-root-ca.crt in every namespace (projected SA volumes).
        f"--root-ca-file={p.ca_cert}",
        # CertificateSigningRequests for the kubernetes.io/* signers are signed by the local CA.
        f"--cluster-signing-cert-file={p.ca_cert}",
        f"--cluster-signing-key-file={p.ca_key}",
        # One instance: no leader election, so a restart takes over at once (no 15 s lease wait).
        "--leader-elect=false",
        # Its FlexVolume probe creates this directory: under the state, not in /usr/libexec.
        f"--flex-volume-plugin-dir={state / 'kube-controller-manager' / 'flexvolume'}",
        "--profiling=false",
        # A claim without a class (the production overlay's) gets the default StorageClass,
        # HOSTPATH_CLASS, whose provisioner is this in-tree one: the PV controller makes a
        # hostPath PV (an empty /tmp/hostpath_pv/<uid> directory here; kwok's pods never mount
        # it), and the claim binds as it would with a cloud disk. For tests and development only,
        # as the flag's own help says (pkg/volume/hostpath/host_path.go, Provision).
        "--enable-hostpath-provisioner=true",
    ]


def scheduler_config_text(p: pkimod.Pki) -> str:
    """kube-scheduler's KubeSchedulerConfiguration (its flags for these are deprecated)."""
    import yaml

    doc = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(p.kubeconfig("kube-scheduler"))},
        "leaderElection": {"leaderElect": False},
        "enableProfiling": False,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def scheduler_argv(binary: Path, p: pkimod.Pki, config: Path) -> list[str]:
    """kube-scheduler as identity ``system:kube-scheduler`` (its kubeconfig is in ``config``)."""
    return [str(binary), f"--config={config}", *_serving("kube-scheduler", p, SCHEDULER_PORT)]


def kwok_argv(binary: Path, p: pkimod.Pki) -> list[str]:
    """kwok managing the annotated Nodes, serving their kubelet port on 127.0.0.1:10247 with a
    certificate from the local CA, with its default stages and the PortForward CRDs."""
    stages = binary.parent / "stages"
    key, value = KWOK_NODE_ANNOTATION
    return [
        str(binary),
        f"--kubeconfig={p.kubeconfig('kwok')}",
        *(f"--config={stages / s}" for s in KWOK_STAGES),
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={key}={value}",
        f"--node-ip={NODE_IP}",
        f"--node-port={KWOK_PORT}",
        f"--server-address=127.0.0.1:{KWOK_PORT}",
        f"--tls-cert-file={p.component_serving_cert('kwok')}",
        f"--tls-private-key-file={p.component_serving_key('kwok')}",
        f"--cidr={POD_CIDR}",
        "--node-lease-duration-seconds=40",
        f"--enable-crds={','.join(KWOK_CRD_KINDS)}",
    ]


# -- the apiserver, as the privileged user ---------------------------------------------------


class Api:
    """A few calls to the local kube-apiserver as ``tracecheck-admin`` (system:masters)."""

    def __init__(self, url: str, p: pkimod.Pki, *, timeout: float = 10.0) -> None:
        import httpx

        self.url = url
        ctx = ssl.create_default_context(cafile=str(p.ca_cert))
        ctx.load_cert_chain(str(p.admin_cert), str(p.admin_key))
        self.client = httpx.Client(base_url=url, verify=ctx, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.client.close()

    def request(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kw: Any
    ) -> httpx.Response:
        """One request; a status outside ``ok`` or a transport error is a :class:`StackError`."""
        import httpx

        try:
            resp = self.client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise StackError(
                "kube-apiserver", f"{self.url}{path}", f"{type(exc).__name__}: {exc}"
            ) from exc
        if resp.status_code not in ok:
            raise StackError(
                "kube-apiserver",
                f"{self.url}{path}",
                f"{method} HTTP {resp.status_code}: {excerpt(resp.content)}",
            )
        return resp

    def apply(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` at ``path`` (idempotent; we own the fields we set)."""
        import json

        resp = self.request(
            "PATCH",
            path,
            ok=(200, 201),  # 201: created
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content=json.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        data: dict[str, Any] = resp.json()
        return data


@contextmanager
def api(url: str, p: pkimod.Pki) -> Iterator[Api]:
    client = Api(url, p)
    try:
        yield client
    finally:
        client.close()


# -- cluster objects --------------------------------------------------------------------------


def node_manifest(name: str, index: int, control_plane: bool) -> dict[str, Any]:
    """A simulated Node as a kubelet would register it (status included: the apiserver keeps a
    Node's status on create). kwok's node-initialize stage then sets its conditions to Ready
    and keeps the addresses and capacity given here."""
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    if control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
    key, value = KWOK_NODE_ANNOTATION
    cidr = f"10.244.{index}.0/24"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": name},
            ],
            "capacity": dict(NODE_CAPACITY),
            "allocatable": dict(NODE_CAPACITY),
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KWOK_PORT}},
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux"},
        },
    }


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise StackError("kwok", str(path), f"cannot read kwok's manifest: {exc}") from exc
    if not isinstance(doc, dict):
        raise StackError("kwok", str(path), "not a Kubernetes object")
    return doc


def bootstrap(
    client: Api, kwok_dir: Path | None, progress: Callable[[str], None] = lambda s: None
) -> None:
    """What the cluster needs before its components start (idempotent, a few requests):

    - the viewer user's ClusterRoleBinding to the built-in ``view`` role;
    - the default StorageClass (HOSTPATH_CLASS), so claims without a class bind;
    - with ``kwok_dir`` (kwok's build directory): kwok's PortForward and ClusterPortForward
      CRDs (waited for until Established), its ClusterRole from kwok's own RBAC manifest bound
      to the ``kwok-controller`` user, and the simulated Nodes.
    """
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    client.apply(
        f"{rbac}/clusterrolebindings/{VIEW_BINDING}",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {
                "name": VIEW_BINDING,
                "labels": {"app.kubernetes.io/part-of": "tracecheck"},
            },
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "view",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": pkimod.VIEWER_USER,
                }
            ],
        },
    )
    client.apply(
        f"/apis/storage.k8s.io/v1/storageclasses/{HOSTPATH_CLASS}",
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": HOSTPATH_CLASS,
                "labels": {"app.kubernetes.io/part-of": "tracecheck"},
                # The DefaultStorageClass admission plugin (on by default) puts it on claims
                # that name no class.
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "kubernetes.io/host-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        },
    )
    if kwok_dir is None:
        return
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    names = []
    for file in KWOK_CRDS:
        crd = _load_yaml(kwok_dir / "crd" / file)
        name = str(crd["metadata"]["name"])
        client.apply(f"{crds}/{name}", crd)
        names.append(name)
    role = _load_yaml(kwok_dir / "rbac" / "role.yaml")
    role["metadata"] = {"name": KWOK_ROLE, "labels": {"app.kubernetes.io/part-of": "tracecheck"}}
    client.apply(f"{rbac}/clusterroles/{KWOK_ROLE}", role)
    client.apply(
        f"{rbac}/clusterrolebindings/{KWOK_ROLE}",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": KWOK_ROLE, "labels": {"app.kubernetes.io/part-of": "tracecheck"}},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": KWOK_ROLE,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": pkimod.KWOK_USER}
            ],
        },
    )
    _wait_established(client, crds, names)
    for index, (name, control_plane) in enumerate(NODES):
        _ensure_node(client, node_manifest(name, index, control_plane), progress)


def _wait_established(client: Api, crds: str, names: list[str]) -> None:
    from tracecheck.polling import Probe, SystemClock, poll_until

    def probe() -> Probe[None]:
        pending = []
        for name in names:
            conditions = client.request("GET", f"{crds}/{name}").json().get("status", {})
            established = any(
                c.get("type") == "Established" and c.get("status") == "True"
                for c in conditions.get("conditions") or []
            )
            if not established:
                pending.append(name)
        return Probe(not pending, None, f"not Established: {', '.join(pending)}")

    outcome = poll_until(probe, 30.0, SystemClock(), initial=0.05, cap=0.5)
    if not outcome.ok:
        raise StackError("kube-apiserver", f"{client.url}{crds}", outcome.seen)


def _ensure_node(client: Api, node: dict[str, Any], progress: Callable[[str], None]) -> None:
    """Create the Node with its status, or bring an existing one's labels, addresses and
    capacity to ``node`` (a Node's status is only written through its status subresource)."""
    import json

    name = node["metadata"]["name"]
    path = f"/api/v1/nodes/{name}"
    got = client.request("GET", path, ok=(200, 404))
    if got.status_code == 404:
        client.request("POST", "/api/v1/nodes", ok=(201, 409), json=node)
        progress(f"cluster: created Node {name} ({_capacity(node)})")
        return
    current = got.json()
    meta, want = current.get("metadata", {}), node["metadata"]
    if any(
        meta.get(k, {}).get(n) != v for k in ("labels", "annotations") for n, v in want[k].items()
    ):
        client.request(
            "PATCH",
            path,
            content=json.dumps({"metadata": {k: want[k] for k in ("labels", "annotations")}}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
    status = current.get("status", {})
    keys = ("capacity", "allocatable", "addresses", "daemonEndpoints")
    if any(status.get(k) != node["status"][k] for k in keys):
        client.request(
            "PATCH",
            f"{path}/status",
            content=json.dumps({"status": {k: node["status"][k] for k in keys}}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        progress(f"cluster: updated Node {name} ({_capacity(node)})")


def _capacity(node: Mapping[str, Any]) -> str:
    cap = node["status"]["capacity"]
    return f"{cap['cpu']} CPU, {cap['memory']} memory, {cap['pods']} pods"


def forward_stack_pods(client: Api, namespace: str) -> list[str]:
    """Point the container ports of the stack's Pods in ``namespace`` (after ``tracecheck
    stack apply`` onto this cluster) at the local components, with one kwok PortForward per Pod
    (named like the Pod, as kwok matches them). Returns the Pods forwarded. A Pod replaced by
    a rollout needs this again (its PortForward goes with it: owner reference)."""
    pods = client.request("GET", f"/api/v1/namespaces/{namespace}/pods").json().get("items", [])
    done = []
    for pod in pods:
        meta = pod.get("metadata", {})
        ports = STACK_FORWARDS.get((meta.get("labels") or {}).get("app.kubernetes.io/name", ""))
        if ports is None or meta.get("deletionTimestamp"):
            continue
        name = meta["name"]
        client.apply(
            f"/apis/kwok.x-k8s.io/v1alpha1/namespaces/{namespace}/portforwards/{name}",
            {
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "PortForward",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": meta["uid"]}
                    ],
                },
                "spec": {
                    "forwards": [
                        {"ports": [pod_port], "target": {"address": NODE_IP, "port": local}}
                        for pod_port, local in sorted(ports.items())
                    ]
                },
            },
        )
        done.append(name)
    return done


# -- readiness beyond /healthz -----------------------------------------------------------------


def nodes_ready(client: Api) -> tuple[bool, str]:
    """Every simulated Node exists with condition Ready=True (kwok at work)."""
    items = client.request("GET", "/api/v1/nodes").json().get("items", [])
    ready = {
        n["metadata"]["name"]
        for n in items
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in n.get("status", {}).get("conditions") or []
        )
    }
    missing = [name for name, _ in NODES if name not in ready]
    if missing:
        return False, f"Node not Ready: {', '.join(missing)}"
    return True, f"{len(NODES)} Nodes Ready"


def view_aggregated(client: Api) -> tuple[bool, str]:
    """ClusterRole ``view`` has rules: kube-controller-manager's clusterrole-aggregation
    controller runs (``view`` is created empty and filled from the aggregate-to-view roles)."""
    rules = (
        client.request("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/view")
        .json()
        .get("rules")
    )
    if not rules:
        return False, "ClusterRole view has no rules yet (clusterrole-aggregation controller)"
    return True, f"ClusterRole view aggregated ({len(rules)} rules)"


@dataclass(frozen=True, slots=True)
class ApiReady:
    """Readiness: ``health`` answers 200, then ``check`` holds in the apiserver's objects."""

    health: HttpReady
    apiserver: str
    pki: pkimod.Pki
    check: Callable[[Api], tuple[bool, str]]

    @property
    def url(self) -> str:
        return self.health.url

    def probe(self, timeout: float = 2.0) -> tuple[bool, str]:
        ok, seen = self.health.probe(timeout)
        if not ok:
            return ok, seen
        try:
            client = Api(self.apiserver, self.pki, timeout=timeout)
        except (OSError, ssl.SSLError) as exc:
            return False, one_line(f"kube-apiserver credentials: {exc}", 160)
        try:
            return self.check(client)
        except StackError as exc:
            return False, one_line(str(exc), 160)
        except ValueError as exc:  # an answer that is not JSON
            return False, one_line(f"kube-apiserver: {exc}", 160)
        finally:
            client.close()
