"""A small apiserver-like trace with every part TraceQL can address (span, resource, event,
link and scope attributes, several services, a three-level tree), for the TraceQL tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from tempo_standin.model import SpanRecord
from tempo_standin.otlp import records_from_request
from tempo_standin.traceql import TraceView

SERVER, CLIENT, INTERNAL = 2, 3, 1
OK, ERROR = 1, 2

TID = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
LINK_TID = bytes.fromhex("00aa" + "bb" * 14)
LINK_SID = bytes.fromhex("0011223344556677")
ROOT, KV, LIST, DECODE, ETCD = (bytes([0, 0, 0, 0, 0, 0, 0, n]) for n in (1, 2, 3, 4, 5))
# names in start order
ALL = ["GET /api/v1/pods", "etcdserverpb.KV/Range", "Range", "List", "decode"]


def _set(av: common_pb2.AnyValue, v: Any) -> None:
    if isinstance(v, bool):
        av.bool_value = v
    elif isinstance(v, int):
        av.int_value = v
    elif isinstance(v, float):
        av.double_value = v
    elif isinstance(v, list):
        for x in v:
            _set(av.array_value.values.add(), x)
    else:
        av.string_value = str(v)


def _attrs(target: Any, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        kv = target.add()
        kv.key = k
        _set(kv.value, v)


@dataclass
class S:
    span_id: bytes
    name: str
    kind: int
    offset_ms: float
    duration_ms: float
    parent: bytes = b""
    status: int = 0
    message: str = ""
    attrs: dict[str, Any] | None = None
    events: list[tuple[str, float, dict[str, Any]]] | None = None
    links: list[tuple[bytes, bytes, dict[str, Any]]] | None = None


def request(
    trace_id: bytes,
    t0: int,
    groups: list[tuple[str, dict[str, Any], tuple[str, str, dict[str, Any]], list[S]]],
) -> trace_service_pb2.ExportTraceServiceRequest:
    req = trace_service_pb2.ExportTraceServiceRequest()
    for service, res_attrs, (scope_name, scope_version, scope_attrs), spans in groups:
        rs = req.resource_spans.add()
        _attrs(rs.resource.attributes, {"service.name": service, **res_attrs})
        ss = rs.scope_spans.add()
        ss.scope.name = scope_name
        ss.scope.version = scope_version
        _attrs(ss.scope.attributes, scope_attrs)
        for sp in spans:
            s = ss.spans.add()
            s.trace_id = trace_id
            s.span_id = sp.span_id
            if sp.parent:
                s.parent_span_id = sp.parent
            s.name = sp.name
            s.kind = sp.kind  # type: ignore[assignment]
            s.start_time_unix_nano = t0 + int(sp.offset_ms * 1e6)
            s.end_time_unix_nano = s.start_time_unix_nano + int(sp.duration_ms * 1e6)
            if sp.status:
                s.status.code = sp.status  # type: ignore[assignment]
            if sp.message:
                s.status.message = sp.message
            _attrs(s.attributes, sp.attrs or {})
            for name, at_ms, eattrs in sp.events or []:
                e = s.events.add()
                e.name = name
                e.time_unix_nano = s.start_time_unix_nano + int(at_ms * 1e6)
                _attrs(e.attributes, eattrs)
            for ltid, lsid, lattrs in sp.links or []:
                lk = s.links.add()
                lk.trace_id = ltid
                lk.span_id = lsid
                _attrs(lk.attributes, lattrs)
    return req


def apiserver_groups() -> list[
    tuple[str, dict[str, Any], tuple[str, str, dict[str, Any]], list[S]]
]:
    api = [
        S(
            ROOT,
            "GET /api/v1/pods",
            SERVER,
            0,
            150,
            attrs={
                "http.method": "GET",
                "http.status_code": 200,
                "audit-id": "abc-123",
                "http.target": "/api/v1/pods?watch=true",
                "sampled": True,
                "ratio": 0.25,
                "size": 7,
            },
            events=[("received", 1, {"bytes": 10})],
            links=[(LINK_TID, LINK_SID, {"link.kind": "follows"})],
        ),
        S(
            KV,
            "etcdserverpb.KV/Range",
            CLIENT,
            10,
            5,
            parent=ROOT,
            status=ERROR,
            message="deadline",
            attrs={"rpc.system": "grpc", "db.system": "etcd"},
            events=[
                ("exception", 4, {"exception.type": "Timeout"}),
                ("retry", 4.5, {"exception.type": "Again"}),
            ],
        ),
        S(
            LIST,
            "List",
            INTERNAL,
            20,
            50,
            parent=ROOT,
            status=OK,
            attrs={"resource": "pods", "verb": "list", "tags": ["a", "b"], "size": 3},
        ),
        S(DECODE, "decode", INTERNAL, 30, 2, parent=LIST, attrs={"n": 3, "size": 1.5}),
    ]
    etcd = [S(ETCD, "Range", SERVER, 11, 3, parent=KV, attrs={"size": 12})]
    return [
        ("apiserver", {"k8s.ns": "default"}, ("k8s.io/apiserver", "1.34.0", {"lib": "otel"}), api),
        ("etcd", {}, ("go.etcd.io/etcd", "3.5.0", {}), etcd),
    ]


def build_view(
    trace_id: bytes = TID,
    groups: list[tuple[str, dict[str, Any], tuple[str, str, dict[str, Any]], list[S]]]
    | None = None,
    t0: int | None = None,
) -> tuple[TraceView, list[SpanRecord]]:
    t0 = t0 if t0 is not None else time.time_ns() - 1_000_000_000
    req = request(trace_id, t0, groups if groups is not None else apiserver_groups())
    decoded = records_from_request(req, time.time())  # (records, groups[, malformed count])
    records, group_list = decoded[0], decoded[1]
    scopes = {
        key: (scope.name, scope.version, {kv.key: _plain(kv.value) for kv in scope.attributes})
        for key, _res, scope, _u1, _u2 in group_list
    }
    return TraceView.of(trace_id, records, scopes.__getitem__), records


def _plain(av: common_pb2.AnyValue) -> Any:
    which = av.WhichOneof("value")
    return getattr(av, which) if which else None
