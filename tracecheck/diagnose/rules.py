"""Rules: from facts (:mod:`tracecheck.diagnose.facts`) to findings, each saying what was
observed, which component it concerns, and what to change.

Two consumers:

* :func:`fact_blocks`: the facts that make a hop certainly dead during a smoke run (a
  configuration fact, or the collector's exporter stuck); the watch turns them into early
  verdicts;
* :func:`findings`: ``tracecheck doctor``'s findings over one inspection, or two taken a few
  seconds apart (``before``), whose differences show what is happening now (a counter rising)
  rather than what happened since the process started.

A rule fires only on a fact it read; when the fact could not be read, the finding (if any) says
so and calls itself a guess.
"""

from __future__ import annotations

from collections.abc import Sequence

from tracecheck.diagnose.facts import (
    ApiserverFacts,
    CollectorFacts,
    Inspection,
    PrometheusFacts,
    TempoFacts,
)
from tracecheck.diagnose.hops import (
    APISERVER_EXPORT,
    EXPORT,
    GENERATOR_SERVICE_GRAPHS,
    GENERATOR_SPAN_METRICS,
    REMOTE_WRITE,
    Block,
    fmt_time,
)
from tracecheck.diagnose.reading import Reading
from tracecheck.diagnose.tracing import TracingFacts
from tracecheck.results import Finding, Level

__all__ = ["exporter_stuck", "fact_blocks", "findings"]

#: Span-metric label values above which the cardinality is worth a warning (a label carrying IDs
#: or URLs with parameters grows without bound).
CARDINALITY_WARN = 1000
#: Share of a limit (queue capacity, max active series) worth a warning.
NEAR_LIMIT = 0.8

_FIX_RW_RECEIVER = "start Prometheus with --web.enable-remote-write-receiver"


def _fix_processor(processor: str) -> str:
    return (
        f"add {processor} to overrides.defaults.metrics_generator.processors in Tempo's "
        "configuration (or the tenant's runtime overrides) and restart the metrics-generator"
    )


# -- early verdicts -------------------------------------------------------------------------------


def _delta(first: float | None, last: float | None) -> float:
    return (last or 0.0) - (first or 0.0)


def exporter_stuck(
    readings: Sequence[tuple[float, float, CollectorFacts]],
    tempo: Sequence[tuple[float, float, TempoFacts]] = (),
    *,
    dead_after: float,
) -> Block | None:
    """The collector's exporter is stuck: in every reading of the last ``dead_after`` seconds
    (at least three) its queue holds data and it sent nothing."""
    if len(readings) < 3:
        return None
    last_mono = readings[-1][0]
    window = [r for r in readings if last_mono - r[0] <= dead_after + 0.5]
    if len(window) < 3 or window[-1][0] - window[0][0] < dead_after:
        return None
    facts = [f for _, _, f in window]
    if any(f.queue_size is None or f.queue_size <= 0 for f in facts):
        return None
    if _delta(facts[0].sent, facts[-1].sent) > 0:
        return None
    first, last = facts[0], facts[-1]
    since = window[0][1]
    names = ", ".join(first.exporters) or "its exporter"
    # What the collector took in since the watch's first reading (the run's spans among it).
    accepted = _delta(readings[0][2].accepted, last.accepted)
    text = (
        f"the collector accepted +{accepted:g} spans during the run, but its exporter ({names}) "
        f"sent +0 from {fmt_time(since)} to {fmt_time(window[-1][1])} with "
        f"{last.queue_size:g} request(s) waiting in its queue"
        f" (send_failed +{_delta(first.send_failed, last.send_failed):g})"
    )
    receivers = next((t[2].receivers for t in reversed(tempo) if t[2].receivers), {})
    where = (
        f" (Tempo's running configuration lists its OTLP receivers at "
        f"{', '.join(f'{p} {e}' for p, e in receivers.items())})"
        if receivers
        else ""
    )
    return Block(
        EXPORT,
        "collector",
        since,
        text,
        True,
        f"check the collector's {names} exporter endpoint{where} and the collector's log "
        '("Exporting failed")',
    )


def tracing_block(tracing: TracingFacts | None) -> Block | None:
    """The apiserver's exporter cannot deliver: read from a kube-apiserver process on this host
    (so the endpoint tried from here is the one it dials), it runs without tracing or its
    endpoint refuses connections."""
    if tracing is None or not tracing.source.startswith("process"):
        return None
    if not tracing.tracing_on:
        return Block(
            APISERVER_EXPORT, "apiserver", None,
            f"kube-apiserver ({tracing.source}) runs without --tracing-config-file: it exports "
            "no span", True, "start kube-apiserver with --tracing-config-file",
        )  # fmt: skip
    reading = tracing.endpoint_reading
    if reading is not None and not reading.ok:
        return Block(
            APISERVER_EXPORT, "apiserver", None,
            f"kube-apiserver ({tracing.source}) exports its spans to {tracing.endpoint} "
            f"(--tracing-config-file={tracing.config_file}), and {reading.detail}",
            True,
            "point the TracingConfiguration's endpoint at the collector's OTLP gRPC port and "
            "restart kube-apiserver",
        )  # fmt: skip
    return None


def fact_blocks(
    prometheus: PrometheusFacts | None,
    tempo_config: TempoFacts | None,
    tempo: TempoFacts | None,
    collector_readings: Sequence[tuple[float, float, CollectorFacts]],
    tempo_readings: Sequence[tuple[float, float, TempoFacts]],
    *,
    dead_after: float,
    tracing: TracingFacts | None = None,
) -> dict[str, Block]:
    """Hop -> :class:`Block` for every hop a fact makes certainly dead."""
    out: dict[str, Block] = {}
    blocked = tracing_block(tracing)
    if blocked is not None:
        out[APISERVER_EXPORT] = blocked
    if prometheus is not None and prometheus.remote_write_receiver is False:
        out[REMOTE_WRITE] = Block(
            REMOTE_WRITE,
            "prometheus",
            None,
            f"Prometheus at {prometheus.address} runs without the remote-write receiver "
            "(/api/v1/status/flags: web.enable-remote-write-receiver=false), so it refuses "
            "every remote write of Tempo's metrics-generator",
            True,
            _FIX_RW_RECEIVER,
        )
    if tempo_config is not None and tempo_config.remote_write_urls == ():
        out.setdefault(
            REMOTE_WRITE,
            Block(
                REMOTE_WRITE,
                "tempo",
                None,
                "Tempo's running configuration (/status/config) has no "
                "metrics_generator.storage.remote_write target",
                True,
                "add the Prometheus remote-write URL to metrics_generator.storage.remote_write",
            ),
        )
    if tempo is not None and tempo.active_processors:
        for processor, hop in (
            ("span-metrics", GENERATOR_SPAN_METRICS),
            ("service-graphs", GENERATOR_SERVICE_GRAPHS),
        ):
            if tempo.active_processors.get(processor, 0.0) == 0.0:
                configured = ""
                if tempo_config is not None and tempo_config.processors is not None:
                    configured = (
                        "; /status/config overrides.defaults.metrics_generator.processors: "
                        f"[{', '.join(tempo_config.processors)}]"
                    )
                out[hop] = Block(
                    hop,
                    "tempo",
                    None,
                    f"Tempo's metrics-generator runs tenant {tempo.tenant} without the "
                    f"{processor} processor (tempo_metrics_generator_active_processors"
                    f'{{processor="{processor}"}} = 0{configured})',
                    True,
                    _fix_processor(processor),
                )
    stuck = exporter_stuck(collector_readings, tempo_readings, dead_after=dead_after)
    if stuck is not None:
        out[EXPORT] = stuck
    return out


# -- doctor ----------------------------------------------------------------------------------------


def _f(
    level: Level, component: str, fact: str, message: str, evidence: str, fix: str = ""
) -> Finding:
    return Finding(level, fact, message, component=component, evidence=evidence, fix=fix)


def _reachability(name: str, reading: Reading) -> list[Finding]:
    """The finding, if any, of a component's readiness answer."""
    found = _answer(name, reading.state, reading.detail)
    return [found] if found is not None else []


def _answer(name: str, state: str, detail: str) -> Finding | None:
    if state == "up":
        return None
    if state == "unreachable":
        return _f(
            "error", name, "reachable", f"{name} does not answer", detail,
            f"start {name}, or point tracecheck at it (its URL setting)",
        )  # fmt: skip
    if state == "forbidden":
        return _f(
            "error", name, "credentials", f"{name} refuses tracecheck's credentials", detail,
            "check the configured headers, tenant or client certificate",
        )  # fmt: skip
    if state == "not ready":
        return _f("warning", name, "ready", f"{name} answers but is not ready", detail)
    if state == "skipped":
        return None
    return _f("error", name, "reachable", f"{name} answers with an error", detail)


def _collector(c: CollectorFacts, before: CollectorFacts | None) -> list[Finding]:
    out = _reachability("collector", c.health)
    if not c.metrics.ok:
        if c.metrics.state != "skipped" and c.health.answered:
            out.append(
                _f("warning", "collector", "metrics", "the collector's self-metrics cannot be read",
                   c.metrics.detail, "set collector.metrics_url to its telemetry endpoint (:8888)")
            )  # fmt: skip
        return out
    b = before if before is not None and before.metrics.ok else None
    if b is not None:
        accepted = _delta(b.accepted, c.accepted)
        sent = _delta(b.sent, c.sent)
        failed = _delta(b.send_failed, c.send_failed) + _delta(b.enqueue_failed, c.enqueue_failed)
        refused = _delta(b.refused, c.refused)
        if (c.queue_size or 0) > 0 and (b.queue_size or 0) > 0 and sent == 0:
            out.append(
                _f(
                    "error",
                    "collector",
                    "exporter",
                    "the collector's exporter is not delivering: spans wait in its queue and none "
                    "are sent",
                    f"exporter ({', '.join(c.exporters) or '?'}) queue {b.queue_size:g} -> "
                    f"{c.queue_size:g} request(s), sent +0 spans, receiver accepted "
                    f"+{accepted:g} over the observation",
                    "check the exporter's endpoint (Tempo's OTLP gRPC port) and TLS settings, and "
                    'the collector\'s log ("Exporting failed")',
                )
            )
        if failed > 0:
            out.append(
                _f("error", "collector", "exporter", "the collector's exporter is dropping spans",
                   f"send_failed + enqueue_failed +{failed:g} spans over the observation",
                   "look at the collector's log; the next hop (Tempo) refuses or is unreachable")
            )  # fmt: skip
        if refused > 0:
            out.append(
                _f("warning", "collector", "receiver", "the collector refuses spans",
                   f"otelcol_receiver_refused_spans +{refused:g} over the observation",
                   "the memory_limiter refuses data under memory pressure; see its log")
            )  # fmt: skip
    else:
        if (c.send_failed or 0) + (c.enqueue_failed or 0) > 0:
            out.append(
                _f("warning", "collector", "exporter", "the collector's exporter failed before",
                   f"send_failed {c.send_failed or 0:g}, enqueue_failed {c.enqueue_failed or 0:g} "
                   "spans since it started", "see the collector's log")
            )  # fmt: skip
    if (
        c.queue_capacity
        and c.queue_size is not None
        and c.queue_size >= NEAR_LIMIT * c.queue_capacity
    ):
        out.append(
            _f("warning", "collector", "exporter queue", "the exporter queue is nearly full",
               f"otelcol_exporter_queue_size {c.queue_size:g} of {c.queue_capacity:g}",
               "the next hop cannot keep up or is unreachable")
        )  # fmt: skip
    return out


def _tempo(
    t: TempoFacts, before: TempoFacts | None, apiserver_checked: bool, tempo_local: bool
) -> list[Finding]:
    out = _reachability("tempo", t.ready)
    if not t.ready.answered:
        return out
    b = before if before is not None and before.metrics.ok else None
    if t.metrics.ok:
        if b is not None:
            refused = _delta(b.receiver_refused, t.receiver_refused)
            if refused > 0:
                out.append(
                    _f(
                        "error",
                        "tempo",
                        "receiver",
                        "Tempo's OTLP receiver refuses spans",
                        f"tempo_receiver_refused_spans +{refused:g} over the observation",
                        "a push without X-Scope-OrgID under multitenancy, or invalid IDs",
                    )
                )
        for reason, count in sorted(t.discarded.items()):
            grew = count - (b.discarded.get(reason, 0.0) if b is not None else 0.0)
            if count > 0:
                out.append(
                    _f("error" if b is not None and grew > 0 else "warning", "tempo", "discarded",
                       f"Tempo discards spans ({reason})",
                       f'tempo_discarded_spans_total{{reason="{reason}"}} = {count:g}'
                       + (f" (+{grew:g} over the observation)" if b else " since start"),
                       "raise the limit named by the reason in the overrides, or send less")
                )  # fmt: skip
        slack = t.generator_discarded.get("outside_metrics_ingestion_slack", 0.0)
        if slack > 0:
            out.append(
                _f("warning", "tempo", "metrics-generator",
                   "the metrics-generator drops spans outside its ingestion slack (clock skew?)",
                   f'tempo_metrics_generator_spans_discarded_total{{reason="outside_metrics_'
                   f'ingestion_slack"}} = {slack:g}',
                   "spans must end within 30 s of Tempo's clock: check NTP on the senders")
            )  # fmt: skip
        if t.series_limited:
            out.append(
                _f("error", "tempo", "metrics-generator",
                   "the metrics-generator refuses new series: max_active_series reached",
                   f"tempo_metrics_generator_registry_series_limited_total = {t.series_limited:g}"
                   f" (active {t.active_series or 0:g} of {t.max_active_series or 0:g})",
                   "raise overrides metrics_generator.max_active_series or cut label cardinality")
            )  # fmt: skip
        elif t.max_active_series and (t.active_series or 0) >= NEAR_LIMIT * t.max_active_series:
            out.append(
                _f("warning", "tempo", "metrics-generator",
                   "the metrics-generator is near its active-series limit",
                   f"active {t.active_series or 0:g} of max {t.max_active_series:g}",
                   "raise max_active_series or cut label cardinality")
            )  # fmt: skip
        for rw in t.remote_write:
            prev = next((r for r in b.remote_write if r.url == rw.url), None) if b else None
            failed = rw.failed - (prev.failed if prev else 0.0)
            retried = rw.retried - (prev.retried if prev else 0.0)
            if (prev is not None and failed > 0) or (prev is None and rw.failed > 0):
                out.append(
                    _f("error" if prev is not None else "warning", "tempo", "remote_write",
                       f"the metrics-generator's remote write to {rw.url} is refused",
                       f"prometheus_remote_storage_samples_failed_total = {rw.failed:g}"
                       + (f" (+{failed:g} over the observation)" if prev else " since start")
                       + " (samples dropped on a 4xx answer, not retried)",
                       "Prometheus answers 404 without --web.enable-remote-write-receiver, 400 "
                       "for out-of-order samples (after a generator restart, once)")
                )  # fmt: skip
            if (prev is not None and retried > 0) or (
                rw.pending > 0 and prev is not None and prev.pending > 0
            ):
                out.append(
                    _f("error", "tempo", "remote_write",
                       f"the metrics-generator cannot deliver to {rw.url}",
                       f"samples retried +{retried:g}, pending {rw.pending:g} over the observation",
                       "check that the URL reaches Prometheus (port, path /api/v1/write)")
                )  # fmt: skip
        if t.generator and not t.active_processors and t.processors:
            pass  # no generator instance for the tenant yet: nothing sent to it since start
        elif t.active_processors:
            for processor in ("span-metrics", "service-graphs"):
                if t.active_processors.get(processor, 0.0) == 0.0:
                    out.append(
                        _f("error", "tempo", "metrics-generator",
                           f"the metrics-generator runs without the {processor} processor",
                           f'tempo_metrics_generator_active_processors{{tenant="{t.tenant}",'
                           f'processor="{processor}"}} = 0', _fix_processor(processor))
                    )  # fmt: skip
    elif t.metrics.state != "skipped":
        out.append(
            _f(
                "warning",
                "tempo",
                "metrics",
                "Tempo's /metrics cannot be read",
                t.metrics.detail,
                "self-metric alarms are unavailable",
            )
        )
    if t.config.ok and t.processors is not None:
        for processor in ("span-metrics", "service-graphs"):
            if processor not in t.processors and not t.active_processors:
                out.append(
                    _f("error", "tempo", "configuration",
                       f"Tempo's configuration does not enable the {processor} processor",
                       "/status/config overrides.defaults.metrics_generator.processors: "
                       f"[{', '.join(t.processors)}]", _fix_processor(processor))
                )  # fmt: skip
        if t.remote_write_urls == ():
            out.append(
                _f("error", "tempo", "configuration",
                   "the metrics-generator has no remote_write target",
                   "/status/config metrics_generator.storage.remote_write is empty",
                   "add Prometheus's /api/v1/write URL")
            )  # fmt: skip
        for proto, endpoint in t.receivers.items():
            host = endpoint.rsplit(":", 1)[0]
            if host in ("localhost", "127.0.0.1", "") and not tempo_local:
                out.append(
                    _f("warning", "tempo", "configuration",
                       f"Tempo's OTLP {proto} receiver listens on {endpoint} only",
                       f"/status/config distributor.receivers.otlp.protocols.{proto}.endpoint = "
                       f"{endpoint} (the default since Tempo 2.7)",
                       f"set it to 0.0.0.0:{endpoint.rsplit(':', 1)[-1]} so the collector can "
                       "reach it")
                )  # fmt: skip
    elif t.config.state not in ("up", "skipped"):
        out.append(
            _f(
                "warning",
                "tempo",
                "configuration",
                "Tempo's running configuration cannot be read; configuration findings are missing",
                t.config.detail,
            )
        )
    if apiserver_checked and t.services is not None and "apiserver" not in t.services:
        out.append(
            _f("error", "tempo", "apiserver spans",
               "Tempo holds no span of the apiserver from the last 15 minutes",
               "resource.service.name values seen: "
               + (", ".join(t.services[:8]) or "none"),
               "check kube-apiserver's --tracing-config-file and that its endpoint reaches the "
               "collector")
        )  # fmt: skip
    return out


def _prometheus(p: PrometheusFacts, before: PrometheusFacts | None) -> list[Finding]:
    out = _reachability("prometheus", p.ready)
    if not p.ready.answered:
        return out
    if p.remote_write_receiver is False:
        out.append(
            _f("error", "prometheus", "remote-write receiver",
               "Prometheus refuses remote writes: Tempo's span-metrics cannot arrive",
               "/api/v1/status/flags: web.enable-remote-write-receiver=false", _FIX_RW_RECEIVER)
        )  # fmt: skip
    elif p.remote_write_receiver is None:
        out.append(
            _f("warning", "prometheus", "remote-write receiver",
               "whether Prometheus accepts remote writes is unknown (a guess: it may not)",
               "flags not readable: "
               + (p.flags.detail or "no web.enable-remote-write-receiver flag"),
               "check that the backend accepts remote write at /api/v1/write")
        )  # fmt: skip
    if p.exemplar_storage is False:
        out.append(
            _f("warning", "prometheus", "exemplar storage",
               "Prometheus drops exemplars: metrics-to-traces links stay empty",
               "/api/v1/status/flags: enable-feature does not list exemplar-storage",
               "start Prometheus with --enable-feature=exemplar-storage")
        )  # fmt: skip
    refused = {c: n for c, n in p.write_answers.items() if c[:1] in ("4", "5") and n > 0}
    if refused:
        prev = before.write_answers if before is not None else {}
        grew = {c: n - prev.get(c, 0.0) for c, n in refused.items()}
        rising = before is not None and any(v > 0 for v in grew.values())
        out.append(
            _f("error" if rising else "warning", "prometheus", "remote-write receiver",
               "Prometheus refused remote writes",
               "prometheus_http_requests_total{handler=\"/api/v1/write\"}: "
               + ", ".join(f"HTTP {c} x{n:g}" for c, n in sorted(refused.items()))
               + (" (rising)" if rising else " since start"),
               "400 is usually out-of-order samples (once, after a generator restart); see its log")
        )  # fmt: skip
    for label, count in sorted(p.cardinality.items()):
        if count > CARDINALITY_WARN:
            out.append(
                _f("warning", "prometheus", "span-metrics cardinality",
                   f"span-metrics carry {count} values of {label}",
                   f"count(count by ({label}) (traces_spanmetrics_calls_total)) = {count}",
                   "drop or bucket the label in the generator's dimensions")
            )  # fmt: skip
    return out


def _apiserver(a: ApiserverFacts) -> list[Finding]:
    out: list[Finding] = []
    if a.readyz.state == "not ready" and a.failing:
        etcd = [n for n in a.failing if n.startswith("etcd")]
        listed = ", ".join(f"[-]{n}" for n in a.failing)
        out.append(
            _f("error", "etcd" if etcd else "apiserver", "readyz",
               ("kube-apiserver cannot reach etcd" if etcd else "kube-apiserver is not ready"),
               f"/readyz?verbose: {listed}",
               "start etcd / check --etcd-servers" if etcd else "see kube-apiserver's log")
        )  # fmt: skip
    else:
        out += _reachability("apiserver", a.readyz)
    tr = a.tracing
    if tr is None:
        return out
    if not tr.tracing_on:
        out.append(
            _f("error", "apiserver", "tracing", "kube-apiserver runs without tracing",
               f"{tr.source}: {tr.note}",
               "start it with --tracing-config-file (stack/apiserver/tracing-config.yaml)")
        )  # fmt: skip
    elif tr.endpoint_reading is not None and not tr.endpoint_reading.ok:
        out.append(
            _f("error", "apiserver", "tracing endpoint",
               f"kube-apiserver exports its spans to {tr.endpoint}, which does not answer",
               f"{tr.source}: {tr.config_file} endpoint {tr.endpoint}; "
               f"{tr.endpoint_reading.detail}",
               "point endpoint at the collector's OTLP gRPC port (e.g. 127.0.0.1:4317)")
        )  # fmt: skip
    elif tr.endpoint is None and tr.note:
        out.append(
            _f("warning", "apiserver", "tracing",
               "the apiserver's tracing endpoint cannot be read (a guess: check it by hand)",
               f"{tr.source}: {tr.note}")
        )  # fmt: skip
    elif tr.sampling_rate == 0:
        out.append(
            _f("warning", "apiserver", "tracing",
               "kube-apiserver samples nothing on its own (samplingRatePerMillion: 0)",
               f"{tr.config_file}: samplingRatePerMillion 0",
               "only requests with a trusted sampled traceparent are traced; raise the rate")
        )  # fmt: skip
    return out


def findings(
    now: Inspection, before: Inspection | None = None, *, tempo_local: bool = False
) -> list[Finding]:
    """``tracecheck doctor``'s findings, errors first then warnings, in pipeline order.

    ``tempo_local`` says Tempo runs on this machine (its receivers on localhost are then
    expected)."""
    out: list[Finding] = []
    if now.apiserver is not None:
        out += _apiserver(now.apiserver)
    if now.collector is not None:
        out += _collector(now.collector, before.collector if before else None)
    if now.tempo is not None:
        out += _tempo(
            now.tempo,
            before.tempo if before else None,
            now.apiserver is not None and now.apiserver.readyz.answered,
            tempo_local,
        )
    if now.prometheus is not None:
        out += _prometheus(now.prometheus, before.prometheus if before else None)
    order = {"error": 0, "warning": 1}
    return sorted(out, key=lambda f: order.get(f.level, 2))
