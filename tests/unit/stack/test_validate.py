"""``tracecheck stack validate``: each check finds what it is for.

Two kinds of evidence: the manifests of the article the project started from (NTT TechnoCross
Advent Calendar 2025, series 2, day 10: kube-apiserver traces through the OpenTelemetry
Collector to Tempo and Prometheus; transcribed below, indentation restored) produce a finding
for each defect the issue lists; and the shipped base, which validates clean, produces exactly the
expected finding after one targeted mutation.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tracecheck.errors import ConfigError
from tracecheck.results import Finding
from tracecheck.stack.kustomize import EXTERNAL_SECRETS, HOST_NETWORK, load_objects, render
from tracecheck.stack.validate import validate

ARTICLE = r"""
apiVersion: v1
kind: ConfigMap
metadata:
  name: tempo-config
  namespace: monitoring
data:
  tempo.yaml: |
    server:
      http_listen_port: 3200
      grpc_listen_port: 9095
    distributor:
      receivers:
        otlp:
          protocols:
            grpc:
              endpoint: 0.0.0.0:4317
            http:
              endpoint: 0.0.0.0:4318
    ingester:
      lifecycler:
        ring:
          kvstore:
            store: inmemory
    metrics_generator:
      registry:
        external_labels:
          source: tempo
        collection_interval: 15s
      processor:
        service_graphs:
          histogram_buckets: [0.001, 0.005, 0.05, 0.5, 1.0, 3.0, 5.0, 10.0]
        span_metrics:
          histogram_buckets: [0.001, 0.005, 0.05, 0.5, 1.0, 3.0, 5.0, 10.0]
      storage:
        path: /tmp/tempo/generator/wal
        remote_write:
          - url: http://prometheus.monitoring.svc:9090/api/v1/write
            send_exemplars: true
    compactor:
      compaction:
        compaction_window: 1h
        max_block_bytes: 100_000_000
        block_retention: 1h
        compacted_block_retention: 10m
    storage:
      trace:
        backend: local
        local:
          path: /var/tempo/traces
        wal:
          path: /var/tempo/wal
    auth_enabled: false
    overrides:
      metrics_generator_processors: [ "service-graphs", "span-metrics" ]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: tempo
  namespace: monitoring
spec:
  selector:
    matchLabels:
      app: tempo
  template:
    metadata:
      labels:
        app: tempo
    spec:
      nodeSelector:
        kubernetes.io/hostname: minikube-m02
      initContainers:
        - name: fix-permissions
          image: busybox:latest
          command: ["sh", "-c", "chown -R 10001:10001 /var/tempo/traces"]
          volumeMounts:
            - mountPath: /var/tempo/traces
              name: tempo-storage
      containers:
        - name: tempo
          image: grafana/tempo:2.9.0
          args:
            - "-config.file=/etc/tempo.yaml"
            - "-target=all"
            - "-storage.trace.backend=local"
            - "-storage.trace.local.path=/var/tempo/traces"
            - "-auth.enabled=false"
          ports:
            - containerPort: 4317
          volumeMounts:
            - mountPath: /var/tempo/traces
              name: tempo-storage
            - mountPath: /etc/tempo.yaml
              subPath: tempo.yaml
              name: tempo-config-volume
      volumes:
        - name: tempo-storage
          hostPath:
            path: /var/lib/tempo-data
            type: DirectoryOrCreate
        - name: tempo-config-volume
          configMap:
            name: tempo-config
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: otel-collector-conf
  namespace: monitoring
data:
  otel-collector-config.yaml: |
    receivers:
      otlp:
        protocols:
          grpc:
            endpoint: 0.0.0.0:4317
    processors:
      batch:
    exporters:
      otlp:
        endpoint: tempo:4317
        tls:
          insecure: true
    service:
      pipelines:
        traces:
          receivers: [otlp]
          processors: [batch]
          exporters: [otlp]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: otel-collector
  namespace: monitoring
spec:
  selector:
    matchLabels:
      app: otel-collector
  template:
    metadata:
      labels:
        app: otel-collector
    spec:
      containers:
        - name: otel-collector
          image: otel/opentelemetry-collector:0.141.0
          args: ["--config=/conf/otel-collector-config.yaml"]
          volumeMounts:
            - mountPath: /conf
              name: otel-collector-conf-vol
      volumes:
        - name: otel-collector-conf-vol
          configMap:
            name: otel-collector-conf
            items:
              - key: otel-collector-config.yaml
                path: otel-collector-config.yaml
---
apiVersion: v1
kind: Service
metadata:
  name: otel-collector
  namespace: monitoring
spec:
  ports:
    - name: otlp-grpc
      port: 4317
      protocol: TCP
      targetPort: 4317
  selector:
    app: otel-collector
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: prometheus
  namespace: monitoring
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: prometheus-k8s-discovery
  namespace: monitoring
rules:
  - apiGroups: [""]
    resources: ["endpoints", "pods", "services"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: prometheus-k8s-discovery
  namespace: monitoring
subjects:
  - kind: ServiceAccount
    name: prometheus
    namespace: monitoring
roleRef:
  kind: Role
  name: prometheus-k8s-discovery
  apiGroup: rbac.authorization.k8s.io
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: prometheus-config
  namespace: monitoring
data:
  prometheus.yml: |
    global:
      scrape_interval: 15s
      evaluation_interval: 15s
    scrape_configs:
      - job_name: 'kubernetes-service-endpoints'
        kubernetes_sd_configs:
          - role: endpoints
            namespaces:
              names: ['monitoring']
        relabel_configs:
          - source_labels: [__meta_kubernetes_service_name]
            regex: tempo
            action: keep
          - source_labels: [__meta_kubernetes_endpoint_port_name]
            regex: http-query
            #action: keep
            action: replace
            target_label: __address__
            replacement: tempo.monitoring.svc.cluster.local:3200
          - source_labels: [__meta_kubernetes_service_annotation_prometheus_io_scrape]
            regex: "true"
            action: keep
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: prometheus
  namespace: monitoring
  labels:
    app: prometheus
spec:
  replicas: 1
  selector:
    matchLabels:
      app: prometheus
  template:
    metadata:
      labels:
        app: prometheus
    spec:
      serviceAccountName: prometheus
      nodeSelector:
        kubernetes.io/hostname: minikube-m03
      initContainers:
        - name: fix-permissions
          image: busybox:latest
          command: ["sh", "-c", "chown -R 65534:65534 /prometheus && chmod 775 /prometheus"]
          securityContext:
            runAsUser: 0
          volumeMounts:
            - mountPath: /prometheus
              name: prometheus-storage
      containers:
        - name: prometheus
          image: prom/prometheus:v3.8.0
          args:
            - "--config.file=/etc/prometheus/prometheus.yml"
            - "--storage.tsdb.path=/prometheus"
            - "--web.enable-remote-write-receiver"
            - "--enable-feature=exemplar-storage"
          ports:
            - containerPort: 9090
          volumeMounts:
            - name: config-volume
              mountPath: /etc/prometheus
            - name: prometheus-storage
              mountPath: /prometheus
      volumes:
        - name: config-volume
          configMap:
            name: prometheus-config
        - name: prometheus-storage
          hostPath:
            path: /var/lib/prometheus-data
            type: DirectoryOrCreate
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: grafana-datasources-config
  namespace: monitoring
data:
  tempo-datasource.yaml: |
    apiVersion: 1
    datasources:
      - name: Tempo
        type: tempo
        access: proxy
        url: http://tempo.monitoring.svc.cluster.local:3200
        isDefault: false
  prometheus-datasource.yaml: |
    apiVersion: 1
    datasources:
      - name: Prometheus
        type: prometheus
        uid: prometheus-internal-metrics
        url: http://prometheus.monitoring.svc.cluster.local:9090
        access: proxy
        isDefault: true
        editable: true
        jsonData:
          spanMetrics:
            datasourceUid: tempo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: grafana
  namespace: monitoring
spec:
  replicas: 1
  selector:
    matchLabels:
      app: grafana
  template:
    metadata:
      labels:
        app: grafana
    spec:
      nodeSelector:
        kubernetes.io/hostname: minikube-m03
      initContainers:
        - name: fix-permissions
          image: busybox:latest
          command: ["sh", "-c", "chown -R 472:472 /var/lib/grafana && chmod 770 /var/lib/grafana"]
          securityContext:
            runAsUser: 0
          volumeMounts:
            - mountPath: /var/lib/grafana
              name: grafana-storage
      containers:
        - name: grafana
          image: grafana/grafana:12.3.0
          env:
            - name: GF_SECURITY_ADMIN_USER
              value: admin
            - name: GF_SECURITY_ADMIN_PASSWORD
              value: admin
            - name: GF_PATHS_DATA
              value: /var/lib/grafana
          ports:
            - containerPort: 3000
              name: http
          volumeMounts:
            - name: grafana-data-source
              mountPath: /etc/grafana/provisioning/datasources/
              readOnly: true
            - name: grafana-storage
              mountPath: /var/lib/grafana
      volumes:
        - name: grafana-data-source
          configMap:
            name: grafana-datasources-config
            items:
              - key: tempo-datasource.yaml
                path: tempo-datasource.yaml
              - key: prometheus-datasource.yaml
                path: prometheus-datasource.yaml
        - name: grafana-storage
          hostPath:
            path: /var/lib/grafana-data
            type: DirectoryOrCreate
---
apiVersion: v1
kind: Service
metadata:
  name: grafana
  namespace: monitoring
spec:
  type: LoadBalancer
  ports:
    - port: 8080
      targetPort: 3000
      protocol: TCP
      name: http
  selector:
    app: grafana
"""


@pytest.fixture(scope="module")
def article_findings() -> list[Finding]:
    return validate(ARTICLE)


def has(findings: list[Finding], level: str, obj: str, text: str) -> bool:
    return any(f.level == level and f.object == obj and text in f.message for f in findings)


# Each defect the issue and the reference documents name, with the finding that reports it.
ARTICLE_DEFECTS = [
    # "Tempo and Prometheus have no Service": the configuration names Services nobody defines.
    (
        "error",
        "ConfigMap/monitoring/grafana-datasources-config",
        "tempo.monitoring.svc.cluster.local:3200 names Service monitoring/tempo, which is not "
        "defined",
    ),
    (
        "error",
        "ConfigMap/monitoring/grafana-datasources-config",
        "prometheus.monitoring.svc.cluster.local:9090 names Service monitoring/prometheus",
    ),
    (
        "error",
        "ConfigMap/monitoring/tempo-config",
        "prometheus.monitoring.svc:9090 names Service monitoring/prometheus, which is not defined",
    ),
    # "Prometheus's relabel rules keep no target".
    (
        "error",
        "ConfigMap/monitoring/prometheus-config",
        "keeps none of the 2 endpoints targets these manifests create",
    ),
    # "the Grafana datasources do not link": spanMetrics is ignored, Tempo has no uid.
    (
        "error",
        "ConfigMap/monitoring/grafana-datasources-config",
        "not a prometheus datasource field: ignored by Grafana",
    ),
    ("error", "ConfigMap/monitoring/grafana-datasources-config", "datasource without uid"),
    (
        "error",
        "ConfigMap/monitoring/grafana-datasources-config",
        "datasource uid 'tempo' is not provisioned",
    ),
    (
        "warning",
        "ConfigMap/monitoring/grafana-datasources-config",
        "no exemplarTraceIdDestinations",
    ),
    ("warning", "ConfigMap/monitoring/grafana-datasources-config", "no serviceMap"),
    # Tempo 2.x overrides format and generator storage.
    ("error", "ConfigMap/monitoring/tempo-config", "legacy flat overrides"),
    ("warning", "ConfigMap/monitoring/tempo-config", "no processor enabled"),
    ("warning", "ConfigMap/monitoring/tempo-config", "under /tmp"),
    # Collector: no memory_limiter, no health_check for probes.
    ("warning", "ConfigMap/monitoring/otel-collector-conf", "no memory_limiter"),
    ("warning", "ConfigMap/monitoring/otel-collector-conf", "no health_check extension"),
    # The admin password is a literal; the UI is published on a LoadBalancer.
    ("error", "Deployment/monitoring/grafana", "literal credential in GF_SECURITY_ADMIN_PASSWORD"),
    ("warning", "Service/monitoring/grafana", "LoadBalancer publishes the port"),
    # Root busybox:latest chown init containers and hostPath volumes instead of fsGroup.
    ("error", "Deployment/monitoring/prometheus", "runs as UID 0"),
    ("error", "Deployment/monitoring/tempo", "image 'busybox:latest' is not pinned to a tag"),
    ("error", "Deployment/monitoring/tempo", "hostPath volume"),
    ("error", "Deployment/monitoring/grafana", "hostPath volume"),
    # No hardening at all: security context, resources, probes, network policies.
    ("error", "Deployment/monitoring/otel-collector", "may run as root"),
    ("error", "Deployment/monitoring/otel-collector", "privilege escalation not disabled"),
    ("error", "Deployment/monitoring/otel-collector", "capabilities not dropped"),
    ("error", "Deployment/monitoring/otel-collector", "no seccomp profile"),
    ("error", "Deployment/monitoring/otel-collector", "no cpu/memory"),
    ("warning", "Deployment/monitoring/otel-collector", "no readiness probe"),
    ("warning", "Deployment/monitoring/otel-collector", "runs as the default ServiceAccount"),
    ("warning", "Deployment/monitoring/prometheus", "API token automounted"),
    ("warning", "Deployment/monitoring/tempo", "no NetworkPolicy restricts ingress"),
    ("warning", "Deployment/monitoring/tempo", "missing app.kubernetes.io/name"),
    # RollingUpdate on a single data volume: two Tempo pods on one WAL during a rollout.
    ("warning", "Deployment/monitoring/tempo", "RollingUpdate with a data volume"),
]


@pytest.mark.parametrize(("level", "obj", "text"), ARTICLE_DEFECTS, ids=lambda x: str(x)[:40])
def test_each_defect_of_the_articles_manifests_is_reported(
    article_findings: list[Finding], level: str, obj: str, text: str
) -> None:
    assert has(article_findings, level, obj, text), "\n".join(map(str, article_findings))


def test_the_article_passes_the_schema_check_its_problems_are_semantic(
    article_findings: list[Finding],
) -> None:
    # kubectl applied these objects: the 1.34 schemas accept them. Only project checks fail.
    assert not [f for f in article_findings if "schema" in f.message]
    assert sum(f.level == "error" for f in article_findings) >= 25


# --------------------------------------------------------- mutations of the shipped base


@pytest.fixture(scope="module")
def base_objects() -> list[dict[str, Any]]:
    objs = load_objects(render("base", env=os.environ))
    assert validate(yaml.safe_dump_all(objs)) == []
    return objs


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"].startswith(name):
            return o
    raise AssertionError(f"{kind}/{name}")


def container(obj: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return c


def mutate_cm(objs: list[dict[str, Any]], prefix: str, key: str, fn: Callable[[Any], None]) -> None:
    cm = find(objs, "ConfigMap", prefix)
    doc = yaml.safe_load(cm["data"][key])
    fn(doc)
    cm["data"][key] = yaml.safe_dump(doc)


def _drop_tempo_service(objs: list[dict[str, Any]]) -> None:
    objs.remove(find(objs, "Service", "tempo"))


def _selector_typo(objs: list[dict[str, Any]]) -> None:
    find(objs, "Service", "prometheus")["spec"]["selector"]["app.kubernetes.io/name"] = "prom"


def _target_port_typo(objs: list[dict[str, Any]]) -> None:
    find(objs, "Service", "grafana")["spec"]["ports"][0]["targetPort"] = "web"


def _tempo_uid_removed(objs: list[dict[str, Any]]) -> None:
    def fn(doc: Any) -> None:
        del doc["datasources"][1]["uid"]

    mutate_cm(objs, "grafana-datasources", "datasources.yaml", fn)


def _span_metrics_on_prometheus(objs: list[dict[str, Any]]) -> None:
    def fn(doc: Any) -> None:
        doc["datasources"][0]["jsonData"]["spanMetrics"] = {"datasourceUid": "tempo"}

    mutate_cm(objs, "grafana-datasources", "datasources.yaml", fn)


def _exemplars_to_prometheus(objs: list[dict[str, Any]]) -> None:
    def fn(doc: Any) -> None:
        doc["datasources"][0]["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] = (
            "prometheus"
        )

    mutate_cm(objs, "grafana-datasources", "datasources.yaml", fn)


def _tags_unescaped(objs: list[dict[str, Any]]) -> None:
    cm = find(objs, "ConfigMap", "grafana-datasources")
    cm["data"]["datasources.yaml"] = cm["data"]["datasources.yaml"].replace("$$__tags", "$__tags")


def _literal_password(objs: list[dict[str, Any]]) -> None:
    container(find(objs, "Deployment", "grafana"))["env"].append(
        {"name": "GF_SECURITY_ADMIN_PASSWORD", "value": "hunter2"}
    )


def _committed_secret(objs: list[dict[str, Any]]) -> None:
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "grafana-admin", "namespace": "monitoring"},
            "stringData": {"admin-password": "hunter2"},
        }
    )


def _external_secret_undeclared(objs: list[dict[str, Any]]) -> None:
    del find(objs, "Deployment", "grafana")["metadata"]["annotations"][EXTERNAL_SECRETS]


def _configmap_missing(objs: list[dict[str, Any]]) -> None:
    objs.remove(find(objs, "ConfigMap", "tempo-config"))


def _escalation(objs: list[dict[str, Any]]) -> None:
    del container(find(objs, "Deployment", "tempo"))["securityContext"]["allowPrivilegeEscalation"]


def _root(objs: list[dict[str, Any]]) -> None:
    find(objs, "Deployment", "prometheus")["spec"]["template"]["spec"]["securityContext"][
        "runAsNonRoot"
    ] = False


def _no_limits(objs: list[dict[str, Any]]) -> None:
    del container(find(objs, "Deployment", "otel-collector"))["resources"]["limits"]


def _latest(objs: list[dict[str, Any]]) -> None:
    container(find(objs, "Deployment", "grafana"))["image"] = "grafana/grafana:latest"


def _host_path(objs: list[dict[str, Any]]) -> None:
    spec = find(objs, "Deployment", "tempo")["spec"]["template"]["spec"]
    spec["volumes"][1] = {"name": "data", "hostPath": {"path": "/var/lib/tempo-data"}}


def _host_network_unexplained(objs: list[dict[str, Any]]) -> None:
    del find(objs, "DaemonSet", "otel-agent")["metadata"]["annotations"][HOST_NETWORK]


def _role_missing(objs: list[dict[str, Any]]) -> None:
    objs.remove(find(objs, "ClusterRole", "tracecheck-prometheus"))


def _cluster_admin(objs: list[dict[str, Any]]) -> None:
    find(objs, "ClusterRoleBinding", "tracecheck-prometheus")["roleRef"]["name"] = "cluster-admin"


def _policy_port_typo(objs: list[dict[str, Any]]) -> None:
    find(objs, "NetworkPolicy", "tempo")["spec"]["ingress"][0]["ports"][0]["port"] = "otlp"


def _default_deny_removed(objs: list[dict[str, Any]]) -> None:
    objs.remove(find(objs, "NetworkPolicy", "default-deny-ingress"))
    objs.remove(find(objs, "NetworkPolicy", "grafana"))


def _tempo_receiver_localhost(objs: list[dict[str, Any]]) -> None:
    def fn(doc: Any) -> None:
        del doc["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]

    mutate_cm(objs, "tempo-config", "tempo.yaml", fn)


def _local_blocks_without_wal(objs: list[dict[str, Any]]) -> None:
    def fn(doc: Any) -> None:
        del doc["metrics_generator"]["traces_storage"]

    mutate_cm(objs, "tempo-config", "tempo.yaml", fn)


def _collector_receiver_default(objs: list[dict[str, Any]]) -> None:
    def fn(doc: Any) -> None:
        doc["receivers"]["otlp"]["protocols"]["http"] = None

    mutate_cm(objs, "otel-collector-config", "config.yaml", fn)


def _scrape_keeps_nothing(objs: list[dict[str, Any]]) -> None:
    def fn(doc: Any) -> None:
        doc["scrape_configs"].append(
            {
                "job_name": "annotated",
                "kubernetes_sd_configs": [{"role": "endpointslice"}],
                "relabel_configs": [
                    {
                        "source_labels": [
                            "__meta_kubernetes_service_annotation_prometheus_io_scrape"
                        ],
                        "regex": "true",
                        "action": "keep",
                    }
                ],
            }
        )

    mutate_cm(objs, "prometheus-config", "prometheus.yml", fn)


def _port_typo_in_url(objs: list[dict[str, Any]]) -> None:
    cm = find(objs, "ConfigMap", "prometheus-config")
    cm["data"]["prometheus.yml"] = cm["data"]["prometheus.yml"].replace(
        "tempo.monitoring.svc.cluster.local:3200", "tempo.monitoring.svc.cluster.local:3100"
    )


def _credential_in_config(objs: list[dict[str, Any]]) -> None:
    def fn(doc: Any) -> None:
        doc["scrape_configs"][3]["authorization"] = {"credentials": "abc.def.ghi"}

    mutate_cm(objs, "prometheus-config", "prometheus.yml", fn)


def _no_receiver_flag(objs: list[dict[str, Any]]) -> None:
    args = container(find(objs, "Deployment", "prometheus"))["args"]
    args.remove("--web.enable-remote-write-receiver")
    args.remove("--enable-feature=exemplar-storage")


def _unknown_field(objs: list[dict[str, Any]]) -> None:
    find(objs, "Service", "tempo")["spec"]["selectr"] = {"a": "b"}


def _wrong_type(objs: list[dict[str, Any]]) -> None:
    find(objs, "Deployment", "tempo")["spec"]["replicas"] = "one"


MUTATIONS: list[tuple[Callable[[list[dict[str, Any]]], None], str, str, str]] = [
    (
        _drop_tempo_service,
        "error",
        "ConfigMap/monitoring/otel-collector-config",
        "tempo.monitoring.svc.cluster.local:4317 names Service monitoring/tempo, which is not "
        "defined",
    ),
    (_selector_typo, "error", "Service/monitoring/prometheus", "selects no pod template"),
    (_target_port_typo, "error", "Service/monitoring/grafana", "has no port 'web'"),
    (_tempo_uid_removed, "error", "ConfigMap/monitoring/grafana-datasources", "without uid"),
    (
        _span_metrics_on_prometheus,
        "error",
        "ConfigMap/monitoring/grafana-datasources",
        "not a prometheus datasource field",
    ),
    (_exemplars_to_prometheus, "error", "ConfigMap/monitoring/grafana-datasources", "is not Tempo"),
    (_tags_unescaped, "error", "ConfigMap/monitoring/grafana-datasources", "write $$__tags"),
    (_literal_password, "error", "Deployment/monitoring/grafana", "literal credential"),
    (_committed_secret, "error", "Secret/monitoring/grafana-admin", "committed credential"),
    (
        _external_secret_undeclared,
        "error",
        "Deployment/monitoring/grafana",
        "'grafana-admin' is not",
    ),
    (_configmap_missing, "error", "Deployment/monitoring/tempo", "ConfigMap 'tempo-config-"),
    (_escalation, "error", "Deployment/monitoring/tempo", "privilege escalation not disabled"),
    (_root, "error", "Deployment/monitoring/prometheus", "may run as root"),
    (_no_limits, "error", "Deployment/monitoring/otel-collector", "no memory"),
    (_latest, "error", "Deployment/monitoring/grafana", "is not pinned"),
    (_host_path, "error", "Deployment/monitoring/tempo", "hostPath volume"),
    (_host_network_unexplained, "error", "DaemonSet/monitoring/otel-agent", "host network without"),
    (_role_missing, "error", "ClusterRoleBinding/tracecheck-prometheus", "is not defined"),
    (_cluster_admin, "error", "ClusterRoleBinding/tracecheck-prometheus", "binds cluster-admin"),
    (_policy_port_typo, "error", "NetworkPolicy/monitoring/tempo", "named port 'otlp'"),
    (_default_deny_removed, "warning", "Deployment/monitoring/grafana", "no NetworkPolicy"),
    (
        _tempo_receiver_localhost,
        "error",
        "ConfigMap/monitoring/tempo-config",
        "binds OTLP receivers",
    ),
    (
        _local_blocks_without_wal,
        "error",
        "ConfigMap/monitoring/tempo-config",
        "requires traces wal",
    ),
    (
        _collector_receiver_default,
        "error",
        "ConfigMap/monitoring/otel-collector-config",
        "binds OTLP to localhost",
    ),
    (_scrape_keeps_nothing, "error", "ConfigMap/monitoring/prometheus-config", "keeps none of"),
    (_port_typo_in_url, "error", "ConfigMap/monitoring/prometheus-config", "has no port 3100"),
    (
        _credential_in_config,
        "error",
        "ConfigMap/monitoring/prometheus-config",
        "literal credential",
    ),
    (
        _no_receiver_flag,
        "error",
        "ConfigMap/monitoring/tempo-config",
        "without --web.enable-remote-write-receiver",
    ),
    (_no_receiver_flag, "error", "ConfigMap/monitoring/tempo-config", "exemplars dropped"),
    (_unknown_field, "error", "Service/monitoring/tempo", "Kubernetes 1.34 schema"),
    (_wrong_type, "error", "Deployment/monitoring/tempo", "Kubernetes 1.34 schema"),
]


@pytest.mark.parametrize(
    ("mutation", "level", "obj", "text"),
    MUTATIONS,
    ids=[m[0].__name__.strip("_") for m in MUTATIONS],
)
def test_one_mutation_of_the_base_gives_its_finding(
    base_objects: list[dict[str, Any]],
    mutation: Callable[[list[dict[str, Any]]], None],
    level: str,
    obj: str,
    text: str,
) -> None:
    objs = copy.deepcopy(base_objects)
    mutation(objs)
    findings = validate(yaml.safe_dump_all(objs))
    matching = [f for f in findings if f.level == level and f.object.startswith(obj)]
    assert any(text in f.message for f in matching), "\n".join(map(str, findings))


def test_findings_render_one_line_each_and_errors_sort_first(
    article_findings: list[Finding],
) -> None:
    levels = [f.level for f in article_findings]
    assert levels == sorted(levels, key=lambda level: level != "error")
    for f in article_findings:
        line = str(f)
        assert "\n" not in line
        assert line.startswith(f"{f.level}: {f.object}")


def test_invalid_yaml_or_non_objects_are_configuration_errors() -> None:
    with pytest.raises(ConfigError) as err:
        validate("a: [1,\n")
    assert "invalid YAML" in str(err.value)
    with pytest.raises(ConfigError) as err:
        validate("- just\n- a list\n")
    assert "document 1: not a mapping" in str(err.value)
    findings = validate("metadata: {name: x}\n")
    assert [(f.level, f.message) for f in findings if f.level == "error"] == [
        ("error", "document without apiVersion/kind")
    ]


def test_an_object_without_a_builtin_schema_is_reported_not_crashed() -> None:
    crd_object = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x", "namespace": "monitoring"},
    }
    findings = validate(yaml.safe_dump(crd_object))
    assert any("no Kubernetes 1.34 schema" in f.message for f in findings)
