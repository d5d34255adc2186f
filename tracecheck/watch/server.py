"""The watch's HTTP endpoint on ``--listen`` (default 127.0.0.1:9464).

=============  ==================================================================================
path           answer
=============  ==================================================================================
/metrics       the metrics (``prometheus_client``'s encoders: text 0.0.4, or OpenMetrics with
               exemplars when the scraper asks for it), from :meth:`WatchMetrics.exposition`
/healthz       200 while the process serves
/ready         200 once a first round has finished, 503 before
/report.json   the last round's report in the smoke JSON schema (``tracecheck/schema/
               report-v1.json``), 503 before the first round
=============  ==================================================================================

A threaded WSGI server from the standard library (the one ``prometheus_client`` itself serves
with), so a scrape is answered while a round runs. Requests are not logged.
"""

from __future__ import annotations

import errno
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from tracecheck.errors import ConfigError, UsageError

__all__ = ["DEFAULT_LISTEN", "WatchServer", "WatchState", "parse_listen"]

DEFAULT_LISTEN = "127.0.0.1:9464"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Exposition(Protocol):
    """What /metrics serves (:class:`tracecheck.watch.metrics.WatchMetrics`)."""

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]: ...


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (every interface) or ``[V6]:PORT`` -> (host, port).

    >>> parse_listen("127.0.0.1:9464"), parse_listen(":9464"), parse_listen("[::1]:0")
    (('127.0.0.1', 9464), ('', 9464), ('::1', 0))
    """
    host, sep, port_text = listen.strip().rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(
            "watch", "--listen", f"expected HOST:PORT (e.g. {DEFAULT_LISTEN}), got {listen!r}"
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError("watch", "--listen", f"write an IPv6 host in brackets: {listen!r}")
    return host, int(port_text)


@dataclass
class _Last:
    report_json: bytes | None = None
    rounds: int = 0


class WatchState:
    """What the endpoints show besides the metrics: readiness and the last report (as JSON,
    rendered once per round, so /report.json costs a copy)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = _Last()

    def publish(self, report_json: str) -> None:
        data = report_json.encode("utf-8")
        with self._lock:
            self._last = _Last(data, self._last.rounds + 1)

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._last.report_json is not None

    @property
    def report_json(self) -> bytes | None:
        with self._lock:
            return self._last.report_json


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: Prometheus scrapes every few seconds."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck client never holds the process at exit

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that can stall
        # without a resolver; WSGI needs only the name and port it was given.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


class WatchServer:
    """Serves the endpoints in a background thread.

    >>> server = WatchServer("127.0.0.1:0", metrics, state).start()    # doctest: +SKIP
    >>> server.url                                                      # doctest: +SKIP
    'http://127.0.0.1:40123'
    """

    def __init__(self, listen: str, metrics: Exposition, state: WatchState) -> None:
        self.listen = listen
        self.host, self.port = parse_listen(listen)
        self._metrics = metrics
        self._state = state
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> WatchServer:
        """Bind and serve; :class:`ConfigError` (one line, exit 4) when the address cannot be
        used (in use, not local, not permitted)."""
        where = self.listen
        try:
            infos = socket.getaddrinfo(
                self.host or None,
                self.port,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )
        except socket.gaierror as exc:
            raise ConfigError("watch", where, f"cannot listen: {exc.strerror}") from exc
        family = infos[0][0]
        cls = _Server6 if family == socket.AF_INET6 else _Server
        addr = str(infos[0][4][0])
        try:
            server = cls((addr, self.port), _Quiet)
        except OSError as exc:
            cause = exc.strerror or str(exc)
            if exc.errno == errno.EADDRINUSE:
                cause = "address already in use (another watch or exporter on this port?)"
            raise ConfigError("watch", where, f"cannot listen: {cause}") from exc
        server.set_app(self._app)
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="tracecheck-watch-http",
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = self.host or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WatchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the WSGI application ------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if method != "GET":
            return _reply(start_response, "405 Method Not Allowed", b"use GET\n", allow="GET")
        if path == "/metrics":
            metrics, content_type = self._metrics.exposition(environ.get("HTTP_ACCEPT"))
            return _reply(start_response, "200 OK", metrics, content_type=content_type)
        if path == "/healthz":
            return _reply(start_response, "200 OK", b"ok\n")
        if path == "/ready":
            if self._state.ready:
                return _reply(start_response, "200 OK", b"ready\n")
            return _reply(
                start_response, "503 Service Unavailable", b"not ready: no round finished yet\n"
            )
        if path == "/report.json":
            body = self._state.report_json
            if body is None:
                return _reply(
                    start_response,
                    "503 Service Unavailable",
                    b'{"error": "no round finished yet"}\n',
                    content_type="application/json",
                )
            return _reply(start_response, "200 OK", body, content_type="application/json")
        if path == "/":
            return _reply(start_response, "200 OK", _INDEX)
        return _reply(start_response, "404 Not Found", b"not found; see /\n")


_INDEX = (
    b"tracecheck watch\n"
    b"/metrics      Prometheus metrics\n"
    b"/healthz      the process serves\n"
    b"/ready        a first round has finished\n"
    b"/report.json  the last round's report (smoke JSON schema)\n"
)


def _reply(
    start_response: StartResponse,
    status: str,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    allow: str | None = None,
) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if allow:
        headers.append(("Allow", allow))
    start_response(status, headers)
    return [body]
