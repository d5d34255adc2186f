"""kube-apiserver credentials, resolved by kr8s: a kubeconfig (a file or a ``:``-separated
list, as kubectl reads ``KUBECONFIG``) and a context, or the in-cluster service account.

kr8s handles client certificates, bearer tokens, exec plugins (client.authentication.k8s.io
v1beta1/v1), OIDC id-tokens and the re-read service-account token; this module asks it for the
server URL, the TLS context, the token, the SNI name and the proxy, and turns every way that
can fail into a one-line :class:`~tracecheck.errors.ConfigError` naming the file and the
context, never the secret. kr8s writes ``*-data`` entries (keys included) to temporary files
and leaves them; they are deleted here once the TLS context holds them
(docs/reference/apiserver.md §9).
"""

from __future__ import annotations

import contextlib
import json
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracecheck.errors import ConfigError, one_line, redact_url

__all__ = ["SERVICE_ACCOUNT_DIR", "SYSTEM", "Credentials", "load_credentials"]

SYSTEM = "apiserver"
#: Where kr8s looks for the in-cluster service account.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


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
