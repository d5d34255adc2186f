"""Real local servers for the client tests: an HTTP server you script, a closed port, a server
that accepts and never answers, and a self-signed certificate for TLS.

Servers bind 127.0.0.1 on a free port and run in a thread: real sockets, real servers.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@dataclass
class Recorded:
    """One request as the server saw it (body as received on the wire, not decompressed)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# A handler returns (status, headers, body).
Answer = tuple[int, dict[str, str], bytes]
Handler = Callable[[Recorded], Answer]


@dataclass
class LocalHTTPServer:
    url: str
    port: int
    requests: list[Recorded] = field(default_factory=list)
    handler: Handler = lambda r: (200, {}, b"")


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A real HTTP/1.1 server; set ``.handler``; ``.requests`` records what arrived."""
    state = LocalHTTPServer(url="", port=0)

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            rec = Recorded(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            state.requests.append(rec)
            status, headers, payload = state.handler(rec)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_HEAD = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    state.url = f"http://127.0.0.1:{state.port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port() -> int:
    """A port that was free a moment ago and has nothing listening: connection refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A listening socket that never accepts: connects succeed (kernel backlog), no answer."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@dataclass(frozen=True)
class SelfSigned:
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    """A self-signed certificate for 127.0.0.1 (its own CA), written to PEM files."""
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
    folder = tmp_path_factory.mktemp("tls")
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


@pytest.fixture
def https_server(http_server: LocalHTTPServer, self_signed: SelfSigned) -> Iterator[str]:
    """A TLS front (self-signed) relaying to ``http_server``'s handler; yields the https URL.

    Implemented as a second server on its own port wrapping its socket in TLS.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(self_signed.cert, self_signed.key)

    class _TLSHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            rec = Recorded("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, b"")
            http_server.requests.append(rec)
            status, headers, payload = http_server.handler(rec)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class _TLSServer(ThreadingHTTPServer):
        def get_request(self) -> tuple[socket.socket, object]:
            conn, addr = super().get_request()
            try:
                return ctx.wrap_socket(conn, server_side=True), addr
            except (ssl.SSLError, OSError):
                conn.close()
                raise

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # failed handshakes are what some tests provoke

    server = _TLSServer(("127.0.0.1", 0), _TLSHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
