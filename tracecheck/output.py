"""Every ``--output`` format, for every value a command returns: the one output module.

=====================  ================================  ====================================
value                  formats                           function
=====================  ================================  ====================================
:class:`Report`        table, json, junit, markdown      :func:`render`
:class:`ResultTable`   table, json, csv, markdown        :func:`render_table`
:class:`Finding` list  table, json                       :func:`render_findings`
=====================  ================================  ====================================

Pure functions from values to strings (their imports are made where they are used, so the
command line's ``--help`` does not pay for them); the CLI decides where each output goes
(``--output json:report.json``). The report's JSON layout is versioned (``schema_version``) and
described by ``tracecheck/schema/report-v1.json``.

One JSON convention for all of them (:func:`json_value`): times are RFC 3339 UTC strings with
milliseconds (:func:`iso`); NaN and infinities, which JSON cannot hold, are the strings
``"NaN"``, ``"+Inf"`` and ``"-Inf"`` as Prometheus's HTTP API writes them; bytes (IDs) are hex.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tracecheck.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.results import CheckResult, Finding, Report, ResultTable

__all__ = [
    "FINDING_FORMATS",
    "FORMATS",
    "REPORT_FORMATS",
    "TABLE_FORMATS",
    "findings_to_json",
    "iso",
    "json_value",
    "parse_output",
    "render",
    "render_csv",
    "render_findings",
    "render_json",
    "render_junit",
    "render_markdown",
    "render_markdown_rows",
    "render_rows",
    "render_table",
    "render_text",
    "report_to_dict",
    "table_to_dict",
]

#: Formats of a smoke/probe report: ``--output FORMAT[:PATH]`` (repeatable).
REPORT_FORMATS = ("table", "json", "junit", "markdown")
FORMATS = REPORT_FORMATS  # the name older callers use
#: Formats of a query's table (``tracecheck query ... --output``, ``report apiserver``).
TABLE_FORMATS = ("table", "json", "csv", "markdown")
#: Formats of findings (``tracecheck apiserver check-config --output``).
FINDING_FORMATS = ("table", "json")

# ANSI SGR codes (ECMA-48) for a terminal: statuses, hints and the summary line.
# (keys are Status values; results is imported where a report is rendered, not at start)
_SGR = {
    "PASS": "32",  # green
    "WARN": "33",  # yellow
    "FAIL": "1;31",  # bold red
    "ERROR": "1;35",  # bold magenta
    "SKIP": "2",  # dim
    "hint": "33",
    "title": "1",
}


def _paint(text: str, style: str) -> str:
    return f"\x1b[{style}m{text}\x1b[0m" if style else text


def parse_output(spec: str, formats: Sequence[str] = REPORT_FORMATS) -> tuple[str, str | None]:
    """``json`` -> ("json", None); ``junit:out/smoke.xml`` -> ("junit", "out/smoke.xml").

    A format outside ``formats`` is a :class:`~tracecheck.errors.UsageError` (exit 2).
    """
    fmt, sep, path = spec.partition(":")
    fmt = fmt.strip().lower()
    check_format(fmt, formats, spec)
    if sep and not path:
        raise UsageError("output", spec, "empty path after ':'")
    return fmt, (path or None)


def check_format(fmt: str, formats: Sequence[str], spec: str = "") -> None:
    """UsageError unless ``fmt`` is one of ``formats``."""
    if fmt not in formats:
        raise UsageError(
            "output", spec or fmt, f"unknown format {fmt!r}; choose from {', '.join(formats)}"
        )


def render(report: Report, fmt: str, *, color: bool = False, width: int = 120) -> str:
    if fmt == "table":
        return render_text(report, color=color, width=width)
    if fmt == "json":
        return render_json(report)
    if fmt == "junit":
        return render_junit(report)
    if fmt == "markdown":
        return render_markdown(report)
    check_format(fmt, REPORT_FORMATS)
    raise AssertionError(fmt)  # pragma: no cover - check_format raised


# -- JSON ---------------------------------------------------------------------------------------


def iso(ts: float) -> str:
    """Unix seconds as RFC 3339 UTC with milliseconds: ``2025-01-31T12:00:00.000Z``."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_value(value: Any) -> Any:
    """``value`` made JSON-safe by the one convention of this module (see the docstring)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return value


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _check_dict(r: CheckResult) -> dict[str, Any]:
    return {
        "name": r.name,
        "title": r.title,
        "status": r.status.value,
        "hop": r.hop,
        "elapsed_s": _r(r.elapsed),
        "delay_s": _r(r.delay),
        "deadline_s": r.deadline,
        "attempts": r.attempts,
        "detail": r.detail,
        "hint": r.hint,
        "data": json_value(dict(r.data)),
    }


def report_to_dict(report: Report) -> dict[str, Any]:
    return {
        "schema_version": report.schema_version,
        "tool": "tracecheck",
        "tool_version": report.tool_version,
        "command": report.command,
        "run_id": report.run_id,
        "trace_id": report.trace_id,
        "started_at": iso(report.started_at),
        "finished_at": iso(report.finished_at),
        "duration_s": _r(report.finished_at - report.started_at),
        "exit_code": int(report.exit_code),
        "counts": report.counts(),
        "target": json_value(dict(report.target)),
        "checks": [_check_dict(r) for r in report.results],
        "tables": {k: [json_value(dict(row)) for row in v] for k, v in report.tables.items()},
    }


def render_json(report: Report) -> str:
    import json

    return json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n"


# -- JUnit ---------------------------------------------------------------------------------------


def render_junit(report: Report) -> str:
    """JUnit XML (one test case per check) for CI systems: FAIL -> failure, ERROR -> error."""
    from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

    suite: Any = TestSuite(f"tracecheck.{report.command.replace(' ', '.')}")
    suite.timestamp = iso(report.started_at)
    suite.add_property("run_id", report.run_id)
    suite.add_property("trace_id", report.trace_id)
    for key, value in sorted(report.target.items()):
        suite.add_property(f"target.{key}", str(value))
    for r in report.results:
        case = TestCase(r.name, classname=f"{suite.name}.{r.name.split('.', 1)[0]}", time=r.elapsed)
        text = "\n".join(x for x in (r.detail, f"hint: {r.hint}" if r.hint else "") if x)
        if r.status == "FAIL":
            case.result = [Failure(r.detail, type_=r.hop or "check")]
            case.system_err = text
        elif r.status == "ERROR":
            case.result = [Error(r.detail, type_=r.hop or "backend")]
            case.system_err = text
        elif r.status == "SKIP":
            case.result = [Skipped(r.detail)]
        else:
            case.system_out = f"{r.status.value}: {text}"
        suite.add_testcase(case)
    xml: Any = JUnitXml()  # junitparser is untyped
    xml.add_testsuite(suite)
    xml.update_statistics()
    raw = xml.tostring()
    return (raw.decode() if isinstance(raw, bytes) else str(raw)).rstrip("\n") + "\n"


# -- text --------------------------------------------------------------------------------------


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}s" if value < 100 else f"{value:.0f}s"


def _check_rows(report: Report) -> list[dict[str, str]]:
    return [
        {
            "check": r.name,
            "status": r.status.value,
            "time": _fmt_s(r.elapsed),
            "delay": _fmt_s(r.delay),
            "detail": r.detail,
        }
        for r in report.results
    ]


def _summary(report: Report) -> str:
    counts = report.counts()
    parts = [f"{n} {s.lower()}" for s, n in counts.items() if n]
    return (
        f"tracecheck {report.command}: {', '.join(parts) or 'no checks'} in "
        f"{report.finished_at - report.started_at:.1f}s (run {report.run_id or '-'}, "
        f"trace {report.trace_id or '-'}) -> exit {int(report.exit_code)}"
    )


def _hints(report: Report) -> list[str]:
    return [
        f"{r.name}: {r.hint}"
        for r in report.results
        if r.hint and r.status in ("FAIL", "ERROR", "WARN")
    ]


def render_text(report: Report, *, color: bool = False, width: int = 120) -> str:
    """The human report: checks, hints, pipeline latency and other tables, summary line.

    Plain, aligned text that stays readable in CI logs; with ``color`` (a terminal without
    NO_COLOR) the statuses, hints and summary are coloured with ANSI codes, the layout the same.
    """
    sections: list[tuple[str, list[dict[str, Any]]]] = [("Checks", _check_rows(report))]
    for name, rows in report.tables.items():
        if rows:
            sections.append((name.replace("_", " ").capitalize(), [dict(r) for r in rows]))
    hints = _hints(report)

    def paint(text: str, style: str) -> str:
        return _paint(text, style) if color else text

    def status_cell(column: str, padded: str) -> str:
        return paint(padded, _SGR.get(padded.strip(), "")) if column == "status" else padded

    out: list[str] = []
    for title, rows in sections:
        out.append(paint(title, _SGR["title"]))
        out.append(render_rows(rows, width=width, style=status_cell if color else None))
        out.append("")
    if hints:
        out.append(paint("Hints", _SGR["title"]))
        out.extend(f"  {paint('hint', _SGR['hint'])} {h}" if color else f"  {h}" for h in hints)
        out.append("")
    verdict = {0: "PASS", 1: "FAIL", 3: "ERROR"}
    out.append(paint(_summary(report), _SGR[verdict.get(int(report.exit_code), "FAIL")]))
    return "\n".join(out) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}" if abs(value) >= 0.001 or value == 0 else f"{value:.2e}"
    return str(value)


def render_rows(
    rows: Sequence[Mapping[str, Any]],
    *,
    width: int = 120,
    columns: Sequence[str] | None = None,
    style: Callable[[str, str], str] | None = None,
) -> str:
    """A plain aligned text table; the last column is cut to fit ``width``. ``style(column,
    padded_text)`` may decorate a body cell after it is laid out (colour codes take no room)."""
    if not rows:
        return "  (no rows)"
    cols = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    fixed = sum(widths[:-1]) + 2 * len(cols)
    widths[-1] = max(len(cols[-1]), min(widths[-1], max(20, width - fixed)))

    def line(values: Sequence[str], body: bool = False) -> str:
        parts = []
        for i, v in enumerate(values):
            if i == len(values) - 1:
                v = v if len(v) <= widths[i] else v[: widths[i] - 1] + "…"
            else:
                v = v.ljust(widths[i])
            parts.append(style(cols[i], v) if body and style is not None else v)
        return "  " + "  ".join(parts).rstrip()

    head = [line(cols), line(["-" * w for w in widths])]
    return "\n".join([*head, *(line(r, body=True) for r in cells)])


# -- Markdown / CSV -------------------------------------------------------------------------------


def render_markdown_rows(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> str:
    if not rows:
        return "_no rows_"
    cols = list(columns or rows[0].keys())

    def esc(v: Any) -> str:
        return _cell(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(esc(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def render_markdown(report: Report) -> str:
    out = [
        f"## tracecheck {report.command}: exit {int(report.exit_code)}",
        "",
        _summary(report),
        "",
    ]
    out += ["### Checks", "", render_markdown_rows(_check_rows(report)), ""]
    for name, rows in report.tables.items():
        if rows:
            out += [
                f"### {name.replace('_', ' ').capitalize()}",
                "",
                render_markdown_rows(rows),
                "",
            ]
    hints = _hints(report)
    if hints:
        out += ["### Hints", "", *(f"- {h}" for h in hints), ""]
    return "\n".join(out)


def render_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    import csv
    import io

    cols = list(columns or (rows[0].keys() if rows else []))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in cols})
    return buf.getvalue()


# -- query tables ---------------------------------------------------------------------------------


def table_to_dict(table: ResultTable) -> dict[str, Any]:
    """A query table as JSON data: ``query``, ``kind``, ``start``, ``end``, ``columns``,
    ``rows``, ``notes``."""
    return {
        "query": table.query,
        "kind": table.kind,
        "start": iso(table.start) if table.start is not None else None,
        "end": iso(table.end) if table.end is not None else None,
        "columns": list(table.columns),
        "rows": [{c: json_value(r.get(c)) for c in table.columns} for r in table.rows],
        "notes": list(table.notes),
    }


def render_table(table: ResultTable, fmt: str = "table", *, width: int = 120) -> str:
    """A query table as ``table``, ``json``, ``csv`` or ``markdown`` text.

    ``table`` and ``markdown`` end with the notes; an empty result renders as its ``no data``
    note instead of an empty table. ``csv`` has no room for notes: the CLI prints
    :attr:`~tracecheck.results.ResultTable.notes` to stderr. ``json`` carries them in ``notes``.
    """
    check_format(fmt, TABLE_FORMATS)
    if fmt == "json":
        import json

        return json.dumps(table_to_dict(table), indent=2, ensure_ascii=False) + "\n"
    rows = [_display(r, table.columns) for r in table.rows]
    if fmt == "csv":
        return render_csv(rows, table.columns)
    if fmt == "table":
        body = [render_rows(rows, width=width, columns=table.columns)] if rows else []
        return "\n".join([*body, *table.notes]) + "\n"
    parts = [render_markdown_rows(rows, table.columns)] if rows else []
    parts += [f"_{n}_" for n in table.notes]
    return "\n\n".join(parts) + "\n"


def _display(row: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in columns:
        v = row.get(c)
        if isinstance(v, float) and not math.isfinite(v):
            v = json_value(v)
        out[c] = v
    return out


# -- findings -------------------------------------------------------------------------------------


def findings_to_json(findings: Sequence[Finding]) -> list[dict[str, Any]]:
    """``{"level", "line", "field", "message"}`` per finding (``"object"`` too when set)."""
    out = []
    for f in findings:
        item: dict[str, Any] = {"level": f.level, "line": f.line, "field": f.field}
        if f.object:
            item["object"] = f.object
        item["message"] = f.message
        out.append(item)
    return out


def render_findings(
    findings: Sequence[Finding], fmt: str = "table", source: str = "", *, what: str = "file"
) -> str:
    """Findings of one source (a file, a render target) as ``table`` or ``json`` text.

    ``table``: one ``SOURCE:LINE: level: field: message`` line per finding (``  level: object
    field: message`` for findings without a line) and a summary line, ``SOURCE: OK`` when there
    is nothing to say (``what`` names what was checked in it).
    """
    check_format(fmt, FINDING_FORMATS)
    if fmt == "json":
        import json

        return json.dumps(findings_to_json(findings), indent=2)
    where = source or what
    lines = [
        f"{where}:{f.line}: {f.level}: {f.field}: {f.message}" if f.line is not None else f"  {f}"
        for f in findings
    ]
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    if not findings:
        lines.append(f"{where}: OK (a valid {what})")
    else:
        lines.append(f"{where}: {errors} error(s), {warnings} warning(s)")
    return "\n".join(lines)
