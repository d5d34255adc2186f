"""Process supervision for the local pipeline: detached start, readiness, safe stop.

Each component is started in a new session (so it outlives the CLI and gets its own process
group), with stdout and stderr in ``<state>/logs/<name>.log``. Its pid, argv, kernel start time
and configuration fingerprint go to ``<state>/run/<name>.json``. A pid is only ever signalled
while ``/proc/<pid>/cmdline`` and the start time still match that record, so a recycled pid is
never killed.

``ensure_running`` starts a list of components in order, leaving alone those already ready with
the same fingerprint. When one fails (port taken, dies at start, not ready in time), it prints
the last lines of that component's log, stops everything this call started, and raises
:class:`StartFailure` (a :class:`~tracecheck.errors.StackError`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tracecheck.errors import StackError, one_line
from tracecheck.polling import Clock, Probe, SystemClock, poll_until

if TYPE_CHECKING:
    import ssl

__all__ = [
    "HttpReady",
    "ProcessSpec",
    "ReadyCheck",
    "Record",
    "StartFailure",
    "Supervisor",
    "port_holder",
    "port_in_use",
]

LOG_TAIL_LINES = 20


class StartFailure(StackError):
    """A component could not be started; ``log_tail`` holds the last lines of its log."""

    def __init__(
        self,
        system: str,
        address: str,
        cause: str,
        *,
        log: Path | None = None,
        log_tail: Sequence[str] = (),
    ) -> None:
        self.log = log
        self.log_tail = tuple(log_tail)
        super().__init__(system, address, cause)


class ReadyCheck(Protocol):
    """How ``ensure_running`` and ``status`` decide that a component is ready."""

    @property
    def url(self) -> str:
        """Where it is probed (for messages)."""
        ...

    def probe(self, timeout: float = 2.0) -> tuple[bool, str]:
        """One attempt: (ready, what was seen)."""
        ...


@dataclass(frozen=True, slots=True)
class HttpReady:
    """Readiness: ``GET url`` answers 200 and, if given, the body contains ``body_contains``.

    ``ca_file`` verifies an HTTPS server; ``cert_file``/``key_file`` present a client certificate.
    """

    url: str
    body_contains: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def _verify(self) -> ssl.SSLContext | bool:
        if not self.url.startswith("https:"):
            return False
        import ssl

        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file or None)
        return ctx

    def probe(self, timeout: float = 2.0) -> tuple[bool, str]:
        """One attempt: (ready, what was seen)."""
        import httpx

        try:
            # trust_env=False: a proxy from the environment must not intercept 127.0.0.1.
            with httpx.Client(verify=self._verify(), timeout=timeout, trust_env=False) as client:
                resp = client.get(self.url)
        except httpx.HTTPError as exc:
            return False, one_line(f"{type(exc).__name__}: {exc}", 160) or type(exc).__name__
        except OSError as exc:  # unreadable CA or client certificate files
            return False, one_line(str(exc), 160)
        body = resp.text
        if resp.status_code != 200:
            return False, one_line(f"HTTP {resp.status_code}: {body}", 160)
        if self.body_contains and self.body_contains not in body:
            return False, one_line(f"HTTP 200 without {self.body_contains!r}: {body}", 160)
        return True, "HTTP 200"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """How to run one component.

    ``fingerprint`` identifies its configuration (binary, flags, config contents): a running
    component whose recorded fingerprint differs is restarted by ``ensure_running``.
    """

    name: str
    argv: tuple[str, ...]
    ready: ReadyCheck
    version: str = ""
    ports: tuple[int, ...] = ()
    addresses: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = ""
    deadline: float = 60.0
    fingerprint: str = ""

    @property
    def address(self) -> str:
        """The main address, for messages."""
        return next(iter(self.addresses.values()), self.ready.url)


@dataclass(frozen=True, slots=True)
class Record:
    """What ``run/<name>.json`` remembers about a started process."""

    name: str
    pid: int
    argv: tuple[str, ...]
    starttime: int  # /proc/<pid>/stat field 22: clock ticks after boot (pid-reuse guard)
    fingerprint: str = ""
    version: str = ""
    started_at: float = 0.0
    ports: tuple[int, ...] = ()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw.rsplit(")", 1)[1].split()


def _starttime(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else 0


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our child (a zombie still shows in /proc)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _state(record: Record) -> str:
    """``running`` (ours, argv intact), ``exiting`` (ours, tearing down) or ``gone``.

    Ours means same pid and same kernel start time (so not a recycled pid) and, while it runs,
    the same ``/proc/<pid>/cmdline`` as the argv we started.
    """
    _reap(record.pid)
    fields = _stat_fields(record.pid)
    if fields is None or fields[0] == "X":
        return "gone"
    if record.starttime and int(fields[19]) != record.starttime:
        return "gone"
    if fields[0] == "Z":
        # A zombie thread-group leader whose other threads are still exiting keeps the process's
        # files, listening sockets included, until the last thread is gone (Go programs are
        # multi-threaded): only then is the process gone.
        try:
            return "exiting" if len(os.listdir(f"/proc/{record.pid}/task")) > 1 else "gone"
        except OSError:
            return "gone"
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes()
    except OSError:
        return "gone"
    if cmdline.split(b"\0")[:-1] == [a.encode() for a in record.argv]:
        return "running"
    # An exiting process has released its memory and shows an empty cmdline.
    return "exiting" if not cmdline and record.starttime else "gone"


def _matches(record: Record) -> bool:
    """True while ``record.pid`` is alive (or still exiting) and still the process we started."""
    return _state(record) != "gone"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if binding ``host:port`` fails with EADDRINUSE.

    SO_REUSEADDR like the Go and Python servers we start: a TIME_WAIT leftover of a previous run
    does not count as in use, a listener on the port (or on 0.0.0.0 / [::]) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            # local_address is HEXIP:HEXPORT; st 0A is TCP_LISTEN; inode is column 10.
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    return inodes


def port_holder(port: int) -> tuple[int, str] | None:
    """(pid, process name) of a process listening on TCP ``port``, found through
    /proc/net/tcp{,6} and /proc/*/fd; None if it cannot be found (e.g. another user's)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    comm = (proc / "comm").read_text().strip()
                    return int(proc.name), comm
            except OSError:
                continue
    return None


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


class Supervisor:
    """Starts, checks and stops component processes recorded under ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        progress: Callable[[str], None] = lambda s: None,
        clock: Clock | None = None,
        stop_timeout: float = 15.0,
    ) -> None:
        self.state_dir = state_dir
        self.env = dict(os.environ if env is None else env)
        self.progress = progress
        self.clock = clock or SystemClock()
        self.stop_timeout = stop_timeout

    # -- paths and records ------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _record_path(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.json"

    def record(self, name: str) -> Record | None:
        """The stored record of ``name`` (alive or not), or None."""
        try:
            data = json.loads(self._record_path(name).read_text())
            return Record(
                name=data["name"],
                pid=int(data["pid"]),
                argv=tuple(data["argv"]),
                starttime=int(data.get("starttime", 0)),
                fingerprint=str(data.get("fingerprint", "")),
                version=str(data.get("version", "")),
                started_at=float(data.get("started_at", 0.0)),
                ports=tuple(int(p) for p in data.get("ports", ())),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def recorded_names(self) -> list[str]:
        run = self.state_dir / "run"
        return sorted(p.stem for p in run.glob("*.json")) if run.is_dir() else []

    def _write_record(self, record: Record) -> None:
        path = self._record_path(record.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record), indent=1) + "\n")
        os.replace(tmp, path)

    def _drop_record(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._record_path(name).unlink()

    def running_pid(self, name: str) -> int | None:
        """The pid of ``name`` if its recorded process is alive and still ours."""
        record = self.record(name)
        return record.pid if record is not None and _matches(record) else None

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise up/down/start/stop on this state directory (e.g. two terminals, CI).

        While another command holds it (an ``up`` may be building for minutes), ``progress``
        says so once instead of a silent wait.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "lock").open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.progress(
                    f"waiting for another tracecheck command on {self.state_dir} to finish"
                )
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- starting -----------------------------------------------------------------------------

    def check_ports(self, spec: ProcessSpec) -> None:
        """Raise :class:`StartFailure` naming the port (and its holder) if one is taken."""
        for port in spec.ports:
            if port_in_use(port):
                holder = port_holder(port)
                by = f" by pid {holder[0]} ({holder[1]})" if holder else ""
                raise StartFailure(
                    spec.name, f"127.0.0.1:{port}", f"port {port} already in use{by}"
                )

    def check_all_ports(self, specs: Sequence[ProcessSpec]) -> None:
        """Check the ports of every component in ``specs`` not already ours and running."""
        for spec in specs:
            record = self.record(spec.name)
            if record is None or not _matches(record):
                self.check_ports(spec)

    def ensure_running(self, specs: Sequence[ProcessSpec]) -> list[str]:
        """Start ``specs`` in order, each waited for until ready; returns the names started.

        Components already running with the same fingerprint and ready are left alone; one
        running with another fingerprint is restarted. On a failure, everything started by this
        call is stopped again, the failing component's log tail is passed to ``progress``, and
        :class:`StartFailure` is raised.
        """
        started: list[str] = []
        # Ports first, for every component not already ours and running: a taken port fails
        # before anything is started.
        self.check_all_ports(specs)
        try:
            for spec in specs:
                record = self.record(spec.name)
                if record is not None and _matches(record):
                    if record.fingerprint == spec.fingerprint:
                        ok, _ = spec.ready.probe()
                        if ok:
                            self.progress(f"{spec.name}: ready (pid {record.pid}), left alone")
                            continue
                        self.progress(f"{spec.name}: running (pid {record.pid}), waiting")
                        self._wait_ready(spec, record.pid, None)
                        continue
                    self.progress(f"{spec.name}: configuration changed, restarting")
                    self._stop_record(record)
                elif record is not None:
                    self._drop_record(spec.name)  # stale: the process is gone
                self._start(spec, started)
        except StartFailure as exc:
            if exc.log_tail:
                self.progress(f"--- last {len(exc.log_tail)} lines of {exc.log} ---")
                for line in exc.log_tail:
                    self.progress(line)
                self.progress("---")
            for name in reversed(started):
                self.progress(f"{name}: stopping (started by this run)")
                self.stop(name)
            raise
        return started

    def _start(self, spec: ProcessSpec, started: list[str]) -> None:
        self.check_ports(spec)
        log = self.log_path(spec.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        if log.exists() and log.stat().st_size:
            os.replace(log, log.with_suffix(".log.1"))  # keep one previous run
        env = {**self.env, **spec.env}
        t0 = self.clock.monotonic()
        with log.open("ab") as out:
            out.write(f"# tracecheck: starting {spec.name} at {time.ctime()}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd or None,
                    env=env,
                    start_new_session=True,  # own session: outlives the CLI, own process group
                    close_fds=True,
                )
            except OSError as exc:
                raise StartFailure(
                    spec.name, spec.argv[0], f"cannot execute: {exc.strerror or exc}", log=log
                ) from exc
        record = Record(
            name=spec.name,
            pid=proc.pid,
            argv=spec.argv,
            starttime=_starttime(proc.pid),
            fingerprint=spec.fingerprint,
            version=spec.version,
            started_at=time.time(),
            ports=spec.ports,
        )
        self._write_record(record)
        started.append(spec.name)
        self.progress(f"{spec.name}: started (pid {proc.pid}), waiting for {spec.ready.url}")
        self._wait_ready(spec, proc.pid, proc)
        self.progress(f"{spec.name}: ready in {self.clock.monotonic() - t0:.1f}s")

    def _wait_ready(
        self, spec: ProcessSpec, pid: int, proc: subprocess.Popen[bytes] | None
    ) -> None:
        log = self.log_path(spec.name)
        record = self.record(spec.name)

        def probe() -> Probe[None]:
            code = proc.poll() if proc is not None else None
            if code is not None or (record is not None and not _matches(record)):
                how = f"exited with status {code}" if code is not None else "exited"
                raise StartFailure(
                    spec.name,
                    spec.address,
                    f"{how} during start (log: {log})",
                    log=log,
                    log_tail=_tail(log),
                )
            ok, seen = spec.ready.probe()
            return Probe(ok, None, seen)

        outcome = poll_until(probe, spec.deadline, self.clock, initial=0.1, cap=0.5)
        if not outcome.ok:
            raise StartFailure(
                spec.name,
                spec.ready.url,
                f"not ready within {spec.deadline:g}s (last: {outcome.seen}; log: {log})",
                log=log,
                log_tail=_tail(log),
            )

    # -- stopping -----------------------------------------------------------------------------

    def stop(self, name: str) -> bool:
        """Stop ``name`` if it runs (SIGTERM, wait, SIGKILL); True if a process was stopped.

        The record is removed either way.
        """
        record = self.record(name)
        if record is None:
            return False
        stopped = self._stop_record(record)
        self._drop_record(name)
        return stopped

    def _signal(self, record: Record, sig: int) -> None:
        if _state(record) != "running":
            return  # only a process whose cmdline still matches is signalled
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(record.pid) == record.pid:
                os.killpg(record.pid, sig)  # the session we created: helpers go too
            else:
                os.kill(record.pid, sig)

    def _stop_record(self, record: Record) -> bool:
        if not _matches(record):
            return False
        self._signal(record, signal.SIGTERM)
        if self._wait_gone(record, self.stop_timeout):
            return True
        self.progress(f"{record.name}: no exit {self.stop_timeout:g}s after SIGTERM, SIGKILL")
        self._signal(record, signal.SIGKILL)
        if not self._wait_gone(record, 5.0):
            raise StackError(record.name, f"pid {record.pid}", "still running after SIGKILL")
        return True

    def _wait_gone(self, record: Record, timeout: float) -> bool:
        end = self.clock.monotonic() + timeout
        while _matches(record):
            if self.clock.monotonic() >= end:
                return False
            self.clock.sleep(0.05)
        # Helpers in its process group may hold its ports a moment longer; a restart needs them.
        while any(port_in_use(p) for p in record.ports) and self.clock.monotonic() < end + 5:
            self.clock.sleep(0.05)
        return True

    def stop_all(self, names: Sequence[str]) -> list[str]:
        """Stop ``names`` in the given order; returns those that were running."""
        stopped = []
        for name in names:
            if self.stop(name):
                self.progress(f"{name}: stopped")
                stopped.append(name)
        return stopped

    def tail(self, name: str, lines: int = LOG_TAIL_LINES) -> list[str]:
        """The last lines of ``name``'s log."""
        return _tail(self.log_path(name), lines)
