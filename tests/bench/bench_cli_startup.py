"""Benchmark: cold start of `tracecheck --help` (a new interpreter each time).

    .venv/bin/python tests/bench/bench_cli_startup.py [--runs 20]

Target: <= 0.3 s. Also prints the slowest imports of `tracecheck.cli` (python -X importtime), to
show that pandas, grpc and protobuf stay out of the start-up path. Prints figures only.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tracecheck", "--help"], capture_output=True, check=True
        )
        times.append(time.perf_counter() - t0)
    times.sort()
    print(
        f"tracecheck --help over {args.runs} cold runs: median {statistics.median(times):.3f}s, "
        f"p90 {times[int(0.9 * (len(times) - 1))]:.3f}s, max {times[-1]:.3f}s (target <= 0.3 s)"
    )
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import tracecheck.cli"],
        capture_output=True,
        text=True,
    )
    rows = []
    for line in p.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    heavy = [
        m for _, m in rows if m.strip().split(".")[0] in ("pandas", "grpc", "google", "matplotlib")
    ]
    print(f"heavy modules imported by tracecheck.cli: {heavy or 'none'}")
    print("slowest cumulative imports:")
    for us, mod in sorted(rows, reverse=True)[:6]:
        print(f"  {us / 1000:7.1f} ms  {mod}")


if __name__ == "__main__":
    main()
