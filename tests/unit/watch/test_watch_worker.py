"""Rounds in a worker process (tracecheck.watch.worker): reports and errors come back intact, a
dead worker is an error round and is replaced, close() cancels a round in progress."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tracecheck.config import Settings, load_settings
from tracecheck.errors import ConfigError, ExitCode, HTTPStatusError, Unreachable
from tracecheck.watch import Watcher
from tracecheck.watch._smoke import Report, Status
from tracecheck.watch.worker import ProcessRounds, WorkerDied, _describe, _rebuild


def dead_pipeline(port: int, **more: Any) -> Settings:
    """Every backend on ``port`` (closed, or accepting and never answering)."""
    flags: dict[str, Any] = {
        "collector.endpoint": f"127.0.0.1:{port}",
        "collector.health_url": f"http://127.0.0.1:{port}/",
        "collector.metrics_url": f"http://127.0.0.1:{port}/metrics",
        "tempo.url": f"http://127.0.0.1:{port}",
        "prometheus.url": f"http://127.0.0.1:{port}",
        "smoke.skip": "apiserver",
        **more,
    }
    return load_settings(env={}, flags=flags)


def test_a_round_runs_in_another_process_and_its_report_comes_back(free_port: int) -> None:
    rounds = ProcessRounds(dead_pipeline(free_port))
    try:
        report = rounds(0)
        worker = rounds.pid
        again = rounds(1)
    finally:
        rounds.close()
    assert isinstance(report, Report)
    assert worker is not None and worker != os.getpid()
    assert rounds.pid is None  # closed
    assert report.exit_code == ExitCode.BACKEND
    assert report.result("preflight.tempo").status is Status.ERROR
    assert report.result("preflight.tempo").detail == (
        f"tempo at http://127.0.0.1:{free_port}/ready: connection refused"
    )
    assert again.result("send").status is Status.SKIP


def test_a_configuration_error_in_the_worker_comes_back_as_the_same_error(
    free_port: int, tmp_path: Any
) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    settings = dead_pipeline(free_port).replace(
        **{"smoke.skip": (), "apiserver.kubeconfig": str(missing)}
    )
    rounds = ProcessRounds(settings)
    try:
        with pytest.raises(ConfigError) as info:
            rounds(0)
    finally:
        rounds.close()
    assert info.value.exit_code == ExitCode.CONFIG
    assert str(missing) in str(info.value) and "\n" not in str(info.value)


def test_errors_cross_the_pipe_as_data() -> None:
    http = _rebuild(_describe(HTTPStatusError("tempo", "http://t/api", "HTTP 500: boom", 500)))
    assert isinstance(http, HTTPStatusError) and http.status == 500
    assert str(http) == "tempo at http://t/api: HTTP 500: boom"
    down = _rebuild(_describe(Unreachable("collector", "c:4317", "connection refused")))
    assert type(down) is Unreachable
    bug = _rebuild(_describe(KeyError("trace")))
    assert isinstance(bug, RuntimeError) and str(bug) == "KeyError: 'trace'"


def test_a_killed_worker_is_an_error_round_and_the_next_round_gets_a_new_one(
    stalled_port: int, free_port: int
) -> None:
    # Backends that accept and never answer: a round waits out its preflight deadline (3 s).
    rounds = ProcessRounds(dead_pipeline(stalled_port, **{"deadlines.preflight": 3}))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            rounds(0)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    pid = wait_pid(rounds)
    os.kill(pid, signal.SIGKILL)
    thread.join(10)
    try:
        assert len(errors) == 1 and isinstance(errors[0], WorkerDied), errors
        assert str(errors[0]) == "the round worker exited (code -9) without an answer"
        rounds._settings = dead_pipeline(free_port)  # the next worker reads these
        report = rounds(1)
        assert rounds.pid not in (None, pid)
        assert report.result("preflight.collector").status is Status.ERROR
    finally:
        rounds.close()


def test_close_cancels_a_round_in_progress_at_once(stalled_port: int) -> None:
    rounds = ProcessRounds(dead_pipeline(stalled_port, **{"deadlines.preflight": 30}))
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _call(rounds, errors))
    thread.start()
    pid = wait_pid(rounds)
    began = time.monotonic()
    rounds.close()
    thread.join(10)
    assert time.monotonic() - began < 3
    assert [type(e) for e in errors] == [WorkerDied]
    assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def test_a_watch_abandons_a_stuck_round_after_its_grace_and_stops_the_worker(
    stalled_port: int,
) -> None:
    lines: list[str] = []
    watcher = Watcher(
        dead_pipeline(stalled_port, **{"deadlines.preflight": 30}),
        listen="127.0.0.1:0",
        grace=0.5,
        log=lines.append,
    )
    assert watcher._worker is not None
    threading.Timer(3.0, watcher.stop.set).start()  # the worker is up and in its round by then
    began = time.monotonic()
    summary = watcher.run()
    took = time.monotonic() - began
    assert (summary.rounds, summary.abandoned) == (0, True)
    assert took < 8, took
    assert "round 1 abandoned after 0.5s" in lines
    assert watcher._worker.pid is None


def _call(rounds: ProcessRounds, errors: list[BaseException]) -> None:
    try:
        rounds(0)
    except BaseException as exc:
        errors.append(exc)


def wait_pid(rounds: ProcessRounds) -> int:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        pid = rounds.pid
        if pid is not None:
            time.sleep(1.5)  # past the worker's imports, into the round
            return pid
        time.sleep(0.05)
    raise AssertionError("no worker process")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _script(tmp_path: Any, port: int, body: str) -> Any:
    script = tmp_path / "watch_script.py"
    script.write_text(
        "import sys\n"
        "from tracecheck.config import load_settings\n"
        "from tracecheck.watch import watch\n"
        f"settings = load_settings(env={{}}, flags={{'collector.endpoint': '127.0.0.1:{port}', "
        f"'collector.health_url': 'http://127.0.0.1:{port}/', "
        f"'tempo.url': 'http://127.0.0.1:{port}', 'prometheus.url': 'http://127.0.0.1:{port}', "
        "'smoke.skip': 'apiserver'})\n" + body,
        encoding="utf-8",
    )
    return script


def test_a_script_calling_watch_without_a_main_guard_runs_once(
    tmp_path: Any, free_port: int
) -> None:
    # multiprocessing's spawn would re-import this script in the worker and start a second
    # watch there; the worker is `python -c` importing tracecheck only.
    script = _script(
        tmp_path,
        free_port,
        "print('script body ran', flush=True)\n"
        "sys.exit(watch(settings, interval=0, rounds=2, listen='127.0.0.1:0'))\n",
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "script body ran\n"
    assert proc.stderr.count("Z round ") == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("tracecheck watch: http://") == 1


def test_the_worker_exits_when_the_watch_is_killed(tmp_path: Any, free_port: int) -> None:
    script = _script(
        tmp_path,
        free_port,
        "watch(settings, interval=0.2, listen='127.0.0.1:0', log=lambda line: None)\n",
    )
    watch = subprocess.Popen([sys.executable, str(script)])
    try:
        end = time.monotonic() + 30
        workers: list[int] = []
        while not workers and time.monotonic() < end:
            time.sleep(0.2)
            workers = [
                int(c)
                for task in Path(f"/proc/{watch.pid}/task").iterdir()
                for c in (task / "children").read_text().split()
            ]
        assert len(workers) == 1
        watch.kill()  # no chance to clean up
        watch.wait(10)
        end = time.monotonic() + 15
        while time.monotonic() < end and not _gone(workers[0]):
            time.sleep(0.1)
        assert _gone(workers[0]), "the orphaned worker kept running"
    finally:
        if watch.poll() is None:
            watch.kill()


def _gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}") or _zombie(pid)
