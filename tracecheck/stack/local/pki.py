"""The local kube-apiserver's PKI, token file and kubeconfig (generated with ``cryptography``).

Generated once under ``<state>/pki`` and reused (a running apiserver keeps using them); a missing
file, or a CA or serving certificate that expires within a week, regenerates the whole set.
Private keys and tokens are written mode 0600 and never printed.

Identities (kubeconfig contexts):

=============  =================================  ==========================================
context        credential                         authorization
=============  =================================  ==========================================
privileged     client cert CN=tracecheck-admin,   group system:masters: everything; a
               O=system:masters                   sampled ``traceparent`` is honoured
viewer         client cert CN=tracecheck-viewer   ClusterRoleBinding to the built-in ``view``
monitoring     bearer token (token file)          group system:monitoring: /metrics,
                                                  /readyz...; ``traceparent`` honoured
=============  =================================  ==========================================

The cluster's components have their own client certificates and kubeconfigs
(``<pki>/<component>.kubeconfig``), each with the least privilege that does its job:
kube-controller-manager is ``system:kube-controller-manager`` and kube-scheduler is
``system:kube-scheduler`` (the apiserver's bootstrap RBAC policy grants both), kwok is
``kwok-controller`` (bound by ``up`` to kwok's own ClusterRole). Each also serves TLS on
127.0.0.1 with a certificate from the same CA, so its health endpoint and the apiserver's
connections to kwok's kubelet port are verified.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "ADMIN_USER",
    "COMPONENT_USERS",
    "KWOK_USER",
    "MONITORING_GROUP",
    "MONITORING_USER",
    "SERVICE_IP",
    "VIEWER_USER",
    "Pki",
    "component_kubeconfig_text",
    "ensure_pki",
    "kubeconfig_text",
    "write_private",
]

ADMIN_USER = "tracecheck-admin"
VIEWER_USER = "tracecheck-viewer"
MONITORING_USER = "tracecheck-monitoring"
MONITORING_GROUP = "system:monitoring"
KWOK_USER = "kwok-controller"
# Cluster components: client certificate subject (CN) per component; each also gets a serving
# certificate for 127.0.0.1.
COMPONENT_USERS = {
    "kube-controller-manager": "system:kube-controller-manager",
    "kube-scheduler": "system:kube-scheduler",
    "kwok": KWOK_USER,
}
# --service-cluster-ip-range=10.0.0.0/24: the apiserver's own Service gets the first IP, and the
# serving certificate must name it (as kubeadm's does).
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
_VALIDITY = dt.timedelta(days=365)
_RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Pki:
    """Paths of the generated credentials (all under one directory)."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def viewer_cert(self) -> Path:
        return self.dir / "viewer.crt"

    @property
    def viewer_key(self) -> Path:
        return self.dir / "viewer.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    @property
    def token_file(self) -> Path:
        """``--token-auth-file`` CSV: ``token,user,uid,"groups"``."""
        return self.dir / "tokens.csv"

    @property
    def monitoring_token(self) -> Path:
        """The system:monitoring bearer token alone (Prometheus ``credentials_file``)."""
        return self.dir / "monitoring.token"

    def client_cert(self, component: str) -> Path:
        """Client certificate of a cluster component (:data:`COMPONENT_USERS`)."""
        return self.dir / f"{component}-client.crt"

    def client_key(self, component: str) -> Path:
        return self.dir / f"{component}-client.key"

    def component_serving_cert(self, component: str) -> Path:
        """Serving certificate of a cluster component (127.0.0.1, localhost)."""
        return self.dir / f"{component}-serving.crt"

    def component_serving_key(self, component: str) -> Path:
        return self.dir / f"{component}-serving.key"

    def kubeconfig(self, component: str) -> Path:
        """The component's kubeconfig (its client certificate, embedded)."""
        return self.dir / f"{component}.kubeconfig"

    def files(self) -> tuple[Path, ...]:
        components = tuple(
            path
            for c in COMPONENT_USERS
            for path in (
                self.client_cert(c),
                self.client_key(c),
                self.component_serving_cert(c),
                self.component_serving_key(c),
            )
        )
        return (
            *components,
            self.ca_cert,
            self.ca_key,
            self.serving_cert,
            self.serving_key,
            self.admin_cert,
            self.admin_key,
            self.viewer_cert,
            self.viewer_key,
            self.sa_key,
            self.sa_pub,
            self.token_file,
            self.monitoring_token,
        )


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> None:
    """Write ``data`` atomically (temp file + rename), created with ``mode`` from the start."""
    if isinstance(data, str):
        data = data.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_pki(directory: Path, *, now: dt.datetime | None = None) -> tuple[Pki, bool]:
    """Create the credentials under ``directory`` unless a complete, valid set exists.

    Returns the paths and whether anything was (re)generated.
    """
    pki = Pki(directory)
    now = now or dt.datetime.now(dt.UTC)
    if _complete_and_valid(pki, now):
        return pki, False
    _generate(pki, now)
    return pki, True


def _complete_and_valid(pki: Pki, now: dt.datetime) -> bool:
    from cryptography import x509

    if not all(p.is_file() for p in pki.files()):
        return False
    try:
        certs = [pki.ca_cert, pki.serving_cert, pki.admin_cert, pki.viewer_cert]
        for c in COMPONENT_USERS:
            certs += [pki.client_cert(c), pki.component_serving_cert(c)]
        for path in certs:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            if cert.not_valid_after_utc - now < _RENEW_BEFORE:
                return False
    except ValueError:
        return False
    return True


def _key() -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    attrs = []
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    ca: bool = False,
    server: bool = False,
    client: bool = False,
    local_only: bool = False,
) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # An hour back: tolerate small clock differences between the tools that verify it.
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if not ca:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if server:
        # The apiserver answers to its Service names too; the other components only on loopback.
        names = ("localhost",) if local_only else _DNS_NAMES
        ips = ("127.0.0.1",) if local_only else ("127.0.0.1", SERVICE_IP)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _generate(pki: Pki, now: dt.datetime) -> None:
    from cryptography.hazmat.primitives import serialization

    pki.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.dir, 0o700)
    ca_key = _key()
    ca_name = _name("tracecheck-local-ca")
    ca = _issue(ca_name, ca_key, issuer=ca_name, issuer_key=ca_key, now=now, ca=True)
    leaves = [
        (pki.serving_cert, pki.serving_key, _name("kube-apiserver"), True, False),
        (pki.admin_cert, pki.admin_key, _name(ADMIN_USER, "system:masters"), False, True),
        (pki.viewer_cert, pki.viewer_key, _name(VIEWER_USER), False, True),
    ]
    for component, user in COMPONENT_USERS.items():
        leaves += [
            (pki.client_cert(component), pki.client_key(component), _name(user), False, True),
            (
                pki.component_serving_cert(component),
                pki.component_serving_key(component),
                _name(component),
                True,
                False,
            ),
        ]
    write_private(pki.ca_key, _key_pem(ca_key))
    write_private(pki.ca_cert, _cert_pem(ca), 0o644)
    for cert_path, key_path, subject, server, client in leaves:
        key = _key()
        cert = _issue(
            subject,
            key,
            issuer=ca_name,
            issuer_key=ca_key,
            now=now,
            server=server,
            client=client,
            local_only=server and cert_path != pki.serving_cert,
        )
        write_private(key_path, _key_pem(key))
        write_private(cert_path, _cert_pem(cert), 0o644)
    sa_key = _key()
    write_private(pki.sa_key, _key_pem(sa_key))
    write_private(
        pki.sa_pub,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    token = secrets.token_urlsafe(32)
    write_private(pki.monitoring_token, token)
    # Static token file format (Kubernetes "Authenticating", static token file):
    # token,user,uid,"group1,group2"
    write_private(
        pki.token_file, f'{token},{MONITORING_USER},{MONITORING_USER},"{MONITORING_GROUP}"\n'
    )


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_text(pki: Pki, server: str) -> str:
    """A kubeconfig with contexts ``privileged`` (current), ``viewer`` and ``monitoring``.

    Credentials are embedded (``*-data``), so the file alone is enough; it must be mode 0600.
    """
    token = pki.monitoring_token.read_text().strip()
    users: list[dict[str, Any]] = [
        {
            "name": "privileged",
            "user": {
                "client-certificate-data": _b64(pki.admin_cert),
                "client-key-data": _b64(pki.admin_key),
            },
        },
        {
            "name": "viewer",
            "user": {
                "client-certificate-data": _b64(pki.viewer_cert),
                "client-key-data": _b64(pki.viewer_key),
            },
        },
        {"name": "monitoring", "user": {"token": token}},
    ]
    return _kubeconfig(pki, server, users, "privileged")


def component_kubeconfig_text(pki: Pki, server: str, component: str) -> str:
    """A kubeconfig for cluster component ``component`` with its own client certificate."""
    user = {
        "client-certificate-data": _b64(pki.client_cert(component)),
        "client-key-data": _b64(pki.client_key(component)),
    }
    return _kubeconfig(pki, server, [{"name": component, "user": user}], component)


def _kubeconfig(pki: Pki, server: str, users: list[dict[str, Any]], current: str) -> str:
    """One cluster (the local apiserver, the local CA) and a context per user, named like it."""
    import yaml

    cluster = "tracecheck-local"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_cert)},
            }
        ],
        "users": users,
        "contexts": [
            {"name": u["name"], "context": {"cluster": cluster, "user": u["name"]}} for u in users
        ],
        "current-context": current,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)
