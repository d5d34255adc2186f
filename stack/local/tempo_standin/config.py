"""The stand-in's configuration: the keys of a Tempo 2.9 ``tempo.yaml`` it honours, plus flags.

Only the keys listed in :class:`StandinConfig` are read; every other key of the file is accepted
and ignored (the same file configures a real Tempo in Kubernetes, stack/tempo/tempo.yaml).
Flags given on the command line override the file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

__all__ = [
    "ConfigError",
    "RemoteWrite",
    "StandinConfig",
    "format_go_duration",
    "load_config",
    "parse_go_duration",
]


class ConfigError(Exception):
    """The configuration file is unreadable or a value has the wrong shape."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_go_duration(text: str) -> float:
    """Seconds in a Go ``time.ParseDuration`` string (``5s``, ``1m30s``, ``100ms``, ``0``).

    Raises ValueError with Go's wording (``time: invalid duration "x"``) otherwise.
    """
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total


def format_go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String()`` for error texts (``1h0m0s``, ``15s``, ``100ms``)."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    neg = ns < 0
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                text = f"{ns / size:.9f}".rstrip("0").rstrip(".") + unit
                return ("-" if neg else "") + text
    h, rem = divmod(ns, 3600 * 10**9)
    m, rem = divmod(rem, 60 * 10**9)
    s = f"{rem / 1e9:.9f}".rstrip("0").rstrip(".")
    out = (f"{h}h{m}m" if h else (f"{m}m" if m else "")) + f"{s}s"
    return ("-" if neg else "") + out


@dataclass(frozen=True, slots=True)
class RemoteWrite:
    """One ``metrics_generator.storage.remote_write[]`` entry (a Prometheus ``remote_write``)."""

    url: str
    # Read for /status/config only: Tempo 2.9 forces ``SendExemplars = true`` on every entry
    # (modules/generator/storage/config_util.go:53 at v2.9.0), so exemplars are always sent.
    send_exemplars: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    name: str = ""
    # queue_config.retry_on_http_429 (Prometheus default false: a 429 is then not retried).
    retry_on_http_429: bool = False
    # queue_config.batch_send_deadline (prometheus/config/config.go DefaultQueueConfig: 5s).
    batch_send_deadline: float = 5.0
    remote_timeout: float = 30.0  # Prometheus default 30s

    @property
    def shown_url(self) -> str:
        """``url`` for logs, labels and /status/config: a password in it becomes ``xxxxx``
        (Go's ``url.URL.Redacted``, as Prometheus's config marshalling shows it)."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username}:xxxxx@{parts.netloc.rsplit('@', 1)[1]}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def remote_name(self) -> str:
        """The ``remote_name`` label: ``name``, else six hex characters of a hash of the entry.
        Prometheus uses ``md5(json(config))[:6]`` (storage/remote/write.go ApplyConfig); the
        stand-in hashes the URL instead, so the value differs from Tempo's: match on ``url``."""
        if self.name:
            return self.name
        return hashlib.md5(self.url.encode(), usedforsecurity=False).hexdigest()[:6]


@dataclass(frozen=True, slots=True)
class StandinConfig:
    """Effective configuration (file keys in the field comments).

    Defaults are Tempo 2.9.0's unless the comment says otherwise; the upstream file that sets
    each default is named (paths in grafana/tempo at tag v2.9.0).
    """

    # server.http_listen_address; Tempo binds all interfaces, the stand-in loopback.
    http_host: str = "127.0.0.1"
    http_port: int = 3200  # server.http_listen_port (cmd/tempo/app/config.go: 3200)
    grpc_port: int = 9095  # server.grpc_listen_port (named in error texts only; not served)
    # distributor.receivers.otlp.protocols.{grpc,http}.endpoint; None = receiver not configured.
    otlp_grpc: str | None = "localhost:4317"
    otlp_http: str | None = "localhost:4318"
    # multitenancy_enabled (or the deprecated auth_enabled): X-Scope-OrgID is required
    # (cmd/tempo/app/app.go setupAuthMiddleware).
    multitenancy: bool = False
    # http_api_prefix: the query API moves under it; /ready, /status and /metrics stay at the
    # root (cmd/tempo/app/modules.go addHTTPAPIPrefix).
    http_api_prefix: str = ""
    # ingester.lifecycler.min_ready_duration (dskit ring/lifecycler.go: 15s): /ready answers 503
    # for this long after the first readiness check that found the ring healthy.
    min_ready_duration: float = 15.0
    trace_idle_period: float = 5.0  # ingester.trace_idle_period (modules/ingester/config.go)
    trace_live_period: float = 30.0  # ingester.trace_live_period (modules/ingester/config.go)
    # ingester.flush_check_period. Tempo's default is 10s; the stand-in checks every 0.25 s
    # unless the file sets it, so it shows the earliest moment a real Tempo could cut a trace.
    flush_check_period: float = 0.25
    # ingester.max_block_duration (30m): a block cut resets the per-trace size tracker for
    # traces idle since the previous cut (modules/ingester/instance.go CutBlockIfReady).
    max_block_duration: float = 1800.0
    # overrides.defaults.global.max_bytes_per_trace (modules/overrides/config.go: 5000000;
    # 0 = no limit).
    max_bytes_per_trace: int = 5_000_000
    # overrides.defaults.ingestion.max_traces_per_user (modules/overrides/config.go: 10000;
    # 0 = no limit): live traces per tenant before pushes are refused (live_traces_exceeded).
    max_traces_per_user: int = 10_000
    # metrics_generator.registry.collection_interval (modules/generator/registry/config.go).
    collection_interval: float = 15.0
    external_labels: tuple[tuple[str, str], ...] = ()  # ...registry.external_labels
    remote_write: tuple[RemoteWrite, ...] = ()  # metrics_generator.storage.remote_write
    # metrics_generator.storage.remote_write_add_org_id_header (storage/config.go: true). The
    # header is added only for a tenant other than single-tenant (storage/config_util.go).
    remote_write_add_org_id_header: bool = True
    # metrics_generator.storage.remote_write_flush_deadline (storage/config.go: 1m): how long
    # pending samples are still sent at shutdown.
    remote_write_flush_deadline: float = 60.0
    processors: tuple[str, ...] = ()  # overrides.defaults.metrics_generator.processors
    # overrides.defaults.metrics_generator.max_active_series (0 = no limit).
    max_active_series: int = 0
    # metrics_generator.metrics_ingestion_time_range_slack (modules/generator/config.go: 30s).
    ingestion_slack: float = 30.0
    # metrics_generator.processor.local_blocks.filter_server_spans (default true).
    filter_server_spans: bool = True
    # metrics_generator.processor.service_graphs.wait (servicegraphs/config.go: 10s).
    service_graph_wait: float = 10.0
    # metrics_generator.processor.service_graphs.peer_attributes (servicegraphs/config.go).
    peer_attributes: tuple[str, ...] = ("peer.service", "db.name", "db.system")
    stale_duration: float = 900.0  # metrics_generator.registry.stale_duration (15m)
    instance: str = ""  # value of __metrics_gen_instance (registry.go: the hostname)
    # Memory bounds of the stand-in (not Tempo settings; README "Memory").
    retention: float = 3600.0
    max_spans: int = 500_000
    max_spans_per_trace: int = 50_000
    data_dir: str = ""
    # The parsed file, for /status/config (keys the stand-in does not read are shown as given).
    document: Any = field(default=None, compare=False, hash=False, repr=False)

    def with_overrides(self, **changes: Any) -> StandinConfig:
        """A copy with the given fields replaced (flags over the file)."""
        return replace(self, **changes)


def _get(doc: dict[str, Any], dotted: str) -> Any:
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _duration(doc: dict[str, Any], dotted: str, default: float) -> float:
    value = _get(doc, dotted)
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # Tempo reads durations as Go strings; a bare number is nanoseconds in Go's YAML decoding
        # of time.Duration, which nobody means. Treat it as seconds and say so in the README.
        return float(value)
    try:
        return parse_go_duration(str(value))
    except ValueError as exc:
        raise ConfigError(f"{dotted}: {exc}") from exc


def _split_host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"endpoint {endpoint!r} is not host:port")
    return host, int(port)


def _int(doc: dict[str, Any], dotted: str, default: int) -> int:
    value = _get(doc, dotted)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{dotted}: {value!r} is not an integer")
    return value


def _bool(doc: dict[str, Any], dotted: str, default: bool) -> bool:
    value = _get(doc, dotted)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{dotted}: {value!r} is not true or false")
    return value


def _override(doc: dict[str, Any], new: str, legacy: str) -> Any:
    """An overrides key in the 2.x format (``overrides.defaults.<new>``) or, failing that, the
    legacy flat format (``overrides.<legacy>``), as modules/overrides/config.go accepts both."""
    value = _get(doc, f"overrides.defaults.{new}")
    if value is None:
        value = _get(doc, f"overrides.{legacy}")
    return value


def load_config(path: str | Path | None) -> StandinConfig:
    """Read a tempo.yaml (None: defaults only)."""
    if path is None:
        return StandinConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
        doc = yaml.safe_load(text) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: top level is not a mapping")

    base = StandinConfig()
    port = _get(doc, "server.http_listen_port")
    host = _get(doc, "server.http_listen_address")
    protocols = _get(doc, "distributor.receivers.otlp.protocols")
    grpc_ep: str | None = None
    http_ep: str | None = None
    if isinstance(protocols, dict):
        # An empty block (`grpc:`) means "on, default endpoint" (the collector's otlpreceiver:
        # localhost:4317 / localhost:4318, the default since Tempo 2.7, CHANGELOG #4466).
        if "grpc" in protocols:
            grpc_ep = str(_get(protocols, "grpc.endpoint") or "localhost:4317")
        if "http" in protocols:
            http_ep = str(_get(protocols, "http.endpoint") or "localhost:4318")
    elif _get(doc, "distributor") is None:
        grpc_ep, http_ep = base.otlp_grpc, base.otlp_http
    for ep in (grpc_ep, http_ep):
        if ep is not None:
            _split_host_port(ep)

    ext = _get(doc, "metrics_generator.registry.external_labels") or {}
    if not isinstance(ext, dict):
        raise ConfigError("metrics_generator.registry.external_labels is not a mapping")
    rw_list = _get(doc, "metrics_generator.storage.remote_write") or []
    if not isinstance(rw_list, list):
        raise ConfigError("metrics_generator.storage.remote_write is not a list")
    remote_writes = []
    for i, entry in enumerate(rw_list):
        if not isinstance(entry, dict) or not entry.get("url"):
            raise ConfigError(f"metrics_generator.storage.remote_write[{i}] has no url")
        headers = entry.get("headers") or {}
        queue = entry.get("queue_config") or {}
        remote_writes.append(
            RemoteWrite(
                url=str(entry["url"]),
                send_exemplars=bool(entry.get("send_exemplars", False)),
                headers=tuple((str(k), str(v)) for k, v in headers.items()),
                name=str(entry.get("name", "")),
                retry_on_http_429=bool(queue.get("retry_on_http_429", False)),
                batch_send_deadline=_duration(queue, "batch_send_deadline", 5.0),
                remote_timeout=_duration(entry, "remote_timeout", 30.0),
            )
        )
    processors = _override(doc, "metrics_generator.processors", "metrics_generator_processors")
    processors = processors or []
    if not isinstance(processors, list):
        raise ConfigError("overrides.defaults.metrics_generator.processors is not a list")
    fss = _get(doc, "metrics_generator.processor.local_blocks.filter_server_spans")
    peers = _get(doc, "metrics_generator.processor.service_graphs.peer_attributes")
    prefix = _get(doc, "http_api_prefix")
    max_bytes = _override(doc, "global.max_bytes_per_trace", "max_bytes_per_trace")
    max_traces = _override(doc, "ingestion.max_traces_per_user", "max_traces_per_user")
    max_series = _override(
        doc, "metrics_generator.max_active_series", "metrics_generator_max_active_series"
    )
    for key, value in (
        ("max_bytes_per_trace", max_bytes),
        ("max_traces_per_user", max_traces),
        ("max_active_series", max_series),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"overrides: {key}: {value!r} is not an integer")

    return StandinConfig(
        http_host=str(host) if host else base.http_host,
        http_port=int(port) if port is not None else base.http_port,
        grpc_port=_int(doc, "server.grpc_listen_port", base.grpc_port),
        otlp_grpc=grpc_ep,
        otlp_http=http_ep,
        multitenancy=_bool(doc, "multitenancy_enabled", False) or _bool(doc, "auth_enabled", False),
        http_api_prefix=str(prefix) if prefix else "",
        min_ready_duration=_duration(
            doc, "ingester.lifecycler.min_ready_duration", base.min_ready_duration
        ),
        trace_idle_period=_duration(doc, "ingester.trace_idle_period", base.trace_idle_period),
        trace_live_period=_duration(doc, "ingester.trace_live_period", base.trace_live_period),
        flush_check_period=_duration(doc, "ingester.flush_check_period", base.flush_check_period),
        max_block_duration=_duration(doc, "ingester.max_block_duration", base.max_block_duration),
        max_bytes_per_trace=base.max_bytes_per_trace if max_bytes is None else max_bytes,
        max_traces_per_user=base.max_traces_per_user if max_traces is None else max_traces,
        collection_interval=_duration(
            doc, "metrics_generator.registry.collection_interval", base.collection_interval
        ),
        external_labels=tuple(sorted((str(k), str(v)) for k, v in ext.items())),
        remote_write=tuple(remote_writes),
        remote_write_add_org_id_header=_bool(
            doc, "metrics_generator.storage.remote_write_add_org_id_header", True
        ),
        remote_write_flush_deadline=_duration(
            doc,
            "metrics_generator.storage.remote_write_flush_deadline",
            base.remote_write_flush_deadline,
        ),
        processors=tuple(str(p) for p in processors),
        max_active_series=base.max_active_series if max_series is None else max_series,
        ingestion_slack=_duration(
            doc, "metrics_generator.metrics_ingestion_time_range_slack", base.ingestion_slack
        ),
        filter_server_spans=base.filter_server_spans if fss is None else bool(fss),
        service_graph_wait=_duration(
            doc, "metrics_generator.processor.service_graphs.wait", base.service_graph_wait
        ),
        peer_attributes=tuple(str(p) for p in peers) if peers else base.peer_attributes,
        stale_duration=_duration(
            doc, "metrics_generator.registry.stale_duration", base.stale_duration
        ),
        document=doc,
    )


def endpoint_host_port(endpoint: str) -> tuple[str, int]:
    """``host:port`` split (validated by :func:`load_config`)."""
    return _split_host_port(endpoint)
