"""One module per external system tracecheck talks to, and the one place clients are opened.

    _http        Endpoint, HTTPBackend: the HTTP base every client sends through, and the one
                 translation of httpx / ssl / socket failures into tracecheck errors
    exposition   the Prometheus text format (the collector's and Tempo's self-metrics)
    collector    OpenTelemetry Collector: OTLP export over gRPC or HTTP, health, self-metrics
    tempo        Grafana Tempo's HTTP API
    prometheus   Prometheus's HTTP API, and counter increases read from raw samples
    apiserver    kube-apiserver: kr8s-resolved credentials, traced requests, identity

Clients are opened from :class:`~tracecheck.config.Settings` here and nowhere else::

    with Backends(settings) as backends:      # opens each client on first use
        backends.tempo().ready()
        backends.prometheus().query("up")

``Backends`` also takes ready clients (``Backends(settings, tempo=fake)``), which it uses as
they are and does not close: that is how tests and long-running callers (a watch loop that
keeps its connections across runs) inject them. The client modules are imported on first use,
so importing this package costs nothing (``tracecheck --help`` stays fast).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    import grpc
    import httpx

    from tracecheck.backends.apiserver import ApiserverClient
    from tracecheck.backends.collector import CollectorClient
    from tracecheck.backends.prometheus import PrometheusClient
    from tracecheck.backends.tempo import TempoClient
    from tracecheck.config import Settings
    from tracecheck.polling import Clock

__all__ = [
    "Backends",
    "open_apiserver",
    "open_collector",
    "open_prometheus",
    "open_tempo",
]

T = TypeVar("T")


def open_collector(
    settings: Settings,
    *,
    clock: Clock | None = None,
    http_transport: httpx.BaseTransport | None = None,
    channel: grpc.Channel | None = None,
) -> CollectorClient:
    """A collector client for ``settings.collector`` (``clock`` paces export retries)."""
    from tracecheck.backends.collector import CollectorClient

    return CollectorClient(
        settings.collector, clock=clock, http_transport=http_transport, channel=channel
    )


def open_tempo(settings: Settings, *, transport: httpx.BaseTransport | None = None) -> TempoClient:
    """A Tempo client for ``settings.tempo``."""
    from tracecheck.backends.tempo import TempoClient

    return TempoClient(settings.tempo, transport=transport)


def open_prometheus(
    settings: Settings, *, transport: httpx.BaseTransport | None = None
) -> PrometheusClient:
    """A Prometheus client for ``settings.prometheus``."""
    from tracecheck.backends.prometheus import PrometheusClient

    return PrometheusClient(settings.prometheus, transport=transport)


def open_apiserver(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> ApiserverClient:
    """An apiserver client with the credentials of ``settings.apiserver``.

    Without ``apiserver.kubeconfig`` the default chain of
    :func:`~tracecheck.config.resolve_kubeconfig` is searched with ``env`` (none given: only the
    local pipeline's kubeconfig at its default place and ``~/.kube/config``); when it finds
    nothing, the in-cluster service account.
    The CLI fills ``apiserver.kubeconfig`` from the real environment
    (:func:`~tracecheck.config.with_kubeconfig`) before it gets here.
    """
    from tracecheck.backends.apiserver import ApiserverClient
    from tracecheck.config import local_kubeconfig, resolve_kubeconfig

    env = {} if env is None else env
    s = settings.apiserver
    path = resolve_kubeconfig(s.kubeconfig, env, local_kubeconfig(env))
    return ApiserverClient.from_settings(s, kubeconfig=path, transport=transport)


class Backends:
    """The clients of one caller, each opened from ``settings`` on first use; thread-safe.

    Clients passed in are used as given and never closed here; :meth:`close` (or leaving the
    ``with`` block) closes only the clients this object opened. ``clock`` paces the
    collector's export retries.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        collector: CollectorClient | None = None,
        tempo: TempoClient | None = None,
        prometheus: PrometheusClient | None = None,
        apiserver: ApiserverClient | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._given: dict[str, Any] = {
            name: client
            for name, client in (
                ("collector", collector),
                ("tempo", tempo),
                ("prometheus", prometheus),
                ("apiserver", apiserver),
            )
            if client is not None
        }
        self._opened: dict[str, Any] = {}
        self._lock = threading.Lock()

    def collector(self) -> CollectorClient:
        return self._get("collector", lambda: open_collector(self.settings, clock=self.clock))

    def tempo(self) -> TempoClient:
        return self._get("tempo", lambda: open_tempo(self.settings))

    def prometheus(self) -> PrometheusClient:
        return self._get("prometheus", lambda: open_prometheus(self.settings))

    def apiserver(self) -> ApiserverClient:
        return self._get("apiserver", lambda: open_apiserver(self.settings))

    def _get(self, name: str, make: Callable[[], T]) -> T:
        with self._lock:
            client: T
            if name in self._given:
                client = self._given[name]
            else:
                if name not in self._opened:
                    self._opened[name] = make()
                client = self._opened[name]
            return client

    def close(self) -> None:
        """Close the clients opened here (not the ones passed in)."""
        with self._lock:
            opened, self._opened = list(self._opened.values()), {}
        for client in opened:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
