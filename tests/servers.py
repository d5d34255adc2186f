"""Real servers for the tests: the one threaded HTTP/1.1 test server (plain or TLS), free ports,
and a self-signed certificate.

Every client test talks to a real socket: :class:`TestServer` binds 127.0.0.1 on a free port,
serves from a thread, records what arrives and answers what its ``handler`` says. With ``tls``
it wraps each accepted connection in TLS, and records the client certificate's common name
when one was presented (``tls_context(..., client_ca=...)``).
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "Answer",
    "Handler",
    "Recorded",
    "SelfSigned",
    "TestServer",
    "free_port",
    "make_self_signed",
    "tls_context",
]


@dataclass
class Recorded:
    """One request as the server saw it (body as received on the wire, not decompressed)."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    client_cn: str = ""  # common name of the TLS client certificate, if one was presented


# A handler returns (status, headers, body).
Answer = tuple[int, dict[str, str], bytes]
Handler = Callable[[Recorded], Answer]


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago; nothing listens there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tls_context(cert: Path, key: Path, *, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server TLS context; with ``client_ca``, client certificates are asked for (optional,
    like kube-apiserver's: a client may authenticate by certificate or by token)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class TestServer:
    """A real HTTP/1.1 server on 127.0.0.1 that a test scripts through :attr:`handler`.

    Use as a context manager (or :meth:`start`/:meth:`stop`). ``requests`` records every
    request in order. Failed TLS handshakes (which some tests provoke) are not errors.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self, handler: Handler | None = None, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.handler: Handler = handler or (lambda rec: (200, {}, b""))
        self.requests: list[Recorded] = []
        self.tls = tls
        self._server = _Server(self)
        self.port: int = self._server.server_address[1]
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        """Answer every request with one response."""
        self.handler = lambda rec: (status, {"Content-Type": content_type}, body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rec = Recorded(
            self.command,
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            body,
            _client_cn(self.connection),
        )
        owner = self.server.owner
        owner.requests.append(rec)
        status, headers, payload = owner.handler(rec)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: TestServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        if self.owner.tls is None:
            return conn, addr
        try:
            return self.owner.tls.wrap_socket(conn, server_side=True), addr
        except (ssl.SSLError, OSError):
            conn.close()
            raise

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up or fails the handshake is the test's business


def _client_cn(conn: Any) -> str:
    peer = conn.getpeercert() if hasattr(conn, "getpeercert") else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


@dataclass(frozen=True)
class SelfSigned:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""

    cert: Path
    key: Path


def make_self_signed(folder: Path) -> SelfSigned:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tracecheck-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return SelfSigned(cert_path, key_path)
