"""Rounds in a child process: the watch's HTTP endpoint never waits for a round's CPU, and a
round that must be abandoned is really stopped.

A round is CPU-heavy in bursts (decoding traces, the apiserver latency table, protobuf). In one
process those bursts hold the interpreter lock, and a scrape that needs it several times waited
up to hundreds of milliseconds for it. The smoke plan also has no cancellation hook: a round in a
thread can only be left behind. So the plan runs in one long-lived worker process, asked for one
round at a time; it answers with the :class:`Report`, or with the error that ended the round.
:meth:`ProcessRounds.close` terminates it, which is how a round is cancelled after the grace
period. A worker that dies (killed, out of memory) makes an error round, and the next round
starts a new one.

The worker is ``python -c`` importing this module (not :mod:`multiprocessing`, whose ``spawn``
re-imports the caller's main script: a script calling ``watch()`` without a ``__main__`` guard
would start watches recursively). Messages are pickles over two pipes of its own
(:class:`multiprocessing.connection.Connection` framing); stdin, stdout and stderr stay the
watch's. If the watch itself is killed, the worker reads end-of-file after its round and exits.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from tracecheck.config import Settings
from tracecheck.errors import HTTPStatusError, TracecheckError
from tracecheck.watch._smoke import Report

__all__ = ["ProcessRounds", "WorkerDied", "serve"]

#: Seconds a worker gets to exit after being asked to, before it is terminated, then killed.
_EXIT_WAIT = 2.0


class WorkerDied(RuntimeError):
    """The round's worker process ended without an answer (killed, out of memory, a crash)."""


class ProcessRounds:
    """A round function (``rounds(index) -> Report``) that runs the smoke plan in a worker
    process. Not for concurrent calls: the watch loop runs one round at a time."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._proc: subprocess.Popen[bytes] | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The worker's process ID while it runs (for its process metrics)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _start(self) -> tuple[Connection, Connection]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._close_pipes()
                to_child_r, to_child_w = os.pipe()
                from_child_r, from_child_w = os.pipe()
                # The child finds tracecheck where this process found it.
                boot = (
                    f"import sys; sys.path[:0] = {json.dumps(sys.path)}; "
                    "from tracecheck.watch.worker import serve; "
                    f"serve({to_child_r}, {from_child_w})"
                )
                try:
                    self._proc = subprocess.Popen(
                        [sys.executable, "-c", boot],
                        pass_fds=(to_child_r, from_child_w),
                        stdin=subprocess.DEVNULL,
                    )
                finally:
                    os.close(to_child_r)
                    os.close(from_child_w)
                self._send = Connection(to_child_w, readable=False)
                self._recv = Connection(from_child_r, writable=False)
                self._send.send(self._settings)
            assert self._send is not None and self._recv is not None
            return self._send, self._recv

    def __call__(self, index: int) -> Report:
        try:
            send, recv = self._start()
            send.send(index)
            kind, payload = recv.recv()
        except (EOFError, OSError) as exc:
            code = self._discard(wait=_EXIT_WAIT)
            raise WorkerDied(f"the round worker exited (code {code}) without an answer") from exc
        if kind == "report" and isinstance(payload, Report):
            return payload
        if kind == "error":
            raise _rebuild(payload)
        raise WorkerDied(f"the round worker answered {kind!r} ({type(payload).__name__})")

    def _close_pipes(self) -> None:
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        self._send = self._recv = None

    def _discard(self, wait: float) -> int | None:
        """Forget the worker: wait ``wait`` seconds for it to end, then terminate, then kill it;
        its exit code."""
        with self._lock:
            proc, self._proc = self._proc, None
            self._close_pipes()  # an idle worker reads end-of-file and exits
        if proc is None:
            return None
        for end in (None, proc.terminate, proc.kill):
            if end is not None:
                end()
            try:
                return proc.wait(wait if end is None else _EXIT_WAIT)
            except subprocess.TimeoutExpired:
                continue
        return proc.poll()

    def close(self) -> None:
        """Stop the worker: an idle one exits on end-of-file; a round still running after a
        moment is cut off (terminated), which cancels it. The worker holds nothing that needs a
        graceful exit: each round closes its own clients."""
        self._discard(wait=0.5)


def serve(read_fd: int, write_fd: int) -> None:
    """The worker's main loop: settings first, then a round per index, until end-of-file."""
    # Ctrl-C reaches the whole process group: the watch decides when rounds end, not the
    # worker. SIGTERM (from close()) keeps its default and ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    recv = Connection(read_fd, writable=False)
    send = Connection(write_fd, readable=False)
    try:
        settings = recv.recv()
    except (EOFError, OSError):
        return
    from tracecheck.watch.loop import smoke_rounds

    run = smoke_rounds(settings)
    while True:
        try:
            index = recv.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[str, Any] = ("report", run(index))
        except Exception as exc:
            answer = ("error", _describe(exc))
        try:
            send.send(answer)
        except (OSError, ValueError):
            return


def _describe(exc: Exception) -> dict[str, Any]:
    """An exception as plain data (tracecheck's errors do not round-trip through pickle:
    their constructor takes system, address and cause)."""
    if isinstance(exc, TracecheckError):
        return {
            "type": type(exc).__name__,
            "module": type(exc).__module__,
            "system": exc.system,
            "address": exc.address,
            "cause": exc.cause,
            "status": getattr(exc, "status", None),
        }
    return {"type": type(exc).__name__, "message": str(exc)}


def _rebuild(info: dict[str, Any]) -> Exception:
    """The exception :func:`_describe` described: the same tracecheck error class (so a
    configuration error in the first round still ends the watch with its exit code); any other
    exception as a RuntimeError naming its type."""
    if "system" in info:
        try:
            cls = getattr(importlib.import_module(info["module"]), info["type"])
        except (ImportError, AttributeError):
            cls = None
        if isinstance(cls, type) and issubclass(cls, TracecheckError):
            if issubclass(cls, HTTPStatusError):
                return cls(info["system"], info["address"], info["cause"], info["status"] or 0)
            return cls(info["system"], info["address"], info["cause"])
        return TracecheckError(info["system"], info["address"], info["cause"])
    return RuntimeError(f"{info['type']}: {info['message']}")
