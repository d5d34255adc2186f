"""Benchmark: `tracecheck watch` soak against the local pipeline, and /metrics latency mid-round.

Run on demand (the pipeline must be up: `tracecheck stack local up`):

    .venv/bin/python tests/bench/bench_watch_soak.py [--rounds 500] [--warmup 50]

A watcher (``tracecheck.watch.watch``, its own process) runs ``--rounds`` rounds at interval 0
with the span-metrics checks skipped, on 127.0.0.1:9464 (so the local Prometheus scrapes it as
well). This process scrapes its /metrics about four times a second and reads /proc/<pid>:

* resident memory, threads and open files of the watch process and of its round worker (a
  child process) after ``--warmup`` rounds and every ``--window`` (50) rounds after; target: RSS
  growth after the warm-up < 10 MB, no growth in threads or open files;
* threads and open files again, as the lowest and highest count read (every tick, about four
  times a second) in each window: at interval 0 a round is always running, and a single
  reading lands anywhere in it (a round's thread pool and connections exist only while it
  runs), so growth is judged by the windows' lowest and highest counts, which a leak raises;
* CPU seconds (user + system) per round after the warm-up, of each;
* /metrics latency (request to last byte, new connection each time) while a round runs
  (``tracecheck_round_in_progress 1``); target: < 50 ms.

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tracecheck.stack.local import default_state_dir  # noqa: E402

SPAN_METRICS = (
    "prometheus.span_metrics,prometheus.exemplars,prometheus.service_graph,apiserver.span_metrics"
)
TICKS = os.sysconf("SC_CLK_TCK")
COUNTS = ("watch_threads", "watch_fds", "worker_threads", "worker_fds")


def one_proc(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        # utime, stime: fields 14 and 15 of stat, here 11 and 12 after the command name
        "cpu_s": (int(stat[11]) + int(stat[12])) / TICKS,
    }


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def proc_stats(pid: int) -> dict[str, float]:
    """The watch process and its round worker (a child process): each, and their sum."""
    stats = {f"watch_{k}": v for k, v in one_proc(pid).items()}
    workers = [c for c in children(pid) if b"tracecheck.watch.worker" in _cmdline(c)]
    worker = (
        one_proc(workers[0])
        if workers
        else dict.fromkeys(("rss_mb", "threads", "fds", "cpu_s"), 0.0)
    )
    stats.update({f"worker_{k}": v for k, v in worker.items()})
    for k in ("rss_mb", "threads", "fds", "cpu_s"):
        stats[k] = stats[f"watch_{k}"] + stats[f"worker_{k}"]
    stats["worker_pid"] = float(workers[0]) if workers else 0.0
    return stats


def scrape(client: httpx.Client, url: str) -> tuple[float, int, bool]:
    """(seconds to the last byte, rounds finished, a round in progress)."""
    t0 = time.perf_counter()
    body = client.get(url).text
    took = time.perf_counter() - t0
    rounds = 0
    running = False
    for line in body.splitlines():
        if line.startswith("tracecheck_rounds_total{"):
            rounds += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("tracecheck_round_in_progress "):
            running = float(line.rsplit(" ", 1)[1]) == 1
    return took, rounds, running


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--window", type=int, default=50, help="rounds between readings")
    ap.add_argument("--skip", default=SPAN_METRICS, help="checks skipped in every round")
    ap.add_argument("--listen", default="127.0.0.1:9464")
    args = ap.parse_args()
    kubeconfig = default_state_dir(os.environ) / "kubeconfig"
    code = textwrap.dedent(
        f"""
        import sys
        from tracecheck.config import load_settings
        from tracecheck.watch import watch
        settings = load_settings(env={{}}, flags={{
            "apiserver.kubeconfig": {str(kubeconfig)!r}, "smoke.skip": {args.skip!r}}})
        sys.exit(watch(settings, interval=0, listen={args.listen!r}, rounds={args.rounds},
                       log=lambda line: None))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    url = f"http://{args.listen}/metrics"
    samples: dict[int, dict[str, float]] = {}
    # Per window of --window rounds after the warm-up: the lowest and highest thread and fd counts.
    windows: dict[int, dict[str, tuple[float, float]]] = {}
    during: list[float] = []
    idle: list[float] = []
    started = time.monotonic()
    with httpx.Client(timeout=5) as client:
        while proc.poll() is None:
            try:
                took, rounds, running = scrape(client, url)
            except httpx.HTTPError:
                time.sleep(0.25)
                continue
            (during if running else idle).append(took)
            try:
                now = proc_stats(proc.pid)  # one reading a tick, for the window and the mark
            except OSError:  # the watch is exiting
                now = {}
            if rounds >= args.warmup:
                start = args.warmup + (rounds - args.warmup) // args.window * args.window
                window = windows.setdefault(start, {})
                for key in COUNTS:
                    if key in now:
                        low, high = window.get(key, (now[key], now[key]))
                        window[key] = (min(low, now[key]), max(high, now[key]))
            mark = rounds if rounds == args.warmup else rounds - rounds % args.window
            if (
                rounds
                and (rounds == args.warmup or rounds % args.window == 0)
                and mark not in samples
                and now
            ):
                samples[mark] = now
                samples[mark]["at_s"] = time.monotonic() - started
                s = samples[mark]
                print(
                    f"round {mark:4d}: RSS watch {s['watch_rss_mb']:6.1f} + worker "
                    f"{s['worker_rss_mb']:6.1f} MB  threads {s['watch_threads']:2.0f} + "
                    f"{s['worker_threads']:2.0f}  open files {s['watch_fds']:2.0f} + "
                    f"{s['worker_fds']:2.0f}  CPU {s['watch_cpu_s']:6.1f} + "
                    f"{s['worker_cpu_s']:6.1f} s  wall {s['at_s']:6.0f} s  "
                    f"worker pid {s['worker_pid']:.0f}",
                    flush=True,
                )
            time.sleep(0.25)
    print(f"watch exited with {proc.returncode} after {time.monotonic() - started:.0f} s")
    marks = sorted(m for m in samples if m >= args.warmup)
    if len(marks) >= 2:
        first, last = samples[marks[0]], samples[marks[-1]]
        n = marks[-1] - marks[0]
        for who in ("watch_", "worker_", ""):
            print(
                f"{who.rstrip('_') or 'both'}: round {marks[0]} -> {marks[-1]} ({n} rounds): "
                f"RSS {last[who + 'rss_mb'] - first[who + 'rss_mb']:+.1f} MB (target < 10), "
                f"threads {last[who + 'threads'] - first[who + 'threads']:+.0f}, "
                f"open files {last[who + 'fds'] - first[who + 'fds']:+.0f}, "
                f"CPU {(last[who + 'cpu_s'] - first[who + 'cpu_s']) / n:.3f} s per round"
            )
        print(f"wall {(last['at_s'] - first['at_s']) / n:.2f} s per round")
    size = args.window
    full = [w for w in sorted(windows) if w + size <= args.rounds and windows[w]]
    for w in full:
        print(
            f"rounds {w}-{w + size}, lowest..highest: "
            + "  ".join(f"{k} {windows[w][k][0]:.0f}..{windows[w][k][1]:.0f}" for k in COUNTS)
        )
    if len(full) >= 2:
        a, b = windows[full[0]], windows[full[-1]]
        print(
            f"growth from rounds {full[0]}-{full[0] + size} to {full[-1]}-{full[-1] + size} "
            "(lowest, highest; target: none): "
            + "  ".join(f"{k} {b[k][0] - a[k][0]:+.0f}, {b[k][1] - a[k][1]:+.0f}" for k in COUNTS)
        )
    for name, values in (("while a round runs", during), ("between rounds", idle)):
        if values:
            ms = sorted(v * 1000 for v in values)
            p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
            print(
                f"/metrics latency {name}: n={len(ms)} median {statistics.median(ms):.1f} ms  "
                f"p99 {p99:.1f} ms  max {ms[-1]:.1f} ms (target < 50)"
            )


if __name__ == "__main__":
    main()
