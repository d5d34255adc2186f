"""Shared fixtures: real test servers and ports for the client tests, and the local pipeline
(real parts) for the integration tests.

``free_port`` (nothing listens: connections are refused), ``stalled_port`` (connections are
accepted, nothing answers), ``http_server`` / ``https_server`` (the one threaded test server of
:mod:`servers`, plain or TLS with ``self_signed``).

``local_pipeline`` brings the whole pipeline up once per session with
:meth:`tracecheck.stack.local.LocalStack.up` (idempotent: components already ready are left
alone, so after ``tracecheck stack local up`` or ``.ci/run`` it costs about a second). It never
skips: if ``up`` fails, every test using it errors with the one-line cause. It is not torn down
at session end (``.ci/run`` calls ``tracecheck stack local down`` afterwards; keeping it up
makes local reruns fast). ``TRACECHECK_STATE_DIR`` selects the pipeline;
``TRACECHECK_TEST_PROMETHEUS=debian`` runs it with Debian's Prometheus 2.42 instead of 3.8.

Tests that use it are marked ``pipeline`` automatically. ``stopped_component`` stops a component
for a fault test and restarts it afterwards, whatever the test did.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import SelfSigned, TestServer, free_port, make_self_signed, tls_context

from tracecheck.stack.local import LocalStack, default_cache_dir, default_state_dir, find_repo_root
from tracecheck.stack.local.pipeline import _ADDRESSES

_AT = _ADDRESSES  # the supervisor's own table, so the tests cannot drift from it


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the local pipeline listens (all on 127.0.0.1)."""

    apiserver: str = _AT["kube-apiserver"]["https"]
    tempo: str = _AT["tempo"]["http"]
    tempo_otlp_grpc: str = _AT["tempo"]["otlp-grpc"]
    prometheus: str = _AT["prometheus"]["http"]
    collector_grpc: str = _AT["collector"]["otlp-grpc"]
    collector_http: str = _AT["collector"]["otlp-http"]
    collector_health: str = _AT["collector"]["health"]
    collector_metrics: str = _AT["collector"]["metrics"]
    spanmetrics_collector_grpc: str = _AT["collector-spanmetrics"]["otlp-grpc"]
    spanmetrics_collector_http: str = _AT["collector-spanmetrics"]["otlp-http"]
    spanmetrics_collector_metrics: str = _AT["collector-spanmetrics"]["metrics"]
    etcd: str = _AT["etcd"]["client"]


ENDPOINTS = Endpoints()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "local_pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.pipeline)


@pytest.fixture(scope="session")
def local_pipeline() -> LocalStack:
    """The local pipeline, up and ready; the returned LocalStack also gives ``kubeconfig``,
    ``env()``, ``status()``, ``binary("kubectl")``, ``pki`` (certificate paths)."""
    stack = LocalStack(
        repo=find_repo_root(Path(__file__).parent),
        state_dir=default_state_dir(os.environ),
        cache_dir=default_cache_dir(os.environ),
        # TRACECHECK_TEST_PROMETHEUS=debian runs the suite against Debian's Prometheus 2.42.
        prometheus=os.environ.get("TRACECHECK_TEST_PROMETHEUS", "go"),
        progress=lambda line: print(f"[local pipeline] {line}", file=sys.stderr),
    )
    status = stack.up()  # StackError: every test using the fixture errors with its message
    assert status.ready, status.render()
    return stack


@pytest.fixture(scope="session")
def endpoints(local_pipeline: LocalStack) -> Endpoints:
    """The local pipeline's addresses (after making sure it is up)."""
    return ENDPOINTS


@pytest.fixture(scope="session")
def local_kubeconfig(local_pipeline: LocalStack) -> Path:
    """The generated kubeconfig: contexts privileged (current), viewer, monitoring."""
    return local_pipeline.kubeconfig


@contextlib.contextmanager
def stopped(stack: LocalStack, component: str) -> Iterator[None]:
    """Stop ``component`` for the duration of the block; it is started again (and waited for)
    afterwards even if the block fails."""
    stack.stop(component)
    try:
        yield
    finally:
        stack.start(component)


@pytest.fixture
def stopped_component(
    local_pipeline: LocalStack,
) -> Callable[[str], AbstractContextManager[None]]:
    """``with stopped_component("collector"): ...``: a fault for the block, then restarted."""

    def use(component: str) -> AbstractContextManager[None]:
        return stopped(local_pipeline, component)

    return use


# -- servers and ports for the client tests --------------------------------------------------------


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    """A port nothing listens on: connecting is refused."""
    return free_port()


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A listening socket that never accepts: connects succeed (kernel backlog), no answer."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    """A self-signed certificate for 127.0.0.1 (its own CA), written to PEM files."""
    return make_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def http_server() -> Iterator[TestServer]:
    """A real HTTP/1.1 server; set ``.handler``; ``.requests`` records what arrived."""
    with TestServer() as server:
        yield server


@pytest.fixture
def https_server(self_signed: SelfSigned) -> Iterator[TestServer]:
    """The same server behind TLS with the ``self_signed`` certificate."""
    with TestServer(tls=tls_context(self_signed.cert, self_signed.key)) as server:
        yield server
