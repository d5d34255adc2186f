"""The HTTP base every backend client sends through (Tempo, Prometheus, the collector's
OTLP/HTTP, health and metrics endpoints, kube-apiserver): one ``httpx.Client`` per endpoint, a
size cap and a whole-answer deadline on every read, and the ONE place where foreign errors
become tracecheck errors.

Translation (every message is ``<system> at <redacted URL>: <cause>``, one line):

=====================================  ==============================================
httpx / ssl / socket                   tracecheck
=====================================  ==============================================
connection refused                     Unreachable("connection refused")
name resolution failed                 Unreachable("cannot resolve host 'x'")
TLS handshake against plaintext        Unreachable("TLS handshake failed (is this a plaintext
                                       HTTP port?)")
certificate verification failed        Unreachable("TLS certificate verification failed: ...")
timeout (connect, read, write, pool)   Unreachable("no answer within 5.0 s")
connection closed mid-answer           ProtocolError("connection closed ...")
HTTP 401 / 403                         AuthError("HTTP 401: <body excerpt> (credentials missing
                                       or refused; <what was sent, by setting name>)")
any other unexpected status            HTTPStatusError("HTTP 500: <body excerpt>", status=500);
                                       429/503 keep their Retry-After (:func:`retry_after`)
body over the size cap                 ProtocolError("response larger than 64 MiB")
undecodable JSON                       ProtocolError("invalid JSON (...): <body excerpt>")
malformed base URL, bad header, TLS    ConfigError (before any request is sent)
files that cannot be loaded
=====================================  ==============================================

Credentials never reach a message: addresses go through :func:`~tracecheck.errors.redact_url`
(no userinfo, no query string), headers are never printed, and every cause is scrubbed of the
configured header values (and of a URL password, with the Basic credential built from it) in
case a server echoes them back in an error body.

What differs between clients is data on the :class:`Endpoint`, not code: the apiserver client
gives the TLS context, proxy and SNI name kr8s resolved, a ``label`` (``https://host:6443
(context viewer)``) that messages show instead of each request's URL, and its own wording for
a plaintext peer.

Why one module (about 720 lines): every HTTP answer a backend gives passes through here, and
what it becomes (an error, its wording, the credentials it names, a retry after a 429/503 and
its Retry-After in :func:`with_retries`) must be decided in one place, or the clients drift
apart in how they report the same failure.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar
from urllib.parse import unquote, urlsplit

import httpx

from tracecheck.errors import (
    AuthError,
    BackendError,
    ConfigError,
    HTTPStatusError,
    ProtocolError,
    Unreachable,
    excerpt,
    redact_url,
)

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends.exposition import Exposition
    from tracecheck.polling import Clock

T = TypeVar("T")

__all__ = [
    "ANY_STATUS",
    "COLLECTOR_MAX_BYTES",
    "DEFAULT_MAX_BYTES",
    "PLAINTEXT_CAUSE",
    "RETRY_STATUSES",
    "BuildInfo",
    "Endpoint",
    "EndpointSettings",
    "HTTPBackend",
    "Reply",
    "buildinfo_from",
    "check_url",
    "connect_cause",
    "is_transient",
    "mark_transient",
    "retry_after",
    "with_retries",
]

# Query answers can be big (a wide range query, a long trace); anything past this is a runaway.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# OTLP clients must cap the response they accept; 4 MiB is the recommendation
# (docs/reference/collector.md §3).
COLLECTOR_MAX_BYTES = 4 * 1024 * 1024

_OK = range(200, 300)
#: ``expect`` for a caller that handles every status itself (the apiserver's per-request data).
ANY_STATUS = range(100, 600)


class EndpointSettings(Protocol):
    """What :meth:`Endpoint.from_settings` reads (TempoSettings and PrometheusSettings have it)."""

    @property
    def url(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def ca_file(self) -> str: ...
    @property
    def cert_file(self) -> str: ...
    @property
    def key_file(self) -> str: ...
    @property
    def insecure_skip_verify(self) -> bool: ...
    @property
    def timeout(self) -> float: ...


#: What a TLS handshake against a plaintext port says, unless the endpoint words it itself.
PLAINTEXT_CAUSE = "TLS handshake failed (is this a plaintext HTTP port?)"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How to reach one HTTP backend. ``tenant`` becomes ``X-Scope-OrgID``.

    TLS comes from ``ca_file``/``cert_file``/``key_file``, or ready-made from ``ssl_context``
    (the apiserver's, built by kr8s). ``label`` replaces the request URL in messages;
    ``plaintext_cause`` replaces :data:`PLAINTEXT_CAUSE`; ``sni_hostname`` is the TLS server
    name when it differs from the URL's host (a kubeconfig's ``tls-server-name``).
    ``settings`` is the settings section the endpoint came from (``tempo``): a 401/403 then
    names the settings whose credentials were sent (:meth:`credentials_sent`).
    """

    system: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    tenant: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False
    timeout: float = 10.0
    max_response_bytes: int = DEFAULT_MAX_BYTES
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    # A proxy URL may carry user:password@.
    proxy: str = field(default="", repr=False)
    sni_hostname: str = ""
    label: str = ""
    plaintext_cause: str = PLAINTEXT_CAUSE
    settings: str = ""

    @classmethod
    def from_settings(
        cls, system: str, settings: EndpointSettings, *, max_response_bytes: int = DEFAULT_MAX_BYTES
    ) -> Endpoint:
        return cls(
            system=system,
            url=settings.url,
            headers=tuple(settings.headers),
            tenant=settings.tenant,
            ca_file=settings.ca_file,
            cert_file=settings.cert_file,
            key_file=settings.key_file,
            insecure_skip_verify=settings.insecure_skip_verify,
            timeout=settings.timeout,
            max_response_bytes=max_response_bytes,
            settings=system,
        )

    def credentials_sent(self) -> str:
        """What identified us to the server, by name and setting, never by value: for the
        message of a 401/403 (``sent X-Scope-OrgID from tempo.tenant, header Authorization from
        tempo.headers``)."""
        where = self.settings
        sent = []
        if self.tenant:
            sent.append(f"X-Scope-OrgID from {where}.tenant" if where else "X-Scope-OrgID")
        for name, _ in self.headers:
            if self.tenant and name.lower() == "x-scope-orgid":
                continue  # the tenant wins (all_headers)
            sent.append(f"header {name} from {where}.headers" if where else f"header {name}")
        try:
            userinfo = urlsplit(self.url).username is not None
        except ValueError:
            userinfo = False
        if userinfo:
            sent.append(f"basic auth from the user in {where}.url" if where else "basic auth")
        if self.cert_file:
            sent.append(f"client certificate {where}.cert_file" if where else "client cert")
        if sent:
            return "sent " + ", ".join(sent)
        if not where:
            return "no credential sent"
        return f"no credential sent ({where}.tenant, {where}.headers and {where}.cert_file unset)"

    def all_headers(self) -> dict[str, str]:
        """The configured headers plus ``X-Scope-OrgID`` for the tenant (the tenant wins)."""
        out = {name: value for name, value in self.headers}
        if self.tenant:
            out = {k: v for k, v in out.items() if k.lower() != "x-scope-orgid"}
            out["X-Scope-OrgID"] = self.tenant
        return out

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in a message: header values and their long words, and
        a password in the URL with the ``Basic`` credential httpx sends for it."""
        values = [value for _, value in self.headers]
        try:
            parts = urlsplit(self.url)
            user, password = parts.username, parts.password
        except ValueError:  # an unusable URL: check_url refuses it before any request
            user = password = None
        if password:
            user, password = unquote(user or ""), unquote(password)
            basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            values += [password, f"Basic {basic}"]
        found: set[str] = set()
        for value in values:
            value = value.strip()
            if len(value) >= 4:
                found.add(value)
            found.update(word for word in value.split() if len(word) >= 8)
        # Longest first, so a full value is replaced before a word inside it.
        return tuple(sorted(found, key=len, reverse=True))


def check_url(system: str, url: str) -> str:
    """Validate an http(s) base URL; return it redacted. ConfigError before any request."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(system, shown, f"malformed URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ConfigError(system, shown, "malformed URL: expected http(s)://host[:port][/path]")
    return shown


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _check_headers(system: str, address: str, headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not _TOKEN.match(name):
            raise ConfigError(system, address, f"invalid header name {name!r}")
        if any(c in value for c in "\r\n\0") or not value.isascii():
            # Never show the value: it is often a credential.
            raise ConfigError(system, address, f"header {name}: value has invalid characters")


def _ssl_context(endpoint: Endpoint, address: str) -> ssl.SSLContext:
    """A TLS client context for ``endpoint``: verification against the CA file or the system's
    trust store (as ``ssl.create_default_context``), its client certificate, or no verification
    with ``insecure_skip_verify``."""
    return _configure_tls(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), endpoint, address)


def _configure_tls(ctx: ssl.SSLContext, endpoint: Endpoint, address: str) -> ssl.SSLContext:
    system = endpoint.system
    try:
        if endpoint.ca_file:
            ctx.load_verify_locations(cafile=endpoint.ca_file)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            system, endpoint.ca_file, f"cannot load CA file: {_os_reason(exc)}"
        ) from None
    if endpoint.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if endpoint.cert_file:
        try:
            ctx.load_cert_chain(endpoint.cert_file, endpoint.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                system, endpoint.cert_file, f"cannot load client certificate/key: {_os_reason(exc)}"
            ) from None
    elif endpoint.key_file:
        raise ConfigError(system, address, "a client key needs a client certificate (cert_file)")
    return ctx


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


@dataclass(frozen=True, slots=True)
class BuildInfo:
    """A server's build: ``/api/status/buildinfo`` (Tempo) or ``/api/v1/status/buildinfo``
    (Prometheus), both in Prometheus's ``PrometheusVersion`` JSON shape."""

    version: str
    revision: str
    branch: str
    go_version: str


def buildinfo_from(data: Mapping[str, Any]) -> BuildInfo:
    """A :class:`BuildInfo` from the ``PrometheusVersion`` JSON shape (Tempo and Prometheus)."""
    return BuildInfo(
        version=str(data.get("version", "")),
        revision=str(data.get("revision", "")),
        branch=str(data.get("branch", "")),
        go_version=str(data.get("goVersion", "")),
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete answer: status, headers, body (already decompressed, within the size cap)."""

    status: int
    headers: httpx.Headers
    body: bytes
    address: str  # the redacted request URL, for messages

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class HTTPBackend:
    """One ``httpx.Client`` for one backend, with error translation. Base of the clients.

    ``transport`` replaces the network (``httpx.MockTransport`` in unit tests). The client is a
    context manager; :meth:`close` releases its connections.
    """

    def __init__(self, endpoint: Endpoint, *, transport: httpx.BaseTransport | None = None) -> None:
        self.endpoint = endpoint
        self.system = endpoint.system
        self.address = check_url(endpoint.system, endpoint.url)
        headers = endpoint.all_headers()
        _check_headers(self.system, self.address, headers)
        self._secrets = endpoint.secrets()
        verify: ssl.SSLContext | bool = True
        # A plain-HTTP endpoint gets an empty TLS context, filled on the first https:// request
        # (an absolute URL may still be https): loading the trust store costs tens of
        # milliseconds that a query against http://localhost should not pay at start.
        self._lazy_tls: ssl.SSLContext | None = None
        self._tls_lock = threading.Lock()
        if transport is not None:
            pass  # the transport replaces the network, TLS included
        elif endpoint.ssl_context is not None:
            verify = endpoint.ssl_context
        elif urlsplit(endpoint.url).scheme == "https" or endpoint.ca_file or endpoint.cert_file:
            verify = _ssl_context(endpoint, self.address)
        else:
            verify = self._lazy_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._extensions = {"sni_hostname": endpoint.sni_hostname} if endpoint.sni_hostname else {}
        self._client = httpx.Client(
            base_url=endpoint.url,
            headers=headers,
            verify=verify,
            timeout=endpoint.timeout,
            transport=transport,
            proxy=endpoint.proxy or None,
            follow_redirects=False,
            # Core code does not read the environment: no proxy or CA variables from it.
            trust_env=False,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- requests --------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        expect: Collection[int] = _OK,
    ) -> Reply:
        """Send one request and read the whole answer.

        ``path`` is joined to the base URL (or is an absolute URL). Statuses in ``expect`` are
        returned (:data:`ANY_STATUS` returns every answer); any other status raises
        (:class:`AuthError` for 401/403, :class:`HTTPStatusError` otherwise). ``timeout``
        overrides the endpoint's; each phase (connect, send, first byte) and the whole body read
        are bounded by it. ``json`` is sent as a JSON body.
        """
        limit = self.endpoint.timeout if timeout is None else timeout
        try:
            request = self._client.build_request(
                method,
                path,
                params=params,
                data=data,
                content=content,
                json=json,
                headers=headers,
                timeout=httpx.Timeout(max(limit, 0.001)),
                extensions=self._extensions,
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            shown = self.endpoint.label or redact_url(str(path))
            raise ConfigError(self.system, shown, f"bad request URL: {exc}") from None
        address = self.endpoint.label or redact_url(str(request.url))
        if self._lazy_tls is not None and request.url.scheme == "https":
            self._fill_tls(address)
        if limit <= 0:
            raise Unreachable(self.system, address, "deadline passed before the request was sent")
        started = time.monotonic()
        try:
            response = self._client.send(request, stream=True)
            try:
                body = self._read_capped(response, address, started, limit)
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise self.transport_error(exc, address, limit, url=str(request.url)) from exc
        reply = Reply(response.status_code, response.headers, body, address)
        if reply.status not in expect:
            raise self.status_error(reply)
        return reply

    def _fill_tls(self, address: str) -> None:
        with self._tls_lock:
            if self._lazy_tls is not None:
                _configure_tls(self._lazy_tls, self.endpoint, address)
                self._lazy_tls = None

    def _read_capped(
        self, response: httpx.Response, address: str, started: float, limit: float
    ) -> bytes:
        cap = self.endpoint.max_response_bytes
        declared = response.headers.get("content-length", "")
        if (
            declared.isdigit()
            and int(declared) > cap
            and "content-encoding" not in response.headers
        ):
            raise ProtocolError(self.system, address, f"response larger than {_size(cap)}")
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > cap:
                raise ProtocolError(self.system, address, f"response larger than {_size(cap)}")
            chunks.append(chunk)
            # httpx bounds each read; this bounds a server trickling bytes forever.
            if time.monotonic() - started > limit:
                raise Unreachable(self.system, address, f"no complete answer within {limit:.1f} s")
        return b"".join(chunks)

    def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        expect: Collection[int] = _OK,
    ) -> Any:
        """GET and decode a JSON answer (ProtocolError if it is not JSON)."""
        reply = self.request(
            "GET", path, params=params, timeout=timeout, expect=expect,
            headers={"Accept": "application/json"},
        )  # fmt: skip
        return self.decode_json(reply)

    def get_exposition(self, path: str, *, timeout: float | None = None) -> Exposition:
        """GET a Prometheus text exposition (``/metrics``) and parse it."""
        from tracecheck.backends.exposition import parse_exposition

        reply = self.request("GET", path, timeout=timeout, headers={"Accept": "text/plain"})
        try:
            return parse_exposition(reply.text)
        except ValueError as exc:
            raise self.protocol_error(
                reply.address, f"malformed metrics exposition: {exc}"
            ) from None

    # -- translation: the one place foreign errors become tracecheck errors -------------------

    def decode_json(self, reply: Reply) -> Any:
        """The JSON body of ``reply``; ProtocolError with an excerpt if it is not JSON."""
        try:
            return json.loads(reply.body)
        except UnicodeDecodeError:
            raise self.protocol_error(reply.address, "invalid JSON (not UTF-8)") from None
        except json.JSONDecodeError as exc:
            raise self.protocol_error(
                reply.address,
                f"invalid JSON ({exc.msg} at position {exc.pos}): {self.excerpt(reply.body, 120)}",
            ) from None

    def scrub(self, text: str) -> str:
        """``text`` with every configured header value replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def excerpt(self, body: bytes | str, limit: int = 200) -> str:
        """A one-line excerpt of a response body for a message, scrubbed *before* it is cut:
        a secret cut in half by the excerpt would no longer match and its head would show."""
        if isinstance(body, bytes):
            body = body.decode("utf-8", errors="replace")
        return excerpt(self.scrub(body), limit)

    def protocol_error(self, address: str, cause: str) -> ProtocolError:
        return ProtocolError(self.system, address, self.scrub(cause))

    def status_error(self, reply: Reply, detail: str | None = None) -> BackendError:
        """The error for an unexpected status: AuthError for 401/403 (naming the credentials
        sent, by setting, when the endpoint came from settings), else HTTPStatusError (a
        429/503's ``Retry-After`` kept for :func:`retry_after`)."""
        body = self.excerpt(reply.body) if detail is None else self.scrub(detail)
        cause = f"HTTP {reply.status}: {body}"
        if reply.status in (401, 403):
            what = "credentials missing or refused" if reply.status == 401 else "not allowed"
            if self.endpoint.settings:
                what += f"; {self.endpoint.credentials_sent()}"
            return AuthError(self.system, reply.address, f"{cause} ({what})")
        error = HTTPStatusError(self.system, reply.address, cause, status=reply.status)
        wait = _parse_retry_after(reply.headers.get("retry-after", ""))
        if wait is not None:
            setattr(error, _RETRY_AFTER, wait)
        return error

    def transport_error(
        self, exc: httpx.HTTPError, address: str, limit: float, *, url: str = ""
    ) -> BackendError:
        """Translate a transport failure (no HTTP answer at all); ``url`` is the one requested
        (for the host a failed name resolution names), ``address`` what the message shows."""
        system = self.system
        if isinstance(exc, httpx.TimeoutException):
            return mark_transient(Unreachable(system, address, f"no answer within {limit:.1f} s"))
        if isinstance(exc, httpx.ProxyError):
            return Unreachable(system, address, self.scrub(f"proxy failed: {_root(exc)}"))
        if isinstance(exc, httpx.ConnectError):
            cause = connect_cause(exc, url or address)
            if cause == PLAINTEXT_CAUSE:
                cause = self.endpoint.plaintext_cause
            error = Unreachable(system, address, self.scrub(cause))
            refused = any(isinstance(e, ConnectionRefusedError) for e in _chain(exc))
            return mark_transient(error) if refused else error
        if isinstance(exc, httpx.RemoteProtocolError):
            return ProtocolError(
                system, address, self.scrub(f"connection closed without a complete answer ({exc})")
            )
        if isinstance(exc, httpx.DecodingError):
            return ProtocolError(system, address, self.scrub(f"undecodable body: {exc}"))
        if isinstance(exc, (httpx.ReadError, httpx.WriteError)):
            lost = Unreachable(system, address, self.scrub(f"connection lost: {_root(exc)}"))
            return mark_transient(lost)
        return Unreachable(system, address, self.scrub(f"{type(exc).__name__}: {_root(exc)}"))


_TRANSIENT = "_tracecheck_transient"


def mark_transient(error: BackendError) -> BackendError:
    """Flag an error as transient (refused, timed out, connection lost): worth a retry."""
    setattr(error, _TRANSIENT, True)
    return error


def is_transient(error: BaseException) -> bool:
    """Whether :func:`mark_transient` flagged ``error``; retry loops (OTLP export) use this."""
    return bool(getattr(error, _TRANSIENT, False))


_RETRY_AFTER = "_tracecheck_retry_after"
#: Statuses that mean "overloaded or starting, ask again later" (Tempo's frontend answers 429
#: ``too many outstanding requests``; a proxy or a starting backend 503).
RETRY_STATUSES = frozenset({429, 503})


def retry_after(error: BaseException) -> float | None:
    """The seconds a 429/503 answer asked to wait (its ``Retry-After``), or None."""
    value = getattr(error, _RETRY_AFTER, None)
    return float(value) if value is not None else None


def _parse_retry_after(value: str) -> float | None:
    """``Retry-After``: delay-seconds or an HTTP-date (RFC 9110 §10.2.3); None if neither."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def with_retries(
    call: Callable[[float], T],
    *,
    budget: float,
    clock: Clock,
    what: str,
    first_wait: float = 0.5,
) -> T:
    """``call(timeout)`` again after a 429 or 503 answer while ``budget`` seconds last.

    The wait is the answer's ``Retry-After`` when it gives one, else 0.5 s doubling to 4 s;
    each attempt gets the time left as its timeout. When the budget cannot cover the next
    wait, the last answer is raised again with what happened added, as one line::

        tempo at http://t/api/search: HTTP 429: too many outstanding requests; still
        overloaded after 3 attempts in 9.1 s (Retry-After 5 s would pass the 10.0 s timeout,
        tempo.timeout)

    ``what`` names the budget's setting in that message. Other errors pass through at once.
    """
    started = clock.monotonic()
    wait = first_wait
    attempts = 0
    while True:
        attempts += 1
        left = budget - (clock.monotonic() - started)
        try:
            return call(max(left, 0.001))
        except HTTPStatusError as exc:
            if exc.status not in RETRY_STATUSES:
                raise
            asked = retry_after(exc)
            pause = asked if asked is not None else wait
            elapsed = clock.monotonic() - started
            if elapsed + pause >= budget:
                said = f"Retry-After {asked:g} s" if asked is not None else f"a {pause:g} s pause"
                tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
                raise HTTPStatusError(
                    exc.system,
                    exc.address,
                    f"{exc.cause}; still unavailable after {tries} in {elapsed:.1f} s "
                    f"({said} would pass the {budget:g} s timeout, {what})",
                    status=exc.status,
                ) from exc
            clock.sleep(pause)
            if asked is None:
                wait = min(wait * 2, 4.0)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _root(exc: BaseException) -> str:
    last = _chain(exc)[-1]
    if isinstance(last, OSError) and last.strerror:
        return last.strerror
    return str(last) or type(last).__name__


# OpenSSL reasons seen when TLS meets a plaintext peer: the HTTP reply is read as a TLS record.
_PLAINTEXT_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"}
)
_CLIENT_CERT_REASONS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
    }
)


def connect_cause(exc: BaseException, address: str = "") -> str:
    """A short cause for a failed connection, from the exception chain (also used for gRPC)."""
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed: {link.verify_message or link.reason}"
        if isinstance(link, ssl.SSLError):
            reason = (link.reason or "").upper()
            if reason in _PLAINTEXT_REASONS:
                return PLAINTEXT_CAUSE
            if reason in _CLIENT_CERT_REASONS:
                return "TLS handshake failed (the server requires a client certificate?)"
            return f"TLS handshake failed: {link.reason or link}"
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, socket.gaierror):
            host = urlsplit(address).hostname or address
            return f"cannot resolve host {host!r}"
    return f"cannot connect: {_root(exc)}"


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n} bytes"
