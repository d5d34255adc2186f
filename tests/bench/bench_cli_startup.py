"""Benchmark: whole-process start of the CLI, as a user runs it, on a fresh install.

    # outside the local pipeline's network namespace (needs PyPI): a venv with the newest
    # versions the project's requirements allow, exactly as a new user gets them
    .venv/bin/python tests/bench/bench_cli_startup.py --fresh /tmp/tc-fresh
    # then, where the local pipeline runs (for the query):
    .venv/bin/python tests/bench/bench_cli_startup.py --venv /tmp/tc-fresh --runs 21

Times two commands, each a new process from exec to exit (interpreter start and imports
included): ``tracecheck --help`` (target: median <= 0.12 s) and
``tracecheck query promql 'count(up)'`` against the local pipeline's Prometheus (target:
median <= 0.3 s). Prints the versions it ran against, the medians and p90s, the CPU time per
run (less sensitive to a busy machine than wall time) and the slowest imports of each command
(``python -X importtime``). Prints figures only: no assertion, no pass or fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGETS = {"help": 0.12, "query": 0.3}
VERSIONS = (
    "tracecheck", "click", "httpx", "httpcore", "h11", "anyio", "certifi", "promql-parser",
    "rich", "pygments",
)  # fmt: skip


def fresh(venv: Path) -> None:
    """A new venv with the project installed from this checkout (not editable), every
    dependency resolved anew to the newest version the requirements allow."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "--upgrade", "--upgrade-strategy", "eager", str(REPO)], check=True)
    print(f"installed into {venv}")


def versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        f"names = {list(VERSIONS)!r}\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = '-'\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, str] = json.loads(done.stdout)
    return result


def timed(argv: list[str], runs: int, env: dict[str, str]) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``runs`` runs (after one warm-up, so the OS page cache is warm
    and .pyc files exist, as on any second run after installing)."""
    subprocess.run(argv, capture_output=True, env=env, check=False)
    walls, cpus = [], []
    for _ in range(runs):
        before = os.times()
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=env, check=False)
        walls.append(time.perf_counter() - t0)
        after = os.times()
        cpus.append(
            (after.children_user - before.children_user)
            + (after.children_system - before.children_system)
        )
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    return walls, cpus


def slowest_imports(python: Path, args: list[str], env: dict[str, str], top: int = 8) -> str:
    code = "import sys; from tracecheck.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [str(python), "-X", "importtime", "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if len(name) - len(name.lstrip()) <= 1:  # top-level imports only
                rows.append((int(parts[1]), name.strip()))
    return "\n".join(f"    {us / 1000:7.1f} ms  {name}" for us, name in sorted(rows)[::-1][:top])


def report(name: str, walls: list[float], cpus: list[float]) -> None:
    walls, cpus = sorted(walls), sorted(cpus)
    p90 = walls[int(0.9 * (len(walls) - 1))]
    median = statistics.median(walls)
    print(
        f"{name:<6} median {median:.3f} s  p90 {p90:.3f} s  min {walls[0]:.3f} s  "
        f"cpu median {statistics.median(cpus):.3f} s  (target <= {TARGETS[name]} s: "
        f"{'met' if median <= TARGETS[name] else 'NOT met'})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fresh", type=Path, help="create this venv with a fresh resolve and exit")
    ap.add_argument("--venv", type=Path, help="the venv whose tracecheck to time")
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--prometheus-url", default="http://127.0.0.1:9090")
    ap.add_argument("--no-query", action="store_true", help="time --help only")
    args = ap.parse_args()
    if args.fresh:
        fresh(args.fresh)
        return
    venv = args.venv or Path(sys.prefix)
    python, tracecheck = venv / "bin" / "python", venv / "bin" / "tracecheck"
    # As a user runs it: no TRACECHECK_* settings, and bytecode written once and reused.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRACECHECK_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions(python).items()))
    print(f"{args.runs} runs each, whole process (exec to exit):")
    report("help", *timed([str(tracecheck), "--help"], args.runs, env))
    query = ["query", "promql", "count(up)", "--prometheus-url", args.prometheus_url]
    if not args.no_query:
        report("query", *timed([str(tracecheck), *query], args.runs, env))
    print("slowest imports, tracecheck --help:")
    print(slowest_imports(python, ["--help"], env))
    if not args.no_query:
        print("slowest imports, tracecheck query promql 'count(up)':")
        print(slowest_imports(python, query, env))
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
