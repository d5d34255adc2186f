"""Benchmark: 100,000 apiserver spans -> latency table (issue 5: under 2 s and 500 MB).

Run on demand, not collected by pytest (pyproject ``norecursedirs``)::

    .venv/bin/python tests/bench/bench_latency_table.py [--spans 100000] [--repeat 3]

The spans are :class:`tracecheck.backends.tempo.SearchSpan` values as a TraceQL search returns them
(``http.method``, ``http.target``, ``http.status_code`` selected), over 60 endpoints with
log-normal durations, 2 % WATCH requests and 1 % 5xx. Timed: :func:`tracecheck.latency.table.
spans_frame` + :func:`latency_table` (WATCH excluded), i.e. what ``tracecheck report apiserver``
does with the search results. Memory: the peak of Python and numpy allocations during the timed
part (tracemalloc; numpy reports its buffers to it) and the process's peak RSS, which includes
the interpreter, pandas and the input spans.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import sys
import time
import tracemalloc

from tracecheck.backends.tempo import SearchSpan
from tracecheck.latency.table import latency_table, spans_frame

RESOURCES = ["pods", "configmaps", "secrets", "services", "deployments", "leases", "events",
             "serviceaccounts", "endpoints", "replicasets"]  # fmt: skip


def make_spans(n: int, seed: int = 0) -> list[SearchSpan]:
    rng = random.Random(seed)
    endpoints = []
    for res in RESOURCES:
        for method, named in (("GET", False), ("GET", True), ("PATCH", True), ("PUT", True),
                              ("POST", False), ("DELETE", True)):  # fmt: skip
            route = f"/api/v1/namespaces/{{:namespace}}/{res}" + ("/{:name}" if named else "")
            endpoints.append((method, route, named, res))
    spans = []
    start = 1_750_000_000_000_000_000
    for i in range(n):
        method, route, named, res = endpoints[i % len(endpoints)]
        watch = method == "GET" and not named and rng.random() < 0.02
        target = f"/api/v1/namespaces/ns{i % 7}/{res}" + (f"/obj-{i % 97}" if named else "")
        if watch:
            target += "?watch=true&resourceVersion=1"
        duration_ns = int(rng.lognormvariate(0.5, 1.0) * 1e6) if not watch else 300 * 10**9
        status = 503 if rng.random() < 0.01 else 200
        spans.append(
            SearchSpan(
                span_id=i.to_bytes(8, "big"),
                name=f"{method} {route}",
                start_ns=start + i * 1_000_000,
                duration_ns=duration_ns,
                attributes={
                    "http.method": method,
                    "http.target": target,
                    "http.status_code": status,
                },
            )
        )
    return spans


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    t = time.perf_counter()
    spans = make_spans(args.spans)
    print(f"input: {len(spans):,} SearchSpan values built in {time.perf_counter() - t:.2f} s")
    latency_table(spans_frame(spans[:100]))  # warm-up: imports pandas/numpy, caches

    # Timed runs without tracemalloc (it slows every allocation down about threefold)...
    times = []
    table = None
    for _ in range(args.repeat):
        gc.collect()
        t = time.perf_counter()
        table = latency_table(spans_frame(spans), by=("name",), include_watch=False)
        times.append(time.perf_counter() - t)
    assert table is not None
    # ...and one more run under tracemalloc for the peak of what the run allocates.
    gc.collect()
    tracemalloc.start()
    latency_table(spans_frame(spans), by=("name",), include_watch=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    best, worst = min(times), max(times)
    print(f"latency table: {len(table)} endpoints, {int(table['count'].sum()):,} spans counted "
          f"(WATCH excluded)")  # fmt: skip
    print(f"wall time: best {best:.3f} s, worst {worst:.3f} s over {args.repeat} runs "
          f"(target < 2 s)")  # fmt: skip
    print(f"peak traced memory (Python + numpy) of one run: {peak / 2**20:.1f} MiB; "
          f"process peak RSS: {rss:.1f} MiB (target < 500 MB)")  # fmt: skip
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    ok = worst < 2.0 and rss * 2**20 < 500e6 and peak < 500e6
    print("PASS" if ok else "OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
