"""The values commands return, and the one place that turns a report into an exit code.

* :class:`Report` of :class:`CheckResult` -- ``tracecheck smoke`` and ``apiserver probe``. A
  check that ran and found a problem is data (status FAIL); a check that could not run because
  a backend was unreachable or erroring is data too (status ERROR), so a report always says
  which hop is broken.
* :class:`ResultTable` -- a query's answer (``tracecheck query ...``, ``report apiserver``).
* :class:`Finding` -- a problem found by an offline check (a TracingConfiguration file,
  rendered manifests).

Renderers (:mod:`tracecheck.output`) only read these values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tracecheck.errors import ExitCode

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "CheckResult",
    "Finding",
    "Level",
    "Report",
    "ResultTable",
    "Status",
    "exit_code",
    "has_errors",
    "limit_rows",
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


# -- query answers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultTable:
    """A query's answer as a table.

    ``kind`` says what produced it: ``traceql-search``, ``traceql-metrics``,
    ``traceql-metrics-instant``, ``promql-vector``, ``promql-matrix``, ``promql-scalar``,
    ``promql-string`` (or ``saved-queries`` for the list, ``apiserver-report``). ``notes`` are
    one-line remarks the renderers print after the table: ``no data: ...`` for an empty result,
    ``limited to ...`` when rows were cut, backend warnings. Times in rows are RFC 3339 strings
    (UTC). :func:`tracecheck.output.render_table` writes it in every ``--output`` format.
    """

    columns: tuple[str, ...]
    rows: tuple[Mapping[str, Any], ...]
    notes: tuple[str, ...] = ()
    kind: str = ""
    query: str = ""
    start: float | None = None  # the window asked for (unix seconds), when there is one
    end: float | None = None

    @property
    def empty(self) -> bool:
        return not self.rows

    def column(self, name: str) -> list[Any]:
        """The values of one column, in row order."""
        return [r.get(name) for r in self.rows]


def limit_rows(
    rows: Sequence[Mapping[str, Any]], max_rows: int | None, notes: list[str]
) -> tuple[Mapping[str, Any], ...]:
    """Cut ``rows`` to ``max_rows`` and say so in ``notes`` (never silently)."""
    if max_rows is not None and len(rows) > max_rows:
        notes.append(
            f"limited to the first {max_rows:,} of {len(rows):,} rows; narrow the query or "
            "raise --max-rows"
        )
        return tuple(rows[:max_rows])
    return tuple(rows)


# -- findings of offline checks -----------------------------------------------------------------

Level = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found without a backend: in a TracingConfiguration file or in rendered
    manifests.

    ``level`` is ``error`` (refused, unsafe, or can never work) or ``warning`` (starts, but worth
    a look). ``field`` is where: a key of the file (``endpoint``, ``(file)`` for the file as a
    whole) or a path inside an object (``spec.template.spec.containers[0].securityContext``).
    ``object`` names the object of a multi-object source (``Kind/namespace/name``, or
    ``Kind/name`` when cluster-scoped); ``line`` is the 1-based line when the source is a file.
    """

    level: Level
    field: str
    message: str
    object: str = ""
    line: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"line {self.line}: {self.level}: {self.field}: {self.message}"
        where = " ".join(x for x in (self.object, self.field) if x)
        return f"{self.level}: {where}: {self.message}"


def has_errors(findings: Sequence[Finding]) -> bool:
    """Whether any finding is an error (the commands exit non-zero then; warnings alone do not)."""
    return any(f.level == "error" for f in findings)
