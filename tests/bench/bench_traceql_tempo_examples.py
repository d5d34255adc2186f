"""Run Tempo's own TraceQL example sets through a running stand-in and print the verdicts.

    .venv/bin/python tests/bench/bench_traceql_tempo_examples.py PATH [--ref v2.9.0] [-v]

PATH is a grafana/tempo checkout, or its git directory (for example the bare mirror that the
``fetch`` tool makes); the sets are read from ``pkg/traceql/test_examples.yaml`` at ``--ref``
(git) or from the working tree. Nothing of Tempo is stored in this repository: the file is
read at run time and only counts are printed.

A stand-in starts in-process on free ports with every processor, receives one small trace
(tests/standin/tql_trace.py) and answers each query over HTTP: a query with a metrics stage
goes to ``/api/metrics/query_range``, any other to ``/api/search``. Verdicts: 200 evaluated;
400 ``parse error`` (syntax); 400 ``... not yet supported`` (Tempo's own "unsupported");
400 ``unsupported by the Tempo stand-in``; any other 400 a validation error; 5xx an evaluation
failure. The issue's targets: 0 valid queries refused as syntax errors, 0 parse_fails
accepted, at least 80 % of the valid search queries evaluated.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "stack" / "local"))
sys.path.insert(0, str(REPO / "tests" / "standin"))

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc  # noqa: E402
from tempo_standin.app import Standin  # noqa: E402
from tempo_standin.config import StandinConfig  # noqa: E402
from tempo_standin.traceql import ParseError, parse  # noqa: E402
from tql_trace import TID, apiserver_groups, request  # noqa: E402

EXAMPLES = "pkg/traceql/test_examples.yaml"


def read_examples(path: Path, ref: str) -> dict[str, list[str]]:
    if (path / EXAMPLES).is_file():
        text = (path / EXAMPLES).read_text()
    else:
        git_dir = path / ".git" if (path / ".git").exists() else path
        text = subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"{ref}:{EXAMPLES}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    doc = yaml.safe_load(text)
    return {k: list(v or []) for k, v in doc.items() if isinstance(v, list)}


def is_metrics(query: str) -> bool:
    try:
        return parse(query).metrics is not None
    except ParseError:
        return False


def verdict(client: httpx.Client, query: str) -> tuple[str, str]:
    now = int(time.time())
    if is_metrics(query):
        r = client.get(
            "/api/metrics/query_range",
            params={"q": query, "start": str(now - 600), "end": str(now + 60), "step": "15s"},
        )
    else:
        r = client.get("/api/search", params={"q": query, "start": str(now - 600),
                                               "end": str(now + 60)})  # fmt: skip
    text = r.text.strip()
    if r.status_code == 200:
        return "evaluated", ""
    if r.status_code >= 500:
        return "evaluation error", text
    if "unsupported by the Tempo stand-in" in text:
        return "stand-in unsupported", text
    if "parse error" in text:
        return "syntax error", text
    if text.endswith("not yet supported"):
        return "tempo unsupported", text
    return "validation error", text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path", type=Path, help="a grafana/tempo checkout or git directory")
    ap.add_argument("--ref", default="v2.9.0", help="git ref to read (default v2.9.0)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every query")
    args = ap.parse_args()
    sets = read_examples(args.path, args.ref)

    config = StandinConfig(
        http_port=0,
        otlp_grpc="127.0.0.1:0",
        otlp_http="127.0.0.1:0",
        processors=("service-graphs", "span-metrics", "local-blocks"),
        trace_idle_period=0.2,
        flush_check_period=0.05,
        collection_interval=3600.0,
        filter_server_spans=False,
    )
    app = Standin(config, log=lambda _line: None)
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.otlp_grpc_port}") as ch:
            stub = trace_service_pb2_grpc.TraceServiceStub(ch)  # type: ignore[no-untyped-call]
            stub.Export(request(TID, time.time_ns() - 10**9, apiserver_groups()), timeout=10)
        client = httpx.Client(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30)
        deadline = time.monotonic() + 20
        while not client.get("/api/search", params={"q": "{}"}).json().get("traces"):
            if time.monotonic() > deadline:
                raise SystemExit("the trace never became searchable")
            time.sleep(0.05)
        results: dict[str, Counter[str]] = {}
        search_valid = search_evaluated = 0
        for name, queries in sets.items():
            c: Counter[str] = Counter()
            for q in queries:
                v, text = verdict(client, q)
                c[v] += 1
                if name == "valid" and not is_metrics(q):
                    search_valid += 1
                    search_evaluated += v == "evaluated"
                if args.verbose:
                    print(f"  {name:15} {v:22} {q!r} {text}")
            results[name] = c
        client.close()
    finally:
        app.stop()

    print(f"Tempo {args.ref} {EXAMPLES} through the stand-in:")
    for name, c in results.items():
        parts = ", ".join(f"{k} {n}" for k, n in sorted(c.items()))
        print(f"  {name}: {sum(c.values())} queries: {parts}")
    valid = results.get("valid", Counter())
    fails = results.get("parse_fails", Counter())
    pct = 100.0 * search_evaluated / search_valid if search_valid else 0.0
    print(
        f"valid rejected as syntax errors: {valid['syntax error']}; parse_fails accepted: "
        f"{sum(fails.values()) - fails['syntax error']}; valid search queries evaluated: "
        f"{search_evaluated}/{search_valid} ({pct:.1f} %)"
    )


if __name__ == "__main__":
    main()
