"""Check results, the smoke report, and the one place that turns a report into an exit code.

A check that ran and found a problem is data (status FAIL); a check that could not run because
a backend was unreachable or erroring is data too (status ERROR), so a report always says which
hop is broken. Renderers (``tracecheck.output``) only read these values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tracecheck.errors import ExitCode

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "CheckResult",
    "Report",
    "Status",
    "exit_code",
]

#: Version of the JSON report layout (``tracecheck/schema/report-v1.json``). Bumped on any
#: incompatible change; additions of optional keys keep the version.
REPORT_SCHEMA_VERSION = 1


class Status(enum.StrEnum):
    PASS = "PASS"  # the check saw what it expected
    WARN = "WARN"  # it passed with a caveat, or could not be verified for a known reason
    FAIL = "FAIL"  # the data did not arrive (or arrived wrong) within the deadline
    ERROR = "ERROR"  # the check could not be made: a backend was unreachable or erroring
    SKIP = "SKIP"  # not run: deselected, or a check it depends on did not pass


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str  # stable identifier, e.g. "tempo.trace_by_id"
    title: str  # one line saying what the check proves
    status: Status
    elapsed: float = 0.0  # seconds the check ran
    delay: float | None = None  # seconds from the send to the data being visible (if measured)
    detail: str = ""  # what was seen
    hint: str = ""  # on FAIL/ERROR: the likely broken hop and what to look at
    hop: str = ""  # the pipeline hop the check exercises, e.g. "collector -> tempo"
    deadline: float | None = None  # seconds allowed
    attempts: int = 0  # polls made
    data: Mapping[str, Any] = field(default_factory=dict)  # check-specific facts (JSON-safe)

    @property
    def ok(self) -> bool:
        return self.status in (Status.PASS, Status.WARN)


@dataclass(frozen=True, slots=True)
class Report:
    run_id: str
    trace_id: str  # hex of the synthetic trace ("" when not sent)
    started_at: float  # unix seconds
    finished_at: float
    results: tuple[CheckResult, ...]
    target: Mapping[str, Any] = field(default_factory=dict)  # redacted endpoints and versions
    tables: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    tool_version: str = ""
    command: str = "smoke"  # the tracecheck command that made the report
    schema_version: int = REPORT_SCHEMA_VERSION

    @property
    def exit_code(self) -> ExitCode:
        return exit_code(self.results)

    def result(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for r in self.results:
            out[r.status.value] += 1
        return out

    def pipeline_latency(self) -> list[dict[str, Any]]:
        """One row per check that measured a send-to-visible delay: the pipeline latency table."""
        return [
            {
                "stage": r.name,
                "hop": r.hop,
                "status": r.status.value,
                "delay_s": None if r.delay is None else round(r.delay, 3),
                "deadline_s": r.deadline,
                "attempts": r.attempts,
            }
            for r in self.results
            if r.delay is not None or (r.deadline is not None and r.status is not Status.SKIP)
        ]


def exit_code(results: Sequence[CheckResult]) -> ExitCode:
    """The process exit code for a set of results; the only place this decision is made.

    ERROR outranks FAIL: when a backend could not be asked, the data checks behind it say
    nothing, and 3 tells the caller to look at reachability first.
    """
    statuses = {r.status for r in results}
    if Status.ERROR in statuses:
        return ExitCode.BACKEND
    if Status.FAIL in statuses:
        return ExitCode.CHECK_FAILED
    return ExitCode.OK
