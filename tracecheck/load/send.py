"""Sending pre-encoded OTLP requests: gRPC with raw-bytes (de)serializers, HTTP with a protobuf
body. One :class:`Outcome` per attempt, never an exception for an answer the collector gave.

Classification (opentelemetry-proto specification, "Failures"; the collector maps pipeline
errors to these codes, its memory_limiter's "data refused" to UNAVAILABLE / HTTP 503):

* **refused**, counted per code: gRPC ``RESOURCE_EXHAUSTED`` and ``UNAVAILABLE`` answered by the
  server, HTTP ``429`` and ``503``. The server had the request and said no.
* **error**, counted per cause: no answer (connection refused or lost, timeout), or any other
  status (INVALID_ARGUMENT, HTTP 400, 413, 500...). A gRPC UNAVAILABLE whose detail is grpc's
  own connection failure ("failed to connect to all addresses", "Socket closed") is an error:
  no server refused anything.

Retryable (for a :class:`~tracecheck.load.spec.RetryPolicy` that allows retries): UNAVAILABLE,
DEADLINE_EXCEEDED, CANCELLED, ABORTED, OUT_OF_RANGE, DATA_LOSS; RESOURCE_EXHAUSTED only with a
``google.rpc.RetryInfo`` in the status details; HTTP 429, 502, 503, 504 (honouring
``Retry-After``); a refused or lost connection.

grpc is imported when a :class:`GrpcSender` is made, so importing this module stays cheap.
"""

from __future__ import annotations

import email.utils
import gzip
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from tracecheck.load._deps import (
    COLLECTOR_MAX_BYTES,
    BackendError,
    CollectorSettings,
    ConfigError,
    Endpoint,
    HTTPBackend,
    HTTPStatusError,
    Unreachable,
    decode_rpc_status,
    grpc_target,
    is_transient,
    one_line,
)

__all__ = ["EXPORT_METHOD", "GrpcSender", "HttpSender", "Outcome", "Sender", "open_sender"]

SYSTEM = "collector"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

_REFUSED_GRPC = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE"})
_RETRYABLE_GRPC = frozenset(
    {"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"}
)
_REFUSED_HTTP = frozenset({429, 503})
_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
# grpc core's wording when there was no server answer at all (connection-level UNAVAILABLE).
_GRPC_NO_SERVER = re.compile(
    r"failed to connect to all addresses|Connection refused|Socket closed|Connection reset|"
    r"connection (aborted|closed)|Broken pipe|GOAWAY|keepalive|DNS resolution failed|"
    r"handshake",
    re.I,
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt. ``kind``: ok, refused (``code`` is the refusal code) or error (``code`` is a
    short cause). ``rejected``: spans a partial_success rejected in an OK answer."""

    kind: str
    code: str = ""
    rejected: int = 0
    retryable: bool = False
    wait: float | None = None  # the pause the server asked for (RetryInfo, Retry-After)
    message: str = ""  # the server's words, for the report (one line)


OK = Outcome("ok")


class Sender(Protocol):
    protocol: str
    address: str

    def preflight(self, timeout: float) -> None:
        """Raise a BackendError (one line) if the collector cannot take an export."""

    def send(self, body: bytes, timeout: float) -> Outcome: ...

    def close(self) -> None: ...


def _preflight_error(address: str, outcome: Outcome) -> None:
    """Raise for an empty export that did not get an OK: the load cannot start."""
    if outcome.kind == "ok":
        return
    if outcome.code.startswith(("HTTP ", "gRPC ")) or outcome.kind == "refused":
        cause = f"{outcome.code}: {outcome.message}" if outcome.message else outcome.code
        raise HTTPStatusError(SYSTEM, address, cause, outcome.code)
    raise Unreachable(SYSTEM, address, outcome.code)


def open_sender(settings: CollectorSettings, protocol: str, compression: str) -> Sender:
    if protocol == "grpc":
        return GrpcSender(settings, compression=compression)
    return HttpSender(settings, compression=compression)


# -- gRPC ----------------------------------------------------------------------------------------


class GrpcSender:
    """OTLP/gRPC Export with the request already serialized: the channel's unary callable has
    no serializers, so it takes and returns ``bytes`` and no message object is ever made."""

    protocol = "grpc"

    def __init__(self, settings: CollectorSettings, *, compression: str = "none") -> None:
        import grpc

        self._grpc = grpc
        self.address, tls = grpc_target(settings)
        self._metadata = grpc_metadata(settings, self.address)
        options = [
            ("grpc.enable_retries", 0),  # retries are the RetryPolicy's, counted
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.max_receive_message_length", COLLECTOR_MAX_BYTES),
        ]
        if tls:
            creds = _grpc_credentials(grpc, settings, self.address)
            self._channel = grpc.secure_channel(self.address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(self.address, options=options)
        self._export = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )
        self._compression = (
            grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        )

    def preflight(self, timeout: float) -> None:
        # An empty request: the receiver answers at once without touching the pipeline.
        _preflight_error(self.address, self.send(b"", timeout))

    def send(self, body: bytes, timeout: float) -> Outcome:
        grpc = self._grpc
        try:
            answer = self._export(
                body, timeout=timeout, metadata=self._metadata, compression=self._compression
            )
        except grpc.RpcError as exc:
            return self._failure(exc, timeout)
        return _partial_success(answer) if answer else OK

    def _failure(self, exc: Any, timeout: float) -> Outcome:
        code = exc.code()
        name = getattr(code, "name", str(code))
        details = one_line(str(exc.details() or ""), 160)
        if name == "UNAVAILABLE" and _GRPC_NO_SERVER.search(details):
            cause = "connection refused" if "refused" in details.lower() else "no connection"
            return Outcome("error", cause, retryable=True, message=f"gRPC UNAVAILABLE: {details}")
        if name == "DEADLINE_EXCEEDED":
            return Outcome(
                "error", f"no answer within {timeout:g} s", retryable=True, message=details
            )
        wait = _retry_info(exc)
        retryable = name in _RETRYABLE_GRPC or (name == "RESOURCE_EXHAUSTED" and wait is not None)
        kind = "refused" if name in _REFUSED_GRPC else "error"
        label = name if kind == "refused" else f"gRPC {name}"
        return Outcome(kind, label, retryable=retryable, wait=wait, message=details)

    def close(self) -> None:
        self._channel.close()


def grpc_metadata(settings: CollectorSettings, target: str) -> tuple[tuple[str, str], ...]:
    """Headers as gRPC metadata: lower-case keys; the tenant as ``x-scope-orgid``."""
    out: dict[str, str] = {}
    for name, value in settings.headers:
        key = name.strip().lower()
        if not re.fullmatch(r"[0-9a-z_.\-]+", key) or key.endswith("-bin"):
            raise ConfigError(SYSTEM, target, f"invalid gRPC metadata key {name!r}")
        if not value.isascii() or any(c in value for c in "\r\n\0"):
            raise ConfigError(SYSTEM, target, f"header {name}: value has invalid characters")
        out[key] = value
    if settings.tenant:
        out["x-scope-orgid"] = settings.tenant
    return tuple(out.items())


def _grpc_credentials(grpc: Any, s: CollectorSettings, target: str) -> Any:
    def read(path: str, what: str) -> bytes | None:
        if not path:
            return None
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise ConfigError(SYSTEM, path, f"cannot read {what}: {exc.strerror or exc}") from None

    try:
        return grpc.ssl_channel_credentials(
            root_certificates=read(s.ca_file, "CA file"),
            private_key=read(s.key_file, "client key"),
            certificate_chain=read(s.cert_file, "client certificate"),
        )
    except ValueError as exc:
        raise ConfigError(SYSTEM, target, f"TLS credentials: {exc}") from None


def _retry_info(exc: Any) -> float | None:
    """``retry_delay`` of a google.rpc.RetryInfo in the ``grpc-status-details-bin`` trailer."""
    try:
        trailers = exc.trailing_metadata() or ()
    except Exception:  # an error object without trailers
        return None
    for key, value in trailers:
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            _, _, details = decode_rpc_status(value)
        except ValueError:
            return None
        for type_url, payload in details:
            if type_url == _RETRY_INFO:
                return _duration(payload)
    return None


# -- HTTP ----------------------------------------------------------------------------------------


class HttpSender:
    """OTLP/HTTP ``POST <http_url>/v1/traces`` with ``Content-Type: application/x-protobuf``."""

    protocol = "http"

    def __init__(self, settings: CollectorSettings, *, compression: str = "none") -> None:
        self._http = HTTPBackend(
            Endpoint(
                system=SYSTEM,
                url=settings.http_url,
                headers=tuple(settings.headers),
                tenant=settings.tenant,
                ca_file=settings.ca_file,
                cert_file=settings.cert_file,
                key_file=settings.key_file,
                timeout=settings.timeout,
                max_response_bytes=COLLECTOR_MAX_BYTES,
            )
        )
        self.address = self._http.address.rstrip("/") + "/v1/traces"
        self._gzip = compression == "gzip"
        self._headers = {"Content-Type": "application/x-protobuf"}
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"

    def preflight(self, timeout: float) -> None:
        _preflight_error(self.address, self.send(b"", timeout))

    def send(self, body: bytes, timeout: float) -> Outcome:
        if self._gzip:
            body = gzip.compress(body, compresslevel=1)
        try:
            reply = self._http.request(
                "POST", "/v1/traces", content=body, headers=self._headers, timeout=timeout,
                expect=range(100, 600),
            )  # fmt: skip
        except BackendError as exc:
            cause = exc.cause if len(exc.cause) <= 60 else type(exc).__name__
            return Outcome("error", cause, retryable=is_transient(exc), message=str(exc))
        status = reply.status
        if 200 <= status < 300:
            ctype = reply.headers.get("content-type", "")
            if reply.body and "protobuf" in ctype:
                return _partial_success(reply.body)
            return OK
        message = _status_message(reply.body, reply.headers.get("content-type", ""))
        wait = _retry_after(reply.headers.get("retry-after"))
        retryable = status in _RETRYABLE_HTTP
        kind = "refused" if status in _REFUSED_HTTP else "error"
        return Outcome(kind, f"HTTP {status}", retryable=retryable, wait=wait, message=message)

    def close(self) -> None:
        self._http.close()


def _status_message(body: bytes, ctype: str) -> str:
    if "protobuf" in ctype and body:
        try:
            return one_line(decode_rpc_status(body)[1], 160)
        except ValueError:
            pass
    return one_line(body.decode("utf-8", errors="replace"), 160)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# -- hand-decoded protobuf answers -----------------------------------------------------------------
# ExportTraceServiceResponse { ExportTracePartialSuccess partial_success = 1; }
# ExportTracePartialSuccess  { int64 rejected_spans = 1; string error_message = 2; }
# RetryInfo { google.protobuf.Duration retry_delay = 1; }
# Duration  { int64 seconds = 1; int32 nanos = 2; }


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            out.append((number, data[pos : pos + size]))
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
    return out


def _partial_success(answer: bytes) -> Outcome:
    try:
        for number, value in _fields(answer):
            if number == 1 and isinstance(value, bytes):
                rejected, message = 0, ""
                for n, v in _fields(value):
                    if n == 1 and isinstance(v, int):
                        rejected = v if v < 2**63 else v - 2**64
                    elif n == 2 and isinstance(v, bytes):
                        message = one_line(v.decode("utf-8", errors="replace"), 160)
                return Outcome("ok", rejected=max(0, rejected), message=message)
    except ValueError:
        return Outcome("error", "undecodable ExportTraceServiceResponse")
    return OK


def _duration(payload: bytes) -> float | None:
    try:
        for number, value in _fields(payload):
            if number == 1 and isinstance(value, bytes):
                seconds = nanos = 0
                for n, v in _fields(value):
                    if n == 1 and isinstance(v, int):
                        seconds = v
                    elif n == 2 and isinstance(v, int):
                        nanos = v
                return max(0.0, seconds + nanos / 1e9)
    except ValueError:
        return None
    return None
