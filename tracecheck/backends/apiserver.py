"""kube-apiserver client: the operator's credentials (through kr8s), traced raw requests, identity.

Credentials come from a kubeconfig (``--kubeconfig``, else ``KUBECONFIG``, else the local
pipeline's, else ``~/.kube/config``: :func:`resolve_kubeconfig`) and a context, or from the
in-cluster service account. **kr8s** resolves them (:mod:`~tracecheck.backends.credentials`;
client certificates, tokens, exec plugins
v1beta1/v1, OIDC id-tokens, the re-read service-account token; docs/reference/apiserver.md §9): this
module takes the server URL, the TLS context, the bearer token, the SNI name and the proxy from
it and sends the requests through the HTTP base every client shares
(:class:`~tracecheck.backends._http.HTTPBackend`), not through kr8s's client, because a traced
request needs its own ``traceparent`` header and the ``Audit-Id`` response header
(docs/reference/apiserver.md §4.3: kubectl sends no ``traceparent``).

Trust (§4): since Kubernetes 1.33 the apiserver honours an incoming ``traceparent`` only from
users in ``system:masters`` or ``system:monitoring``; then a sampled (``-01``) parent is always
traced, as a child of the caller's span. Everyone else gets a new trace, sampled at
``samplingRatePerMillion``, that links the caller's. :meth:`ApiserverClient.whoami`
(SelfSubjectReview, GA in 1.28) tells the groups, :func:`trust_mode` the consequence.

Failures map to :mod:`tracecheck.errors`, each one line naming the server and the context, never
the secret: no kubeconfig, an unknown context, unusable credential data -> ConfigError (exit 4);
connection refused, TLS against a plaintext port, timeout -> Unreachable (exit 3), translated
by the HTTP base like every client's; 401 -> AuthError "the credential was rejected"; 403 ->
AuthError naming the permission that is missing (what a status means to the apiserver is
decided here).

Example::

    creds = load_credentials(resolve_kubeconfig("", os.environ, None), context="viewer")
    with ApiserverClient(creds) as api:
        user, version = api.whoami(), api.version()
        print(trust_mode(user, version).reason)
        reply = api.send("GET", "/readyz", traceparent=traceparent(trace_id, span_id))
        print(reply.status, reply.audit_id)
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import httpx

from tracecheck.backends._http import ANY_STATUS, Endpoint, HTTPBackend
from tracecheck.backends.credentials import SERVICE_ACCOUNT_DIR, Credentials, load_credentials
from tracecheck.config import ApiserverSettings, resolve_kubeconfig
from tracecheck.errors import (
    AuthError,
    BackendError,
    ConfigError,
    HTTPStatusError,
    NotReady,
    ProtocolError,
    excerpt,
    one_line,
    redact_url,
)

__all__ = [
    "PRIVILEGED_GROUPS",
    "SERVICE_ACCOUNT_DIR",
    "SYSTEM",
    "TRUSTED_SINCE",
    "ApiReply",
    "ApiserverClient",
    "Credentials",
    "ServerVersion",
    "TrustMode",
    "UserInfo",
    "load_credentials",
    "resolve_kubeconfig",
    "traceparent",
    "trust_mode",
]

SYSTEM = "apiserver"
#: Groups whose incoming trace context the apiserver honours (k8s.io/apiserver 0.33+,
#: ``filters/traces.go`` notSystemPrivilegedGroup; docs/reference/apiserver.md §4.1).
PRIVILEGED_GROUPS = ("system:masters", "system:monitoring")
#: First minor release that honours a trusted caller's ``traceparent`` (§4.1).
TRUSTED_SINCE = (1, 33)
# Bodies kept from a reply: enough for version/whoami JSON and an error excerpt.
_MAX_BODY = 4 * 1024 * 1024


# -- identity and version ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """``/version``: ``git_version`` like ``v1.34.4``; ``minor`` may carry a ``+`` (EKS, GKE)."""

    git_version: str
    major: int
    minor: int
    platform: str = ""
    go_version: str = ""

    def at_least(self, major: int, minor: int) -> bool:
        return (self.major, self.minor) >= (major, minor)


_VERSION = re.compile(r"v?(\d+)\.(\d+)")


def _version_from(data: Mapping[str, Any]) -> ServerVersion:
    git = str(data.get("gitVersion", ""))
    major = re.sub(r"\D", "", str(data.get("major", "")))
    minor = re.sub(r"\D", "", str(data.get("minor", "")))
    if not (major and minor):
        m = _VERSION.match(git)
        if m is None:
            raise ValueError(f"no version in {excerpt(json.dumps(dict(data)), 120)}")
        major, minor = m.group(1), m.group(2)
    return ServerVersion(
        git_version=git or f"v{major}.{minor}",
        major=int(major),
        minor=int(minor),
        platform=str(data.get("platform", "")),
        go_version=str(data.get("goVersion", "")),
    )


@dataclass(frozen=True, slots=True)
class UserInfo:
    """Who the apiserver says we are (SelfSubjectReview ``status.userInfo``)."""

    username: str
    groups: tuple[str, ...]
    uid: str = ""

    @property
    def privileged_groups(self) -> tuple[str, ...]:
        return tuple(g for g in self.groups if g in PRIVILEGED_GROUPS)


@dataclass(frozen=True, slots=True)
class TrustMode:
    """How the apiserver treats our ``traceparent``, and why.

    ``parent-child``: the SERVER span joins our trace as a child of our span, always sampled.
    ``link``: the apiserver starts its own trace (sampled at samplingRatePerMillion) and links
    ours; it is found by the ``Audit-Id`` or ``{ link:traceID = ... }``.
    """

    mode: Literal["parent-child", "link"]
    reason: str
    #: The decision in a few words, for the lines that repeat it (``reason`` has the whole).
    why: str = ""

    @property
    def trusted(self) -> bool:
        return self.mode == "parent-child"


def trust_mode(user: UserInfo | None, version: ServerVersion | None, note: str = "") -> TrustMode:
    """The mode for this user on this server (docs/reference/apiserver.md §4); ``note`` says why the
    user is unknown when it is None."""
    since = f"{TRUSTED_SINCE[0]}.{TRUSTED_SINCE[1]}"
    ver = version.git_version if version is not None else "an unknown version"
    if version is not None and not version.at_least(*TRUSTED_SINCE):
        return TrustMode(
            "link",
            f"Kubernetes {ver} < {since} treats every request as from a public endpoint: it never "
            "uses an incoming traceparent as parent",
            f"Kubernetes {ver} < {since} ignores incoming trace context",
        )
    if user is None:
        unknown = "the user's groups are unknown"
        why = f" ({note})" if note else ""
        return TrustMode(
            "link", f"{unknown}{why}: assuming the traceparent is not honoured", unknown
        )
    groups = ", ".join(user.groups) or "no groups"
    if user.privileged_groups:
        trusted = " and ".join(user.privileged_groups)
        return TrustMode(
            "parent-child",
            f"user {user.username!r} is in {trusted}, and Kubernetes {ver} >= {since} honours "
            "its traceparent",
            f"{user.username} is in {trusted}",
        )
    return TrustMode(
        "link",
        f"user {user.username!r} ({groups}) is in neither system:masters nor system:monitoring, "
        f"so Kubernetes {ver} starts its own trace, links ours and samples it at "
        "samplingRatePerMillion",
        f"{user.username} is in neither system:masters nor system:monitoring",
    )


def traceparent(trace_id: bytes, span_id: bytes, *, sampled: bool = True) -> str:
    """A W3C ``traceparent`` header value: ``00-<32 hex>-<16 hex>-01`` (``-00`` unsampled).

    Neither ID may be all zeros (W3C Trace Context: invalid, so ignored; §4.3).
    """
    if len(trace_id) != 16 or not any(trace_id):
        raise ValueError("trace ID must be 16 bytes, not all zero")
    if len(span_id) != 8 or not any(span_id):
        raise ValueError("span ID must be 8 bytes, not all zero")
    return f"00-{trace_id.hex()}-{span_id.hex()}-{'01' if sampled else '00'}"


# -- the client -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiReply:
    """One request's outcome. ``audit_id`` is the ``Audit-Id`` response header ("" if none)."""

    method: str
    path: str
    status: int
    audit_id: str
    elapsed: float  # seconds, request sent to body read
    body: bytes = field(default=b"", repr=False)
    message: str = ""  # the Status message of an error reply, one line

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body)


class ApiserverClient:
    """Raw HTTPS requests to one apiserver with resolved :class:`Credentials`, sent through the
    shared HTTP base (:class:`~tracecheck.backends._http.HTTPBackend`: its size cap, deadlines
    and error translation).

    Thread-safe. ``transport`` replaces the network in unit tests; ``reload`` re-resolves
    renewable credentials (exec plugin, service account) once after a 401.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        reload: Callable[[], Credentials] | None = None,
        user_agent: str = "",
    ) -> None:
        self._lock = threading.Lock()
        self._timeout = timeout
        self._transport = transport
        self._reload = reload
        self._user_agent = user_agent or _user_agent()
        self._check_server(credentials)
        self.credentials = credentials
        self._http = HTTPBackend(self._endpoint(credentials), transport=transport)

    @classmethod
    def from_settings(
        cls,
        settings: ApiserverSettings,
        *,
        kubeconfig: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> ApiserverClient:
        """A client for ``settings`` (``kubeconfig`` overrides ``settings.kubeconfig``; with
        neither, the in-cluster service account)."""
        path = kubeconfig if kubeconfig is not None else (settings.kubeconfig or None)
        if path is None and settings.context:
            raise ConfigError(
                SYSTEM,
                "credentials",
                f"--context {settings.context} needs a kubeconfig, and none was found "
                "(--kubeconfig, KUBECONFIG, the local pipeline's, ~/.kube/config)",
            )
        creds = load_credentials(path, settings.context)

        def reload() -> Credentials:
            return load_credentials(path, creds.context if path is not None else "")

        return cls(creds, timeout=settings.timeout, transport=transport, reload=reload)

    @staticmethod
    def _check_server(creds: Credentials) -> None:
        try:
            parts = urlsplit(creds.server)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ConfigError(SYSTEM, creds.where, f"malformed server URL: {exc}") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(SYSTEM, creds.where, "malformed server URL: expected https://host")

    def _endpoint(self, creds: Credentials) -> Endpoint:
        """The HTTP base's view of ``creds``: TLS context, proxy and SNI name from kr8s, the
        bearer token as a header, and ``where`` as the address of every message."""
        headers = [("User-Agent", self._user_agent), ("Accept", "application/json")]
        if creds.token:
            if any(c in creds.token for c in "\r\n\0") or not creds.token.isascii():
                raise ConfigError(SYSTEM, creds.where, "the bearer token has invalid characters")
            headers.append(("Authorization", f"Bearer {creds.token}"))
        ctx = creds.ssl_context
        return Endpoint(
            system=SYSTEM,
            url=creds.server,
            headers=tuple(headers),
            insecure_skip_verify=ctx is False,
            timeout=self._timeout,
            max_response_bytes=_MAX_BODY,
            ssl_context=ctx if isinstance(ctx, ssl.SSLContext) else None,
            proxy=creds.proxy,
            sni_hostname=creds.tls_server_name,
            label=creds.where,
            plaintext_cause=(
                "TLS handshake failed: the server answered in plaintext (is the kubeconfig's "
                "https:// URL pointing at a plain HTTP port?)"
            ),
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return redact_url(self.credentials.server)

    @property
    def where(self) -> str:
        return self.credentials.where

    def close(self) -> None:
        with self._lock:
            http = self._http
        http.close()

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

    def send(
        self,
        method: str,
        path: str,
        *,
        traceparent: str | None = None,
        json_body: Any = None,
        timeout: float | None = None,
    ) -> ApiReply:
        """Send one request; return its status and ``Audit-Id`` whatever the status.

        Only transport failures (Unreachable) and 401 (AuthError: the credential itself is
        refused, so nothing else can work) raise; 403 and other statuses are data, for callers
        that report per-request outcomes (paths a credential may not GET).
        """
        reply = self._send(method, path, traceparent, json_body, timeout)
        if reply.status == 401 and self.credentials.renewable and self._reload is not None:
            self._renew()
            reply = self._send(method, path, traceparent, json_body, timeout)
        if reply.status == 401:
            raise self._unauthorized()
        return reply

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        timeout: float | None = None,
        expect: Collection[int] = range(200, 300),
    ) -> ApiReply:
        """As :meth:`send`, but any status outside ``expect`` raises (403: AuthError)."""
        reply = self.send(method, path, json_body=json_body, timeout=timeout)
        if reply.status not in expect:
            raise self.status_error(reply)
        return reply

    def _renew(self) -> None:
        assert self._reload is not None
        creds = self._reload()
        fresh = HTTPBackend(self._endpoint(creds), transport=self._transport)
        with self._lock:
            old, self._http = self._http, fresh
            self.credentials = creds
        old.close()

    def _send(
        self,
        method: str,
        path: str,
        traceparent_: str | None,
        json_body: Any,
        timeout: float | None,
    ) -> ApiReply:
        with self._lock:
            http = self._http
        started = time.monotonic()
        reply = http.request(
            method,
            path,
            json=json_body,
            headers={"traceparent": traceparent_} if traceparent_ else None,
            timeout=timeout,
            expect=ANY_STATUS,
        )
        return ApiReply(
            method=method.upper(),
            path=path,
            status=reply.status,
            audit_id=reply.headers.get("audit-id", ""),
            elapsed=time.monotonic() - started,
            body=reply.body,
            message=_status_message(reply.status, reply.body),
        )

    # -- what a status means here (the transport's failures are translated by the base) ------

    def _scrub(self, text: str) -> str:
        with self._lock:
            http = self._http
        return http.scrub(text)

    def _unauthorized(self) -> AuthError:
        method = self.credentials.method
        if method.startswith("client certificate"):
            why = "the client certificate was rejected (not signed by the apiserver's client CA, "
            why += "or expired?)"
        elif method == "none (anonymous)":
            why = "no credential was sent and anonymous access is off"
        else:
            why = f"the credential was rejected ({method}: expired or revoked token?)"
        return AuthError(SYSTEM, self.where, f"401 Unauthorized: {why}")

    def status_error(self, reply: ApiReply) -> BackendError:
        """The error for an unexpected status (401/403: AuthError; else HTTPStatusError)."""
        if reply.status == 401:
            return self._unauthorized()
        said = self._scrub(reply.message or excerpt(reply.body, 160))
        if reply.status == 403:
            return AuthError(
                SYSTEM,
                self.where,
                f"403 Forbidden: {reply.method} {reply.path}: {said} "
                "(the credential lacks this RBAC permission)",
            )
        return HTTPStatusError(
            SYSTEM, self.where, f"HTTP {reply.status} on {reply.method} {reply.path}: {said}",
            status=reply.status,
        )  # fmt: skip

    # -- endpoints ---------------------------------------------------------------------------

    def readyz(self, *, timeout: float | None = None) -> str:
        """``GET /readyz``: its body (``ok``); NotReady naming the failing checks on 500/503."""
        reply = self.request("GET", "/readyz", timeout=timeout, expect=(200, 500, 503))
        if reply.status != 200:
            lines = reply.body.decode(errors="replace").splitlines()
            # The readyz body lists each check as "[+]name ok" / "[-]name failed: reason".
            failed = [ln[3:].split(" ")[0] for ln in lines if ln.startswith("[-]")]
            cause = f"/readyz HTTP {reply.status}: " + (
                f"failing checks: {', '.join(failed)}" if failed else excerpt(reply.body, 160)
            )
            raise NotReady(SYSTEM, self.where, cause)
        return reply.body.decode(errors="replace").strip()

    def version(self, *, timeout: float | None = None) -> ServerVersion:
        """``GET /version`` (allowed to every user by system:public-info-viewer)."""
        reply = self.request("GET", "/version", timeout=timeout)
        try:
            data = reply.json()
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return _version_from(data)
        except ValueError as exc:
            raise ProtocolError(
                SYSTEM, self.where, f"/version: {one_line(str(exc), 160)}"
            ) from None

    def whoami(self, *, timeout: float | None = None) -> UserInfo:
        """The authenticated user and groups, by SelfSubjectReview (v1 since 1.28, else v1beta1).

        Raises AuthError (403) or HTTPStatusError (404: the API is not served) when it cannot
        be told.
        """
        reply: ApiReply | None = None
        for version in ("v1", "v1beta1"):
            api = f"authentication.k8s.io/{version}"
            reply = self.send(
                "POST",
                f"/apis/{api}/selfsubjectreviews",
                json_body={"apiVersion": api, "kind": "SelfSubjectReview"},
                timeout=timeout,
            )
            if reply.status != 404:
                break
        assert reply is not None
        if reply.status not in (200, 201):
            raise self.status_error(reply)
        try:
            info = reply.json()["status"]["userInfo"]
            return UserInfo(
                username=str(info.get("username", "")),
                groups=tuple(str(g) for g in info.get("groups") or ()),
                uid=str(info.get("uid", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(
                SYSTEM, self.where, f"SelfSubjectReview: unexpected answer ({type(exc).__name__})"
            ) from None


def _status_message(status: int, body: bytes) -> str:
    """The ``message`` of a ``kind: Status`` error body, one line ("" for success)."""
    if status < 400 or not body:
        return ""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return excerpt(body, 160)
    if isinstance(data, dict) and data.get("message"):
        return one_line(str(data["message"]), 200)
    return excerpt(body, 160)


def _user_agent() -> str:
    from tracecheck._version import __version__

    return f"tracecheck/{__version__}"
