"""Checks of the configuration files the manifests carry in ConfigMaps: Grafana datasources,
the Prometheus scrape and remote-write configuration, Tempo's and the collector's, and
credentials written into any of them."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tracecheck.stack.validate.index import (
    CREDENTIAL_KEY,
    FILE_SUFFIX,
    SVC_REF,
    Collector,
    Index,
    walk,
    yaml_or_none,
)

__all__ = ["check_config_files"]


def check_config_files(index: Index, out: Collector) -> None:
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
        doc = yaml_or_none(text)
        if not isinstance(doc, dict):
            continue
        for path, k, value in walk(doc):
            if (
                isinstance(value, str | int)
                and not isinstance(value, bool)
                and str(value)
                and CREDENTIAL_KEY.match(k)
                and not FILE_SUFFIX.search(k)
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
    # Keys of jsonData that belong to the other datasource type (docs/reference/prometheus.md §8.1).
    "prometheus": {"spanMetrics", "tracesToMetrics", "serviceMap", "nodeGraph", "tracesToLogsV2"},
}


def _check_provisioning_escapes(obj: dict[str, Any], where: str, doc: Any, out: Collector) -> None:
    # Grafana expands $VAR and ${VAR} in the VALUES of provisioning files (comments are safe):
    # Grafana's own $__tags must be written $$__tags.
    for path, _, value in walk(doc):
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
    out: Collector,
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
        for path, key, value in walk(jd, "jsonData"):
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
        for path, key, value in walk(dash):
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


def _sd_targets(index: Index, role: str, namespaces: Sequence[str]) -> list[dict[str, str]]:
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
    index: Index, obj: dict[str, Any], where: str, doc: dict[str, Any], out: Collector
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
    index: Index, obj: dict[str, Any], where: str, doc: dict[str, Any], out: Collector
) -> None:
    # Remote write needs Prometheus's receiver flag (else 404), and exemplars need exemplar
    # storage (else dropped silently; docs/reference/prometheus.md §2-§3).
    for path, url, exemplars in _remote_writes(doc):
        match = SVC_REF.search(url)
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
    obj: dict[str, Any], where: str, doc: dict[str, Any], out: Collector
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
    obj: dict[str, Any], where: str, doc: dict[str, Any], out: Collector
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
