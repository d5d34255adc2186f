"""The Kubernetes manifests under ``stack/``: render, validate offline, apply.

The core of ``tracecheck stack render | validate | apply``:

* :func:`render` runs kustomize (``kubectl kustomize`` or ``kustomize build``, see
  :func:`find_kustomize`) over ``stack/base``, an overlay (``minikube``, ``production``) or any
  kustomization directory, and returns multi-document YAML.
* :func:`validate` checks that YAML without a cluster: every object against the Kubernetes 1.34
  OpenAPI schemas (kubernetes-validate, strict: unknown fields are errors), then project checks
  that a schema cannot express and that the article's manifests failed (a Service whose selector
  matches no pod, a scrape configuration that keeps no target, a Grafana datasource reference to a
  uid nobody provisioned, a literal password, a pod without a restricted security context...).
  It returns :class:`Finding` values; it raises only when it cannot check at all.
* :func:`apply` sends the YAML to a cluster with ``kubectl apply --server-side`` (optionally as a
  server-side dry run), creates the generated Secrets the manifests expect, and waits for the
  rollouts.

Annotations the checks understand (on a workload's ``metadata``):

``tracecheck.io/external-secrets: a,b``
    Secrets the pod mounts that are created outside the manifests on purpose (never committed).
``tracecheck.io/host-network: <reason>``
    A ``hostNetwork: true`` pod that is meant to be one; the reason is required.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracecheck.errors import (
    AuthError,
    BackendError,
    ConfigError,
    Unreachable,
    UsageError,
    excerpt,
)

__all__ = [
    "TARGETS",
    "ApplyResult",
    "Finding",
    "RolloutStatus",
    "apply",
    "find_kustomize",
    "load_objects",
    "render",
    "resolve_target",
    "retarget",
    "validate",
]

#: Named render targets: the base and the overlays under ``stack/overlays``.
TARGETS = ("base", "minikube", "production")

EXTERNAL_SECRETS = "tracecheck.io/external-secrets"
HOST_NETWORK = "tracecheck.io/host-network"
REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
)

# Secrets that ``apply`` generates when missing: name -> key -> generator. Grafana's admin
# password is created at deploy time so that it is never a literal in a manifest.
GENERATED_SECRETS: dict[str, dict[str, Callable[[], str]]] = {
    "grafana-admin": {
        "admin-user": lambda: "admin",
        "admin-password": lambda: secrets.token_urlsafe(24),
    },
}

_CLUSTER_SCOPED = frozenset(
    {
        "APIService",
        "CSIDriver",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "RuntimeClass",
        "StorageClass",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)
_WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob", "Pod")
_ROLLOUT_KINDS = ("Deployment", "DaemonSet", "StatefulSet")
_BUILTIN_CLUSTERROLES = frozenset({"admin", "edit", "view", "cluster-admin"})
_CREDENTIAL_KEY = re.compile(
    r"(?i)^(.*[_.-])?(password|passwd|secret|token|api[_-]?key|private[_-]?key|credentials?)$"
)
_FILE_SUFFIX = re.compile(r"(?i)(__file|_file|_path|_dir)$")
_SVC_REF = re.compile(
    r"(?<![A-Za-z0-9.-])([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)"
    r"\.svc(?:\.cluster\.local)?(?::(\d{1,5}))?(?![A-Za-z0-9-])"
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in rendered manifests.

    ``level`` is ``error`` (the manifests are wrong or unsafe) or ``warning`` (worth a look);
    ``object`` is ``Kind/namespace/name`` (``Kind/name`` for cluster-scoped objects); ``path`` is
    where in the object, e.g. ``spec.template.spec.containers[0].securityContext``.
    """

    level: str
    object: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f" {self.path}" if self.path else ""
        return f"{self.level}: {self.object}{where}: {self.message}"


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


# ------------------------------------------------------------------------------------ locating


def _stack_dir() -> Path:
    from tracecheck.stack.local.paths import find_repo_root

    return find_repo_root() / "stack"


def resolve_target(target: str = "base") -> Path:
    """The kustomization directory of ``target``: ``base``, ``minikube``, ``production`` or a
    path to a directory holding a ``kustomization.yaml``. Raises :class:`UsageError`."""
    if target in TARGETS:
        stack = _stack_dir()
        path = stack / "base" if target == "base" else stack / "overlays" / target
    else:
        path = Path(target)
    if not any((path / n).is_file() for n in ("kustomization.yaml", "kustomization.yml")):
        raise UsageError(
            "kustomize",
            str(path),
            f"not a kustomization directory; use one of {', '.join(TARGETS)} or a path",
        )
    return path


def find_kustomize(env: Mapping[str, str] | None = None) -> list[str]:
    """The command prefix that renders a kustomization: ``kustomize build`` or
    ``kubectl kustomize`` from ``PATH``, else the kubectl the local pipeline has built (cached;
    never built here).

    Raises :class:`ConfigError` with an install hint when there is none.
    """
    path = (os.environ if env is None else env).get("PATH", os.defpath)
    for name, args in (("kustomize", ["build"]), ("kubectl", ["kustomize"])):
        found = shutil.which(name, path=path)
        if found:
            return [found, *args]
    local = _local_kubectl()
    if local is not None:
        return [local, "kustomize"]
    raise ConfigError(
        "kustomize",
        "PATH",
        "neither kustomize nor kubectl found; install kubectl (e.g. apt-get install kubectl, or "
        "`tracecheck stack local up`, which builds one) or kustomize",
    )


def _local_kubectl() -> str | None:
    # The kubectl the local pipeline already built, if any. Only the cache is consulted: building
    # it here would start a kube-apiserver Go build (minutes, no progress) behind `stack render`.
    from tracecheck.errors import TracecheckError
    from tracecheck.stack.local.build import cached_build
    from tracecheck.stack.local.paths import default_cache_dir, find_repo_root

    try:
        record = cached_build(find_repo_root(), default_cache_dir(os.environ), "kube-apiserver")
    except (TracecheckError, OSError):
        return None
    if record is None:
        return None
    binary = Path(record.directory) / "kubectl"
    return str(binary) if binary.is_file() else None


def _kubectl(env: Mapping[str, str] | None = None) -> str:
    path = (os.environ if env is None else env).get("PATH", os.defpath)
    found = shutil.which("kubectl", path=path) or _local_kubectl()
    if found is None:
        raise ConfigError(
            "kubectl",
            "PATH",
            "kubectl not found; install it, or run `tracecheck stack local up` (builds one)",
        )
    return found


# ------------------------------------------------------------------------------------- render


def render(target: str = "base", *, kustomize: Sequence[str] | None = None) -> str:
    """Render ``target`` (``base``, ``minikube``, ``production`` or a kustomization path) into
    multi-document YAML. Raises :class:`ConfigError` if kustomize rejects it.

    >>> text = render("minikube")  # doctest: +SKIP
    """
    path = resolve_target(target)
    command = [*(kustomize or find_kustomize()), str(path)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        raise ConfigError("kustomize", command[0], f"cannot run: {exc.strerror or exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ConfigError("kustomize", str(path), "did not finish within 120 s") from exc
    if proc.returncode != 0:
        raise ConfigError("kustomize", str(path), excerpt(proc.stderr or proc.stdout, 400))
    return proc.stdout


def load_objects(rendered: str) -> list[dict[str, Any]]:
    """The YAML documents of ``rendered`` that are objects (empty documents dropped).

    Raises :class:`ConfigError` on invalid YAML or a document that is not a mapping.
    """
    import yaml

    try:
        docs = list(yaml.safe_load_all(rendered))
    except yaml.YAMLError as exc:
        raise ConfigError("manifests", "rendered YAML", f"invalid YAML: {exc}") from exc
    out: list[dict[str, Any]] = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ConfigError("manifests", f"document {i + 1}", "not a mapping")
        out.append(doc)
    return out


def retarget(rendered: str, namespace: str, *, suffix: str = "") -> str:
    """``rendered`` moved to ``namespace``: every namespaced object, the Namespace object,
    ServiceAccount subjects, PersistentVolume claimRefs; cluster-scoped names get ``suffix``
    (with the references to them), so that a copy can live beside the original.

    Only object fields are rewritten, not configuration file contents (service DNS names in a
    ConfigMap still name the original namespace).
    """
    import yaml

    objects = load_objects(rendered)
    renamed = {
        (o["kind"], o["metadata"]["name"])
        for o in objects
        if o.get("kind") in _CLUSTER_SCOPED and o.get("kind") != "Namespace"
    }
    old_namespaces = {o["metadata"]["name"] for o in objects if o.get("kind") == "Namespace"}

    def cluster_name(kind: str, name: str) -> str:
        return name + suffix if (kind, name) in renamed else name

    for obj in objects:
        kind, meta = obj.get("kind", ""), obj.setdefault("metadata", {})
        if kind == "Namespace":
            meta["name"] = namespace
        elif kind in _CLUSTER_SCOPED:
            meta["name"] = cluster_name(kind, meta["name"])
        else:
            meta["namespace"] = namespace
        for subject in obj.get("subjects") or ():
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
        ref = obj.get("roleRef")
        if isinstance(ref, dict) and ref.get("kind") == "ClusterRole":
            ref["name"] = cluster_name("ClusterRole", ref["name"])
        spec = obj.get("spec")
        if kind == "PersistentVolume" and isinstance(spec, dict):
            if isinstance(spec.get("claimRef"), dict):
                spec["claimRef"]["namespace"] = namespace
            if spec.get("storageClassName"):
                spec["storageClassName"] = cluster_name("StorageClass", spec["storageClassName"])
        if kind == "PersistentVolumeClaim" and isinstance(spec, dict):
            if spec.get("volumeName"):
                spec["volumeName"] = cluster_name("PersistentVolume", spec["volumeName"])
            if spec.get("storageClassName"):
                spec["storageClassName"] = cluster_name("StorageClass", spec["storageClassName"])
        if kind == "ClusterRole":
            for rule in obj.get("rules") or ():
                if "namespaces" in (rule.get("resources") or ()) and rule.get("resourceNames"):
                    rule["resourceNames"] = [
                        namespace if n in old_namespaces else n for n in rule["resourceNames"]
                    ]
    return yaml.safe_dump_all(objects, sort_keys=False)


# ----------------------------------------------------------------------------------- validate


def _oid(obj: Mapping[str, Any]) -> str:
    kind = str(obj.get("kind", "?"))
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", "?"))
    if kind in _CLUSTER_SCOPED or not meta.get("namespace"):
        return f"{kind}/{name}"
    return f"{kind}/{meta['namespace']}/{name}"


@dataclass(slots=True)
class _PodView:
    """A workload's pod template, flattened for the checks."""

    obj: dict[str, Any]
    spec: dict[str, Any]
    labels: dict[str, str]
    prefix: str  # path of the pod spec inside the object
    namespace: str

    @property
    def oid(self) -> str:
        return _oid(self.obj)

    @property
    def annotations(self) -> dict[str, str]:
        return dict((self.obj.get("metadata") or {}).get("annotations") or {})

    def containers(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for group in ("initContainers", "containers"):
            for i, c in enumerate(self.spec.get(group) or ()):
                yield f"{self.prefix}.{group}[{i}]", c

    def port_names(self) -> set[str]:
        return {
            str(p["name"])
            for _, c in self.containers()
            for p in c.get("ports") or ()
            if p.get("name")
        }

    def port_numbers(self) -> set[int]:
        return {
            int(p["containerPort"])
            for _, c in self.containers()
            for p in c.get("ports") or ()
            if isinstance(p.get("containerPort"), int)
        }


def _pod_view(obj: dict[str, Any]) -> _PodView | None:
    kind = obj.get("kind")
    ns = str((obj.get("metadata") or {}).get("namespace") or "default")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return _PodView(
            obj, spec, dict((obj.get("metadata") or {}).get("labels") or {}), "spec", ns
        )
    if kind == "CronJob":
        tmpl = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        prefix = "spec.jobTemplate.spec.template"
    elif kind in _WORKLOADS:
        tmpl = spec.get("template") or {}
        prefix = "spec.template"
    else:
        return None
    labels = dict((tmpl.get("metadata") or {}).get("labels") or {})
    return _PodView(obj, tmpl.get("spec") or {}, labels, prefix + ".spec", ns)


def _selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels / matchExpressions) against a label set."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass(slots=True)
class _Index:
    objects: list[dict[str, Any]]
    pods: list[_PodView] = field(default_factory=list)
    names: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for obj in self.objects:
            meta = obj.get("metadata") or {}
            ns = "" if obj.get("kind") in _CLUSTER_SCOPED else str(meta.get("namespace") or "")
            self.names[(str(obj.get("kind")), ns, str(meta.get("name")))] = obj
            view = _pod_view(obj)
            if view is not None:
                self.pods.append(view)

    def has(self, kind: str, namespace: str, name: str) -> bool:
        ns = "" if kind in _CLUSTER_SCOPED else namespace
        return (kind, ns, name) in self.names

    def namespaces(self) -> set[str]:
        return {n for (k, _, n) in self.names if k == "Namespace"} | {
            ns for (_, ns, _) in self.names if ns
        }

    def services(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {n: o for (k, ns, n), o in self.names.items() if k == "Service" and ns == namespace}

    def pods_behind(self, namespace: str, selector: Mapping[str, Any]) -> list[_PodView]:
        """The pod templates in ``namespace`` that a Service's ``selector`` (a label map) picks."""
        return [
            p
            for p in self.pods
            if p.namespace == namespace and all(p.labels.get(k) == v for k, v in selector.items())
        ]

    def configmap_files(self) -> Iterator[tuple[dict[str, Any], str, str]]:
        for obj in self.objects:
            if obj.get("kind") == "ConfigMap":
                for key, text in (obj.get("data") or {}).items():
                    if isinstance(text, str):
                        yield obj, str(key), text


class _Collector:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, obj: Mapping[str, Any] | str, path: str, message: str) -> None:
        oid = obj if isinstance(obj, str) else _oid(obj)
        self.findings.append(Finding("error", oid, path, message))

    def warning(self, obj: Mapping[str, Any] | str, path: str, message: str) -> None:
        oid = obj if isinstance(obj, str) else _oid(obj)
        self.findings.append(Finding("warning", oid, path, message))


def validate(rendered: str, k8s_version: str = "1.34") -> list[Finding]:
    """Check rendered manifests offline; returns the findings (errors first).

    Schema: each object against the Kubernetes ``k8s_version`` OpenAPI schema in strict mode
    (kubernetes-validate). Project checks: see the module docstring and stack/README.md
    "What `tracecheck stack validate` checks". Raises :class:`ConfigError` when the YAML cannot
    be parsed or kubernetes-validate is not installed.
    """
    objects = load_objects(rendered)
    out = _Collector()
    _check_schemas(objects, k8s_version, out)
    index = _Index(objects)
    _check_metadata(index, out)
    for pod in index.pods:
        _check_pod(pod, index, out)
    _check_services(index, out)
    _check_network_policies(index, out)
    _check_rbac(index, out)
    _check_secrets(index, out)
    _check_references(index, out)
    _check_config_files(index, out)
    order = {"error": 0, "warning": 1}
    return sorted(out.findings, key=lambda f: (order.get(f.level, 2), f.object, f.path))


def _check_schemas(objects: list[dict[str, Any]], version: str, out: _Collector) -> None:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
        from kubernetes_validate.utils import (  # type: ignore[import-untyped]
            SchemaNotFoundError,
            ValidationError,
        )
    except ImportError as exc:
        raise ConfigError(
            "manifests",
            "kubernetes-validate",
            "not installed; pip install 'tracecheck[validate]'",
        ) from exc
    for obj in objects:
        if not obj.get("apiVersion") or not obj.get("kind"):
            out.error(obj, "", "document without apiVersion/kind")
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            out.error(obj, path, f"Kubernetes {version} schema: {exc.message}")
        except SchemaNotFoundError as exc:
            out.error(obj, "", f"no Kubernetes {version} schema ({exc.message}); a CRD?")


def _check_metadata(index: _Index, out: _Collector) -> None:
    seen: set[str] = set()
    for obj in index.objects:
        oid = _oid(obj)
        if oid in seen:
            out.error(obj, "metadata.name", "duplicate object")
        seen.add(oid)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        missing = [label for label in REQUIRED_LABELS if label not in labels]
        if missing:
            out.warning(obj, "metadata.labels", f"missing {', '.join(missing)}")
        if obj.get("kind") not in _CLUSTER_SCOPED and not (obj.get("metadata") or {}).get(
            "namespace"
        ):
            out.warning(obj, "metadata.namespace", "no namespace: lands in the current one")


def _image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")


def _check_pod(pod: _PodView, index: _Index, out: _Collector) -> None:
    spec, p = pod.spec, pod.prefix
    psc = spec.get("securityContext") or {}
    sa = spec.get("serviceAccountName") or "default"
    sa_obj = index.names.get(("ServiceAccount", pod.namespace, sa))
    if sa == "default":
        out.warning(pod.oid, f"{p}.serviceAccountName", "runs as the default ServiceAccount")
    elif sa_obj is None:
        out.error(pod.oid, f"{p}.serviceAccountName", f"ServiceAccount {sa!r} is not defined")
    automount = spec.get("automountServiceAccountToken")
    if automount is None and sa_obj is not None:
        automount = sa_obj.get("automountServiceAccountToken")
    if automount is not False:
        out.warning(
            pod.oid,
            f"{p}.automountServiceAccountToken",
            "API token automounted; set false and project a token where one is needed",
        )
    if spec.get("hostNetwork") and not pod.annotations.get(HOST_NETWORK):
        out.error(
            pod.oid,
            f"{p}.hostNetwork",
            f"host network without a reason (annotation {HOST_NETWORK})",
        )
    for flag in ("hostPID", "hostIPC"):
        if spec.get(flag):
            out.error(pod.oid, f"{p}.{flag}", "shares a host namespace")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    volumes = {str(v.get("name")): v for v in spec.get("volumes") or ()}
    for i, vol in enumerate(spec.get("volumes") or ()):
        if "hostPath" in vol:
            out.error(
                pod.oid,
                f"{p}.volumes[{i}]",
                "hostPath volume: node files writable by the pod, and fsGroup is not applied "
                "(use a local PersistentVolume)",
            )
    strategy = ((pod.obj.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate")
    single_writer = any("persistentVolumeClaim" in v or "hostPath" in v for v in volumes.values())
    if pod.obj.get("kind") == "Deployment" and single_writer and strategy != "Recreate":
        out.warning(
            pod.oid,
            "spec.strategy",
            f"{strategy} with a data volume: old and new pod share it during a rollout; "
            "use Recreate",
        )
    for cpath, c in pod.containers():
        csc = c.get("securityContext") or {}
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            out.error(pod.oid, f"{cpath}.securityContext.runAsNonRoot", "may run as root")
        if csc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.error(pod.oid, f"{cpath}.securityContext.runAsUser", "runs as UID 0")
        if csc.get("privileged"):
            out.error(pod.oid, f"{cpath}.securityContext.privileged", "privileged container")
        if csc.get("allowPrivilegeEscalation") is not False:
            out.error(
                pod.oid,
                f"{cpath}.securityContext.allowPrivilegeEscalation",
                "privilege escalation not disabled",
            )
        drop = [str(x).upper() for x in (csc.get("capabilities") or {}).get("drop") or ()]
        if "ALL" not in drop:
            out.error(pod.oid, f"{cpath}.securityContext.capabilities", "capabilities not dropped")
        if (csc.get("capabilities") or {}).get("add"):
            out.warning(pod.oid, f"{cpath}.securityContext.capabilities.add", "adds capabilities")
        c_seccomp = (csc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
        if not (pod_seccomp or c_seccomp):
            out.error(pod.oid, f"{cpath}.securityContext.seccompProfile", "no seccomp profile")
        if csc.get("readOnlyRootFilesystem") is not True:
            out.warning(pod.oid, f"{cpath}.securityContext.readOnlyRootFilesystem", "writable root")
        image = str(c.get("image") or "")
        if not _image_pinned(image):
            out.error(pod.oid, f"{cpath}.image", f"image {image!r} is not pinned to a tag")
        res = c.get("resources") or {}
        for section, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
            missing = [k for k in keys if k not in (res.get(section) or {})]
            if missing:
                out.error(pod.oid, f"{cpath}.resources.{section}", f"no {'/'.join(missing)}")
        for j, env in enumerate(c.get("env") or ()):
            name = str(env.get("name", ""))
            if (
                "value" in env
                and env["value"]
                and _CREDENTIAL_KEY.match(name)
                and not _FILE_SUFFIX.search(name)
            ):
                out.error(
                    pod.oid,
                    f"{cpath}.env[{j}]",
                    f"literal credential in {name}; read it from a Secret (as a file)",
                )
            if (env.get("valueFrom") or {}).get("secretKeyRef"):
                out.warning(
                    pod.oid, f"{cpath}.env[{j}]", f"secret {name} in an environment variable"
                )
        for j, mount in enumerate(c.get("volumeMounts") or ()):
            if mount.get("name") not in volumes:
                out.error(pod.oid, f"{cpath}.volumeMounts[{j}]", f"no volume {mount.get('name')!r}")
        long_running = pod.obj.get("kind") in ("Deployment", "DaemonSet", "StatefulSet")
        if long_running and ".containers[" in cpath and "readinessProbe" not in c:
            out.warning(pod.oid, f"{cpath}.readinessProbe", "no readiness probe")


def _referenced(pod: _PodView) -> Iterator[tuple[str, str, str]]:
    """(kind, name, path) of ConfigMaps, Secrets and PVCs a pod spec references."""
    p = pod.prefix
    for i, vol in enumerate(pod.spec.get("volumes") or ()):
        vp = f"{p}.volumes[{i}]"
        if "configMap" in vol:
            yield "ConfigMap", str(vol["configMap"].get("name")), vp
        if "secret" in vol:
            yield "Secret", str(vol["secret"].get("secretName")), vp
        if "persistentVolumeClaim" in vol:
            yield "PersistentVolumeClaim", str(vol["persistentVolumeClaim"].get("claimName")), vp
        for source in (vol.get("projected") or {}).get("sources") or ():
            if "configMap" in source:
                yield "ConfigMap", str(source["configMap"].get("name")), vp
            if "secret" in source:
                yield "Secret", str(source["secret"].get("name")), vp
    for cpath, c in pod.containers():
        for j, env in enumerate(c.get("env") or ()):
            ref = env.get("valueFrom") or {}
            if "configMapKeyRef" in ref and not ref["configMapKeyRef"].get("optional"):
                yield "ConfigMap", str(ref["configMapKeyRef"].get("name")), f"{cpath}.env[{j}]"
            if "secretKeyRef" in ref and not ref["secretKeyRef"].get("optional"):
                yield "Secret", str(ref["secretKeyRef"].get("name")), f"{cpath}.env[{j}]"
        for j, src in enumerate(c.get("envFrom") or ()):
            if "configMapRef" in src:
                yield "ConfigMap", str(src["configMapRef"].get("name")), f"{cpath}.envFrom[{j}]"
            if "secretRef" in src:
                yield "Secret", str(src["secretRef"].get("name")), f"{cpath}.envFrom[{j}]"


def _check_references(index: _Index, out: _Collector) -> None:
    for pod in index.pods:
        external = {
            s.strip() for s in pod.annotations.get(EXTERNAL_SECRETS, "").split(",") if s.strip()
        }
        for kind, name, path in _referenced(pod):
            if kind == "ConfigMap" and name == "kube-root-ca.crt":
                continue  # published into every namespace by kube-controller-manager
            if kind == "Secret" and name in external:
                continue
            if not index.has(kind, pod.namespace, name):
                hint = (
                    f" (created outside the manifests? list it in {EXTERNAL_SECRETS})"
                    if kind == "Secret"
                    else ""
                )
                out.error(pod.oid, path, f"{kind} {name!r} is not defined{hint}")
    # Service DNS names in configuration files and container arguments must name a Service
    # (and a port) that the manifests create: the article's collector, Grafana and Tempo all
    # pointed at Services that no manifest defined.
    namespaces = index.namespaces()
    for obj, key, text in index.configmap_files():
        _check_dns_refs(index, namespaces, obj, f"data.{key}", text, out)
    for pod in index.pods:
        for cpath, c in pod.containers():
            texts = [str(a) for a in [*(c.get("args") or ()), *(c.get("command") or ())]]
            texts += [str(e.get("value", "")) for e in c.get("env") or ()]
            _check_dns_refs(index, namespaces, pod.obj, cpath, "\n".join(texts), out)


def _check_dns_refs(
    index: _Index,
    namespaces: set[str],
    obj: Mapping[str, Any],
    path: str,
    text: str,
    out: _Collector,
) -> None:
    for match in _SVC_REF.finditer(text):
        name, ns, port = match.group(1), match.group(2), match.group(3)
        if ns not in namespaces or (name, ns) == ("kubernetes", "default"):
            continue  # a namespace these manifests do not manage
        svc = index.services(ns).get(name)
        if svc is None:
            out.error(
                obj, path, f"{match.group(0)} names Service {ns}/{name}, which is not defined"
            )
            continue
        ports = {int(p.get("port", 0)) for p in (svc.get("spec") or {}).get("ports") or ()}
        if port is not None and int(port) not in ports:
            out.error(obj, path, f"{match.group(0)}: Service {ns}/{name} has no port {port}")


def _check_services(index: _Index, out: _Collector) -> None:
    for obj in index.objects:
        if obj.get("kind") != "Service":
            continue
        spec = obj.get("spec") or {}
        selector = spec.get("selector")
        if spec.get("type") == "ExternalName":
            continue
        if not selector:
            out.warning(obj, "spec.selector", "no selector: endpoints must be managed by hand")
            continue
        ns = str((obj.get("metadata") or {}).get("namespace") or "default")
        pods = index.pods_behind(ns, selector)
        if not pods:
            out.error(obj, "spec.selector", f"selects no pod template ({selector})")
            continue
        if spec.get("type") == "LoadBalancer":
            out.warning(obj, "spec.type", "LoadBalancer publishes the port outside the cluster")
        for i, port in enumerate(spec.get("ports") or ()):
            target = port.get("targetPort", port.get("port"))
            for pod in pods:
                if isinstance(target, str) and target not in pod.port_names():
                    out.error(
                        obj, f"spec.ports[{i}].targetPort", f"{pod.oid} has no port {target!r}"
                    )
                elif (
                    isinstance(target, int)
                    and target not in pod.port_numbers()
                    and not pod.spec.get("hostNetwork")
                ):
                    out.warning(
                        obj, f"spec.ports[{i}].targetPort", f"{pod.oid} declares no port {target}"
                    )


def _check_network_policies(index: _Index, out: _Collector) -> None:
    policies = [o for o in index.objects if o.get("kind") == "NetworkPolicy"]
    for pod in index.pods:
        if pod.spec.get("hostNetwork"):
            continue  # NetworkPolicy does not apply to host-network pods
        covering = [
            pol
            for pol in policies
            if (pol.get("metadata") or {}).get("namespace", "default") == pod.namespace
            and _selects((pol.get("spec") or {}).get("podSelector"), pod.labels)
            and "Ingress" in ((pol.get("spec") or {}).get("policyTypes") or ["Ingress"])
        ]
        if not covering:
            out.warning(pod.oid, pod.prefix, "no NetworkPolicy restricts ingress to these pods")
    for pol in policies:
        spec = pol.get("spec") or {}
        ns = str((pol.get("metadata") or {}).get("namespace") or "default")
        selected = [
            p
            for p in index.pods
            if p.namespace == ns and _selects(spec.get("podSelector"), p.labels)
        ]
        if not selected:
            out.warning(pol, "spec.podSelector", "selects no pod")
            continue
        names = set().union(*(p.port_names() for p in selected))
        for i, rule in enumerate(spec.get("ingress") or ()):
            for j, port in enumerate(rule.get("ports") or ()):
                value = port.get("port")
                if isinstance(value, str) and value not in names:
                    out.error(
                        pol,
                        f"spec.ingress[{i}].ports[{j}]",
                        f"named port {value!r} exists in no selected pod",
                    )
            for j, peer in enumerate(rule.get("from") or ()):
                cidr = str((peer.get("ipBlock") or {}).get("cidr", ""))
                if cidr in ("0.0.0.0/0", "::/0"):
                    out.warning(pol, f"spec.ingress[{i}].from[{j}]", "admits every address")


def _check_rbac(index: _Index, out: _Collector) -> None:
    for obj in index.objects:
        kind = obj.get("kind")
        if kind in ("Role", "ClusterRole"):
            for i, rule in enumerate(obj.get("rules") or ()):
                for key in ("verbs", "resources", "apiGroups"):
                    if "*" in (rule.get(key) or ()):
                        out.warning(obj, f"rules[{i}].{key}", "wildcard")
                if {"secrets"} & set(rule.get("resources") or ()) and not rule.get("resourceNames"):
                    out.warning(obj, f"rules[{i}]", "reads every Secret")
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ref = obj.get("roleRef") or {}
        ns = str((obj.get("metadata") or {}).get("namespace") or "")
        rkind, rname = str(ref.get("kind")), str(ref.get("name"))
        builtin = rkind == "ClusterRole" and (
            rname.startswith("system:") or rname in _BUILTIN_CLUSTERROLES
        )
        if rname == "cluster-admin":
            out.error(obj, "roleRef", "binds cluster-admin")
        elif not builtin and not index.has(rkind, ns, rname):
            out.error(obj, "roleRef", f"{rkind} {rname!r} is not defined")
        for i, subject in enumerate(obj.get("subjects") or ()):
            if subject.get("kind") == "ServiceAccount":
                sns = str(subject.get("namespace") or ns)
                if sns in index.namespaces() and not index.has(
                    "ServiceAccount", sns, str(subject.get("name"))
                ):
                    out.error(
                        obj, f"subjects[{i}]", f"ServiceAccount {sns}/{subject.get('name')} missing"
                    )


def _check_secrets(index: _Index, out: _Collector) -> None:
    for obj in index.objects:
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
            out.error(obj, "data", "a Secret with values in the manifests: a committed credential")


# --------------------------------------------------------------------- configuration contents


def _yaml_or_none(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every mapping entry in a parsed document."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            yield sub, str(key), value
            yield from _walk(value, sub)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def _check_config_files(index: _Index, out: _Collector) -> None:
    datasources: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
    dashboards: list[tuple[dict[str, Any], str, Any]] = []
    for obj, key, text in index.configmap_files():
        where = f"data.{key}"
        if key.endswith(".json"):
            import json

            try:
                dashboards.append((obj, where, json.loads(text)))
            except ValueError:
                out.error(obj, where, "invalid JSON")
            continue
        doc = _yaml_or_none(text)
        if not isinstance(doc, dict):
            continue
        for path, k, value in _walk(doc):
            if (
                isinstance(value, str | int)
                and not isinstance(value, bool)
                and str(value)
                and _CREDENTIAL_KEY.match(k)
                and not _FILE_SUFFIX.search(k)
            ):
                out.error(obj, f"{where}:{path}", "literal credential in a configuration file")
        if isinstance(doc.get("datasources"), list):
            for ds in doc["datasources"]:
                if isinstance(ds, dict):
                    datasources.append((obj, where, ds))
            _check_provisioning_escapes(obj, where, doc, out)
        if isinstance(doc.get("scrape_configs"), list):
            _check_prometheus_config(index, obj, where, doc, out)
        if isinstance(doc.get("distributor"), dict) or "metrics_generator" in doc:
            _check_tempo_config(obj, where, doc, out)
        _check_remote_write_targets(index, obj, where, doc, out)
        if isinstance(doc.get("receivers"), dict) and isinstance(doc.get("service"), dict):
            _check_collector_config(obj, where, doc, out)
    if datasources:
        _check_datasources(datasources, dashboards, out)


_DS_FIELDS_BY_TYPE = {
    # Keys of jsonData that belong to the other datasource type (prometheus-api.md section 9.1).
    "prometheus": {"spanMetrics", "tracesToMetrics", "serviceMap", "nodeGraph", "tracesToLogsV2"},
}


def _check_provisioning_escapes(obj: dict[str, Any], where: str, doc: Any, out: _Collector) -> None:
    # Grafana expands $VAR and ${VAR} in the VALUES of provisioning files (comments are safe):
    # Grafana's own $__tags must be written $$__tags.
    for path, _, value in _walk(doc):
        if isinstance(value, str):
            for match in re.finditer(r"(?<!\$)\$(__[A-Za-z]+|\{__[A-Za-z.]+\})", value):
                out.error(
                    obj,
                    f"{where}:{path}",
                    f"{match.group(0)} is read as an environment variable; write ${match.group(0)}",
                )


def _check_datasources(
    datasources: list[tuple[dict[str, Any], str, dict[str, Any]]],
    dashboards: list[tuple[dict[str, Any], str, Any]],
    out: _Collector,
) -> None:
    by_uid: dict[str, str] = {}
    for obj, where, ds in datasources:
        uid = ds.get("uid")
        if not uid:
            out.error(
                obj,
                f"{where}:{ds.get('name')}",
                "datasource without uid: Grafana generates a random one, references cannot resolve",
            )
        else:
            by_uid[str(uid)] = str(ds.get("type"))
    for obj, where, ds in datasources:
        here = f"{where}:{ds.get('name')}"
        jd = ds.get("jsonData") or {}
        dtype = str(ds.get("type"))
        for key in _DS_FIELDS_BY_TYPE.get(dtype, set()) & set(jd):
            out.error(
                obj, f"{here}.jsonData.{key}", f"not a {dtype} datasource field: ignored by Grafana"
            )
        for path, key, value in _walk(jd, "jsonData"):
            if key == "datasourceUid" and str(value) not in by_uid:
                out.error(obj, f"{here}.{path}", f"datasource uid {value!r} is not provisioned")
        for dest in jd.get("exemplarTraceIdDestinations") or ():
            uid = dest.get("datasourceUid")
            if uid is not None and by_uid.get(str(uid), "tempo") != "tempo":
                out.error(
                    obj, f"{here}.jsonData.exemplarTraceIdDestinations", f"{uid!r} is not Tempo"
                )
            if dest.get("name") != "traceID":
                out.warning(
                    obj,
                    f"{here}.jsonData.exemplarTraceIdDestinations",
                    f"exemplar label {dest.get('name')!r}; Tempo's generator writes traceID",
                )
        for key in ("tracesToMetrics", "serviceMap"):
            uid = (jd.get(key) or {}).get("datasourceUid")
            if uid is not None and by_uid.get(str(uid), "prometheus") != "prometheus":
                out.error(obj, f"{here}.jsonData.{key}", f"{uid!r} is not Prometheus")
        if dtype == "tempo" and not (jd.get("serviceMap") or {}).get("datasourceUid"):
            out.warning(
                obj, f"{here}.jsonData.serviceMap", "no serviceMap: the service graph is empty"
            )
        if dtype == "prometheus" and not jd.get("exemplarTraceIdDestinations"):
            out.warning(
                obj, f"{here}.jsonData", "no exemplarTraceIdDestinations: no metric->trace link"
            )
    for obj, where, dash in dashboards:
        for path, key, value in _walk(dash):
            if key == "datasource" and isinstance(value, dict) and value.get("uid"):
                uid = str(value["uid"])
                if not uid.startswith("$") and uid not in by_uid and uid != "-- Grafana --":
                    out.error(
                        obj,
                        f"{where}:{path}",
                        f"dashboard datasource uid {uid!r} is not provisioned",
                    )


def _expand_groups(replacement: str, groups: Sequence[str | None]) -> str:
    """``$1`` / ``${1}`` in a relabel replacement, from a match's groups."""

    def one(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return (groups[n] or "") if n < len(groups) else ""

    return re.sub(r"\$\{?(\d+)\}?", one, replacement)


def _relabel(labels: dict[str, str], rules: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """Prometheus relabeling (keep, drop, replace; anchored regexes) of one target."""
    for rule in rules:
        action = str(rule.get("action", "replace")).lower()
        sep = str(rule.get("separator", ";"))
        value = sep.join(labels.get(str(s), "") for s in rule.get("source_labels") or ())
        try:
            regex = re.compile(f"^(?:{rule.get('regex', '(.*)')})$")
        except re.error:
            return labels
        found = regex.match(value)
        if action == "keep" and not found:
            return None
        if action == "drop" and found:
            return None
        if action == "replace" and found and rule.get("target_label"):
            replacement = str(rule.get("replacement", "$1"))
            result = _expand_groups(replacement, (found.group(0), *found.groups()))
            labels[str(rule["target_label"])] = result
    return labels


def _sd_targets(index: _Index, role: str, namespaces: Sequence[str]) -> list[dict[str, str]]:
    """Meta labels of the targets Kubernetes service discovery would produce from the objects."""

    def sanitize(name: str) -> str:
        return re.sub(r"[^a-zA-Z0-9_]", "_", name)

    targets: list[dict[str, str]] = []
    for (kind, ns, name), obj in index.names.items():
        if kind != "Service" or (namespaces and ns not in namespaces):
            continue
        meta = obj.get("metadata") or {}
        base = {"__meta_kubernetes_namespace": ns, "__meta_kubernetes_service_name": name}
        for k, v in (meta.get("annotations") or {}).items():
            base[f"__meta_kubernetes_service_annotation_{sanitize(k)}"] = str(v)
        for k, v in (meta.get("labels") or {}).items():
            base[f"__meta_kubernetes_service_label_{sanitize(k)}"] = str(v)
        for port in (obj.get("spec") or {}).get("ports") or ():
            t = dict(base)
            pname = str(port.get("name", ""))
            key = "endpointslice" if role == "endpointslice" else "endpoint"
            t[f"__meta_kubernetes_{key}_port_name"] = pname
            t["__meta_kubernetes_service_port_name"] = pname
            t["__address__"] = f"{name}.{ns}.svc:{port.get('port')}"
            targets.append(t)
    if role == "pod":
        targets = []
        for pod in index.pods:
            if namespaces and pod.namespace not in namespaces:
                continue
            for _, c in pod.containers():
                for port in c.get("ports") or ():
                    t = {
                        "__meta_kubernetes_namespace": pod.namespace,
                        "__meta_kubernetes_pod_container_port_name": str(port.get("name", "")),
                        "__address__": f"pod:{port.get('containerPort')}",
                    }
                    for k, v in pod.labels.items():
                        t[f"__meta_kubernetes_pod_label_{sanitize(k)}"] = str(v)
                    targets.append(t)
    return targets


def _check_prometheus_config(
    index: _Index, obj: dict[str, Any], where: str, doc: dict[str, Any], out: _Collector
) -> None:
    for i, job in enumerate(doc.get("scrape_configs") or ()):
        if not isinstance(job, dict):
            continue
        here = f"{where}:scrape_configs[{i}]({job.get('job_name')})"
        sources = [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]
        if not sources:
            out.error(obj, here, "no static_configs or service discovery: scrapes nothing")
            continue
        for sd in job.get("kubernetes_sd_configs") or ():
            role = str(sd.get("role", ""))
            names = list((sd.get("namespaces") or {}).get("names") or [])
            if role not in ("endpoints", "endpointslice", "service", "pod"):
                continue
            candidates = _sd_targets(index, role, names)
            kept = [t for t in candidates if _relabel(dict(t), job.get("relabel_configs") or ())]
            if candidates and not kept:
                out.error(
                    obj,
                    f"{here}.relabel_configs",
                    f"keeps none of the {len(candidates)} {role} targets these manifests create",
                )


def _remote_writes(doc: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(path, url, exemplars) of the remote-write destinations in a Tempo or collector config."""
    storage = (doc.get("metrics_generator") or {}).get("storage") or {}
    for j, rw in enumerate(storage.get("remote_write") or ()):
        if isinstance(rw, dict) and rw.get("url"):
            path = f"metrics_generator.storage.remote_write[{j}]"
            yield path, str(rw["url"]), bool(rw.get("send_exemplars"))
    for name, exporter in (doc.get("exporters") or {}).items():
        if str(name).split("/")[0] == "prometheusremotewrite" and isinstance(exporter, dict):
            # The collector's exporter sends exemplars it finds on the data points.
            yield f"exporters.{name}", str(exporter.get("endpoint", "")), True


def _check_remote_write_targets(
    index: _Index, obj: dict[str, Any], where: str, doc: dict[str, Any], out: _Collector
) -> None:
    # Remote write needs Prometheus's receiver flag (else 404), and exemplars need exemplar
    # storage (else dropped silently; prometheus-api.md sections 2 and 3).
    for path, url, exemplars in _remote_writes(doc):
        match = _SVC_REF.search(url)
        if match is None:
            continue
        name, ns = match.group(1), match.group(2)
        svc = index.services(ns).get(name)
        selector = ((svc or {}).get("spec") or {}).get("selector") or {}
        if not selector:
            continue
        for pod in index.pods_behind(ns, selector):
            args = {str(a) for _, c in pod.containers() for a in c.get("args") or ()}
            if "--web.enable-remote-write-receiver" not in args:
                out.error(
                    obj,
                    f"{where}:{path}",
                    f"{pod.oid} runs without --web.enable-remote-write-receiver: writes get 404",
                )
            if exemplars and not any(
                a.startswith("--enable-feature=") and "exemplar-storage" in a for a in args
            ):
                out.error(
                    obj,
                    f"{where}:{path}",
                    f"{pod.oid} runs without --enable-feature=exemplar-storage: exemplars dropped",
                )


def _check_tempo_config(
    obj: dict[str, Any], where: str, doc: dict[str, Any], out: _Collector
) -> None:
    receivers = ((doc.get("distributor") or {}).get("receivers") or {}).get("otlp") or {}
    for proto, conf in ((receivers.get("protocols") or {}) or {}).items():
        endpoint = str((conf or {}).get("endpoint", ""))
        host = endpoint.rsplit(":", 1)[0]
        if not endpoint or host in ("localhost", "127.0.0.1", "[::1]"):
            out.error(
                obj,
                f"{where}:distributor.receivers.otlp.protocols.{proto}",
                "Tempo 2.7+ binds OTLP receivers to localhost unless an endpoint such as "
                "0.0.0.0:4317 is set: unreachable from other pods",
            )
    overrides = doc.get("overrides") or {}
    if "metrics_generator_processors" in overrides:
        out.error(
            obj,
            f"{where}:overrides.metrics_generator_processors",
            "legacy flat overrides; Tempo 2.x reads "
            "overrides.defaults.metrics_generator.processors",
        )
    processors = ((overrides.get("defaults") or {}).get("metrics_generator") or {}).get(
        "processors"
    ) or []
    generator = doc.get("metrics_generator") or {}
    if "metrics_generator" in doc and not processors:
        out.warning(
            obj, f"{where}:overrides", "metrics_generator configured but no processor enabled"
        )
    if "local-blocks" in processors and not (generator.get("traces_storage") or {}).get("path"):
        out.error(
            obj,
            f"{where}:metrics_generator.traces_storage",
            "local-blocks needs traces_storage.path (local blocks processor requires traces wal)",
        )
    if processors and "local-blocks" not in processors:
        out.warning(obj, f"{where}:overrides", "no local-blocks processor: TraceQL metrics fail")
    path = str((generator.get("storage") or {}).get("path", ""))
    if processors and not path:
        out.error(
            obj, f"{where}:metrics_generator.storage.path", "unset: the generator is disabled"
        )
    elif path.startswith("/tmp"):
        out.warning(obj, f"{where}:metrics_generator.storage.path", "under /tmp")
    for j, rw in enumerate((generator.get("storage") or {}).get("remote_write") or ()):
        if isinstance(rw, dict) and not rw.get("send_exemplars"):
            out.warning(
                obj, f"{where}:metrics_generator.storage.remote_write[{j}]", "no exemplars sent"
            )


def _check_collector_config(
    obj: dict[str, Any], where: str, doc: dict[str, Any], out: _Collector
) -> None:
    pipelines = (doc.get("service") or {}).get("pipelines") or {}
    for name, pipe in pipelines.items():
        processors = list((pipe or {}).get("processors") or ())
        if "memory_limiter" not in processors:
            out.warning(obj, f"{where}:service.pipelines.{name}", "no memory_limiter")
        elif processors[0] != "memory_limiter":
            out.warning(obj, f"{where}:service.pipelines.{name}", "memory_limiter is not first")
    otlp = (doc.get("receivers") or {}).get("otlp") or {}
    for proto, conf in ((otlp.get("protocols") or {}) or {}).items():
        endpoint = str((conf or {}).get("endpoint", ""))
        if not endpoint or endpoint.startswith(("localhost", "127.0.0.1")):
            out.error(
                obj,
                f"{where}:receivers.otlp.protocols.{proto}",
                "the collector binds OTLP to localhost by default: set 0.0.0.0:<port>",
            )
    if "health_check" not in ((doc.get("service") or {}).get("extensions") or ()):
        out.warning(obj, f"{where}:service.extensions", "no health_check extension for probes")


# -------------------------------------------------------------------------------------- apply


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
) -> ApplyResult:
    """Apply ``rendered`` with ``kubectl apply --server-side`` (field manager ``tracecheck``).

    ``dry_run="server"`` asks the apiserver to admit and default every object without storing
    it. Otherwise, after applying, Secrets the manifests expect and :data:`GENERATED_SECRETS`
    knows (Grafana's admin password) are created with random values when missing, and with
    ``wait`` every Deployment, DaemonSet and StatefulSet is awaited (``kubectl rollout status``,
    ``timeout`` seconds each). Then run ``tracecheck smoke``.

    Raises :class:`UsageError` for a bad ``dry_run``, :class:`Unreachable` / :class:`AuthError` /
    :class:`BackendError` when kubectl or the apiserver refuses.
    """
    if dry_run not in (None, "server"):
        raise UsageError(
            "kubectl", "--dry-run", f"only 'server' with server-side apply, not {dry_run!r}"
        )
    objects = load_objects(rendered)
    base = [kubectl or _kubectl()]
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
        view = _pod_view(obj)
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
    detail = excerpt(proc.stdout if proc.returncode == 0 else (proc.stderr or proc.stdout), 200)
    return RolloutStatus(kind, ns, name, proc.returncode == 0, detail)
