"""The apiserver's tracing configuration, where it can be read.

kube-apiserver does not serve its TracingConfiguration over its API (docs/reference/apiserver.md
§2): the file is named by the ``--tracing-config-file`` flag on the command line. Two places can
show it, tried in order:

1. **a kube-apiserver process on this host** serving the same port in this network namespace
   (the local pipeline; or tracecheck run on a control-plane node): its command line from
   ``/proc/<pid>/cmdline``, and the file itself when this user may read it;
2. **the kube-apiserver Pods in ``kube-system``** (``component=kube-apiserver``, the kubeadm
   static-pod label), when the credential may list them: the flags only; the file lives on the
   node and stays unread.

What is read is a fact; what could not be read is said (``note``), so a hint built on it can say
that it is a guess. The endpoint found is then tried from this host (a TCP connect), which is
only meaningful when the apiserver runs here: ``endpoint_reading.detail`` says where it was
tried from.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tracecheck.diagnose.reading import Reading

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends.apiserver import ApiserverClient

__all__ = ["TracingFacts", "endpoint_address", "find_local_apiserver", "read_tracing"]

FLAG = "--tracing-config-file"


@dataclass(frozen=True, slots=True)
class TracingFacts:
    """``source`` says where the flags were read (``process 1234``, ``pod kube-system/x``);
    ``config_file`` is the flag's value ("" when the flag is absent: tracing off)."""

    source: str
    config_file: str = ""
    endpoint: str | None = None  # from the file; None: the file was not read
    sampling_rate: int | None = None
    note: str = ""  # what could not be read, and why
    endpoint_reading: Reading | None = None  # a TCP connect to ``endpoint`` from this host

    @property
    def tracing_on(self) -> bool:
        return bool(self.config_file)


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _same_netns(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    except OSError:
        return False


def find_local_apiserver(port: int, proc: Path = Path("/proc")) -> tuple[int, list[str]] | None:
    """(pid, argv) of a kube-apiserver process in this network namespace whose
    ``--secure-port`` is ``port`` (6443 when unset); None when there is none or /proc cannot
    be read."""
    try:
        entries = list(proc.iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
        if not argv or Path(argv[0]).name != "kube-apiserver":
            continue
        if int(_flag(argv, "--secure-port") or "6443") != port:
            continue
        if proc == Path("/proc") and not _same_netns(int(entry.name)):
            continue
        return int(entry.name), argv
    return None


def endpoint_address(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a gRPC target as the apiserver's exporter reads it: ``host:port`` or
    ``dns:///host:port`` (docs/reference/apiserver.md §2); None for ``unix:`` targets or a
    target without a port."""
    target = endpoint.strip()
    if target.startswith(("unix:", "unix-abstract:")):
        return None
    if "://" in target:
        target = (
            target.split("://", 1)[1].split("/", 1)[-1]
            if target.startswith("dns://")
            else target.split("://", 1)[1]
        )
    elif target.startswith("dns:"):
        target = target[4:]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "localhost", int(port)


def _connect(host: str, port: int, timeout: float) -> Reading:
    at = time.time()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return Reading("up", at, f"{host}:{port} accepts connections (tried from this host)")
    except ConnectionRefusedError:
        return Reading(
            "unreachable", at, f"{host}:{port}: connection refused (tried from this host)"
        )
    except OSError as exc:
        return Reading(
            "unreachable", at, f"{host}:{port}: {exc.strerror or exc} (tried from this host)"
        )


def _parse_file(path: str) -> tuple[str | None, int | None, str]:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return None, None, f"{path} cannot be read here: {exc.strerror or exc}"
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None, None, f"{path} is not YAML (tracecheck apiserver check-config {path})"
    if not isinstance(doc, dict):
        return None, None, f"{path} is not a TracingConfiguration"
    # Unset endpoint means localhost:4317 (docs/reference/apiserver.md §2).
    endpoint = str(doc.get("endpoint") or "localhost:4317")
    rate = doc.get("samplingRatePerMillion")
    return endpoint, rate if isinstance(rate, int) and not isinstance(rate, bool) else None, ""


def read_tracing(client: ApiserverClient, *, timeout: float = 3.0) -> TracingFacts | None:
    """The apiserver's tracing configuration from a local process or its Pods; None when
    neither can be seen."""
    parts = urlsplit(client.credentials.server)
    port = parts.port or 443
    found = find_local_apiserver(port) if parts.hostname in _LOCAL_HOSTS else None
    if found is not None:
        pid, argv = found
        path = _flag(argv, FLAG) or ""
        if not path:
            return TracingFacts(f"process {pid}", note=f"process {pid} runs without {FLAG}")
        endpoint, rate, note = _parse_file(path)
        reading = None
        address = endpoint_address(endpoint) if endpoint else None
        if address is not None:
            reading = _connect(*address, timeout=timeout)
        return TracingFacts(f"process {pid}", path, endpoint, rate, note, reading)
    return _from_pods(client, timeout)


_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _from_pods(client: ApiserverClient, timeout: float) -> TracingFacts | None:
    from tracecheck.errors import TracecheckError

    try:
        reply = client.send(
            "GET",
            "/api/v1/namespaces/kube-system/pods?labelSelector=component%3Dkube-apiserver",
            timeout=timeout,
        )
    except TracecheckError:
        return None
    if reply.status != 200:
        return None
    try:
        items = reply.json().get("items") or []
    except (ValueError, AttributeError):
        return None
    for pod in items:
        name = f"pod kube-system/{pod.get('metadata', {}).get('name', '?')}"
        for container in pod.get("spec", {}).get("containers", []):
            argv = [
                str(a) for a in (container.get("command") or []) + (container.get("args") or [])
            ]
            if not any("kube-apiserver" in a for a in argv[:1]) and not any(
                a.startswith("--") for a in argv
            ):
                continue
            path = _flag(argv, FLAG) or ""
            if not path:
                return TracingFacts(name, note=f"{name} runs without {FLAG}")
            return TracingFacts(
                name, path, note=f"{path} is on the node, not readable through the API"
            )
    return None
