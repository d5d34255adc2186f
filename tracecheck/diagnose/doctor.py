"""``tracecheck doctor``: inspect a live pipeline without sending anything.

Two readings of every component, ``observe`` seconds apart (:func:`tracecheck.diagnose.facts
.inspect`): the first with the questions asked once (recent service names in Tempo, the
span-metrics cardinality in Prometheus), the second for what changed meanwhile (a counter of
refused spans or failed remote writes that is rising now, an exporter queue that does not
drain). :func:`tracecheck.diagnose.rules.findings` turns them into findings; the report lists
each component (state, version, the facts read) and the findings, and exits 1 when one is an
error.

>>> report = doctor(load_settings())          # doctest: +SKIP
>>> [f.message for f in report.findings if f.level == "error"]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tracecheck._version import __version__
from tracecheck.diagnose.facts import COMPONENTS, Inspection, inspect
from tracecheck.diagnose.hops import fmt_time
from tracecheck.diagnose.rules import findings
from tracecheck.results import ComponentRow, DoctorReport

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends import Backends
    from tracecheck.config import Settings

__all__ = ["DEFAULT_OBSERVE", "doctor", "rows"]

#: Seconds between the two readings: long enough for the apiserver's exporter (it batches for
#: 5 s) and the collector's batch processor to move something through a working pipeline.
DEFAULT_OBSERVE = 6.0
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _onoff(value: bool | None) -> str:
    return {True: "on", False: "OFF", None: "unknown"}[value]


def rows(now: Inspection) -> tuple[ComponentRow, ...]:
    """One row per component read: its state, version and the facts read, one line."""
    out: list[ComponentRow] = []
    a = now.apiserver
    if a is not None:
        facts = []
        if a.checks:
            failing = a.failing
            facts.append(
                f"readyz: {len(a.checks) - len(failing)} of {len(a.checks)} checks ok"
                + (f", failing: {', '.join(failing)}" if failing else "")
            )
        tr = a.tracing
        if tr is not None:
            if not tr.tracing_on:
                facts.append(f"tracing: off ({tr.source})")
            else:
                where = f"tracing: {tr.source} --tracing-config-file={tr.config_file}"
                if tr.endpoint:
                    where += f", endpoint {tr.endpoint}"
                    if tr.endpoint_reading is not None:
                        where += " (answers)" if tr.endpoint_reading.ok else " (refused)"
                if tr.sampling_rate is not None:
                    where += f", samplingRatePerMillion {tr.sampling_rate}"
                facts.append(where)
        else:
            facts.append("tracing configuration not readable")
        out.append(
            ComponentRow("apiserver", a.address, a.readyz.state, a.version, "; ".join(facts))
        )
        if a.checks:
            etcd = [c for c in a.checks if c[0].startswith("etcd")]
            if etcd:
                ok = all(c[1] for c in etcd)
                out.append(
                    ComponentRow(
                        "etcd",
                        "(through kube-apiserver)",
                        "up" if ok else "unreachable",
                        "",
                        ", ".join(f"[{'+' if c[1] else '-'}]{c[0]}" for c in etcd),
                    )
                )
    c = now.collector
    if c is not None:
        facts = []
        if c.metrics.ok:
            facts.append(
                f"receiver accepted {c.accepted or 0:g}, refused {c.refused or 0:g}; exporter "
                f"sent {c.sent or 0:g}, failed {(c.send_failed or 0) + (c.enqueue_failed or 0):g}"
                f", queue {c.queue_size or 0:g}/{c.queue_capacity or 0:g}"
            )
        elif c.metrics.detail:
            facts.append(f"metrics: {c.metrics.detail}")
        out.append(
            ComponentRow("collector", c.address, c.health.state, c.version, "; ".join(facts))
        )
    t = now.tempo
    if t is not None:
        facts = []
        if t.processors is not None:
            facts.append(f"processors [{', '.join(t.processors)}]")
        if t.remote_write_urls is not None:
            facts.append(f"remote_write [{', '.join(t.remote_write_urls)}]")
        if t.receivers:
            facts.append("receivers " + ", ".join(f"{k} {v}" for k, v in t.receivers.items()))
        if t.metrics.ok:
            rw = t.remote_write_totals()
            facts.append(
                f"received {t.distributor_received or 0:g} spans; generator active series "
                f"{t.active_series or 0:g}"
                + (f" of {t.max_active_series:g}" if t.max_active_series else "")
                + f"; remote write failed {rw.failed:g}, pending {rw.pending:g}"
            )
            if t.process_start:
                facts.append(f"started {fmt_time(t.process_start)}")
        out.append(ComponentRow("tempo", t.address, t.ready.state, t.version, "; ".join(facts)))
    p = now.prometheus
    if p is not None:
        facts = [
            f"remote-write receiver {_onoff(p.remote_write_receiver)}",
            f"exemplar storage {_onoff(p.exemplar_storage)}",
        ]
        if p.start_time:
            facts.append(f"started {fmt_time(p.start_time)}")
        if p.write_answers:
            facts.append(
                "/api/v1/write answers "
                + ", ".join(f"{k} x{v:g}" for k, v in sorted(p.write_answers.items()))
            )
        out.append(
            ComponentRow("prometheus", p.address, p.ready.state, p.version, "; ".join(facts))
        )
    return tuple(out)


def doctor(
    settings: Settings,
    *,
    observe: float = DEFAULT_OBSERVE,
    components: Sequence[str] = COMPONENTS,
    backends: Backends | None = None,
) -> DoctorReport:
    """Read the pipeline twice, ``observe`` seconds apart, and report (see the module
    docstring). ``components`` narrows what is read (``apiserver`` needs a kubeconfig)."""
    from tracecheck.backends import Backends as _Backends

    own = backends is None
    b = backends if backends is not None else _Backends(settings)
    started = time.time()
    try:
        apiserver = "apiserver" in components
        first = inspect(
            settings,
            b,
            components=components,
            services_since=900.0 if apiserver else None,
            cardinality="prometheus" in components,
        )
        now = first
        if observe > 0:
            time.sleep(observe)
            now = inspect(settings, b, components=components, services_since=None)
            # What was asked once stays from the first reading.
            if now.tempo is not None and first.tempo is not None:
                now = replace(
                    now,
                    tempo=replace(
                        now.tempo,
                        services=first.tempo.services,
                        services_reading=first.tempo.services_reading,
                    ),
                )
            if now.prometheus is not None and first.prometheus is not None:
                now = replace(
                    now,
                    prometheus=replace(now.prometheus, cardinality=first.prometheus.cardinality),
                )
    finally:
        if own:
            b.close()
    host = urlsplit(settings.tempo.url).hostname or ""
    found = findings(now, first if observe > 0 else None, tempo_local=host in _LOOPBACK)
    return DoctorReport(
        started,
        time.time(),
        rows(now),
        tuple(found),
        observed_s=observe,
        tool_version=__version__,
    )
