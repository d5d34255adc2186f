"""A TraceQL subset: lexer, parser and evaluator.

What is accepted (README "TraceQL subset" lists it with citations):

* spanset filters ``{ ... }``; ``{}`` matches every span;
* spanset-level ``&&`` / ``||`` between filters, with parentheses;
* inside a filter: ``&&``, ``||``, parentheses, and comparisons ``= != > >= < <= =~ !~`` between
  attributes (``span.x``, ``resource.x``, unscoped ``.x``, ``link.x``, quoted names
  ``span."audit-id"``), intrinsics (``name status kind duration statusMessage rootName
  rootServiceName traceDuration`` and the scoped ``span:* trace:* link:*`` forms) and literals
  (strings, integers, floats, durations, ``true``/``false``, ``nil``, status and kind keywords);
* pipeline stages ``| select(...)`` and one metrics function (``rate()``, ``count_over_time()``,
  ``quantile_over_time(attr, q...)``, ``{avg,min,max,sum}_over_time(attr)``) with ``by (...)``;
* the hint ``with (most_recent=true)`` (and any other ``with (k=v)`` hint, which is ignored).

Everything else raises :class:`TraceQLError`; the HTTP layer answers 400 with Tempo's text
``parse error at line 1, col N: ...`` (tempo-api.md §8.1), so a query outside the subset is
rejected rather than answered wrongly. Regular expressions are fully anchored (§13, 2.7.0).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tempo_standin.model import KIND_NAMES, STATUS_NAMES, SpanRecord

__all__ = [
    "Attribute",
    "Comparison",
    "MetricsStage",
    "Query",
    "TraceQLError",
    "TraceView",
    "evaluate",
    "parse",
]


class TraceQLError(Exception):
    """A query the stand-in cannot run. ``str()`` is Tempo's ``parse error at ...`` text."""

    def __init__(self, col: int, message: str) -> None:
        super().__init__(f"parse error at line 1, col {col}: {message}")
        self.col = col
        self.detail = message


# --- values -----------------------------------------------------------------------------------


class Duration(NamedTuple):
    ns: int


class Status(NamedTuple):
    name: str


class Kind(NamedTuple):
    name: str


class _Nil:
    def __repr__(self) -> str:
        return "nil"


NIL = _Nil()
MISSING = object()

# --- lexer ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # goyacc-style token name, e.g. IDENTIFIER, STRING, OPEN_BRACE, $end
    text: str
    col: int
    value: Any = None


_PUNCT = [
    ("!>>", "NOT_DESC"),
    ("!<<", "NOT_ANCE"),
    ("&>>", "UNION_DESC"),
    ("&<<", "UNION_ANCE"),
    ("&&", "AND"),
    ("||", "OR"),
    ("!=", "NEQ"),
    ("=~", "RE"),
    ("!~", "NRE"),
    (">=", "GTE"),
    ("<=", "LTE"),
    (">>", "DESC"),
    ("<<", "ANCE"),
    ("{", "OPEN_BRACE"),
    ("}", "CLOSE_BRACE"),
    ("(", "OPEN_PARENS"),
    (")", "CLOSE_PARENS"),
    (",", "COMMA"),
    ("|", "PIPE"),
    ("=", "EQ"),
    (">", "GT"),
    ("<", "LT"),
    ("~", "TILDE"),
    ("!", "NOT"),
    ("+", "ADD"),
    ("-", "SUB"),
    ("*", "MUL"),
    ("/", "DIV"),
    ("%", "MOD"),
    ("^", "POW"),
]

# Characters that end an unquoted attribute name (TraceQL lexer: whitespace and the operator
# characters; quoted names lift the restriction, TraceQL docs "Quoted attribute names").
_ATTR_END = set(' \t\r\n{}()=~!<>&|^,"')

_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_DURATION_FULL = re.compile(r"((\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h))+")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9}
_UNIT_NS["h"] = 3600 * 10**9

_SCOPES = ("span", "resource", "link", "event", "instrumentation", "scope", "trace", "parent")

# Intrinsics: canonical name -> static type. Unscoped spellings map onto scoped ones.
_INTRINSICS: dict[str, str] = {
    "span:name": "string",
    "span:status": "status",
    "span:kind": "kind",
    "span:duration": "duration",
    "span:statusMessage": "string",
    "span:id": "spanid",
    "span:parentID": "spanid",
    "trace:rootService": "string",
    "trace:rootName": "string",
    "trace:duration": "duration",
    "trace:id": "traceid",
    "link:traceID": "traceid",
    "link:spanID": "spanid",
}
_UNSCOPED_INTRINSICS = {
    "name": "span:name",
    "status": "span:status",
    "kind": "span:kind",
    "duration": "span:duration",
    "statusMessage": "span:statusMessage",
    "rootServiceName": "trace:rootService",
    "rootName": "trace:rootName",
    "traceDuration": "trace:duration",
}
_KNOWN_UNSUPPORTED_INTRINSICS = {
    "childCount",
    "nestedSetLeft",
    "nestedSetRight",
    "nestedSetParent",
    "parent",
    "event:name",
    "event:timeSinceStart",
    "instrumentation:name",
    "instrumentation:version",
}

METRIC_FUNCTIONS = {
    "rate",
    "count_over_time",
    "quantile_over_time",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
}
_UNSUPPORTED_FUNCTIONS = {
    "count",
    "avg",
    "min",
    "max",
    "sum",
    "by",
    "coalesce",
    "histogram_over_time",
    "compare",
    "topk",
    "bottomk",
}


def _read_quoted(q: str, i: int, quote: str) -> tuple[str, int]:
    """Read a quoted string starting after the opening quote at ``i``; returns (value, end)."""
    start_col = i  # 1-based column of the opening quote
    out: list[str] = []
    n = len(q)
    while i < n:
        c = q[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\" and quote == '"':
            if i + 1 >= n:
                break
            e = q[i + 1]
            mapping = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}
            if e in mapping:
                out.append(mapping[e])
                i += 2
                continue
            if e == "u" and i + 6 <= n:
                out.append(chr(int(q[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(e)
            i += 2
            continue
        out.append(c)
        i += 1
    raise TraceQLError(start_col, "literal not terminated")


def tokenize(q: str) -> list[Token]:
    toks: list[Token] = []
    i = 0
    n = len(q)
    while i < n:
        c = q[i]
        col = i + 1
        if c in " \t\r\n":
            i += 1
            continue
        if c in '"`':
            value, i = _read_quoted(q, i + 1, c)
            toks.append(Token("STRING", q[col - 1 : i], col, value))
            continue
        # attribute starting with '.' (unscoped), unless it is a number like .5
        if c == "." and not (i + 1 < n and q[i + 1].isdigit()):
            name, i = _read_attr_name(q, i + 1)
            toks.append(Token("ATTRIBUTE", q[col - 1 : i], col, Attribute("", name)))
            continue
        if c.isdigit() or c == ".":
            m = _DURATION_FULL.match(q, i)
            if m and (m.end() >= n or not (q[m.end()].isalnum() or q[m.end()] == "_")):
                toks.append(Token("DURATION", m.group(0), col, Duration(_duration_ns(m.group(0)))))
                i = m.end()
                continue
            m2 = _NUMBER.match(q, i)
            assert m2 is not None
            text = m2.group(0)
            i = m2.end()
            if "." in text or "e" in text.lower():
                toks.append(Token("FLOAT", text, col, float(text)))
            else:
                toks.append(Token("INTEGER", text, col, int(text)))
            continue
        if c.isalpha() or c == "_":
            j = i
            while j < n and (q[j].isalnum() or q[j] == "_"):
                j += 1
            word = q[i:j]
            if j < n and q[j] == "." and word in _SCOPES:
                name, i = _read_attr_name(q, j + 1)
                toks.append(Token("ATTRIBUTE", q[col - 1 : i], col, Attribute(word, name)))
                continue
            if j < n and q[j] == ":" and word in _SCOPES:
                k = j + 1
                while k < n and (q[k].isalnum() or q[k] == "_"):
                    k += 1
                toks.append(Token("INTRINSIC", q[i:k], col, f"{word}:{q[j + 1 : k]}"))
                i = k
                continue
            i = j
            toks.append(Token("IDENTIFIER", word, col, word))
            continue
        for text, kind in _PUNCT:
            if q.startswith(text, i):
                toks.append(Token(kind, text, col))
                i += len(text)
                break
        else:
            raise TraceQLError(col, f"syntax error: unexpected character {c!r}")
    toks.append(Token("$end", "", n + 1))
    return toks


def _read_attr_name(q: str, i: int) -> tuple[str, int]:
    if i < len(q) and q[i] == '"':
        return _read_quoted(q, i + 1, '"')
    j = i
    while j < len(q) and q[j] not in _ATTR_END:
        j += 1
    if j == i:
        raise TraceQLError(i + 1, "syntax error: unexpected END_ATTRIBUTE")
    return q[i:j], j


def _duration_ns(text: str) -> int:
    total = 0.0
    for m in re.finditer(r"(\d+\.?\d*|\.\d+)(ns|us|µs|ms|s|m|h)", text):
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
    return round(total)


# --- AST --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attribute:
    scope: str  # "", "span", "resource", "link"
    name: str

    def label(self) -> str:
        """The name used for ``by()`` labels and select(): as written, scope included."""
        return f"{self.scope}.{self.name}" if self.scope else f".{self.name}"


@dataclass(frozen=True, slots=True)
class Intrinsic:
    name: str  # canonical scoped name, e.g. "span:name"
    written: str  # as the query spelled it

    def label(self) -> str:
        return self.written


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any


Operand = Attribute | Intrinsic | Literal


@dataclass(frozen=True, slots=True)
class Comparison:
    lhs: Operand
    op: str  # "=", "!=", ">", ">=", "<", "<=", "=~", "!~", or "" for a bare boolean literal
    rhs: Operand
    regex: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "&&" | "||"
    items: tuple[FieldExpr, ...]


FieldExpr = Comparison | BoolOp


@dataclass(frozen=True, slots=True)
class Filter:
    expr: FieldExpr | None  # None for {}


@dataclass(frozen=True, slots=True)
class SpansetOp:
    op: str  # "&&" | "||"
    items: tuple[SpansetExpr, ...]


SpansetExpr = Filter | SpansetOp


@dataclass(frozen=True, slots=True)
class MetricsStage:
    function: str
    attribute: Attribute | Intrinsic | None
    quantiles: tuple[float, ...]
    by: tuple[Attribute | Intrinsic, ...]


@dataclass(frozen=True, slots=True)
class Query:
    spanset: SpansetExpr
    select: tuple[Attribute | Intrinsic, ...] = ()
    metrics: MetricsStage | None = None
    hints: dict[str, Any] = field(default_factory=dict)

    @property
    def most_recent(self) -> bool:
        return self.hints.get("most_recent") is True


# --- parser -----------------------------------------------------------------------------------


class _Parser:
    def __init__(self, q: str) -> None:
        self.toks = tokenize(q)
        self.pos = 0

    @property
    def tok(self) -> Token:
        return self.toks[self.pos]

    def next(self) -> Token:
        t = self.toks[self.pos]
        self.pos += 1
        return t

    def unexpected(self, t: Token | None = None) -> TraceQLError:
        t = t or self.tok
        name = t.kind
        if t.kind == "ATTRIBUTE":
            name = "IDENTIFIER"
        if t.kind in ("DESC", "ANCE", "TILDE", "NOT_DESC", "NOT_ANCE", "UNION_DESC", "UNION_ANCE"):
            return TraceQLError(
                t.col, f"unsupported by the Tempo stand-in: structural operator {t.text}"
            )
        if t.kind in ("ADD", "SUB", "MUL", "DIV", "MOD", "POW"):
            return TraceQLError(t.col, f"unsupported by the Tempo stand-in: arithmetic {t.text}")
        if t.kind == "NOT":
            return TraceQLError(t.col, "unsupported by the Tempo stand-in: negation !")
        return TraceQLError(t.col, f"syntax error: unexpected {name}")

    def expect(self, kind: str) -> Token:
        if self.tok.kind != kind:
            raise self.unexpected()
        return self.next()

    # query := spansetExpr ( '|' stage )* [ 'with' '(' hints ')' ]
    def query(self) -> Query:
        if self.tok.kind == "$end":
            raise self.unexpected()
        spanset = self.spanset_or()
        select: list[Attribute | Intrinsic] = []
        metrics: MetricsStage | None = None
        while self.tok.kind == "PIPE":
            self.next()
            t = self.tok
            if metrics is not None:
                raise TraceQLError(
                    t.col, "unsupported by the Tempo stand-in: stage after a metrics function"
                )
            if t.kind == "IDENTIFIER" and t.value == "select":
                self.next()
                select.extend(self.field_list())
            elif t.kind == "IDENTIFIER" and t.value in METRIC_FUNCTIONS:
                metrics = self.metrics_stage()
            elif t.kind == "IDENTIFIER" and t.value in _UNSUPPORTED_FUNCTIONS:
                raise TraceQLError(t.col, f"unsupported by the Tempo stand-in: {t.value}()")
            elif t.kind in ("OPEN_BRACE", "OPEN_PARENS"):
                raise TraceQLError(t.col, "unsupported by the Tempo stand-in: spanset pipeline")
            else:
                raise self.unexpected()
        hints: dict[str, Any] = {}
        if self.tok.kind == "IDENTIFIER" and self.tok.value == "with":
            self.next()
            self.expect("OPEN_PARENS")
            while True:
                key = self.expect("IDENTIFIER").value
                self.expect("EQ")
                hints[key] = self.literal_value()
                if self.tok.kind == "COMMA":
                    self.next()
                    continue
                break
            self.expect("CLOSE_PARENS")
        if self.tok.kind != "$end":
            raise self.unexpected()
        return Query(spanset, tuple(select), metrics, hints)

    def literal_value(self) -> Any:
        t = self.next()
        if t.kind in ("STRING", "INTEGER", "FLOAT", "DURATION"):
            return t.value
        if t.kind == "IDENTIFIER" and t.value in ("true", "false"):
            return t.value == "true"
        raise self.unexpected(t)

    def field_list(self) -> list[Attribute | Intrinsic]:
        self.expect("OPEN_PARENS")
        items = [self.field_ref()]
        while self.tok.kind == "COMMA":
            self.next()
            items.append(self.field_ref())
        self.expect("CLOSE_PARENS")
        return items

    def field_ref(self) -> Attribute | Intrinsic:
        t = self.tok
        op = self.operand()
        if isinstance(op, Literal):
            raise self.unexpected(t)
        return op

    def metrics_stage(self) -> MetricsStage:
        fn_tok = self.next()
        fn = fn_tok.value
        self.expect("OPEN_PARENS")
        attribute: Attribute | Intrinsic | None = None
        quantiles: list[float] = []
        if fn in ("rate", "count_over_time"):
            pass
        else:
            attribute = self.field_ref()
            if fn == "quantile_over_time":
                while self.tok.kind == "COMMA":
                    self.next()
                    t = self.next()
                    if t.kind not in ("FLOAT", "INTEGER"):
                        raise self.unexpected(t)
                    q = float(t.value)
                    if not 0 <= q <= 1:
                        raise TraceQLError(t.col, f"quantile must be between 0 and 1: {t.text}")
                    quantiles.append(q)
                if not quantiles:
                    raise self.unexpected()
        self.expect("CLOSE_PARENS")
        by: list[Attribute | Intrinsic] = []
        if self.tok.kind == "IDENTIFIER" and self.tok.value == "by":
            self.next()
            by = self.field_list()
        if self.tok.kind == "IDENTIFIER" and self.tok.value == "with":
            pass
        elif self.tok.kind not in ("$end",):
            t = self.tok
            if t.kind == "PIPE":
                raise TraceQLError(
                    t.col, "unsupported by the Tempo stand-in: stage after a metrics function"
                )
            if t.kind in ("GT", "GTE", "LT", "LTE", "EQ", "NEQ"):
                raise TraceQLError(t.col, "unsupported by the Tempo stand-in: metrics comparison")
        return MetricsStage(fn, attribute, tuple(quantiles), tuple(by))

    # spanset level: || binds looser than &&
    def spanset_or(self) -> SpansetExpr:
        items = [self.spanset_and()]
        while self.tok.kind == "OR":
            self.next()
            items.append(self.spanset_and())
        return items[0] if len(items) == 1 else SpansetOp("||", tuple(items))

    def spanset_and(self) -> SpansetExpr:
        items = [self.spanset_primary()]
        while self.tok.kind == "AND":
            self.next()
            items.append(self.spanset_primary())
        return items[0] if len(items) == 1 else SpansetOp("&&", tuple(items))

    def spanset_primary(self) -> SpansetExpr:
        t = self.tok
        if t.kind == "OPEN_BRACE":
            self.next()
            if self.tok.kind == "CLOSE_BRACE":
                self.next()
                return Filter(None)
            expr = self.field_or()
            self.expect("CLOSE_BRACE")
            return Filter(expr)
        if t.kind == "OPEN_PARENS":
            self.next()
            inner = self.spanset_or()
            self.expect("CLOSE_PARENS")
            return inner
        raise self.unexpected()

    def field_or(self) -> FieldExpr:
        items = [self.field_and()]
        while self.tok.kind == "OR":
            self.next()
            items.append(self.field_and())
        return items[0] if len(items) == 1 else BoolOp("||", tuple(items))

    def field_and(self) -> FieldExpr:
        items = [self.field_unary()]
        while self.tok.kind == "AND":
            self.next()
            items.append(self.field_unary())
        return items[0] if len(items) == 1 else BoolOp("&&", tuple(items))

    def field_unary(self) -> FieldExpr:
        if self.tok.kind == "OPEN_PARENS":
            self.next()
            inner = self.field_or()
            self.expect("CLOSE_PARENS")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        start = self.tok
        lhs = self.operand()
        ops = {
            "EQ": "=",
            "NEQ": "!=",
            "GT": ">",
            "GTE": ">=",
            "LT": "<",
            "LTE": "<=",
            "RE": "=~",
            "NRE": "!~",
        }
        if self.tok.kind not in ops:
            if isinstance(lhs, Literal) and isinstance(lhs.value, bool):
                return Comparison(lhs, "", Literal(True))
            if self.tok.kind in ("CLOSE_BRACE", "AND", "OR", "CLOSE_PARENS"):
                raise TraceQLError(
                    start.col, "unsupported by the Tempo stand-in: a field without a comparison"
                )
            raise self.unexpected()
        op_tok = self.next()
        op = ops[op_tok.kind]
        rhs = self.operand()
        return _validate(Comparison(lhs, op, rhs), op_tok.col)

    def operand(self) -> Operand:
        t = self.next()
        if t.kind == "ATTRIBUTE":
            attr: Attribute = t.value
            if attr.scope in ("event", "instrumentation", "scope", "trace", "parent"):
                raise TraceQLError(
                    t.col, f"unsupported by the Tempo stand-in: {attr.scope}. attributes"
                )
            return attr
        if t.kind == "INTRINSIC":
            name = t.value
            if name in _INTRINSICS:
                return Intrinsic(name, t.text)
            if name in _KNOWN_UNSUPPORTED_INTRINSICS:
                raise TraceQLError(t.col, f"unsupported by the Tempo stand-in: intrinsic {name}")
            raise TraceQLError(t.col, "syntax error: unexpected IDENTIFIER")
        if t.kind in ("STRING", "INTEGER", "FLOAT", "DURATION"):
            return Literal(t.value)
        if t.kind == "SUB" and self.tok.kind in ("INTEGER", "FLOAT", "DURATION"):
            n = self.next()
            v = n.value
            return Literal(Duration(-v.ns) if isinstance(v, Duration) else -v)
        if t.kind == "IDENTIFIER":
            w = t.value
            if w in _UNSCOPED_INTRINSICS:
                return Intrinsic(_UNSCOPED_INTRINSICS[w], w)
            if w in ("true", "false"):
                return Literal(w == "true")
            if w == "nil":
                return Literal(NIL)
            if w in ("error", "ok", "unset"):
                return Literal(Status(w))
            if w in KIND_NAMES.values():
                return Literal(Kind(w))
            if w in _KNOWN_UNSUPPORTED_INTRINSICS:
                raise TraceQLError(t.col, f"unsupported by the Tempo stand-in: intrinsic {w}")
        raise self.unexpected(t)


def _static_type(op: Operand) -> str:
    """Static type of an operand; "any" for attributes (their type is only known per span)."""
    if isinstance(op, Attribute):
        return "any"
    if isinstance(op, Intrinsic):
        t = _INTRINSICS[op.name]
        return "string" if t in ("traceid", "spanid") else t
    v = op.value
    if v is NIL:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, Duration):
        return "duration"
    if isinstance(v, Status):
        return "status"
    if isinstance(v, Kind):
        return "kind"
    return "string"


def _validate(c: Comparison, col: int) -> Comparison:
    """Type checks Tempo's validation applies (binary operations on the same type)."""
    lt, rt = _static_type(c.lhs), _static_type(c.rhs)
    desc = f"{_describe(c.lhs)} {c.op} {_describe(c.rhs)}"
    if "nil" in (lt, rt):
        if c.op not in ("=", "!=") or (lt != "any" and rt != "any"):
            raise TraceQLError(col, f"unsupported by the Tempo stand-in: nil comparison {desc}")
    elif lt != "any" and rt != "any" and lt != rt:
        raise TraceQLError(col, f"binary operations must operate on the same type: {desc}")
    if c.op in ("=~", "!~"):
        if lt not in ("string", "any") or rt not in ("string", "any"):
            raise TraceQLError(col, f"binary operations must operate on the same type: {desc}")
        if not isinstance(c.rhs, Literal):
            raise TraceQLError(col, f"unsupported by the Tempo stand-in: regex on a field {desc}")
        try:
            # tempo-api.md §13 (2.7.0): regexes are fully anchored; fullmatch does that.
            rx = re.compile(c.rhs.value)
        except re.error as exc:
            raise TraceQLError(col, f"error parsing regexp: {exc}") from exc
        return Comparison(c.lhs, c.op, c.rhs, rx)
    if c.op in (">", ">=", "<", "<=") and {lt, rt} & {"bool", "status", "kind"}:
        raise TraceQLError(col, f"illegal operation for the given type: {desc}")
    return c


def _describe(op: Operand) -> str:
    if isinstance(op, Attribute):
        return op.label()
    if isinstance(op, Intrinsic):
        return op.written
    v = op.value
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, (Status, Kind)):
        return v.name
    if isinstance(v, Duration):
        return f"{v.ns}ns"
    return repr(v).lower() if isinstance(v, bool) else repr(v)


def parse(q: str) -> Query:
    """Parse a query of the subset; raises TraceQLError with Tempo's message format."""
    return _Parser(q).query()


def parse_field(text: str) -> Attribute | Intrinsic:
    """One identifier (``resource.service.name``, ``span."a b"``, ``name``, ``span:status``)."""
    p = _Parser(text)
    f = p.field_ref()
    if p.tok.kind != "$end":
        raise p.unexpected()
    return f


# --- evaluation -------------------------------------------------------------------------------


@dataclass(slots=True)
class TraceView:
    """The trace-level facts intrinsics need (computed over the spans the query can see)."""

    trace_id: bytes
    spans: Sequence[SpanRecord]
    root: SpanRecord | None
    start_ns: int
    end_ns: int

    @classmethod
    def of(cls, trace_id: bytes, spans: Sequence[SpanRecord]) -> TraceView:
        root = next((s for s in spans if s.is_root), None)
        start = min(s.start_ns for s in spans)
        end = max(s.end_ns for s in spans)
        return cls(trace_id, spans, root, start, end)


def _lookup(op: Operand, span: SpanRecord, trace: TraceView) -> Any:
    if isinstance(op, Literal):
        return op.value
    if isinstance(op, Attribute):
        if op.scope == "span":
            return span.attributes.get(op.name, MISSING)
        if op.scope == "resource":
            return span.resource_attributes.get(op.name, MISSING)
        if op.scope == "link":
            return [
                lk.attributes[op.name] for lk in span.links if op.name in lk.attributes
            ] or MISSING
        # Unscoped: the span's attribute, else the resource's (TraceQL docs, "unscoped").
        v = span.attributes.get(op.name, MISSING)
        return span.resource_attributes.get(op.name, MISSING) if v is MISSING else v
    n = op.name
    if n == "span:name":
        return span.name
    if n == "span:status":
        return Status(STATUS_NAMES.get(span.status_code, "unset"))
    if n == "span:kind":
        return Kind(KIND_NAMES.get(span.kind, "unspecified"))
    if n == "span:duration":
        return Duration(span.duration_ns)
    if n == "span:statusMessage":
        return span.status_message
    if n == "span:id":
        return _IdValue(span.span_id)
    if n == "span:parentID":
        return _IdValue(span.parent_span_id) if span.parent_span_id else MISSING
    if n == "trace:rootService":
        return trace.root.service if trace.root else MISSING
    if n == "trace:rootName":
        return trace.root.name if trace.root else MISSING
    if n == "trace:duration":
        return Duration(trace.end_ns - trace.start_ns)
    if n == "trace:id":
        return _IdValue(trace.trace_id)
    if n == "link:traceID":
        return [_IdValue(lk.trace_id) for lk in span.links] or MISSING
    if n == "link:spanID":
        return [_IdValue(lk.span_id) for lk in span.links] or MISSING
    raise AssertionError(n)


class _IdValue(NamedTuple):
    """A trace or span ID; compared with a hex string literal as bytes, so leading zeros and
    case do not matter (IDs are bytes in Tempo's storage; the literal is hex)."""

    raw: bytes

    def matches(self, literal: str) -> bool:
        s = literal.strip().lower()
        if not s or len(s) > 2 * len(self.raw) or any(c not in "0123456789abcdef" for c in s):
            return False
        return bytes.fromhex(s.rjust(2 * len(self.raw), "0")) == self.raw


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    return None


def _compare_scalar(lv: Any, op: str, rv: Any, rx: re.Pattern[str] | None) -> bool:
    if rv is NIL:
        return False
    if isinstance(lv, _IdValue) or isinstance(rv, _IdValue):
        idv, other = (lv, rv) if isinstance(lv, _IdValue) else (rv, lv)
        if not isinstance(other, str):
            return False
        if op in ("=~", "!~"):
            assert rx is not None
            hit = rx.fullmatch(idv.raw.hex()) is not None
            return hit if op == "=~" else not hit
        if op == "=":
            return idv.matches(other)
        if op == "!=":
            return not idv.matches(other)
        return False
    if op in ("=~", "!~"):
        if not isinstance(lv, str):
            return False
        assert rx is not None
        hit = rx.fullmatch(lv) is not None
        return hit if op == "=~" else not hit
    ln, rn = _num(lv), _num(rv)
    if ln is not None and rn is not None:
        a: Any = ln
        b: Any = rn
    elif isinstance(lv, (bool, str)) and type(lv) is type(rv):
        a, b = lv, rv
    elif isinstance(lv, Duration) and isinstance(rv, Duration):
        a, b = lv.ns, rv.ns
    elif isinstance(lv, (Status, Kind)) and type(lv) is type(rv):
        a, b = lv.name, rv.name
    else:
        return False  # different types never match (not even with !=)
    if op == "=":
        return bool(a == b)
    if op == "!=":
        return bool(a != b)
    if isinstance(a, bool) or (isinstance(a, str) and isinstance(lv, (Status, Kind))):
        return False
    if isinstance(a, float) and (math.isnan(a) or math.isnan(b)):
        return False
    return bool(
        (op == ">" and a > b)
        or (op == ">=" and a >= b)
        or (op == "<" and a < b)
        or (op == "<=" and a <= b)
    )


def _eval_comparison(c: Comparison, span: SpanRecord, trace: TraceView) -> bool:
    if c.op == "":
        return bool(c.lhs.value) if isinstance(c.lhs, Literal) else False
    lv = _lookup(c.lhs, span, trace)
    rv = _lookup(c.rhs, span, trace)
    if rv is NIL or lv is NIL:
        value = lv if rv is NIL else rv
        present = value is not MISSING
        return present if c.op == "!=" else not present
    if lv is MISSING or rv is MISSING:
        return False
    lvals = lv if isinstance(lv, list) else [lv]
    rvals = rv if isinstance(rv, list) else [rv]
    # Array attributes (and links) match when any element does.
    return any(_compare_scalar(a, c.op, b, c.regex) for a in lvals for b in rvals)


def _eval_field(e: FieldExpr, span: SpanRecord, trace: TraceView) -> bool:
    if isinstance(e, Comparison):
        return _eval_comparison(e, span, trace)
    if e.op == "&&":
        return all(_eval_field(i, span, trace) for i in e.items)
    return any(_eval_field(i, span, trace) for i in e.items)


def _eval_spanset(e: SpansetExpr, trace: TraceView) -> list[SpanRecord]:
    if isinstance(e, Filter):
        expr = e.expr
        spans = [s for s in trace.spans if expr is None or _eval_field(expr, s, trace)]
        return sorted(spans, key=lambda s: s.start_ns)
    parts = [_eval_spanset(i, trace) for i in e.items]
    if e.op == "&&" and not all(parts):
        return []
    seen: set[bytes] = set()
    out: list[SpanRecord] = []
    for part in parts:
        for s in part:
            if s.span_id not in seen:
                seen.add(s.span_id)
                out.append(s)
    out.sort(key=lambda s: s.start_ns)
    return out


def evaluate(query: Query, trace: TraceView) -> list[SpanRecord]:
    """The spans of the trace's spanset (empty: the trace does not match)."""
    return _eval_spanset(query.spanset, trace)


def referenced_fields(query: Query) -> list[Attribute | Intrinsic]:
    """Fields a filter mentions; search results show them on each matched span (plus select)."""
    out: list[Attribute | Intrinsic] = []

    def walk_field(e: FieldExpr | None) -> None:
        if e is None:
            return
        if isinstance(e, Comparison):
            for op in (e.lhs, e.rhs):
                if isinstance(op, (Attribute, Intrinsic)) and op not in out:
                    out.append(op)
            return
        for i in e.items:
            walk_field(i)

    def walk(e: SpansetExpr) -> None:
        if isinstance(e, Filter):
            walk_field(e.expr)
        else:
            for i in e.items:
                walk(i)

    walk(query.spanset)
    for f in query.select:
        if f not in out:
            out.append(f)
    return out


def field_value(f: Attribute | Intrinsic, span: SpanRecord, trace: TraceView) -> Any:
    """A field's value for output (``MISSING`` when absent)."""
    return _lookup(f, span, trace)
