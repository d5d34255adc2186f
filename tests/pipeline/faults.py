"""Faults injected into a smoke run at a set point, for the fault-matrix tests and the
time-to-verdict benchmark (tests/bench/bench_fault_verdict.py).

A fault is injected from the run's progress callback when a named check finishes: the check's
thread stops (or restarts) the component before it returns, so the next stage starts with the
fault in place and the outcome does not depend on timing. The time to verdict is from the
moment the stop began to the end of the report (the diagnosis included).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tracecheck.config import Settings
from tracecheck.results import Report
from tracecheck.smoke.engine import Check, Progress, SmokeContext
from tracecheck.smoke.plan import default_checks, smoke
from tracecheck.stack.local import LocalStack

#: When each component is stopped: after the send (the trace is in the collector; what
#: follows must pass the stopped component), or for the apiserver leg after its preflight.
TRIGGERS = {
    "collector": "send",
    "tempo": "send",
    "prometheus": "send",
    "etcd": "apiserver.reachable",
    "kube-apiserver": "apiserver.reachable",
}


@dataclass
class FaultRun:
    report: Report
    fault_at: float | None  # unix seconds the stop began (None: never triggered)
    stopped_s: float = 0.0  # how long the stop took
    done: dict[str, float] = field(default_factory=dict)  # check -> unix time it finished

    @property
    def verdict_s(self) -> float:
        """Seconds from the fault (the stopped component is gone: its stop returned; etcd,
        for one, takes seconds to shut down) to the report's end."""
        assert self.fault_at is not None, "the fault was never injected"
        return self.report.finished_at - (self.fault_at + self.stopped_s)

    @property
    def settled_s(self) -> float:
        """Seconds from the fault to the end of the last check that failed or errored: when
        every verdict about the fault was known (the run may go on with checks the fault does
        not touch)."""
        assert self.fault_at is not None, "the fault was never injected"
        bad = [r.name for r in self.report.results if r.status.value in ("FAIL", "ERROR")]
        last = max((self.done[n] for n in bad if n in self.done), default=self.report.finished_at)
        return max(0.0, last - (self.fault_at + self.stopped_s))

    def line(self) -> str:
        d = self.report.diagnosis
        return f"Diagnosis: {d.summary}" if d is not None else "(no diagnosis)"


def run_with_fault(
    stack: LocalStack,
    settings: Settings,
    component: str,
    *,
    trigger: str | None = None,
    action: str = "stop",
    early_verdict: bool = True,
    checks: Sequence[Check] | None = None,
) -> FaultRun:
    """Run smoke; when ``trigger`` (a check name) is done, stop ``component`` (``action``
    ``stop``: it stays down until the caller restores it; ``restart``: started again at once,
    as a redeploy does). ``early_verdict=False`` runs as before issue 9 (no watch, no
    diagnosis), for the benchmark's "before" figures."""
    when = trigger or TRIGGERS[component]
    fired = threading.Event()
    out: dict[str, float] = {}

    done: dict[str, float] = {}

    def progress(event: Progress) -> None:
        if event.state == "done":
            done[event.check] = time.time()
        if event.check == when and event.state == "done" and not fired.is_set():
            fired.set()
            out["at"] = time.time()
            stack.stop(component)
            out["stopped"] = time.time() - out["at"]
            if action == "restart":
                stack.start(component)

    ctx = SmokeContext(settings, early_verdict=early_verdict)
    plan = list(checks) if checks is not None else default_checks(settings)
    report = smoke(settings, progress=progress, checks=plan, context=ctx)
    return FaultRun(report, out.get("at"), out.get("stopped", 0.0), done)
