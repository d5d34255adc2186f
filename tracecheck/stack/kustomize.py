"""The manifests under ``stack/`` rendered with kustomize, and the rendered objects read back.

* :func:`render` runs kustomize (``kubectl kustomize`` or ``kustomize build``, see
  :func:`~tracecheck.stack.tools.find_kustomize`) over ``stack/base``, an overlay
  (``minikube``, ``production``) or any kustomization directory: multi-document YAML;
* :func:`load_objects` parses it; :func:`retarget` moves it to another namespace (tests apply
  it to a scratch namespace);
* :func:`object_id` and :class:`PodView` are how :mod:`~tracecheck.stack.validate` and
  :mod:`~tracecheck.stack.apply` name objects and read their pod templates.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracecheck.errors import (
    ConfigError,
    UsageError,
    excerpt,
)
from tracecheck.stack.tools import find_kustomize

__all__ = [
    "CLUSTER_SCOPED",
    "EXTERNAL_SECRETS",
    "HOST_NETWORK",
    "TARGETS",
    "WORKLOADS",
    "PodView",
    "load_objects",
    "object_id",
    "pod_view",
    "render",
    "resolve_target",
    "retarget",
]


#: Named render targets: the base and the overlays under ``stack/overlays``.
TARGETS = ("base", "minikube", "production")


#: Annotations the checks understand, on a workload's ``metadata``: Secrets the pod mounts that
#: are created outside the manifests on purpose (``a,b``), and why a ``hostNetwork: true`` pod
#: is meant to be one (the reason is required).
EXTERNAL_SECRETS = "tracecheck.io/external-secrets"
HOST_NETWORK = "tracecheck.io/host-network"


CLUSTER_SCOPED = frozenset(
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


WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job", "CronJob", "Pod")


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


def render(
    target: str = "base",
    *,
    kustomize: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Render ``target`` (``base``, ``minikube``, ``production`` or a kustomization path) into
    multi-document YAML. Raises :class:`ConfigError` if kustomize rejects it.

    ``kustomize`` is the command prefix (default: :func:`~tracecheck.stack.tools.find_kustomize`
    over ``PATH`` in ``env``).

    >>> text = render("minikube")  # doctest: +SKIP
    """
    path = resolve_target(target)
    command = [*(kustomize or find_kustomize(env)), str(path)]
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
        if o.get("kind") in CLUSTER_SCOPED and o.get("kind") != "Namespace"
    }
    old_namespaces = {o["metadata"]["name"] for o in objects if o.get("kind") == "Namespace"}

    def cluster_name(kind: str, name: str) -> str:
        return name + suffix if (kind, name) in renamed else name

    for obj in objects:
        kind, meta = obj.get("kind", ""), obj.setdefault("metadata", {})
        if kind == "Namespace":
            meta["name"] = namespace
        elif kind in CLUSTER_SCOPED:
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


def object_id(obj: Mapping[str, Any]) -> str:
    kind = str(obj.get("kind", "?"))
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", "?"))
    if kind in CLUSTER_SCOPED or not meta.get("namespace"):
        return f"{kind}/{name}"
    return f"{kind}/{meta['namespace']}/{name}"


@dataclass(slots=True)
class PodView:
    """A workload's pod template, flattened for the checks."""

    obj: dict[str, Any]
    spec: dict[str, Any]
    labels: dict[str, str]
    prefix: str  # path of the pod spec inside the object
    namespace: str

    @property
    def oid(self) -> str:
        return object_id(self.obj)

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


def pod_view(obj: dict[str, Any]) -> PodView | None:
    kind = obj.get("kind")
    ns = str((obj.get("metadata") or {}).get("namespace") or "default")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return PodView(obj, spec, dict((obj.get("metadata") or {}).get("labels") or {}), "spec", ns)
    if kind == "CronJob":
        tmpl = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        prefix = "spec.jobTemplate.spec.template"
    elif kind in WORKLOADS:
        tmpl = spec.get("template") or {}
        prefix = "spec.template"
    else:
        return None
    labels = dict((tmpl.get("metadata") or {}).get("labels") or {})
    return PodView(obj, tmpl.get("spec") or {}, labels, prefix + ".spec", ns)
