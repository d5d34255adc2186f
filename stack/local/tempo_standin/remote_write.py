"""Prometheus remote write 1.0: ``prometheus.WriteRequest``, snappy, and the HTTP POST.

The message types are built from descriptors in code (no protoc, no generated module):

    message WriteRequest { repeated TimeSeries timeseries = 1; reserved 2;
                           repeated MetricMetadata metadata = 3; }
    message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2;
                           repeated Exemplar exemplars = 3; }
    message Label        { string name = 1; string value = 2; }
    message Sample       { double value = 1; int64 timestamp = 2; }
    message Exemplar     { repeated Label labels = 1; double value = 2; int64 timestamp = 3; }

Wire facts (Prometheus remote-write 1.0 specification): the body is the snappy *block* format,
headers ``Content-Encoding: snappy``, ``Content-Type: application/x-protobuf``,
``X-Prometheus-Remote-Write-Version: 0.1.0``; labels sorted by name within a series. Tempo adds
``X-Scope-OrgID`` by default (tempo-api.md §11.3, ``remote_write_add_org_id_header``).
"""

from __future__ import annotations

import base64
import http.client
import urllib.parse
from dataclasses import dataclass
from typing import Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "PushResult",
    "Series",
    "build_write_request",
    "push",
    "write_request_class",
]


@dataclass(frozen=True, slots=True)
class Series:
    """One series in a write: labels (incl. __name__), samples (value, ms), exemplars."""

    labels: tuple[tuple[str, str], ...]
    samples: tuple[tuple[float, int], ...]
    # (exemplar labels, value, timestamp ms)
    exemplars: tuple[tuple[tuple[tuple[str, str], ...], float, int], ...] = ()


_CLASSES: dict[str, Any] = {}


def _build_classes() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto()
    # A private package name, so the pool never clashes with another copy of these types.
    fdp.name = "tempo_standin/remote.proto"
    fdp.package = "prometheus"
    fdp.syntax = "proto3"
    T = descriptor_pb2.FieldDescriptorProto

    def msg(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
        m = fdp.message_type.add()
        m.name = name
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add()
            f.name = fname
            f.number = number
            f.type = ftype
            f.label = label
            if type_name:
                f.type_name = type_name

    rep, opt = T.LABEL_REPEATED, T.LABEL_OPTIONAL
    msg("Label", [("name", 1, T.TYPE_STRING, opt, ""), ("value", 2, T.TYPE_STRING, opt, "")])
    msg("Sample", [("value", 1, T.TYPE_DOUBLE, opt, ""), ("timestamp", 2, T.TYPE_INT64, opt, "")])
    msg(
        "Exemplar",
        [
            ("labels", 1, T.TYPE_MESSAGE, rep, ".prometheus.Label"),
            ("value", 2, T.TYPE_DOUBLE, opt, ""),
            ("timestamp", 3, T.TYPE_INT64, opt, ""),
        ],
    )
    msg(
        "TimeSeries",
        [
            ("labels", 1, T.TYPE_MESSAGE, rep, ".prometheus.Label"),
            ("samples", 2, T.TYPE_MESSAGE, rep, ".prometheus.Sample"),
            ("exemplars", 3, T.TYPE_MESSAGE, rep, ".prometheus.Exemplar"),
        ],
    )
    msg("WriteRequest", [("timeseries", 1, T.TYPE_MESSAGE, rep, ".prometheus.TimeSeries")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
        for name in ("Label", "Sample", "Exemplar", "TimeSeries", "WriteRequest")
    }


def write_request_class() -> Any:
    """The ``prometheus.WriteRequest`` message class."""
    if not _CLASSES:
        _CLASSES.update(_build_classes())
    return _CLASSES["WriteRequest"]


def build_write_request(series: list[Series], *, with_exemplars: bool) -> bytes:
    """Serialized (not yet compressed) WriteRequest."""
    req = write_request_class()()
    for s in series:
        ts = req.timeseries.add()
        for name, label_value in sorted(s.labels):
            lbl = ts.labels.add()
            lbl.name = name
            lbl.value = label_value
        for sample_value, t_ms in s.samples:
            smp = ts.samples.add()
            smp.value = sample_value
            smp.timestamp = t_ms
        if with_exemplars:
            for ex_labels, ex_value, t_ms in s.exemplars:
                ex = ts.exemplars.add()
                for name, lv in ex_labels:
                    el = ex.labels.add()
                    el.name = name
                    el.value = lv
                ex.value = ex_value
                ex.timestamp = t_ms
    return bytes(req.SerializeToString())


@dataclass(frozen=True, slots=True)
class PushResult:
    status: int  # HTTP status, 0 when no response (connection error)
    error: str  # "" on success; one line otherwise
    retryable: bool


def push(
    url: str,
    payload: bytes,
    *,
    tenant: str,
    headers: tuple[tuple[str, str], ...] = (),
    timeout: float = 10.0,
) -> PushResult:
    """POST one snappy-compressed WriteRequest. Never raises for network or HTTP errors.

    Retry semantics follow Prometheus's queue manager: 5xx, 429 and connection errors are
    retryable; other 4xx are not (the batch is dropped).
    """
    body = bytes(cramjam.snappy.compress_raw(payload))
    parts = urllib.parse.urlsplit(url)
    conn_cls = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    hdrs = {
        "Content-Encoding": "snappy",
        "Content-Type": "application/x-protobuf",
        "User-Agent": "tempo-standin/2.9.0",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
        "X-Scope-OrgID": tenant,
    }
    if parts.username is not None:
        # Go's HTTP client sends URL userinfo as basic auth; the connection gets the host only.
        user = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        hdrs["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
    hdrs.update(dict(headers))
    try:
        conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout)
        try:
            conn.request("POST", path, body=body, headers=hdrs)
            resp = conn.getresponse()
            text = resp.read(512).decode("utf-8", "replace").strip().replace("\n", " ")
            status = resp.status
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return PushResult(0, f"{type(exc).__name__}: {exc}", True)
    if 200 <= status < 300:
        return PushResult(status, "", False)
    retryable = status >= 500 or status == 429
    return PushResult(status, f"HTTP {status}: {text[:200]}", retryable)
