"""Ad-hoc TraceQL and PromQL: run a query, get a table (columns, rows, notes).

``tracecheck query traceql`` and ``tracecheck query promql`` are thin over this module:

* :func:`run_traceql` -- a TraceQL search (one row per matched span, with its trace) or, with
  ``metrics=True``, a TraceQL metrics query (one row per series sample);
* :func:`run_promql` -- a PromQL instant query (vector / scalar / string) or a range query
  (matrix, one row per point), checked locally first with promql-parser (:func:`check_promql`);
* :func:`parse_time` / :func:`parse_duration` / :func:`resolve_window` read ``--since``,
  ``--start``, ``--end`` and ``--at`` (RFC 3339, unix seconds, or relative like ``15m``);
* :func:`choose_step` picks or checks a range step against Prometheus's 11,000-point limit.

Every result is a :class:`ResultTable`. An empty result is not an error: the table has no rows
and a ``no data: ...`` note (exit 0). A backend's rejection of a query is a
:class:`~tracecheck.errors.QueryError` (exit 4) whose message is one line. Large results are
limited and say so in a note, never silently cut.

Example::

    table = run_promql(settings, 'sum by (job) (up)')
    print(table.render("table"))
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from tracecheck.errors import QueryError, UsageError
from tracecheck.output import iso
from tracecheck.polling import Clock, SystemClock

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.backends.prometheus import QueryResult
    from tracecheck.backends.tempo import MetricsResult, MetricsSeries, SearchResult
    from tracecheck.config import Settings

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_SINCE",
    "OUTPUT_FORMATS",
    "PromQLSyntaxError",
    "PromQuerier",
    "ResultTable",
    "TempoQuerier",
    "check_promql",
    "choose_step",
    "format_duration",
    "iso",
    "parse_duration",
    "parse_time",
    "resolve_window",
    "run_promql",
    "run_traceql",
]

#: Output formats of ``tracecheck query ... --output``.
OUTPUT_FORMATS = ("table", "json", "csv", "markdown")
#: Default look-back of ``--since`` (seconds).
DEFAULT_SINCE = 3600.0
#: Rows shown before a result is cut with a note (``max_rows=None`` shows all).
DEFAULT_MAX_ROWS = 10_000
#: Prometheus refuses range queries over 11,000 points per series (prometheus-api.md §2).
MAX_POINTS = 11_000
#: Points a range query aims at when no step is given (like Prometheus's UI, ~range/250).
TARGET_POINTS = 250


# -- seams ---------------------------------------------------------------------------------------


class TempoQuerier(Protocol):
    """What this module needs of :class:`tracecheck.backends.tempo.TempoClient`."""

    def search(
        self, query: str, *, start: float, end: float, limit: int = ..., spss: int = ...
    ) -> SearchResult: ...

    def metrics_query_range_result(
        self, query: str, *, start: float, end: float, step: str | None = ...
    ) -> MetricsResult: ...

    def metrics_query_instant(
        self, query: str, *, start: float, end: float
    ) -> tuple[MetricsSeries, ...]: ...


class PromQuerier(Protocol):
    """What this module needs of :class:`tracecheck.backends.prometheus.PrometheusClient`."""

    def query(self, query: str, *, at: float | None = ...) -> QueryResult: ...

    def query_range(self, query: str, *, start: float, end: float, step: float) -> QueryResult: ...


# -- the result table ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResultTable:
    """A query's answer as a table.

    ``kind`` says what produced it: ``traceql-search``, ``traceql-metrics``,
    ``traceql-metrics-instant``, ``promql-vector``, ``promql-matrix``, ``promql-scalar``,
    ``promql-string`` (or ``saved-queries`` for the list). ``notes`` are one-line remarks the
    renderers print after the table: ``no data: ...`` for an empty result, ``limited to ...``
    when rows were cut, backend warnings. Times in rows are RFC 3339 strings (UTC).
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: ``query``, ``kind``, ``start``, ``end``, ``columns``, ``rows``,
        ``notes`` (NaN and infinities as strings, like Prometheus writes them)."""
        return {
            "query": self.query,
            "kind": self.kind,
            "start": iso(self.start) if self.start is not None else None,
            "end": iso(self.end) if self.end is not None else None,
            "columns": list(self.columns),
            "rows": [{c: _json_value(r.get(c)) for c in self.columns} for r in self.rows],
            "notes": list(self.notes),
        }

    def render(self, fmt: str = "table", *, width: int = 120) -> str:
        """The table as ``table``, ``json``, ``csv`` or ``markdown`` text.

        ``table`` and ``markdown`` end with the notes; an empty result renders as its
        ``no data`` note instead of an empty table. ``csv`` has no room for notes: print
        :attr:`notes` to stderr. ``json`` carries them in ``notes``.
        """
        from tracecheck.output import render_csv, render_markdown_rows, render_rows

        if fmt == "json":
            return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        if fmt == "csv":
            return render_csv([_display(r, self.columns) for r in self.rows], self.columns)
        if fmt == "table":
            body = (
                [render_rows([_display(r, self.columns) for r in self.rows], width=width,
                             columns=self.columns)]
                if self.rows
                else []
            )  # fmt: skip
            return "\n".join([*body, *self.notes]) + "\n"
        if fmt == "markdown":
            parts = [
                render_markdown_rows([_display(r, self.columns) for r in self.rows], self.columns)
            ]
            if not self.rows:
                parts = []
            parts += [f"_{n}_" for n in self.notes]
            return "\n\n".join(parts) + "\n"
        raise UsageError(
            "output", fmt, f"unknown format {fmt!r}; choose from {', '.join(OUTPUT_FORMATS)}"
        )


def _display(row: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in columns:
        v = row.get(c)
        if isinstance(v, float) and not math.isfinite(v):
            v = _json_value(v)
        out[c] = v
    return out


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if isinstance(value, bytes):
        return value.hex()
    return value


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


# -- time ----------------------------------------------------------------------------------------

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,  # Prometheus: a year is always 365 days
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w|y)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w|y))+$")
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds in ``15m``, ``1h30m``, ``90s``, ``500ms``, ``2d``, or a plain number of seconds.

    >>> parse_duration("1h30m")
    5400.0
    """
    raw = text.strip()
    if _NUMBER.match(raw):
        value = float(raw)
    elif _DURATION.match(raw):
        value = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(raw))
    else:
        raise UsageError(
            "query", what, f"{text!r} is not a duration (e.g. 90s, 15m, 1h30m, 2d, or seconds)"
        )
    if not math.isfinite(value) or value < 0:
        raise UsageError("query", what, f"{text!r} is not a non-negative duration")
    return value


def parse_time(text: str, *, now: float, what: str = "time") -> float:
    """Unix seconds from RFC 3339 (``2025-01-31T12:00:00Z``), unix seconds (``1700000000``,
    ``1700000000.5``), ``now``, or a time relative to ``now``: ``15m`` / ``now-15m`` mean
    15 minutes ago. A naive RFC 3339 time (no offset) is taken as UTC.

    Values that look like milliseconds or nanoseconds are refused rather than guessed.
    """
    raw = text.strip()
    if not raw:
        raise UsageError("query", what, "empty time")
    if raw == "now":
        return now
    if raw.startswith("now-"):
        return now - parse_duration(raw[4:], what=what)
    if _NUMBER.match(raw):
        value = float(raw)
        if value > 1e11:
            raise UsageError(
                "query", what, f"{text!r} looks like milliseconds or nanoseconds; give seconds"
            )
        return value
    if _DURATION.match(raw):
        return now - parse_duration(raw, what=what)
    try:
        stamp = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise UsageError(
            "query",
            what,
            f"{text!r} is not a time: use RFC 3339 (2025-01-31T12:00:00Z), unix seconds, "
            "or a relative time like 15m",
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def resolve_window(
    *,
    since: str | float | None = None,
    start: str | None = None,
    end: str | None = None,
    now: float,
    default_since: float = DEFAULT_SINCE,
) -> tuple[float, float]:
    """``(start, end)`` in unix seconds from ``--since`` / ``--start`` / ``--end``.

    ``end`` defaults to now; ``start`` to ``end - since`` (``since`` defaults to 1 h).
    ``--since`` together with ``--start`` is a usage error.
    """
    if since is not None and start is not None:
        raise UsageError("query", "--since/--start", "give --since or --start, not both")
    end_s = parse_time(end, now=now, what="--end") if end is not None else now
    if start is not None:
        start_s = parse_time(start, now=now, what="--start")
    else:
        span = (
            default_since
            if since is None
            else (float(since) if isinstance(since, (int, float)) else parse_duration(since))
        )
        if span <= 0:
            raise UsageError("query", "--since", "must be a positive duration")
        start_s = end_s - span
    if not end_s > start_s:
        raise UsageError(
            "query", "--start/--end", f"start ({iso(start_s)}) must be before end ({iso(end_s)})"
        )
    return start_s, end_s


def format_duration(seconds: float) -> str:
    """A PromQL duration for a range selector: ``3600`` -> ``1h``, ``90`` -> ``90s``."""
    s = max(1, round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


_NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400)  # fmt: skip


def choose_step(
    start: float,
    end: float,
    step: str | float | None = None,
    *,
    max_points: int = MAX_POINTS,
    target_points: int = TARGET_POINTS,
) -> float:
    """The step (seconds) of a range query over ``[start, end]``.

    With ``step`` given, it is checked: more than ``max_points`` points per series (Prometheus
    refuses ``(end-start)/step > 11000`` with ``bad_data``, prometheus-api.md §2) is a
    :class:`QueryError` naming the smallest step that fits. Without, a round step giving about
    ``target_points`` points is chosen (never more than ``max_points``).
    """
    span = end - start
    if span <= 0:
        raise UsageError("query", "--range", "the range must be positive")
    if step is not None:
        value = (
            float(step) if isinstance(step, (int, float)) else parse_duration(step, what="--step")
        )
        if value <= 0:
            raise UsageError("query", "--step", "must be a positive duration")
        points = math.floor(span / value)
        if points > max_points:
            smallest = math.ceil(span / max_points)
            raise QueryError(
                "prometheus",
                "",
                f"a range of {format_duration(span)} at step {value:g}s is {points:,} points per "
                f"series, over Prometheus's limit of {max_points:,}; use --step "
                f"{format_duration(smallest)} or more",
            )
        return value
    wanted = span / target_points
    for nice in _NICE_STEPS:
        if nice >= wanted:
            return float(nice)
    return float(math.ceil(wanted / 86400) * 86400)


# -- PromQL: local check with the error's position -----------------------------------------------


class PromQLSyntaxError(QueryError):
    """PromQL refused by the local parser (promql-parser); ``line``/``col`` are 1-based and
    ``offset`` is 0-based into ``query`` (``len(query)`` means "at the end of the input")."""

    def __init__(self, address: str, query: str, offset: int, message: str) -> None:
        self.query = query
        self.offset = offset
        self.line = query.count("\n", 0, offset) + 1
        self.col = offset - (query.rfind("\n", 0, offset) + 1) + 1
        self.message = message
        near = _near(query, offset)
        super().__init__(
            "promql",
            address,
            f"parse error at line {self.line}, col {self.col}, near {near}: {message}",
        )

    def pointer(self) -> str:
        """Two lines: the query line holding the error and a caret under its position."""
        line = self.query.split("\n")[self.line - 1]
        return f"{line}\n{' ' * (self.col - 1)}^"


def _near(text: str, offset: int) -> str:
    if offset >= len(text.rstrip()):
        tail = " ".join(text.split())[-24:]
        return f"the end of input (after {tail!r})"
    snippet = " ".join(text[offset : offset + 24].split())
    return repr(snippet)


def check_promql(query: str, *, address: str = "") -> None:
    """Parse ``query`` with promql-parser (Prometheus 3.8 grammar); raise
    :class:`PromQLSyntaxError` pointing at the error's position if it is refused.

    promql-parser's messages carry no position, so the position is located here: lexical and
    bracket errors exactly, syntax errors with a small recognizer of the PromQL grammar, and
    semantic errors (wrong argument type, unknown function) at the token the message names.
    """
    import promql_parser

    if not query.strip():
        raise PromQLSyntaxError(address, query, 0, "empty query")
    try:
        promql_parser.parse(query)
    except (ValueError, RuntimeError) as exc:
        message = str(exc).strip() or "invalid promql query"
        raise PromQLSyntaxError(
            address, query, locate_promql_error(query, message), message
        ) from None


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # IDENT, NUM, STR, OP (punctuation and operators)
    text: str
    pos: int


class _LexError(Exception):
    def __init__(self, pos: int) -> None:
        self.pos = pos


_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUM = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z0-9_]*")
_OPS = ("==", "!=", ">=", "<=", "=~", "!~", "+", "-", "*", "/", "%", "^", "=", "<", ">", ",",
        "(", ")", "{", "}", "[", "]", ":", "@")  # fmt: skip


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":  # comment to the end of the line
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'`":
            j = i + 1
            while j < n and text[j] != c:
                if text[j] == "\\" and c != "`":
                    j += 1
                if c != "`" and j < n and text[j] == "\n":
                    raise _LexError(i)
                j += 1
            if j >= n:
                raise _LexError(i)
            toks.append(_Tok("STR", text[i : j + 1], i))
            i = j + 1
        elif (
            m := _NUM.match(text, i)
            if (c.isdigit() or (c == "." and text[i + 1 : i + 2].isdigit()))
            else None
        ):
            toks.append(_Tok("NUM", m.group(), i))
            i = m.end()
        elif m := _IDENT.match(text, i):
            toks.append(_Tok("IDENT", m.group(), i))
            i = m.end()
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                raise _LexError(i)
            toks.append(_Tok("OP", op, i))
            i += len(op)
    return toks


def _bracket_error(toks: Sequence[_Tok]) -> int | None:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[_Tok] = []
    for t in toks:
        if t.kind != "OP":
            continue
        if t.text in "([{":
            stack.append(t)
        elif t.text in pairs:
            if not stack or stack[-1].text != pairs[t.text]:
                return t.pos
            stack.pop()
    return stack[-1].pos if stack else None


_AGGREGATIONS = frozenset(
    [
        "sum",
        "avg",
        "count",
        "min",
        "max",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "count_values",
        "quantile",
        "limitk",
        "limit_ratio",
    ]
)
_BINARY_WORDS = frozenset({"and", "or", "unless", "atan2"})
_BINARY_OPS = frozenset({"+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<="})
_COMPARISONS = frozenset({"==", "!=", ">", "<", ">=", "<="})
_NOT_AN_EXPR = frozenset({"bool", "offset", "on", "ignoring", "group_left", "group_right"})


class _Fail(Exception):
    def __init__(self, pos: int) -> None:
        self.pos = pos


class _Recognizer:
    """Recognises the PromQL grammar just enough to find the first token that cannot belong.

    It accepts a superset of PromQL in places (types, argument counts are not checked); the
    real parser decides validity, this only says *where*.
    """

    def __init__(self, toks: Sequence[_Tok], end: int) -> None:
        self.toks = toks
        self.i = 0
        self.end = end

    def peek(self, k: int = 0) -> _Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def at(self, text: str, k: int = 0) -> bool:
        t = self.peek(k)
        return t is not None and t.kind in ("OP", "IDENT") and t.text == text

    def word(self, k: int = 0) -> str:
        t = self.peek(k)
        return t.text.lower() if t is not None and t.kind == "IDENT" else ""

    def fail(self) -> NoReturn:
        t = self.peek()
        raise _Fail(self.end if t is None else t.pos)

    def take(self, text: str | None = None, kind: str | None = None) -> _Tok:
        t = self.peek()
        if t is None or (text is not None and t.text != text) or (kind and t.kind != kind):
            self.fail()
        self.i += 1
        return t

    def run(self) -> None:
        self.expr()
        if self.peek() is not None:
            self.fail()

    def expr(self) -> None:
        self.unary()
        while True:
            t = self.peek()
            if t is None:
                return
            if t.kind == "OP" and t.text in _BINARY_OPS:
                self.i += 1
                if t.text in _COMPARISONS and self.word() == "bool":
                    self.i += 1
            elif t.kind == "IDENT" and t.text.lower() in _BINARY_WORDS:
                self.i += 1
            else:
                return
            if self.word() in ("on", "ignoring"):
                self.i += 1
                self.labels()
                if self.word() in ("group_left", "group_right"):
                    self.i += 1
                    if self.at("("):
                        self.labels()
            self.unary()

    def unary(self) -> None:
        while self.at("+") or self.at("-"):
            self.i += 1
        self.postfix()

    def postfix(self) -> None:
        self.primary()
        while True:
            if self.at("["):
                self.i += 1
                self.take(kind="NUM")
                if self.at(":"):
                    self.i += 1
                    if (t := self.peek()) is not None and t.kind == "NUM":
                        self.i += 1
                self.take("]")
            elif self.word() == "offset":
                self.i += 1
                if self.at("-") or self.at("+"):
                    self.i += 1
                self.take(kind="NUM")
            elif self.at("@"):
                self.i += 1
                if self.at("-") or self.at("+"):
                    self.i += 1
                if self.word() in ("start", "end"):
                    self.i += 1
                    self.take("(")
                    self.take(")")
                else:
                    self.take(kind="NUM")
            else:
                return

    def primary(self) -> None:
        t = self.peek()
        if t is None:
            self.fail()
        if t.kind in ("NUM", "STR"):
            self.i += 1
        elif t.kind == "OP" and t.text == "(":
            self.i += 1
            self.expr()
            self.take(")")
        elif t.kind == "OP" and t.text == "{":
            self.matchers()
        elif t.kind == "IDENT":
            name = t.text.lower()
            if name in _BINARY_WORDS or name in _NOT_AN_EXPR:
                self.fail()
            if name in _AGGREGATIONS and (self.at("(", 1) or self.word(1) in ("by", "without")):
                self.aggregation()
            elif self.at("(", 1):
                self.i += 1
                self.args()
            else:
                self.i += 1
                if self.at("{"):
                    self.matchers()
        else:
            self.fail()

    def aggregation(self) -> None:
        self.i += 1
        grouped = False
        if self.word() in ("by", "without"):
            self.i += 1
            self.labels()
            grouped = True
        self.args()
        if not grouped and self.word() in ("by", "without"):
            self.i += 1
            self.labels()

    def args(self) -> None:
        self.take("(")
        if self.at(")"):
            self.i += 1
            return
        self.expr()
        while self.at(","):
            self.i += 1
            self.expr()
        self.take(")")

    def matchers(self) -> None:
        self.take("{")
        while not self.at("}"):
            name = self.peek()
            if name is None or name.kind not in ("IDENT", "STR"):
                self.fail()
            self.i += 1
            if (op := self.peek()) is not None and op.kind == "OP" and op.text in (
                "=", "!=", "=~", "!~"
            ):  # fmt: skip
                self.i += 1
                self.take(kind="STR")
            elif name.kind != "STR":  # only a quoted metric name stands alone (3.x UTF-8)
                self.fail()
            if not self.at(","):
                break
            self.i += 1
        self.take("}")

    def labels(self) -> None:
        self.take("(")
        while not self.at(")"):
            t = self.peek()
            if t is None or t.kind not in ("IDENT", "STR"):
                self.fail()
            self.i += 1
            if not self.at(","):
                break
            self.i += 1
        self.take(")")


_QUOTED = re.compile(r"'([^']+)'")


def locate_promql_error(query: str, message: str) -> int:
    """The 0-based offset in ``query`` of the error promql-parser reported as ``message``."""
    try:
        toks = _lex(query)
    except _LexError as exc:
        return exc.pos
    end = len(query.rstrip())
    pos = _bracket_error(toks)
    if pos is not None:
        return pos
    try:
        _Recognizer(toks, end).run()
    except _Fail as exc:
        return exc.pos
    # Syntactically fine: a semantic error ("expected type matrix in call to function 'rate'",
    # "unknown function with name 'x'", "bad number or duration syntax: 5x") names its token.
    names = _QUOTED.findall(message)
    if ": " in message:
        names.append(message.rsplit(": ", 1)[1].strip())
    for name in names:
        hits = [
            i
            for i, t in enumerate(toks)
            if t.text == name or (t.kind == "STR" and t.text[1:-1] == name)
        ]
        if not hits:
            continue
        # A function named more than once: the culprit is the call that fails on its own.
        for i in hits:
            call = _call_text(query, toks, i)
            if call is not None and _parse_error(call) is not None:
                return toks[i].pos
        return toks[hits[0]].pos
    return len(query) - len(query.lstrip())


def _call_text(query: str, toks: Sequence[_Tok], i: int) -> str | None:
    """The text of the call ``name(...)`` starting at token ``i``, or None if it is no call."""
    if i + 1 >= len(toks) or toks[i + 1].text != "(":
        return None
    depth = 0
    for t in toks[i + 1 :]:
        if t.kind == "OP" and t.text in "([{":
            depth += 1
        elif t.kind == "OP" and t.text in ")]}":
            depth -= 1
            if depth == 0:
                return query[toks[i].pos : t.pos + 1]
    return None


def _parse_error(text: str) -> str | None:
    import promql_parser

    try:
        promql_parser.parse(text)
    except (ValueError, RuntimeError) as exc:
        return str(exc) or "error"
    return None


# -- TraceQL -------------------------------------------------------------------------------------

_TEMPO_POS = re.compile(r"line (\d+), col (\d+)")


def _with_traceql_position(exc: QueryError, query: str) -> QueryError:
    """Tempo's 400 says ``parse error at line L, col C`` (tempo-api.md §8.1): add what is there."""
    m = _TEMPO_POS.search(exc.cause)
    if not m:
        return exc
    line, col = int(m.group(1)), int(m.group(2))
    lines = query.split("\n")
    if not 1 <= line <= len(lines):
        return exc
    offset = sum(len(x) + 1 for x in lines[: line - 1]) + max(0, col - 1)
    return QueryError(exc.system, exc.address, f"{exc.cause} (near {_near(query, offset)})")


def open_tempo(settings: Settings, tempo: TempoQuerier | None) -> tuple[TempoQuerier, ExitStack]:
    """``tempo`` if given, else a new client from ``settings`` (closed with the stack)."""
    stack = ExitStack()
    if tempo is None:
        from tracecheck.backends.tempo import TempoClient

        tempo = stack.enter_context(TempoClient(settings.tempo))
    return tempo, stack


def open_prometheus(
    settings: Settings, prometheus: PromQuerier | None
) -> tuple[PromQuerier, ExitStack]:
    """``prometheus`` if given, else a new client from ``settings`` (closed with the stack)."""
    stack = ExitStack()
    if prometheus is None:
        from tracecheck.backends.prometheus import PrometheusClient

        prometheus = stack.enter_context(PrometheusClient(settings.prometheus))
    return prometheus, stack


def run_traceql(
    settings: Settings,
    query: str,
    *,
    since: str | float | None = None,
    start: str | None = None,
    end: str | None = None,
    limit: int = 20,
    spss: int = 3,
    metrics: bool = False,
    instant: bool = False,
    step: str | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    clock: Clock | None = None,
    tempo: TempoQuerier | None = None,
) -> ResultTable:
    """Run TraceQL against Tempo over ``--since`` (default 1 h) or ``--start``/``--end``.

    A search (default) yields one row per matched span: ``trace_id``, ``trace_start``,
    ``root_service``, ``root_name``, ``trace_duration_ms``, ``span_id``, ``span_name``,
    ``span_start``, ``span_duration_ms`` and one column per returned attribute. Search is
    first-N-found (tempo-api.md §5.3): when ``limit`` traces come back a note says more may
    exist; when a span set matched more spans than ``spss`` shows, a note says how many.

    With ``metrics=True`` the query is a TraceQL metrics query (``{...} | rate() by (...)``):
    one row per series and sample (label columns, ``time``, ``value``), or with
    ``instant=True`` one row per series (label columns, ``value``).

    Tempo's 400 (bad TraceQL, a search query sent as metrics...) is a :class:`QueryError`
    with Tempo's text and what is at the position it names.
    """
    if limit < 1 or spss < 1:
        raise UsageError("query", "--limit/--spss", "must be positive")
    now = (clock or SystemClock()).time()
    t0, t1 = resolve_window(since=since, start=start, end=end, now=now)
    client, stack = open_tempo(settings, tempo)
    with stack:
        try:
            if not metrics:
                result = client.search(query, start=t0, end=t1, limit=limit, spss=spss)
                return search_table(query, result, t0, t1, limit=limit, spss=spss,
                                    max_rows=max_rows)  # fmt: skip
            if instant:
                series = client.metrics_query_instant(query, start=t0, end=t1)
                return metrics_table(query, series, t0, t1, instant=True, max_rows=max_rows)
            mresult = client.metrics_query_range_result(query, start=t0, end=t1, step=step)
        except QueryError as exc:
            raise _with_traceql_position(exc, query) from None
    notes = [f"Tempo answered PARTIAL: {mresult.message}"] if mresult.partial else []
    return metrics_table(query, mresult.series, t0, t1, instant=False, max_rows=max_rows,
                         extra_notes=notes)  # fmt: skip


def search_table(
    query: str,
    result: SearchResult,
    start: float,
    end: float,
    *,
    limit: int,
    spss: int,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> ResultTable:
    """Rows of a TraceQL search: one per span shown in each trace's span sets."""
    from tracecheck.backends.tempo import AttrValue
    from tracecheck.ids import trace_id_hex

    base = ("trace_id", "trace_start", "root_service", "root_name", "trace_duration_ms",
            "span_id", "span_name", "span_start", "span_duration_ms")  # fmt: skip
    attr_cols: dict[str, None] = {}
    rows: list[dict[str, Any]] = []
    hidden = 0
    for t in result.traces:
        trace_row: dict[str, Any] = {
            "trace_id": trace_id_hex(t.trace_id),
            "trace_start": iso(t.start_ns / 1e9) if t.start_ns else None,
            "root_service": t.root_service,
            "root_name": t.root_name,
            "trace_duration_ms": t.duration_ms,
        }
        shown = False
        for ss in t.span_sets:
            hidden += max(0, ss.matched - len(ss.spans))
            set_attrs: Mapping[str, AttrValue] = ss.attributes
            for s in ss.spans:
                row = dict(trace_row)
                row.update(
                    span_id=s.span_id.hex(),
                    span_name=s.name,
                    span_start=iso(s.start_ns / 1e9) if s.start_ns else None,
                    span_duration_ms=s.duration_ns / 1e6,
                )
                for k, v in {**set_attrs, **s.attributes}.items():
                    attr_cols.setdefault(k, None)
                    row[k] = _scalar(v)
                rows.append(row)
                shown = True
        if not shown:
            rows.append(trace_row)
    columns = (*base, *attr_cols)
    notes: list[str] = []
    if not result.traces:
        notes.append(f"no data: no trace matched between {iso(start)} and {iso(end)}")
    if len(result.traces) >= limit:
        notes.append(
            f"limited to {limit} traces: Tempo returns the first {limit} it finds, not the "
            "newest or slowest; more may exist (raise --limit, or narrow the query)"
        )
    if hidden:
        notes.append(
            f"{hidden} matched spans not shown: at most {spss} spans per span set (raise --spss, "
            "max 100)"
        )
    return ResultTable(columns, limit_rows(rows, max_rows, notes), tuple(notes),
                       "traceql-search", query, start, end)  # fmt: skip


def _scalar(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str, sort_keys=True)
    if isinstance(value, bytes):
        return value.hex()
    return value


def metrics_table(
    query: str,
    series: Sequence[MetricsSeries],
    start: float,
    end: float,
    *,
    instant: bool,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    extra_notes: Sequence[str] = (),
) -> ResultTable:
    """Rows of a TraceQL metrics answer: label columns, then ``time`` (range) and ``value``."""
    label_cols: dict[str, None] = {}
    for s in series:
        for k in s.labels:
            label_cols.setdefault(k, None)
    rows: list[dict[str, Any]] = []
    for s in series:
        labels = {k: _scalar(v) for k, v in s.labels.items()}
        if instant:
            value = s.samples[-1][1] if s.samples else math.nan
            rows.append({**labels, "value": value})
        else:
            for ts_ms, value in s.samples:
                rows.append({**labels, "time": iso(ts_ms / 1000), "value": value})
    columns = (*label_cols, *(("value",) if instant else ("time", "value")))
    notes = list(extra_notes)
    if not rows:
        notes.append(f"no data: no series between {iso(start)} and {iso(end)}")
    kind = "traceql-metrics-instant" if instant else "traceql-metrics"
    return ResultTable(columns, limit_rows(rows, max_rows, notes), tuple(notes), kind,
                       query, start, end)  # fmt: skip


# -- PromQL --------------------------------------------------------------------------------------


def run_promql(
    settings: Settings,
    query: str,
    *,
    at: str | None = None,
    range_: str | float | None = None,
    step: str | float | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
    clock: Clock | None = None,
    prometheus: PromQuerier | None = None,
    address: str = "",
) -> ResultTable:
    """Run PromQL: an instant query at ``at`` (default now), or with ``range_`` a range query
    over ``[at - range_, at]`` with ``step`` (default: about 250 points; checked against the
    11,000-point limit before sending, see :func:`choose_step`).

    The query is parsed locally first; a syntax error is a :class:`PromQLSyntaxError` with its
    line and column, and nothing is sent. Prometheus's ``bad_data``/``execution`` answers are
    :class:`QueryError`. Rows: label columns, then ``time`` and ``value`` (a vector or matrix),
    or ``value`` and ``time`` for a scalar; warnings and infos become notes.
    """
    check_promql(query, address=address)
    now = (clock or SystemClock()).time()
    t_end = parse_time(at, now=now, what="--at") if at is not None else now
    client, stack = open_prometheus(settings, prometheus)
    with stack:
        if range_ is None:
            if step is not None:
                raise UsageError("query", "--step", "--step needs --range")
            result = client.query(query, at=t_end)
            return promql_table(query, result, None, t_end, max_rows=max_rows)
        span = float(range_) if isinstance(range_, (int, float)) else parse_duration(
            range_, what="--range"
        )  # fmt: skip
        t_start = t_end - span
        step_s = choose_step(t_start, t_end, step)
        result = client.query_range(query, start=t_start, end=t_end, step=step_s)
        table = promql_table(query, result, t_start, t_end, max_rows=max_rows)
        return replace(table, notes=(*table.notes, f"step {step_s:g}s"))


def _label_columns(label_sets: Sequence[Mapping[str, str]]) -> tuple[str, ...]:
    keys: set[str] = set()
    for labels in label_sets:
        keys.update(labels)
    # __name__ first, then the rest sorted: stable columns whatever the series order.
    return tuple(sorted(keys, key=lambda k: (k != "__name__", k)))


def promql_table(
    query: str,
    result: QueryResult,
    start: float | None,
    end: float,
    *,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> ResultTable:
    """Rows of a Prometheus answer (vector, matrix, scalar or string)."""
    notes = [f"warning: {w}" for w in result.warnings] + [f"info: {i}" for i in result.infos]
    rtype = result.result_type or "vector"
    rows: list[dict[str, Any]] = []
    if rtype == "matrix":
        cols = _label_columns([s.labels for s in result.series])
        for s in result.series:
            for ts, value in s.points:
                rows.append({**s.labels, "time": iso(ts), "value": value})
        columns = (*cols, "time", "value")
    elif rtype == "scalar":
        columns = ("value", "time")
        rows = [{"value": x.value, "time": iso(x.timestamp)} for x in result.samples]
    elif rtype == "string":
        columns = ("value",)
        rows = [] if result.string is None else [{"value": result.string}]
    else:
        cols = _label_columns([s.labels for s in result.samples])
        for sample in result.samples:
            rows.append({**sample.labels, "time": iso(sample.timestamp), "value": sample.value})
        columns = (*cols, "time", "value")
    if not rows:
        when = f"between {iso(start)} and {iso(end)}" if start is not None else f"at {iso(end)}"
        notes.append(f"no data: the query returned no series {when}")
    return ResultTable(columns, limit_rows(rows, max_rows, notes), tuple(notes),
                       f"promql-{rtype}", query, start, end)  # fmt: skip


def iter_pairs(items: Sequence[str], what: str = "--param") -> Iterator[tuple[str, str]]:
    """``["k=v", ...]`` as pairs; a malformed item is a :class:`UsageError`."""
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError("query", what, f"{item!r} is not key=value")
        yield key.strip(), value
