"""Helpers for the stand-in tests: OTLP request builders, senders, and decoders written
independently of the stand-in (a hand-rolled snappy block decoder and protobuf wire reader), so
remote-write assertions do not trust the code under test."""

from __future__ import annotations

import gzip
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
STANDIN_PATH = REPO / "stack" / "local"

SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER = 2, 3, 1, 4, 5
UNSET, OK, ERROR = 0, 1, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _set_value(av: Any, v: Any) -> None:
    if isinstance(v, bool):
        av.bool_value = v
    elif isinstance(v, int):
        av.int_value = v
    elif isinstance(v, float):
        av.double_value = v
    elif isinstance(v, list):
        for item in v:
            _set_value(av.array_value.values.add(), item)
    else:
        av.string_value = str(v)


@dataclass
class SpanSpec:
    trace_id: bytes
    span_id: bytes
    name: str
    kind: int = SERVER
    parent: bytes = b""
    start_ns: int = 0
    duration_ns: int = 1_000_000
    status: int = UNSET
    status_message: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    links: list[tuple[bytes, bytes]] = field(default_factory=list)


def export_request(
    service: str, spans: list[SpanSpec], resource: dict[str, Any] | None = None
) -> trace_service_pb2.ExportTraceServiceRequest:
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in {"service.name": service, **(resource or {})}.items():
        kv = rs.resource.attributes.add()
        kv.key = k
        _set_value(kv.value, v)
    ss = rs.scope_spans.add()
    ss.scope.name = "standin-tests"
    now = time.time_ns()
    for sp in spans:
        s = ss.spans.add()
        s.trace_id = sp.trace_id
        s.span_id = sp.span_id
        if sp.parent:
            s.parent_span_id = sp.parent
        s.name = sp.name
        s.kind = sp.kind  # type: ignore[assignment]
        start = sp.start_ns or now - sp.duration_ns
        s.start_time_unix_nano = start
        s.end_time_unix_nano = start + sp.duration_ns
        if sp.status:
            s.status.code = sp.status  # type: ignore[assignment]
        if sp.status_message:
            s.status.message = sp.status_message
        for k, v in sp.attrs.items():
            kv = s.attributes.add()
            kv.key = k
            _set_value(kv.value, v)
        for ltid, lsid in sp.links:
            lk = s.links.add()
            lk.trace_id = ltid
            lk.span_id = lsid
    return req


def send_grpc(port: int, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(  # type: ignore[no-untyped-call]
            req, timeout=10, metadata=(("x-scope-orgid", "someone-else"),)
        )


def poll(fn: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Call ``fn`` until it returns a truthy value; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


# --- independent decoders ---------------------------------------------------------------------


def snappy_block_decode(data: bytes) -> bytes:
    """Snappy block format (the format Prometheus remote write uses), decoded by hand."""
    pos = 0
    length = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            n = tag >> 2
            if n >= 60:
                nbytes = n - 59
                n = int.from_bytes(data[pos : pos + nbytes], "little")
                pos += nbytes
            n += 1
            out += data[pos : pos + n]
            pos += n
            continue
        if kind == 1:
            n = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            n = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 2], "little")
            pos += 2
        else:
            n = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        for _ in range(n):
            out.append(out[-offset])
    assert len(out) == length, (len(out), length)
    return bytes(out)


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
        elif wt == 1:
            v = buf[pos : pos + 8]
            pos += 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            v = buf[pos : pos + n]
            pos += n
        elif wt == 5:
            v = buf[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"wire type {wt}")
        yield num, wt, v


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def _labels(buf: bytes) -> tuple[str, str]:
    name = value = ""
    for num, _, v in _fields(buf):
        if num == 1:
            name = v.decode()
        elif num == 2:
            value = v.decode()
    return name, value


@dataclass
class WrittenSeries:
    labels: dict[str, str]
    samples: list[tuple[float, int]]
    exemplars: list[tuple[dict[str, str], float, int]]


def decode_write_request(body: bytes) -> list[WrittenSeries]:
    """prometheus.WriteRequest{timeseries=1{labels=1, samples=2, exemplars=3}} by hand."""
    raw = snappy_block_decode(body)
    out = []
    for num, _, ts in _fields(raw):
        if num != 1:
            continue
        labels: dict[str, str] = {}
        samples: list[tuple[float, int]] = []
        exemplars: list[tuple[dict[str, str], float, int]] = []
        for fnum, _, v in _fields(ts):
            if fnum == 1:
                k, val = _labels(v)
                labels[k] = val
            elif fnum == 2:
                value, t = 0.0, 0
                for snum, _, sv in _fields(v):
                    if snum == 1:
                        value = struct.unpack("<d", sv)[0]
                    elif snum == 2:
                        t = sv
                samples.append((value, t))
            elif fnum == 3:
                ex_labels: dict[str, str] = {}
                value, t = 0.0, 0
                for enum_, _, ev in _fields(v):
                    if enum_ == 1:
                        k, val = _labels(ev)
                        ex_labels[k] = val
                    elif enum_ == 2:
                        value = struct.unpack("<d", ev)[0]
                    elif enum_ == 3:
                        t = ev
                exemplars.append((ex_labels, value, t))
        out.append(WrittenSeries(labels, samples, exemplars))
    return out


# --- a remote-write receiver ------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    series: list[WrittenSeries]


class RemoteWriteReceiver:
    """A tiny HTTP server that records decoded remote-write requests; ``status`` is settable."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.status = 204
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.status
                if status < 300:
                    receiver.requests.append(
                        Received(
                            {k.lower(): v for k, v in self.headers.items()},
                            decode_write_request(body),
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/api/v1/write"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def all_series(self) -> list[WrittenSeries]:
        return [s for r in self.requests for s in r.series]


def get_json(client: httpx.Client, path: str, **params: Any) -> Any:
    r = client.get(path, params=params)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def gzip_json(doc: Any) -> bytes:
    return gzip.compress(json.dumps(doc).encode())


@dataclass
class Running:
    """A started in-process stand-in (``tempo_standin.app.Standin``), its captured log and an
    HTTP client on its API."""

    app: Any
    http: httpx.Client
    lines: list[str] = field(default_factory=list)

    @property
    def grpc_port(self) -> int:
        return int(self.app.otlp_grpc_port)

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.app.otlp_http_port}/v1/traces"

    def log_matching(self, prefix: str) -> list[str]:
        return [line for line in list(self.lines) if line.startswith(prefix)]


# --- the stand-in as a process ----------------------------------------------------------------


@dataclass
class StandinProcess:
    """``python -m tempo_standin --config FILE`` on free ports (see :func:`start_process`)."""

    proc: Any
    http_port: int
    grpc_port: int
    otlp_http_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp_http_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_http_port}/v1/traces"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        import signal
        import subprocess

        if self.proc.poll() is not None:
            return int(self.proc.returncode)
        self.proc.send_signal(signal.SIGTERM)
        try:
            return int(self.proc.wait(timeout=20))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def start_process(tmp: Path, config_yaml: str) -> StandinProcess:
    """Start the stand-in with ``config_yaml`` plus free ports for the HTTP API and the OTLP
    receivers (``server`` and ``distributor`` are added; the text must not set them), and wait
    until its HTTP API accepts connections (not until it is ready)."""
    import os
    import subprocess
    import sys

    http, grpc_port, otlp_http = free_port(), free_port(), free_port()
    text = (
        f"server:\n  http_listen_port: {http}\n"
        "distributor:\n  receivers:\n    otlp:\n      protocols:\n"
        f"        grpc:\n          endpoint: 127.0.0.1:{grpc_port}\n"
        f"        http:\n          endpoint: 127.0.0.1:{otlp_http}\n" + config_yaml
    )
    config = tmp / "tempo.yaml"
    config.write_text(text)
    log = tmp / "standin.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tempo_standin", "--config", str(config)],
        env={**os.environ, "PYTHONPATH": str(STANDIN_PATH)},
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    running = StandinProcess(proc, http, grpc_port, otlp_http, log)

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the stand-in exited: {running.log_text()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", http)) == 0

    try:
        poll(listening, timeout=30, interval=0.02)
    except BaseException:
        running.stop()
        raise
    return running


def send_grpc_as(
    port: int, req: trace_service_pb2.ExportTraceServiceRequest, org_id: str | None
) -> None:
    """Export with ``x-scope-orgid: org_id`` (no header when None)."""
    metadata = (("x-scope-orgid", org_id),) if org_id is not None else ()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        trace_service_pb2_grpc.TraceServiceStub(ch).Export(  # type: ignore[no-untyped-call]
            req, timeout=10, metadata=metadata
        )
