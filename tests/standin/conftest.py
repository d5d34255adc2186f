"""Fixtures for the Tempo stand-in tests: in-process stand-ins on free ports, a remote-write
receiver, and the path of a real Prometheus binary."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from standin_helpers import REPO, STANDIN_PATH, RemoteWriteReceiver, Running

if str(STANDIN_PATH) not in sys.path:
    sys.path.insert(0, str(STANDIN_PATH))

from tempo_standin.app import Standin
from tempo_standin.config import RemoteWrite, StandinConfig

ALL_PROCESSORS = ("service-graphs", "span-metrics", "local-blocks")


@pytest.fixture
def make_standin() -> Iterator[Callable[..., Running]]:
    """``make_standin(**config_overrides)``: start a stand-in on free ports; stopped after."""
    started: list[Running] = []

    def make(**overrides: Any) -> Running:
        base = StandinConfig(
            http_port=0,
            otlp_grpc="127.0.0.1:0",
            otlp_http="127.0.0.1:0",
            processors=ALL_PROCESSORS,
            trace_idle_period=0.3,
            flush_check_period=0.05,
            collection_interval=3600.0,  # tests call collect_and_write() themselves
            external_labels=(("source", "tempo"),),
            instance="standin-test",
            min_ready_duration=0.0,  # Tempo's 15s not-ready period has its own tests
            remote_write_flush_deadline=2.0,
        )
        config = base.with_overrides(**overrides)
        lines: list[str] = []
        lock = threading.Lock()

        def log(line: str) -> None:
            with lock:
                lines.append(line)

        app = Standin(config, log=log)
        app.start()
        http = httpx.Client(base_url=f"http://127.0.0.1:{app.http_port}", timeout=10)
        running = Running(app, http, lines)
        started.append(running)
        return running

    yield make
    for r in started:
        r.http.close()
        r.app.stop()


@pytest.fixture
def standin(make_standin: Callable[..., Running]) -> Running:
    return make_standin()


@pytest.fixture
def rw_receiver() -> Iterator[RemoteWriteReceiver]:
    receiver = RemoteWriteReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def remote_write_to(rw_receiver: RemoteWriteReceiver) -> tuple[RemoteWrite, ...]:
    return (RemoteWrite(url=rw_receiver.url, send_exemplars=True),)


@pytest.fixture(scope="session")
def prometheus_binary(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Path:
    """The real Prometheus 3.8: from the shared ``local_pipeline`` fixture when the suite has
    one, else built or reused through tracecheck's local-stack cache. Never skipped."""
    try:
        pipeline = request.getfixturevalue("local_pipeline")
    except pytest.FixtureLookupError:
        from tracecheck.stack.local import LocalStack, default_cache_dir, find_repo_root

        stack = LocalStack(
            repo=find_repo_root(REPO),
            state_dir=tmp_path_factory.mktemp("localstack-state"),
            cache_dir=default_cache_dir(os.environ),
        )
        return Path(stack.binary("prometheus"))
    return Path(pipeline.binary("prometheus"))
