"""kube-apiserver client: the operator's credentials (through kr8s), traced raw requests, identity.

Credentials come from a kubeconfig (``--kubeconfig``, else ``KUBECONFIG``, else the local
pipeline's, else ``~/.kube/config``: :func:`resolve_kubeconfig`) and a context, or from the
in-cluster service account. **kr8s** resolves them (client certificates, tokens, exec plugins
v1beta1/v1, OIDC id-tokens, the re-read service-account token; prometheus-api.md §10): this
module takes the server URL, the TLS context, the bearer token, the SNI name and the proxy from
it, and sends the requests itself, because a traced request needs its own ``traceparent``
header and the ``Audit-Id`` response header (apiserver-tracing.md §4.3: kubectl sends no
``traceparent``).

Trust (§4): since Kubernetes 1.33 the apiserver honours an incoming ``traceparent`` only from
users in ``system:masters`` or ``system:monitoring``; then a sampled (``-01``) parent is always
traced, as a child of the caller's span. Everyone else gets a new trace, sampled at
``samplingRatePerMillion``, that links the caller's. :meth:`ApiserverClient.whoami`
(SelfSubjectReview, GA in 1.28) tells the groups, :func:`trust_mode` the consequence.

Failures map to :mod:`tracecheck.errors`, each one line naming the server and the context, never
the secret: no kubeconfig, an unknown context, unusable credential data -> ConfigError (exit 4);
connection refused, TLS against a plaintext port, timeout -> Unreachable (exit 3); 401 -> AuthError
"the credential was rejected"; 403 -> AuthError naming the permission that is missing.

Example::

    creds = load_credentials(resolve_kubeconfig("", os.environ, None), context="viewer")
    with ApiserverClient(creds) as api:
        user, version = api.whoami(), api.version()
        print(trust_mode(user, version).reason)
        reply = api.send("GET", "/readyz", traceparent=traceparent(trace_id, span_id))
        print(reply.status, reply.audit_id)
"""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import httpx

from tracecheck.backends._http import connect_cause
from tracecheck.config import ApiserverSettings, resolve_kubeconfig
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

__all__ = [
    "PRIVILEGED_GROUPS",
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
#: ``filters/traces.go`` notSystemPrivilegedGroup; apiserver-tracing.md §4.1).
PRIVILEGED_GROUPS = ("system:masters", "system:monitoring")
#: First minor release that honours a trusted caller's ``traceparent`` (§4.1).
TRUSTED_SINCE = (1, 33)
#: Where kr8s looks for the in-cluster service account.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Bodies kept from a reply: enough for version/whoami JSON and an error excerpt.
_MAX_BODY = 4 * 1024 * 1024


# -- credentials -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """A resolved identity for one apiserver. ``repr`` and messages never show the secret."""

    server: str  # https://host:port
    context: str  # kubeconfig context, or "in-cluster"
    kubeconfig: str  # the kubeconfig path(s), "" in-cluster
    method: str  # "client certificate", "bearer token", "exec plugin", "service account", ...
    tls_server_name: str = ""
    # A kubeconfig's proxy-url may carry user:password@, so it stays out of repr too.
    proxy: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    ssl_context: ssl.SSLContext | bool = field(default=True, repr=False, compare=False)
    #: Credentials that may change under us (exec plugin, service-account token): reload on 401.
    renewable: bool = False

    @property
    def where(self) -> str:
        """``https://host:6443 (context viewer)``: the address part of every message."""
        return f"{redact_url(self.server)} (context {self.context})"


def load_credentials(
    kubeconfig: str | None,
    context: str = "",
    *,
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
) -> Credentials:
    """Resolve the server, TLS context and auth of ``context`` in ``kubeconfig`` through kr8s.

    ``kubeconfig`` None means the in-cluster service account (kr8s reads its token and CA and
    ``KUBERNETES_SERVICE_HOST``/``_PORT``). An unreadable or invalid kubeconfig, an unknown
    context, a failing exec plugin or unloadable certificate data raise ConfigError naming the
    file and the context, never the credential.
    """
    if kubeconfig is None:
        return _load_in_cluster(service_account_dir)
    declared, contexts, current = _read_kubeconfigs(kubeconfig)
    chosen = context or current or (contexts[0] if contexts else "")
    if not chosen:
        raise ConfigError(SYSTEM, kubeconfig, "the kubeconfig has no contexts")
    if chosen not in contexts:
        listed = ", ".join(contexts) or "none"
        why = "unknown context" if context else "current-context names a missing context"
        raise ConfigError(SYSTEM, kubeconfig, f"{why} {chosen!r}; contexts: {listed}")
    return _via_kr8s(kubeconfig, chosen, declared, service_account_dir)


def _read_kubeconfigs(kubeconfig: str) -> tuple[set[str], list[str], str]:
    """Check the file(s) ourselves, for precise errors (kr8s skips unreadable files silently).

    Returns the file paths the kubeconfigs name (so kr8s's temporary copies of ``*-data`` can
    be told apart), the context names, and the first file's current-context.
    """
    import yaml

    paths = [p for p in kubeconfig.split(":") if p]
    contexts: list[str] = []
    declared: set[str] = set()
    current = ""
    readable = 0
    for raw in paths:
        path = Path(raw).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue  # kubectl skips missing files of a KUBECONFIG list too
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(SYSTEM, str(path), f"cannot read the kubeconfig: {reason}") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(
                SYSTEM, str(path), f"not a valid kubeconfig: bad YAML{where}"
            ) from None
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ConfigError(SYSTEM, str(path), "not a valid kubeconfig: not a YAML mapping")
        readable += 1
        # Like kubectl: the first file that sets current-context wins.
        current = current or str(doc.get("current-context") or "")
        for entry in doc.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name") and entry["name"] not in contexts:
                contexts.append(str(entry["name"]))
        for section, keys in (
            ("users", ("client-certificate", "client-key")),
            ("clusters", ("certificate-authority",)),
        ):
            for entry in doc.get(section) or []:
                body = entry.get(section[:-1]) if isinstance(entry, dict) else None
                for key in keys:
                    if isinstance(body, dict) and body.get(key):
                        declared.add(str((path.parent / str(body[key])).resolve()))
                        declared.add(str(Path(str(body[key])).resolve()))
    if not readable:
        raise ConfigError(SYSTEM, kubeconfig, "kubeconfig not found (or empty)")
    return declared, contexts, current


def _via_kr8s(
    kubeconfig: str, context: str, declared: set[str], service_account_dir: str
) -> Credentials:
    import anyio
    from kr8s._auth import KubeAuth  # kr8s's credential loader, without an API round trip

    where = f"{kubeconfig} (context {context})"

    made: list[Any] = []

    async def resolve() -> tuple[Any, ssl.SSLContext | bool]:
        # An explicit namespace keeps kr8s from reading current-context (a KeyError when the
        # first file has none); requests here name their namespace in the path anyway.
        auth: Any = KubeAuth(
            kubeconfig=kubeconfig,
            context=context,
            serviceaccount=service_account_dir,
            namespace="default",
        )
        made.append(auth)
        await auth.reauthenticate()
        return auth, await auth.ssl_context()

    try:
        auth, ssl_context = _run_kr8s(anyio.run, resolve, where)
    finally:
        for obj in made:
            _cleanup(obj, declared)
    user: Mapping[str, Any] = getattr(auth, "_user", {}) or {}
    if auth.client_cert_file and auth.client_key_file:
        method = "client certificate"
    elif auth.token:
        method = "bearer token"
    else:
        method = "none (anonymous)"
    if "exec" in user:
        method = f"exec plugin {Path(str(user['exec'].get('command', '?'))).name} ({method})"
    elif "auth-provider" in user:
        method = "OIDC id-token"
    return Credentials(
        server=str(auth.server),
        context=context,
        kubeconfig=kubeconfig,
        method=method,
        tls_server_name=str(auth.tls_server_name or ""),
        proxy=str(auth.proxy or ""),
        token=str(auth.token or "").strip(),
        ssl_context=ssl_context,
        renewable="exec" in user,
    )


def _load_in_cluster(service_account_dir: str) -> Credentials:
    import anyio
    from kr8s._auth import KubeAuth

    where = f"in-cluster service account ({service_account_dir})"
    if not Path(service_account_dir, "token").is_file():
        raise ConfigError(
            SYSTEM,
            "credentials",
            "no kubeconfig found (--kubeconfig, KUBECONFIG, the local pipeline's, ~/.kube/config) "
            f"and no in-cluster service account at {service_account_dir}; "
            "pass --kubeconfig, or skip this leg with --skip apiserver",
        )

    async def resolve() -> tuple[Any, ssl.SSLContext | bool]:
        # A kubeconfig path that cannot exist makes kr8s go straight to the service account
        # (it would otherwise read KUBECONFIG from the environment itself).
        absent = str(Path(service_account_dir) / "no-kubeconfig-here")
        auth: Any = KubeAuth(kubeconfig=absent, serviceaccount=service_account_dir)
        await auth.reauthenticate()
        return auth, await auth.ssl_context()

    auth, ssl_context = _run_kr8s(anyio.run, resolve, where)
    return Credentials(
        server=str(auth.server),
        context="in-cluster",
        kubeconfig="",
        method="service account",
        token=str(auth.token or "").strip(),
        ssl_context=ssl_context,
        renewable=True,  # the projected token is rotated; kr8s re-reads it
    )


def _run_kr8s(run: Callable[..., Any], resolve: Callable[[], Any], where: str) -> Any:
    """Run kr8s's resolution and translate its failures into ConfigError (never a secret)."""
    try:
        return run(resolve)
    except ValueError as exc:
        # kr8s: "No such context ...", "Unable to find valid credentials", unsupported exec API.
        raise ConfigError(
            SYSTEM, where, f"unusable credentials: {one_line(str(exc), 160)}"
        ) from None
    except KeyError as exc:
        # kr8s: a missing kubeconfig key, KUBERNETES_SERVICE_HOST unset, an exec plugin
        # answering without credentials.
        raise ConfigError(SYSTEM, where, f"incomplete credentials: missing {exc}") from None
    except FileNotFoundError as exc:
        raise ConfigError(SYSTEM, where, f"file or command not found: {exc.filename}") from None
    except RuntimeError as exc:
        # kr8s's check_output: "Process exited with non-zero code N:\n<stderr>"
        first = str(exc).splitlines()
        code = first[0].rstrip(":") if first else "failed"
        detail = f": {one_line(first[1], 120)}" if len(first) > 1 and first[1].strip() else ""
        raise ConfigError(SYSTEM, where, f"exec credential plugin {code.lower()}{detail}") from None
    except json.JSONDecodeError:
        raise ConfigError(SYSTEM, where, "exec credential plugin printed no JSON") from None
    except ssl.SSLError as exc:
        raise ConfigError(
            SYSTEM, where, f"cannot load the client certificate/key or CA: {exc.reason or exc}"
        ) from None
    except (OSError, TypeError, AttributeError) as exc:
        # TypeError/AttributeError: a kubeconfig entry of the wrong shape (kr8s indexes dicts).
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(SYSTEM, where, f"unusable credentials: {reason}") from None
    except Exception as exc:  # binascii.Error (bad base64 *-data) and other decoding failures
        if type(exc).__name__ == "Error" and type(exc).__module__ == "binascii":
            raise ConfigError(SYSTEM, where, "certificate or key data is not base64") from None
        raise


def _cleanup(auth: Any, declared: set[str]) -> None:
    """Delete the temporary files kr8s wrote for ``*-data`` entries (certificates, *keys*).

    kr8s writes ``client-key-data`` and friends to ``NamedTemporaryFile(delete=False)`` and never
    removes them; once the SSL context is built they are not needed, and a private key must not
    be left in /tmp.
    """
    tmp = Path(tempfile.gettempdir()).resolve()
    for attr in ("client_key_file", "client_cert_file", "server_ca_file"):
        value = getattr(auth, attr, None)
        if not value:
            continue
        path = Path(str(value)).resolve()
        if str(path) in declared or path.parent != tmp or not path.name.startswith("tmp"):
            continue
        with contextlib.suppress(OSError):
            path.unlink()


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
    """The mode for this user on this server (apiserver-tracing.md §4); ``note`` says why the
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
    """Raw HTTPS requests to one apiserver with resolved :class:`Credentials`.

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
        self._client = self._make_client(credentials)

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

    def _make_client(self, creds: Credentials) -> httpx.Client:
        headers = {"User-Agent": self._user_agent, "Accept": "application/json"}
        if creds.token:
            if any(c in creds.token for c in "\r\n\0") or not creds.token.isascii():
                raise ConfigError(SYSTEM, creds.where, "the bearer token has invalid characters")
            headers["Authorization"] = f"Bearer {creds.token}"
        return httpx.Client(
            base_url=creds.server,
            headers=headers,
            verify=creds.ssl_context if self._transport is None else True,
            timeout=self._timeout,
            transport=self._transport,
            proxy=creds.proxy or None,
            follow_redirects=False,
            trust_env=False,  # STYLE 7: no proxy or CA variables from the environment
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return redact_url(self.credentials.server)

    @property
    def where(self) -> str:
        return self.credentials.where

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
        with self._lock:
            old, self._client = self._client, self._make_client(creds)
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
        limit = self._timeout if timeout is None else timeout
        headers = {"traceparent": traceparent_} if traceparent_ else {}
        extensions = {}
        if self.credentials.tls_server_name:
            extensions["sni_hostname"] = self.credentials.tls_server_name
        with self._lock:
            client = self._client
        started = time.monotonic()
        try:
            request = client.build_request(
                method,
                path,
                headers=headers,
                json=json_body,
                timeout=httpx.Timeout(max(limit, 0.001)),
                extensions=extensions,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise ConfigError(SYSTEM, self.where, f"bad request path {path!r}: {exc}") from None
        try:
            response = client.send(request, stream=True)
            try:
                body = self._read(response, limit, started, path)
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, limit) from exc
        elapsed = time.monotonic() - started
        return ApiReply(
            method=method.upper(),
            path=path,
            status=response.status_code,
            audit_id=response.headers.get("audit-id", ""),
            elapsed=elapsed,
            body=body,
            message=_status_message(response.status_code, body),
        )

    def _read(self, response: httpx.Response, limit: float, started: float, path: str) -> bytes:
        chunks: list[bytes] = []
        total = 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > _MAX_BODY:
                raise ProtocolError(SYSTEM, self.where, f"{path}: answer larger than 4 MiB")
            chunks.append(chunk)
            if time.monotonic() - started > limit:
                raise Unreachable(
                    SYSTEM, self.where, f"{path}: no complete answer in {limit:.1f} s"
                )
        return b"".join(chunks)

    # -- error translation: the one place foreign errors become tracecheck errors -------------

    def _scrub(self, text: str) -> str:
        token = self.credentials.token
        return text.replace(token, "***") if token and len(token) >= 4 else text

    def _transport_error(self, exc: httpx.HTTPError, limit: float) -> BackendError:
        if isinstance(exc, httpx.TimeoutException):
            return Unreachable(SYSTEM, self.where, f"no answer within {limit:.1f} s")
        if isinstance(exc, httpx.ConnectError):
            cause = connect_cause(exc, self.credentials.server)
            if "plaintext" in cause:
                cause = (
                    "TLS handshake failed: the server answered in plaintext (is the kubeconfig's "
                    "https:// URL pointing at a plain HTTP port?)"
                )
            return Unreachable(SYSTEM, self.where, self._scrub(cause))
        if isinstance(exc, httpx.ProxyError):
            return Unreachable(SYSTEM, self.where, self._scrub(f"proxy failed: {exc}"))
        if isinstance(exc, httpx.RemoteProtocolError):
            return ProtocolError(
                SYSTEM, self.where, self._scrub(f"connection closed without an answer ({exc})")
            )
        return Unreachable(SYSTEM, self.where, self._scrub(f"{type(exc).__name__}: {exc}"))

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
