"""What every offline check of rendered manifests shares: an index of the objects (by kind,
by namespace, the pod templates) and the collector of findings."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tracecheck.results import Finding
from tracecheck.stack.kustomize import CLUSTER_SCOPED, PodView, object_id, pod_view

__all__ = [
    "CREDENTIAL_KEY",
    "FILE_SUFFIX",
    "SVC_REF",
    "Collector",
    "Index",
    "selects",
    "walk",
    "yaml_or_none",
]


CREDENTIAL_KEY = re.compile(
    r"(?i)^(.*[_.-])?(password|passwd|secret|token|api[_-]?key|private[_-]?key|credentials?)$"
)


FILE_SUFFIX = re.compile(r"(?i)(__file|_file|_path|_dir)$")


SVC_REF = re.compile(
    r"(?<![A-Za-z0-9.-])([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)"
    r"\.svc(?:\.cluster\.local)?(?::(\d{1,5}))?(?![A-Za-z0-9-])"
)


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
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
class Index:
    objects: list[dict[str, Any]]
    pods: list[PodView] = field(default_factory=list)
    names: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for obj in self.objects:
            meta = obj.get("metadata") or {}
            ns = "" if obj.get("kind") in CLUSTER_SCOPED else str(meta.get("namespace") or "")
            self.names[(str(obj.get("kind")), ns, str(meta.get("name")))] = obj
            view = pod_view(obj)
            if view is not None:
                self.pods.append(view)

    def has(self, kind: str, namespace: str, name: str) -> bool:
        ns = "" if kind in CLUSTER_SCOPED else namespace
        return (kind, ns, name) in self.names

    def namespaces(self) -> set[str]:
        return {n for (k, _, n) in self.names if k == "Namespace"} | {
            ns for (_, ns, _) in self.names if ns
        }

    def services(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {n: o for (k, ns, n), o in self.names.items() if k == "Service" and ns == namespace}

    def pods_behind(self, namespace: str, selector: Mapping[str, Any]) -> list[PodView]:
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


class Collector:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, obj: Mapping[str, Any] | str, path: str, message: str) -> None:
        oid = obj if isinstance(obj, str) else object_id(obj)
        self.findings.append(Finding("error", path, message, object=oid))

    def warning(self, obj: Mapping[str, Any] | str, path: str, message: str) -> None:
        oid = obj if isinstance(obj, str) else object_id(obj)
        self.findings.append(Finding("warning", path, message, object=oid))


def yaml_or_none(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every mapping entry in a parsed document."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            yield sub, str(key), value
            yield from walk(value, sub)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
