"""Rounds in a child process: the watch's HTTP endpoint never waits for a round's CPU, and a
round that must be abandoned is really stopped.

A round is CPU-heavy in bursts (decoding traces, the apiserver latency table, protobuf). In one
process those bursts hold the interpreter lock, and a scrape that needs it several times waited
up to hundreds of milliseconds for it. The smoke plan also has no cancellation hook: a round in a
thread can only be left behind. So the plan runs in one long-lived worker process (``spawn``: no
inherited threads or sockets), asked for one round at a time over a pipe; it answers with the
:class:`Report`, or with the error that ended the round. :meth:`ProcessRounds.close` terminates
it, which is how a round is cancelled after the grace period. A worker that dies (killed, out of
memory) makes an error round, and the next round starts a new one.
"""

from __future__ import annotations

import importlib
import multiprocessing
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

from tracecheck.config import Settings
from tracecheck.errors import HTTPStatusError, TracecheckError
from tracecheck.watch._smoke import Report

__all__ = ["ProcessRounds", "WorkerDied"]

#: Seconds a worker gets to exit after being asked to, before it is terminated, then killed.
_EXIT_WAIT = 2.0


class WorkerDied(RuntimeError):
    """The round's worker process ended without an answer (killed, out of memory, a crash)."""


class ProcessRounds:
    """A round function (``rounds(index) -> Report``) that runs the smoke plan in a worker
    process. Not for concurrent calls: the watch loop runs one round at a time."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The worker's process ID while it runs (for its process metrics)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def _start(self) -> Connection:
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                parent, child = self._ctx.Pipe()
                proc = self._ctx.Process(
                    target=_serve,
                    args=(child, self._settings),
                    name="tracecheck-watch-rounds",
                    daemon=True,  # never outlives the watch
                )
                proc.start()
                child.close()
                self._proc, self._conn = proc, parent
            assert self._conn is not None
            return self._conn

    def __call__(self, index: int) -> Report:
        conn = self._start()
        try:
            conn.send(index)
            kind, payload = conn.recv()
        except (EOFError, OSError) as exc:
            code = self._discard(wait=_EXIT_WAIT)
            raise WorkerDied(f"the round worker exited (code {code}) without an answer") from exc
        if kind == "report":
            if not isinstance(payload, Report):
                raise WorkerDied(f"the round worker answered {type(payload).__name__}")
            return payload
        raise _rebuild(payload)

    def _discard(self, wait: float) -> int | None:
        """Forget the worker: wait ``wait`` seconds for it to end, then terminate, then kill it;
        its exit code."""
        with self._lock:
            proc, self._proc = self._proc, None
            conn, self._conn = self._conn, None
        if proc is not None:
            proc.join(wait)
            if proc.is_alive():
                proc.terminate()
                proc.join(_EXIT_WAIT)
            if proc.is_alive():
                proc.kill()
                proc.join(_EXIT_WAIT)
        if conn is not None:
            conn.close()
        return None if proc is None else proc.exitcode

    def close(self) -> None:
        """Stop the worker at once: a round still running is cut off, which cancels it (the
        worker holds nothing that needs a graceful exit; each round closes its own clients)."""
        self._discard(wait=0)


def _serve(conn: Connection, settings: Settings) -> None:
    """The worker: rounds on request until the pipe closes."""
    # Ctrl-C reaches the whole process group: the watch decides when rounds end, not the
    # worker. SIGTERM (from close()) keeps its default and ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from tracecheck.watch.watcher import smoke_rounds

    run = smoke_rounds(settings)
    while True:
        try:
            index = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[str, Any] = ("report", run(index))
        except Exception as exc:
            answer = ("error", _describe(exc))
        try:
            conn.send(answer)
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
