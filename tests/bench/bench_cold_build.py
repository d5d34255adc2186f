"""Benchmark: the local pipeline's cold build per component and in total, and a warm
`tracecheck stack local up`.

Run on demand; prints a table and asserts nothing.

    # Cold build: empty Go module cache, Go build cache and tracecheck cache (fresh temporary
    # directories: the shared ones are left alone). Needs the network (module downloads).
    .venv/bin/python tests/bench/bench_cold_build.py build
    .venv/bin/python tests/bench/bench_cold_build.py build --ref main   # another revision's recipes
    .venv/bin/python tests/bench/bench_cold_build.py build --jobs 2     # components in parallel

    # Warm `up` (binaries cached): from an empty state directory, then again with everything
    # running. Starts the pipeline on its fixed loopback ports: run it in a network namespace
    # of its own, or where nothing else runs the pipeline.
    .venv/bin/python tests/bench/bench_cold_build.py up [--runs 3]

Each line carries the load average (1 min) before and after, since the host may be shared: a
figure taken under load says so. With one job at a time each row also gives the CPU seconds the
build used (user + system of build.sh and everything it ran): less sensitive to other load than
the wall time, and on an idle machine with N cores the wall time is at least CPU / N.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tracecheck.stack.local import (  # noqa: E402
    LocalStack,
    default_cache_dir,
    find_repo_root,
)
from tracecheck.stack.local.build import cached_build  # noqa: E402

# What `stack local up` builds, and in which order (promtool only serves the tests).
UP_COMPONENTS = ("etcd", "prometheus", "otelcol", "kube-apiserver", "kwok")
# The recipe files a revision needs to build (git archive of another revision).
RECIPE_PATHS = ("stack/local/build", "stack/collector/ocb-manifest.yaml")


def load() -> float:
    return os.getloadavg()[0]


def du_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total / 1e6


@dataclass
class Row:
    name: str
    seconds: float
    load_before: float
    load_after: float
    status: int
    note: str = ""
    cpu: float | None = None  # user + system seconds of the build's processes (one job only)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build_one(
    repo: Path, component: str, out: Path, logs: Path, env: dict[str, str], *, cpu: bool
) -> Row:
    before = load()
    cpu0 = children_cpu()
    t0 = time.monotonic()
    log = logs / f"build-{component}.log"
    with log.open("wb") as fh:
        proc = subprocess.run(
            ["bash", str(repo / "stack/local/build/build.sh"), component, str(out / component)],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=repo,
        )
    seconds = time.monotonic() - t0
    binaries = sorted(p.name for p in (out / component).iterdir() if p.is_file())
    note = ", ".join(binaries) if proc.returncode == 0 else f"FAILED, see {log}"
    used = children_cpu() - cpu0 if cpu else None
    return Row(component, seconds, before, load(), proc.returncode, note, used)


def cmd_build(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="tracecheck-coldbuild-", dir=args.tmp))
    repo = REPO
    if args.ref:
        repo = work / "repo"
        repo.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.ref, *RECIPE_PATHS],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(repo)], input=archive.stdout, check=True)
    components = args.components.split(",") if args.components else list(UP_COMPONENTS)
    env = {
        **os.environ,
        "GOMODCACHE": str(work / "gomodcache"),
        "GOCACHE": str(work / "gocache"),
        "GOTOOLCHAIN": "local",
    }
    env.pop("GOFLAGS", None)
    out, logs = work / "out", work / "logs"
    out.mkdir()
    logs.mkdir()
    cores = os.cpu_count()
    print(
        f"cold build of {', '.join(components)} ({args.ref or 'working tree'}), "
        f"{cores} cores, jobs={args.jobs}, in {work}",
        flush=True,
    )
    start_load = load()
    t0 = time.monotonic()
    rows: list[Row] = []
    if args.jobs > 1:
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [
                pool.submit(build_one, repo, c, out, logs, env, cpu=False) for c in components
            ]
            for future in futures:
                rows.append(future.result())
                print(f"  {rows[-1].name}: {rows[-1].seconds:.0f}s", flush=True)
    else:
        for component in components:
            rows.append(build_one(repo, component, out, logs, env, cpu=True))
            r = rows[-1]  # each row at once: an interrupted run keeps what it measured
            print(
                f"  {component}: {r.seconds:.0f}s wall, {r.cpu or 0:.0f} cpu s, "
                f"load {r.load_before:.2f} -> {r.load_after:.2f}",
                flush=True,
            )
    total = time.monotonic() - t0
    print()
    print(
        f"{'component':<16}{'seconds':>9}{'cpu s':>9}{'load before':>13}{'load after':>12}"
        "  binaries"
    )

    def cpu_cell(value: float | None) -> str:
        return f"{value:>9.1f}" if value is not None else f"{'-':>9}"

    for r in rows:
        print(
            f"{r.name:<16}{r.seconds:>9.1f}{cpu_cell(r.cpu)}{r.load_before:>13.2f}"
            f"{r.load_after:>12.2f}  {r.note}"
        )
    cpus = [r.cpu for r in rows if r.cpu is not None]
    cpu_total = sum(cpus) if len(cpus) == len(rows) else None
    print(
        f"{'total (wall)':<16}{total:>9.1f}{cpu_cell(cpu_total)}{start_load:>13.2f}{load():>12.2f}"
    )
    print(
        f"downloaded modules: {du_mb(work / 'gomodcache'):.0f} MB; "
        f"build cache: {du_mb(work / 'gocache'):.0f} MB"
    )
    if not args.keep:
        subprocess.run(["chmod", "-R", "u+w", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.status == 0 for r in rows) else 1


def cmd_up(args: argparse.Namespace) -> int:
    repo = find_repo_root(REPO)
    cache = default_cache_dir(os.environ)
    rows: list[tuple[str, float, float, float]] = []
    for run in range(1, args.runs + 1):
        state = Path(tempfile.mkdtemp(prefix="tracecheck-bench-up-", dir=args.tmp))
        lines: list[str] = []
        stack = LocalStack(repo=repo, state_dir=state, cache_dir=cache, progress=lines.append)
        missing = [b for b in stack._needed_builds() if cached_build(repo, cache, b) is None]
        if missing:
            print(f"not built yet: {', '.join(missing)}; run `tracecheck stack local up` first")
            return 2
        try:
            before = load()
            t0 = time.monotonic()
            status = stack.up()
            first = time.monotonic() - t0
            if not status.ready:
                print(status.render())
                return 1
            rows.append((f"up #{run}, empty state", first, before, load()))
            before = load()
            t0 = time.monotonic()
            stack.up()
            rows.append((f"up #{run}, all running", time.monotonic() - t0, before, load()))
            ready = [line for line in lines if ": ready in " in line]
            for line in ready:
                print(f"  run {run}: {line}")
        finally:
            stack.down()
            shutil.rmtree(state, ignore_errors=True)
    print()
    print(f"{'what':<26}{'seconds':>9}{'load before':>13}{'load after':>12}")
    for name, seconds, lb, la in rows:
        print(f"{name:<26}{seconds:>9.2f}{lb:>13.2f}{la:>12.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tmp", default=None, help="where temporary directories go")
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build", help="cold build into empty caches")
    build.add_argument("--ref", default="", help="git revision whose recipes to build")
    build.add_argument("--components", default="", help=f"default: {','.join(UP_COMPONENTS)}")
    build.add_argument("--jobs", type=int, default=1, help="components built at once")
    build.add_argument("--keep", action="store_true", help="keep the temporary caches")
    up = sub.add_parser("up", help="warm `stack local up` (binaries cached)")
    up.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    return cmd_build(args) if args.cmd == "build" else cmd_up(args)


if __name__ == "__main__":
    raise SystemExit(main())
