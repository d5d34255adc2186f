"""Extra pipeline components with an altered configuration, for the misconfiguration cases of
the fault matrix, started from the local pipeline's cached binaries and rendered configs on free
loopback ports (the local pipeline itself is left as it is).

Each component is the local pipeline's own, run from an edited copy of its rendered config:
``prometheus(...)`` (flags chosen by the test), ``standin(...)`` (Tempo stand-in: processors,
remote-write URL, a distinct external label so its series never collide with the main
stand-in's in a shared Prometheus), ``collector(...)`` (exporter endpoint),
``apiserver(...)`` (a second kube-apiserver on the shared etcd with its own
TracingConfiguration). Every process runs in its own session and is killed when the
``Sidecars`` context ends.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import yaml
from servers import free_port

from tracecheck.stack.local import LocalStack


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int] = field(default_factory=dict)

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)


def _wait(proc: Proc, url: str, *, deadline: float = 60.0, **client: object) -> None:
    end = time.monotonic() + deadline
    last = ""
    while time.monotonic() < end:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{proc.name} exited: {proc.tail()}")
        try:
            with httpx.Client(timeout=2.0, trust_env=False, **client) as c:  # type: ignore[arg-type]
                r = c.get(url)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise AssertionError(
        f"{proc.name} not ready at {url} within {deadline:.0f} s: {last}\n{proc.tail()}"
    )


class Sidecars:
    """The extra processes of one test (a context manager that kills them)."""

    def __init__(self, stack: LocalStack, tmp: Path) -> None:
        self.stack = stack
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.configs = stack.render_configs()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        popen = subprocess.Popen(
            argv,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=self.tmp,
            start_new_session=True,
        )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    # -- components ----------------------------------------------------------------------------

    def prometheus(self, *, remote_write_receiver: bool = True, exemplars: bool = True) -> str:
        """A Prometheus 3.8 scraping only itself; its base URL."""
        port = free_port()
        config = self.tmp / f"prometheus-{port}.yml"
        config.write_text(
            "global: {scrape_interval: 15s}\n"
            "scrape_configs: [{job_name: prometheus, static_configs: "
            f"[{{targets: ['127.0.0.1:{port}']}}]}}]\n"
        )
        argv = [
            str(self.stack.binary("prometheus")),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.tmp / f'prometheus-{port}'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        if remote_write_receiver:
            argv.append("--web.enable-remote-write-receiver")
        if exemplars:
            argv.append("--enable-feature=exemplar-storage")
        proc = self._start(f"prometheus-{port}", argv)
        url = f"http://127.0.0.1:{port}"
        _wait(proc, f"{url}/-/ready")
        return url

    def standin(
        self,
        *,
        remote_write: str,
        processors: tuple[str, ...] = ("service-graphs", "span-metrics", "local-blocks"),
        collection_interval: float = 2.0,
    ) -> tuple[str, int]:
        """A Tempo stand-in from the rendered tempo.yaml with these processors, writing to
        ``remote_write`` (a Prometheus base URL); (its URL, its OTLP gRPC port)."""
        doc = yaml.safe_load(self.configs["tempo"].read_text())
        http, grpc_port, otlp_http = free_port(), free_port(), free_port()
        doc["server"]["http_listen_port"] = http
        protocols = doc["distributor"]["receivers"]["otlp"]["protocols"]
        protocols["grpc"]["endpoint"] = f"127.0.0.1:{grpc_port}"
        protocols["http"]["endpoint"] = f"127.0.0.1:{otlp_http}"
        gen = doc["metrics_generator"]
        gen["registry"]["external_labels"] = {"source": f"tempo-side-{http}"}
        gen["storage"]["remote_write"] = [
            {"url": f"{remote_write}/api/v1/write", "send_exemplars": True}
        ]
        base = self.tmp / f"tempo-{http}"
        gen["storage"]["path"] = str(base / "wal")
        gen["traces_storage"]["path"] = str(base / "traces")
        doc["overrides"]["defaults"]["metrics_generator"]["processors"] = list(processors)
        config = self.tmp / f"tempo-{http}.yaml"
        config.write_text(yaml.safe_dump(doc))
        repo = self.stack.repo
        proc = self._start(
            f"tempo-{http}",
            [
                sys.executable,
                "-m",
                "tempo_standin",
                "--config",
                str(config),
                "--collection-interval",
                f"{collection_interval:g}",
            ],
            env={"PYTHONPATH": str(repo / "stack" / "local")},
        )
        url = f"http://127.0.0.1:{http}"
        _wait(proc, f"{url}/ready")
        return url, grpc_port

    def collector(self, *, exporter: str) -> dict[str, str]:
        """A collector from the rendered collector.yaml exporting to ``exporter`` (host:port);
        the settings pointing tracecheck at it."""
        text = self.configs["collector"].read_text()
        grpc_port, http_port, health, metrics = free_port(), free_port(), free_port(), free_port()
        text = text.replace("127.0.0.1:13133", f"127.0.0.1:{health}")
        text = text.replace("127.0.0.1:4317", f"127.0.0.1:{grpc_port}")
        text = text.replace("127.0.0.1:4318", f"127.0.0.1:{http_port}")
        text = re.sub(r"port: 8888", f"port: {metrics}", text)
        text = text.replace("endpoint: 127.0.0.1:4417", f"endpoint: {exporter}")
        assert f"endpoint: {exporter}" in text, "the exporter endpoint was not replaced"
        config = self.tmp / f"collector-{grpc_port}.yaml"
        config.write_text(text)
        proc = self._start(
            f"collector-{grpc_port}",
            [str(self.stack.binary("otelcol")), f"--config={config}"],
        )
        _wait(proc, f"http://127.0.0.1:{health}/")
        return {
            "collector.endpoint": f"127.0.0.1:{grpc_port}",
            "collector.http_url": f"http://127.0.0.1:{http_port}",
            "collector.health_url": f"http://127.0.0.1:{health}/",
            "collector.metrics_url": f"http://127.0.0.1:{metrics}/metrics",
        }

    def apiserver(self, *, tracing_endpoint: str) -> Path:
        """A second kube-apiserver on the local pipeline's etcd, PKI and flags, with a
        TracingConfiguration exporting to ``tracing_endpoint``; a kubeconfig for it."""
        port = free_port()
        tracing = self.tmp / f"tracing-{port}.yaml"
        tracing.write_text(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\n"
            f"endpoint: {tracing_endpoint}\nsamplingRatePerMillion: 250000\n"
        )
        binaries = {"kube-apiserver": self.stack.binary("kube-apiserver")}
        spec = self.stack.spec("kube-apiserver", binaries, self.configs)
        argv = []
        for arg in spec.argv:
            if arg.startswith("--secure-port="):
                arg = f"--secure-port={port}"
            elif arg.startswith("--tracing-config-file="):
                arg = f"--tracing-config-file={tracing}"
            argv.append(arg)
        proc = self._start(f"kube-apiserver-{port}", argv)
        import ssl

        pki = self.stack.pki
        tls = ssl.create_default_context(cafile=str(pki.ca_cert))
        tls.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        _wait(proc, f"https://127.0.0.1:{port}/readyz", deadline=120.0, verify=tls)
        kubeconfig = self.tmp / f"kubeconfig-{port}"
        kubeconfig.write_text(self.stack.kubeconfig.read_text().replace(":6443", f":{port}"))
        kubeconfig.chmod(0o600)
        return kubeconfig


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0
