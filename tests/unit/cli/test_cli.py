"""The command line end to end in a subprocess, against real sockets: exit codes, one-line errors.

No pipeline is needed here: each case points tracecheck at a socket this test controls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import TestServer

from tracecheck.config import Settings


def tc(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRACECHECK_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tracecheck", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def assert_no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout


def canned(server: TestServer, status: int, body: bytes, content_type: str) -> None:
    """Make the shared test server answer every request with one response."""
    server.handler = lambda rec: (status, {"Content-Type": content_type}, body)


def test_help_lists_commands_and_exit_codes() -> None:
    p = tc("--help")
    assert p.returncode == 0
    assert "smoke" in p.stdout and "stack" in p.stdout
    assert "3 a backend unreachable or erroring" in " ".join(p.stdout.split())


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["smoke", "--bogus"], 2, "usage: No such option '--bogus'"),
        (["smoke", "--only", "nosuchcheck"], 2, "unknown check 'nosuchcheck'"),
        (["smoke", "--output", "yaml"], 2, "unknown format 'yaml'"),
        (["smoke", "--tempo-url", "localhost:3200"], 4, "malformed URL 'localhost:3200'"),
        (["smoke", "--tempo-url", "http://[::1"], 4, "malformed URL"),
        (["smoke", "--config", "/nonexistent/tracecheck.toml"], 4, "cannot read"),
        (["smoke", "--deadline", "search=soon"], 4, "search: expected seconds or a duration"),
        (["smoke", "--deadline", "nosuch=3"], 4, "unknown setting 'deadlines.nosuch'"),
        (["smoke", "--deadline", "search"], 2, "expected NAME=VALUE, got 'search'"),
        (["query", "run", "etcd-latency", "--param", "service"], 2, "got 'service'"),
    ],
)
def test_bad_input_is_one_line_with_a_documented_code(
    args: list[str], code: int, message: str
) -> None:
    p = tc(*args)
    assert p.returncode == code, p.stderr
    assert message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert_no_traceback(p)


def test_unreadable_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "tc.toml"
    cfg.write_text("[tempo]\nurl = 'http://x:3200'\n")
    cfg.chmod(0)
    p = tc("smoke", "--config", str(cfg))
    if os.geteuid() == 0:  # root reads anything: use a directory instead
        p = tc("smoke", "--config", str(tmp_path))
    assert p.returncode == 4 and "cannot read" in p.stderr
    assert_no_traceback(p)


def _only(check: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return tc(
        "smoke",
        "--only",
        check,
        "--output",
        "json",
        "--deadline",
        "preflight=2",
        *extra,
        timeout=30,
    )


def _detail(p: subprocess.CompletedProcess[str], name: str) -> tuple[str, str]:
    report = json.loads(p.stdout)
    check = next(c for c in report["checks"] if c["name"] == name)
    return check["status"], check["detail"]


def test_closed_ports_are_backend_errors_naming_each_hop(free_port: int) -> None:
    port = free_port
    p = tc(
        "smoke",
        "--output",
        "json",
        "--deadline",
        "preflight=2",
        "--collector-endpoint",
        f"127.0.0.1:{port}",
        "--collector-health-url",
        f"http://127.0.0.1:{port}/",
        "--tempo-url",
        f"http://127.0.0.1:{port}",
        "--prometheus-url",
        f"http://127.0.0.1:{port}",
        "--skip",
        "apiserver",
        timeout=30,
    )
    assert p.returncode == 3, p.stderr
    assert_no_traceback(p)
    for name, system in (
        ("preflight.collector", "collector"),
        ("preflight.tempo", "tempo"),
        ("preflight.prometheus", "prometheus"),
    ):
        status, detail = _detail(p, name)
        assert status == "ERROR"
        assert detail.startswith(f"{system} at http://127.0.0.1:{port}")
        assert "refused" in detail
    assert _detail(p, "tempo.search")[0] == "SKIP"


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expect"),
    [
        (401, b"no org id", "text/plain", "401"),
        (404, b"404 page not found", "text/plain", "404"),
        (500, b'{"error":"internal"}', "application/json", "500"),
        (200, b"{not json", "application/json", "ready"),
    ],
)
def test_http_failures_of_tempo(
    http_server: TestServer, status: int, body: bytes, content_type: str, expect: str
) -> None:
    server = http_server
    canned(server, status, body, content_type)
    p = _only(
        "preflight.tempo",
        "--tempo-url",
        server.url,
        "--tempo-header",
        "Authorization=Bearer s3cr3t",
    )
    assert_no_traceback(p)
    result, detail = _detail(p, "preflight.tempo")
    assert p.returncode == 3 and result == "ERROR", detail
    assert detail.startswith(f"tempo at {server.url}") and expect in detail
    assert "s3cr3t" not in p.stdout + p.stderr
    assert server.requests and server.requests[0].headers.get("authorization") == "Bearer s3cr3t"


def test_garbage_json_from_prometheus(http_server: TestServer) -> None:
    server = http_server
    canned(server, 200, b"<html>proxy login</html>", "text/html")
    p = _only("preflight.prometheus", "--prometheus-url", server.url)
    assert_no_traceback(p)
    result, detail = _detail(p, "preflight.prometheus")
    assert p.returncode == 3 and result == "ERROR"
    assert detail.startswith(f"prometheus at {server.url}")


def test_tls_against_a_plaintext_port(http_server: TestServer) -> None:
    canned(http_server, 200, b"ready", "text/plain")
    p = _only("preflight.tempo", "--tempo-url", http_server.url.replace("http://", "https://"))
    assert_no_traceback(p)
    result, detail = _detail(p, "preflight.tempo")
    assert p.returncode == 3 and result == "ERROR"
    assert "TLS" in detail and "\n" not in detail


def test_a_stalled_server_cannot_hold_the_check_past_its_deadline(stalled_port: int) -> None:
    # The request timeout is 60 s, the preflight deadline 2 s: a check that waited for the
    # request to time out would take 60 s, one bounded by its deadline about 2 s. The margin
    # between the two is wide enough for any load on the machine (speed is a benchmark's job).
    p = tc(
        "smoke", "--only", "preflight.prometheus", "--output", "json", "--deadline", "preflight=2",
        "--prometheus-url", f"http://127.0.0.1:{stalled_port}",
        env={"TRACECHECK_PROMETHEUS_TIMEOUT": "60"}, timeout=60,
    )  # fmt: skip
    assert_no_traceback(p)
    report = json.loads(p.stdout)
    check = next(c for c in report["checks"] if c["name"] == "preflight.prometheus")
    assert p.returncode == 3 and check["status"] == "ERROR"
    assert "no answer within" in check["detail"]
    assert check["deadline_s"] == 2.0
    assert check["elapsed_s"] < 30  # far below the 60 s an unbounded wait would take


def test_kubeconfig_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from tracecheck.config import load_settings, with_kubeconfig

    def _with_kubeconfig(settings: Settings) -> Settings:
        return with_kubeconfig(settings, os.environ)

    env_kc = tmp_path / "env-kubeconfig"
    env_kc.write_text("apiVersion: v1\n")
    monkeypatch.setenv("KUBECONFIG", str(env_kc))
    monkeypatch.setenv("TRACECHECK_STATE_DIR", str(tmp_path / "no-local-pipeline"))
    cfg = tmp_path / "tc.toml"
    cfg.write_text('[apiserver]\nkubeconfig = "/from/the/file"\n')
    # The TOML file beats KUBECONFIG (file < env < flags concerns TRACECHECK_* variables only).
    assert _with_kubeconfig(load_settings(cfg)).apiserver.kubeconfig == "/from/the/file"
    # Nothing chosen: KUBECONFIG fills it.
    assert _with_kubeconfig(load_settings()).apiserver.kubeconfig == str(env_kc)
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _with_kubeconfig(load_settings()).apiserver.kubeconfig == ""  # in-cluster


def test_promql_refusal_shows_prometheus_message_and_a_caret(http_server: TestServer) -> None:
    # Prometheus v3.8.0's answer to "sum(rate(up[5m])) by (job" (web/api/v1/api.go).
    error = 'invalid parameter "query": 1:26: parse error: unclosed left parenthesis'
    body = json.dumps({"status": "error", "errorType": "bad_data", "error": error}).encode()
    http_server.handler = lambda rec: (400, {"Content-Type": "application/json"}, body)
    query = "sum(rate(up[5m])) by (job"
    p = tc("query", "promql", query, "--prometheus-url", http_server.url)
    assert p.returncode == 4, p.stderr
    assert p.stderr.splitlines() == [
        f"tracecheck: error: prometheus at {http_server.url}/api/v1/query: bad_data: {error}",
        f"  {query}",
        "  " + " " * 25 + "^",
    ]
    assert_no_traceback(p)


def test_wait_ready_logs_each_new_answer_and_gives_up_in_one_line(free_port: int) -> None:
    url = f"http://127.0.0.1:{free_port}"
    p = tc("smoke", "-o", "json", "--only", "preflight.tempo", "--wait-ready", "1s",
           "--deadline", "preflight=2", "--tempo-url", url)  # fmt: skip
    assert p.returncode == 3, p.stderr
    # Not a terminal: each new answer is a line on stderr, once however often it repeats.
    assert p.stderr.splitlines() == [
        f"tracecheck: waiting for preflight.tempo (0 s): tempo at {url}/ready: connection refused"
    ]
    result, detail = _detail(p, "preflight.tempo")
    assert result == "ERROR"
    # Never less patient than without --wait-ready: the preflight deadline (2 s) still holds.
    assert detail.startswith(f"tempo at {url}/ready: not ready after waiting 2.")
    assert "(deadlines.preflight 2.0s, longer than --wait-ready 1.0s; " in detail
    assert detail.endswith("attempts); last answer: connection refused")
    assert_no_traceback(p)
