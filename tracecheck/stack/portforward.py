"""Port-forwards to the stack's Services through the apiserver, for ``smoke --port-forward``.

After ``tracecheck stack apply``, the collector, Tempo and Prometheus are Services inside the
cluster. :class:`PortForwards` opens one local listener (127.0.0.1, a free port) per
:data:`FORWARDS` entry and carries each connection to a ready Pod behind the Service over the
apiserver's ``pods/portforward`` subresource, as ``kubectl port-forward svc/...`` does. The
streams go through kr8s's port-forward (a WebSocket to the apiserver, which relays to the
kubelet), so every credential kr8s understands works and no kubectl process is started.

The Service ports are the manifests' (``stack/base/*-service.yaml``); ``overrides`` replace a
forward's Service or port (``tempo=tempo-gateway:80``). A Service port's ``targetPort`` (a
number or a container port's name) is resolved against the chosen Pod, as the apiserver's
Endpoints controller does.

Failures are data, never a traceback: a stream the apiserver or the kubelet refuses or breaks
closes the local connection (the client sees it closed: the smoke check is an ERROR, not a
hang) and is kept in :attr:`PortForwards.failures` as a line naming the forward. kr8s reports
these only by closing the socket, so the forward class here overrides two of kr8s's (private)
coroutines to record the reason first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from tracecheck.errors import AuthError, ConfigError, Unreachable, UsageError, one_line

if TYPE_CHECKING:
    from tracecheck.config import Settings

__all__ = [
    "FORWARDS",
    "Forward",
    "Opened",
    "PortForwards",
    "forwarded_settings",
    "open_forwards",
    "parse_overrides",
    "wanted_forwards",
]

SYSTEM = "port-forward"
DEFAULT_NAMESPACE = "monitoring"


@dataclass(frozen=True, slots=True)
class Forward:
    """One forward: ``service``'s port ``port`` (number or name) carries setting ``setting``."""

    name: str
    service: str
    port: int | str
    setting: str


#: The smoke's endpoints and the stack's Services that serve them (stack/base/*-service.yaml).
FORWARDS: tuple[Forward, ...] = (
    Forward("collector-otlp-grpc", "otel-collector", 4317, "collector.endpoint"),
    Forward("collector-otlp-http", "otel-collector", 4318, "collector.http_url"),
    Forward("collector-health", "otel-collector", 13133, "collector.health_url"),
    Forward("collector-metrics", "otel-collector", 8888, "collector.metrics_url"),
    Forward("tempo", "tempo", 3200, "tempo.url"),
    Forward("prometheus", "prometheus", 9090, "prometheus.url"),
)


@dataclass(frozen=True, slots=True)
class Opened:
    """A forward that listens: ``127.0.0.1:local_port`` leads to ``pod``'s ``pod_port``."""

    forward: Forward
    namespace: str
    pod: str
    pod_port: int
    local_port: int

    def __str__(self) -> str:
        f = self.forward
        return (
            f"port-forward {f.name}: svc/{f.service}:{f.port} in {self.namespace} "
            f"(pod {self.pod}:{self.pod_port}) -> 127.0.0.1:{self.local_port}"
        )


def parse_overrides(items: Sequence[str]) -> dict[str, tuple[str, int | str | None]]:
    """``NAME=SERVICE[:PORT]`` items -> {name: (service, port or None)}. Raises UsageError."""
    names = {f.name for f in FORWARDS}
    out: dict[str, tuple[str, int | str | None]] = {}
    for item in items:
        name, eq, target = item.partition("=")
        service, _, port = target.partition(":")
        if not eq or not service or name not in names:
            raise UsageError(
                SYSTEM,
                "--port-forward-to",
                f"{item!r}: expected NAME=SERVICE[:PORT], NAME one of {', '.join(sorted(names))}",
            )
        out[name] = (service, (int(port) if port.isdigit() else port) if port else None)
    return out


def _local_url(current: str, port: int, setting: str) -> str:
    """``current`` pointed at 127.0.0.1:``port``, keeping its scheme and path."""
    if setting == "collector.endpoint":  # host:port, no scheme
        return f"127.0.0.1:{port}"
    parts = urlsplit(current)
    return urlunsplit((parts.scheme or "http", f"127.0.0.1:{port}", parts.path, parts.query, ""))


def forwarded_settings(settings: Settings, opened: Sequence[Opened]) -> Settings:
    """``settings`` with each forwarded endpoint at its local listener. A URL the settings
    leave empty ('' = skip that check) stays empty."""
    changes: dict[str, Any] = {}
    for o in opened:
        section, _, key = o.forward.setting.partition(".")
        current = str(getattr(getattr(settings, section), key))
        if current or o.forward.setting == "collector.endpoint":
            changes[o.forward.setting] = _local_url(current, o.local_port, o.forward.setting)
    return settings.replace(**changes)


def wanted_forwards(settings: Settings) -> list[Forward]:
    """The forwards the smoke will use (a skipped URL needs none)."""
    out = []
    for f in FORWARDS:
        section, _, key = f.setting.partition(".")
        if f.setting == "collector.endpoint" or getattr(getattr(settings, section), key):
            out.append(f)
    return out


def open_forwards(
    settings: Settings, namespace: str | None, overrides: Sequence[str], *, enabled: bool = True
) -> PortForwards:
    """The forwards ``smoke --port-forward [--namespace N] [--port-forward-to ...]`` needs,
    for the apiserver of ``settings`` (enter the result to open them). Raises UsageError when
    ``namespace`` or ``overrides`` are given without ``enabled``."""
    if not enabled:
        given = "--namespace" if namespace else "--port-forward-to"
        raise UsageError(SYSTEM, given, "only with --port-forward")
    return PortForwards(
        kubeconfig=settings.apiserver.kubeconfig or None,
        context=settings.apiserver.context,
        namespace=namespace or DEFAULT_NAMESPACE,
        forwards=wanted_forwards(settings),
        overrides=parse_overrides(overrides),
        timeout=max(30.0, settings.apiserver.timeout * 3) + settings.smoke.wait_ready,
        wait_ready=settings.smoke.wait_ready,
    )


@dataclass
class PortForwards:
    """Open forwards for ``settings``' endpoints to ``namespace``'s Services; a context manager.

    ``kubeconfig``/``context`` are the apiserver's (``apiserver.kubeconfig``/``.context``;
    None: the in-cluster service account). Entering resolves every Service, its port and a
    ready Pod (waiting up to ``wait_ready`` seconds for one, after a deploy) and starts the
    listeners, within ``timeout`` seconds, or raises: ConfigError
    (exit 4) for an unknown namespace, Service or port, Unreachable (exit 3) for an apiserver
    that does not answer or a Service without a ready Pod, AuthError for refused credentials.
    Leaving closes every listener and stream (on success, error or interrupt).
    """

    kubeconfig: str | None
    context: str
    namespace: str = DEFAULT_NAMESPACE
    forwards: Sequence[Forward] = FORWARDS
    overrides: Mapping[str, tuple[str, int | str | None]] = field(default_factory=dict)
    timeout: float = 30.0
    wait_ready: float = 0.0
    opened: list[Opened] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stack: contextlib.AsyncExitStack | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def where(self) -> str:
        return f"{self.kubeconfig or 'in-cluster'} (context {self.context or 'current'})"

    def __enter__(self) -> PortForwards:
        from tracecheck.backends.credentials import load_credentials

        # The kubeconfig and context checked first, with messages that never show a secret.
        load_credentials(self.kubeconfig, self.context)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=loop.run_forever, name="tracecheck-port-forward", daemon=True
        )
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._open(), loop)
        try:
            future.result(self.timeout)
        except TimeoutError as exc:
            future.cancel()
            self.close()
            raise Unreachable(
                SYSTEM, self.where, f"no answer from the apiserver within {self.timeout:.0f} s"
            ) from exc
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record(self, message: str) -> None:
        with self._lock:
            if message not in self.failures:
                self.failures.append(message)

    async def _open(self) -> None:
        import kr8s.asyncio

        try:
            api = await kr8s.asyncio.api(
                kubeconfig=self.kubeconfig, context=self.context or None, namespace=self.namespace
            )
        except Exception as exc:  # load_credentials accepted them: name the kind only
            raise ConfigError(
                SYSTEM, self.where, f"kr8s cannot use the credentials: {type(exc).__name__}"
            ) from exc
        await self._may_forward(api)
        self._stack = contextlib.AsyncExitStack()
        for forward in self.forwards:
            service, port = self.overrides.get(forward.name, (forward.service, None))
            forward = Forward(forward.name, service, port or forward.port, forward.setting)
            pod, pod_port = await self._target(api, forward)
            pf = _recording_forward(pod, pod_port, local_port="auto")
            pf.label, pf.record = forward.name, self._record
            local = await self._stack.enter_async_context(pf)
            self.opened.append(Opened(forward, self.namespace, pod.name, pod_port, int(local)))

    async def _may_forward(self, api: Any) -> None:
        """Ask the apiserver (SelfSubjectAccessReview) whether these credentials may create
        ``pods/portforward`` here: a refusal is an AuthError now, not failed streams later."""
        import json

        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": self.namespace,
                    "verb": "create",
                    "resource": "pods",
                    "subresource": "portforward",
                }
            },
        }
        try:
            async with api.call_api(
                "POST",
                version="authorization.k8s.io/v1",
                base="/apis",
                url="selfsubjectaccessreviews",
                content=json.dumps(review),
            ) as resp:
                status = resp.json().get("status", {})
        except Exception as exc:
            raise _api_error(self.where, "SelfSubjectAccessReview", exc) from exc
        if not status.get("allowed"):
            why = status.get("reason") or "not allowed"
            raise AuthError(
                SYSTEM,
                self.where,
                f"may not create pods/portforward in namespace {self.namespace!r}: {why}",
            )

    async def _target(self, api: Any, forward: Forward) -> tuple[Any, int]:
        """A ready Pod behind ``forward.service`` and the container port its port leads to."""
        from kr8s.asyncio import objects

        kinds: Any = objects  # kr8s's classmethods are untyped
        Namespace, Service = kinds.Namespace, kinds.Service
        ns = self.namespace
        what = f"Service {ns}/{forward.service} (forward {forward.name})"
        try:
            svc = await Service.get(forward.service, namespace=ns, api=api)
        except Exception as exc:
            if type(exc).__name__ == "NotFoundError":
                try:
                    await Namespace.get(ns, api=api)
                except Exception as inner:
                    if type(inner).__name__ == "NotFoundError":
                        raise ConfigError(
                            SYSTEM, self.where, f"namespace {ns!r} not found"
                        ) from exc
                raise ConfigError(SYSTEM, self.where, f"{what} not found") from exc
            raise _api_error(self.where, what, exc) from exc
        ports = svc.spec.get("ports") or []
        match = next((p for p in ports if forward.port in (p.get("port"), p.get("name"))), None)
        if match is None:
            listed = ", ".join(f"{p.get('name', '')}:{p.get('port')}" for p in ports) or "none"
            raise ConfigError(
                SYSTEM, self.where, f"{what} has no port {forward.port!r} (ports: {listed})"
            )
        if not svc.spec.get("selector"):
            raise ConfigError(SYSTEM, self.where, f"{what} has no selector: no Pod to forward to")
        loop = asyncio.get_running_loop()
        until = loop.time() + self.wait_ready
        while True:  # after a deploy (--wait-ready): until a Pod is ready
            try:
                pods = await svc.async_ready_pods()
            except Exception as exc:
                raise _api_error(self.where, what, exc) from exc
            if pods or loop.time() >= until:
                break
            await asyncio.sleep(min(2.0, max(0.0, until - loop.time())))
        if not pods:
            waited = f" after {self.wait_ready:g} s" if self.wait_ready else ""
            raise Unreachable(SYSTEM, self.where, f"{what} has no ready Pod{waited}")
        pod = sorted(pods, key=lambda p: p.name)[0]
        target = match.get("targetPort", match.get("port"))
        if isinstance(target, int) or str(target).isdigit():
            return pod, int(target)
        for container in pod.spec.get("containers") or []:
            for cport in container.get("ports") or []:
                if cport.get("name") == target:
                    return pod, int(cport["containerPort"])
        raise ConfigError(
            SYSTEM, self.where, f"{what}: pod {pod.name} has no container port named {target!r}"
        )

    def close(self) -> None:
        """Stop every listener and stream, then the loop's thread (idempotent)."""
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            if self._stack is not None:
                with contextlib.suppress(Exception):
                    await self._stack.aclose()
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if not loop.is_running():
            loop.close()


def _api_error(where: str, what: str, exc: BaseException) -> Exception:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    text = one_line(f"{what}: {exc}", 300)
    if status in (401, 403):
        return AuthError(SYSTEM, where, text)
    return Unreachable(SYSTEM, where, text)


@functools.cache
def _forward_class() -> type:
    from kr8s._exceptions import ConnectionClosedError
    from kr8s.asyncio.portforward import PortForward

    class RecordingForward(PortForward):
        """kr8s's forward, saying why a stream ended before its client closed it."""

        label = ""
        record: Any = None

        @contextlib.asynccontextmanager
        async def _run(self) -> Any:
            """Listen on a port the kernel picks when it binds. (kr8s 0.20 draws a random port
            and calls it free when nothing answers a connect to it, then binds it: a port that
            is some outgoing connection's source port passes that test and the bind fails
            with EADDRINUSE; the local pipeline's CI met it.) One address, ``self.address[0]``:
            tracecheck forwards to loopback only."""
            server = await asyncio.start_server(
                self._sync_sockets, host=self.address[0], port=self.local_port
            )
            self.servers.append(server)
            self.local_port = server.sockets[0].getsockname()[1]
            try:
                await server.start_serving()
                yield self.local_port
            finally:
                server.close()
                await server.wait_closed()
                self.servers.remove(server)

        async def _sync_sockets(self, reader: Any, writer: Any) -> None:
            try:
                await super()._sync_sockets(reader, writer)
            except asyncio.CancelledError:  # closing: asyncio would log a cancelled handler
                writer.close()
            except Exception as exc:  # a stream that could not be opened
                self.record(f"port-forward {self.label}: {one_line(str(exc) or repr(exc), 200)}")
                writer.close()

        @contextlib.asynccontextmanager
        async def _connect_websocket(self) -> Any:
            """The stream to the Pod, tried at most three times. (kr8s 0.20's own loop never
            counts its attempts: a refused upgrade, e.g. a user without ``pods/portforward``
            or a kubelet that is gone, is retried forever and the client hangs; kr8s issue
            #540.) The refusal is recorded with the apiserver's words."""
            import anyio
            import httpx_ws

            pod: Any = self.pod or await self._select_pod()  # the Pod given
            self.pod = pod
            last = ""
            for attempt in range(3):
                stack = contextlib.AsyncExitStack()
                try:
                    ws = await stack.enter_async_context(
                        pod.api.open_websocket(
                            version=pod.version,
                            url=f"{pod.endpoint}/{pod.name}/portforward",
                            namespace=pod.namespace,
                            params={
                                "name": pod.name,
                                "namespace": pod.namespace,
                                "ports": str(self.remote_port),
                            },
                        )
                    )
                except (httpx_ws.HTTPXWSException, OSError) as exc:
                    await stack.aclose()
                    last = await _refusal(exc)
                    await anyio.sleep(0.2 * (attempt + 1))
                    continue
                async with stack:
                    yield ws
                return
            raise ConnectionClosedError(f"pod {pod.name} port {self.remote_port}: {last}")

        async def _ws_to_tcp(self, ws: Any, writer: Any) -> None:
            import httpx_ws

            try:
                await super()._ws_to_tcp(ws, writer)
            except ConnectionClosedError as exc:  # the kubelet's error channel
                self.record(f"port-forward {self.label}: {one_line(str(exc), 200)}")
                raise
            except httpx_ws.WebSocketDisconnect as exc:
                self.record(
                    f"port-forward {self.label}: the apiserver closed the stream "
                    f"({exc.code} {exc.reason or ''})".rstrip()
                )
                raise

    return RecordingForward


async def _refusal(exc: BaseException) -> str:
    """What the apiserver said when it refused a stream (its Status message, else the error)."""
    import json

    response = getattr(exc, "response", None)
    if response is None:
        return one_line(str(exc) or type(exc).__name__, 200)
    try:
        body = (await response.aread()).decode("utf-8", "replace")
    except Exception:  # a body that cannot be read: the status alone
        body = ""
    try:
        message = json.loads(body).get("message", body)
    except (ValueError, AttributeError):
        message = body
    return one_line(f"HTTP {response.status_code}: {message}", 200)


def _recording_forward(pod: Any, remote_port: int, *, local_port: str) -> Any:
    return _forward_class()(pod, remote_port, local_port=local_port)
