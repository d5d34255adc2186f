"""``tracecheck apiserver check-config FILE``: validate a kube-apiserver TracingConfiguration.

The rules follow what kube-apiserver 1.34 itself does with ``--tracing-config-file``
(docs/reference/apiserver.md §2, and k8s.io/apiserver ``pkg/server/options/tracing.go``,
k8s.io/component-base ``tracing/api/v1/config.go``):

* the file is decoded **strictly** (``serializer.EnableStrict``): an unknown or duplicated field
  is an error, and only ``apiVersion``, ``kind``, ``endpoint`` and ``samplingRatePerMillion``
  exist (the object has no ``metadata``);
* ``kind: TracingConfiguration``; ``apiVersion: apiserver.config.k8s.io/v1`` (1.34+),
  ``v1beta1`` or ``v1alpha1``;
* ``samplingRatePerMillion`` is an int32 between 0 and 1,000,000;
* ``endpoint`` is a gRPC target: without ``//`` it is read as ``dns://<endpoint>``; only the
  schemes ``dns``, ``unix`` and ``unix-abstract`` are accepted, so ``http(s)://`` is refused
  with "unsupported scheme".

Beyond what the apiserver refuses, warnings point at settings that start fine but trace nothing
or export nowhere: a cluster-DNS endpoint (the apiserver runs on the host network and cannot
resolve ``*.svc``, §8), a target without a port (gRPC's DNS resolver then dials 443), and a
sampling rate of 0 or unset (only trusted, sampled ``traceparent`` headers are traced, §3-§4).

Every finding carries the line and the field::

    >>> for f in check_tracing_config("stack/apiserver/tracing-config.yaml"):  # doctest: +SKIP
    ...     print(f)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tracecheck.errors import ConfigError
from tracecheck.results import Finding, Level, has_errors

__all__ = [
    "API_GROUP",
    "API_VERSIONS",
    "FIELDS",
    "Finding",
    "check_tracing_config",
    "check_tracing_config_text",
    "has_errors",
]

API_GROUP = "apiserver.config.k8s.io"
#: Versions kube-apiserver 1.34 decodes (v1 is new in 1.34; §2).
API_VERSIONS = tuple(f"{API_GROUP}/{v}" for v in ("v1", "v1beta1", "v1alpha1"))
#: Every field of the object (TypeMeta inline + component-base TracingConfiguration inline).
FIELDS = ("apiVersion", "kind", "endpoint", "samplingRatePerMillion")
MAX_RATE = 1_000_000
_INT32_MAX = 2**31 - 1
_SCHEMES = ("dns", "unix", "unix-abstract")
# Names only cluster DNS resolves; the apiserver's host-network resolv.conf does not (§8).
_CLUSTER_DNS = re.compile(r"(^|\.)(svc|cluster\.local)\.?$|\.svc\.", re.IGNORECASE)


def _finding(level: Level, line: int, field: str, message: str) -> Finding:
    return Finding(level, field, message, line=line)


def check_tracing_config(path: str | Path) -> list[Finding]:
    """Validate the TracingConfiguration in ``path``; findings in line order.

    An unreadable file raises :class:`~tracecheck.errors.ConfigError` (exit 4); a file that can
    be read but is wrong is reported as findings (exit 4 when any is an error).
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError("tracing-config", str(p), f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return [_finding("error", 1, "(file)", "not UTF-8 text")]
    return check_tracing_config_text(text)


def check_tracing_config_text(text: str) -> list[Finding]:
    """As :func:`check_tracing_config`, for the file's text."""
    import yaml

    try:
        docs = [d for d in yaml.compose_all(text, Loader=yaml.SafeLoader) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        return [_finding("error", line, "(file)", f"not valid YAML: {exc.problem or exc}")]
    except yaml.YAMLError as exc:
        return [_finding("error", 1, "(file)", f"not valid YAML: {exc}")]
    if not docs:
        return [_finding("error", 1, "(file)", "empty: apiVersion and kind are required")]
    findings: list[Finding] = []
    if len(docs) > 1:
        findings.append(
            _finding(
                "error",
                _line(docs[1]),
                "(file)",
                f"{len(docs)} YAML documents; the apiserver reads exactly one TracingConfiguration",
            )
        )
    findings += _check_document(docs[0])
    return sorted(findings, key=lambda f: (f.line, f.level != "error"))


# -- the document -------------------------------------------------------------------------------


def _line(node: Any) -> int:
    return int(node.start_mark.line) + 1


def _value(node: Any) -> Any:
    """The Python value of a scalar node, as PyYAML's safe loader (YAML 1.1, like the
    apiserver's go-yaml v2 based decoder) would build it."""
    import yaml

    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def _check_document(doc: Any) -> list[Finding]:
    import yaml

    if not isinstance(doc, yaml.MappingNode):
        return [
            _finding(
                "error",
                _line(doc),
                "(document)",
                "must be a mapping with apiVersion, kind, endpoint, samplingRatePerMillion",
            )
        ]
    findings: list[Finding] = []
    seen: dict[str, int] = {}
    values: dict[str, Any] = {}  # field -> value node
    for key_node, value_node in doc.value:
        line = _line(key_node)
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if not isinstance(key, str):
            findings.append(_finding("error", line, "(key)", "field names must be strings"))
            continue
        if key in seen:
            findings.append(
                _finding(
                    "error",
                    line,
                    key,
                    f"duplicate field (first on line {seen[key]}); the apiserver decodes strictly",
                )
            )
            continue
        seen[key] = line
        if key not in FIELDS:
            findings.append(_finding("error", line, key, _unknown(key)))
            continue
        values[key] = value_node
    findings += _check_type_meta(doc, values)
    findings += _check_rate(doc, values.get("samplingRatePerMillion"))
    if "endpoint" in values:
        findings += _check_endpoint(values["endpoint"])
    return findings


def _unknown(key: str) -> str:
    close = {f.lower(): f for f in FIELDS}
    hint = close.get(key.lower().replace("_", "").replace("-", ""))
    if key == "metadata":
        return "unknown field: a TracingConfiguration has no metadata (strict decoding refuses it)"
    suggestion = f"; did you mean {hint}?" if hint else f"; known fields: {', '.join(FIELDS)}"
    return f"unknown field (strict decoding refuses it){suggestion}"


def _scalar_text(node: Any) -> str | None:
    """A string scalar's value, or None when the node is not a string."""
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        return None
    value = _value(node)
    return value if isinstance(value, str) else None


def _check_type_meta(doc: Any, values: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    kind_node = values.get("kind")
    if kind_node is None:
        out.append(_finding("error", _line(doc), "kind", "missing; must be TracingConfiguration"))
    else:
        kind = _scalar_text(kind_node)
        if kind != "TracingConfiguration":
            shown = repr(kind) if kind is not None else "not a string"
            out.append(
                _finding(
                    "error",
                    _line(kind_node),
                    "kind",
                    f"{shown}: must be TracingConfiguration",
                )
            )
    version_node = values.get("apiVersion")
    accepted = ", ".join(API_VERSIONS)
    if version_node is None:
        out.append(_finding("error", _line(doc), "apiVersion", f"missing; one of {accepted}"))
    else:
        version = _scalar_text(version_node)
        if version not in API_VERSIONS:
            shown = repr(version) if version is not None else "not a string"
            why = f"{shown} is not decoded by kube-apiserver; one of {accepted}"
            if version is not None and version.startswith(f"{API_GROUP}/"):
                why += " (v1 needs Kubernetes 1.34+)"
            out.append(_finding("error", _line(version_node), "apiVersion", why))
    return out


def _check_rate(doc: Any, node: Any) -> list[Finding]:
    import yaml

    field = "samplingRatePerMillion"
    unset = (
        "the apiserver starts no trace of its own: only requests carrying a sampled traceparent "
        "from system:masters or system:monitoring are traced (docs/reference/apiserver.md §3-§4)"
    )
    if node is None or (isinstance(node, yaml.ScalarNode) and _value(node) is None):
        line = _line(doc) if node is None else _line(node)
        return [_finding("warning", line, field, f"unset: {unset}")]
    line = _line(node)
    value = _value(node) if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, bool) or not isinstance(value, int):
        shown = f"{value!r}" if isinstance(node, yaml.ScalarNode) else "a YAML collection"
        return [_finding("error", line, field, f"{shown} is not an integer (int32, 0..1000000)")]
    if value < 0:
        return [_finding("error", line, field, f"{value}: sampling rate must not be negative")]
    if value > MAX_RATE:
        why = "more than one million per million" if value <= _INT32_MAX else "overflows int32"
        return [_finding("error", line, field, f"{value}: {why}; at most 1000000 (every request)")]
    if value == 0:
        return [_finding("warning", line, field, f"0: {unset}")]
    return []


def _check_endpoint(node: Any) -> list[Finding]:
    import yaml

    field = "endpoint"
    line = _line(node)
    if isinstance(node, yaml.ScalarNode) and _value(node) is None:
        return []  # null: unset, the default localhost:4317
    endpoint = _scalar_text(node)
    if endpoint is None:
        shown = repr(_value(node)) if isinstance(node, yaml.ScalarNode) else "a YAML collection"
        return [_finding("error", line, field, f"{shown} is not a string (a gRPC target)")]
    if not endpoint.strip():
        return [_finding("error", line, field, "empty; unset it to use localhost:4317")]
    if endpoint.lower().startswith(("unix:", "unix-abstract:")):
        return []  # gRPC's unix targets, also the single-slash unix:/path and unix:relative forms
    # component-base validateEndpoint: no "//" means a DNS target.
    explicit = "//" in endpoint
    target = endpoint if explicit else "dns://" + endpoint
    try:
        parts = urlsplit(target)
    except ValueError as exc:
        return [_finding("error", line, field, f"{endpoint!r} is not a valid gRPC target: {exc}")]
    scheme = parts.scheme
    if scheme not in _SCHEMES:
        where = parts.netloc or "host:4317"
        hint = ""
        if scheme in ("http", "https", "grpc", "grpcs"):
            hint = f"; the exporter speaks plaintext OTLP/gRPC: write {where} or dns:///{where}"
        return [
            _finding(
                "error",
                line,
                field,
                f"{endpoint!r}: unsupported scheme {scheme!r}; the apiserver accepts host:port, "
                f"dns:///host:port, unix:///path or unix-abstract:name{hint}",
            )
        ]
    if scheme != "dns":
        return []
    if explicit and not parts.path.strip("/"):
        # gRPC reads dns://X as "resolver X, no target": the dial fails at every export.
        return [
            _finding(
                "error",
                line,
                field,
                f"{endpoint!r} names a DNS server but no target (gRPC: dns://[server]/host:port); "
                f"write dns:///{parts.netloc or 'host:4317'}",
            )
        ]
    host_port = parts.path.strip("/") if explicit else parts.netloc
    try:
        hp = urlsplit("dns://" + host_port)
        host, port = hp.hostname or "", hp.port
    except ValueError as exc:
        return [_finding("error", line, field, f"{endpoint!r}: {exc}")]
    out: list[Finding] = []
    if not host:
        out.append(_finding("error", line, field, f"{endpoint!r} names no host"))
    elif port is None:
        out.append(
            _finding(
                "warning",
                line,
                field,
                f"{endpoint!r} has no port: gRPC's DNS resolver then dials 443; "
                "the collector's OTLP/gRPC port is usually 4317",
            )
        )
    if host and _CLUSTER_DNS.search(host):
        out.append(
            _finding(
                "warning",
                line,
                field,
                f"{host!r} is a cluster DNS name: kube-apiserver runs with hostNetwork and the "
                "node's resolv.conf, so it cannot resolve it; use a ClusterIP, a node-local "
                "collector (localhost:4317) or a node IP (docs/reference/apiserver.md §8)",
            )
        )
    return out
