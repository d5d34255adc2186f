"""``watch()``'s process-level behaviour: signal handlers, options checked before anything is
bound or run, a configuration error in the first round. (SIGTERM/SIGINT on the command itself:
tests/unit/cli/test_cli_watch.py.)"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tracecheck.config import load_settings
from tracecheck.errors import ConfigError, ExitCode, UsageError
from tracecheck.watch import Watcher, stop_on_signals, watch
from tracecheck.watch._smoke import Report

REPO = Path(__file__).resolve().parents[3]


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
