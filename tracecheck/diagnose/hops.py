"""The hops of the pipeline, the components at their ends, and what a dead hop looks like.

Two flows of data cross the pipeline; each check's data follows one of them::

    synthetic:  collector -> collector->tempo -> tempo -> generator (span-metrics |
                service-graphs) -> generator->prometheus -> prometheus
    apiserver:  etcd, apiserver -> apiserver->collector -> (then as above)

A hop is named by what a user would look at; :data:`HOP_COMPONENTS` says which components'
death kills it. :data:`ORDER` is the pipeline order, upstream first: the diagnosis names the
first broken hop in it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "APISERVER",
    "APISERVER_EXPORT",
    "COLLECTOR",
    "ETCD",
    "EXPORT",
    "GENERATOR_SERVICE_GRAPHS",
    "GENERATOR_SPAN_METRICS",
    "HOP_COMPONENTS",
    "ORDER",
    "PROMETHEUS",
    "REMOTE_WRITE",
    "TEMPO",
    "Block",
    "fmt_time",
]

ETCD = "etcd"
APISERVER = "apiserver"
APISERVER_EXPORT = "apiserver -> collector"
COLLECTOR = "collector"
EXPORT = "collector -> tempo"
TEMPO = "tempo"
GENERATOR_SPAN_METRICS = "tempo metrics-generator (span-metrics)"
GENERATOR_SERVICE_GRAPHS = "tempo metrics-generator (service-graphs)"
REMOTE_WRITE = "tempo metrics-generator -> prometheus"
PROMETHEUS = "prometheus"

ORDER = (
    ETCD,
    APISERVER,
    APISERVER_EXPORT,
    COLLECTOR,
    EXPORT,
    TEMPO,
    GENERATOR_SPAN_METRICS,
    GENERATOR_SERVICE_GRAPHS,
    REMOTE_WRITE,
    PROMETHEUS,
)

HOP_COMPONENTS: dict[str, tuple[str, ...]] = {
    ETCD: ("etcd",),
    APISERVER: ("apiserver",),
    APISERVER_EXPORT: ("apiserver", "collector"),
    COLLECTOR: ("collector",),
    EXPORT: ("collector", "tempo"),
    TEMPO: ("tempo",),
    GENERATOR_SPAN_METRICS: ("tempo",),
    GENERATOR_SERVICE_GRAPHS: ("tempo",),
    REMOTE_WRITE: ("tempo", "prometheus"),
    PROMETHEUS: ("prometheus",),
}


@dataclass(frozen=True, slots=True)
class Block:
    """A hop established dead: ``component`` is the one at fault (for a configuration fact, the
    one whose configuration it is), ``since`` unix seconds (None: from the start), ``evidence``
    one line saying what was observed, ``fix`` what to change."""

    hop: str
    component: str
    since: float | None
    evidence: str
    certain: bool = True
    fix: str = ""
    #: The component stopped answering (else a fact about the hop).
    down: bool = False

    def short(self) -> str:
        """What blocks: the component that stopped answering, else the hop."""
        return self.component if self.down else self.hop


def fmt_time(ts: float | None) -> str:
    """Unix seconds as ``HH:MM:SSZ`` (UTC; a run's events happen within minutes)."""
    if ts is None:
        return "?"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%SZ")
