"""Checks of the objects themselves: Kubernetes schemas, labels, pod security, references
between objects (Secrets, ConfigMaps, ServiceAccounts, Service names), Service selectors,
NetworkPolicies, RBAC and literal credentials."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tracecheck.errors import (
    ConfigError,
)
from tracecheck.stack.kustomize import (
    CLUSTER_SCOPED,
    EXTERNAL_SECRETS,
    HOST_NETWORK,
    PodView,
    object_id,
)
from tracecheck.stack.validate.index import (
    CREDENTIAL_KEY,
    FILE_SUFFIX,
    SVC_REF,
    Collector,
    Index,
    selects,
)

__all__ = [
    "REQUIRED_LABELS",
    "check_metadata",
    "check_network_policies",
    "check_pod",
    "check_rbac",
    "check_references",
    "check_schemas",
    "check_secrets",
    "check_services",
]


REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
)


_BUILTIN_CLUSTERROLES = frozenset({"admin", "edit", "view", "cluster-admin"})


def check_schemas(objects: list[dict[str, Any]], version: str, out: Collector) -> None:
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


def check_metadata(index: Index, out: Collector) -> None:
    seen: set[str] = set()
    for obj in index.objects:
        oid = object_id(obj)
        if oid in seen:
            out.error(obj, "metadata.name", "duplicate object")
        seen.add(oid)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        missing = [label for label in REQUIRED_LABELS if label not in labels]
        if missing:
            out.warning(obj, "metadata.labels", f"missing {', '.join(missing)}")
        if obj.get("kind") not in CLUSTER_SCOPED and not (obj.get("metadata") or {}).get(
            "namespace"
        ):
            out.warning(obj, "metadata.namespace", "no namespace: lands in the current one")


def _image_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and not last.endswith(":latest")


def check_pod(pod: PodView, index: Index, out: Collector) -> None:
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
                and CREDENTIAL_KEY.match(name)
                and not FILE_SUFFIX.search(name)
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


def _referenced(pod: PodView) -> Iterator[tuple[str, str, str]]:
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


def check_references(index: Index, out: Collector) -> None:
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
    index: Index,
    namespaces: set[str],
    obj: Mapping[str, Any],
    path: str,
    text: str,
    out: Collector,
) -> None:
    for match in SVC_REF.finditer(text):
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


def check_services(index: Index, out: Collector) -> None:
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


def check_network_policies(index: Index, out: Collector) -> None:
    policies = [o for o in index.objects if o.get("kind") == "NetworkPolicy"]
    for pod in index.pods:
        if pod.spec.get("hostNetwork"):
            continue  # NetworkPolicy does not apply to host-network pods
        covering = [
            pol
            for pol in policies
            if (pol.get("metadata") or {}).get("namespace", "default") == pod.namespace
            and selects((pol.get("spec") or {}).get("podSelector"), pod.labels)
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
            if p.namespace == ns and selects(spec.get("podSelector"), p.labels)
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


def check_rbac(index: Index, out: Collector) -> None:
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


def check_secrets(index: Index, out: Collector) -> None:
    for obj in index.objects:
        if obj.get("kind") == "Secret" and (obj.get("data") or obj.get("stringData")):
            out.error(obj, "data", "a Secret with values in the manifests: a committed credential")
