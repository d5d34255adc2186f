"""Settings, resolved once: defaults < TOML file (``--config``) < ``TRACECHECK_*`` env < flags.

Every setting lives in a section; the same setting is spelled

* ``[tempo] url = "..."`` in the TOML file,
* ``TRACECHECK_TEMPO_URL`` in the environment,
* ``--tempo-url`` on the command line (where the command offers it).

Defaults are the ports of the local pipeline (``tracecheck stack local up``), so commands need
no flags against it. Core code receives a frozen :class:`Settings` and never reads ``os.environ``:
what depends on the environment is resolved here, from an ``env`` mapping the caller passes (the
CLI passes ``os.environ``): the settings themselves, where tracecheck keeps its state and its
build cache (:func:`default_state_dir`, :func:`default_cache_dir`), and which kubeconfig the
apiserver leg uses (:func:`resolve_kubeconfig`, :func:`with_kubeconfig`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tracecheck.errors import ConfigError

__all__ = [
    "ApiserverSettings",
    "CollectorSettings",
    "DeadlineSettings",
    "PrometheusSettings",
    "Settings",
    "SmokeSettings",
    "TempoSettings",
    "default_cache_dir",
    "default_state_dir",
    "describe_settings",
    "load_settings",
    "local_kubeconfig",
    "resolve_kubeconfig",
    "with_kubeconfig",
]

Headers = tuple[tuple[str, str], ...]


def _f(default: Any, help: str, *, secret: bool = False) -> Any:
    """A settings field with its help text (used for the README table and ``--help``)."""
    if isinstance(default, (list, dict)):
        raise TypeError("mutable default")
    return field(default=default, metadata={"help": help, "secret": secret})


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    endpoint: str = _f("localhost:4317", "OTLP/gRPC target (host:port) of the collector")
    http_url: str = _f("http://localhost:4318", "OTLP/HTTP base URL; spans go to <url>/v1/traces")
    protocol: str = _f("grpc", "protocol for synthetic spans: grpc or http")
    insecure: bool = _f(True, "plaintext gRPC (no TLS); set false to use TLS")
    ca_file: str = _f("", "CA bundle to verify the collector's TLS certificate")
    cert_file: str = _f("", "client certificate for mutual TLS")
    key_file: str = _f("", "client key for mutual TLS", secret=True)
    headers: Headers = _f((), "extra headers sent with every export (k=v,k2=v2)", secret=True)
    tenant: str = _f("", "X-Scope-OrgID sent with every export")
    compression: str = _f("gzip", "export compression: gzip or none")
    health_url: str = _f("http://localhost:13133/", "health_check extension URL ('' to skip)")
    metrics_url: str = _f(
        "http://localhost:8888/metrics", "collector self-metrics URL ('' to skip)"
    )
    timeout: float = _f(10.0, "seconds per export request")
    retries: int = _f(3, "export retries on retryable codes")


@dataclass(frozen=True, slots=True)
class TempoSettings:
    url: str = _f("http://localhost:3200", "Tempo HTTP API base URL")
    api_prefix: str = _f(
        "", "Tempo's http_api_prefix: the API under <url><prefix>, /ready and /metrics at <url>"
    )
    tenant: str = _f("", "X-Scope-OrgID (tenant) for every request")
    headers: Headers = _f((), "extra headers, e.g. Authorization=Bearer ... (k=v,...)", secret=True)
    ca_file: str = _f("", "CA bundle for HTTPS")
    cert_file: str = _f("", "client certificate for mutual TLS")
    key_file: str = _f("", "client key for mutual TLS", secret=True)
    insecure_skip_verify: bool = _f(False, "do not verify the TLS certificate")
    timeout: float = _f(10.0, "seconds per request")


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    url: str = _f("http://localhost:9090", "Prometheus base URL")
    tenant: str = _f("", "X-Scope-OrgID for every request (Mimir, Cortex)")
    headers: Headers = _f((), "extra headers (k=v,...)", secret=True)
    ca_file: str = _f("", "CA bundle for HTTPS")
    cert_file: str = _f("", "client certificate for mutual TLS")
    key_file: str = _f("", "client key for mutual TLS", secret=True)
    insecure_skip_verify: bool = _f(False, "do not verify the TLS certificate")
    timeout: float = _f(10.0, "seconds per request")


@dataclass(frozen=True, slots=True)
class ApiserverSettings:
    kubeconfig: str = _f(
        "", "kubeconfig path (default: KUBECONFIG, the local pipeline's, ~/.kube/config)"
    )
    context: str = _f("", "kubeconfig context (default: the current context)")
    requests: int = _f(4, "traced requests per probe (unprivileged: burst size)")
    paths: tuple[str, ...] = _f(
        (
            "/api/v1/namespaces/default",
            "/api/v1/namespaces/default/pods?limit=1",
            "/readyz",
            "/version",
        ),
        "read-only paths requested with a traceparent",
    )
    burst: int = _f(50, "requests sent when the credential is not trusted with the traceparent")
    timeout: float = _f(10.0, "seconds per request")


@dataclass(frozen=True, slots=True)
class DeadlineSettings:
    """Per-check deadlines in seconds; defaults from Tempo 2.9's polling budget
    (docs/reference/tempo.md §10)."""

    preflight: float = _f(5.0, "readiness of collector, Tempo, Prometheus, apiserver")
    send: float = _f(15.0, "synthetic trace accepted by the collector, retries included")
    trace_by_id: float = _f(10.0, "synthetic trace visible by ID in Tempo")
    search: float = _f(30.0, "trace found by TraceQL search")
    span_metrics: float = _f(60.0, "span-metrics counters rose in Prometheus")
    exemplars: float = _f(60.0, "exemplar with our trace ID in Prometheus")
    service_graph: float = _f(60.0, "service-graph edge counter rose")
    apiserver_trace: float = _f(
        30.0, "apiserver spans visible in Tempo (apiserver batches for 5 s)"
    )


@dataclass(frozen=True, slots=True)
class SmokeSettings:
    only: tuple[str, ...] = _f((), "run only these checks or groups")
    skip: tuple[str, ...] = _f((), "skip these checks or groups (e.g. apiserver)")
    span_metrics_naming: str = _f("auto", "span-metric names: auto, tempo or otel")
    client_service: str = _f("tracecheck-client", "service.name of the synthetic CLIENT span")
    server_service: str = _f("tracecheck-server", "service.name of the synthetic SERVER span")
    seed: int = _f(0, "seed for the synthetic trace (0: derived from the run start time)")
    wait_ready: float = _f(
        0.0,
        "after a deploy: keep asking the preflight checks through connection refused and 503 "
        "for up to this long (e.g. 5m; 0: no wait)",
    )
    poll_initial: float = _f(0.05, "first poll interval, seconds")
    poll_max: float = _f(0.7, "poll interval cap, seconds")


@dataclass(frozen=True, slots=True)
class Settings:
    collector: CollectorSettings = field(default_factory=CollectorSettings)
    tempo: TempoSettings = field(default_factory=TempoSettings)
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    apiserver: ApiserverSettings = field(default_factory=ApiserverSettings)
    deadlines: DeadlineSettings = field(default_factory=DeadlineSettings)
    smoke: SmokeSettings = field(default_factory=SmokeSettings)

    def replace(self, **dotted: Any) -> Settings:
        """A copy with ``section.field`` values replaced (values already typed)."""
        return _apply(self, {k: (v, "code") for k, v in dotted.items()})

    def redacted(self) -> dict[str, dict[str, Any]]:
        """The settings as plain data with secret values masked, for reports and logs."""
        out: dict[str, dict[str, Any]] = {}
        for section, obj in _sections(self):
            row: dict[str, Any] = {}
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                if f.metadata.get("secret") and value:
                    value = {k: "***" for k, _ in value} if f.name == "headers" else "***"
                elif isinstance(value, tuple):
                    value = list(value)
                row[f.name] = value
            out[section] = row
        return out


def _sections(settings: Settings) -> Iterator[tuple[str, Any]]:
    for f in dataclasses.fields(settings):
        yield f.name, getattr(settings, f.name)


def describe_settings() -> list[tuple[str, str, str, str, str]]:
    """(file key, env var, flag, default, help) for every setting: the README's table."""
    rows = []
    for section, obj in _sections(Settings()):
        for f in dataclasses.fields(obj):
            key = f"{section}.{f.name}"
            env = f"TRACECHECK_{section.upper()}_{f.name.upper()}"
            flag = "--" + key.replace(".", "-").replace("_", "-")
            default = getattr(obj, f.name)
            if isinstance(default, tuple):
                default = ",".join(
                    f"{x[0]}={x[1]}" if isinstance(x, tuple) else str(x) for x in default
                )
            rows.append((key, env, flag, str(default), f.metadata["help"]))
    return rows


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve settings: defaults < TOML ``config_file`` < ``TRACECHECK_*`` in ``env`` < ``flags``.

    ``flags`` maps ``section.field`` to a value; ``None`` values mean "flag not given". Strings are
    converted like environment values. Raises :class:`ConfigError` naming the source and key.

    >>> load_settings(env={"TRACECHECK_TEMPO_URL": "http://tempo:3200"}).tempo.url
    'http://tempo:3200'
    """
    values: dict[str, tuple[Any, str]] = {}
    if config_file is not None:
        values.update(_read_toml(Path(config_file)))
    for name, raw in (env or {}).items():
        if not name.startswith("TRACECHECK_") or name in _NOT_SETTINGS:
            continue
        key = _env_key(name)
        if key is None:
            raise ConfigError("config", name, "unknown setting in the environment")
        values[key] = (raw, f"environment {name}")
    for key, value in (flags or {}).items():
        if value is None or value == ():
            continue
        values[key] = (value, f"flag --{key.replace('.', '-').replace('_', '-')}")
    return _apply(Settings(), values)


# Environment variables that configure tracecheck itself rather than a setting.
_NOT_SETTINGS = frozenset({"TRACECHECK_CONFIG", "TRACECHECK_STATE_DIR", "TRACECHECK_CACHE_DIR"})


def _env_key(name: str) -> str | None:
    rest = name[len("TRACECHECK_") :].lower()
    for section, obj in _sections(Settings()):
        if rest.startswith(section + "_"):
            fname = rest[len(section) + 1 :]
            if fname in {f.name for f in dataclasses.fields(obj)}:
                return f"{section}.{fname}"
    return None


def _read_toml(path: Path) -> dict[str, tuple[Any, str]]:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("config", str(path), f"cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("config", str(path), "not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", str(path), f"invalid TOML: {exc}") from exc
    out: dict[str, tuple[Any, str]] = {}
    sections = dict(_sections(Settings()))
    for section, table in data.items():
        if section not in sections:
            raise ConfigError("config", str(path), f"unknown section [{section}]")
        if not isinstance(table, dict):
            raise ConfigError("config", str(path), f"[{section}] must be a table")
        for key, value in table.items():
            out[f"{section}.{key}"] = (value, f"{path} [{section}] {key}")
    return out


def _apply(settings: Settings, values: Mapping[str, tuple[Any, str]]) -> Settings:
    per_section: dict[str, dict[str, Any]] = {}
    sections = dict(_sections(settings))
    for key, (raw, source) in values.items():
        section, _, fname = key.partition(".")
        obj = sections.get(section)
        if obj is None:
            raise ConfigError("config", source, f"unknown setting {key!r}")
        types_ = typing.get_type_hints(type(obj))
        if fname not in types_:
            raise ConfigError("config", source, f"unknown setting {key!r}")
        per_section.setdefault(section, {})[fname] = _coerce(raw, types_[fname], key, source)
    changes = {
        section: dataclasses.replace(sections[section], **fields_)
        for section, fields_ in per_section.items()
    }
    result = dataclasses.replace(settings, **changes)
    _validate(result)
    return result


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _coerce(raw: Any, typ: Any, key: str, source: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError("config", source, f"{key}: expected {expected}, got {raw!r}")

    if typ is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise bad("true or false")
    if typ is int:
        if isinstance(raw, bool):
            raise bad("an integer")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise bad("an integer") from None
    if typ is float:  # every float setting is seconds: a number, or a duration such as 5m
        if isinstance(raw, bool):
            raise bad("a number")
        try:
            value = _seconds(raw) if isinstance(raw, str) else float(raw)
        except (TypeError, ValueError):
            raise bad("seconds or a duration such as 90s, 5m, 1h30m") from None
        if value != value or value < 0:
            raise bad("a non-negative number")
        return value
    if typ is str:
        if not isinstance(raw, str):
            raise bad("a string")
        return raw
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin is tuple and args and args[0] == tuple[str, str]:
        return _headers(raw, bad)
    if origin is tuple:
        if isinstance(raw, str):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise bad("a list of strings")
    if isinstance(typ, types.UnionType):  # pragma: no cover - no such fields today
        raise bad(str(typ))
    raise bad(str(typ))  # pragma: no cover


_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text: str) -> float:
    """Seconds from ``"30"``, ``"2.5"`` or a duration ``"90s"``, ``"5m"``, ``"1h30m"``,
    ``"500ms"``; ValueError otherwise."""
    text = text.strip()
    if _DURATION.match(text):
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return float(text)


def _headers(raw: Any, bad: Any) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, str):
        items = []
        for part in raw.split(","):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            if not sep:
                name, sep, value = part.partition(":")
            if not sep or not name.strip():
                raise bad("headers as name=value,name2=value2")
            items.append((name, value))
    elif isinstance(raw, (list, tuple)):
        items = []
        for item in raw:
            if isinstance(item, tuple) and len(item) == 2:
                items.append(item)
            elif isinstance(item, str) and ("=" in item or ":" in item):
                sep = "=" if "=" in item else ":"
                name, _, value = item.partition(sep)
                items.append((name, value))
            else:
                raise bad("headers as name=value")
    else:
        raise bad("headers as name=value,name2=value2")
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, str):
            raise bad("string header names and values")
        pairs.append((name.strip(), value.strip()))
    return tuple(pairs)


def _check_url(key: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ConfigError("config", key, f"malformed URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in url:
        raise ConfigError("config", key, f"malformed URL {url!r}: expected http(s)://host[:port]")
    del port


def _validate(s: Settings) -> None:
    if s.collector.protocol not in ("grpc", "http"):
        raise ConfigError(
            "config", "collector.protocol", f"must be grpc or http, not {s.collector.protocol!r}"
        )
    if s.collector.compression not in ("gzip", "none"):
        raise ConfigError(
            "config",
            "collector.compression",
            f"must be gzip or none, not {s.collector.compression!r}",
        )
    if s.smoke.span_metrics_naming not in ("auto", "tempo", "otel"):
        raise ConfigError(
            "config",
            "smoke.span_metrics_naming",
            f"must be auto, tempo or otel, not {s.smoke.span_metrics_naming!r}",
        )
    for key, url in (
        ("tempo.url", s.tempo.url),
        ("prometheus.url", s.prometheus.url),
        ("collector.http_url", s.collector.http_url),
        *((("collector.health_url", s.collector.health_url),) if s.collector.health_url else ()),
        *((("collector.metrics_url", s.collector.metrics_url),) if s.collector.metrics_url else ()),
    ):
        _check_url(key, url)
    prefix = s.tempo.api_prefix
    if prefix and (not prefix.startswith("/") or any(c in prefix for c in "?# \t")):
        raise ConfigError(
            "config", "tempo.api_prefix", f"must be a path such as /tempo, not {prefix!r}"
        )
    if s.apiserver.requests < 1 or s.apiserver.burst < 1:
        raise ConfigError("config", "apiserver.requests", "must be at least 1")


# -- what depends on the environment ---------------------------------------------------------


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def default_state_dir(env: Mapping[str, str]) -> Path:
    """``$TRACECHECK_STATE_DIR``, else ``${XDG_STATE_HOME:-~/.local/state}/tracecheck/local``.

    The local pipeline keeps its logs, pid records, PKI, kubeconfig, rendered configs and data
    directories under it.
    """
    if env.get("TRACECHECK_STATE_DIR"):
        return Path(env["TRACECHECK_STATE_DIR"]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(_home(env) / ".local" / "state")
    return Path(base).expanduser() / "tracecheck" / "local"


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """``$TRACECHECK_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/tracecheck``.

    Built binaries go to ``<cache>/bin/<component>-<version>-<hash12>/``, outside the repository.
    """
    if env.get("TRACECHECK_CACHE_DIR"):
        return Path(env["TRACECHECK_CACHE_DIR"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(_home(env) / ".cache")
    return Path(base).expanduser() / "tracecheck"


def local_kubeconfig(env: Mapping[str, str]) -> Path:
    """The kubeconfig the local pipeline writes (``<state dir>/kubeconfig``)."""
    return default_state_dir(env) / "kubeconfig"


def resolve_kubeconfig(
    explicit: str, env: Mapping[str, str], local_kubeconfig: Path | None
) -> str | None:
    """Which kubeconfig to use; None means "none: use the in-cluster service account".

    In order: ``explicit`` (``--kubeconfig``), ``KUBECONFIG`` from ``env`` (may be a
    ``:``-separated list, as kubectl reads it), ``local_kubeconfig`` (the local pipeline's) if
    that file exists, ``~/.kube/config`` (``HOME`` from ``env``) if it exists.
    """
    if explicit:
        return explicit
    if env.get("KUBECONFIG", "").strip(":"):
        return env["KUBECONFIG"]
    if local_kubeconfig is not None and local_kubeconfig.is_file():
        return str(local_kubeconfig)
    default = _home(env) / ".kube" / "config"
    return str(default) if default.is_file() else None


def with_kubeconfig(settings: Settings, env: Mapping[str, str]) -> Settings:
    """``settings`` with ``apiserver.kubeconfig`` filled when neither ``--kubeconfig``, the TOML
    file nor ``TRACECHECK_APISERVER_KUBECONFIG`` chose one: ``KUBECONFIG``, the local pipeline's
    kubeconfig, ``~/.kube/config`` (still empty: the in-cluster service account)."""
    if settings.apiserver.kubeconfig:
        return settings
    found = resolve_kubeconfig("", env, local_kubeconfig(env))
    return settings.replace(**{"apiserver.kubeconfig": found}) if found else settings
