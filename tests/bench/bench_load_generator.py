"""Benchmark: tracecheck's load generator side by side with telemetrygen, against the same local
collector. Prints figures; asserts nothing.

    # once, outside the network namespace (Go module proxy): telemetrygen into the cache
    .venv/bin/python tests/bench/bench_load_generator.py build
    # the local pipeline must be up (tracecheck stack local up); then
    .venv/bin/python tests/bench/bench_load_generator.py [--duration 10] [--rate 20000]

For each protocol (OTLP gRPC, OTLP HTTP) and each generator, two runs of ``--duration`` seconds:

* **max**: as fast as the generator goes (telemetrygen ``--rate 0``; tracecheck a rate it cannot
  reach with no overrun, so it sends flat out for the duration and stops);
* **fixed**: both at ``--rate`` spans per second, where the CPU cost per span is comparable.

Figures: spans the collector accepted (``otelcol_receiver_accepted_spans`` of its ``otlp``
receiver for that transport, before and after) per second of the generator's active window
(first to last change of that counter, sampled every 0.25 s) and per CPU-second of the
generator *process* (user + system time of the child, startup included: the Python
interpreter's imports count against tracecheck). Both generators make traces of 5 spans
(telemetrygen ``--child-spans 4``), about 512 spans per request, no compression, one
connection; telemetrygen with ``--workers`` goroutines (default 1), tracecheck with
``--concurrency`` requests in flight (default 4). The load goes to 127.0.0.1 only.

The collector counts every span it accepts, including kube-apiserver's own traces (OTLP/gRPC):
the idle rate measured before the runs is printed so it can be judged (it is tiny). The runs
leave millions of spans in the Tempo stand-in, which keeps them in memory: it is restarted at
the end (``--keep-tempo`` to skip), so that smoke and the pipeline tests find it responsive.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tracecheck.stack.local import default_cache_dir  # noqa: E402

TELEMETRYGEN_MODULE = "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen"
# The module proxy refuses v0.144.0 (the collector's release); v0.161.0 is served.
TELEMETRYGEN_VERSION = "v0.161.0"
GRPC = "127.0.0.1:4317"
HTTP = "http://127.0.0.1:4318"
METRICS = "http://127.0.0.1:8888/metrics"
SPANS_PER_TRACE = 5
GENERATED = re.compile(r'traces generated\s+\{[^}]*"traces": (\d+)')
BATCH = 512


def telemetrygen_path() -> Path:
    return (
        default_cache_dir(os.environ)
        / "bin"
        / f"telemetrygen-{TELEMETRYGEN_VERSION}"
        / "telemetrygen"
    )


def build() -> Path:
    """``go install`` telemetrygen into the cache (its go.mod has no replace lines), atomically."""
    final = telemetrygen_path()
    if final.is_file():
        print(f"telemetrygen {TELEMETRYGEN_VERSION}: {final} (cached)")
        return final
    if not shutil.which("go"):
        sys.exit("bench: go not found on PATH (Go >= 1.25 builds telemetrygen)")
    final.parent.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-telemetrygen-", dir=final.parent.parent))
    tmp.chmod(0o755)
    started = time.monotonic()
    env = {**os.environ, "GOBIN": str(tmp), "CGO_ENABLED": "0"}
    cmd = [
        "go",
        "install",
        "-trimpath",
        "-ldflags=-s -w",
        f"{TELEMETRYGEN_MODULE}@{TELEMETRYGEN_VERSION}",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        sys.exit(f"bench: building telemetrygen {TELEMETRYGEN_VERSION} failed: {tail}")
    seconds = time.monotonic() - started
    go = subprocess.run(["go", "version"], capture_output=True, text=True, check=False).stdout
    (tmp / "build.json").write_text(
        json.dumps(
            {
                "component": "telemetrygen",
                "version": TELEMETRYGEN_VERSION,
                "module": TELEMETRYGEN_MODULE,
                "seconds": round(seconds, 1),
                "go": go.strip(),
            },
            indent=2,
        )
        + "\n"
    )
    os.replace(tmp, final.parent)
    print(f"telemetrygen {TELEMETRYGEN_VERSION}: built in {seconds:.0f} s into {final}")
    return final


# -- the collector's counter -------------------------------------------------------------------


def accepted(transport: str) -> float:
    import httpx

    from tracecheck.backends.exposition import parse_exposition

    text = httpx.get(METRICS, timeout=5).text
    return parse_exposition(text).sum(
        "otelcol_receiver_accepted_spans", {"receiver": "otlp", "transport": transport}
    )


class Sampler:
    """The accepted counter every 0.25 s while a generator runs: its active window."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), accepted(self.transport)))
            self._stop.wait(0.25)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.6)  # the last answers
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic(), accepted(self.transport)))

    def window(self) -> tuple[float, float]:
        """(spans accepted, seconds from the first to the last change of the counter)."""
        base = self.samples[0][1]
        total = self.samples[-1][1] - base
        changed = [t for (_, prev), (t, v) in itertools.pairwise(self.samples) if v != prev]
        if not changed:
            return total, 0.0
        # The first change is seen up to one sample after it happened: start one sample earlier.
        first = max(self.samples[0][0], changed[0] - 0.25)
        return total, changed[-1] - first


# -- one run --------------------------------------------------------------------------------------


@dataclass
class Run:
    generator: str
    protocol: str
    mode: str
    accepted: float
    active_s: float
    wall_s: float
    cpu_s: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.accepted / self.active_s if self.active_s else 0.0

    @property
    def per_cpu(self) -> float:
        return self.accepted / self.cpu_s if self.cpu_s else 0.0


def run_child(cmd: list[str], protocol: str, log: Path) -> tuple[float, float, float, float, str]:
    transport = "grpc" if protocol == "grpc" else "http"
    with Sampler(transport) as sampler, log.open("w") as out:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
    spans, active = sampler.window()
    note = "" if proc.returncode == 0 else f"exit {proc.returncode}, see {log}"
    return spans, active, wall, usage.ru_utime + usage.ru_stime, note


def telemetrygen_workers(rate: float, args: argparse.Namespace) -> int:
    """Each telemetrygen worker waits on its own rate limiter (burst 1) before every span, so a
    single worker cannot hold a high rate: fixed-rate runs get one worker per 1,000 spans/s."""
    return args.workers if rate == 0 else max(args.workers, math.ceil(rate / 1000))


def telemetrygen(binary: Path, protocol: str, rate: float, args: argparse.Namespace) -> list[str]:
    workers = telemetrygen_workers(rate, args)
    cmd = [
        str(binary),
        "traces",
        "--otlp-insecure",
        f"--duration={args.duration:g}s",
        f"--workers={workers}",
        f"--rate={rate / workers:g}",  # per worker; 0: no throttling
        f"--child-spans={SPANS_PER_TRACE - 1}",
        f"--batch-size={BATCH}",
        "--service=bench-telemetrygen",
    ]
    if protocol == "http":
        cmd += ["--otlp-http", "--otlp-endpoint=127.0.0.1:4318"]
    else:
        cmd += [f"--otlp-endpoint={GRPC}"]
    return cmd


def tracecheck(protocol: str, rate: float, args: argparse.Namespace, out: Path) -> list[str]:
    return [
        sys.executable,
        __file__,
        "child",
        f"--protocol={protocol}",
        f"--rate={rate:g}",
        f"--duration={args.duration:g}",
        f"--concurrency={args.concurrency}",
        f"--result={out}",
    ]


def child(args: argparse.Namespace) -> None:
    """The tracecheck generator in its own process (so its CPU time is measured alone)."""
    from tracecheck.config import load_settings
    from tracecheck.load import LoadSpec, run_load

    settings = load_settings(
        flags={
            "collector.endpoint": GRPC,
            "collector.http_url": HTTP,
            "collector.protocol": args.protocol,
            "collector.compression": "none",
        }
    )
    flat_out = args.rate >= 1_000_000
    spec = LoadSpec(
        rate=args.rate,
        duration=args.duration,
        spans_per_trace=SPANS_PER_TRACE,
        batch_spans=BATCH,
        concurrency=args.concurrency,
        service="bench-tracecheck",
        max_spans=int(args.rate * args.duration) + 1,
        overrun=0.0 if flat_out else None,
    )
    result = run_load(settings, spec)
    Path(args.result).write_text(json.dumps(result.to_dict()), encoding="utf-8")
    print(result.summary())


def bench(args: argparse.Namespace) -> None:
    binary = telemetrygen_path()
    if not binary.is_file():
        sys.exit(
            f"bench: {binary} missing: run `{Path(__file__).name} build` outside the namespace"
        )
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout
    before = accepted("grpc"), accepted("http")
    time.sleep(3)
    idle = (accepted("grpc") - before[0]) / 3, (accepted("http") - before[1]) / 3
    print(
        f"telemetrygen {version.strip() or TELEMETRYGEN_VERSION}; Python {sys.version.split()[0]}"
    )
    print(
        f"collector idle: {idle[0]:.0f} spans/s over gRPC, {idle[1]:.0f} over HTTP (kube-apiserver)"
    )
    logs = Path(tempfile.mkdtemp(prefix="bench-load-"))
    runs: list[Run] = []
    for protocol in args.protocols.split(","):
        for mode, rate in (("max", 0.0), ("fixed", args.rate)):
            for gen in ("telemetrygen", "tracecheck"):
                load1 = os.getloadavg()[0]
                log = logs / f"{gen}-{protocol}-{mode}.log"
                result = logs / f"{gen}-{protocol}-{mode}.json"
                if gen == "telemetrygen":
                    cmd = telemetrygen(binary, protocol, rate, args)
                else:
                    cmd = tracecheck(protocol, rate or 5_000_000, args, result)
                spans, active, wall, cpu, note = run_child(cmd, protocol, log)
                if gen == "telemetrygen":
                    # "traces generated" per worker: spans made, exported or dropped by its
                    # BatchSpanProcessor when the exporter cannot keep up.
                    made = sum(map(int, GENERATED.findall(log.read_text(errors="replace"))))
                    workers = telemetrygen_workers(rate, args)
                    note = note or f"generated {made * SPANS_PER_TRACE:,} spans, {workers} workers"
                if gen == "tracecheck" and result.exists():
                    data = json.loads(result.read_text())
                    note = note or (
                        f"sent {data['sent_spans']:,}, in-run CPU {data['cpu_s']:.2f} s, "
                        f"max lag {data['max_lag_s']:.2f} s"
                    )
                runs.append(Run(gen, protocol, mode, spans, active, wall, cpu, note))
                r = runs[-1]
                print(
                    f"  {gen:<12} {protocol:<4} {mode:<5} accepted {r.accepted:>10,.0f} in "
                    f"{r.active_s:5.1f} s = {r.rate:>9,.0f}/s; CPU {r.cpu_s:5.2f} s = "
                    f"{r.per_cpu:>9,.0f} spans/CPU-s (load1 {load1:.2f}) {r.note}",
                    flush=True,
                )
                time.sleep(2)
    print()
    print("| protocol | mode | generator | spans accepted/s | spans per CPU-s | CPU-s | accepted |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in runs:
        mode = "max" if r.mode == "max" else f"{args.rate:,.0f}/s"
        print(
            f"| {r.protocol} | {mode} | {r.generator} | {r.rate:,.0f} | {r.per_cpu:,.0f} | "
            f"{r.cpu_s:.2f} | {r.accepted:,.0f} |"
        )
    print(f"\nlogs: {logs}")
    if not args.keep_tempo:
        restart_tempo()


def restart_tempo() -> None:
    """The runs leave a few million spans in the Tempo stand-in, which holds them in memory and
    keeps working through them; later smoke checks would time out. Start it afresh."""
    from tracecheck.stack.local import LocalStack, default_state_dir

    stack = LocalStack(
        repo=REPO, state_dir=default_state_dir(os.environ), cache_dir=default_cache_dir(os.environ)
    )
    stack.stop("tempo")
    stack.start("tempo")
    print("tempo stand-in restarted (--keep-tempo keeps it)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command")
    sub.add_parser("build", help="build telemetrygen into the cache (needs the Go module proxy)")
    c = sub.add_parser("child", help=argparse.SUPPRESS)
    c.add_argument("--protocol", required=True)
    c.add_argument("--rate", type=float, required=True)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--concurrency", type=int, required=True)
    c.add_argument("--result", required=True)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    ap.add_argument("--rate", type=float, default=20_000, help="the fixed-rate runs, spans/s")
    ap.add_argument("--protocols", default="grpc,http")
    ap.add_argument("--workers", type=int, default=1, help="telemetrygen --workers")
    ap.add_argument("--concurrency", type=int, default=4, help="tracecheck requests in flight")
    ap.add_argument(
        "--keep-tempo", action="store_true", help="do not restart the Tempo stand-in afterwards"
    )
    args = ap.parse_args()
    if args.command == "build":
        build()
    elif args.command == "child":
        child(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
