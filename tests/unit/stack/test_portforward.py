"""The port-forward plan for ``smoke --port-forward``: which Service port serves which setting
(checked against the rendered manifests), how the settings are pointed at the local listeners,
and the options' bad input. The forwards themselves run against the local cluster
(tests/pipeline/test_stack_rollout.py)."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tracecheck.config import Settings
from tracecheck.errors import UsageError
from tracecheck.stack.kustomize import load_objects, render
from tracecheck.stack.portforward import (
    FORWARDS,
    Opened,
    PortForwards,
    _recording_forward,
    forwarded_settings,
    open_forwards,
    parse_overrides,
    wanted_forwards,
)


def test_every_forward_names_a_service_port_of_the_manifests() -> None:
    services = {
        o["metadata"]["name"]: {p["port"] for p in o["spec"]["ports"]}
        for o in load_objects(render("base", env=os.environ))
        if o["kind"] == "Service"
    }
    for forward in FORWARDS:
        assert forward.port in services[forward.service], forward


def opened(name: str, port: int) -> Opened:
    forward = next(f for f in FORWARDS if f.name == name)
    return Opened(forward, "monitoring", f"{forward.service}-abc", int(forward.port), port)


def test_settings_point_at_the_listeners_keeping_scheme_and_path() -> None:
    settings = Settings().replace(
        **{"tempo.url": "http://tempo.example:3200/base", "collector.metrics_url": ""}
    )
    names = [f.name for f in wanted_forwards(settings)]
    assert "collector-metrics" not in names  # skipped by the settings: not forwarded
    got = forwarded_settings(
        settings,
        [opened("collector-otlp-grpc", 20001), opened("tempo", 20002), opened("prometheus", 20003)],
    )
    assert got.collector.endpoint == "127.0.0.1:20001"
    assert got.tempo.url == "http://127.0.0.1:20002/base"
    assert got.prometheus.url == "http://127.0.0.1:20003"
    assert got.collector.metrics_url == ""
    assert got.collector.health_url == settings.collector.health_url  # not opened: unchanged
    line = str(opened("tempo", 20002))
    assert line == (
        "port-forward tempo: svc/tempo:3200 in monitoring (pod tempo-abc:3200) -> 127.0.0.1:20002"
    )


def test_overrides_parse_and_refuse_bad_items() -> None:
    assert parse_overrides(["tempo=tempo-gateway:80", "prometheus=prom:web"]) == {
        "tempo": ("tempo-gateway", 80),
        "prometheus": ("prom", "web"),
    }
    assert parse_overrides(["tempo=tempo-gateway"]) == {"tempo": ("tempo-gateway", None)}
    for bad in ("tempo", "nosuch=svc:1", "tempo=:80"):
        with pytest.raises(UsageError, match="expected NAME=SERVICE"):
            parse_overrides([bad])
    with pytest.raises(UsageError, match="only with --port-forward"):
        open_forwards(Settings(), "monitoring", (), enabled=False)


def test_cli_namespace_without_port_forward_is_usage_exit_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACECHECK_")}
    p = subprocess.run(
        [sys.executable, "-m", "tracecheck", "smoke", "--namespace", "monitoring"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == (
        "tracecheck: error: port-forward at --namespace: only with --port-forward"
    )


def test_a_bad_kubeconfig_or_context_fails_before_any_forward(tmp_path: Path) -> None:
    from tracecheck.errors import ConfigError

    with pytest.raises(ConfigError, match="kubeconfig not found"):
        PortForwards(str(tmp_path / "missing"), "").__enter__()
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\n"
        "contexts: [{name: a, context: {cluster: c, user: u}}]\ncurrent-context: a\n"
    )
    with pytest.raises(ConfigError, match="unknown context 'b'; contexts: a"):
        PortForwards(str(config), "b").__enter__()


class _Workload:
    """Enough of a kr8s resource for PortForward to accept it; no stream is opened here."""

    ready_pods = None


async def _listen_while_a_connection_holds(port_picker: Any, forward: Any) -> tuple[int, int]:
    """A loopback connection holds source port ``held``; kr8s's picker is made to draw it.
    Returns (held, the port the forward listened on), after a connect to it succeeded. Every
    socket opened here is closed before it returns."""

    async def hang_up(_: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    held = writer.get_extra_info("sockname")[1]
    port_picker(held)
    try:
        async with forward as port:
            reader, probe = await asyncio.open_connection("127.0.0.1", port)
            await reader.read()  # the forward has no Pod to reach: it closes the stream
            probe.close()
            await probe.wait_closed()
            return held, int(port)
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()


def test_the_listener_port_is_picked_by_the_kernel_not_by_a_connect_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kr8s 0.20 draws a random port and calls it free when a connect to it is refused; a port
    that an outgoing connection uses as its source port passes that test, and binding it fails
    with EADDRINUSE (seen in CI as four errored port-forward tests). tracecheck's forward binds
    port 0, so the draw is never used."""
    import random

    from kr8s.asyncio.portforward import PortForward

    def draw(port: int) -> None:
        monkeypatch.setattr(random, "randint", lambda a, b: port)

    # kr8s's own forward fails on that port: the hazard is real on this machine.
    with pytest.raises(OSError) as refused:
        asyncio.run(_listen_while_a_connection_holds(draw, PortForward(_Workload(), 80, "auto")))
    assert refused.value.errno == errno.EADDRINUSE
    ours = _recording_forward(_Workload(), 80, local_port="auto")
    said: list[str] = []
    ours.record = said.append
    held, port = asyncio.run(_listen_while_a_connection_holds(draw, ours))
    assert port != held and 0 < port < 65536
    assert len(said) == 1 and said[0].startswith("port-forward : "), said
