"""Benchmark: `tracecheck smoke` wall time on the local pipeline, and how soon each check sees
data after it became visible.

Run on demand (the pipeline must be up: `tracecheck stack local up`):

    .venv/bin/python tests/bench/bench_smoke.py [--runs 5]

Detection delay = the moment the check saw the data - the moment the data became visible, where
"visible" comes from the Tempo stand-in's log (`trace <id> visible by id at <t>`,
`trace <id> searchable at <t>`, and the first successful `remote_write` after the send for the
Prometheus checks). Target: median <= 0.5 s. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tracecheck.stack.local import default_state_dir  # noqa: E402

VISIBLE = re.compile(r"trace ([0-9a-f]{32}) visible by id at ([0-9.]+)")
SEARCHABLE = re.compile(r"trace ([0-9a-f]{32}) searchable at ([0-9.]+)")
REMOTE_WRITE = re.compile(r"^(\S+) remote_write url=\S+ status=2\d\d ")


def log_events(log: Path, offset: int) -> tuple[dict[str, float], dict[str, float], list[float]]:
    visible: dict[str, float] = {}
    searchable: dict[str, float] = {}
    writes: list[float] = []
    with log.open(encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        for line in f:
            if m := VISIBLE.search(line):
                visible.setdefault(m.group(1), float(m.group(2)))
            elif m := SEARCHABLE.search(line):
                searchable.setdefault(m.group(1), float(m.group(2)))
            elif m := REMOTE_WRITE.search(line):
                writes.append(datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp())
    return visible, searchable, writes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    log = default_state_dir(os.environ) / "logs" / "tempo.log"
    walls: list[float] = []
    detect: dict[str, list[float]] = {}
    for i in range(args.runs):
        offset = log.stat().st_size
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "tracecheck", "smoke", "--output", "json"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        wall = time.perf_counter() - t0
        report = json.loads(p.stdout)
        checks = {c["name"]: c for c in report["checks"]}
        sent_at = checks["send"]["data"]["sent_at"]
        visible, searchable, writes = log_events(log, offset)
        trace = report["trace_id"]
        first_write = min((w for w in writes if w > sent_at), default=None)
        became = {
            "tempo.trace_by_id": visible.get(trace),
            "tempo.search": searchable.get(trace),
            "prometheus.span_metrics": first_write,
            "prometheus.exemplars": first_write,
            "prometheus.service_graph": first_write,
        }
        row = []
        for name, t_visible in became.items():
            delay = checks[name]["delay_s"]
            if t_visible is None or delay is None:
                row.append(f"{name}=n/a")
                continue
            seen_at = sent_at + delay
            d = seen_at - t_visible
            detect.setdefault(name, []).append(d)
            row.append(f"{name}={d:+.3f}s")
        walls.append(wall)
        print(f"run {i + 1}: exit {p.returncode}, wall {wall:.2f}s; detection: " + ", ".join(row))
    print()
    print(
        f"smoke wall time over {len(walls)} runs: median {statistics.median(walls):.2f}s, "
        f"min {min(walls):.2f}s, max {max(walls):.2f}s"
    )
    print("detection delay after the data became visible (target: median <= 0.5 s):")
    for name, values in detect.items():
        print(
            f"  {name:26s} median {statistics.median(values):.3f}s  max {max(values):.3f}s  "
            f"(n={len(values)})"
        )


if __name__ == "__main__":
    main()
