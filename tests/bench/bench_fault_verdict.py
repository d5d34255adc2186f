"""Benchmark: time to verdict per fault case, before issue 9 (every check polls to its
deadline, no diagnosis: ``SmokeContext(early_verdict=False)``, main's behaviour) and after
(the watch ends blocked checks early; the diagnosis names the hop).

Run on demand inside the pipeline's namespace (the pipeline must be up):

    .venv/bin/python tests/bench/bench_fault_verdict.py [--cases tempo,collector] [--mode both]
        [--runs 1] [--restarts N]

Each case stops one component of the local pipeline at a set point of a smoke run
(tests/pipeline/faults.py: after the send, or after the apiserver's preflight for etcd and
kube-apiserver) and starts it again afterwards. Printed per case and mode: seconds from the
fault (the stopped component gone) to the end of the last check that failed ("settled") and to
the end of the report, the exit code, and the Diagnosis line. ``--restarts N`` also restarts
the Tempo stand-in N times right before and N times during a run and prints how many passed.
The goal is a verdict within 15 s of the fault. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "pipeline"))

from faults import TRIGGERS, run_with_fault  # noqa: E402

from tracecheck.config import load_settings  # noqa: E402
from tracecheck.errors import TracecheckError  # noqa: E402
from tracecheck.smoke.plan import smoke  # noqa: E402
from tracecheck.stack.local import (  # noqa: E402
    LocalStack,
    default_cache_dir,
    default_state_dir,
    find_repo_root,
)

#: What each case runs: the apiserver leg alone for etcd and kube-apiserver, else everything.
SCOPE = {"etcd": ("smoke.only", ("apiserver",)), "kube-apiserver": ("smoke.only", ("apiserver",))}


def restore(stack: LocalStack, component: str) -> None:
    stack.start(component)
    if component in ("etcd", "kube-apiserver"):
        # kube-apiserver serves again only after its etcd client reconnects.
        end = time.monotonic() + 120
        settings = load_settings(flags={"apiserver.kubeconfig": str(stack.kubeconfig)})
        from tracecheck.backends import open_apiserver

        with open_apiserver(settings) as api:
            while time.monotonic() < end:
                try:
                    ready = api.send("GET", "/readyz", timeout=5).status == 200
                    if (
                        ready
                        and api.send("GET", "/api/v1/namespaces/default", timeout=5).status == 200
                    ):
                        return
                except TracecheckError:  # not yet
                    pass
                time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(TRIGGERS), help="components to stop")
    ap.add_argument("--mode", choices=("before", "after", "both"), default="both")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--restarts", type=int, default=0)
    args = ap.parse_args()
    stack = LocalStack(
        repo=find_repo_root(REPO),
        state_dir=default_state_dir(os.environ),
        cache_dir=default_cache_dir(os.environ),
    )
    stack.up()
    modes = ("before", "after") if args.mode == "both" else (args.mode,)
    rows = []
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        for mode in modes:
            settled, totals = [], []
            code, line = -1, ""
            for _ in range(args.runs):
                flags = {"apiserver.kubeconfig": str(stack.kubeconfig)}
                if case in SCOPE:
                    key, value = SCOPE[case]
                    flags[key] = value  # type: ignore[assignment]
                settings = load_settings(flags=flags)
                try:
                    run = run_with_fault(stack, settings, case, early_verdict=mode == "after")
                finally:
                    restore(stack, case)
                settled.append(run.settled_s)
                totals.append(run.verdict_s)
                code, line = int(run.report.exit_code), run.line()
            row = (case, mode, statistics.median(settled), statistics.median(totals), code, line)
            rows.append(row)
            print(
                f"{case:<15} {mode:<6} settled {rows[-1][2]:6.1f} s  report {rows[-1][3]:6.1f} s  "
                f"exit {code}  {line[:150]}",
                flush=True,
            )
    if args.restarts:
        settings = load_settings(flags={"smoke.skip": ("apiserver",)})
        passed = {"before": 0, "during": 0}
        for _ in range(args.restarts):
            stack.stop("tempo")
            stack.start("tempo")
            passed["before"] += int(smoke(settings).exit_code) == 0
            run = run_with_fault(stack, settings, "tempo", trigger="tempo.search", action="restart")
            passed["during"] += int(run.report.exit_code) == 0
        for when, n in passed.items():
            print(f"stand-in restarted {when} a run: {n} of {args.restarts} passed", flush=True)


if __name__ == "__main__":
    main()
