"""The apiserver client: kubeconfig resolution through kr8s, traced raw requests, identity, and
every failure as one line naming the server and the context, never the credential.

The server side is a real TLS server on 127.0.0.1 (a test CA, optional client certificates)
answering like kube-apiserver does: ``Audit-Id`` on every answer, ``kind: Status`` bodies for
errors (k8s.io/apimachinery ``metav1.Status``), ``/readyz`` listing ``[-]check failed`` lines on
500, SelfSubjectReview returning 201 with ``status.userInfo``. The real apiserver is exercised in
tests/pipeline/test_apiserver.py.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import ssl
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers import Answer, Recorded, SelfSigned, TestServer, tls_context

from tracecheck.backends.apiserver import (
    ApiserverClient,
    Credentials,
    ServerVersion,
    TrustMode,
    UserInfo,
    load_credentials,
    resolve_kubeconfig,
    traceparent,
    trust_mode,
)
from tracecheck.config import ApiserverSettings
from tracecheck.errors import AuthError, ConfigError, ExitCode, NotReady, Unreachable

TOKEN = "tok-3xTr4-s3cr3t-value-99"


# -- a TLS server that answers like kube-apiserver -------------------------------------------


Seen = Recorded  # what the fake apiserver saw of one request


@dataclass
class FakeApiserver:
    url: str = ""
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    # path -> (status, json body); default: 200 {}
    routes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    #: Authenticate: returns an error status (401) or None.
    auth: Callable[[Seen], int | None] = lambda s: None


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def client_cert(ca: SelfSigned, folder: Path, cn: str, org: str | None = None) -> tuple[str, str]:
    """A client certificate signed by the test CA; (cert PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert_pem, key_pem


@pytest.fixture
def apiserver(self_signed: SelfSigned) -> Iterator[FakeApiserver]:
    """The shared test server behind TLS, answering as kube-apiserver does: JSON, an Audit-Id on
    every answer, client certificates optional (certificates or tokens)."""
    state = FakeApiserver()

    def answer(rec: Recorded) -> Answer:
        state.seen.append(rec)
        denied = state.auth(rec)
        if denied:
            code, payload = denied, status_body(401, "Unauthorized", "Unauthorized")
        else:
            code, payload = state.routes.get(rec.path.split("?")[0], (200, {}))
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Audit-Id": str(uuid.uuid4()), "Content-Type": "application/json"}
        return code, headers, data

    tls = tls_context(self_signed.cert, self_signed.key, client_ca=self_signed.cert)
    with TestServer(answer, tls=tls) as server:
        state.url, state.port = server.url, server.port
        yield state


def kubeconfig(
    path: Path,
    server: str,
    ca: SelfSigned | None,
    users: dict[str, dict[str, Any]],
    current: str | None = None,
) -> Path:
    cluster: dict[str, Any] = {"server": server}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca.cert.read_bytes()).decode()
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [{"name": n, "context": {"cluster": "c", "user": n}} for n in users],
    }
    if current is not None:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point tempfile (and so kr8s's NamedTemporaryFile) at an empty directory of our own."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def assert_clean(exc: BaseException, *secrets: str) -> None:
    text = str(exc)
    assert "\n" not in text
    for secret in (TOKEN, *secrets):
        assert secret not in text


# -- resolve_kubeconfig ------------------------------------------------------------------------


def test_resolve_kubeconfig_precedence(tmp_path: Path) -> None:
    local = tmp_path / "local-kubeconfig"
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    env = {"HOME": str(home)}
    # Nothing exists: the in-cluster service account.
    assert resolve_kubeconfig("", env, local) is None
    (home / ".kube" / "config").write_text("{}")
    assert resolve_kubeconfig("", env, local) == str(home / ".kube" / "config")
    local.write_text("{}")
    assert resolve_kubeconfig("", env, local) == str(local)
    assert resolve_kubeconfig("", {**env, "KUBECONFIG": "/a:/b"}, local) == "/a:/b"
    assert resolve_kubeconfig("", {**env, "KUBECONFIG": ""}, local) == str(local)
    assert resolve_kubeconfig("/explicit", {**env, "KUBECONFIG": "/a"}, local) == "/explicit"
    assert resolve_kubeconfig("", env, None) == str(home / ".kube" / "config")


# -- load_credentials --------------------------------------------------------------------------


def test_token_credentials_and_their_repr(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    path = kubeconfig(tmp_path / "kc", apiserver.url, self_signed, {"ops": {"token": TOKEN}}, "ops")
    creds = load_credentials(str(path))
    assert (creds.server, creds.context, creds.method) == (apiserver.url, "ops", "bearer token")
    assert creds.token == TOKEN
    assert TOKEN not in repr(creds)
    proxied = Credentials(
        apiserver.url, "ops", "", "bearer token", proxy="http://u:pw-9x@proxy:3128"
    )
    assert "pw-9x" not in repr(proxied)
    assert creds.where == f"{apiserver.url} (context ops)"
    # kr8s wrote the CA data to a temporary file; it is gone once the SSL context exists.
    assert list(private_tmp.iterdir()) == []
    with ApiserverClient(creds) as api:
        reply = api.send("GET", "/version")
    assert reply.status == 200
    assert apiserver.seen[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_client_certificate_data_reaches_the_server_and_no_key_is_left_behind(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    cert, key = client_cert(self_signed, tmp_path, "tracecheck-admin", "system:masters")
    user = {
        "client-certificate-data": base64.b64encode(cert.encode()).decode(),
        "client-key-data": base64.b64encode(key.encode()).decode(),
    }
    path = kubeconfig(tmp_path / "kc", apiserver.url, self_signed, {"admin": user}, "admin")
    creds = load_credentials(str(path), "admin")
    assert creds.method == "client certificate" and creds.token == ""
    assert list(private_tmp.iterdir()) == []  # the private key did not stay in /tmp
    with ApiserverClient(creds) as api:
        api.send("GET", "/readyz")
    assert apiserver.seen[-1].client_cn == "tracecheck-admin"
    assert "authorization" not in apiserver.seen[-1].headers


def test_client_certificate_files_are_read_relative_to_the_kubeconfig(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    cert, key = client_cert(self_signed, tmp_path, "file-user")
    (tmp_path / "user.crt").write_text(cert)
    (tmp_path / "user.key").write_text(key)
    user = {"client-certificate": "user.crt", "client-key": "user.key"}
    path = kubeconfig(tmp_path / "kc", apiserver.url, self_signed, {"u": user}, "u")
    with ApiserverClient(load_credentials(str(path))) as api:
        api.send("GET", "/readyz")
    assert apiserver.seen[-1].client_cn == "file-user"
    # The declared files are the user's: never deleted.
    assert (tmp_path / "user.key").is_file() and (tmp_path / "user.crt").is_file()


def exec_plugin(folder: Path, body: str) -> Path:
    script = folder / "plugin.sh"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_exec_plugin_token(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    cred = json.dumps(
        {
            "apiVersion": "client.authentication.k8s.io/v1",
            "kind": "ExecCredential",
            "status": {"token": TOKEN},
        }
    )
    script = exec_plugin(tmp_path, f"echo '{cred}'\n")
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(script),
            "interactiveMode": "Never",
        }
    }
    path = kubeconfig(tmp_path / "kc", apiserver.url, self_signed, {"sso": user}, "sso")
    creds = load_credentials(str(path))
    assert creds.method == "exec plugin plugin.sh (bearer token)"
    assert creds.renewable
    with ApiserverClient(creds) as api:
        api.send("GET", "/version")
    assert apiserver.seen[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_failing_exec_plugin_is_a_config_error(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned
) -> None:
    script = exec_plugin(tmp_path, "echo 'error: not logged in, run sso login' >&2\nexit 3\n")
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(script)}}
    path = kubeconfig(tmp_path / "kc", apiserver.url, self_signed, {"sso": user}, "sso")
    with pytest.raises(ConfigError) as err:
        load_credentials(str(path))
    assert err.value.exit_code == ExitCode.CONFIG
    assert str(err.value) == (
        f"apiserver at {path} (context sso): exec credential plugin process exited with "
        "non-zero code 3: error: not logged in, run sso login"
    )


def test_unknown_context_lists_the_contexts(tmp_path: Path, self_signed: SelfSigned) -> None:
    users = {"privileged": {"token": TOKEN}, "viewer": {"token": TOKEN}}
    path = kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", self_signed, users, "viewer")
    with pytest.raises(ConfigError) as err:
        load_credentials(str(path), "nosuch")
    assert err.value.exit_code == ExitCode.CONFIG
    assert str(err.value) == (
        f"apiserver at {path}: unknown context 'nosuch'; contexts: privileged, viewer"
    )
    assert_clean(err.value)


def test_without_current_context_the_first_context_is_used(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    users = {"first": {"token": TOKEN}, "second": {"token": "other-token-value"}}
    path = kubeconfig(tmp_path / "kc", apiserver.url, self_signed, users)
    assert load_credentials(str(path)).context == "first"


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        (None, "kubeconfig not found (or empty)"),
        ("", "kubeconfig not found (or empty)"),
        ("clusters: [a\n", "not a valid kubeconfig: bad YAML (line 2)"),
        ("- just\n- a list\n", "not a valid kubeconfig: not a YAML mapping"),
        ("apiVersion: v1\nkind: Config\n", "the kubeconfig has no contexts"),
    ],
)
def test_unusable_kubeconfig_files(tmp_path: Path, content: str | None, cause: str) -> None:
    path = tmp_path / "kc"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_credentials(str(path))
    assert str(err.value) == f"apiserver at {path}: {cause}"


def test_a_kubeconfig_list_skips_missing_files(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    real = kubeconfig(tmp_path / "kc", apiserver.url, self_signed, {"a": {"token": TOKEN}}, "a")
    creds = load_credentials(f"{tmp_path / 'missing'}:{real}")
    assert creds.context == "a" and creds.server == apiserver.url


def test_bad_certificate_data_is_a_config_error(
    tmp_path: Path, self_signed: SelfSigned, private_tmp: Path
) -> None:
    user = {
        "client-certificate-data": base64.b64encode(b"not a certificate").decode(),
        "client-key-data": base64.b64encode(b"not a key either").decode(),
    }
    path = kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", self_signed, {"u": user}, "u")
    with pytest.raises(ConfigError) as err:
        load_credentials(str(path))
    text = str(err.value)
    assert text.startswith(f"apiserver at {path} (context u): cannot load the client certificate")
    assert "not a key either" not in text
    assert list(private_tmp.iterdir()) == []


def test_in_cluster_service_account(
    tmp_path: Path,
    apiserver: FakeApiserver,
    self_signed: SelfSigned,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(TOKEN)
    (sa / "ca.crt").write_bytes(self_signed.cert.read_bytes())
    (sa / "namespace").write_text("monitoring")
    # kr8s reads the service's address from the environment, as client-go does.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(apiserver.port))
    creds = load_credentials(None, service_account_dir=str(sa))
    assert (creds.server, creds.context, creds.method) == (
        apiserver.url,
        "in-cluster",
        "service account",
    )
    with ApiserverClient(creds) as api:
        api.send("GET", "/version")
    assert apiserver.seen[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_no_kubeconfig_and_no_service_account(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_credentials(None, service_account_dir=str(tmp_path / "none"))
    assert err.value.exit_code == ExitCode.CONFIG
    assert "no kubeconfig found" in str(err.value) and "--skip apiserver" in str(err.value)


# -- requests and errors ------------------------------------------------------------------------


def token_client(server: FakeApiserver, self_signed: SelfSigned, tmp_path: Path) -> ApiserverClient:
    path = kubeconfig(tmp_path / "kc", server.url, self_signed, {"viewer": {"token": TOKEN}})
    return ApiserverClient(load_credentials(str(path), "viewer"), timeout=5.0)


def test_traceparent_goes_out_and_the_audit_id_comes_back(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    tid, sid = bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), bytes.fromhex("b7ad6b7169203331")
    with token_client(apiserver, self_signed, tmp_path) as api:
        reply = api.send(
            "GET", "/api/v1/namespaces/default/pods?limit=1", traceparent=traceparent(tid, sid)
        )
    seen = apiserver.seen[-1]
    assert seen.path == "/api/v1/namespaces/default/pods?limit=1"
    assert seen.headers["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert seen.headers["user-agent"].startswith("tracecheck/")
    assert reply.status == 200 and reply.ok
    assert str(uuid.UUID(reply.audit_id)) == reply.audit_id
    assert reply.method == "GET" and reply.path == "/api/v1/namespaces/default/pods?limit=1"


def test_traceparent_refuses_zero_ids() -> None:
    assert traceparent(b"\x01" * 16, b"\x02" * 8, sampled=False).endswith("-00")
    with pytest.raises(ValueError, match="trace ID"):
        traceparent(bytes(16), b"\x01" * 8)
    with pytest.raises(ValueError, match="span ID"):
        traceparent(b"\x01" * 16, bytes(8))


def test_401_is_a_clear_authentication_error_without_the_token(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    apiserver.auth = lambda s: 401
    with token_client(apiserver, self_signed, tmp_path) as api, pytest.raises(AuthError) as err:
        api.readyz()
    assert err.value.exit_code == ExitCode.BACKEND
    assert str(err.value) == (
        f"apiserver at {apiserver.url} (context viewer): 401 Unauthorized: the credential was "
        "rejected (bearer token: expired or revoked token?)"
    )
    assert_clean(err.value)


def test_403_names_the_missing_permission_and_send_returns_it_as_data(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    message = (
        'namespaces "default" is forbidden: User "tracecheck-monitoring" cannot get resource '
        '"namespaces" in API group "" in the namespace "default"'
    )
    apiserver.routes["/api/v1/namespaces/default"] = (403, status_body(403, "Forbidden", message))
    with token_client(apiserver, self_signed, tmp_path) as api:
        reply = api.send("GET", "/api/v1/namespaces/default")
        assert (reply.status, reply.message) == (403, message)
        with pytest.raises(AuthError) as err:
            api.request("GET", "/api/v1/namespaces/default")
    assert str(err.value) == (
        f"apiserver at {apiserver.url} (context viewer): 403 Forbidden: GET "
        f"/api/v1/namespaces/default: {message} (the credential lacks this RBAC permission)"
    )


def test_renewable_credentials_are_reloaded_once_after_a_401(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned
) -> None:
    apiserver.auth = lambda s: None if s.headers.get("authorization") == "Bearer fresh" else 401
    old = Credentials(
        server=apiserver.url,
        context="sso",
        kubeconfig="",
        method="exec plugin x (bearer token)",
        token="expired",
        ssl_context=ssl.create_default_context(cafile=str(self_signed.cert)),
        renewable=True,
    )
    fresh = Credentials(
        server=old.server,
        context="sso",
        kubeconfig="",
        method=old.method,
        token="fresh",
        ssl_context=old.ssl_context,
        renewable=True,
    )
    with ApiserverClient(old, reload=lambda: fresh) as api:
        assert api.send("GET", "/version").status == 200
        assert api.credentials.token == "fresh"
    assert [s.headers["authorization"] for s in apiserver.seen] == [
        "Bearer expired",
        "Bearer fresh",
    ]


def test_readyz_not_ready_names_the_failing_checks(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    body = b"[+]ping ok\n[-]etcd failed: reason withheld\n[-]etcd-readiness failed\nreadyz failed"
    apiserver.routes["/readyz"] = (500, body)
    with token_client(apiserver, self_signed, tmp_path) as api, pytest.raises(NotReady) as err:
        api.readyz()
    assert str(err.value) == (
        f"apiserver at {apiserver.url} (context viewer): /readyz HTTP 500: failing checks: etcd, "
        "etcd-readiness"
    )


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"major": "1", "minor": "34", "gitVersion": "v1.34.4", "platform": "linux/amd64"},
            ServerVersion("v1.34.4", 1, 34, "linux/amd64"),
        ),
        (
            {"major": "1", "minor": "32+", "gitVersion": "v1.32.3-eks-4096722"},
            ServerVersion("v1.32.3-eks-4096722", 1, 32),
        ),
        ({"gitVersion": "v1.29.0"}, ServerVersion("v1.29.0", 1, 29)),
    ],
)
def test_version(
    tmp_path: Path,
    apiserver: FakeApiserver,
    self_signed: SelfSigned,
    private_tmp: Path,
    payload: dict[str, str],
    expected: ServerVersion,
) -> None:
    apiserver.routes["/version"] = (200, payload)
    with token_client(apiserver, self_signed, tmp_path) as api:
        assert api.version() == expected


def test_whoami_falls_back_to_v1beta1(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    review = {
        "kind": "SelfSubjectReview",
        "status": {
            "userInfo": {
                "username": "tracecheck-monitoring",
                "uid": "u1",
                "groups": ["system:monitoring", "system:authenticated"],
            }
        },
    }
    apiserver.routes["/apis/authentication.k8s.io/v1/selfsubjectreviews"] = (
        404,
        status_body(404, "NotFound", "the server could not find the requested resource"),
    )
    apiserver.routes["/apis/authentication.k8s.io/v1beta1/selfsubjectreviews"] = (201, review)
    with token_client(apiserver, self_signed, tmp_path) as api:
        user = api.whoami()
    assert user == UserInfo(
        "tracecheck-monitoring", ("system:monitoring", "system:authenticated"), "u1"
    )
    assert user.privileged_groups == ("system:monitoring",)
    posted = [s for s in apiserver.seen if s.method == "POST"]
    assert [json.loads(s.body)["apiVersion"] for s in posted] == [
        "authentication.k8s.io/v1",
        "authentication.k8s.io/v1beta1",
    ]


def test_connection_refused_names_the_apiserver_hop(
    tmp_path: Path, self_signed: SelfSigned, free_port: int, private_tmp: Path
) -> None:
    url = f"https://127.0.0.1:{free_port}"
    path = kubeconfig(tmp_path / "kc", url, self_signed, {"privileged": {"token": TOKEN}})
    with ApiserverClient(load_credentials(str(path))) as api, pytest.raises(Unreachable) as err:
        api.readyz()
    assert err.value.exit_code == ExitCode.BACKEND
    assert str(err.value) == f"apiserver at {url} (context privileged): connection refused"


def test_tls_against_a_plaintext_port_is_one_line(
    tmp_path: Path, self_signed: SelfSigned, http_server: TestServer, private_tmp: Path
) -> None:
    url = f"https://127.0.0.1:{http_server.port}"
    path = kubeconfig(tmp_path / "kc", url, self_signed, {"privileged": {"token": TOKEN}})
    with ApiserverClient(load_credentials(str(path))) as api, pytest.raises(Unreachable) as err:
        api.version()
    assert str(err.value) == (
        f"apiserver at {url} (context privileged): TLS handshake failed: the server answered in "
        "plaintext (is the kubeconfig's https:// URL pointing at a plain HTTP port?)"
    )
    assert_clean(err.value)


def test_untrusted_server_certificate(
    tmp_path: Path, apiserver: FakeApiserver, private_tmp: Path
) -> None:
    path = kubeconfig(tmp_path / "kc", apiserver.url, None, {"privileged": {"token": TOKEN}})
    with ApiserverClient(load_credentials(str(path))) as api, pytest.raises(Unreachable) as err:
        api.version()
    assert "TLS certificate verification failed" in str(err.value)
    assert_clean(err.value)


def test_from_settings_reads_kubeconfig_and_context(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned, private_tmp: Path
) -> None:
    users = {"privileged": {"token": "a-token"}, "monitoring": {"token": TOKEN}}
    path = kubeconfig(tmp_path / "kc", apiserver.url, self_signed, users, "privileged")
    settings = ApiserverSettings(kubeconfig=str(path), context="monitoring", timeout=3.0)
    with ApiserverClient.from_settings(settings) as api:
        assert api.where == f"{apiserver.url} (context monitoring)"
        api.send("GET", "/readyz")
    assert apiserver.seen[-1].headers["authorization"] == f"Bearer {TOKEN}"


def test_a_context_without_any_kubeconfig_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        ApiserverClient.from_settings(ApiserverSettings(context="viewer"), kubeconfig=None)
    assert str(err.value).startswith(
        "apiserver at credentials: --context viewer needs a kubeconfig, and none was found"
    )


# -- trust mode ----------------------------------------------------------------------------------

V134 = ServerVersion("v1.34.4", 1, 34)
V132 = ServerVersion("v1.32.3", 1, 32)
ADMIN = UserInfo("admin", ("system:masters", "system:authenticated"))
MONITOR = UserInfo("prom", ("system:monitoring", "system:authenticated"))
VIEWER = UserInfo("viewer", ("system:authenticated",))


@pytest.mark.parametrize(
    ("user", "version", "mode", "reason"),
    [
        (ADMIN, V134, "parent-child", "user 'admin' is in system:masters, and Kubernetes v1.34.4 "
         ">= 1.33 honours its traceparent"),
        (MONITOR, V134, "parent-child", "user 'prom' is in system:monitoring"),
        (VIEWER, V134, "link", "user 'viewer' (system:authenticated) is in neither system:masters "
         "nor system:monitoring, so Kubernetes v1.34.4 starts its own trace, links ours and "
         "samples it at samplingRatePerMillion"),
        (ADMIN, V132, "link", "Kubernetes v1.32.3 < 1.33 treats every request as from a public "
         "endpoint"),
        (None, V134, "link", "the user's groups are unknown (SelfSubjectReview failed: 403): "
         "assuming the traceparent is not honoured"),
    ],
)  # fmt: skip
def test_trust_mode_says_why(
    user: UserInfo | None, version: ServerVersion, mode: str, reason: str
) -> None:
    got = trust_mode(user, version, "SelfSubjectReview failed: 403")
    assert isinstance(got, TrustMode)
    assert got.mode == mode and got.trusted == (mode == "parent-child")
    assert got.reason.startswith(reason), got.reason


def test_no_credential_file_is_left_in_the_real_tempdir(
    tmp_path: Path, apiserver: FakeApiserver, self_signed: SelfSigned
) -> None:
    real = Path(tempfile.gettempdir())
    before = set(os.listdir(real))
    cert, key = client_cert(self_signed, tmp_path, "u")
    user = {
        "client-certificate-data": base64.b64encode(cert.encode()).decode(),
        "client-key-data": base64.b64encode(key.encode()).decode(),
    }
    path = kubeconfig(tmp_path / "kc", apiserver.url, self_signed, {"u": user}, "u")
    load_credentials(str(path))
    leftover = [n for n in set(os.listdir(real)) - before if (real / n).is_file()]
    # Other processes may create files meanwhile; none of them may hold our key.
    assert not [n for n in leftover if key.encode() in (real / n).read_bytes()]
