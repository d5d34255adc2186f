"""The apiserver leg of ``tracecheck smoke`` (group ``apiserver``, so ``--skip apiserver`` works)
and ``tracecheck apiserver probe``.

=========================  =========  =======================================================
check                      stage      proves
=========================  =========  =======================================================
apiserver.reachable        preflight  /readyz answers, /version, who we are (SelfSubjectReview)
                                      and so the trust mode, with the reason
apiserver.requests         send       cheap read-only GETs carrying a sampled W3C traceparent
                                      with tracecheck's trace ID (a bounded burst when the
                                      credential is not trusted), each Audit-Id recorded
apiserver.trace            verify     the apiserver exported spans for them to Tempo
apiserver.span_metrics     verify     span-metrics for service="apiserver" rose in Prometheus
=========================  =========  =======================================================

Two modes (docs/reference/apiserver.md §4), decided by ``apiserver.reachable``:

* **parent-child** (user in ``system:masters`` or ``system:monitoring``, Kubernetes >= 1.33):
  the apiserver adopts our sampled traceparent whatever its sampling rate, so each request's
  SERVER span (resource ``service.name=apiserver``) must appear under *our* trace ID with *our*
  span as its parent: checked by parent span ID, request by request;
* **link** (anyone else): the apiserver starts its own trace, sampled at
  ``samplingRatePerMillion``, and links ours. A burst of ``apiserver.burst`` requests is sent;
  their traces are found with ``{ link:traceID = "<ours>" }`` (each link carries the span ID of
  the request, and the SERVER span its ``audit-id``), falling back to ``{ span."audit-id" = ...}``.
  The check reports found/N and the sampling rate that implies, and passes when at least one
  request was traced.

The apiserver batches spans for 5 s before exporting (its BatchSpanProcessor schedule delay,
§3), so the trace check polls up to ``deadlines.apiserver_trace``. The apiserver latency table
(:mod:`tracecheck.latency.table`) over every apiserver span of the traces found goes to
``ctx.tables["apiserver_latency"]``, which the smoke report prints and exports.

Why one module (about 700 lines): the four checks share one state (the trust mode, the
records of the requests sent) and the trace check's two modes read the same records; split
apart, each file would reach into the others' helpers.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tracecheck.backends.prometheus import counter_increase, counter_snapshot
from tracecheck.config import Settings
from tracecheck.errors import AuthError, BackendError, HTTPStatusError
from tracecheck.ids import stripped_hex
from tracecheck.polling import Probe
from tracecheck.results import CheckResult, Status
from tracecheck.smoke.engine import Check, RequestRecord, Sent, SmokeContext
from tracecheck.smoke.pipeline_checks import (
    TRUNCATED_HINT,
    CallsBaseline,
    ReadinessCheck,
    ends_on_auth_error,
    span_metric_families,
    truncated_detail,
)
from tracecheck.spanmetrics import Naming, quote

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends.apiserver import TrustMode, UserInfo
    from tracecheck.backends.tempo import Span, TempoClient, Trace

__all__ = [
    "LATENCY_TABLE",
    "LINK_SETTLE",
    "ApiserverReachable",
    "ApiserverRequests",
    "ApiserverSpanMetrics",
    "ApiserverTrace",
    "RequestRecord",
    "checks",
    "implied_rate",
    "leg_ids",
    "link_query",
]

#: Key of the apiserver latency table in ``SmokeContext.tables`` / ``Report.tables``.
LATENCY_TABLE = "apiserver_latency"
#: Columns the latency table groups by; rows of the SERVER spans (the requests) come first.
LATENCY_BY = ("kind", "name", "verb", "resource")
_KIND_ORDER = {"SERVER": 0, "INTERNAL": 1, "CLIENT": 2}
#: Link mode: once a sampled trace is seen, how long no new one may appear before the count is
#: final. The apiserver exports every 5 s and Tempo makes traces searchable on a 10 s tick
#: (docs/reference/tempo.md §10), so the traces of one burst appear within about 10 s of each other.
LINK_SETTLE = 10.0
# Link mode falls back to this many Audit-Ids per TraceQL query (keeps URLs short).
_AUDIT_CHUNK = 20
SERVICE = "apiserver"


# -- deterministic IDs ------------------------------------------------------------------------


def leg_ids(seed: int, count: int) -> tuple[bytes, tuple[bytes, ...]]:
    """The apiserver leg's trace ID and ``count`` parent span IDs, derived from the run's seed
    (so a run can be rebuilt and diffed), distinct from the synthetic trace's so the two never
    share a trace."""
    rng = random.Random(f"tracecheck-apiserver-{seed}")

    def nonzero(size: int) -> bytes:
        while True:
            value = rng.randbytes(size)
            if any(value):
                return value

    trace_id = nonzero(16)
    return trace_id, tuple(nonzero(8) for _ in range(count))


def implied_rate(found: int, sent: int, z: float = 1.96) -> tuple[float, float, float]:
    """``(rate, low, high)`` per million: found/sent and its Wilson score interval (95 %)."""
    if sent <= 0:
        return 0.0, 0.0, 1e6
    p = found / sent
    denom = 1 + z * z / sent
    centre = (p + z * z / (2 * sent)) / denom
    half = z * math.sqrt(p * (1 - p) / sent + z * z / (4 * sent * sent)) / denom
    return p * 1e6, max(0.0, centre - half) * 1e6, min(1.0, centre + half) * 1e6


# -- shared helpers ----------------------------------------------------------------------------


def link_query(trace_id: bytes) -> str:
    """TraceQL for the traces whose spans link ``trace_id``.

    Tempo compares ``link:traceID`` with the text of the ID as storage keeps it: lowercase hex
    with the leading zeros trimmed (``util.TraceIDToHexString``; docs/reference/tempo.md §5.3).
    The 32-digit spelling of an ID that starts with a zero digit (one in sixteen) matches
    nothing on a real Tempo, so the query uses the trimmed spelling.
    """
    return f'{{ link:traceID = "{stripped_hex(trace_id)}" }}'


def _mode(ctx: SmokeContext) -> TrustMode:
    """The trust mode apiserver.reachable decided (every later check requires it)."""
    if ctx.apiserver.mode is None:
        raise RuntimeError("apiserver.reachable has not decided the trust mode")
    return ctx.apiserver.mode


def _statuses(records: Sequence[RequestRecord]) -> str:
    counts = Counter(r.status for r in records)
    return ", ".join(f"{status} x{n}" for status, n in sorted(counts.items()))


# -- preflight --------------------------------------------------------------------------------


class ApiserverReachable(ReadinessCheck):
    name = "apiserver.reachable"
    title = "apiserver ready (/readyz), its version, who we are and so the trust mode"
    hop = "apiserver"
    error_hint = (
        "is kube-apiserver running and reachable at the kubeconfig's server URL, with a "
        "credential it accepts?"
    )

    def ask(self, ctx: SmokeContext, left: Callable[[], float]) -> CheckResult:
        from tracecheck.backends.apiserver import trust_mode

        api = ctx.apiserver_client()
        # left: the three calls share the preflight deadline
        ready = api.readyz(timeout=left())
        version = api.version(timeout=left())
        user: UserInfo | None = None
        note = ""
        try:
            user = api.whoami(timeout=left())
        except (AuthError, HTTPStatusError) as exc:
            # 403 (RBAC without system:basic-user) or 404 (no SelfSubjectReview before 1.27).
            note = f"SelfSubjectReview failed: {exc.cause}"
        mode = trust_mode(user, version, note)
        ctx.apiserver.mode, ctx.apiserver.user = mode, user
        creds = api.credentials
        ctx.target.update(
            {
                "apiserver": api.address,
                "apiserver_context": creds.context,
                "apiserver_version": version.git_version,
                "apiserver_mode": mode.mode,
            }
        )
        who = (
            f"user {user.username} ({', '.join(user.groups) or 'no groups'})"
            if user is not None
            else "user unknown"
        )
        detail = (
            f"/readyz {ready}; Kubernetes {version.git_version}; context {creds.context} "
            f"({creds.method}); {who}; mode {mode.mode}: {mode.reason}"
        )
        data = {
            "server": api.address,
            "context": creds.context,
            "auth": creds.method,
            "version": version.git_version,
            "user": user.username if user else None,
            "groups": list(user.groups) if user else None,
            "mode": mode.mode,
            "mode_reason": mode.reason,
        }
        return self.result(Status.PASS, detail, data=data)


# -- send -------------------------------------------------------------------------------------


class ApiserverRequests(Check):
    name = "apiserver.requests"
    title = "read-only requests to the apiserver carrying a sampled traceparent with our trace ID"
    stage = "send"
    hop = "client -> apiserver"
    requires = ("apiserver.reachable",)
    error_hint = "the apiserver stopped answering while the traced requests were sent"

    def __init__(self, *, writes_namespace: str | None = None) -> None:
        #: ``--allow-writes --namespace NS``: also create and delete a ConfigMap in NS.
        self.writes_namespace = writes_namespace

    def plan(self, ctx: SmokeContext) -> list[tuple[str, str, Any]]:
        """(method, path, body) of every request, in order."""
        s = ctx.settings.apiserver
        paths = list(s.paths) or ["/readyz"]
        count = s.requests if _mode(ctx).trusted else max(s.burst, s.requests)
        plan: list[tuple[str, str, Any]] = [
            ("GET", paths[i % len(paths)], None) for i in range(count)
        ]
        if self.writes_namespace:
            ns = self.writes_namespace
            name = f"tracecheck-probe-{ctx.seed % 10**12:012d}"
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name,
                    "labels": {"app.kubernetes.io/part-of": "tracecheck"},
                },
                "data": {"purpose": "tracecheck apiserver probe: traced write path"},
            }
            plan.append(("POST", f"/api/v1/namespaces/{ns}/configmaps", body))
            plan.append(("DELETE", f"/api/v1/namespaces/{ns}/configmaps/{name}", None))
        return plan

    def run(self, ctx: SmokeContext) -> CheckResult:
        from tracecheck.backends.apiserver import traceparent

        api = ctx.apiserver_client()
        mode = _mode(ctx)
        plan = self.plan(ctx)
        leg = ctx.apiserver
        trace_id, span_ids = leg_ids(ctx.seed, len(plan))
        leg.trace_id = trace_id
        ctx.target["apiserver_trace_id"] = trace_id.hex()
        leg.started = ctx.clock.time()
        timeout = ctx.settings.apiserver.timeout
        records = leg.requests
        for (method, path, body), span_id in zip(plan, span_ids, strict=True):
            started = ctx.clock.time()
            reply = api.send(
                method,
                path,
                traceparent=traceparent(trace_id, span_id),
                json_body=body,
                timeout=timeout,
            )
            records.append(
                RequestRecord(
                    method=reply.method,
                    path=path,
                    span_id=span_id,
                    status=reply.status,
                    audit_id=reply.audit_id,
                    started=started,
                    elapsed=reply.elapsed,
                    message=reply.message,
                )
            )
        leg.sent = Sent(ctx.clock.monotonic(), ctx.clock.time())
        header = f"traceparent 00-{trace_id.hex()}-<span>-01"
        why = "trusted: each must come back as a child span" if mode.trusted else (
            f"a burst of {len(records)}: the apiserver samples an untrusted caller's requests"
        )  # fmt: skip
        detail = f"{len(records)} requests with {header} ({mode.mode} mode, {why}): "
        detail += _statuses(records)
        missing_audit = [r for r in records if not r.audit_id]
        refused = [r for r in records if r.status >= 400]
        data = {
            "trace_id": trace_id.hex(),
            "mode": mode.mode,
            "requests": [r.to_json() for r in records],
        }
        elapsed = sum(r.elapsed for r in records)
        if refused:
            seen: dict[str, RequestRecord] = {}
            for r in refused:
                seen.setdefault(r.label(), r)
            listed = "; ".join(
                f"{label}: {r.status} {r.message or ''}".rstrip() for label, r in seen.items()
            )
            return self.result(
                Status.WARN,
                f"{detail}; not all answered 2xx: {listed}",
                hint=_refused_hint(ctx, refused),
                elapsed=elapsed,
                data=data,
            )
        if missing_audit:
            detail += f"; {len(missing_audit)} answers had no Audit-Id header (auditing off?)"
            return self.result(Status.WARN, detail, elapsed=elapsed, data=data)
        return self.result(Status.PASS, detail, elapsed=elapsed, data=data)


def _refused_hint(ctx: SmokeContext, refused: Sequence[RequestRecord]) -> str:
    user = ctx.apiserver.user
    who = f"user {user.username!r}" if user is not None else "the credential"
    parts = []
    if any(r.status == 403 for r in refused):
        text = f"403: {who} lacks the RBAC permission for these requests"
        if user is not None and "system:monitoring" in user.groups:
            text += " (system:monitoring may only GET /readyz, /livez, /healthz and /metrics)"
        parts.append(text)
    if any(r.status == 404 for r in refused):
        parts.append("404: the path or namespace does not exist (check --path / --namespace)")
    if any(r.status >= 500 for r in refused):
        parts.append("5xx: the apiserver failed these requests (its log says why)")
    parts.append(
        "their spans are still expected: the tracing filter wraps authorization and the handlers"
    )
    return "; ".join(parts)


# -- verify: the trace -------------------------------------------------------------------------


def _is_server(span: Span) -> bool:
    return span.kind == "SPAN_KIND_SERVER" and span.service_name == SERVICE


class ApiserverTrace(Check):
    name = "apiserver.trace"
    title = "Tempo holds the apiserver's spans for our requests (parent/child, or link/audit-id)"
    hop = "apiserver -> collector -> tempo"

    def sent(self, ctx: SmokeContext) -> Sent | None:
        return ctx.apiserver.sent

    requires = ("apiserver.requests", "preflight.tempo")
    deadline_key = "apiserver_trace"
    error_hint = "Tempo's API failed while polling for the apiserver's spans"

    @ends_on_auth_error
    def run(self, ctx: SmokeContext) -> CheckResult:
        if _mode(ctx).trusted:
            return self._parent_child(ctx)
        return self._link(ctx)

    def _window(self, ctx: SmokeContext) -> tuple[float, float]:
        started = ctx.apiserver.started or ctx.clock.time()
        return started - 600, ctx.clock.time() + 600

    def _fresh(self, ctx: SmokeContext, span: Span) -> bool:
        # With a fixed --seed the IDs repeat across runs: only spans of this run count.
        started = ctx.apiserver.started or ctx.clock.time()
        return span.start_ns >= (started - 5.0) * 1e9

    # -- parent/child -----------------------------------------------------------------------

    def _parent_child(self, ctx: SmokeContext) -> CheckResult:
        tempo = ctx.tempo()
        records = ctx.apiserver.requests
        trace_id = ctx.apiserver.trace_id
        start, end = self._window(ctx)
        by_parent = {r.span_id: r for r in records}
        # What the last answer held: a failed poll returns no value, but a FAIL must still
        # name the requests that are missing (not all of them) and tabulate the spans that came.
        found: dict[bytes, Span] = {}
        spans: tuple[Span, ...] = ()
        truncated: list[Trace] = []

        def probe(timeout: float) -> Probe[None]:
            nonlocal found, spans
            trace = tempo.trace(trace_id, start=start, end=end, timeout=timeout)
            spans = trace.spans
            found = {
                s.parent_span_id: s
                for s in spans
                if s.parent_span_id in by_parent and _is_server(s) and self._fresh(ctx, s)
            }
            if trace.partial:  # spans were left out; polling longer cannot bring them
                truncated.append(trace)
                return Probe(True, None, truncated_detail(trace))
            seen = f"{len(found)} of {len(records)} SERVER spans under our spans"
            return Probe(len(found) == len(records), None, seen)

        outcome = self.poll(ctx, probe, request_timeout=ctx.settings.tempo.timeout)
        measured = self.measured(ctx, outcome)
        ours = [s for s in spans if s.service_name == SERVICE and self._fresh(ctx, s)]
        self._table(ctx, ours)
        mismatched = [
            r.label()
            for r in records
            if r.span_id in found
            and r.audit_id
            and found[r.span_id].attributes.get("audit-id") not in (None, r.audit_id)
        ]
        names = sorted({s.name for s in found.values()})
        data = {
            "mode": "parent-child",
            "trace_id": trace_id.hex(),
            "found": len(found),
            "sent": len(records),
            "span_names": names,
            "apiserver_spans": len(ours),
        }
        if truncated:
            data.update(partial=True, message=truncated[0].message)
            return self.result(
                Status.FAIL,
                f"trace {trace_id.hex()}: {outcome.seen}; {len(found)} of {len(records)} "
                "requests' SERVER spans among the spans returned",
                hint=TRUNCATED_HINT,
                data=data,
                **measured,
            )
        if outcome.ok:
            detail = (
                f"parent-child mode ({_mode(ctx).why}): all {len(records)} requests traced: "
                "SERVER spans of service apiserver under "
                f"trace {trace_id.hex()}, each a child of our span (by parent span ID): "
                f"{', '.join(names)}; {len(ours)} apiserver spans in all"
            )
            if mismatched:
                return self.result(
                    Status.WARN,
                    detail + f"; but audit-id differs from the Audit-Id header for {mismatched}",
                    data=data,
                    **measured,
                )
            return self.result(Status.PASS, detail, data=data, **measured)
        missing = [r.label() for r in records if r.span_id not in found]
        linked = self._linked_elsewhere(ctx, tempo, trace_id) if not found else 0
        if found:
            hint = (
                f"{len(found)} of {len(records)} arrived, so the apiserver exports: the rest did "
                "not arrive within deadlines.apiserver_trace (exported late, or dropped: its "
                "span queue holds 2048 and exports every 5 s; docs/reference/apiserver.md §3)"
            )
        elif linked:
            hint = (
                f"{linked} apiserver traces *link* to our trace instead: the apiserver did not "
                "trust this credential with the traceparent (only system:masters / "
                "system:monitoring are trusted, impersonation does not count, Kubernetes >= 1.33)"
            )
        else:
            hint = _export_hint(ctx)
        return self.result(
            Status.FAIL,
            f"trace {trace_id.hex()} after {outcome.elapsed:.1f} s: {outcome.seen}; "
            f"missing: {', '.join(dict.fromkeys(missing))}",
            hint=hint,
            data=data,
            **measured,
        )

    def _linked_elsewhere(self, ctx: SmokeContext, tempo: TempoClient, trace_id: bytes) -> int:
        start, end = self._window(ctx)
        try:
            result = tempo.search(link_query(trace_id), start=start, end=end, limit=50)
        except BackendError:
            return 0
        return len(result.traces)

    # -- link / audit-id -----------------------------------------------------------------------

    def _link(self, ctx: SmokeContext) -> CheckResult:
        tempo = ctx.tempo()
        records = ctx.apiserver.requests
        trace_id = ctx.apiserver.trace_id
        start, end = self._window(ctx)
        by_span = {r.span_id: r for r in records}
        by_audit = {r.audit_id: r for r in records if r.audit_id}
        query = link_query(trace_id)
        fetched: dict[bytes, tuple[Span, ...]] = {}
        truncated: dict[bytes, Trace] = {}  # traces Tempo answered as PARTIAL
        matched: dict[bytes, Span] = {}  # our span ID -> the apiserver's SERVER span
        last_change = [ctx.clock.monotonic()]
        first_seen: list[float] = []  # monotonic start of the probe that first saw a trace
        deadline = self.deadline(ctx) or 0.0
        settle = min(LINK_SETTLE, deadline)

        def match(spans: Sequence[Span]) -> None:
            for span in spans:
                if not _is_server(span):
                    continue
                links = [lk.span_id for lk in span.links if lk.trace_id == trace_id]
                record = next((by_span[sid] for sid in links if sid in by_span), None)
                audit = span.attributes.get("audit-id")
                if record is None and isinstance(audit, str):
                    record = by_audit.get(audit)
                if record is not None:
                    matched[record.span_id] = span

        def probe(timeout: float) -> Probe[int]:
            began = ctx.clock.monotonic()
            result = tempo.search(
                query, start=start, end=end, limit=max(100, 2 * len(records)), timeout=timeout
            )
            before = len(matched)
            for hit in result.traces:
                if hit.trace_id not in fetched:
                    trace = tempo.trace(hit.trace_id, start=start, end=end, timeout=timeout)
                    if trace.partial:
                        truncated.setdefault(hit.trace_id, trace)
                    if trace.found:
                        fetched[hit.trace_id] = trace.spans
                        match(trace.spans)
            now = ctx.clock.monotonic()
            if len(matched) != before:
                last_change[0] = now
                if not first_seen:
                    first_seen.append(began)
            n = len(matched)
            quiet = now - last_change[0]
            done = n == len(records) or (n > 0 and quiet >= settle)
            seen = f"{n} of {len(records)} requests traced"
            if n and not done:
                seen += f" (waiting {settle - quiet:.0f} s more for late traces)"
            return Probe(done, n, seen)

        outcome = self.poll(ctx, probe, request_timeout=ctx.settings.tempo.timeout)
        common = self.poll_fields(ctx, outcome)
        if not matched and outcome.error is not None:
            raise outcome.error
        how = f"by {query}"
        if not matched:
            found_by_audit = _by_audit_id(tempo, records, start, end, fetched)
            for trace_spans in found_by_audit:
                match(trace_spans)
            if matched:
                how = '{ span."audit-id" = ... } (no link to our trace was found)'
        self._table(
            ctx,
            [
                s
                for trace_spans in fetched.values()
                for s in trace_spans
                if s.service_name == SERVICE and self._fresh(ctx, s)
            ],
        )
        n, total = len(matched), len(records)
        rate, low, high = implied_rate(n, total)
        names = sorted({s.name for s in matched.values()})
        data = {
            "mode": "link",
            "trace_id": trace_id.hex(),
            "found": n,
            "sent": total,
            "implied_rate_per_million": round(rate),
            "rate_interval_95": [round(low), round(high)],
            "traced_audit_ids": sorted(r.audit_id for r in records if r.span_id in matched),
            "span_names": names,
        }
        report = (
            f"link mode ({_mode(ctx).why}): {n} of {total} requests traced, found {how} and "
            f"matched by link span ID / Audit-Id; implied sampling rate ≈ {rate:,.0f} per "
            f"million (95 % interval {round(low, -3):,.0f}-{round(high, -3):,.0f})"
        )
        sent = ctx.apiserver.sent
        # The delay is until the first traced request was visible, not until the count settled.
        delay = max(0.0, first_seen[0] - sent.mono) if first_seen and sent is not None else None
        if truncated:
            first = next(iter(truncated.values()))
            data.update(partial=True, message=first.message, truncated=len(truncated))
            return self.result(
                Status.FAIL,
                f"{report}; but {len(truncated)} of {len(fetched)} apiserver traces came back "
                f"truncated, e.g. {stripped_hex(first.trace_id)}: {truncated_detail(first)}",
                hint=TRUNCATED_HINT,
                delay=delay,
                data=data,
                **common,
            )
        if n:
            return self.result(
                Status.PASS,
                report + (f"; span names: {', '.join(names)}" if names else ""),
                delay=delay,
                data=data,
                **common,
            )
        return self.result(
            Status.FAIL,
            f"none of {total} requests traced after {outcome.elapsed:.1f} s ({outcome.seen})",
            hint=(
                "an untrusted caller is traced only at samplingRatePerMillion: 0 or unset means "
                f"never, and a rate r finds about {total}*r/1e6 of this burst; raise the rate or "
                "the burst (apiserver.burst), or use a credential in system:masters / "
                "system:monitoring for a deterministic check; else "
            )
            + _export_hint(ctx),
            data=data,
            **common,
        )

    def _table(self, ctx: SmokeContext, spans: Sequence[Span]) -> None:
        from tracecheck.latency.table import latency_rows

        rows = latency_rows(spans, by=LATENCY_BY)
        # Stable: within a kind, latency_rows' order (most spans first) stays.
        rows.sort(key=lambda r: _KIND_ORDER.get(str(r["kind"]), 3))
        ctx.tables[LATENCY_TABLE] = rows


def _by_audit_id(
    tempo: TempoClient,
    records: Sequence[RequestRecord],
    start: float,
    end: float,
    fetched: dict[bytes, tuple[Span, ...]],
) -> list[tuple[Span, ...]]:
    """Last resort when no trace links ours: ``{ span."audit-id" = "..." || ... }``; what was
    found before a backend error still counts."""
    audits = [r.audit_id for r in records if r.audit_id]
    out: list[tuple[Span, ...]] = []
    with contextlib.suppress(BackendError):
        for i in range(0, len(audits), _AUDIT_CHUNK):
            chunk = audits[i : i + _AUDIT_CHUNK]
            q = "{ " + " || ".join(f'span."audit-id" = {quote(a)}' for a in chunk) + " }"
            result = tempo.search(q, start=start, end=end, limit=2 * len(chunk))
            for hit in result.traces:
                if hit.trace_id not in fetched:
                    fetched[hit.trace_id] = tempo.trace(hit.trace_id, start=start, end=end).spans
                out.append(fetched[hit.trace_id])
    return out


def _export_hint(ctx: SmokeContext) -> str:
    """Which hop to look at when no apiserver span arrived."""
    synthetic = ctx.results.get("tempo.trace_by_id")
    base = (
        "is kube-apiserver started with --tracing-config-file, does its endpoint reach the "
        "collector's OTLP/gRPC port from the apiserver's host network (no cluster DNS names; "
        "apiserver log: 'traces exporter is disconnected from the server'), and is "
        "samplingRatePerMillion set?"
    )
    if synthetic is not None and synthetic.ok:
        return (
            "the synthetic trace reached Tempo, so the apiserver -> collector hop is broken: "
            + (base)
        )
    return base


# -- verify: span metrics ---------------------------------------------------------------------


class ApiserverSpanMetrics(Check):
    name = "apiserver.span_metrics"
    title = 'span-metrics for service="apiserver" present and rising in Prometheus'
    hop = "apiserver spans -> metrics-generator -> prometheus"

    def sent(self, ctx: SmokeContext) -> Sent | None:
        return ctx.apiserver.sent

    deadline_key = "span_metrics"
    error_hint = "Prometheus's query API failed while polling"

    def __init__(self, *, via_tempo: bool = True) -> None:
        self.requires = ("apiserver.requests", "preflight.prometheus") + (
            ("preflight.tempo",) if via_tempo else ()
        )

    def _query(self, fam: Naming) -> str:
        return fam.selector(fam.calls, SERVICE, span_kind="SPAN_KIND_SERVER")

    def before_send(self, ctx: SmokeContext) -> CallsBaseline:
        timeout = ctx.settings.deadlines.preflight
        prom = ctx.prometheus()
        # Raw samples, not instant values: robust to a generator restart
        # (tracecheck.backends.prometheus.counter_increase).
        return CallsBaseline(
            {
                fam: counter_snapshot(prom, self._query(fam), now=ctx.clock.time(), timeout=timeout)
                for fam in span_metric_families(ctx)
            }
        )

    def run(self, ctx: SmokeContext) -> CheckResult:
        base = ctx.baseline(self, CallsBaseline).per_family
        prom = ctx.prometheus()
        records = ctx.apiserver.requests
        trusted = _mode(ctx).trusted
        # Trusted: every request is traced, so the SERVER-span counter must rise by at least
        # their number. Link mode: only sampled requests count (the apiserver's own traffic too).
        expected = len(records) if trusted else 1

        def probe(timeout: float) -> Probe[tuple[Naming, float, int]]:
            seen = []
            for fam, before in base.items():
                per_series = counter_increase(prom, before, now=ctx.clock.time(), timeout=timeout)
                rose = sum(per_series.values())
                seen.append(f"{fam.calls} +{rose:g} ({len(per_series)} series)")
                if rose >= expected:
                    return Probe(True, (fam, rose, len(per_series)), seen[-1])
            return Probe(False, None, ", ".join(seen) + f"; need +{expected}")

        outcome = self.poll(ctx, probe, request_timeout=ctx.settings.prometheus.timeout)
        measured = self.measured(ctx, outcome)
        if outcome.ok and outcome.value is not None:
            fam, rose, series = outcome.value
            return self.result(
                Status.PASS,
                f"{self._query(fam)}: {series} series, +{rose:g} since the send "
                f"(expected at least +{expected}; {fam.flavour} naming)",
                data={"naming": fam.flavour, "increase": rose, "series": series},
                **measured,
            )
        trace = ctx.results.get("apiserver.trace")
        if trace is not None and trace.ok:
            hint = (
                "the apiserver's spans are in Tempo but its span-metrics did not rise: is the "
                "metrics-generator's span-metrics processor on, and did the spans end within its "
                "30 s ingestion slack?"
            )
        else:
            hint = "no apiserver spans reached Tempo (see apiserver.trace), so none were counted"
        return self.result(
            Status.FAIL, f"{outcome.seen} after {outcome.elapsed:.1f} s", hint=hint, **measured
        )


# -- the plan ---------------------------------------------------------------------------------


def checks(
    settings: Settings,
    *,
    writes_namespace: str | None = None,
) -> list[Check]:
    """The apiserver leg, in display order (:func:`tracecheck.smoke.plan.default_checks`
    lists it after the pipeline checks)."""
    via_tempo = settings.smoke.span_metrics_naming != "otel"
    return [
        ApiserverReachable(),
        ApiserverRequests(writes_namespace=writes_namespace),
        ApiserverTrace(),
        ApiserverSpanMetrics(via_tempo=via_tempo),
    ]
