"""``tracecheck watch`` end to end in a subprocess: SIGTERM/SIGINT end it with exit 0 in bounded
time while every backend is down (each round an error round, never a crash), and bad input ends
it at start with one line and its documented exit code."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time

import pytest
from servers import free_port

#: The environment of the command: no TRACECHECK_* settings of whoever runs the tests.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("TRACECHECK_")}


def dead_pipeline(port: int) -> list[str]:
    """Flags pointing every backend at ``port``, where nothing listens."""
    return [
        f"--collector-endpoint=127.0.0.1:{port}",
        f"--collector-health-url=http://127.0.0.1:{port}/",
        f"--collector-metrics-url=http://127.0.0.1:{port}/metrics",
        f"--tempo-url=http://127.0.0.1:{port}",
        f"--prometheus-url=http://127.0.0.1:{port}",
        "--skip=apiserver",
    ]


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
    argv = ["watch", *dead_pipeline(port), "--interval=0.2", "--listen=127.0.0.1:0", "--grace=5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracecheck", *argv], stderr=subprocess.PIPE, text=True, env=ENV
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
    assert "Traceback" not in "\n".join(lines)
    assert lines[0].startswith("tracecheck watch: http://127.0.0.1:")
    rounds = [line for line in lines if " round " in line and " error in " in line]
    assert len(rounds) >= 3
    assert (
        f"preflight.collector ERROR [collector]: collector at http://127.0.0.1:{port}/" in rounds[0]
    )
    assert lines[-1].startswith("tracecheck watch: stopped after ")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--interval=-1"], 2, "watch at --interval: expected seconds >= 0 (e.g. 60, 30s, 5m)"),
        (["--only=tempo.serch"], 2, "smoke at --only/--skip: unknown check 'tempo.serch'"),
        (["--tempo-url=localhost:3200"], 4, "malformed URL 'localhost:3200'"),
        (["--listen=BUSY"], 4, "cannot listen: address already in use"),
    ],
    ids=["interval", "check", "config", "busy-port"],
)
def test_bad_input_ends_the_watch_at_start_in_one_line(
    args: list[str], code: int, message: str, stalled_port: int
) -> None:
    busy_port = stalled_port  # a socket listening there (never accepting)
    argv = [a.replace("BUSY", f"127.0.0.1:{busy_port}") for a in args]
    if not any(a.startswith("--listen") for a in argv):
        argv.append(f"--listen=127.0.0.1:{busy_port}")  # a round would be an error
    p = subprocess.run(
        [sys.executable, "-m", "tracecheck", "watch", *dead_pipeline(free_port()), *argv],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )
    assert p.returncode == code, p.stderr
    (line,) = p.stderr.splitlines()
    assert line.startswith("tracecheck: error: ") and message in line, line
    assert p.stdout == ""


def test_the_command_defaults_are_the_library_defaults() -> None:
    # The command spells them out (importing tracecheck.watch would slow every --help).
    from tracecheck.cli.watch import watch as command
    from tracecheck.watch import DEFAULT_GRACE, DEFAULT_INTERVAL, DEFAULT_JITTER, DEFAULT_LISTEN
    from tracecheck.watch.loop import parse_interval

    defaults = {p.name: p.default for p in command.params}
    assert parse_interval(str(defaults["interval"])) == DEFAULT_INTERVAL
    assert parse_interval(str(defaults["grace"])) == DEFAULT_GRACE
    assert (defaults["jitter"], defaults["listen"]) == (DEFAULT_JITTER, DEFAULT_LISTEN)
