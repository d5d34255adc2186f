"""The watch: while a smoke run waits for its data, keep asking each component whether it is
alive, and say as soon as it is certain that a hop of the pipeline is dead.

Once a second (:data:`INTERVAL`) each watched component's readiness endpoint is asked
(collector health_check, Tempo ``/ready``, Prometheus ``/-/ready``, the apiserver's ``/readyz``
without its etcd checks, and its ``/readyz/etcd``, which says whether it reaches etcd); every
few seconds the self-metrics of the collector and Tempo are read, and once, at the start, the
configuration facts (Prometheus's flags, Tempo's running configuration). Each runs in its own
thread. A hop is **dead**:

* when a component at one of its ends has not answered at all (refused, timed out) in every
  probe for :data:`DEAD_AFTER` seconds, at least two probes. A component that answers "not
  ready" is alive (Tempo's ingester says so for 15 s after every start); a restart shorter than
  the grace period is an outage, recorded, but no verdict;
* or when a configuration fact makes it impossible: Prometheus runs without the remote-write
  receiver (every remote write of Tempo's generator is refused), Tempo's generator runs the
  tenant without the span-metrics or service-graphs processor, or has no remote_write target;
* or when the collector's exporter is stuck: spans queued and none sent for DEAD_AFTER seconds
  while the collector keeps accepting.

Checks ask :meth:`Watch.blocking` with the hops their data still has to pass; the engine ends
them at once with the hop and the evidence. Everything seen (outages with their start and end,
self-metric readings) stays in the watch for the diagnosis after the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tracecheck.diagnose.facts import (
    CollectorFacts,
    PrometheusFacts,
    TempoFacts,
    read_collector,
    read_prometheus,
    read_tempo,
)
from tracecheck.diagnose.hops import HOP_COMPONENTS, Block, fmt_time
from tracecheck.diagnose.reading import Reading, ask
from tracecheck.errors import TracecheckError

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends import Backends
    from tracecheck.diagnose.tracing import TracingFacts
    from tracecheck.polling import Clock

__all__ = ["DEAD_AFTER", "INTERVAL", "Outage", "Watch"]

#: Seconds a component must stay unreachable before it is declared dead: longer than a process
#: restart on one machine (the local pipeline restarts a component in 1-3 s), short enough for a
#: verdict within 15 s of the fault.
DEAD_AFTER = 8.0
#: Seconds between two readiness probes of a component.
INTERVAL = 1.0
#: Seconds between two readings of the self-metrics.
METRICS_EVERY = 2.0
#: Request timeout of a probe: a stalled component must not stall the watch.
PROBE_TIMEOUT = 1.0
#: kube-apiserver's etcd check waits for etcd before it answers 500 (about 4 s measured with
#: etcd stopped): its probe waits longer.
ETCD_TIMEOUT = 6.0
_READYZ_NO_ETCD = "/readyz?exclude=etcd&exclude=etcd-readiness"


@dataclass
class Outage:
    """A run of failed probes of one component: from the first failure to the first answer
    after it (``ended`` None: still down at the last probe)."""

    component: str
    since: float  # unix seconds of the first failed probe
    since_mono: float
    last: float  # unix seconds of the last failed probe
    last_mono: float
    probes: int
    cause: str
    ended: float | None = None

    def probed(self) -> str:
        """How the outage was seen: "5 probes over 8.2 s"."""
        plural = "" if self.probes == 1 else "s"
        return f"{self.probes} probe{plural} over {self.last_mono - self.since_mono:.1f} s"

    def describe(self) -> str:
        text = f"since {fmt_time(self.since)} ({self.cause}; {self.probed()}"
        return text + (f", answering again at {fmt_time(self.ended)})" if self.ended else ")")


@dataclass
class _Series:
    """Timed readings of one component's self-metrics: (monotonic, unix, facts)."""

    collector: list[tuple[float, float, CollectorFacts]] = field(default_factory=list)
    tempo: list[tuple[float, float, TempoFacts]] = field(default_factory=list)


class Watch:
    """Probes ``components`` until :meth:`stop`; thread-safe. :meth:`tick` is one round (tests
    call it with a fake clock instead of :meth:`start`)."""

    def __init__(
        self,
        backends: Backends,
        clock: Clock,
        components: Sequence[str],
        *,
        dead_after: float = DEAD_AFTER,
        interval: float = INTERVAL,
        metrics_every: float = METRICS_EVERY,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.backends = backends
        self.clock = clock
        self.components = tuple(components)
        self.dead_after = dead_after
        self.interval = interval
        self.metrics_every = metrics_every
        self.on_change = on_change
        self.outages: list[Outage] = []
        self._open: dict[str, Outage] = {}
        self.series = _Series()
        self.prometheus: PrometheusFacts | None = None
        self.tempo_config: TempoFacts | None = None
        self.tracing: TracingFacts | None = None
        self._fact_blocks: dict[str, Block] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.ticks = 0

    # -- running ------------------------------------------------------------------------------

    def jobs(self) -> dict[str, tuple[Callable[[], object], float]]:
        """What the watch runs: name -> (one round, seconds between rounds)."""
        out: dict[str, tuple[Callable[[], object], float]] = {
            c: (self._prober(c), self.interval) for c in self.components
        }
        if "apiserver" in self.components:
            out["etcd"] = (self._probe_etcd, self.interval)
        if "collector" in self.components and self.backends.settings.collector.metrics_url:
            out["collector metrics"] = (self._read_collector, self.metrics_every)
        if "tempo" in self.components:
            out["tempo metrics"] = (self._read_tempo, self.metrics_every)
        if "prometheus" in self.components:
            out["prometheus facts"] = (self._read_prometheus, 0.0)  # once
        if "apiserver" in self.components:
            out["apiserver tracing"] = (self._read_tracing, 0.0)  # once
        return out

    def start(self) -> None:
        """One thread per job, so a slow answer (kube-apiserver takes seconds to say etcd is
        down) never delays the probes of another component."""
        for name, (job, every) in self.jobs().items():
            thread = threading.Thread(
                target=self._loop, args=(job, every), name=f"tracecheck-watch-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=ETCD_TIMEOUT + 1.0)

    def _loop(self, job: Callable[[], object], every: float) -> None:
        while not self._stop.is_set():
            began = self.clock.monotonic()
            job()
            self._fact_hops()
            if every <= 0:
                return
            self._stop.wait(max(0.05, every - (self.clock.monotonic() - began)))

    def tick(self) -> None:
        """Every job once, one after another (tests drive the watch with a fake clock)."""
        for job, _ in self.jobs().values():
            job()
        self.ticks += 1
        self._fact_hops()

    # -- readiness ----------------------------------------------------------------------------

    def _prober(self, component: str) -> Callable[[], object]:
        b = self.backends
        t = PROBE_TIMEOUT
        now = self.clock.time
        if component == "collector":
            return lambda: self._record(
                "collector", ask(lambda: b.collector().health(timeout=t), now)[1]
            )
        if component == "tempo":
            return lambda: self._record("tempo", ask(lambda: b.tempo().ready(timeout=t), now)[1])
        if component == "prometheus":
            return lambda: self._record(
                "prometheus", ask(lambda: b.prometheus().ready(timeout=t), now)[1]
            )
        if component == "apiserver":
            return self._probe_apiserver
        raise ValueError(f"cannot watch {component!r}")

    def _probe_apiserver(self) -> None:
        """Alive: ``/readyz`` without its etcd checks, which answer in milliseconds while
        etcd is down (the etcd checks take seconds then: :meth:`_probe_etcd`)."""
        reply, reading = ask(
            lambda: self.backends.apiserver().send("GET", _READYZ_NO_ETCD, timeout=PROBE_TIMEOUT),
            self.clock.time,
        )
        self._record("apiserver", reading if reply is None else Reading("up", reading.at))

    def _probe_etcd(self) -> None:
        """etcd as kube-apiserver sees it: ``/readyz/etcd`` answers 500 ``[-]etcd failed`` when
        the apiserver cannot reach it. A probe that gets no answer says nothing about etcd."""
        reply, reading = ask(
            lambda: self.backends.apiserver().send("GET", "/readyz/etcd", timeout=ETCD_TIMEOUT),
            self.clock.time,
        )
        if reply is None:
            return
        if reply.status == 200:
            self._record("etcd", Reading("up", reading.at))
            return
        body = reply.body.decode(errors="replace")
        failing = [ln for ln in body.splitlines() if ln.startswith("[-]")] or [body.strip()[:80]]
        cause = f"its /readyz/etcd answered HTTP {reply.status}: {'; '.join(failing)}"
        self._record("etcd", Reading("unreachable", reading.at, cause))

    def _record(self, component: str, reading: Reading) -> None:
        mono = self.clock.monotonic()
        with self._lock:
            cur = self._open.get(component)
            if reading.state == "unreachable":
                if cur is None:
                    cur = Outage(component, reading.at, mono, reading.at, mono, 1, reading.detail)
                    self._open[component] = cur
                    self.outages.append(cur)
                else:
                    cur.last, cur.last_mono, cur.probes = reading.at, mono, cur.probes + 1
                    cur.cause = reading.detail or cur.cause
            elif cur is not None:
                cur.ended = reading.at
                del self._open[component]

    def _had_outage(self, component: str) -> bool:
        return any(o.component == component for o in self.outages)

    def down(self, component: str) -> Outage | None:
        """The component's current outage (None: it answered its last probe)."""
        with self._lock:
            return self._open.get(component)

    def dead(self, component: str) -> Outage | None:
        """The current outage if it makes the component dead (see the module docstring)."""
        out = self.down(component)
        if out is None or out.probes < 2 or out.last_mono - out.since_mono < self.dead_after:
            return None
        return out

    # -- self-metrics and configuration facts -------------------------------------------------

    def _read_collector(self) -> None:
        facts = read_collector(self.backends, timeout=PROBE_TIMEOUT)
        if facts.metrics.ok:
            with self._lock:
                self.series.collector.append((self.clock.monotonic(), self.clock.time(), facts))

    def _read_tempo(self) -> None:
        config = self.tempo_config is None
        facts = read_tempo(self.backends, timeout=PROBE_TIMEOUT, services_since=None, config=config)
        with self._lock:
            if facts.metrics.ok:
                self.series.tempo.append((self.clock.monotonic(), self.clock.time(), facts))
            if config and facts.config.ok:
                self.tempo_config = facts

    def _read_prometheus(self) -> None:
        self.prometheus = read_prometheus(self.backends, timeout=PROBE_TIMEOUT)

    def _read_tracing(self) -> None:
        from tracecheck.diagnose.tracing import read_tracing

        try:
            self.tracing = read_tracing(self.backends.apiserver(), timeout=PROBE_TIMEOUT)
        except TracecheckError:
            self.tracing = None

    def latest_tempo(self) -> TempoFacts | None:
        with self._lock:
            return self.series.tempo[-1][2] if self.series.tempo else None

    def collector_readings(self) -> list[tuple[float, float, CollectorFacts]]:
        with self._lock:
            return list(self.series.collector)

    def tempo_readings(self) -> list[tuple[float, float, TempoFacts]]:
        with self._lock:
            return list(self.series.tempo)

    def _fact_hops(self) -> None:
        from tracecheck.diagnose.rules import fact_blocks

        blocks = fact_blocks(
            self.prometheus,
            self.tempo_config,
            self.latest_tempo(),
            self.collector_readings(),
            self.tempo_readings(),
            dead_after=self.dead_after,
            tracing=self.tracing,
        )
        with self._lock:
            for hop, block in blocks.items():
                # A hop whose far end stopped answering is explained by that (an exporter is
                # stuck because Tempo is down): no second cause for it.
                if any(
                    c in self._open or self._had_outage(c)
                    for c in HOP_COMPONENTS[hop]
                    if c != block.component
                ):
                    continue
                self._fact_blocks.setdefault(hop, block)

    # -- what checks ask ----------------------------------------------------------------------

    def blocking(self, hops: Sequence[str], *, facts: bool = True) -> Block | None:
        """The first of ``hops`` (in order) that is dead: by a component that stopped answering,
        or (``facts``) by a configuration or self-metric fact. None when every hop may still
        pass."""
        for hop in hops:
            for component in HOP_COMPONENTS.get(hop, ()):
                if component not in self.components and component != "etcd":
                    continue
                out = self.dead(component)
                if out is not None:
                    text = _dead_text(self.backends, component, out)
                    return Block(hop, component, out.since, text, True, down=True)
            if facts:
                with self._lock:
                    block = self._fact_blocks.get(hop)
                if block is not None:
                    return block
        return None

    def fact_blocks(self) -> Mapping[str, Block]:
        with self._lock:
            return dict(self._fact_blocks)


def address_of(backends: Backends, component: str) -> str:
    """Where a component is reached, as messages show it."""
    s = backends.settings
    if component == "collector":
        return s.collector.health_url or s.collector.endpoint
    if component == "tempo":
        return s.tempo.url
    if component == "prometheus":
        return s.prometheus.url
    if component in ("apiserver", "etcd"):
        try:
            return backends.apiserver().address
        except TracecheckError:
            return s.apiserver.context or "the kubeconfig's server"
    return ""


def _dead_text(backends: Backends, component: str, out: Outage) -> str:
    if component == "etcd":
        return f"kube-apiserver cannot reach etcd: {out.cause} {out.describe()}"
    return f"{component} at {address_of(backends, component)} stopped answering {out.describe()}"
