"""The shared HTTP plumbing: error translation against real sockets and servers.

Each bad-input case of issue 3 asserts the exception class and the exact one-line message,
and that no configured credential leaks into it.
"""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from servers import Recorded, SelfSigned, TestServer

from tracecheck.backends._http import Endpoint, HTTPBackend, is_transient
from tracecheck.errors import (
    AuthError,
    ConfigError,
    ExitCode,
    HTTPStatusError,
    ProtocolError,
    Unreachable,
)

SECRET = "s3cr3t-token-value-42"
HEADERS = (("Authorization", f"Bearer {SECRET}"),)


def backend(url: str, **kw: object) -> HTTPBackend:
    return HTTPBackend(Endpoint("tempo", url, headers=HEADERS, **kw))  # type: ignore[arg-type]


def assert_clean(exc: BaseException) -> None:
    text = str(exc)
    assert SECRET not in text
    assert "Bearer" not in text
    assert "\n" not in text


# -- configuration errors: before any request ------------------------------------------------


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("http//localhost:3200", "malformed URL: expected http(s)://host[:port][/path]"),
        ("ftp://localhost:3200", "malformed URL: expected http(s)://host[:port][/path]"),
        ("http://", "malformed URL: expected http(s)://host[:port][/path]"),
        ("http://local host:3200", "malformed URL: expected http(s)://host[:port][/path]"),
        ("http://localhost:99999", "malformed URL: Port out of range 0-65535"),
        (
            "http://localhost:port",
            "malformed URL: Port could not be cast to integer value as 'port'",
        ),
    ],
)
def test_malformed_url_is_a_config_error_before_any_request(url: str, cause: str) -> None:
    with pytest.raises(ConfigError) as info:
        backend(url)
    assert str(info.value) == f"tempo at {url}: {cause}"
    assert info.value.exit_code == ExitCode.CONFIG


def test_malformed_url_message_drops_userinfo() -> None:
    with pytest.raises(ConfigError) as info:
        backend("http://admin:hunter2@localhost:notaport")
    assert "hunter2" not in str(info.value)
    assert str(info.value).startswith("tempo at http://localhost:notaport: malformed URL")


def test_header_value_with_newline_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as info:
        HTTPBackend(Endpoint("tempo", "http://localhost:1", headers=(("X-Key", "ab\ncd"),)))
    assert (
        str(info.value) == "tempo at http://localhost:1: header X-Key: value has invalid characters"
    )


def test_missing_ca_file_names_the_file(tmp_path: object) -> None:
    with pytest.raises(ConfigError) as info:
        backend("https://localhost:1", ca_file="/nonexistent/ca.pem")
    assert (
        str(info.value)
        == "tempo at /nonexistent/ca.pem: cannot load CA file: No such file or directory"
    )


# -- transport failures ---------------------------------------------------------------------


def test_closed_port_is_unreachable_connection_refused(free_port: int) -> None:
    with backend(f"http://127.0.0.1:{free_port}") as b, pytest.raises(Unreachable) as info:
        b.request("GET", "/ready")
    assert str(info.value) == f"tempo at http://127.0.0.1:{free_port}/ready: connection refused"
    assert info.value.exit_code == ExitCode.BACKEND
    assert is_transient(info.value)
    assert_clean(info.value)


def test_tls_against_a_plaintext_port(http_server: TestServer) -> None:
    url = f"https://127.0.0.1:{http_server.port}"
    with backend(url) as b, pytest.raises(Unreachable) as info:
        b.request("GET", "/api/echo")
    assert str(info.value) == (
        f"tempo at {url}/api/echo: TLS handshake failed (is this a plaintext HTTP port?)"
    )
    assert not is_transient(info.value)
    assert_clean(info.value)


def test_self_signed_certificate_is_refused_then_trusted(
    https_server: TestServer, self_signed: SelfSigned
) -> None:
    https_server.handler = lambda r: (200, {}, b"echo\n")
    url = https_server.url
    with backend(url) as b, pytest.raises(Unreachable) as info:
        b.request("GET", "/api/echo")
    assert str(info.value).startswith(
        f"tempo at {url}/api/echo: TLS certificate verification failed: "
    )
    assert "self-signed" in str(info.value) or "self signed" in str(info.value)
    with backend(url, ca_file=str(self_signed.cert)) as b:
        assert b.request("GET", "/api/echo").text == "echo\n"
    with backend(url, insecure_skip_verify=True) as b:
        assert b.request("GET", "/api/echo").status == 200
    # The credential went over TLS to the server, as configured.
    assert https_server.requests[-1].headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.timeout(20)
def test_server_that_accepts_and_stalls_times_out(stalled_port: int) -> None:
    with (
        backend(f"http://127.0.0.1:{stalled_port}", timeout=30.0) as b,
        pytest.raises(Unreachable) as info,
    ):
        b.request("GET", "/api/search", timeout=0.3)
    assert (
        str(info.value)
        == f"tempo at http://127.0.0.1:{stalled_port}/api/search: no answer within 0.3 s"
    )
    assert is_transient(info.value)


def test_https_urls_on_a_plain_endpoint_are_verified_like_any_other(
    https_server: TestServer,
) -> None:
    """A plain-HTTP endpoint fills its TLS context on the first https:// request (the collector's
    health URL may be https while its OTLP URL is not): verification is on, as everywhere."""
    https_server.handler = lambda r: (200, {}, b"ok")
    with backend("http://127.0.0.1:9") as b, pytest.raises(Unreachable) as info:
        b.request("GET", f"{https_server.url}/health")
    assert "TLS certificate verification failed" in str(info.value)
    with backend("http://127.0.0.1:9", insecure_skip_verify=True) as b:
        assert b.request("GET", f"{https_server.url}/health").text == "ok"
        assert b.request("GET", f"{https_server.url}/health").text == "ok"  # filled once
    assert len(https_server.requests) == 2


def test_zero_time_left_sends_nothing(http_server: TestServer) -> None:
    with backend(http_server.url) as b, pytest.raises(Unreachable) as info:
        b.request("GET", "/ready", timeout=0.0)
    assert info.value.cause == "deadline passed before the request was sent"
    assert http_server.requests == []


@pytest.fixture
def hangup_port() -> Iterator[int]:
    """Accepts connections and closes them at once, without a response."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    threading.Thread(target=loop, daemon=True).start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        sock.close()


def test_connection_closed_without_answer_is_a_protocol_error(hangup_port: int) -> None:
    with backend(f"http://127.0.0.1:{hangup_port}") as b, pytest.raises(ProtocolError) as info:
        b.request("GET", "/status/buildinfo")
    assert str(info.value) == (
        f"tempo at http://127.0.0.1:{hangup_port}/status/buildinfo: connection closed without a "
        "complete answer (Server disconnected without sending a response.)"
    )


def test_dns_failure_names_the_host() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc

    b = HTTPBackend(
        Endpoint("prometheus", "http://nonexistent.invalid:9090"),
        transport=httpx.MockTransport(fail),
    )
    with b, pytest.raises(Unreachable) as info:
        b.request("GET", "/-/ready")
    assert str(info.value) == (
        "prometheus at http://nonexistent.invalid:9090/-/ready: "
        "cannot resolve host 'nonexistent.invalid'"
    )


# -- HTTP statuses ----------------------------------------------------------------------------


def test_401_is_auth_error_and_an_echoed_credential_is_scrubbed(
    http_server: TestServer,
) -> None:
    # A careless proxy echoes the Authorization header in its error page.
    def handler(r: Recorded) -> tuple[int, dict[str, str], bytes]:
        return 401, {}, f"no org id; got {r.headers['authorization']}\n".encode()

    http_server.handler = handler
    with backend(http_server.url) as b, pytest.raises(AuthError) as info:
        b.request("GET", "/api/search")
    assert str(info.value) == (
        f"tempo at {http_server.url}/api/search: HTTP 401: no org id; got *** "
        "(credentials missing or refused)"
    )
    assert_clean(info.value)
    assert info.value.exit_code == ExitCode.BACKEND


def test_a_credential_cut_by_the_excerpt_is_still_scrubbed(http_server: TestServer) -> None:
    # The excerpt keeps 200 characters: scrubbing after the cut would leave the token's head.
    http_server.handler = lambda r: (500, {}, ("x" * 190 + " " + SECRET).encode())
    with backend(http_server.url) as b, pytest.raises(HTTPStatusError) as info:
        b.request("GET", "/api/search")
    assert str(info.value) == f"tempo at {http_server.url}/api/search: HTTP 500: {'x' * 190} ***"
    assert SECRET[:6] not in str(info.value)


def test_garbage_json_excerpt_is_scrubbed_before_the_cut(http_server: TestServer) -> None:
    http_server.handler = lambda r: (200, {}, ("<html>" + "y" * 110 + " " + SECRET).encode())
    with backend(http_server.url) as b, pytest.raises(ProtocolError) as info:
        b.get_json("/api/status/buildinfo")
    assert SECRET[:6] not in str(info.value)
    assert str(info.value).endswith("y ***")


def test_a_url_password_and_its_basic_credential_are_scrubbed(http_server: TestServer) -> None:
    # httpx turns the URL's userinfo into "Authorization: Basic ..."; a proxy echoes both.
    def handler(r: Recorded) -> tuple[int, dict[str, str], bytes]:
        return 401, {}, f"denied: {r.headers['authorization']} for admin:hunter2-pass".encode()

    http_server.handler = handler
    url = http_server.url.replace("http://", "http://admin:hunter2-pass@")
    with HTTPBackend(Endpoint("prometheus", url)) as b, pytest.raises(AuthError) as info:
        b.request("GET", "/api/v1/query")
    assert str(info.value) == (
        f"prometheus at {http_server.url}/api/v1/query: HTTP 401: denied: *** for admin:*** "
        "(credentials missing or refused)"
    )
    assert http_server.requests[0].headers["authorization"].startswith("Basic ")


def test_403_is_auth_error(http_server: TestServer) -> None:
    http_server.handler = lambda r: (403, {}, b"forbidden")
    with backend(http_server.url) as b, pytest.raises(AuthError) as info:
        b.request("GET", "/api/search")
    assert info.value.cause == "HTTP 403: forbidden (not allowed)"


def test_404_and_500_are_status_errors_with_one_line_excerpts(http_server: TestServer) -> None:
    http_server.handler = lambda r: (
        (404, {}, b"404 page not found\n")
        if r.path == "/missing"
        else (500, {}, b"internal error:\n  too many\n\tblocks\n")
    )
    with backend(http_server.url) as b:
        with pytest.raises(HTTPStatusError) as info:
            b.request("GET", "/missing")
        assert info.value.status == 404
        assert (
            str(info.value) == f"tempo at {http_server.url}/missing: HTTP 404: 404 page not found"
        )
        with pytest.raises(HTTPStatusError) as info:
            b.request("GET", "/api/search", params={"q": "{}"})
        assert info.value.status == 500
        # The query string is dropped from the address (it may carry tokens).
        assert str(info.value) == (
            f"tempo at {http_server.url}/api/search: HTTP 500: internal error: too many blocks"
        )


def test_expected_statuses_are_returned_not_raised(http_server: TestServer) -> None:
    http_server.handler = lambda r: (503, {"X-Why": "starting"}, b"Ingester not ready\n")
    with backend(http_server.url) as b:
        reply = b.request("GET", "/ready", expect=(200, 503))
    assert (reply.status, reply.text, reply.headers["x-why"]) == (
        503,
        "Ingester not ready\n",
        "starting",
    )


def test_garbage_json_is_a_protocol_error(http_server: TestServer) -> None:
    http_server.handler = lambda r: (
        200,
        {"Content-Type": "application/json"},
        b"<html>oops</html>",
    )
    with backend(http_server.url) as b, pytest.raises(ProtocolError) as info:
        b.get_json("/api/status/buildinfo")
    assert str(info.value) == (
        f"tempo at {http_server.url}/api/status/buildinfo: invalid JSON "
        "(Expecting value at position 0): <html>oops</html>"
    )


def test_response_over_the_cap_is_refused(http_server: TestServer) -> None:
    http_server.handler = lambda r: (200, {}, b"x" * 5000)
    with (
        backend(http_server.url, max_response_bytes=1024) as b,
        pytest.raises(ProtocolError) as info,
    ):
        b.request("GET", "/big")
    assert info.value.cause == "response larger than 1024 bytes"


def test_cap_applies_to_decompressed_bytes_without_content_length() -> None:
    bomb = gzip.compress(b"0" * 100_000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=iter([bomb]))

    b = HTTPBackend(
        Endpoint("tempo", "http://tempo:3200", max_response_bytes=10_000),
        transport=httpx.MockTransport(handler),
    )
    with b, pytest.raises(ProtocolError, match="response larger than 10000 bytes"):
        b.request("GET", "/api/search")


def test_gzip_answers_are_decoded(http_server: TestServer) -> None:
    http_server.handler = lambda r: (
        200,
        {"Content-Encoding": "gzip", "Content-Type": "application/json"},
        gzip.compress(b'{"version": "2.9.0"}'),
    )
    with backend(http_server.url) as b:
        assert b.get_json("/api/status/buildinfo") == {"version": "2.9.0"}


# -- what is sent ------------------------------------------------------------------------------


def test_headers_tenant_and_path_prefix(http_server: TestServer) -> None:
    http_server.handler = lambda r: (200, {}, b"ok")
    endpoint = Endpoint(
        "tempo",
        http_server.url + "/tempo",
        headers=(("Authorization", f"Bearer {SECRET}"), ("X-Scope-OrgID", "overridden")),
        tenant="team-a",
    )
    with HTTPBackend(endpoint) as b:
        assert b.address == http_server.url + "/tempo"
        b.request("GET", "/api/echo", params={"q": "{ }"})
    (req,) = http_server.requests
    assert req.path == "/tempo/api/echo?q=%7B+%7D"
    assert req.headers["authorization"] == f"Bearer {SECRET}"
    assert req.headers["x-scope-orgid"] == "team-a"


def test_exposition_errors_name_the_line(http_server: TestServer) -> None:
    http_server.handler = lambda r: (200, {}, b"# TYPE a counter\na 1\nb{ 2\n")
    with backend(http_server.url) as b, pytest.raises(ProtocolError) as info:
        b.get_exposition("/metrics")
    assert str(info.value) == (
        f"tempo at {http_server.url}/metrics: malformed metrics exposition: "
        "line 3, column 4: expected a metric or label name"
    )


def test_exposition_is_parsed(http_server: TestServer) -> None:
    http_server.handler = lambda r: (200, {}, b'tempo_receiver_accepted_spans{receiver="otlp"} 5\n')
    with backend(http_server.url) as b:
        exp = b.get_exposition("/metrics")
    assert exp.sum("tempo_receiver_accepted_spans") == 5.0
    assert http_server.requests[0].headers["accept"] == "text/plain"


# -- the same bad inputs through the Tempo and Prometheus clients ------------------------------


def _tempo(url: str, **kw: Any) -> Any:
    from tracecheck.backends.tempo import TempoClient
    from tracecheck.config import TempoSettings

    client = TempoClient(TempoSettings(url=url, headers=HEADERS, **kw))
    return client, client.buildinfo, "/api/status/buildinfo"


def _prometheus(url: str, **kw: Any) -> Any:
    from tracecheck.backends.prometheus import PrometheusClient
    from tracecheck.config import PrometheusSettings

    client = PrometheusClient(PrometheusSettings(url=url, headers=HEADERS, **kw))
    return client, lambda **k: client.query("up", **k), "/api/v1/query"


CLIENTS = pytest.mark.parametrize(
    ("system", "make"), [("tempo", _tempo), ("prometheus", _prometheus)]
)


@CLIENTS
def test_client_malformed_url(system: str, make: Any) -> None:
    with pytest.raises(ConfigError) as info:
        make("http://localhost:3200:80")
    assert str(info.value) == (
        f"{system} at http://localhost:3200:80: malformed URL: "
        "Port could not be cast to integer value as '3200:80'"
    )


@CLIENTS
def test_client_closed_port(system: str, make: Any, free_port: int) -> None:
    client, call, path = make(f"http://127.0.0.1:{free_port}")
    with client, pytest.raises(Unreachable) as info:
        call()
    assert str(info.value) == f"{system} at http://127.0.0.1:{free_port}{path}: connection refused"


@CLIENTS
def test_client_tls_against_plaintext(system: str, make: Any, http_server: TestServer) -> None:
    url = f"https://127.0.0.1:{http_server.port}"
    client, call, path = make(url)
    with client, pytest.raises(Unreachable) as info:
        call()
    assert str(info.value) == (
        f"{system} at {url}{path}: TLS handshake failed (is this a plaintext HTTP port?)"
    )


@CLIENTS
@pytest.mark.parametrize(
    ("status", "body", "error", "cause"),
    [
        (
            401,
            b"Unauthorized",
            AuthError,
            "HTTP 401: Unauthorized (credentials missing or refused; sent header Authorization "
            "from {system}.headers)",
        ),
        (404, b"404 page not found\n", HTTPStatusError, "HTTP 404: 404 page not found"),
        (500, b"boom\n", HTTPStatusError, "HTTP 500: boom"),
        (
            200,
            b"<html>portal</html>",
            ProtocolError,
            "invalid JSON (Expecting value at position 0): <html>portal</html>",
        ),
    ],
)
def test_client_http_failures(
    system: str,
    make: Any,
    http_server: TestServer,
    status: int,
    body: bytes,
    error: type[Exception],
    cause: str,
) -> None:
    http_server.handler = lambda r: (status, {"Content-Type": "text/html"}, body)
    client, call, path = make(http_server.url)
    with client, pytest.raises(error) as info:
        call()
    cause = cause.format(system=system)
    assert str(info.value) == f"{system} at {http_server.url}{path}: {cause}"
    assert_clean(info.value)
    assert http_server.requests[0].headers["authorization"] == f"Bearer {SECRET}"


@CLIENTS
@pytest.mark.timeout(20)
def test_client_stalled_server(system: str, make: Any, stalled_port: int) -> None:
    client, call, path = make(f"http://127.0.0.1:{stalled_port}", timeout=30.0)
    with client, pytest.raises(Unreachable) as info:
        call(timeout=0.3)
    assert str(info.value) == (
        f"{system} at http://127.0.0.1:{stalled_port}{path}: no answer within 0.3 s"
    )


def test_retry_after_is_kept_in_seconds_or_as_an_http_date(http_server: TestServer) -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    from tracecheck.backends._http import retry_after

    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    answers = iter([(429, {"Retry-After": "7"}), (503, {"Retry-After": when}), (503, {})])
    http_server.handler = lambda r: (*next(answers), b"busy")
    waits = []
    with backend(http_server.url) as b:
        for _ in range(3):
            with pytest.raises(HTTPStatusError) as info:
                b.request("GET", "/api/search")
            waits.append(retry_after(info.value))
    assert waits[0] == 7.0 and waits[2] is None
    assert waits[1] is not None and 25.0 < waits[1] <= 30.0
