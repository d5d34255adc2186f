"""The diagnosis after a smoke run: which hop broke first, on what evidence, and which failures
follow from it.

Inputs: the checks' results and paths (:class:`CheckInfo`), what the run's watch saw (outages
with their times, configuration facts, self-metric readings from the start of the run), and one
more reading of every component taken now (:func:`tracecheck.diagnose.facts.inspect`).

Candidates, each with its evidence:

* a **component** that does not answer (the watch saw it stop, or it still refuses now), or
  etcd when kube-apiserver's ``/readyz?verbose`` says so;
* a **hop** a fact makes dead: the watch's configuration facts and stuck-exporter rule
  (:func:`tracecheck.diagnose.rules.fact_blocks`), the generator's remote write failing during
  the run, spans dropped outside the generator's ingestion slack, the apiserver's tracing
  configuration (its endpoint refusing, or no span of the apiserver in Tempo).

The diagnosis is the candidate furthest upstream (:data:`tracecheck.diagnose.hops.ORDER`) that
explains at least one failing check, i.e. lies on its path. The failing checks on whose path
it lies are marked: the ones that ask the broken component directly carry the evidence in their
hint, the others "follows from ...". Failing checks it does not explain keep their own hints and
are listed. With no candidate, the diagnosis says it is inconclusive and guesses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tracecheck.diagnose.facts import Inspection, TempoFacts
from tracecheck.diagnose.hops import (
    APISERVER,
    APISERVER_EXPORT,
    COLLECTOR,
    ETCD,
    GENERATOR_SPAN_METRICS,
    HOP_COMPONENTS,
    ORDER,
    PROMETHEUS,
    REMOTE_WRITE,
    TEMPO,
    Block,
    fmt_time,
)
from tracecheck.results import CheckResult, Diagnosis, Status

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends import Backends
    from tracecheck.diagnose.watch import Watch

__all__ = ["Candidate", "CheckInfo", "diagnose", "diagnose_run"]

#: A component's own hop: where its death sits in :data:`ORDER`.
_OWN_HOP = {
    "etcd": ETCD,
    "apiserver": APISERVER,
    "collector": COLLECTOR,
    "tempo": TEMPO,
    "prometheus": PROMETHEUS,
}
_NAMES = {
    "etcd": "etcd",
    "apiserver": "kube-apiserver",
    "collector": "the collector",
    "tempo": "Tempo",
    "prometheus": "Prometheus",
}


@dataclass(frozen=True, slots=True)
class CheckInfo:
    """What the diagnosis needs to know of a check (from :class:`tracecheck.smoke.engine.Check`)."""

    name: str
    flow: str
    path: tuple[str, ...]
    backend: str
    confirms: tuple[str, ...] = ()
    group: str = ""

    def hops(self) -> tuple[str, ...]:
        own = _OWN_HOP.get(self.backend)
        return self.path + ((own,) if own and own not in self.path else ())

    def components(self) -> set[str]:
        return {c for h in self.hops() for c in HOP_COMPONENTS.get(h, ())}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A possible first broken hop. ``component`` set: that component is down (explains every
    check whose path touches it); else only checks whose path holds ``hop``."""

    hop: str
    component: str
    cause: str  # a few words
    evidence: tuple[str, ...]
    fix: str = ""
    since: float | None = None
    down: bool = False  # the component does not answer (vs a fact about the hop)
    #: A self-metric other traffic may have moved too: it names the hop only when no
    #: component down and no configuration fact explains the failure.
    weak: bool = False

    def explains(self, info: CheckInfo) -> bool:
        if self.down:
            return self.component in info.components()
        return self.hop in info.hops()

    @property
    def rank(self) -> int:
        return ORDER.index(self.hop) if self.hop in ORDER else len(ORDER)


# -- candidates -----------------------------------------------------------------------------------


def _down_candidates(
    watch: Watch | None,
    now: Inspection,
    results: Mapping[str, CheckResult],
    settings_addr: Mapping[str, str],
) -> list[Candidate]:
    out: list[Candidate] = []
    readings = {
        "collector": now.collector.health if now.collector else None,
        "tempo": now.tempo.ready if now.tempo else None,
        "prometheus": now.prometheus.ready if now.prometheus else None,
        "apiserver": now.apiserver.readyz if now.apiserver else None,
    }
    for comp in ("etcd", "apiserver", "collector", "tempo", "prometheus"):
        lines: list[str] = []
        since = None
        outage = None
        if watch is not None:
            seen = [o for o in watch.outages if o.component == comp]
            outage = seen[-1] if seen else None
        still = readings.get(comp)
        etcd_now: list[str] = []
        if comp == "etcd" and now.apiserver is not None:
            etcd_now = [
                f"[-]{n} {why}".rstrip()
                for n, ok, why in now.apiserver.checks
                if not ok and n.startswith("etcd")
            ]
        down_now = (still is not None and still.state == "unreachable") or bool(etcd_now)
        if outage is not None and (outage.ended is None or down_now):
            since = outage.since
            if comp == "etcd":
                lines.append(
                    f"kube-apiserver answers, but {outage.cause} from {fmt_time(outage.since)} "
                    f"({outage.probed()})"
                )
            else:
                lines.append(
                    f"{_NAMES[comp]} at {settings_addr.get(comp, '?')} stopped answering at "
                    f"{fmt_time(outage.since)} ({outage.cause.rsplit(': ', 1)[-1]}; "
                    f"{outage.probed()})"
                )
        elif down_now:
            pre = results.get(_PREFLIGHT.get(comp, ""))
            when = (
                "before the run"
                if pre is not None and pre.status is Status.ERROR
                else "at the end of the run"
            )
            if comp == "etcd":
                lines.append(
                    "kube-apiserver answers, but its /readyz?verbose reports "
                    f"{', '.join(etcd_now)} ({when})"
                )
            else:
                assert still is not None
                lines.append(f"{_NAMES[comp]} does not answer {when}: {still.detail}")
        if not lines:
            continue
        if still is not None and comp != "etcd":
            if still.state == "unreachable" and outage is not None:
                lines.append(f"still not answering at {fmt_time(still.at)}")
            elif still.ok and outage is not None and outage.ended is not None:
                lines.append(f"answering again at {fmt_time(outage.ended)}")
        if comp == "etcd" and etcd_now and outage is not None:
            lines.append(f"still at {fmt_time(now.finished)}: {', '.join(etcd_now)}")
        if comp == "tempo" and watch is not None:
            lines += _export_stalled(watch, since)
        out.append(
            Candidate(
                _OWN_HOP[comp],
                comp,
                f"{_NAMES[comp]} stopped answering"
                if comp != "etcd"
                else "etcd is unreachable from kube-apiserver",
                tuple(lines),
                _DOWN_FIX[comp],
                since,
                down=True,
            )
        )
    return out


_PREFLIGHT = {
    "etcd": "apiserver.reachable",
    "collector": "preflight.collector",
    "tempo": "preflight.tempo",
    "prometheus": "preflight.prometheus",
    "apiserver": "apiserver.reachable",
}
_DOWN_FIX = {
    "etcd": "start etcd, or fix kube-apiserver's --etcd-servers",
    "apiserver": "start kube-apiserver (its log says why it stopped)",
    "collector": "start the collector (its log says why it stopped)",
    "tempo": "start Tempo (its log says why it stopped)",
    "prometheus": "start Prometheus (its log says why it stopped)",
}


def _export_stalled(watch: Watch, since: float | None) -> list[str]:
    """The collector's exporter since ``since``: spans queued, none sent."""
    readings = [r for r in watch.collector_readings() if since is None or r[1] >= since - 0.5]
    if len(readings) < 2:
        return []
    first, last = readings[0][2], readings[-1][2]
    sent = (last.sent or 0) - (first.sent or 0)
    failed = (last.send_failed or 0) - (first.send_failed or 0)
    if (last.queue_size or 0) > 0 and sent == 0:
        return [
            f"the collector's exporter sent +0 spans from then and its queue holds "
            f"{last.queue_size:g} request(s)" + (f" (send_failed +{failed:g})" if failed else "")
        ]
    return []


def _fact_candidates(
    watch: Watch | None, now: Inspection, failing: Sequence[CheckInfo]
) -> list[Candidate]:
    out: list[Candidate] = []
    blocks: Mapping[str, Block] = watch.fact_blocks() if watch is not None else {}
    for hop, b in blocks.items():
        out.append(Candidate(hop, b.component, _cause_of(hop, b), (b.evidence,), b.fix, b.since))
    first = _first_tempo(watch)
    t = now.tempo
    if t is not None and t.metrics.ok and REMOTE_WRITE not in blocks:
        lines = _remote_write_failing(first, t, now)
        if lines:
            out.append(
                Candidate(
                    REMOTE_WRITE,
                    "tempo",
                    "Tempo's remote write to Prometheus fails",
                    tuple(lines),
                    "make the remote-write URL reach Prometheus's /api/v1/write (and Prometheus "
                    "run with --web.enable-remote-write-receiver)",
                )
            )
    if t is not None and t.metrics.ok and first is not None:
        before = first.generator_discarded.get("outside_metrics_ingestion_slack", 0.0)
        grew = t.generator_discarded.get("outside_metrics_ingestion_slack", 0.0) - before
        if grew > 0:
            out.append(
                Candidate(
                    GENERATOR_SPAN_METRICS,
                    "tempo",
                    "the metrics-generator dropped spans outside its ingestion slack",
                    (
                        f'tempo_metrics_generator_spans_discarded_total{{reason="outside_metrics_'
                        f'ingestion_slack"}} +{grew:g} during the run: spans (of any sender) '
                        "ended more than 30 s away from Tempo's clock",
                    ),
                    "synchronise the clocks (NTP) of tracecheck's host and Tempo",
                    weak=True,
                )
            )
    if any(i.flow == "apiserver" for i in failing) and APISERVER_EXPORT not in blocks:
        c = _apiserver_export(now)
        if c is not None:
            out.append(c)
    p = now.prometheus or (watch.prometheus if watch is not None else None)
    if p is not None and p.exemplar_storage is False:
        out.append(
            Candidate(
                PROMETHEUS,
                "prometheus",
                "Prometheus runs without exemplar storage",
                (
                    f"Prometheus at {p.address} runs without exemplar storage "
                    "(/api/v1/status/flags: enable-feature does not list exemplar-storage), so it "
                    "drops every exemplar it receives",
                ),
                "start Prometheus with --enable-feature=exemplar-storage",
            )
        )
    return out


def _cause_of(hop: str, block: Block) -> str:
    text = block.evidence
    if "remote-write receiver" in text:
        return "Prometheus runs without the remote-write receiver"
    if "processor" in text and "without the" in text:
        proc = text.split("without the ", 1)[1].split(" processor", 1)[0]
        return f"Tempo's metrics-generator runs without the {proc} processor"
    if "exporter" in text:
        return "the collector's exporter delivers nothing to Tempo"
    if "remote_write" in text:
        return "Tempo's metrics-generator has no remote_write target"
    return f"{hop} is dead"


def _first_tempo(watch: Watch | None) -> TempoFacts | None:
    if watch is None:
        return None
    readings = watch.tempo_readings()
    return readings[0][2] if readings else None


def _remote_write_failing(first: TempoFacts | None, t: TempoFacts, now: Inspection) -> list[str]:
    lines = []
    for rw in t.remote_write:
        prev = next((r for r in first.remote_write if r.url == rw.url), None) if first else None
        failed = rw.failed - (prev.failed if prev else 0.0)
        retried = rw.retried - (prev.retried if prev else 0.0)
        if prev is None:
            continue
        if failed > 0:
            lines.append(
                f"Tempo's metrics-generator dropped {failed:g} samples to {rw.url} during the run "
                "(prometheus_remote_storage_samples_failed_total: refused with a 4xx, not retried)"
            )
        if retried > 0 and rw.pending > 0:
            lines.append(
                f"Tempo's remote write to {rw.url} retried {retried:g} samples during the run and "
                f"holds {rw.pending:g} pending: the target does not take them"
            )
    p = now.prometheus
    if lines and p is not None and p.write_answers:
        refused = {c: n for c, n in p.write_answers.items() if c[:1] in ("4", "5") and n > 0}
        if refused:
            lines.append(
                "Prometheus's /api/v1/write answered "
                + ", ".join(f"HTTP {c} x{n:g}" for c, n in sorted(refused.items()))
                + " since it started"
            )
    return lines


def _apiserver_export(now: Inspection) -> Candidate | None:
    a, t = now.apiserver, now.tempo
    lines: list[str] = []
    fix = "point the TracingConfiguration's endpoint at the collector's OTLP gRPC port"
    conclusive_cause = ""
    if a is not None and a.tracing is not None:
        tr = a.tracing
        if not tr.tracing_on:
            conclusive_cause = "kube-apiserver runs without --tracing-config-file"
            lines.append(f"{tr.source}: {tr.note}")
            fix = "start kube-apiserver with --tracing-config-file"
        elif tr.endpoint_reading is not None and not tr.endpoint_reading.ok:
            conclusive_cause = (
                f"kube-apiserver exports its spans to {tr.endpoint}, which refuses them"
            )
            lines.append(
                f"{tr.source} runs with --tracing-config-file={tr.config_file}: endpoint "
                f"{tr.endpoint}; {tr.endpoint_reading.detail}"
            )
        elif tr.endpoint is not None:
            lines.append(
                f"{tr.source} exports to {tr.endpoint}"
                + (f" ({tr.endpoint_reading.detail})" if tr.endpoint_reading else "")
            )
        elif tr.note:
            lines.append(f"its tracing configuration cannot be read: {tr.note}")
    if t is not None and t.services is not None and "apiserver" not in t.services:
        lines.append(
            "Tempo holds no span with service.name=apiserver from the last 15 minutes, so the "
            "collector never received one (resource.service.name values seen: "
            + (", ".join(t.services[:6]) or "none")
            + ")"
        )
    if not lines or (not conclusive_cause and not any("holds no span" in x for x in lines)):
        return None
    cause = conclusive_cause or (
        "kube-apiserver's spans do not reach the collector (a guess at why: the endpoint or "
        "the flag; the configuration could not be read)"
    )
    return Candidate(APISERVER_EXPORT, "apiserver", cause, tuple(lines), fix)


# -- the diagnosis --------------------------------------------------------------------------------


def diagnose(
    infos: Mapping[str, CheckInfo],
    results: Sequence[CheckResult],
    candidates: Sequence[Candidate],
    *,
    blocks: Mapping[str, Block] | None = None,
    watch_outages: Sequence[str] = (),
) -> tuple[Diagnosis | None, tuple[CheckResult, ...]]:
    """The diagnosis from ``candidates`` and the results with their hints marked."""
    failing = [r for r in results if r.status in (Status.FAIL, Status.ERROR) and r.name in infos]
    if not failing:
        warned = [r for r in results if r.status is Status.WARN and r.name in infos]
        caveat = [
            c for c in candidates if not c.down and any(c.explains(infos[r.name]) for r in warned)
        ]
        if caveat:
            c = min(caveat, key=lambda c: c.rank)
            warned_names = [r.name for r in warned if c.explains(infos[r.name])]
            return (
                Diagnosis(
                    f"no check failed, but {', '.join(warned_names)} could not be verified: "
                    + "; ".join(c.evidence),
                    hop=c.hop,
                    component=c.component,
                    cause=c.cause,
                    evidence=c.evidence,
                    fix=c.fix,
                    follows=tuple(warned_names),
                ),
                tuple(results),
            )
        if not watch_outages:
            return None, tuple(results)
        return (
            Diagnosis(
                "every check passed; meanwhile " + "; ".join(watch_outages),
                conclusive=True,
                evidence=tuple(watch_outages),
            ),
            tuple(results),
        )
    explaining = [c for c in candidates if any(c.explains(infos[r.name]) for r in failing)]
    if not explaining:
        names = ", ".join(r.name for r in failing)
        return (
            Diagnosis(
                f"inconclusive: {names} failed, yet no component read shows a fault and no "
                "configuration fact or self-metric read explains it; the checks' hints are "
                "guesses",
                conclusive=False,
                unexplained=tuple(r.name for r in failing),
            ),
            tuple(results),
        )
    root = min(explaining, key=lambda c: (c.weak, c.rank, not c.down))
    follows = [r for r in failing if root.explains(infos[r.name])]
    unexplained = [r.name for r in failing if not root.explains(infos[r.name])]
    direct = {
        r.name
        for r in follows
        if (root.down and infos[r.name].backend == root.component)
        or (
            not root.down
            and (blocks or {}).get(r.name) is not None
            and (blocks or {})[r.name].hop == root.hop
        )
    }
    if not direct:
        direct = {follows[0].name}
    short = f"{root.hop}: {root.cause}" if root.hop != root.component else root.cause
    out = []
    for r in results:
        if r.name in direct:
            hint = "; ".join(root.evidence) + (f". Fix: {root.fix}" if root.fix else "")
            out.append(replace(r, hint=hint, follows_from=root.hop))
        elif any(r is f for f in follows):
            out.append(replace(r, hint=f"follows from {short}", follows_from=root.hop))
        else:
            out.append(r)
    later = len(follows) - len(direct)
    summary = "; ".join(root.evidence)
    if root.since is not None and fmt_time(root.since) not in summary:
        summary += f" (since {fmt_time(root.since)})"
    if later > 0:
        plural = ("s", "") if later != 1 else ("", "s")
        summary += f". {later} later failure{plural[0]} follow{plural[1]} from it"
    if unexplained:
        summary += f"; not explained by it: {', '.join(unexplained)}"
    return (
        Diagnosis(
            summary,
            hop=root.hop,
            component=root.component,
            cause=root.cause,
            since=root.since,
            conclusive=True,
            evidence=root.evidence,
            fix=root.fix,
            follows=tuple(r.name for r in follows),
            unexplained=tuple(unexplained),
        ),
        tuple(out),
    )


def _refused_credentials(results: Sequence[CheckResult]) -> dict[str, Candidate]:
    """A component that refused tracecheck's credentials (a check's ERROR says so in
    ``data.credentials_refused``): asking it again with the same credentials only repeats the
    refusal, so it is not read again, and the check's own hint (what to set) is the evidence."""
    out: dict[str, Candidate] = {}
    for r in results:
        comp = r.data.get("credentials_refused") if r.status is Status.ERROR else None
        if comp in _OWN_HOP and comp not in out:
            out[comp] = Candidate(
                _OWN_HOP[comp],
                comp,
                f"{_NAMES[comp]} refuses tracecheck's credentials",
                (r.hint,),
                down=True,
            )
    return out


def diagnose_run(
    infos: Mapping[str, CheckInfo],
    results: Sequence[CheckResult],
    *,
    backends: Backends,
    watch: Watch | None,
    blocks: Mapping[str, Block],
    read: Callable[[Sequence[str], float | None], Inspection],
) -> tuple[Diagnosis | None, tuple[CheckResult, ...]]:
    """Read the components once more (``read(components, services_since)``, normally
    :func:`tracecheck.diagnose.facts.inspect`) and diagnose the run (see the module
    docstring). ``watch`` and ``blocks`` are the run's watch and the blocks it caused."""
    from tracecheck.diagnose.watch import address_of

    failing = [
        infos[r.name]
        for r in results
        if r.name in infos and r.status in (Status.FAIL, Status.ERROR)
    ]
    wanted = {c for i in infos.values() for c in i.components()} - {"etcd"}
    if any(i.flow == "apiserver" for i in infos.values()):
        wanted.add("apiserver")
    refused = _refused_credentials(results)
    apiserver_failing = any(i.flow == "apiserver" for i in failing)
    now = read(sorted(wanted - set(refused)), 900.0 if apiserver_failing else None)
    by_name = {r.name: r for r in results}
    addr = {c: address_of(backends, c) for c in ("collector", "tempo", "prometheus", "apiserver")}
    down = list(refused.values()) + _down_candidates(watch, now, by_name, addr)
    dead = {c.component for c in down}
    # A fact about a hop whose other end is down follows from that (an exporter stuck on a
    # stopped Tempo, a remote write to a stopped Prometheus): the component is the cause.
    facts = [
        c
        for c in _fact_candidates(watch, now, failing)
        if not any(x in dead for x in HOP_COMPONENTS.get(c.hop, ()) if x != c.component)
    ]
    outages = []
    if watch is not None:
        for o in watch.outages:
            end = f"answering again at {fmt_time(o.ended)}" if o.ended else "still down"
            outages.append(
                f"{o.component} did not answer from {fmt_time(o.since)} ({o.cause}); {end}"
            )
    return diagnose(infos, results, down + facts, blocks=blocks, watch_outages=outages)
