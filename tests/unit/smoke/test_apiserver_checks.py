"""The apiserver leg's logic against a simulated apiserver, Tempo and Prometheus, with an injected
clock: modes, matching by parent span ID / link / Audit-Id, the settle window, implied rates,
hints, the latency table, probe's options.

The simulation follows what the real parts do (docs/reference/apiserver.md): a trusted caller's
SERVER span is a child of its traceparent (§4.2); an untrusted caller's request starts a new trace,
sampled at a rate, whose SERVER span links the caller's span and carries ``audit-id`` (§5.2); spans
reach Tempo after the apiserver's 5 s batch delay (§3); Tempo makes them searchable later than by ID
(docs/reference/tempo.md §10). The real apiserver is in tests/pipeline/test_apiserver.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tracecheck.backends import Backends
from tracecheck.backends.apiserver import ApiReply, Credentials, ServerVersion, UserInfo
from tracecheck.backends.prometheus import QueryResult, RangeSeries
from tracecheck.backends.tempo import (
    BuildInfo,
    Link,
    SearchResult,
    Span,
    SpanSet,
    Trace,
    TraceSummary,
)
from tracecheck.config import Settings, load_settings
from tracecheck.errors import AuthError, ExitCode, UsageError
from tracecheck.polling import FakeClock
from tracecheck.results import CheckResult, Report, Status
from tracecheck.smoke.apiserver_checks import (
    LATENCY_TABLE,
    LINK_SETTLE,
    RequestRecord,
    implied_rate,
    leg_ids,
)
from tracecheck.smoke.engine import SmokeContext
from tracecheck.smoke.plan import probe

ADMIN = UserInfo("tracecheck-admin", ("system:masters", "system:authenticated"))
VIEWER = UserInfo("tracecheck-viewer", ("system:authenticated",))
MONITOR = UserInfo("tracecheck-monitoring", ("system:monitoring", "system:authenticated"))
CREDS = Credentials("https://127.0.0.1:6443", "test", "", "client certificate")


@dataclass
class World:
    """The apiserver, Tempo and Prometheus as one simulation on a FakeClock."""

    clock: FakeClock
    user: UserInfo | None = ADMIN
    export_delay: float = 5.0  # the apiserver's BatchSpanProcessor schedule delay
    search_delay: float = 10.0  # Tempo: searchable after trace_idle_period + flush tick
    metrics_delay: float = 15.0  # the metrics-generator's collection interval
    exports: bool = True  # False: the apiserver cannot reach the collector
    honours_traceparent: bool = True  # False: a trusted-looking user that is not trusted
    sampled: Callable[[int], bool] = lambda i: i % 4 == 0  # link mode: 1 in 4
    late: Callable[[int], float] = lambda i: 0.0  # extra export delay per request
    link_search: bool = True  # Tempo answers { link:traceID = ... }
    partial: str = ""  # Tempo's PARTIAL message for every trace by ID ("": complete)
    statuses: dict[str, int] = field(default_factory=dict)
    whoami_error: Exception | None = None
    spans: list[tuple[float, Span]] = field(default_factory=list)
    sent: list[tuple[str, str, str | None, Any]] = field(default_factory=list)

    # -- apiserver ---------------------------------------------------------------------------
    credentials: Credentials = CREDS
    address: str = "https://127.0.0.1:6443"

    def readyz(self, **kw: Any) -> str:
        return "ok"

    def version(self, **kw: Any) -> ServerVersion:
        return ServerVersion("v1.34.4", 1, 34, "linux/amd64")

    def whoami(self, **kw: Any) -> UserInfo:
        if self.whoami_error is not None:
            raise self.whoami_error
        assert self.user is not None
        return self.user

    def send(
        self,
        method: str,
        path: str,
        *,
        traceparent: str | None = None,
        json_body: Any = None,
        timeout: float | None = None,
    ) -> ApiReply:
        i = len(self.sent)
        self.sent.append((method, path, traceparent, json_body))
        status = self.statuses.get(path, 200)
        audit = f"00000000-0000-4000-8000-{i:012d}"
        assert traceparent is not None
        _, tid_hex, sid_hex, flags = traceparent.split("-")
        tid, sid = bytes.fromhex(tid_hex), bytes.fromhex(sid_hex)
        now_ns = int(self.clock.time() * 1e9)
        trusted = self.user is not None and bool(self.user.privileged_groups)
        name = "GET" if not path.startswith("/api/") else f"{method} /api/v1/x"
        attrs = {"http.method": method, "http.target": path, "http.status_code": status,
                 "audit-id": audit}  # fmt: skip
        server: Span | None = None
        if trusted and self.honours_traceparent and flags == "01":
            server = span(
                tid, bytes([1, i % 256, i // 256, 0, 0, 0, 0, 1]), sid, name, now_ns, attrs
            )
        elif self.sampled(i):
            own = bytes([9]) + i.to_bytes(15, "big")
            sid2 = bytes([2, i % 256, i // 256, 0, 0, 0, 0, 1])
            server = span(own, sid2, b"", name, now_ns, attrs, links=(Link(tid, sid),))
        if server is not None and self.exports:
            at = self.clock.monotonic() + self.export_delay + self.late(i)
            child = span(server.trace_id, server.span_id[:7] + b"\x02", server.span_id,
                         "authorization", now_ns, {}, kind="SPAN_KIND_INTERNAL")  # fmt: skip
            self.spans += [(at, server), (at, child)]
        message = "forbidden: not allowed" if status == 403 else ""
        return ApiReply(method, path, status, audit, 0.001, b"", message)

    # -- tempo -------------------------------------------------------------------------------

    def ready(self, **kw: Any) -> None:
        pass

    def buildinfo(self, **kw: Any) -> BuildInfo:
        return BuildInfo("2.9.0", "r", "main", "go")

    def visible(self, delay: float) -> list[Span]:
        now = self.clock.monotonic()
        return [s for at, s in self.spans if now >= at + delay]

    def trace(self, trace_id: bytes, **kw: Any) -> Trace:
        spans = tuple(s for s in self.visible(0) if s.trace_id == trace_id)
        # Tempo answers PARTIAL once the trace passed max_bytes_per_trace (tempo.md §4.3).
        return Trace(trace_id, spans, partial=bool(self.partial and spans), message=self.partial)

    def search(self, query: str, **kw: Any) -> SearchResult:
        hits: dict[bytes, int] = {}
        link = re.fullmatch(r'\{ link:traceID = "([0-9a-fA-F]{1,32})" \}', query)
        audits = set(re.findall(r'span\."audit-id" = "([^"]+)"', query))
        assert link or audits, query
        for s in self.visible(self.search_delay):
            # Tempo compares the ID's text as storage keeps it: hex, leading zeros trimmed.
            linked = link and any(lk.trace_id.hex().lstrip("0") == link.group(1) for lk in s.links)
            if linked and self.link_search:
                hits[s.trace_id] = hits.get(s.trace_id, 0) + 1
            if s.attributes.get("audit-id") in audits:
                hits[s.trace_id] = hits.get(s.trace_id, 0) + 1
        traces = tuple(
            TraceSummary(tid, "apiserver", "GET", 0, 1, (SpanSet((), n, {}),))
            for tid, n in hits.items()
        )
        return SearchResult(traces, {})

    # -- prometheus ----------------------------------------------------------------------------

    def exemplar_storage_enabled(self, **kw: Any) -> bool:
        return True

    def label_values(self, label: str, **kw: Any) -> tuple[str, ...]:
        return ("traces_spanmetrics_calls_total", "traces_spanmetrics_latency_bucket")

    def query(self, q: str, **kw: Any) -> QueryResult:
        m = re.fullmatch(r"traces_spanmetrics_calls_total\{(.*)\}\[(\d+)s\]", q)
        assert m is not None, q
        want = dict(re.findall(r'([a-z_]+)="([^"]*)"', m.group(1)))
        assert want == {"service": "apiserver", "span_kind": "SPAN_KIND_SERVER"}
        count = sum(1 for s in self.visible(self.metrics_delay) if s.kind == "SPAN_KIND_SERVER")
        labels = {"__name__": "traces_spanmetrics_calls_total", **want}
        # 100 calls from before the run, then ours, sampled at the run's "now".
        series = (RangeSeries(labels, ((self.clock.time(), 100.0 + count),)),)
        return QueryResult("matrix", (), series)

    def close(self) -> None:
        pass


def span(
    trace_id: bytes,
    span_id: bytes,
    parent: bytes,
    name: str,
    start_ns: int,
    attrs: dict[str, Any],
    *,
    kind: str = "SPAN_KIND_SERVER",
    links: tuple[Link, ...] = (),
) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_ns=start_ns,
        end_ns=start_ns + 1_500_000,
        status_code="STATUS_CODE_UNSET",
        status_message="",
        attributes=attrs,
        resource={"service.name": "apiserver"},
        scope_name="otelhttp",
        links=links,
    )


def settings(**env: str) -> Settings:
    return load_settings(env={"TRACECHECK_SMOKE_SEED": "4242", **env})


def run_probe(world: World, s: Settings | None = None, **kw: Any) -> Report:
    s = s or settings()
    fake: Any = world  # one fake answers as the apiserver, Tempo and Prometheus
    backends = Backends(s, apiserver=fake, tempo=fake, prometheus=fake)
    return probe(
        s,
        clock=world.clock,
        backends=backends,
        context=SmokeContext(s, world.clock, workers=1, backends=backends),
        **kw,
    )


def statuses(report: Report) -> dict[str, Status]:
    return {r.name: r.status for r in report.results}


def result(report: Report, name: str) -> CheckResult:
    return report.result(name)


# -- parent/child ---------------------------------------------------------------------------------


def test_trusted_requests_come_back_as_children_of_our_spans() -> None:
    world = World(FakeClock())
    report = run_probe(world)
    assert statuses(report) == {
        "preflight.tempo": Status.PASS,
        "preflight.prometheus": Status.PASS,
        "apiserver.reachable": Status.PASS,
        "apiserver.requests": Status.PASS,
        "apiserver.trace": Status.PASS,
        "apiserver.span_metrics": Status.PASS,
    }
    assert report.exit_code == ExitCode.OK
    reach = result(report, "apiserver.reachable")
    assert reach.data["mode"] == "parent-child"
    assert "mode parent-child: user 'tracecheck-admin' is in system:masters" in reach.detail
    # Four default paths, one request each, every one with our trace ID and its own span.
    trace_id, span_ids = leg_ids(4242, 4)
    assert [(m, p) for m, p, _, _ in world.sent] == [
        ("GET", "/api/v1/namespaces/default"),
        ("GET", "/api/v1/namespaces/default/pods?limit=1"),
        ("GET", "/readyz"),
        ("GET", "/version"),
    ]
    assert [tp for _, _, tp, _ in world.sent] == [
        f"00-{trace_id.hex()}-{sid.hex()}-01" for sid in span_ids
    ]
    assert report.trace_id == trace_id.hex()
    trace = result(report, "apiserver.trace")
    assert trace.data["found"] == 4 and trace.data["sent"] == 4
    assert trace.detail.startswith(
        "parent-child mode (tracecheck-admin is in system:masters): all 4 requests traced: "
        "SERVER spans of service apiserver under trace "
    )
    # First visible on the first poll after the apiserver's 5 s batch delay.
    assert trace.delay is not None and 5.0 <= trace.delay < 6.0
    metrics = result(report, "apiserver.span_metrics")
    assert metrics.data["increase"] == 4
    # Exported after 5 s, then counted at the generator's next 15 s collection.
    assert metrics.delay is not None and 20.0 <= metrics.delay < 21.5
    rows = report.tables[LATENCY_TABLE]
    # Grouped by kind, name, verb (derived from http.target) and resource; requests first.
    assert [(r["kind"], r["name"], r["verb"], r["resource"], r["count"]) for r in rows] == [
        ("SERVER", "GET", "GET", "", 2),
        ("SERVER", "GET /api/v1/x", "GET", "namespaces", 1),
        ("SERVER", "GET /api/v1/x", "LIST", "pods", 1),
        ("INTERNAL", "authorization", "", "", 4),
    ]
    assert rows[0]["p50_ms"] == 1.5 and rows[0]["max_ms"] == 1.5 and rows[0]["error_pct"] == 0


def test_nothing_exported_fails_naming_the_apiserver_hop() -> None:
    world = World(FakeClock(), exports=False)
    report = run_probe(world)
    trace = result(report, "apiserver.trace")
    assert trace.status is Status.FAIL
    assert trace.detail.startswith(
        f"trace {leg_ids(4242, 1)[0].hex()} after 30.0 s: 0 of 4 SERVER spans under our spans;"
    )
    assert "--tracing-config-file" in trace.hint
    assert result(report, "apiserver.span_metrics").status is Status.FAIL
    assert "see apiserver.trace" in result(report, "apiserver.span_metrics").hint
    assert report.exit_code == ExitCode.CHECK_FAILED


TOO_BIG = "Trace exceeds maximum size of 5000000 bytes, a partial trace is returned"


def test_a_truncated_trace_fails_quoting_tempo_in_parent_child_mode() -> None:
    world = World(FakeClock(), partial=TOO_BIG)
    trace = result(run_probe(world), "apiserver.trace")
    assert trace.status is Status.FAIL
    assert trace.detail == (
        f'trace {leg_ids(4242, 1)[0].hex()}: Tempo truncated the trace: "{TOO_BIG}"; 4 of 4 '
        "requests' SERVER spans among the spans returned"
    )
    assert "max_bytes_per_trace" in trace.hint
    assert trace.data["partial"] is True and trace.data["message"] == TOO_BIG
    assert trace.elapsed < 6.0  # ended at the first answer with spans, not at the deadline


def test_a_truncated_trace_fails_quoting_tempo_in_link_mode() -> None:
    world = World(FakeClock(), user=VIEWER, partial=TOO_BIG)
    trace = result(run_probe(world), "apiserver.trace")
    assert trace.status is Status.FAIL
    assert "; but 13 of 13 apiserver traces came back truncated, e.g. " in trace.detail
    assert trace.detail.endswith(f'Tempo truncated the trace: "{TOO_BIG}"')
    assert "max_bytes_per_trace" in trace.hint and trace.data["truncated"] == 13


def test_partly_traced_requests_fail_naming_only_the_missing_ones() -> None:
    # The second request's spans reach Tempo after the deadline; the other three in time.
    world = World(FakeClock(), late=lambda i: 60.0 if i == 1 else 0.0)
    report = run_probe(world)
    trace = result(report, "apiserver.trace")
    assert trace.status is Status.FAIL
    assert trace.detail.endswith(
        "after 30.0 s: 3 of 4 SERVER spans under our spans; "
        "missing: GET /api/v1/namespaces/default/pods?limit=1"
    )
    assert trace.data["found"] == 3 and trace.data["sent"] == 4
    assert trace.hint.startswith("3 of 4 arrived, so the apiserver exports")
    # The spans that did arrive are still tabulated.
    rows = report.tables[LATENCY_TABLE]
    assert sum(r["count"] for r in rows if r["kind"] == "SERVER") == 3


def test_a_user_that_is_not_really_trusted_is_explained_by_the_link() -> None:
    # Looks trusted (e.g. impersonating system:masters), but the apiserver links instead.
    world = World(FakeClock(), honours_traceparent=False, sampled=lambda i: True)
    report = run_probe(world)
    trace = result(report, "apiserver.trace")
    assert trace.status is Status.FAIL
    assert trace.hint.startswith("4 apiserver traces *link* to our trace instead")


def test_monitoring_user_forbidden_paths_warn_but_spans_are_still_checked() -> None:
    world = World(
        FakeClock(),
        user=MONITOR,
        statuses={
            "/api/v1/namespaces/default": 403,
            "/api/v1/namespaces/default/pods?limit=1": 403,
        },
    )
    report = run_probe(world)
    requests = result(report, "apiserver.requests")
    assert requests.status is Status.WARN
    assert requests.detail.endswith(
        "200 x2, 403 x2; not all answered 2xx: GET /api/v1/namespaces/default: 403 forbidden: "
        "not allowed; GET /api/v1/namespaces/default/pods?limit=1: 403 forbidden: not allowed"
    )
    assert requests.hint.startswith(
        "403: user 'tracecheck-monitoring' lacks the RBAC permission for these requests "
        "(system:monitoring may only GET /readyz, /livez, /healthz and /metrics)"
    )
    assert result(report, "apiserver.trace").status is Status.PASS
    assert report.exit_code == ExitCode.OK


# -- link / audit-id -------------------------------------------------------------------------------


def test_untrusted_burst_is_found_by_link_and_the_rate_is_implied() -> None:
    world = World(FakeClock(), user=VIEWER)
    report = run_probe(world)
    assert len(world.sent) == 50  # apiserver.burst
    requests = result(report, "apiserver.requests")
    assert "(link mode, a burst of 50" in requests.detail
    trace = result(report, "apiserver.trace")
    assert trace.status is Status.PASS
    # Requests 0, 4, ..., 48 were sampled: 13 of 50.
    assert trace.data["found"] == 13 and trace.data["sent"] == 50
    assert trace.data["implied_rate_per_million"] == 260_000
    low, high = trace.data["rate_interval_95"]
    assert 150_000 < low < 260_000 < high < 400_000
    assert trace.detail == (
        "link mode (tracecheck-viewer is in neither system:masters nor system:monitoring): "
        "13 of 50 requests traced, found by { link:traceID = "
        f'"{leg_ids(4242, 1)[0].hex().lstrip("0")}" }} and matched by link span ID / Audit-Id; '
        "implied "
        "sampling rate ≈ 260,000 per million (95 % interval 159,000-396,000); span names: "
        "GET /api/v1/x"
    )
    assert trace.data["traced_audit_ids"][0] == "00000000-0000-4000-8000-000000000000"
    # Visible to search 5 s (export) + 10 s (search) after the send; then a settle window.
    assert trace.delay is not None and 15.0 <= trace.delay < 16.5
    assert trace.elapsed >= 15.0 + LINK_SETTLE
    # Every 4th request went to the first path: all 13 traced ones are that SERVER span.
    rows = report.tables[LATENCY_TABLE]
    assert [(r["kind"], r["name"], r["verb"], r["resource"], r["count"]) for r in rows] == [
        ("SERVER", "GET /api/v1/x", "GET", "namespaces", 13),
        ("INTERNAL", "authorization", "", "", 13),
    ]


def test_link_query_spells_the_trace_id_as_tempo_stores_it() -> None:
    # Seed 5 gives the leg a trace ID whose first hex digit is 0: Tempo compares link:traceID
    # as text without leading zeros, so the 32-digit spelling would find nothing by link.
    trace_id = leg_ids(5, 1)[0]
    assert trace_id.hex().startswith("0")
    world = World(FakeClock(), user=VIEWER)
    trace = result(run_probe(world, settings(TRACECHECK_SMOKE_SEED="5")), "apiserver.trace")
    assert trace.status is Status.PASS and trace.data["found"] == 13
    assert f'found by {{ link:traceID = "{trace_id.hex().lstrip("0")}" }} and matched' in (
        trace.detail
    )


def test_traces_exported_in_a_later_batch_are_counted_within_the_settle_window() -> None:
    # Half the sampled requests reach Tempo 5 s later (the next export tick).
    world = World(FakeClock(), user=VIEWER, late=lambda i: 5.0 if i % 8 == 4 else 0.0)
    trace = result(run_probe(world), "apiserver.trace")
    assert trace.data["found"] == 13


def test_traces_later_than_the_settle_window_are_missed_but_still_pass() -> None:
    world = World(FakeClock(), user=VIEWER, late=lambda i: 0.0 if i == 0 else 60.0)
    trace = result(run_probe(world), "apiserver.trace")
    assert trace.status is Status.PASS and trace.data["found"] == 1


def test_no_sampled_request_fails_with_the_sampling_hint() -> None:
    world = World(FakeClock(), user=VIEWER, sampled=lambda i: False)
    report = run_probe(world)
    trace = result(report, "apiserver.trace")
    assert trace.status is Status.FAIL
    assert trace.detail.startswith("none of 50 requests traced after 30.0 s")
    assert trace.hint.startswith(
        "an untrusted caller is traced only at samplingRatePerMillion: 0 or unset means never"
    )
    assert trace.data["implied_rate_per_million"] == 0


def test_without_link_search_the_audit_ids_find_the_traces() -> None:
    world = World(FakeClock(), user=VIEWER, link_search=False)
    trace = result(run_probe(world), "apiserver.trace")
    assert trace.status is Status.PASS and trace.data["found"] == 13
    assert 'found { span."audit-id" = ... } (no link to our trace was found)' in trace.detail


def test_unknown_groups_fall_back_to_link_mode_and_say_why() -> None:
    world = World(
        FakeClock(),
        whoami_error=AuthError("apiserver", "https://127.0.0.1:6443 (context test)", "403 x"),
    )
    report = run_probe(world)
    reach = result(report, "apiserver.reachable")
    assert reach.data["mode"] == "link" and reach.data["user"] is None
    assert "the user's groups are unknown (SelfSubjectReview failed: 403 x)" in reach.detail
    assert len(world.sent) == 50


# -- plumbing --------------------------------------------------------------------------------------


def test_apiserver_down_is_an_error_and_the_rest_is_skipped() -> None:
    from tracecheck.errors import Unreachable

    world = World(FakeClock())

    def down(**kw: Any) -> str:
        raise Unreachable(
            "apiserver", "https://127.0.0.1:6443 (context test)", "connection refused"
        )

    world.readyz = down  # type: ignore[method-assign]
    report = run_probe(world)
    reach = result(report, "apiserver.reachable")
    assert reach.status is Status.ERROR
    assert reach.detail == "apiserver at https://127.0.0.1:6443 (context test): connection refused"
    assert [result(report, n).status for n in ("apiserver.requests", "apiserver.trace")] == [
        Status.SKIP,
        Status.SKIP,
    ]
    assert report.exit_code == ExitCode.BACKEND


def test_reachable_calls_share_the_preflight_deadline() -> None:
    # A slow apiserver: each preflight call takes 2 s of the 5 s preflight deadline.
    world = World(FakeClock())
    timeouts: list[float] = []

    def slow(answer: Any) -> Callable[..., Any]:
        def call(*, timeout: float) -> Any:
            timeouts.append(timeout)
            world.clock.advance(2.0)
            return answer

        return call

    world.readyz = slow("ok")  # type: ignore[method-assign]
    world.version = slow(ServerVersion("v1.34.4", 1, 34))  # type: ignore[method-assign]
    world.whoami = slow(ADMIN)  # type: ignore[method-assign]
    report = run_probe(world)
    assert result(report, "apiserver.reachable").status is Status.PASS
    # What is left of the deadline, never less than plan.MIN_REQUEST_TIMEOUT.
    assert timeouts == [5.0, 3.0, 1.0]


def test_probe_options() -> None:
    world = World(FakeClock())
    report = run_probe(world, requests=3, paths=["/livez"], allow_writes=True, namespace="ns1")
    sent = [(m, p) for m, p, _, _ in world.sent]
    assert sent[:3] == [("GET", "/livez")] * 3
    name = "tracecheck-probe-000000004242"
    assert sent[3:] == [
        ("POST", "/api/v1/namespaces/ns1/configmaps"),
        ("DELETE", f"/api/v1/namespaces/ns1/configmaps/{name}"),
    ]
    body = world.sent[3][3]
    assert body["metadata"]["name"] == name and body["kind"] == "ConfigMap"
    assert result(report, "apiserver.trace").data["found"] == 5


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"allow_writes": True},
            "apiserver at --allow-writes: needs --namespace NS (where to write)",
        ),
        ({"namespace": "x"}, "apiserver at --namespace: only used with --allow-writes"),
        ({"requests": 0}, "apiserver at --requests: must be at least 1, not 0"),
        ({"paths": ["readyz"]}, "apiserver at --path: 'readyz' must start with /"),
    ],
)
def test_probe_refuses_bad_options(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as err:
        probe(settings(), **kw)
    assert str(err.value) == message and err.value.exit_code == ExitCode.USAGE


def test_smoke_skip_apiserver_drops_the_leg() -> None:
    from tracecheck.smoke.engine import select_checks
    from tracecheck.smoke.plan import default_checks

    every = default_checks(settings())
    names = [c.name for c in every if c.group == "apiserver"]
    assert names == [
        "apiserver.reachable",
        "apiserver.requests",
        "apiserver.trace",
        "apiserver.span_metrics",
    ]
    kept = select_checks(every, (), ("apiserver",))
    assert not [c for c in kept if c.group == "apiserver"]


def test_leg_ids_are_deterministic_distinct_and_nonzero() -> None:
    tid, sids = leg_ids(7, 5)
    assert (tid, sids) == leg_ids(7, 5)
    assert tid != leg_ids(8, 5)[0]
    assert len(tid) == 16 and any(tid)
    assert len(set(sids)) == 5 and all(len(s) == 8 and any(s) for s in sids)


@pytest.mark.parametrize(
    ("found", "sent", "rate", "low", "high"),
    [
        (13, 50, 260_000, 159_000, 396_000),
        (0, 50, 0, 0, 71_000),
        (50, 50, 1_000_000, 929_000, 1_000_000),
        (1, 4, 250_000, 46_000, 699_000),
    ],
)
def test_implied_rate_wilson_interval(
    found: int, sent: int, rate: float, low: float, high: float
) -> None:
    got = implied_rate(found, sent)
    assert got[0] == pytest.approx(rate)
    assert got[1] == pytest.approx(low, abs=1000)
    assert got[2] == pytest.approx(high, abs=1000)


def test_request_record_json() -> None:
    rec = RequestRecord("GET", "/readyz", bytes.fromhex("00112233445566ff"), 200, "a", 1.0, 0.0025)
    assert rec.to_json() == {
        "method": "GET",
        "path": "/readyz",
        "span_id": "00112233445566ff",
        "status": 200,
        "audit_id": "a",
        "elapsed_ms": 2.5,
    }
