"""stack/: the kustomize base, components and overlays render, validate offline, and agree with
the files the local pipeline runs; the apiserver's TracingConfiguration, its static-pod patch and
the kind config fit together. Binaries used where they exist: kustomize/kubectl, promtool and the
OpenTelemetry Collector of the local build (the same versions the local pipeline runs)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tracecheck.errors import ConfigError, Unreachable, UsageError
from tracecheck.stack import tools
from tracecheck.stack.apply import apply
from tracecheck.stack.kustomize import (
    CLUSTER_SCOPED,
    EXTERNAL_SECRETS,
    TARGETS,
    load_objects,
    render,
    retarget,
)
from tracecheck.stack.local import (
    LocalStack,
    default_cache_dir,
    default_state_dir,
    render_local_config,
)
from tracecheck.stack.local.paths import find_repo_root
from tracecheck.stack.tools import find_kustomize, kubectl_command
from tracecheck.stack.validate import validate

REPO = find_repo_root(Path(__file__).parent)
STACK = REPO / "stack"
COMPONENTS = ("collector-spanmetrics", "load", "smoke-cronjob", "smoke-monitoring-cert", "watch")

# Variants beyond the named targets: the base with each component, and production with the one
# component that changes the collector's scaling.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "base+collector-spanmetrics": ("base", ("collector-spanmetrics",)),
    "base+smoke": ("base", ("smoke-cronjob",)),
    "base+smoke+monitoring-cert": ("base", ("smoke-cronjob", "smoke-monitoring-cert")),
    "base+load": ("base", ("load",)),
    "production+collector-spanmetrics": ("overlays/production", ("collector-spanmetrics",)),
    "base+watch": ("base", ("watch",)),
}


def compose(where: Path, resource: str, components: tuple[str, ...]) -> str:
    """A kustomization in ``where`` using stack/<resource> and the given components; its path."""
    rel = os.path.relpath(STACK, where)
    doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"{rel}/{resource}"],
        "components": [f"{rel}/components/{c}" for c in components],
    }
    where.mkdir(parents=True, exist_ok=True)
    (where / "kustomization.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return str(where)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {t: render(t, env=os.environ) for t in TARGETS}
    root = tmp_path_factory.mktemp("variants")
    for name, (resource, comps) in VARIANTS.items():
        out[name] = render(compose(root / name, resource, comps), env=os.environ)
    return out


@pytest.fixture(scope="module")
def built() -> LocalStack:
    """The local build's binaries (promtool, otelcol): built once, cached outside the repo. Only
    the binaries are needed here, not a running pipeline."""
    return LocalStack(
        repo=REPO, state_dir=default_state_dir(os.environ), cache_dir=default_cache_dir(os.environ)
    )


def objects_of(text: str) -> list[dict[str, Any]]:
    return load_objects(text)


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} objects"
    return hits[0]


def configmap(objs: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    # Generated ConfigMaps carry a content hash suffix (name-<hash>).
    hits = [
        o
        for o in objs
        if o["kind"] == "ConfigMap"
        and re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", o["metadata"]["name"])
    ]
    assert len(hits) == 1, prefix
    return hits[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


# ------------------------------------------------------------------------- render & validate


EXPECTED_KINDS = {
    "base": {
        "Namespace": 1,
        "Deployment": 4,
        "DaemonSet": 1,
        "Service": 4,
        "NetworkPolicy": 5,
        "ConfigMap": 6,
        "ServiceAccount": 5,
        "ClusterRole": 1,
        "ClusterRoleBinding": 1,
    },
    "minikube": {
        "PersistentVolume": 3,
        "PersistentVolumeClaim": 3,
        "StorageClass": 1,
        "CronJob": 1,
    },
    "production": {
        "PersistentVolumeClaim": 3,
        "HorizontalPodAutoscaler": 1,
        "PodDisruptionBudget": 1,
        "Service": 5,
        "CronJob": 1,
    },
}


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_renders_and_validates_without_findings(
    rendered: dict[str, str], target: str
) -> None:
    objs = objects_of(rendered[target])
    kinds: dict[str, int] = {}
    for o in objs:
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
    for kind, count in EXPECTED_KINDS[target].items():
        assert kinds.get(kind) == count, (kind, kinds)
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] not in CLUSTER_SCOPED} == {
        "monitoring"
    }
    findings = validate(rendered[target])
    assert findings == [], "\n".join(map(str, findings))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_component_variant_validates_without_findings(
    rendered: dict[str, str], variant: str
) -> None:
    findings = validate(rendered[variant])
    assert findings == [], "\n".join(map(str, findings))


def test_spanmetrics_component_switches_the_gateway_config_and_pins_one_replica(
    rendered: dict[str, str],
) -> None:
    base = find(objects_of(rendered["base"]), "Deployment", "otel-collector")
    assert pod_spec(base)["containers"][0]["args"] == ["--config=/conf/config.yaml"]
    variant = objects_of(rendered["production+collector-spanmetrics"])
    gw = find(variant, "Deployment", "otel-collector")
    assert pod_spec(gw)["containers"][0]["args"] == ["--config=/conf/config-spanmetrics.yaml"]
    assert gw["spec"]["replicas"] == 1
    hpa = find(variant, "HorizontalPodAutoscaler", "otel-collector")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 1)
    # The agent keeps forwarding with the plain config.
    agent = find(variant, "DaemonSet", "otel-agent")
    assert pod_spec(agent)["containers"][0]["args"][0] == "--config=/conf/config.yaml"


def test_monitoring_cert_component_mounts_the_kubeconfig_and_narrows_the_paths(
    rendered: dict[str, str],
) -> None:
    plain = find(objects_of(rendered["base+smoke"]), "CronJob", "tracecheck-smoke")
    cert = find(objects_of(rendered["base+smoke+monitoring-cert"]), "CronJob", "tracecheck-smoke")
    env = {e["name"]: e["value"] for e in pod_spec(cert)["containers"][0]["env"]}
    plain_env = {e["name"]: e["value"] for e in pod_spec(plain)["containers"][0]["env"]}
    assert plain_env["TRACECHECK_APISERVER_PATHS"].startswith("/api/v1/namespaces/monitoring")
    # system:monitoring may GET only the health endpoints and /metrics.
    assert env["TRACECHECK_APISERVER_PATHS"] == "/readyz,/livez,/healthz"
    assert env["TRACECHECK_APISERVER_KUBECONFIG"] == "/etc/tracecheck/kubeconfig/kubeconfig"
    vols = {v["name"]: v for v in pod_spec(cert)["volumes"]}
    assert (
        vols["monitoring-kubeconfig"]["secret"]["secretName"] == "tracecheck-monitoring-kubeconfig"
    )
    assert cert["metadata"]["annotations"][EXTERNAL_SECRETS] == ("tracecheck-monitoring-kubeconfig")
    # Without the annotation the validator refuses the undefined Secret.
    del cert["metadata"]["annotations"]
    objs = [o for o in objects_of(rendered["base+smoke+monitoring-cert"]) if o["kind"] != "CronJob"]
    findings = validate(yaml.safe_dump_all([*objs, cert]))
    assert [f.message for f in findings if f.level == "error"] == [
        "Secret 'tracecheck-monitoring-kubeconfig' is not defined (created outside the manifests? "
        "list it in tracecheck.io/external-secrets)"
    ]


def test_smoke_cronjob_runs_the_documented_command_with_its_own_identity(
    rendered: dict[str, str],
) -> None:
    objs = objects_of(rendered["minikube"])
    cron = find(objs, "CronJob", "tracecheck-smoke")
    spec = pod_spec(cron)
    assert spec["containers"][0]["args"] == [
        "smoke",
        "--wait-ready=2m",
        "--output",
        "json",
        "--output",
        "junit:/reports/smoke.xml",
    ]
    assert spec["serviceAccountName"] == "tracecheck-smoke"
    assert spec["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/reports"] == "reports"
    projected = {v["name"]: v for v in spec["volumes"]}["apiserver-credentials"]["projected"]
    assert projected["sources"][0]["serviceAccountToken"]["path"] == "token"
    # Least privilege: list pods in its namespace, get its own Namespace object; nothing else.
    role = find(objs, "Role", "tracecheck-smoke")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    crole = find(objs, "ClusterRole", "tracecheck-smoke")
    assert crole["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["namespaces"],
            "resourceNames": ["monitoring"],
            "verbs": ["get"],
        }
    ]
    # The burst makes a sampled request likely at the shipped 1 % sampling rate.
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    rate = yaml.safe_load((STACK / "apiserver" / "tracing-config.yaml").read_text())[
        "samplingRatePerMillion"
    ]
    assert 1 - (1 - rate / 1e6) ** int(env["TRACECHECK_APISERVER_BURST"]) > 0.95


def test_watch_component_runs_the_watcher_and_gives_prometheus_its_rules_and_scrape_job(
    rendered: dict[str, str],
) -> None:
    import fnmatch

    objs = objects_of(rendered["base+watch"])
    dep = find(objs, "Deployment", "tracecheck-watch")
    spec = pod_spec(dep)
    container = spec["containers"][0]
    assert container["args"] == [
        "watch",
        "--listen=0.0.0.0:9464",
        "--interval=60s",
        "--jitter=0.1",
        "--grace=10s",
    ]
    # The grace period for the last round ends well inside the kubelet's.
    assert spec["terminationGracePeriodSeconds"] > 10
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464}]
    assert (spec["serviceAccountName"], spec["automountServiceAccountToken"]) == (
        "tracecheck-watch",
        False,
    )
    # Same backends, paths and burst as the smoke CronJob: the two are alternatives.
    cron = pod_spec(find(objects_of(rendered["minikube"]), "CronJob", "tracecheck-smoke"))
    assert container["env"] == cron["containers"][0]["env"]
    role = find(objs, "Role", "tracecheck-watch")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    assert find(objs, "ClusterRole", "tracecheck-watch")["rules"][0]["resourceNames"] == [
        "monitoring"
    ]
    # The Service selects the watcher only (CronJob pods share the name label).
    svc = find(objs, "Service", "tracecheck-watch")
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "watch"
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9464, "targetPort": "metrics"}]
    policy = find(objs, "NetworkPolicy", "tracecheck-watch")
    assert (
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"][
            "app.kubernetes.io/name"
        ]
        == "prometheus"
    )

    # Prometheus mounts the rules and the job's target where its configuration looks for them.
    prom = pod_spec(find(objs, "Deployment", "prometheus"))
    mounts = {m["name"]: m["mountPath"] for m in prom["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v["configMap"]["name"] for v in prom["volumes"] if "configMap" in v}
    config = yaml.safe_load(configmap(objs, "prometheus-config")["data"]["prometheus.yml"])
    rules = configmap(objs, "prometheus-rules")
    targets = configmap(objs, "prometheus-targets-watch")
    assert volumes["rules"] == rules["metadata"]["name"]
    assert volumes["targets-watch"] == targets["metadata"]["name"]
    rule_files = [f"{mounts['rules']}/{key}" for key in rules["data"]]
    assert [f for f in rule_files if any(fnmatch.fnmatch(f, g) for g in config["rule_files"])] == [
        "/etc/prometheus-rules/tracecheck.rules.yaml"
    ]
    job = {j["job_name"]: j for j in config["scrape_configs"]}["tracecheck-watch"]
    globs = [g for sd in job["file_sd_configs"] for g in sd["files"]]
    target_files = [f"{mounts['targets-watch']}/{key}" for key in targets["data"]]
    assert [f for f in target_files if any(fnmatch.fnmatch(f, g) for g in globs)] == [
        "/etc/prometheus-targets/prometheus-targets-watch.yml"
    ]
    # ... holding the shipped rules byte for byte, and the watcher's Service as the target.
    assert rules["data"]["tracecheck.rules.yaml"] == (
        STACK / "prometheus" / "rules" / "tracecheck.rules.yaml"
    ).read_text(encoding="utf-8")
    assert yaml.safe_load(targets["data"]["prometheus-targets-watch.yml"]) == [
        {"targets": ["tracecheck-watch.monitoring.svc.cluster.local:9464"]}
    ]
    # Without the component Prometheus has neither: the job has no target, no rule loads.
    base_prom = pod_spec(find(objects_of(rendered["base"]), "Deployment", "prometheus"))
    assert {v["name"] for v in base_prom["volumes"]} & {"rules", "targets-watch"} == set()
    assert "tracecheck-watch.monitoring.svc" not in rendered["base"]


def test_promtool_accepts_the_alert_rules_as_deployed(
    rendered: dict[str, str], built: LocalStack, tmp_path: Path
) -> None:
    rules = configmap(objects_of(rendered["base+watch"]), "prometheus-rules")["data"]
    path = tmp_path / "tracecheck.rules.yaml"
    path.write_text(rules["tracecheck.rules.yaml"], encoding="utf-8")
    proc = subprocess.run(
        [str(built.binary("promtool")), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 5 rules found" in proc.stdout


def test_load_component_is_an_indexed_job_of_shards_under_one_run_id(
    rendered: dict[str, str],
) -> None:
    objs = objects_of(rendered["base+load"])
    job = find(objs, "Job", "tracecheck-load")
    spec = pod_spec(job)
    (container,) = spec["containers"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"][1:])
    assert container["args"][0] == "load"
    # One pod per shard, all at once; a failed shard is never run a second time.
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == int(args["shards"])
    assert job["spec"]["backoffLimit"] == 0
    env = {e["name"]: e for e in container["env"]}
    assert args["shard"] == "$(LOAD_SHARD)" and args["run-id"] == "$(LOAD_RUN_ID)"
    assert env["LOAD_SHARD"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    assert env["LOAD_RUN_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['batch.kubernetes.io/controller-uid']"
    )
    assert float(args["rate"]) > 0 and float(args["duration"]) > 0
    # No apiserver access: its own ServiceAccount, no token, no role.
    assert spec["serviceAccountName"] == "tracecheck-load"
    assert spec["automountServiceAccountToken"] is False
    assert not [o for o in objs if o["kind"] in ("Role", "RoleBinding", "ClusterRoleBinding")
                and "load" in o["metadata"]["name"]]  # fmt: skip
    # The collector's NetworkPolicy admits OTLP from these pods.
    policy = find(objs, "NetworkPolicy", "otel-collector")
    selectors = [p["podSelector"]["matchLabels"] for p in policy["spec"]["ingress"][0]["from"]
                 if "podSelector" in p]  # fmt: skip
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert any(sel.items() <= labels.items() for sel in selectors)


def test_minikube_overlay_uses_local_volumes_not_hostpath(rendered: dict[str, str]) -> None:
    objs = objects_of(rendered["minikube"])
    for name in ("tempo", "prometheus", "grafana"):
        spec = pod_spec(find(objs, "Deployment", name))
        data = {v["name"]: v for v in spec["volumes"]}["data"]
        assert data == {"name": "data", "persistentVolumeClaim": {"claimName": f"{name}-data"}}
        assert spec["securityContext"]["fsGroup"] > 0
        pv = find(objs, "PersistentVolume", f"tracecheck-{name}-data")
        assert pv["spec"]["local"]["path"] == f"/data/tracecheck/{name}"
        assert pv["spec"]["claimRef"] == {"namespace": "monitoring", "name": f"{name}-data"}
        pvc = find(objs, "PersistentVolumeClaim", f"{name}-data")
        assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert not any(
        "hostPath" in v for o in objs if o["kind"] == "Deployment" for v in pod_spec(o)["volumes"]
    )
    policy = find(objs, "NetworkPolicy", "otel-collector")
    assert [p.get("ipBlock", {}).get("cidr") for p in policy["spec"]["ingress"][0]["from"]] == [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        None,  # the smoke job's pods
    ]


def test_production_overlay_scales_the_gateway_and_scrapes_every_replica(
    rendered: dict[str, str],
) -> None:
    objs = objects_of(rendered["production"])
    gw = find(objs, "Deployment", "otel-collector")
    assert gw["spec"]["replicas"] == 2
    hpa = find(objs, "HorizontalPodAutoscaler", "otel-collector")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "otel-collector",
    }
    headless = find(objs, "Service", "otel-collector-headless")
    assert headless["spec"]["clusterIP"] == "None"
    prom = yaml.safe_load(configmap(objs, "prometheus-config")["data"]["prometheus.yml"])
    job = {j["job_name"]: j for j in prom["scrape_configs"]}["otel-collector"]
    assert job["dns_sd_configs"] == [
        {
            "names": ["otel-collector-headless.monitoring.svc.cluster.local"],
            "type": "A",
            "port": 8888,
        }
    ]
    for name in ("tempo", "prometheus", "grafana"):
        data = {v["name"]: v for v in pod_spec(find(objs, "Deployment", name))["volumes"]}["data"]
        assert data["persistentVolumeClaim"]["claimName"] == f"{name}-data"
        assert "storageClassName" not in find(objs, "PersistentVolumeClaim", f"{name}-data")["spec"]


def test_apiserver_reaches_the_agent_on_the_port_in_the_tracing_config(
    rendered: dict[str, str],
) -> None:
    objs = objects_of(rendered["base"])
    agent = find(objs, "DaemonSet", "otel-agent")
    spec = pod_spec(agent)
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    sets = dict(
        a.removeprefix("--set=").split("=", 1)
        for a in spec["containers"][0]["args"]
        if a.startswith("--set=")
    )
    tracing = yaml.safe_load((STACK / "apiserver" / "tracing-config.yaml").read_text())
    host, port = tracing["endpoint"].rsplit(":", 1)
    assert host == "localhost"
    assert sets["receivers::otlp::protocols::grpc::endpoint"] == f"127.0.0.1:{port}"
    assert sets["exporters::otlp::endpoint"] == "otel-collector.monitoring.svc.cluster.local:4317"


# ---------------------------- layout (one object per file, explicit kustomizations) and sources


def manifest_sources() -> Iterator[Path]:
    for sub in ("base", "components", "overlays"):
        for path in sorted((STACK / sub).rglob("*.yaml")):
            if path.name != "kustomization.yaml":
                yield path


@pytest.mark.parametrize("path", list(manifest_sources()), ids=lambda p: str(p.relative_to(STACK)))
def test_one_object_per_file_named_component_kind_with_labels(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert len(docs) == 1
    obj = docs[0]
    assert path.name.endswith(f"-{obj['kind'].lower()}.yaml"), path.name
    assert path.name.removesuffix(f"-{obj['kind'].lower()}.yaml")
    labels = obj["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "tracecheck"
    assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= set(labels)


def kustomizations() -> Iterator[Path]:
    for path in sorted(STACK.rglob("kustomization.yaml")):
        if "local" not in path.relative_to(STACK).parts:
            yield path


@pytest.mark.parametrize(
    "path", list(kustomizations()), ids=lambda p: str(p.parent.relative_to(STACK))
)
def test_every_file_in_a_kustomization_directory_is_used(path: Path) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    used = set(doc.get("resources") or ())
    for gen in doc.get("configMapGenerator") or ():
        used |= set(gen.get("files") or ())
    for entry in os.listdir(path.parent):
        if entry == "kustomization.yaml" or (path.parent / entry).is_dir():
            continue
        if entry in ("ocb-manifest.yaml",):  # the collector build manifest, not a Kubernetes file
            continue
        assert entry in used, f"{entry} in {path.parent} is not referenced"
    for ref in used:
        assert (path.parent / ref).exists(), ref


# ------------------------------------------------- shared config files == what the pipeline runs


SHARED = {
    "otel-collector-config": {
        "config.yaml": "stack/collector/config.yaml",
        "config-spanmetrics.yaml": "stack/collector/config-spanmetrics.yaml",
    },
    "tempo-config": {"tempo.yaml": "stack/tempo/tempo.yaml"},
    "prometheus-config": {"prometheus.yml": "stack/prometheus/prometheus.yml"},
}


@pytest.mark.parametrize("target", ["base", "minikube"])
def test_configmaps_hold_the_shipped_files_byte_for_byte(
    rendered: dict[str, str], target: str
) -> None:
    objs = objects_of(rendered[target])
    for prefix, files in SHARED.items():
        data = configmap(objs, prefix)["data"]
        assert set(data) == set(files)
        for key, rel in files.items():
            shipped = (REPO / rel).read_text(encoding="utf-8")
            assert data[key] == shipped, rel
            # ... and so the local pipeline, which substitutes only endpoints and paths, runs it.
            assert render_local_config(rel, repo=REPO, text=data[key]) == render_local_config(
                rel, repo=REPO
            )


def test_production_prometheus_config_differs_only_in_the_collector_job(
    rendered: dict[str, str],
) -> None:
    base = yaml.safe_load((STACK / "prometheus" / "prometheus.yml").read_text())
    prod_text = configmap(objects_of(rendered["production"]), "prometheus-config")["data"][
        "prometheus.yml"
    ]
    assert prod_text == (STACK / "overlays" / "production" / "prometheus.yml").read_text()
    prod = yaml.safe_load(prod_text)
    assert {k: v for k, v in prod.items() if k != "scrape_configs"} == {
        k: v for k, v in base.items() if k != "scrape_configs"
    }
    base_jobs = {j["job_name"]: j for j in base["scrape_configs"]}
    prod_jobs = {j["job_name"]: j for j in prod["scrape_configs"]}
    assert list(base_jobs) == list(prod_jobs)
    changed = [name for name in base_jobs if base_jobs[name] != prod_jobs[name]]
    assert changed == ["otel-collector"]


def test_promtool_accepts_every_rendered_prometheus_config(
    rendered: dict[str, str], built: LocalStack, tmp_path: Path
) -> None:
    promtool = built.binary("promtool")
    for target in ("base", "production"):
        text = configmap(objects_of(rendered[target]), "prometheus-config")["data"][
            "prometheus.yml"
        ]
        path = tmp_path / f"{target}.yml"
        path.write_text(text, encoding="utf-8")
        proc = subprocess.run(
            [str(promtool), "check", "config", "--syntax-only", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "SUCCESS" in proc.stdout


def _container_args(obj: dict[str, Any], conf: Path) -> list[str]:
    spec = pod_spec(obj)
    return [
        a.replace("/conf/", f"{conf}/").replace("$(NODE_IP)", "192.0.2.7")
        for a in spec["containers"][0]["args"]
    ]


def test_the_collector_resolves_the_gateway_and_agent_command_lines(
    rendered: dict[str, str], built: LocalStack, tmp_path: Path
) -> None:
    """The real collector (the local build) parses the exact args of each pod: the agent's --set
    overrides rebind the receivers to loopback and point the exporter at the gateway."""
    otelcol = built.binary("otelcol")
    objs = objects_of(rendered["production+collector-spanmetrics"])
    conf = tmp_path / "conf"
    conf.mkdir()
    for key, text in configmap(objs, "otel-collector-config")["data"].items():
        (conf / key).write_text(text, encoding="utf-8")

    def resolved(obj: dict[str, Any]) -> dict[str, Any]:
        args = _container_args(obj, conf)
        check = subprocess.run(
            [str(otelcol), "validate", *args], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stderr
        proc = subprocess.run(
            [str(otelcol), "print-config", *args], capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stderr
        doc: dict[str, Any] = yaml.safe_load(proc.stdout)
        return doc

    agent = resolved(find(objs, "DaemonSet", "otel-agent"))
    protocols = agent["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "127.0.0.1:4317"
    assert protocols["http"]["endpoint"] == "127.0.0.1:4318"
    assert (
        agent["exporters"]["otlp"]["endpoint"] == "otel-collector.monitoring.svc.cluster.local:4317"
    )
    assert agent["extensions"]["health_check"]["endpoint"] == "192.0.2.7:13133"
    reader = agent["service"]["telemetry"]["metrics"]["readers"]
    assert reader == [{"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": 8888}}}}]

    gateway = resolved(find(objs, "Deployment", "otel-collector"))
    assert gateway["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert set(gateway["service"]["pipelines"]) == {"traces", "metrics/spanmetrics"}
    assert gateway["exporters"]["prometheusremotewrite"]["endpoint"] == (
        "http://prometheus.monitoring.svc.cluster.local:9090/api/v1/write"
    )


# --------------------------------------------------------------- Grafana: links and dashboard


def test_grafana_datasources_link_both_ways_under_pinned_uids(rendered: dict[str, str]) -> None:
    objs = objects_of(rendered["base"])
    doc = yaml.safe_load(configmap(objs, "grafana-datasources")["data"]["datasources.yaml"])
    by_uid = {d["uid"]: d for d in doc["datasources"]}
    assert {(u, d["type"]) for u, d in by_uid.items()} == {
        ("prometheus", "prometheus"),
        ("tempo", "tempo"),
    }
    prom, tempo = by_uid["prometheus"]["jsonData"], by_uid["tempo"]["jsonData"]
    assert prom["exemplarTraceIdDestinations"][0]["name"] == "traceID"
    assert prom["exemplarTraceIdDestinations"][0]["datasourceUid"] == "tempo"
    assert "spanMetrics" not in prom
    assert tempo["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
    assert tempo["nodeGraph"]["enabled"] is True
    for query in tempo["tracesToMetrics"]["queries"]:
        # Provisioning expands $...: Grafana's own $__tags must arrive as $$__tags.
        assert "{$$__tags}" in query["query"]


def _dashboard(rendered: dict[str, str]) -> dict[str, Any]:
    import json

    cm = configmap(objects_of(rendered["base"]), "grafana-dashboards")
    data: dict[str, Any] = json.loads(cm["data"]["apiserver-tracing.json"])
    return data


def test_dashboard_covers_red_slowest_traces_and_pipeline_health(rendered: dict[str, str]) -> None:
    dash = _dashboard(rendered)
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == [
        "kube-apiserver RED by span name (Tempo span metrics)",
        "Slowest traces",
        "Pipeline health",
        "Pipeline health: end-to-end verdicts (tracecheck watch)",
    ]
    uids = {
        t["datasource"]["uid"]
        for p in dash["panels"]
        for t in p.get("targets", ())
        if "datasource" in t
    }
    assert uids == {"prometheus", "tempo"}
    traceql = [t["query"] for p in dash["panels"] for t in p.get("targets", ()) if "query" in t]
    assert any("duration > $min_duration" in q for q in traceql)
    assert any("quantile_over_time(duration, .99)" in q for q in traceql)
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", ()) if "expr" in t)
    for metric in (
        "traces_spanmetrics_calls_total",
        "traces_spanmetrics_latency_bucket",
        "otelcol_receiver_accepted_spans",
        "tempo_distributor_spans_received_total",
        "tempo_metrics_generator_spans_discarded_total",
        "prometheus_remote_storage_samples_failed_total",
        "apiserver_request_duration_seconds_bucket",
        # tracecheck watch (components/watch): status per hop, delay per stage, last success.
        "tracecheck_check_status",
        "tracecheck_check_consecutive_failures",
        "tracecheck_check_last_success_timestamp_seconds",
        "tracecheck_stage_delay_seconds_bucket",
        "tracecheck_rounds_total",
        "tracecheck_apiserver_traced_ratio",
    ):
        assert metric in exprs


def test_every_promql_in_the_dashboard_and_datasources_parses(rendered: dict[str, str]) -> None:
    import promql_parser

    dash = _dashboard(rendered)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", ()) if "expr" in t]
    doc = yaml.safe_load(
        configmap(objects_of(rendered["base"]), "grafana-datasources")["data"]["datasources.yaml"]
    )
    tempo = {d["uid"]: d for d in doc["datasources"]}["tempo"]["jsonData"]
    exprs += [q["query"] for q in tempo["tracesToMetrics"]["queries"]]
    assert len(exprs) >= 15
    for expr in exprs:
        # Grafana's variables, as Grafana would substitute them.
        concrete = expr.replace("$__rate_interval", "1m").replace(
            "{$$__tags}", '{service="apiserver"}'
        )
        promql_parser.parse(concrete)  # raises on a syntax error


def test_validate_rejects_a_dashboard_that_names_an_unprovisioned_datasource(
    rendered: dict[str, str],
) -> None:
    objs = objects_of(rendered["base"])
    cm = configmap(objs, "grafana-dashboards")
    cm["data"]["apiserver-tracing.json"] = cm["data"]["apiserver-tracing.json"].replace(
        '"uid": "tempo"', '"uid": "tempo-old"', 1
    )
    findings = validate(yaml.safe_dump_all(objs))
    assert [(f.level, f.message) for f in findings] == [
        ("error", "dashboard datasource uid 'tempo-old' is not provisioned")
    ]


# ------------------------------------------------------ apiserver: config, static pod, kind


def test_shipped_tracing_configuration_passes_check_config() -> None:
    from tracecheck.stack.tracingconfig import check_tracing_config

    path = STACK / "apiserver" / "tracing-config.yaml"
    assert check_tracing_config(path) == []
    doc = yaml.safe_load(path.read_text())
    # The equivalent of check-config, spelled out (docs/reference/apiserver.md §2 and §8).
    assert doc["apiVersion"] == "apiserver.config.k8s.io/v1"
    assert doc["kind"] == "TracingConfiguration"
    assert set(doc) == {"apiVersion", "kind", "endpoint", "samplingRatePerMillion"}
    assert re.fullmatch(r"[a-z0-9.-]+:\d{1,5}", doc["endpoint"])
    assert ".svc" not in doc["endpoint"]  # host-network: cluster DNS does not resolve
    assert 0 <= doc["samplingRatePerMillion"] <= 1_000_000


def _kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    return str(kubectl_command(os.environ))


KUBEADM_STATIC_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver
  namespace: kube-system
spec:
  hostNetwork: true
  containers:
  - name: kube-apiserver
    image: registry.k8s.io/kube-apiserver:v1.34.0
    command:
    - kube-apiserver
    - --advertise-address=192.168.49.2
    - --secure-port=8443
    volumeMounts:
    - mountPath: /etc/ssl/certs
      name: ca-certs
      readOnly: true
  volumes:
  - hostPath:
      path: /etc/ssl/certs
      type: DirectoryOrCreate
    name: ca-certs
"""


def test_static_pod_patch_adds_flag_volume_and_mount_keeping_the_rest(tmp_path: Path) -> None:
    manifest = tmp_path / "kube-apiserver.yaml"
    manifest.write_text(KUBEADM_STATIC_POD, encoding="utf-8")
    patch = STACK / "apiserver" / "patches" / "kube-apiserver+json.yaml"
    proc = subprocess.run(
        [
            _kubectl(),
            "patch",
            "--local",
            "-f",
            str(manifest),
            "--type",
            "json",
            "--patch-file",
            str(patch),
            "-o",
            "yaml",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    pod = yaml.safe_load(proc.stdout)
    container = pod["spec"]["containers"][0]
    flag = "--tracing-config-file=/etc/kubernetes/tracing/tracing-config.yaml"
    assert container["command"] == [
        "kube-apiserver",
        "--advertise-address=192.168.49.2",
        "--secure-port=8443",
        flag,
    ]
    assert container["volumeMounts"][-1] == {
        "name": "tracing-config",
        "mountPath": "/etc/kubernetes/tracing",
        "readOnly": True,
    }
    assert pod["spec"]["volumes"][-1] == {
        "name": "tracing-config",
        "hostPath": {"path": "/etc/kubernetes/tracing", "type": "Directory"},
    }
    assert container["volumeMounts"][0]["name"] == "ca-certs"
    # The flag's file is inside the mounted directory.
    assert flag.split("=", 1)[1].startswith(container["volumeMounts"][-1]["mountPath"] + "/")


def test_kind_config_mounts_the_shipped_tracing_config_and_sets_the_flag() -> None:
    doc = yaml.safe_load((STACK / "kind" / "kind-config.yaml").read_text())
    assert (doc["kind"], doc["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    (node,) = [n for n in doc["nodes"] if n["role"] == "control-plane"]
    assert node["image"].startswith("kindest/node:v1.34.")
    (mount,) = node["extraMounts"]
    # Relative to the repository root, where the README says to run kind.
    assert (REPO / mount["hostPath"] / "tracing-config.yaml").is_file()
    assert mount["readOnly"] is True
    (patch,) = [yaml.safe_load(p) for p in node["kubeadmConfigPatches"]]
    assert patch["kind"] == "ClusterConfiguration"
    flag = patch["apiServer"]["extraArgs"]["tracing-config-file"]
    (volume,) = patch["apiServer"]["extraVolumes"]
    assert volume["hostPath"] == mount["containerPath"]
    assert flag == f"{volume['mountPath']}/tracing-config.yaml"
    # The same path as the kubeadm static-pod patch.
    kubeadm = yaml.safe_load(
        (STACK / "apiserver" / "patches" / "kube-apiserver+json.yaml").read_text()
    )
    assert kubeadm[0]["value"] == f"--tracing-config-file={flag}"


# ------------------------------------------------------------------------ CI example, image


def test_github_actions_example_runs_the_smoke_on_a_schedule_and_uploads_junit() -> None:
    doc = yaml.safe_load((STACK / "ci" / "github-actions-smoke.yaml").read_text())
    triggers = doc[True] if True in doc else doc["on"]  # YAML 1.1 reads the key `on` as true
    assert re.fullmatch(
        r"[\d*/,-]+ [\d*/,-]+ [\d*/,-]+ [\d*/,-]+ [\d*/,-]+", triggers["schedule"][0]["cron"]
    )
    assert doc["permissions"] == {"contents": "read"}
    steps = doc["jobs"]["smoke"]["steps"]
    runs = " ".join(s.get("run", "") for s in steps)
    # One command reaches the in-cluster Services (no kubectl port-forward processes), and the
    # options it uses are the CLI's.
    (smoke,) = [s["run"] for s in steps if "tracecheck smoke" in s.get("run", "")]
    args = shlex.split(smoke.split("|")[0])[2:]
    assert args[:4] == ["--port-forward", "--namespace", "monitoring", "--wait-ready"]
    assert "--output" in args and "junit:smoke.xml" in args
    assert "kubectl" not in runs
    from tracecheck.cli.smoke import smoke as smoke_command

    ctx = smoke_command.make_context("smoke", args)  # parses, runs nothing
    assert ctx.params["port_forward"] is True and ctx.params["namespace"] == "monitoring"
    upload = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert len(upload) == 1
    assert upload[0]["if"] == "always()"
    assert "smoke.xml" in upload[0]["with"]["path"].split()
    # The kubeconfig comes from a secret through the environment, never inline in a command.
    assert "secrets.TRACECHECK_KUBECONFIG" not in runs


def test_containerfile_builds_a_non_root_image_running_tracecheck() -> None:
    text = (STACK / "image" / "Containerfile").read_text()
    instructions = [
        line.split(None, 1)
        for line in text.splitlines()
        if line and not line.startswith("#") and not line.startswith(" ")
    ]
    froms = [rest for op, rest in instructions if op == "FROM"]
    assert len(froms) == 2 and all(re.match(r"python:3\.11[\w.-]*-slim", f) for f in froms)
    assert ("USER", "65532:65532") in [(op, rest) for op, rest in instructions]
    assert ("ENTRYPOINT", '["tracecheck"]') in [(op, rest) for op, rest in instructions]
    cron_uid = 65532
    assert f"USER {cron_uid}:{cron_uid}" in text
    for path in ("pyproject.toml", "tracecheck", "queries"):
        assert (REPO / path).exists(), path


# ------------------------------------------------------------------------- API and errors


def test_find_kustomize_prefers_kustomize_then_kubectl_then_fails_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both, only_kubectl, empty = tmp_path / "both", tmp_path / "kubectl", tmp_path / "none"
    for d, names in ((both, ("kustomize", "kubectl")), (only_kubectl, ("kubectl",)), (empty, ())):
        d.mkdir()
        for name in names:
            exe = d / name
            exe.write_text("#!/bin/sh\nexit 0\n")
            exe.chmod(0o755)
    assert find_kustomize({"PATH": str(both)}) == [str(both / "kustomize"), "build"]
    assert find_kustomize({"PATH": str(only_kubectl)}) == [
        str(only_kubectl / "kubectl"),
        "kustomize",
    ]
    monkeypatch.setattr(tools, "local_kubectl", lambda env=None: None)
    with pytest.raises(ConfigError) as err:
        find_kustomize({"PATH": str(empty)})
    assert "neither kustomize nor kubectl found" in str(err.value)
    assert "install kubectl" in str(err.value)


def test_find_kustomize_never_builds_a_kubectl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without kubectl on PATH and nothing in the build cache, the answer is the install hint:
    no kube-apiserver build starts behind ``stack render`` (a ``go`` that records any call)."""
    gobin = tmp_path / "gobin"
    gobin.mkdir()
    calls = tmp_path / "go-calls"
    go = gobin / "go"
    go.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    go.chmod(0o755)
    env = {"PATH": str(gobin), "TRACECHECK_CACHE_DIR": str(tmp_path / "cache")}
    with pytest.raises(ConfigError, match="neither kustomize nor kubectl found"):
        find_kustomize(env)
    assert not calls.exists()
    assert not (tmp_path / "cache").exists()


def test_a_kubectl_that_never_answers_is_unreachable_at_the_context(tmp_path: Path) -> None:
    hang = tmp_path / "kubectl"
    hang.write_text("#!/bin/sh\nexec sleep 60\n")
    hang.chmod(0o755)
    doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: default}\n"
    with pytest.raises(Unreachable) as err:
        apply(doc, kubeconfig="/k/config", context="prod", timeout=1, kubectl=str(hang))
    assert str(err.value) == "kubectl at context prod: no answer within 1 s"


def test_render_errors_name_the_directory_and_the_cause(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as usage:
        render("nosuchoverlay", env=os.environ)
    assert "not a kustomization directory" in str(usage.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(ConfigError) as err:
        render(str(bad), env=os.environ)
    assert str(err.value).startswith(f"kustomize at {bad}: ")
    assert "missing.yaml" in str(err.value)
    assert "\n" not in str(err.value)


def test_retarget_moves_every_object_and_renames_cluster_scoped_ones(
    rendered: dict[str, str],
) -> None:
    moved = objects_of(retarget(rendered["minikube"], "scratch", suffix="-x"))
    names = {(o["kind"], o["metadata"]["name"]) for o in moved}
    assert ("Namespace", "scratch") in names
    for o in moved:
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"]["namespace"] == "scratch"
        elif o["kind"] != "Namespace":
            assert o["metadata"]["name"].endswith("-x"), o["metadata"]["name"]
    crb = find(moved, "ClusterRoleBinding", "tracecheck-prometheus-x")
    assert crb["roleRef"]["name"] == "tracecheck-prometheus-x"
    assert crb["subjects"][0]["namespace"] == "scratch"
    pv = find(moved, "PersistentVolume", "tracecheck-tempo-data-x")
    assert pv["spec"]["claimRef"]["namespace"] == "scratch"
    assert pv["spec"]["storageClassName"] == "tracecheck-local-x"
    assert (
        find(moved, "PersistentVolumeClaim", "tempo-data")["spec"]["volumeName"]
        == "tracecheck-tempo-data-x"
    )
    crole = find(moved, "ClusterRole", "tracecheck-smoke-x")
    assert crole["rules"][0]["resourceNames"] == ["scratch"]


def test_without_kubectl_on_path_render_uses_the_local_pipelines_kubectl(
    rendered: dict[str, str], built: LocalStack, tmp_path: Path
) -> None:
    local = built.binary("kubectl")  # built (or cached) like the local pipeline's
    prefix = find_kustomize({**os.environ, "PATH": str(tmp_path)})
    assert prefix == [str(local), "kustomize"]
    # The same objects as with the kustomize on PATH (versions may differ; the output must not).
    for target in ("base", "production"):
        assert objects_of(render(target, kustomize=prefix)) == objects_of(rendered[target])
