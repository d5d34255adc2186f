"""Benchmark: the local pipeline's capacity, by ``tracecheck load --ramp``, and where it gave way.
Prints figures; asserts nothing.

    # the local pipeline must be up (tracecheck stack local up); inside its namespace:
    .venv/bin/python tests/bench/bench_load_ramp.py [--ramp 4000:40000:4000] [--step-duration 5]

The ramp sends to the first collector (the one kube-apiserver exports to, then the Tempo
stand-in, then Prometheus), raises the rate step by step, accounts each step at every hop (no
span-metrics: the ramp skips them) and stops at the first step where a hop lost spans or the
collector refused any. It prints each step (rate asked and achieved, spans sent, refused, lost,
the generator's worst lag, the verdict) and the capacity: the last clean rate, and the hop that
gave way with the reason the hop's own counters give.

The Tempo stand-in holds every span in memory and answers TraceQL more slowly the more it
holds: it is restarted before the ramp, so every run starts from the same state, and after it
(``--keep-tempo`` skips both), so that smoke and the pipeline tests find it responsive. The
machine's load average is printed: the generator and the pipeline share the same cores, so a
busy machine lowers the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tracecheck.stack.local import (  # noqa: E402
    LocalStack,
    default_cache_dir,
    default_state_dir,
)


def restart_tempo() -> None:
    stack = LocalStack(
        repo=REPO, state_dir=default_state_dir(os.environ), cache_dir=default_cache_dir(os.environ)
    )
    stack.stop("tempo")
    stack.start("tempo")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ramp", default="4000:40000:4000", help="START:END:STEP spans/s")
    ap.add_argument("--step-duration", type=float, default=5.0, help="seconds per step")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    ap.add_argument("--protocol", default="grpc")
    ap.add_argument("--keep-tempo", action="store_true", help="do not restart the Tempo stand-in")
    args = ap.parse_args()

    from tracecheck.cli import main as cli

    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f} on {os.cpu_count()} CPUs")  # fmt: skip
    if not args.keep_tempo:
        restart_tempo()
        print("tempo stand-in restarted before the ramp")
    out = Path(tempfile.mkdtemp(prefix="bench-ramp-")) / "ramp.json"
    started = time.monotonic()
    code = cli(
        ["load", "--ramp", args.ramp, "--step-duration", str(args.step_duration),
         "--concurrency", str(args.concurrency), "--protocol", args.protocol,
         "--service", "tracecheck-bench-ramp", "--output", f"json:{out}"]
    )  # fmt: skip
    took = time.monotonic() - started
    report = json.loads(out.read_text())
    what = f"({args.protocol}, concurrency {args.concurrency})"
    print(f"\ntracecheck load --ramp {args.ramp} --step-duration {args.step_duration:g} {what}: "
          f"exit {code} in {took:.0f} s")  # fmt: skip
    cols = ("rate", "achieved", "sent", "refused", "lost", "loss_pct", "max_lag_s", "verdict")
    print("  " + "  ".join(f"{c:>9}" for c in cols) + "  gave way / why")
    for row in report["tables"]["ramp"]:
        cells = "  ".join(f"{row[c]!s:>9}" for c in cols)
        why = f"{row['gave_way']}: {row['why']}" if row["gave_way"] else ""
        print(f"  {cells}  {why}")
    (summary,) = report["tables"]["summary"]
    capacity = {c["name"]: c for c in report["checks"]}["ramp.capacity"]
    print(f"\ncapacity: {summary['capacity_spans_per_s']} spans/s; {capacity['detail']}")
    if "accounting" in report["tables"]:
        print("\naccounting of the step that gave way:")
        for row in report["tables"]["accounting"]:
            print(f"  {row['hop']:<13} expected {row['expected']!s:>7}  observed "
                  f"{row['observed']!s:>7}  lost {row['lost']!s:>6}  {row['basis']:<12} "
                  f"{row['cause']}")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not args.keep_tempo:
        restart_tempo()
        print("tempo stand-in restarted (--keep-tempo keeps it)")


if __name__ == "__main__":
    main()
