"""``watch()`` as a process: SIGTERM/SIGINT end it with 0 in bounded time, backends that are
down make failing rounds (never a crash), bad input is one line with its exit code."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from servers import free_port

from tracecheck.config import load_settings
from tracecheck.errors import ConfigError, ExitCode, UsageError
from tracecheck.watch import Watcher, stop_on_signals, watch
from tracecheck.watch._smoke import Report

REPO = Path(__file__).resolve().parents[3]


def read_until(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """stderr lines of ``proc`` up to the first containing ``needle``."""
    assert proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    lines: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sel.select(timeout=0.2):
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if needle in line:
                return lines
    raise AssertionError(f"{needle!r} not seen in {timeout}s: {lines}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_a_watch_on_a_dead_pipeline_with_exit_0_in_bounded_time(
    signum: signal.Signals,
) -> None:
    port = free_port()
    # Every backend on a closed port: each round is an error round, the process lives on.
    code = textwrap.dedent(
        f"""
        import sys
        from tracecheck.config import load_settings
        from tracecheck.watch import watch
        settings = load_settings(env={{}}, flags={{
            "collector.endpoint": "127.0.0.1:{port}",
            "collector.health_url": "http://127.0.0.1:{port}/",
            "collector.metrics_url": "http://127.0.0.1:{port}/metrics",
            "tempo.url": "http://127.0.0.1:{port}",
            "prometheus.url": "http://127.0.0.1:{port}",
            "smoke.skip": "apiserver",
        }})
        sys.exit(watch(settings, interval=0.2, listen="127.0.0.1:0", grace=5))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRACECHECK_")},
    )
    try:
        lines = read_until(proc, "round 3 ", timeout=60)
        sent = time.monotonic()
        proc.send_signal(signum)
        rc = proc.wait(timeout=10)
        took = time.monotonic() - sent
        assert proc.stderr is not None
        lines += proc.stderr.read().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, lines
    assert took < 6.0  # the grace period (5 s) bounds it; a round here takes milliseconds
    text = "\n".join(lines)
    assert "Traceback" not in text
    assert lines[0].startswith("tracecheck watch: http://127.0.0.1:")
    rounds = [line for line in lines if " round " in line and " error in " in line]
    assert len(rounds) >= 3
    assert (
        f"preflight.collector ERROR [collector]: collector at http://127.0.0.1:{port}/" in rounds[0]
    )
    assert lines[-1].startswith("tracecheck watch: stopped after ")


def test_stop_on_signals_sets_the_event_and_gives_back_the_handlers() -> None:
    stop = threading.Event()
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(stop):
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs in this (main) thread at the next bytecode
        assert stop.is_set()
        # After the first signal a second one acts as before (a second Ctrl-C interrupts).
        assert signal.getsignal(signal.SIGTERM) is before
    assert signal.getsignal(signal.SIGTERM) is before


def test_watch_checks_its_options_before_binding_or_running_anything() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    busy = f"127.0.0.1:{holder.getsockname()[1]}"
    settings = load_settings(env={})
    try:
        with pytest.raises(UsageError, match=r"^watch at --interval: "):
            watch(settings, interval="-1", listen=busy)
        with pytest.raises(
            UsageError, match=r"^smoke at --only/--skip: unknown check 'tempo.serch'"
        ):
            watch(settings.replace(**{"smoke.skip": ("tempo.serch",)}), listen=busy)
        with pytest.raises(UsageError, match=r"^watch at --rounds: expected at least 1, not 0$"):
            watch(settings, listen=busy, rounds=0)
        with pytest.raises(ConfigError) as info:
            watch(settings, listen=busy, rounds=1)
        assert info.value.exit_code == ExitCode.CONFIG
    finally:
        holder.close()


def test_a_configuration_error_in_the_first_round_ends_the_watch_and_frees_the_port() -> None:
    def run(index: int) -> Report:
        raise ConfigError("apiserver", "/nonexistent/kubeconfig", "cannot read: No such file")

    lines: list[str] = []
    w = Watcher(load_settings(env={}), listen="127.0.0.1:0", run_round=run, log=lines.append)
    with pytest.raises(ConfigError, match=r"^apiserver at /nonexistent/kubeconfig: "):
        w.run()
    # The server is closed on the way out: the port can be bound again.
    again = socket.socket()
    again.bind(("127.0.0.1", w.server.port))
    again.close()
