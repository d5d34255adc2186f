"""``tracecheck stack validate``: rendered manifests checked without a cluster.

:func:`validate` checks every object against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields are errors), then project checks that a schema
cannot express and that the article's manifests failed: a Service whose selector matches no pod,
a scrape configuration that keeps no target, a Grafana datasource reference to a uid nobody
provisioned, a literal password, a pod without a restricted security context... It returns
:class:`~tracecheck.results.Finding` values (``object`` names the object, ``field`` the path
inside it); it raises only when it cannot check at all.

    index     the object index and the findings collector every check shares
    objects   schemas, labels, pods, references, Services, NetworkPolicies, RBAC, Secrets
    configs   the configuration files carried in ConfigMaps
"""

from __future__ import annotations

from tracecheck.results import Finding
from tracecheck.stack.kustomize import load_objects
from tracecheck.stack.validate.configs import check_config_files
from tracecheck.stack.validate.index import Collector, Index
from tracecheck.stack.validate.objects import (
    check_metadata,
    check_network_policies,
    check_pod,
    check_rbac,
    check_references,
    check_schemas,
    check_secrets,
    check_services,
)

__all__ = ["validate"]


def validate(rendered: str, k8s_version: str = "1.34") -> list[Finding]:
    """Check rendered manifests offline; returns the findings (errors first).

    Schema: each object against the Kubernetes ``k8s_version`` OpenAPI schema in strict mode
    (kubernetes-validate). Project checks: see the module docstring and stack/README.md
    "What `tracecheck stack validate` checks". Raises :class:`ConfigError` when the YAML cannot
    be parsed or kubernetes-validate is not installed.
    """
    objects = load_objects(rendered)
    out = Collector()
    check_schemas(objects, k8s_version, out)
    index = Index(objects)
    check_metadata(index, out)
    for pod in index.pods:
        check_pod(pod, index, out)
    check_services(index, out)
    check_network_policies(index, out)
    check_rbac(index, out)
    check_secrets(index, out)
    check_references(index, out)
    check_config_files(index, out)
    order = {"error": 0, "warning": 1}
    return sorted(out.findings, key=lambda f: (order.get(f.level, 2), f.object, f.field))
