"""The stand-in's configuration: the keys of a Tempo 2.9 ``tempo.yaml`` it honours, plus flags.

Only the keys listed in :class:`StandinConfig` are read; every other key of the file is accepted
and ignored (the same file configures a real Tempo in Kubernetes, stack/tempo/tempo.yaml).
Flags given on the command line override the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

__all__ = ["ConfigError", "RemoteWrite", "StandinConfig", "load_config", "parse_go_duration"]


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


@dataclass(frozen=True, slots=True)
class RemoteWrite:
    """One ``metrics_generator.storage.remote_write[]`` entry."""

    url: str
    send_exemplars: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    name: str = ""

    @property
    def shown_url(self) -> str:
        """``url`` for logs, labels and /status/config: a password in it becomes ``xxxxx``
        (Go's ``url.URL.Redacted``, which Prometheus uses for its ``url`` label)."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username}:xxxxx@{parts.netloc.rsplit('@', 1)[1]}"
        return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True, slots=True)
class StandinConfig:
    """Effective configuration (file keys in the field comments)."""

    http_host: str = "127.0.0.1"  # server.http_listen_address (Tempo's default is all interfaces)
    http_port: int = 3200  # server.http_listen_port (tempo-api.md §2: 3200 since 2.8)
    # distributor.receivers.otlp.protocols.{grpc,http}.endpoint; None = receiver not configured.
    otlp_grpc: str | None = "localhost:4317"
    otlp_http: str | None = "localhost:4318"
    trace_idle_period: float = 5.0  # ingester.trace_idle_period (tempo-api.md §10: 5s in 2.9)
    trace_live_period: float = 30.0  # ingester.trace_live_period (§10: 30s, #5346)
    # ingester.flush_check_period. Tempo's default is 10s (§10); the stand-in checks every 0.25 s
    # unless the file sets it, so it shows the earliest moment a real Tempo could cut a trace.
    flush_check_period: float = 0.25
    collection_interval: float = 15.0  # metrics_generator.registry.collection_interval (§11.3)
    external_labels: tuple[tuple[str, str], ...] = ()  # ...registry.external_labels
    remote_write: tuple[RemoteWrite, ...] = ()  # metrics_generator.storage.remote_write
    processors: tuple[str, ...] = ()  # overrides.defaults.metrics_generator.processors
    # metrics_generator.metrics_ingestion_time_range_slack (§11.3: 30s).
    ingestion_slack: float = 30.0
    # metrics_generator.processor.local_blocks.filter_server_spans (§7.4: default true).
    filter_server_spans: bool = True
    # metrics_generator.processor.service_graphs.wait (§11.2: 10s).
    service_graph_wait: float = 10.0
    # metrics_generator.processor.service_graphs.peer_attributes (§11.2 defaults).
    peer_attributes: tuple[str, ...] = ("peer.service", "db.name", "db.system")
    stale_duration: float = 900.0  # metrics_generator.registry.stale_duration (§11.3: 15m)
    instance: str = ""  # value of __metrics_gen_instance (§11.3: the hostname)
    # Memory bounds of the stand-in (not Tempo settings; README "Memory").
    retention: float = 3600.0
    max_spans: int = 500_000
    max_spans_per_trace: int = 50_000
    data_dir: str = ""

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
        # An empty block (`grpc:`) means "on, default endpoint" (collector receiver semantics;
        # tempo-api.md §2: localhost:4317 / localhost:4318 since 2.7).
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
        remote_writes.append(
            RemoteWrite(
                url=str(entry["url"]),
                send_exemplars=bool(entry.get("send_exemplars", False)),
                headers=tuple((str(k), str(v)) for k, v in headers.items()),
                name=str(entry.get("name", "")),
            )
        )
    processors = _get(doc, "overrides.defaults.metrics_generator.processors") or []
    if not isinstance(processors, list):
        raise ConfigError("overrides.defaults.metrics_generator.processors is not a list")
    fss = _get(doc, "metrics_generator.processor.local_blocks.filter_server_spans")
    peers = _get(doc, "metrics_generator.processor.service_graphs.peer_attributes")

    return StandinConfig(
        http_host=str(host) if host else base.http_host,
        http_port=int(port) if port is not None else base.http_port,
        otlp_grpc=grpc_ep,
        otlp_http=http_ep,
        trace_idle_period=_duration(doc, "ingester.trace_idle_period", base.trace_idle_period),
        trace_live_period=_duration(doc, "ingester.trace_live_period", base.trace_live_period),
        flush_check_period=_duration(doc, "ingester.flush_check_period", base.flush_check_period),
        collection_interval=_duration(
            doc, "metrics_generator.registry.collection_interval", base.collection_interval
        ),
        external_labels=tuple(sorted((str(k), str(v)) for k, v in ext.items())),
        remote_write=tuple(remote_writes),
        processors=tuple(str(p) for p in processors),
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
    )


def endpoint_host_port(endpoint: str) -> tuple[str, int]:
    """``host:port`` split (validated by :func:`load_config`)."""
    return _split_host_port(endpoint)
