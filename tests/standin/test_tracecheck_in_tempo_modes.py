"""tracecheck's smoke checks against the Tempo stand-in in the modes a real Tempo 2.9 can run in
(issue 10), each turned on by its Tempo configuration key: multi-tenancy (401 ``no org id``),
``http_api_prefix``, the not-ready period after start (``min_ready_duration``) and partial
traces over ``max_bytes_per_trace``. Each stand-in runs in this process on free ports; the smoke
run sends its synthetic trace straight to the stand-in's OTLP receiver (no collector), so only
the Tempo checks are selected.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from servers import TestServer, free_port
from standin_helpers import SERVER, Running, SpanSpec, export_request, poll, send_grpc_as

from tracecheck.config import Settings, load_settings
from tracecheck.results import Report, Status
from tracecheck.smoke.plan import smoke
from tracecheck.smoke.synth import build_trace

TEMPO_CHECKS = ("tempo.trace_by_id", "tempo.search")


def settings_for(r: Running | None, *, port: int = 0, **flags: Any) -> Settings:
    """Settings that point the Tempo checks at a stand-in (``port`` before it listens)."""
    http_port = port or r.app.http_port  # type: ignore[union-attr]
    values: dict[str, Any] = {
        "tempo.url": f"http://127.0.0.1:{http_port}",
        "collector.health_url": "",  # preflight.collector: a gRPC connect to the receiver
        "collector.metrics_url": "",
        "smoke.only": TEMPO_CHECKS,
        "deadlines.trace_by_id": 10.0,
        "deadlines.search": 15.0,
    }
    if r is not None:
        values["collector.endpoint"] = f"127.0.0.1:{r.grpc_port}"
    values.update(flags)
    return load_settings(flags=values)


def statuses(report: Report) -> dict[str, Status]:
    selected = ("preflight.collector", "preflight.tempo", "send", *TEMPO_CHECKS)
    return {name: report.result(name).status for name in selected}


# -- multi-tenancy ----------------------------------------------------------------------------


def test_no_org_id_fails_at_once_and_names_the_tenant_setting(
    make_standin: Callable[..., Running],
) -> None:
    r = make_standin(multitenancy=True)
    # The collector leg writes as team-a; the Tempo client has no tenant. Long deadlines, so
    # ending at the first answer and polling to the deadline cannot be mistaken for each other.
    deadlines = {"deadlines.trace_by_id": 60.0, "deadlines.search": 60.0}
    report = smoke(settings_for(r, **{"collector.tenant": "team-a", **deadlines}))
    by_id = report.result("tempo.trace_by_id")
    assert report.result("preflight.tempo").status is Status.PASS  # /ready needs no tenant
    assert by_id.status is Status.ERROR and report.result("tempo.search").status is Status.ERROR
    assert by_id.detail.startswith(f"tempo at {settings_for(r).tempo.url}/api/v2/traces/")
    assert by_id.detail.endswith(
        "HTTP 401: no org id (Tempo runs with multitenancy_enabled and no tenant was sent: set "
        "--tenant or tempo.tenant (X-Scope-OrgID))"
    )
    assert "--tenant or tempo.tenant" in by_id.hint
    # The first answer ends each check: no poll to the 60 s deadlines.
    assert by_id.elapsed < 20.0 and report.result("tempo.search").elapsed < 20.0
    assert report.exit_code == 3

    ok = smoke(settings_for(r, **{"collector.tenant": "team-a", "tempo.tenant": "team-a"}))
    assert set(statuses(ok).values()) == {Status.PASS}, ok.result("tempo.search").detail


def test_prometheus_401_names_the_header_sent_never_its_value(http_server: TestServer) -> None:
    http_server.answer(401, b"Unauthorized\n")
    s = load_settings(
        flags={
            "prometheus.url": http_server.url,
            "prometheus.headers": (("Authorization", "Bearer s3cr3t-t0ken"),),
            "smoke.only": ("preflight.prometheus",),
        }
    )
    result = smoke(s).result("preflight.prometheus")
    assert result.status is Status.ERROR
    assert result.detail == (
        f"prometheus at {http_server.url}/-/ready: HTTP 401: Unauthorized (credentials missing or "
        "refused; sent header Authorization from prometheus.headers)"
    )
    assert result.hint.startswith("prometheus refused the credentials sent: check prometheus.")
    assert "s3cr3t" not in result.detail + result.hint
    assert len(http_server.requests) == 1


# -- http_api_prefix --------------------------------------------------------------------------


def test_api_prefix_setting_and_its_absence(make_standin: Callable[..., Running]) -> None:
    r = make_standin(http_api_prefix="/tempo")
    report = smoke(settings_for(r, **{"tempo.api_prefix": "/tempo"}))
    assert set(statuses(report).values()) == {Status.PASS}
    assert report.result("preflight.tempo").detail == "ready; version 2.9.0"

    # Without the setting: /ready answers at the root, the API does not; Tempo's /status/config
    # names the prefix, so the preflight says what to set.
    missing = smoke(settings_for(r))
    pre = missing.result("preflight.tempo")
    assert pre.status is Status.ERROR
    assert pre.detail == (
        f"ready, but {settings_for(r).tempo.url}/api/status/buildinfo answered 404: Tempo runs "
        "with http_api_prefix '/tempo' (its /status/config says so)"
    )
    assert pre.hint.startswith("set --tempo-api-prefix /tempo (tempo.api_prefix = '/tempo')")
    assert missing.result("tempo.trace_by_id").status is Status.SKIP


# -- a fresh deploy: connection refused, then 503 not ready, then ready ------------------------


def test_wait_ready_polls_through_refused_and_503(make_standin: Callable[..., Running]) -> None:
    port = free_port()
    holder: list[Running] = []

    def deploy() -> None:
        time.sleep(1.0)  # nothing listens yet: connection refused
        holder.append(make_standin(http_port=port, min_ready_duration=1.5))

    events: list[Any] = []
    thread = threading.Thread(target=deploy)
    thread.start()
    try:
        s = settings_for(None, port=port, **{"smoke.only": ("preflight.tempo",)})
        s = s.replace(**{"smoke.wait_ready": 30.0})
        report = smoke(s, progress=events.append)
    finally:
        thread.join()
    pre = report.result("preflight.tempo")
    assert pre.status is Status.PASS, pre.detail
    assert pre.detail.startswith("ready; version 2.9.0 (waited ")
    assert pre.detail.endswith(
        "it last said: HTTP 503: Ingester not ready: ingester check ready failed: waiting for "
        "1.5s after being ready)"
    )
    said = [e.message.split(": ", 1)[1] for e in events if e.state == "wait"]
    assert said[0] == "connection refused"
    assert said[-1].startswith("HTTP 503: Ingester not ready")
    assert pre.elapsed >= 1.0 + 1.5  # refused for a second, then Tempo's not-ready period


def test_without_wait_ready_the_503_is_an_error(make_standin: Callable[..., Running]) -> None:
    r = make_standin(min_ready_duration=15.0)
    pre = smoke(settings_for(r, **{"smoke.only": ("preflight.tempo",)})).result("preflight.tempo")
    assert pre.status is Status.ERROR
    assert pre.detail == (
        f"tempo at {settings_for(r).tempo.url}/ready: HTTP 503: Ingester not ready: ingester "
        "check ready failed: waiting for 15s after being ready"
    )


def test_wait_ready_gives_up_with_what_it_last_heard(make_standin: Callable[..., Running]) -> None:
    r = make_standin(min_ready_duration=15.0)
    s = settings_for(
        r,
        **{"smoke.only": ("preflight.tempo",), "smoke.wait_ready": "2s", "deadlines.preflight": 1},
    )
    pre = smoke(s).result("preflight.tempo")
    assert pre.status is Status.ERROR
    assert pre.detail.startswith(f"tempo at {s.tempo.url}/ready: not ready after waiting 2.")
    assert "(--wait-ready 2.0s; " in pre.detail
    assert pre.detail.endswith(
        "last answer: HTTP 503: Ingester not ready: ingester check ready failed: waiting for "
        "15s after being ready"
    )


# -- a partial trace --------------------------------------------------------------------------


def test_partial_trace_is_a_fail_quoting_tempo(make_standin: Callable[..., Running]) -> None:
    """The synthetic trace's ID already holds ~400 bytes from another writer; after two block
    cuts Tempo's size tracker forgets it (modules/ingester/instance.go), so the synthetic spans
    are accepted and the combined trace passes max_bytes_per_trace: v2 answers PARTIAL."""
    # One push of a trace is one segment (requestsByTraceID): the synthetic trace weighs about
    # 1440 bytes, under 1600 alone; with the other writer's ~250 bytes it is over.
    r = make_standin(max_bytes_per_trace=1600, max_block_duration=0.2)
    seed = 4242
    tid = build_trace(seed=seed, end_ns=time.time_ns()).trace_id
    big = SpanSpec(tid, b"\x0b" * 8, "big", SERVER, attrs={"payload": "x" * 150})
    send_grpc_as(r.grpc_port, export_request("other-writer", [big]), None)

    def cuts() -> int:
        return sum("block cut tenant=single-tenant" in line for line in list(r.lines))

    before = cuts()
    for n in (1, 2):
        filler = SpanSpec(bytes([n]) * 16, bytes([n]) * 8, "filler", SERVER)
        send_grpc_as(r.grpc_port, export_request("filler", [filler]), None)
        poll(lambda n=n: cuts() >= before + n, timeout=20)
    report = smoke(settings_for(r, **{"smoke.seed": seed, "smoke.only": ("tempo.trace_by_id",)}))
    by_id = report.result("tempo.trace_by_id")
    assert by_id.status is Status.FAIL, by_id.detail
    assert by_id.detail.startswith(
        f'trace {tid.hex()}: Tempo truncated the trace: "Trace exceeds maximum size of 1600 '
        'bytes, a partial trace is returned"; '
    )
    # The segment that crosses the limit is kept (Tempo's combiner): nothing is missing here,
    # yet Tempo says PARTIAL, and so must the check.
    assert by_id.detail.endswith("; 5 of the 5 spans sent came back")
    assert "max_bytes_per_trace" in by_id.hint
    assert by_id.data["partial"] is True
    assert by_id.attempts == 1  # a truncated trace does not come back whole by waiting
