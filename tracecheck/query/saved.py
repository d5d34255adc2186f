"""The saved-query library: reviewed TraceQL/PromQL files in ``queries/``, run by name.

A file is one query, ``<name>.traceql`` or ``<name>.promql``, that starts with a header of
``# key: value`` comment lines (the format is documented in ``queries/README.md``)::

    # name: apiserver-latency-spanmetrics
    # description: p50/p90/p99 and request rate per span name, from span-metrics
    # kind: instant
    # naming: tempo
    # param: service=apiserver  service label of the span-metrics series
    # param: window:duration=1h  range of the rate() and histogram_quantile()
    # columns: span_name, rate_per_s, p50_s, p90_s, p99_s
    # pivot: measure

    label_replace(..., "measure", "p50_s", "", "") or ...

Parameters are written ``${name}`` in the body. Their value is checked against the
parameter's type before it is substituted: ``string`` values are escaped for a double-quoted
literal (the same escaping in TraceQL and PromQL), ``duration``, ``number``, ``int`` and
``identifier`` values must match their syntax, so a parameter can never change the query's
structure.

The files ship inside the wheel as ``tracecheck/queries/`` (pyproject force-include); from a
source checkout (editable install) they are read from the repository's ``queries/``.

Example::

    table = run_saved(settings, "apiserver-error-spans", {"service": "apiserver"}, since="1h")
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracecheck.errors import ConfigError, QueryError
from tracecheck.query.adhoc import (
    DEFAULT_MAX_ROWS,
    PromQuerier,
    TempoQuerier,
    run_promql,
    run_traceql,
)
from tracecheck.results import ResultTable, limit_rows

if TYPE_CHECKING:  # pragma: no cover
    from importlib.resources.abc import Traversable

    from tracecheck.config import Settings
    from tracecheck.polling import Clock

__all__ = [
    "KINDS",
    "PARAM_TYPES",
    "Param",
    "SavedQuery",
    "get_query",
    "lint_queries",
    "list_queries",
    "load_queries",
    "parse_query_file",
    "queries_dir",
    "run_saved",
]

#: How a query runs, per language. The first is the default.
KINDS = {
    "traceql": ("search", "metrics", "metrics-instant"),
    "promql": ("instant", "range"),
}
#: Parameter types and what their values look like.
PARAM_TYPES = {
    "string": "any text; escaped for a double-quoted literal",
    "duration": "a duration such as 30s, 5m, 1h30m",
    "number": "a number such as 0.99 or 100",
    "int": "a whole number",
    "identifier": "a name such as span_name or span.http.method",
}
_SUFFIXES = {".traceql": "traceql", ".promql": "promql"}
_HEADER = re.compile(r"^#\s*([a-z_]+)\s*:\s?(.*)$")
_PARAM = re.compile(
    r"^(?P<name>[a-z_][a-z0-9_]*)(?::(?P<type>[a-z]+))?(?:=(?P<default>\S*))?(?:\s+(?P<desc>.*))?$"
)
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_DURATION = re.compile(r"^(?:\d+(?:ns|us|ms|s|m|h|d|w|y))+$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:]*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True, slots=True)
class Param:
    """A declared parameter; ``default`` None means the parameter is required."""

    name: str
    type: str = "string"
    default: str | None = None
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is None

    def render(self, value: str, query: str) -> str:
        """``value`` as it goes into the query text, checked against :attr:`type`."""

        def bad(expected: str) -> QueryError:
            return QueryError("query", query, f"parameter {self.name}: {value!r} is not {expected}")

        if self.type == "string":
            if "\n" in value or "\r" in value:
                raise bad("a single line")
            return value.replace("\\", "\\\\").replace('"', '\\"')
        if self.type == "duration":
            if not _DURATION.match(value):
                raise bad("a duration (e.g. 30s, 5m, 1h30m)")
            return value
        if self.type == "number":
            try:
                number = float(value)
            except ValueError:
                raise bad("a number") from None
            if not math.isfinite(number) or not re.match(r"^[0-9.eE+-]+$", value):
                raise bad("a finite number")
            return value
        if self.type == "int":
            if not re.match(r"^-?\d+$", value):
                raise bad("a whole number")
            return value
        if self.type == "identifier":
            if not _IDENTIFIER.match(value):
                raise bad("an identifier (letters, digits, _ . :)")
            return value
        raise QueryError("query", query, f"parameter {self.name}: unknown type {self.type!r}")


@dataclass(frozen=True, slots=True)
class SavedQuery:
    """One file of the library.

    ``columns`` are the columns the query yields, in order. ``pivot`` names a label whose
    values become columns (one row per remaining label set). ``sort`` is a column to order rows
    by (``-`` prefix: descending). ``naming`` is the span-metric family a PromQL query is
    written for (``tempo`` or ``otel``; empty when it uses no span-metrics).
    """

    name: str
    language: str  # "traceql" | "promql"
    kind: str  # see KINDS
    description: str
    params: tuple[Param, ...]
    columns: tuple[str, ...]
    body: str  # the query text with ${param} placeholders
    path: str
    naming: str = ""
    pivot: str = ""
    pivot_names: tuple[tuple[str, str], ...] = ()  # label value -> column name
    sort: str = ""
    limit: int | None = None  # TraceQL search: traces asked for (default 20)
    spss: int | None = None  # TraceQL search: spans per span set (default 3)
    since: str = ""  # default look-back, e.g. "1h"

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def render(self, values: Mapping[str, str] | None = None) -> str:
        """The query text with parameters substituted (defaults for those not given).

        An unknown parameter or a missing required one is a :class:`QueryError` that lists the
        query's parameters.
        """
        values = dict(values or {})
        known = {p.name for p in self.params}
        unknown = sorted(set(values) - known)
        if unknown:
            raise QueryError(
                "query", self.name,
                f"unknown parameter {', '.join(unknown)}; {self.name} takes {self._signature()}",
            )  # fmt: skip
        rendered: dict[str, str] = {}
        for p in self.params:
            value = values.get(p.name, p.default)
            if value is None:
                raise QueryError(
                    "query", self.name,
                    f"missing parameter {p.name} ({p.description or p.type}); give --param "
                    f"{p.name}=VALUE; {self.name} takes {self._signature()}",
                )  # fmt: skip
            rendered[p.name] = p.render(value, self.name)
        return _PLACEHOLDER.sub(lambda m: rendered[m.group(1)], self.body)

    def _signature(self) -> str:
        if not self.params:
            return "no parameters"
        return ", ".join(
            p.name if p.required else f"{p.name} (default {p.default!r})" for p in self.params
        )


# -- loading -------------------------------------------------------------------------------------


def queries_dir() -> Traversable:
    """Where the query files are: ``tracecheck/queries`` inside an installed wheel, else the
    source checkout's ``queries/`` (an editable install has no copy in the package)."""
    from importlib.resources import files

    # ``tracecheck/queries`` in the wheel is a plain directory next to this module (no
    # __init__.py), so it is reached as a resource of the package, not imported.
    packaged = files("tracecheck").joinpath("queries")
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parents[2] / "queries"
    if source.is_dir():
        return source
    raise ConfigError(
        "query", str(source), "no saved queries: neither tracecheck/queries nor queries/ exists"
    )


def parse_query_file(text: str, filename: str) -> SavedQuery:
    """Parse one query file; a malformed header is a :class:`ConfigError` naming the file."""
    stem, dot, suffix = filename.rpartition(".")
    language = _SUFFIXES.get(f".{suffix}") if dot else None
    if language is None:
        raise ConfigError("query", filename, "not a .traceql or .promql file")

    def bad(cause: str) -> ConfigError:
        return ConfigError("query", filename, cause)

    lines = text.splitlines()
    header: dict[str, list[str]] = {}
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        m = _HEADER.match(lines[i])
        if m is None:
            raise bad(f"line {i + 1}: header lines are '# key: value'")
        header.setdefault(m.group(1), []).append(m.group(2).strip())
        i += 1
    body = "\n".join(lines[i:]).strip()
    if not body:
        raise bad("no query after the header")

    allowed = {"name", "description", "kind", "naming", "param", "columns", "pivot", "sort",
               "limit", "spss", "since"}  # fmt: skip
    for key, values in header.items():
        if key not in allowed:
            raise bad(f"unknown header key {key!r}; one of {', '.join(sorted(allowed))}")
        if key != "param" and len(values) > 1:
            raise bad(f"header key {key!r} given twice")

    def one(key: str, default: str = "") -> str:
        return header.get(key, [default])[0]

    name = one("name")
    if name != stem:
        raise bad(f"name {name!r} must equal the file name {stem!r}")
    if not _NAME.match(name):
        raise bad(f"name {name!r}: use lower-case letters, digits and '-'")
    description = one("description")
    if not description:
        raise bad("missing '# description:'")
    kind = one("kind", KINDS[language][0])
    if kind not in KINDS[language]:
        raise bad(f"kind {kind!r}: a {language} query is one of {', '.join(KINDS[language])}")
    naming = one("naming")
    if naming not in ("", "tempo", "otel"):
        raise bad(f"naming {naming!r}: tempo or otel")
    params = []
    for spec in header.get("param", []):
        m = _PARAM.match(spec)
        if m is None:
            raise bad(f"param {spec!r}: write NAME[:TYPE][=DEFAULT]  DESCRIPTION")
        ptype = m.group("type") or "string"
        if ptype not in PARAM_TYPES:
            raise bad(f"param {m.group('name')}: type {ptype!r}; one of {', '.join(PARAM_TYPES)}")
        params.append(Param(m.group("name"), ptype, m.group("default"), m.group("desc") or ""))
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise bad("a parameter is declared twice")
    used = set(_PLACEHOLDER.findall(body))
    if used - set(names):
        raise bad(f"undeclared parameter(s) in the query: {', '.join(sorted(used - set(names)))}")
    if set(names) - used:
        raise bad(f"declared but unused parameter(s): {', '.join(sorted(set(names) - used))}")
    columns = tuple(c.strip() for c in one("columns").split(",") if c.strip())
    if not columns:
        raise bad("missing '# columns:'")
    pivot_spec = one("pivot").split()
    pivot, renames = (pivot_spec[0], pivot_spec[1:]) if pivot_spec else ("", [])
    pivot_names = []
    for item in renames:
        value, eq, column = item.partition("=")
        if not eq or not value or not column:
            raise bad(f"pivot {item!r}: write LABEL [VALUE=COLUMN ...]")
        pivot_names.append((_label_text(value), column))
    sort = one("sort")
    if sort and sort.lstrip("-") not in columns:
        raise bad(f"sort column {sort.lstrip('-')!r} is not among the columns")
    query = SavedQuery(
        name=name,
        language=language,
        kind=kind,
        description=description,
        params=tuple(params),
        columns=columns,
        body=body,
        path=filename,
        naming=naming,
        pivot=pivot,
        pivot_names=tuple(pivot_names),
        sort=sort,
        limit=_int_header(one("limit"), "limit", bad),
        spss=_int_header(one("spss"), "spss", bad),
        since=one("since"),
    )
    for p in query.params:  # defaults must pass their own validation
        if p.default is not None:
            try:
                p.render(p.default, name)
            except QueryError as exc:
                raise bad(f"default of {exc.cause}") from None
    return query


def _int_header(value: str, key: str, bad: Any) -> int | None:
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise bad(f"{key} must be a positive integer, not {value!r}")
    return int(value)


def load_queries(directory: Traversable | Path | None = None) -> tuple[SavedQuery, ...]:
    """Every query file in ``directory`` (default :func:`queries_dir`), sorted by name."""
    root = directory if directory is not None else queries_dir()
    out = []
    for entry in root.iterdir():
        if entry.is_file() and any(entry.name.endswith(s) for s in _SUFFIXES):
            out.append(parse_query_file(entry.read_text(encoding="utf-8"), entry.name))
    return tuple(sorted(out, key=lambda q: q.name))


def get_query(name: str, queries: Sequence[SavedQuery] | None = None) -> SavedQuery:
    """The saved query called ``name``; an unknown name is a :class:`QueryError` listing all."""
    import difflib

    pool = load_queries() if queries is None else queries
    for q in pool:
        if q.name == name:
            return q
    names = [q.name for q in pool]
    close = [n for n in names if name and name in n][:2]
    close += [n for n in difflib.get_close_matches(name, names, n=2, cutoff=0.75) if n not in close]
    close = close[:2]
    cause = f"no saved query {name!r}"
    if close:
        cause += f" (did you mean {' or '.join(close)}?)"
    # Messages are capped at 300 characters (errors.one_line): name as many as fit, and say
    # how many more there are rather than letting the cap cut the list silently.
    listed: list[str] = []
    budget = 300 - len(cause) - len("; choose from ") - len(" and 999 more (tracecheck query list)")
    for n in names:
        if len(", ".join([*listed, n])) > budget:
            break
        listed.append(n)
    more = len(names) - len(listed)
    tail = f" and {more} more (tracecheck query list)" if more else ""
    raise QueryError("query", name, f"{cause}; choose from {', '.join(listed)}{tail}")


def list_queries(queries: Sequence[SavedQuery] | None = None) -> ResultTable:
    """``tracecheck query list``: name, language, kind, naming, parameters, columns,
    description of every saved query."""
    pool = load_queries() if queries is None else queries
    columns = ("name", "language", "kind", "naming", "params", "columns", "description")
    rows = [
        {
            "name": q.name,
            "language": q.language,
            "kind": q.kind,
            "naming": q.naming or "-",
            "params": " ".join(p.name if p.required else f"{p.name}={p.default}" for p in q.params)
            or "-",
            "columns": ", ".join(q.columns),
            "description": q.description,
        }
        for q in pool
    ]
    notes = [f"warning: {w}" for w in lint_queries(pool)]
    if not rows:
        notes.append("no data: no saved queries found")
    return ResultTable(columns, tuple(rows), tuple(notes), "saved-queries")


#: A value of each parameter type for rendering a query that is only linted, never run.
_SAMPLE_VALUES = {"string": "x", "duration": "5m", "number": "1", "int": "1", "identifier": "x"}


def lint_queries(queries: Sequence[SavedQuery]) -> list[str]:
    """The offline lint of the saved PromQL queries: what the local parser (promql-parser)
    refuses, one line each. Warnings only: Prometheus decides when the query runs, and accepts
    some queries this parser refuses (:mod:`tracecheck.query.syntax`)."""
    from tracecheck.query.syntax import lint_promql

    out = []
    for q in queries:
        if q.language != "promql":
            continue
        values = {p.name: _SAMPLE_VALUES.get(p.type, "x") for p in q.params if p.required}
        problem = lint_promql(q.render(values))
        if problem is not None:
            out.append(
                f"{q.path}: the local parser (promql-parser) refuses it at {problem}; "
                "Prometheus decides when it runs"
            )
    return out


# -- running -------------------------------------------------------------------------------------


def run_saved(
    settings: Settings,
    name: str,
    params: Mapping[str, str] | None = None,
    *,
    since: str | float | None = None,
    start: str | None = None,
    end: str | None = None,
    at: str | None = None,
    range_: str | float | None = None,
    step: str | None = None,
    limit: int | None = None,
    spss: int | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    clock: Clock | None = None,
    tempo: TempoQuerier | None = None,
    prometheus: PromQuerier | None = None,
    queries: Sequence[SavedQuery] | None = None,
) -> ResultTable:
    """``tracecheck query run NAME --param k=v``: render the saved query and run it.

    TraceQL runs as its ``kind`` says (search, metrics range, metrics instant) over
    ``since``/``start``/``end`` (default: the file's ``since``, else 1 h); PromQL runs as an
    instant query at ``at`` or, for ``kind: range`` or when ``range_`` is given, as a range
    query. The rows are then pivoted/sorted as the header says and given exactly the declared
    columns (a declared column the backend did not return stays empty and a note says so).
    """
    q = get_query(name, queries)
    text = q.render(params)
    if q.language == "traceql":
        if at is not None or range_ is not None:
            raise QueryError("query", name, "--at/--range are for PromQL queries; use --since")
        raw = run_traceql(
            settings,
            text,
            since=since if since is not None or start is not None else (q.since or None),
            start=start,
            end=end,
            limit=limit or q.limit or 20,
            spss=spss or q.spss or 3,
            metrics=q.kind != "search",
            instant=q.kind == "metrics-instant",
            step=step,
            max_rows=None,
            clock=clock,
            tempo=tempo,
        )
    else:
        if since is not None or start is not None or end is not None:
            raise QueryError("query", name, "--since/--start/--end are for TraceQL; use --at")
        if q.kind == "range" and range_ is None:
            range_ = q.since or "1h"
        raw = run_promql(
            settings, text, at=at, range_=range_, step=step, max_rows=None, clock=clock,
            prometheus=prometheus, address=q.path,
        )  # fmt: skip
    return shape(q, raw, max_rows=max_rows)


def shape(
    q: SavedQuery, raw: ResultTable, *, max_rows: int | None = DEFAULT_MAX_ROWS
) -> ResultTable:
    """Pivot, sort and project ``raw`` to the query's declared columns."""
    rows: list[dict[str, Any]] = [dict(r) for r in raw.rows]
    columns = list(raw.columns)
    notes = list(raw.notes)
    if q.pivot and rows:
        rows, columns = _pivot(rows, columns, q.pivot, dict(q.pivot_names))
    if rows:
        missing = [c for c in q.columns if c not in columns]
        if missing:
            notes.append(f"column(s) not in the result: {', '.join(missing)}")
    if q.sort:
        key = q.sort.lstrip("-")
        present = [r for r in rows if _sortable(r.get(key))]
        absent = [r for r in rows if not _sortable(r.get(key))]
        present.sort(key=lambda r: r[key], reverse=q.sort.startswith("-"))
        rows = present + absent
    out_rows = [{c: r.get(c) for c in q.columns} for r in rows]
    return ResultTable(
        q.columns,
        limit_rows(out_rows, max_rows, notes),
        tuple(notes),
        raw.kind,
        raw.query,
        raw.start,
        raw.end,
    )


def _sortable(value: Any) -> bool:
    if value is None:
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _pivot(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    label: str,
    names: Mapping[str, str],
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per label set without ``label`` (and ``time``); ``value`` goes to the column
    named by the row's ``label`` value, renamed through ``names``. Numeric label values such
    as Tempo's quantile label ``p`` (0.5, docs/reference/tempo.md §7.2) are compared as numbers."""
    keys = [c for c in columns if c not in (label, "value")]
    # An instant vector's rows all carry the one evaluation time: it must not split rows.
    group_keys = [k for k in keys if k != "time"] if _same_time(rows) else keys
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    new_cols: dict[str, None] = {}
    for r in rows:
        k = tuple(r.get(c) for c in group_keys)
        target = merged.setdefault(k, {c: r.get(c) for c in keys})
        text = _label_text(r.get(label))
        column = names.get(text, text)
        new_cols.setdefault(column, None)
        target[column] = r.get("value")
    return list(merged.values()), [*keys, *new_cols]


def _same_time(rows: Sequence[Mapping[str, Any]]) -> bool:
    return len({r.get("time") for r in rows}) <= 1


def _label_text(value: Any) -> str:
    """A label value as text; numbers in one canonical spelling (``.5`` and 0.5 -> ``0.5``)."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{float(value):g}"
    text = str(value)
    try:
        return f"{float(text):g}" if re.match(r"^[0-9.eE+-]+$", text) else text
    except ValueError:
        return text
