"""OpenTelemetry Collector client: OTLP trace export (gRPC or HTTP/protobuf), health, self-metrics.

Client obligations from docs/reference/collector.md, by section:

* retry only the retryable codes, with exponential backoff (§3): gRPC CANCELLED,
  DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, and RESOURCE_EXHAUSTED
  **only** when the status carries ``google.rpc.RetryInfo`` (then wait its ``retry_delay``);
  HTTP 429, 502, 503, 504, honouring ``Retry-After``. Everything else fails at once;
* ``partial_success``: ``rejected_spans`` > 0 is a partial rejection, an ``error_message`` with
  0 rejected is a warning; the collector's own receiver never sets it, backends may (§1, §3);
* HTTP error bodies are a ``google.rpc.Status`` in the request's encoding (§2): its message is
  the cause shown. Status and RetryInfo are decoded by hand (four fields), so no
  googleapis-common-protos dependency;
* cap the response size (4 MiB, §3);
* an OK only means "enqueued" (§4): :meth:`CollectorClient.counters` reads the collector's own
  metrics, whose counter names may or may not end in ``_total`` (§6).

Waits go through the injected :class:`~tracecheck.polling.Clock`; grpc and protobuf are imported
inside the methods that need them, so importing this module stays cheap.

Why one module (about 680 lines): the collector is one system spoken to three ways (OTLP/gRPC,
OTLP/HTTP, its health and metrics endpoints) whose retry rules must be the same for both export
protocols, and the small google.rpc.Status decoder belongs next to the code that reads it.
"""

from __future__ import annotations

import email.utils
import gzip
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import httpx

from tracecheck.backends._http import (
    COLLECTOR_MAX_BYTES,
    Endpoint,
    HTTPBackend,
    Reply,
    check_url,
    is_transient,
)
from tracecheck.backends.exposition import Exposition, LabelFilter
from tracecheck.config import CollectorSettings
from tracecheck.errors import (
    AuthError,
    BackendError,
    ConfigError,
    HTTPStatusError,
    NotReady,
    ProtocolError,
    Unreachable,
    excerpt,
    one_line,
    redact_url,
)
from tracecheck.polling import Clock, SystemClock

if TYPE_CHECKING:  # pragma: no cover
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

__all__ = ["CollectorClient", "ExportResult", "PipelineCounters", "decode_rpc_status"]

SYSTEM = "collector"

# Backoff between export attempts: quick first, doubling, capped. Deterministic (no jitter) so
# tests with a FakeClock can assert the waits; a single smoke client needs no herd protection.
BACKOFF_INITIAL = 0.2
BACKOFF_MAX = 5.0
# A server asking for a longer pause than this (Retry-After, RetryInfo) is not waited for.
MAX_SERVER_WAIT = 30.0

# opentelemetry-proto specification, "Failures" (docs/reference/collector.md §3).
_RETRYABLE_GRPC = frozenset(
    {"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"}
)
_RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
_RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"


@dataclass(frozen=True, slots=True)
class ExportResult:
    """One successful export. ``error_message`` with ``rejected_spans == 0`` is a warning."""

    protocol: str  # "grpc" | "http"
    address: str  # gRPC target or redacted OTLP/HTTP URL
    spans: int  # spans in the request
    rejected_spans: int
    error_message: str
    attempts: int
    elapsed: float  # seconds, first attempt to answer, retries included

    @property
    def accepted_spans(self) -> int:
        return self.spans - self.rejected_spans


@dataclass(frozen=True, slots=True)
class PipelineCounters:
    """The collector's span counters, summed over receivers/exporters
    (docs/reference/collector.md §6)."""

    accepted: float  # otelcol_receiver_accepted_spans: pushed into the pipeline
    refused: float  # otelcol_receiver_refused_spans
    sent: float  # otelcol_exporter_sent_spans: handed to the next hop
    send_failed: float  # otelcol_exporter_send_failed_spans
    enqueue_failed: float  # otelcol_exporter_enqueue_failed_spans: queue full, dropped


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BackendError
    retryable: bool
    wait: float | None = None  # the server's requested pause, seconds


class CollectorClient:
    """Sends OTLP traces to a collector and reads its health and metrics.

    ``channel`` (a ``grpc.Channel``) and ``http_transport`` replace the network in tests;
    ``clock`` paces retries. A context manager; :meth:`close` closes what it opened.
    """

    system = SYSTEM

    def __init__(
        self,
        settings: CollectorSettings,
        *,
        http_transport: httpx.BaseTransport | None = None,
        channel: grpc.Channel | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.target, self._tls = grpc_target(settings)
        self.http_address = check_url(SYSTEM, settings.http_url).rstrip("/") + "/v1/traces"
        self.address = self.target if settings.protocol == "grpc" else self.http_address
        self._metadata = _grpc_metadata(settings, self.target)
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
            ),
            transport=http_transport,
        )
        self._channel = channel
        self._own_channel = channel is None
        self._stub: Any = None
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()
        with self._lock:
            if self._own_channel and self._channel is not None:
                self._channel.close()
                self._channel = None
                self._stub = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- export -----------------------------------------------------------------------------

    def export(
        self,
        request: ExportTraceServiceRequest,
        *,
        protocol: str | None = None,
        timeout: float | None = None,
    ) -> ExportResult:
        """Export ``request``, retrying retryable failures; return what the server said.

        ``timeout`` bounds the whole call, retries and waits included (each attempt also obeys
        ``settings.timeout``); without it, ``settings.retries`` retries of ``settings.timeout``
        each. Raises AuthError, Unreachable, HTTPStatusError or ProtocolError.
        """
        proto = protocol or self.settings.protocol
        if proto not in ("grpc", "http"):
            raise ConfigError(SYSTEM, "", f"protocol must be grpc or http, not {proto!r}")
        clock = self.clock
        started = clock.monotonic()
        deadline = None if timeout is None else started + timeout
        spans = _count_spans(request)
        delay = BACKOFF_INITIAL
        attempts = 0
        while True:
            attempts += 1
            per_try = self.settings.timeout
            if deadline is not None:
                per_try = min(per_try, deadline - clock.monotonic())
            if proto == "grpc":
                outcome = self._export_grpc(request, per_try)
            else:
                outcome = self._export_http(request, per_try)
            if not isinstance(outcome, _Failure):
                rejected, message = outcome
                return ExportResult(
                    proto,
                    self.target if proto == "grpc" else self.http_address,
                    spans,
                    rejected,
                    message,
                    attempts,
                    clock.monotonic() - started,
                )
            if not outcome.retryable or attempts > self.settings.retries:
                raise outcome.error
            wait = delay if outcome.wait is None else outcome.wait
            delay = min(delay * 2, BACKOFF_MAX)
            if wait > MAX_SERVER_WAIT:
                raise _with_cause(outcome.error, f"server asks to retry after {wait:g} s")
            if deadline is not None and clock.monotonic() + wait >= deadline:
                raise outcome.error
            clock.sleep(wait)

    # -- gRPC -------------------------------------------------------------------------------

    def _grpc_stub(self) -> Any:
        import grpc
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
            TraceServiceStub,
        )

        with self._lock:
            if self._stub is None:
                if self._channel is None:
                    self._channel = self._open_channel(grpc)
                stub_class: Any = TraceServiceStub  # generated code, untyped
                self._stub = stub_class(self._channel)
            return self._stub

    def _open_channel(self, grpc: Any) -> Any:
        options = [
            # tracecheck retries itself, per the OTLP rules; grpc's own retry would hide codes.
            ("grpc.enable_retries", 0),
            # A refused connection puts the channel in backoff (1 s by default, during which
            # calls fail at once); keep it short so a retry sees a collector that came back.
            # (Not grpc.min_reconnect_backoff_ms: it also caps the connect timeout, so a value
            # this low fails every handshake slower than 100 ms.)
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.max_receive_message_length", COLLECTOR_MAX_BYTES),
        ]
        if not self._tls:
            return grpc.insecure_channel(self.target, options=options)
        s = self.settings
        try:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(s.ca_file, "CA file") if s.ca_file else None,
                private_key=_read(s.key_file, "client key") if s.key_file else None,
                certificate_chain=_read(s.cert_file, "client certificate") if s.cert_file else None,
            )
        except ValueError as exc:  # grpc rejects a key without a certificate
            raise ConfigError(SYSTEM, self.target, f"TLS credentials: {exc}") from None
        return grpc.secure_channel(self.target, creds, options=options)

    def _export_grpc(self, request: Any, timeout: float) -> tuple[int, str] | _Failure:
        import grpc

        if timeout <= 0:
            error = Unreachable(SYSTEM, self.target, "deadline passed before the request was sent")
            return _Failure(error, retryable=False)
        compression = (
            grpc.Compression.Gzip
            if self.settings.compression == "gzip"
            else grpc.Compression.NoCompression
        )
        stub = self._grpc_stub()
        try:
            response = stub.Export(
                request, timeout=timeout, metadata=self._metadata, compression=compression
            )
        except grpc.RpcError as exc:
            return self._grpc_failure(exc, timeout)
        if response.HasField("partial_success"):
            ps = response.partial_success
            return int(ps.rejected_spans), one_line(str(ps.error_message))
        return 0, ""

    def _grpc_failure(self, exc: Any, timeout: float) -> _Failure:
        code = exc.code()
        name = getattr(code, "name", str(code))
        details = self._scrub(str(exc.details() or ""))
        if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return _Failure(AuthError(SYSTEM, self.target, f"gRPC {name}: {details}"), False)
        if name == "DEADLINE_EXCEEDED":
            late = Unreachable(SYSTEM, self.target, f"no answer within {timeout:.1f} s")
            return _Failure(late, True)
        if name == "UNAVAILABLE":
            found = _grpc_connect_cause(details, self.target, self._tls, timeout)
            if found is not None:
                # Refused or timed out (collector down or restarting) is worth a retry; TLS or
                # DNS problems are not.
                cause, transient = found
                return _Failure(Unreachable(SYSTEM, self.target, cause), transient)
        error = HTTPStatusError(
            SYSTEM, self.target, f"gRPC {name}: {details or '(no details)'}", name
        )
        if name in _RETRYABLE_GRPC:
            return _Failure(error, True)
        if name == "RESOURCE_EXHAUSTED":
            # Retryable only with RetryInfo (§3): a plain one is e.g. "message larger than max".
            delay = _retry_delay_from_trailers(exc)
            if delay is not None:
                return _Failure(error, True, delay)
        return _Failure(error, False)

    # -- HTTP -------------------------------------------------------------------------------

    def _export_http(self, request: Any, timeout: float) -> tuple[int, str] | _Failure:
        body = request.SerializeToString()
        headers = {"Content-Type": "application/x-protobuf"}
        if self.settings.compression == "gzip":
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        try:
            reply = self._http.request(
                "POST", "/v1/traces", content=body, headers=headers, timeout=timeout,
                expect=range(100, 600),
            )  # fmt: skip
        except BackendError as exc:
            return _Failure(exc, is_transient(exc))
        if 200 <= reply.status < 300:
            return self._http_success(reply)
        # status_error makes 401/403 an AuthError; neither is retryable.
        error = self._http.status_error(reply, self._http_error_message(reply))
        if reply.status in _RETRYABLE_HTTP:
            return _Failure(error, True, _retry_after(reply.headers.get("Retry-After"), self.clock))
        return _Failure(error, False)

    def _http_success(self, reply: Reply) -> tuple[int, str]:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        if not reply.body:
            return 0, ""
        if "json" in reply.headers.get("content-type", ""):
            data = self._http.decode_json(reply)
            ps = data.get("partialSuccess") if isinstance(data, dict) else None
            if not isinstance(ps, dict):
                return 0, ""
            rejected = ps.get("rejectedSpans") or 0
            if isinstance(rejected, str) and rejected.isdigit():
                rejected = int(rejected)  # OTLP/JSON writes int64 as a decimal string (§2)
            if isinstance(rejected, bool) or not isinstance(rejected, int):
                raise self._http.protocol_error(
                    reply.address, f"partialSuccess.rejectedSpans is not a count: {rejected!r}"
                )
            return rejected, one_line(str(ps.get("errorMessage", "")))
        response = ExportTraceServiceResponse()
        try:
            response.ParseFromString(reply.body)
        except DecodeError as exc:
            raise ProtocolError(
                SYSTEM, reply.address, f"undecodable ExportTraceServiceResponse: {exc}"
            ) from None
        if response.HasField("partial_success"):
            ps = response.partial_success
            return int(ps.rejected_spans), one_line(str(ps.error_message))
        return 0, ""

    def _http_error_message(self, reply: Reply) -> str:
        """The cause from an OTLP/HTTP error body: a google.rpc.Status (§2), else an excerpt."""
        ctype = reply.headers.get("content-type", "")
        if "protobuf" in ctype and reply.body:
            try:
                _, message, _ = decode_rpc_status(reply.body)
            except ValueError:
                return self._http.excerpt(reply.body)
            return message or "(no message)"
        if "json" in ctype:
            try:
                data = self._http.decode_json(reply)
            except BackendError:
                return self._http.excerpt(reply.body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        return self._http.excerpt(reply.body)

    # -- health and metrics ---------------------------------------------------------------

    def health(self, *, timeout: float | None = None) -> None:
        """Return if the collector is up; else raise (NotReady, Unreachable, AuthError...).

        With ``health_url`` (the health_check extension, 13133): 200 is healthy, 503 NotReady.
        Without it: one OTLP/gRPC Export with no spans, which the receiver answers at once
        without touching the pipeline (docs/reference/collector.md §1), so connection, TLS and
        credentials are all checked, and a failure says which.
        """
        limit = self.settings.timeout if timeout is None else timeout
        if self.settings.health_url:
            url = self.settings.health_url
            check_url(SYSTEM, url)
            reply = self._http.request("GET", url, timeout=limit, expect=(200, 503))
            if reply.status == 503:
                raise NotReady(SYSTEM, reply.address, f"HTTP 503: {self._http.excerpt(reply.body)}")
            return
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        outcome = self._export_grpc(ExportTraceServiceRequest(), limit)
        if isinstance(outcome, _Failure):
            raise outcome.error

    def self_metrics(self, *, timeout: float | None = None) -> Exposition:
        """The collector's own metrics (``metrics_url``, ``:8888/metrics`` by default)."""
        url = self.settings.metrics_url
        if not url:
            raise ConfigError(SYSTEM, "", "collector.metrics_url is not set")
        check_url(SYSTEM, url)
        return self._http.get_exposition(url, timeout=timeout)

    def counters(
        self,
        *,
        receiver: str | None = None,
        exporter: str | None = None,
        timeout: float | None = None,
    ) -> PipelineCounters:
        """Span counters from :meth:`self_metrics`, names matched with or without ``_total``.

        ``receiver``/``exporter`` restrict the sums to one component (label values such as
        ``otlp`` or ``otlp/tempo``); absent counters count as 0 (never incremented yet).
        """
        exp = self.self_metrics(timeout=timeout)
        rec: LabelFilter = {"receiver": receiver} if receiver else {}
        ex: LabelFilter = {"exporter": exporter} if exporter else {}
        return PipelineCounters(
            accepted=exp.sum("otelcol_receiver_accepted_spans", rec),
            refused=exp.sum("otelcol_receiver_refused_spans", rec),
            sent=exp.sum("otelcol_exporter_sent_spans", ex),
            send_failed=exp.sum("otelcol_exporter_send_failed_spans", ex),
            enqueue_failed=exp.sum("otelcol_exporter_enqueue_failed_spans", ex),
        )

    def _scrub(self, text: str) -> str:
        return self._http.scrub(text)


# -- helpers ----------------------------------------------------------------------------------


def grpc_target(settings: CollectorSettings) -> tuple[str, bool]:
    """(gRPC target, use TLS) from ``endpoint``; ConfigError when it is not a usable target.

    ``host:port`` uses ``insecure`` to choose TLS; ``http://host:port`` and ``https://host:port``
    (the OTEL_EXPORTER_OTLP_ENDPOINT spelling) choose by scheme; ``dns:``, ``unix:``, ``ipv4:``
    and ``ipv6:`` targets are passed to grpc unchanged.
    """
    endpoint = settings.endpoint.strip()
    tls = not settings.insecure
    shown = redact_url(endpoint)
    if endpoint.startswith(("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:")):
        return endpoint, tls
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or parts.path not in ("", "/"):
            raise ConfigError(SYSTEM, shown, "malformed gRPC endpoint: expected host:port")
        tls = parts.scheme == "https"
        endpoint = parts.netloc.rsplit("@", 1)[-1]
    try:
        parts = urlsplit("//" + endpoint)
        port = parts.port
    except ValueError:
        raise ConfigError(SYSTEM, shown, "malformed gRPC endpoint: expected host:port") from None
    if not parts.hostname or port is None or parts.path or parts.query or " " in endpoint:
        raise ConfigError(SYSTEM, shown, "malformed gRPC endpoint: expected host:port")
    return endpoint, tls


def _grpc_metadata(settings: CollectorSettings, target: str) -> tuple[tuple[str, str], ...]:
    """Headers as gRPC metadata: lower-case keys (grpc rejects others); tenant -> x-scope-orgid."""
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


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(SYSTEM, path, f"cannot read {what}: {exc.strerror or exc}") from None


def _count_spans(request: Any) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def _with_cause(error: BackendError, extra: str) -> BackendError:
    """The same kind of error with ``extra`` appended to its cause."""
    if isinstance(error, HTTPStatusError):
        return HTTPStatusError(
            error.system, error.address, f"{error.cause} ({extra})", error.status
        )
    return type(error)(error.system, error.address, f"{error.cause} ({extra})")


_GRPC_REFUSED = re.compile(r"connection refused", re.I)
_GRPC_DNS = re.compile(
    r"errors resolving|DNS resolution failed|hostname lookup|name not found", re.I
)
_GRPC_TLS = re.compile(r"(tls|ssl) handshake failed|SSL_ERROR|handshake fail", re.I)
_GRPC_TIMEOUT = re.compile(r"timed out|Timeout occurred|deadline exceeded", re.I)
_GRPC_NOT_H2 = re.compile(r"Failed parsing HTTP/2|Expected SETTINGS frame", re.I)


def _grpc_connect_cause(
    details: str, target: str, tls: bool, timeout: float
) -> tuple[str, bool] | None:
    """(cause, transient) for a gRPC UNAVAILABLE that means "could not connect", else None.

    grpc reports connection failures as UNAVAILABLE with a free-text detail (grpc core's
    wording, e.g. "failed to connect to all addresses; last error: ... Connection refused").
    """
    if _GRPC_REFUSED.search(details):
        return "connection refused", True
    if _GRPC_TIMEOUT.search(details):
        # TCP connected but no HTTP/2 handshake in time: a stalled or overloaded server.
        return f"no answer within {timeout:.1f} s", True
    if _GRPC_DNS.search(details):
        host = target.rsplit(":", 1)[0] if ":" in target else target
        return f"cannot resolve host {host!r}", False
    if _GRPC_TLS.search(details):
        if "WRONG_VERSION_NUMBER" in details or "HTTP_REQUEST" in details:
            return "TLS handshake failed (is this a plaintext port? set insecure=true)", False
        if "CERTIFICATE_VERIFY_FAILED" in details.upper():
            return "TLS certificate verification failed", False
        return "TLS handshake failed", False
    if _GRPC_NOT_H2.search(details):
        hint = "does it expect TLS? set insecure=false" if not tls else "is this an HTTP/1 port?"
        return f"the server does not speak gRPC ({hint})", False
    if "failed to connect to all addresses" in details:
        return f"cannot connect: {excerpt(details, 160)}", True
    return None


def _retry_after(value: str | None, clock: Clock) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - clock.time())


def _retry_delay_from_trailers(exc: Any) -> float | None:
    """``retry_delay`` of a google.rpc.RetryInfo in the ``grpc-status-details-bin`` trailer."""
    try:
        trailers = exc.trailing_metadata() or ()
    except Exception:  # a call object without trailers: no RetryInfo
        return None
    for key, value in trailers:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                _, _, details = decode_rpc_status(value)
            except ValueError:
                return None
            for type_url, payload in details:
                if type_url == _RETRY_INFO_TYPE:
                    try:
                        return _decode_retry_info(payload)
                    except ValueError:
                        return None
    return None


# -- google.rpc.Status / RetryInfo, hand-decoded ------------------------------------------------
# Status  { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; }
# Any     { string type_url = 1; bytes value = 2; }
# RetryInfo { google.protobuf.Duration retry_delay = 1; }
# Duration  { int64 seconds = 1; int32 nanos = 2; }


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message; varints as int, bytes as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            yield number, data[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(data):
                raise ValueError("truncated field")
        else:
            raise ValueError(f"unsupported wire type {wire}")


def decode_rpc_status(data: bytes) -> tuple[int, str, tuple[tuple[str, bytes], ...]]:
    """(code, message, ((type_url, value), ...)) of a serialized ``google.rpc.Status``.

    Raises ValueError on malformed input.
    """
    code, message, details = 0, "", []
    for number, value in _fields(data):
        if number == 1 and isinstance(value, int):
            code = value if value < 2**31 else value - 2**64  # int32, sign-extended
        elif number == 2 and isinstance(value, bytes):
            message = value.decode("utf-8", errors="replace")
        elif number == 3 and isinstance(value, bytes):
            type_url, payload = "", b""
            for n, v in _fields(value):
                if n == 1 and isinstance(v, bytes):
                    type_url = v.decode("utf-8", errors="replace")
                elif n == 2 and isinstance(v, bytes):
                    payload = v
            details.append((type_url, payload))
    return code, message, tuple(details)


def _decode_retry_info(data: bytes) -> float | None:
    for number, value in _fields(data):
        if number == 1 and isinstance(value, bytes):
            seconds = nanos = 0
            for n, v in _fields(value):
                if n == 1 and isinstance(v, int):
                    seconds = v if v < 2**63 else v - 2**64
                elif n == 2 and isinstance(v, int):
                    nanos = v if v < 2**31 else v - 2**64
            delay = seconds + nanos / 1e9
            return delay if math.isfinite(delay) and delay >= 0 else 0.0
    return None
