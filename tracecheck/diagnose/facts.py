"""Inspection: what each component of the pipeline says about itself, read without sending data.

One :class:`Reading` per question asked (is it up, what did it answer, when), and per component
the facts tracecheck's diagnosis and ``tracecheck doctor`` reason from:

=============  ==============================================================================
component      read from (each documented in docs/reference/, section given)
=============  ==============================================================================
collector      health_check (collector.md §5); its own ``/metrics`` (§6): receiver accepted /
               refused spans, exporter sent / send-failed / enqueue-failed spans, exporter
               queue size and capacity, ``target_info`` (version), process uptime
tempo          ``/ready``, ``/api/status/buildinfo`` (tempo.md §3); ``/metrics`` (§12, §18):
               receiver and distributor counters, discarded spans by reason, the
               metrics-generator's active processors, discards, registry limits, collections,
               its remote-write counters per URL, ``process_start_time_seconds``;
               ``/status/config`` (§18): processors, remote_write targets, OTLP receivers;
               recent ``resource.service.name`` values (§6)
prometheus     ``/-/ready``, build info, ``/api/v1/status/flags`` (remote-write receiver,
               exemplar storage), ``/api/v1/status/runtimeinfo`` (start time), its own
               ``/metrics``: answers of the remote-write receiver by HTTP code, out-of-order
               samples, exemplars stored (prometheus.md §10)
apiserver      ``/readyz?verbose`` (every check by name, apiserver.md §11), ``/version``, and
               where readable its TracingConfiguration (:mod:`tracecheck.diagnose.tracing`)
=============  ==============================================================================

Every read catches the backend's error and keeps it as the reading's detail, so an inspection
never raises for a component that is down: "down" is a fact like any other. Reads of one
component run one after another with a short timeout; components are read in parallel.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from tracecheck.diagnose.reading import Reading, ask, classify
from tracecheck.errors import ConfigError, TracecheckError

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends import Backends
    from tracecheck.backends.exposition import Exposition
    from tracecheck.config import Settings
    from tracecheck.diagnose.tracing import TracingFacts

__all__ = [
    "COMPONENTS",
    "ApiserverFacts",
    "CollectorFacts",
    "Inspection",
    "PrometheusFacts",
    "Reading",
    "RemoteWrite",
    "TempoFacts",
    "inspect",
    "read_apiserver",
    "read_collector",
    "read_prometheus",
    "read_tempo",
]

T = TypeVar("T")

#: The components an inspection can read, in pipeline order.
COMPONENTS = ("apiserver", "collector", "tempo", "prometheus")
#: Seconds each request of an inspection may take: a diagnosis must not wait on a stalled
#: component as long as a check would.
READ_TIMEOUT = 3.0
#: kube-apiserver's /readyz waits for its etcd check, about 4 s with etcd down (measured).
APISERVER_READYZ_TIMEOUT = 6.0
#: The tenant Tempo serves without multi-tenancy (docs/reference/tempo.md §2).
SINGLE_TENANT = "single-tenant"


def _skipped(why: str) -> Reading:
    return Reading("skipped", time.time(), why)


# -- collector ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CollectorFacts:
    """The OpenTelemetry Collector. Counters are summed over receivers / exporters; None when
    the metrics could not be read. A counter never incremented is absent from the exposition
    and reads 0 (docs/reference/collector.md §6)."""

    address: str
    health: Reading
    metrics: Reading
    version: str = ""
    uptime_s: float | None = None
    accepted: float | None = None
    refused: float | None = None
    sent: float | None = None
    send_failed: float | None = None
    enqueue_failed: float | None = None
    queue_size: float | None = None
    queue_capacity: float | None = None
    exporters: tuple[str, ...] = ()
    #: It runs a metrics pipeline (it counts metric points): a connector such as spanmetrics
    #: can produce span-metrics there without Tempo. None: its metrics were not read.
    metric_points: bool | None = None


def read_collector(backends: Backends, *, timeout: float = READ_TIMEOUT) -> CollectorFacts:
    settings = backends.settings.collector
    client = backends.collector()
    address = settings.health_url or settings.endpoint
    _, health = ask(lambda: client.health(timeout=timeout))
    if not settings.metrics_url:
        return CollectorFacts(address, health, _skipped("collector.metrics_url is not set"))
    exp, metrics = ask(lambda: client.self_metrics(timeout=timeout))
    if exp is None:
        return CollectorFacts(address, health, metrics)
    info = exp.select("target_info")
    version = info[0].labels.get("service_version", "") if info else ""
    uptime = exp.select("otelcol_process_uptime_seconds")
    exporters = sorted(
        {s.labels.get("exporter", "") for s in exp.select("otelcol_exporter_queue_size")} - {""}
    )
    return CollectorFacts(
        address,
        health,
        metrics,
        version=version,
        uptime_s=uptime[0].value if uptime else None,
        accepted=exp.sum("otelcol_receiver_accepted_spans"),
        refused=exp.sum("otelcol_receiver_refused_spans"),
        sent=exp.sum("otelcol_exporter_sent_spans"),
        send_failed=exp.sum("otelcol_exporter_send_failed_spans"),
        enqueue_failed=exp.sum("otelcol_exporter_enqueue_failed_spans"),
        queue_size=exp.sum("otelcol_exporter_queue_size", {"data_type": re.compile("traces|")}),
        queue_capacity=exp.sum(
            "otelcol_exporter_queue_capacity", {"data_type": re.compile("traces|")}
        ),
        exporters=tuple(exporters),
        metric_points=any("metric_points" in n for n in exp.names()),
    )


# -- tempo ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteWrite:
    """One remote-write queue of Tempo's metrics-generator (``url`` as Tempo labels it)."""

    url: str
    samples: float = 0.0  # sent per attempt
    failed: float = 0.0  # dropped on a non-recoverable answer (4xx)
    retried: float = 0.0  # failed recoverable attempts (refused, 5xx)
    pending: float = 0.0
    exemplars_failed: float = 0.0


@dataclass(frozen=True, slots=True)
class TempoFacts:
    """Grafana Tempo (monolithic, or the component behind ``tempo.url``)."""

    address: str
    tenant: str
    ready: Reading
    version: str = ""
    metrics: Reading = field(default_factory=lambda: _skipped("not read"))
    process_start: float | None = None
    receiver_accepted: float | None = None
    receiver_refused: float | None = None
    distributor_received: float | None = None
    discarded: Mapping[str, float] = field(default_factory=dict)
    #: The scraped process runs a metrics-generator (its series are in /metrics).
    generator: bool = False
    #: ``tempo_metrics_generator_active_processors`` of the tenant: processor -> 0/1; empty when
    #: the tenant has no generator instance yet.
    active_processors: Mapping[str, float] = field(default_factory=dict)
    generator_received: float | None = None
    generator_discarded: Mapping[str, float] = field(default_factory=dict)
    active_series: float | None = None
    max_active_series: float | None = None
    series_limited: float | None = None
    collections: float | None = None
    remote_write: tuple[RemoteWrite, ...] = ()
    config: Reading = field(default_factory=lambda: _skipped("not read"))
    #: ``overrides.defaults.metrics_generator.processors`` of the running configuration (None:
    #: the configuration could not be read).
    processors: tuple[str, ...] | None = None
    remote_write_urls: tuple[str, ...] | None = None
    send_exemplars: tuple[bool, ...] = ()
    receivers: Mapping[str, str] = field(default_factory=dict)  # protocol -> endpoint
    services: tuple[str, ...] | None = None  # resource.service.name values seen recently
    services_reading: Reading = field(default_factory=lambda: _skipped("not read"))

    def remote_write_totals(self) -> RemoteWrite:
        """The generator's remote-write counters summed over its queues."""
        return RemoteWrite(
            url=",".join(r.url for r in self.remote_write),
            samples=math.fsum(r.samples for r in self.remote_write),
            failed=math.fsum(r.failed for r in self.remote_write),
            retried=math.fsum(r.retried for r in self.remote_write),
            pending=math.fsum(r.pending for r in self.remote_write),
            exemplars_failed=math.fsum(r.exemplars_failed for r in self.remote_write),
        )


def _by_label(exp: Exposition, name: str, label: str, tenant: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in exp.select(name):
        if s.labels.get("tenant", tenant) != tenant:
            continue
        key = s.labels.get(label, "")
        out[key] = out.get(key, 0.0) + s.value
    return out


def tempo_metric_facts(exp: Exposition, tenant: str) -> dict[str, Any]:
    """The :class:`TempoFacts` fields read from one scrape of Tempo's ``/metrics``."""
    t = {"tenant": tenant}
    start = exp.select("process_start_time_seconds")
    per_url: dict[str, RemoteWrite] = {}
    for name, attr in (
        ("prometheus_remote_storage_samples_total", "samples"),
        ("prometheus_remote_storage_samples_failed_total", "failed"),
        ("prometheus_remote_storage_samples_retried_total", "retried"),
        ("prometheus_remote_storage_samples_pending", "pending"),
        ("prometheus_remote_storage_exemplars_failed_total", "exemplars_failed"),
    ):
        for s in exp.select(name):
            if s.labels.get("tenant", tenant) != tenant:
                continue
            url = s.labels.get("url", "")
            cur = per_url.get(url, RemoteWrite(url))
            values = {f: getattr(cur, f) for f in RemoteWrite.__slots__}
            values[attr] = values[attr] + s.value
            per_url[url] = RemoteWrite(**values)
    generator = any(n.startswith("tempo_metrics_generator_") for n in exp.names())

    def one(name: str) -> float | None:
        found = exp.select(name, t)
        return math.fsum(s.value for s in found) if found else None

    return {
        "process_start": start[0].value if start else None,
        "receiver_accepted": exp.sum("tempo_receiver_accepted_spans"),
        "receiver_refused": exp.sum("tempo_receiver_refused_spans"),
        "distributor_received": one("tempo_distributor_spans_received_total"),
        "discarded": _by_label(exp, "tempo_discarded_spans_total", "reason", tenant),
        "generator": generator,
        "active_processors": _by_label(
            exp, "tempo_metrics_generator_active_processors", "processor", tenant
        ),
        "generator_received": one("tempo_metrics_generator_spans_received_total"),
        "generator_discarded": _by_label(
            exp, "tempo_metrics_generator_spans_discarded_total", "reason", tenant
        ),
        "active_series": one("tempo_metrics_generator_registry_active_series"),
        "max_active_series": one("tempo_metrics_generator_registry_max_active_series"),
        "series_limited": one("tempo_metrics_generator_registry_series_limited_total"),
        "collections": one("tempo_metrics_generator_registry_collections_total"),
        "remote_write": tuple(per_url[u] for u in sorted(per_url)),
    }


def parse_status_config(text: str) -> dict[str, Any]:
    """Tempo's ``/status/config`` answer (``GET /status/config``, ``---``, YAML) as data; the
    :class:`TempoFacts` fields it gives. ValueError when the YAML cannot be read."""
    import yaml

    body = text
    head, sep, rest = text.partition("\n---")
    if sep and head.strip().startswith("GET "):
        body = rest
    try:
        doc = yaml.safe_load(body) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("not a YAML mapping")

    def dig(*keys: str) -> Any:
        cur: Any = doc
        for k in keys:
            if not isinstance(cur, dict):
                return None
            cur = cur.get(k)
        return cur

    processors = dig("overrides", "defaults", "metrics_generator", "processors")
    if processors is None:  # the legacy flat overrides
        processors = dig("overrides", "metrics_generator_processors")
    rw = dig("metrics_generator", "storage", "remote_write") or []
    receivers: dict[str, str] = {}
    for proto in ("grpc", "http"):
        entry = dig("distributor", "receivers", "otlp", "protocols", proto)
        if isinstance(entry, dict):
            receivers[proto] = str(
                entry.get("endpoint") or ("localhost:4317" if proto == "grpc" else "localhost:4318")
            )
    return {
        # Omitted when empty (Tempo prints no key for an empty list): no processor runs.
        "processors": tuple(str(p) for p in processors or ()),
        "remote_write_urls": tuple(str(e.get("url", "")) for e in rw if isinstance(e, dict)),
        "send_exemplars": tuple(bool(e.get("send_exemplars")) for e in rw if isinstance(e, dict)),
        "receivers": receivers,
    }


def read_tempo(
    backends: Backends,
    *,
    timeout: float = READ_TIMEOUT,
    services_since: float | None = 900.0,
    config: bool = True,
) -> TempoFacts:
    """Tempo's facts. ``services_since`` (seconds) also asks which ``resource.service.name``
    values Tempo saw in that window (None: not asked)."""
    client = backends.tempo()
    settings = backends.settings.tempo
    tenant = settings.tenant or SINGLE_TENANT
    _, ready = ask(lambda: client.ready(timeout=timeout))
    if not ready.answered:
        return TempoFacts(settings.url, tenant, ready)
    info, _ = ask(lambda: client.buildinfo(timeout=timeout))
    fields: dict[str, Any] = {"version": info.version if info is not None else ""}
    exp, fields["metrics"] = ask(lambda: client.self_metrics(timeout=timeout))
    if exp is not None:
        fields.update(tempo_metric_facts(exp, tenant))
    if config:
        reply, fields["config"] = ask(
            lambda: client.request("GET", "/status/config", timeout=timeout)
        )
        if reply is not None:
            try:
                fields.update(parse_status_config(reply.text))
            except ValueError as exc:
                fields["config"] = Reading("error", fields["config"].at, f"/status/config: {exc}")
    if services_since is not None:
        now = time.time()
        values, fields["services_reading"] = ask(
            lambda: client.tag_values(
                "resource.service.name", start=now - services_since, end=now + 60, timeout=timeout
            )
        )
        if values is not None:
            fields["services"] = tuple(values)
    return TempoFacts(settings.url, tenant, ready, **fields)


# -- prometheus ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrometheusFacts:
    address: str
    ready: Reading
    version: str = ""
    flags: Reading = field(default_factory=lambda: _skipped("not read"))
    #: ``--web.enable-remote-write-receiver`` (None: the flags could not be read or lack it).
    remote_write_receiver: bool | None = None
    #: ``--enable-feature=exemplar-storage`` (None: unknown).
    exemplar_storage: bool | None = None
    start_time: float | None = None  # runtimeinfo startTime, unix seconds
    metrics: Reading = field(default_factory=lambda: _skipped("not read"))
    #: Answers of the remote-write receiver (``/api/v1/write``) by HTTP code.
    write_answers: Mapping[str, float] = field(default_factory=dict)
    out_of_order: float | None = None
    exemplars_appended: float | None = None
    #: Distinct values per label of Tempo's span-metrics calls counter (``cardinality=True``).
    cardinality: Mapping[str, int] = field(default_factory=dict)


def _bool_flag(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() == "true"


def _features(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {f for f in re.split(r"[,\s\[\]]+", value) if f}


def _rfc3339(value: str) -> float | None:
    from datetime import datetime

    text = value.strip()
    m = re.match(r"^(.*?)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if m is None:
        return None
    base, frac, zone = m.groups()
    try:
        dt = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return dt.timestamp() + (float(frac) if frac else 0.0)


#: Labels of ``traces_spanmetrics_calls_total`` whose number of values doctor reports.
CARDINALITY_LABELS = ("service", "span_name")


def read_prometheus(
    backends: Backends, *, timeout: float = READ_TIMEOUT, cardinality: bool = False
) -> PrometheusFacts:
    client = backends.prometheus()
    address = backends.settings.prometheus.url
    _, ready = ask(lambda: client.ready(timeout=timeout))
    if not ready.answered:
        return PrometheusFacts(address, ready)
    fields: dict[str, Any] = {}
    info, _ = ask(lambda: client.buildinfo(timeout=timeout))
    fields["version"] = info.version if info is not None else ""
    flags, fields["flags"] = ask(lambda: client.flags(timeout=timeout))
    if flags is not None:
        fields["remote_write_receiver"] = _bool_flag(flags.get("web.enable-remote-write-receiver"))
        features = _features(flags.get("enable-feature"))
        fields["exemplar_storage"] = None if features is None else "exemplar-storage" in features
    runtime, _ = ask(lambda: client.get_json("/api/v1/status/runtimeinfo", timeout=timeout))
    if isinstance(runtime, dict) and isinstance(runtime.get("data"), dict):
        started = runtime["data"].get("startTime")
        if isinstance(started, str):
            fields["start_time"] = _rfc3339(started)
    exp, fields["metrics"] = ask(lambda: client.get_exposition("/metrics", timeout=timeout))
    if exp is not None:
        answers: dict[str, float] = {}
        for s in exp.select("prometheus_http_requests_total", {"handler": "/api/v1/write"}):
            code = s.labels.get("code", "")
            answers[code] = answers.get(code, 0.0) + s.value
        fields["write_answers"] = answers
        if exp.has("prometheus_tsdb_out_of_order_samples_total"):
            fields["out_of_order"] = exp.sum("prometheus_tsdb_out_of_order_samples_total")
        if exp.has("prometheus_tsdb_exemplar_exemplars_appended_total"):
            fields["exemplars_appended"] = exp.sum(
                "prometheus_tsdb_exemplar_exemplars_appended_total"
            )
    if cardinality:
        counts: dict[str, int] = {}
        for label in CARDINALITY_LABELS:
            q = f"count(count by ({label}) (traces_spanmetrics_calls_total))"
            result, _ = ask(lambda q=q: client.query(q, timeout=timeout))  # type: ignore[misc]
            if result is not None and result.samples:
                counts[label] = int(result.samples[0].value)
        fields["cardinality"] = counts
    return PrometheusFacts(address, ready, **fields)


# -- apiserver ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiserverFacts:
    address: str
    readyz: Reading
    #: ``/readyz?verbose``: (check, ok, reason) per line ``[+]name ok`` / ``[-]name failed: ...``.
    checks: tuple[tuple[str, bool, str], ...] = ()
    version: str = ""
    tracing: TracingFacts | None = None

    @property
    def failing(self) -> tuple[str, ...]:
        return tuple(name for name, ok, _ in self.checks if not ok)


def parse_readyz(body: str) -> tuple[tuple[str, bool, str], ...]:
    """The lines of ``/readyz?verbose``: ``[+]etcd ok``, ``[-]etcd failed: reason withheld``."""
    out = []
    for line in body.splitlines():
        if line.startswith(("[+]", "[-]")):
            name, _, rest = line[3:].partition(" ")
            out.append((name, line[1] == "+", rest.strip()))
    return tuple(out)


def read_apiserver(
    backends: Backends, *, timeout: float = READ_TIMEOUT, tracing: bool = True, etcd: bool = True
) -> ApiserverFacts:
    """kube-apiserver's facts. ``etcd=False`` leaves out its etcd checks, which take seconds
    to answer while etcd is down (for a caller that watched etcd already)."""
    at = time.time()
    try:
        client = backends.apiserver()
    except ConfigError as exc:  # no kubeconfig, no in-cluster account: nothing to read
        return ApiserverFacts("", Reading("skipped", at, str(exc)))
    except TracecheckError as exc:
        return ApiserverFacts("", Reading(classify(exc), at, str(exc)))
    # With etcd down, kube-apiserver's etcd check answers only after seconds (about 4 s).
    limit = max(timeout, APISERVER_READYZ_TIMEOUT) if etcd else timeout
    path = "/readyz?verbose" if etcd else "/readyz?verbose&exclude=etcd&exclude=etcd-readiness"
    reply, readyz = ask(lambda: client.send("GET", path, timeout=limit))
    checks: tuple[tuple[str, bool, str], ...] = ()
    if reply is not None:
        checks = parse_readyz(reply.body.decode(errors="replace"))
        if reply.status != 200:
            failing = [name for name, ok, _ in checks if not ok]
            cause = (
                f"/readyz HTTP {reply.status}: failing checks: {', '.join(failing)}"
                if failing
                else f"/readyz HTTP {reply.status}"
            )
            readyz = Reading("not ready", readyz.at, f"{client.where}: {cause}")
    version = ""
    if readyz.answered:
        got, _ = ask(lambda: client.version(timeout=timeout))
        version = got.git_version if got is not None else ""
    facts = None
    if tracing:
        from tracecheck.diagnose.tracing import read_tracing

        facts = read_tracing(client, timeout=timeout)
    return ApiserverFacts(client.address, readyz, checks, version, facts)


# -- all of them --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inspection:
    """One read of every selected component (None: not read)."""

    started: float
    finished: float
    collector: CollectorFacts | None = None
    tempo: TempoFacts | None = None
    prometheus: PrometheusFacts | None = None
    apiserver: ApiserverFacts | None = None


def inspect(
    settings: Settings,
    backends: Backends | None = None,
    *,
    components: Sequence[str] = COMPONENTS,
    timeout: float = READ_TIMEOUT,
    services_since: float | None = 900.0,
    cardinality: bool = False,
    etcd: bool = True,
) -> Inspection:
    """Read every component in ``components`` (in parallel); never raises for a component
    that is down. ``backends`` shares clients with the caller (a smoke run's)."""
    from tracecheck.backends import Backends as _Backends

    own = backends is None
    b = backends if backends is not None else _Backends(settings)
    started = time.time()
    readers: dict[str, Callable[[], Any]] = {
        "collector": lambda: read_collector(b, timeout=timeout),
        "tempo": lambda: read_tempo(b, timeout=timeout, services_since=services_since),
        "prometheus": lambda: read_prometheus(b, timeout=timeout, cardinality=cardinality),
        "apiserver": lambda: read_apiserver(b, timeout=timeout, etcd=etcd),
    }
    wanted = [c for c in COMPONENTS if c in components]
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
            futures = {c: pool.submit(readers[c]) for c in wanted}
            got = {c: f.result() for c, f in futures.items()}
    finally:
        if own:
            b.close()
    return Inspection(started, time.time(), **got)
