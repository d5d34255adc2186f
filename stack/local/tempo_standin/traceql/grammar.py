"""TraceQL's grammar as the stand-in's parser generator reads it.

The rules, their order and the operator precedence are those of Tempo 2.9's goyacc grammar
(grafana/tempo v2.9.0 ``pkg/traceql/expr.y``): the language is defined by them, so the stand-in
states the same rules in its own notation (nonterminal names are its own) with its own
actions, which build the nodes of ``ast.py``. Rule order matters only where goyacc settles a
reduce/reduce conflict by it (a scalar pipeline's ``| aggregate`` before a closing
parenthesis), and is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tempo_standin.traceql import ast as A
from tempo_standin.traceql.lalr import LEFT, NONASSOC, RIGHT, Grammar, Production
from tempo_standin.traceql.lexer import TOKEN_NAMES, TOKEN_NUMBER

__all__ = ["GRAMMAR"]

# Operators in increasing precedence (expr.y %left/%right/%nonassoc lines).
_PRECEDENCE: list[tuple[str, str]] = [
    (LEFT, "PIPE"),
    (LEFT, "AND OR"),
    (
        LEFT,
        "EQ NEQ LT LTE GT GTE NRE RE DESC ANCE SIBL NOT_CHILD NOT_PARENT NOT_DESC NOT_ANCE "
        "UNION_CHILD UNION_PARENT UNION_DESC UNION_ANCE UNION_SIBL",
    ),
    (LEFT, "ADD SUB"),
    (LEFT, "NOT"),
    (LEFT, "MUL DIV MOD"),
    (RIGHT, "POW"),
    (NONASSOC, "NIL"),
]

_RULES: list[tuple[str, str, Callable[..., Any] | None]] = []


def _r(lhs: str, body: str, action: Callable[..., Any] | None = None) -> None:
    _RULES.append((lhs, body, action))


def _first(*a: Any) -> Any:
    return a[0]


def _second(*a: Any) -> Any:
    return a[1]


def _with_hints(root: A.RootExpr, hints: A.Hints) -> A.RootExpr:
    root.hints = hints
    return root


def _metrics(p: A.Pipeline, _pipe: Any, m: Any) -> A.RootExpr:
    r = A.root_of(p)
    r.metrics = m
    return r


def _metrics2(p: A.Pipeline, _a: Any, m: Any, _b: Any, s: A.TopKBottomK) -> A.RootExpr:
    r = _metrics(p, None, m)
    r.second_stage = s
    return r


# --- root ---------------------------------------------------------------------------------------
_r("root", "ssPipe", A.root_of)
_r("root", "ssPipeExpr", A.root_of)
_r("root", "scalarPipeFilter", A.root_of)
_r("root", "ssPipe PIPE firstStage", _metrics)
_r("root", "ssPipe PIPE firstStage PIPE secondStage", _metrics2)
_r("root", "root hints", _with_hints)

# --- spanset pipeline expressions ----------------------------------------------------------------
_SPANSET_OPS = [
    ("AND", "&&"), ("GT", ">"), ("LT", "<"), ("DESC", ">>"), ("ANCE", "<<"), ("OR", "||"),
    ("SIBL", "~"), ("NOT_CHILD", "!>"), ("NOT_PARENT", "!<"), ("NOT_DESC", "!>>"),
    ("NOT_ANCE", "!<<"), ("NRE", "!~"), ("UNION_CHILD", "&>"), ("UNION_PARENT", "&<"),
    ("UNION_DESC", "&>>"), ("UNION_ANCE", "&<<"), ("UNION_SIBL", "&~"),
]  # fmt: skip


def _spanset_op(op: str) -> Callable[..., Any]:
    return lambda lhs, _op, rhs: A.SpansetOperation(op, lhs, rhs)


_r("ssPipeExpr", "OPEN_PARENS ssPipeExpr CLOSE_PARENS", _second)
for _tok, _op in _SPANSET_OPS:
    _r("ssPipeExpr", f"ssPipeExpr {_tok} ssPipeExpr", _spanset_op(_op))
_r("ssPipeExpr", "wrappedSsPipe", _first)
_r("wrappedSsPipe", "OPEN_PARENS ssPipe CLOSE_PARENS", _second)

_r("ssPipe", "ssExpr", lambda e: A.Pipeline([e]))
_r("ssPipe", "scalarFilter", lambda e: A.Pipeline([e]))
_r("ssPipe", "groupOp", lambda e: A.Pipeline([e]))
_r("ssPipe", "selectOp", lambda e: A.Pipeline([e]))
for _what in ("ssExpr", "scalarFilter", "groupOp", "coalesceOp", "selectOp"):
    _r("ssPipe", f"ssPipe PIPE {_what}", lambda p, _pipe, e: p.add(e))

_r("groupOp", "BY OPEN_PARENS fieldExpr CLOSE_PARENS", lambda _b, _o, e, _c: A.GroupOperation(e))
_r("coalesceOp", "COALESCE OPEN_PARENS CLOSE_PARENS", lambda *_: A.CoalesceOperation())
_r(
    "selectOp",
    "SELECT OPEN_PARENS attrList CLOSE_PARENS",
    lambda _s, _o, attrs, _c: A.SelectOperation(attrs),
)
_r("attr", "intrinsicField", _first)
_r("attr", "attributeField", _first)
_r("attr", "scopedIntrinsicField", _first)
_r("attrList", "attr", lambda a: [a])
_r("attrList", "attrList COMMA attr", lambda lst, _c, a: [*lst, a])
_r("numList", "FLOAT", lambda f: [f])
_r("numList", "INTEGER", lambda i: [float(i)])
_r("numList", "numList COMMA FLOAT", lambda lst, _c, f: [*lst, f])
_r("numList", "numList COMMA INTEGER", lambda lst, _c, i: [*lst, float(i)])

# spanset expressions: the same operators, in expr.y's order for this nonterminal
_r("ssExpr", "OPEN_PARENS ssExpr CLOSE_PARENS", _second)
for _tok, _op in [
    ("AND", "&&"), ("GT", ">"), ("LT", "<"), ("DESC", ">>"), ("ANCE", "<<"), ("OR", "||"),
    ("SIBL", "~"), ("NOT_CHILD", "!>"), ("NOT_PARENT", "!<"), ("NRE", "!~"),
    ("NOT_ANCE", "!<<"), ("NOT_DESC", "!>>"), ("UNION_CHILD", "&>"), ("UNION_PARENT", "&<"),
    ("UNION_SIBL", "&~"), ("UNION_ANCE", "&<<"), ("UNION_DESC", "&>>"),
]:  # fmt: skip
    _r("ssExpr", f"ssExpr {_tok} ssExpr", _spanset_op(_op))
_r("ssExpr", "ssFilter", _first)
_r("ssFilter", "OPEN_BRACE CLOSE_BRACE", lambda *_: A.SpansetFilter(A.TRUE))
_r("ssFilter", "OPEN_BRACE fieldExpr CLOSE_BRACE", lambda _o, e, _c: A.SpansetFilter(e))

_r(
    "scalarFilter",
    "scalarExpr scalarFilterOp scalarExpr",
    lambda lhs, op, rhs: A.ScalarFilter(op, lhs, rhs),
)
for _tok, _op in [("EQ", "="), ("NEQ", "!="), ("LT", "<"), ("LTE", "<="), ("GT", ">"),
                  ("GTE", ">=")]:  # fmt: skip
    _r("scalarFilterOp", _tok, (lambda o: lambda _t: o)(_op))

# --- scalar expressions --------------------------------------------------------------------------
_r(
    "scalarPipeFilter",
    "scalarPipeExpr scalarFilterOp scalarPipeExpr",
    lambda lhs, op, rhs: A.ScalarFilter(op, lhs, rhs),
)
_r(
    "scalarPipeFilter",
    "scalarPipeExpr scalarFilterOp static",
    lambda lhs, op, rhs: A.ScalarFilter(op, lhs, rhs),
)
_ARITH = [("ADD", "+"), ("SUB", "-"), ("MUL", "*"), ("DIV", "/"), ("MOD", "%"), ("POW", "^")]


def _scalar_op(op: str) -> Callable[..., Any]:
    return lambda lhs, _op, rhs: A.ScalarOperation(op, lhs, rhs)


_r("scalarPipeExpr", "OPEN_PARENS scalarPipeExpr CLOSE_PARENS", _second)
for _tok, _op in _ARITH:
    _r("scalarPipeExpr", f"scalarPipeExpr {_tok} scalarPipeExpr", _scalar_op(_op))
_r("scalarPipeExpr", "wrappedScalarPipe", _first)
_r("wrappedScalarPipe", "OPEN_PARENS scalarPipe CLOSE_PARENS", _second)
_r("scalarPipe", "ssPipe PIPE aggregate", lambda p, _pipe, a: p.add(a))

_r("scalarExpr", "OPEN_PARENS scalarExpr CLOSE_PARENS", _second)
for _tok, _op in _ARITH:
    _r("scalarExpr", f"scalarExpr {_tok} scalarExpr", _scalar_op(_op))
_r("scalarExpr", "aggregate", _first)
_r("scalarExpr", "INTEGER", lambda i: A.Static(A.INT, i))
_r("scalarExpr", "FLOAT", lambda f: A.Static(A.FLOAT, f))
_r("scalarExpr", "DURATION", lambda d: A.Static(A.DURATION, int(d)))
_r("scalarExpr", "SUB INTEGER", lambda _s, i: A.Static(A.INT, A.wrap64(-i)))
_r("scalarExpr", "SUB FLOAT", lambda _s, f: A.Static(A.FLOAT, -f))
_r("scalarExpr", "SUB DURATION", lambda _s, d: A.Static(A.DURATION, -int(d)))

_r("aggregate", "COUNT OPEN_PARENS CLOSE_PARENS", lambda *_: A.Aggregate("count", None))
for _tok, _op in [("MAX", "max"), ("MIN", "min"), ("AVG", "avg"), ("SUM", "sum")]:
    _r(
        "aggregate",
        f"{_tok} OPEN_PARENS fieldExpr CLOSE_PARENS",
        (lambda o: lambda _t, _o, e, _c: A.Aggregate(o, e))(_op),
    )

# --- metrics -------------------------------------------------------------------------------------
_BY = "BY OPEN_PARENS attrList CLOSE_PARENS"
for _tok, _op in [("RATE", "rate"), ("COUNT_OVER_TIME", "count_over_time")]:
    _r("firstStage", f"{_tok} OPEN_PARENS CLOSE_PARENS",
       (lambda o: lambda *_: A.MetricsAggregate(o))(_op))  # fmt: skip
    _r("firstStage", f"{_tok} OPEN_PARENS CLOSE_PARENS {_BY}",
       (lambda o: lambda *a: A.MetricsAggregate(o, by=a[5]))(_op))  # fmt: skip
_OVER_TIME = [
    ("MIN_OVER_TIME", "min_over_time"), ("MAX_OVER_TIME", "max_over_time"),
    ("SUM_OVER_TIME", "sum_over_time"), ("AVG_OVER_TIME", "avg_over_time"),
]  # fmt: skip
for _tok, _op in _OVER_TIME:
    _r("firstStage", f"{_tok} OPEN_PARENS attr CLOSE_PARENS",
       (lambda o: lambda *a: A.MetricsAggregate(o, a[2]))(_op))  # fmt: skip
    _r("firstStage", f"{_tok} OPEN_PARENS attr CLOSE_PARENS {_BY}",
       (lambda o: lambda *a: A.MetricsAggregate(o, a[2], by=a[6]))(_op))  # fmt: skip
_r("firstStage", "QUANTILE_OVER_TIME OPEN_PARENS attr COMMA numList CLOSE_PARENS",
   lambda *a: A.MetricsAggregate("quantile_over_time", a[2], a[4]))  # fmt: skip
_r("firstStage", f"QUANTILE_OVER_TIME OPEN_PARENS attr COMMA numList CLOSE_PARENS {_BY}",
   lambda *a: A.MetricsAggregate("quantile_over_time", a[2], a[4], a[8]))  # fmt: skip
_r("firstStage", "HISTOGRAM_OVER_TIME OPEN_PARENS attr CLOSE_PARENS",
   lambda *a: A.MetricsAggregate("histogram_over_time", a[2]))  # fmt: skip
_r("firstStage", f"HISTOGRAM_OVER_TIME OPEN_PARENS attr CLOSE_PARENS {_BY}",
   lambda *a: A.MetricsAggregate("histogram_over_time", a[2], by=a[6]))  # fmt: skip
_r("firstStage", "COMPARE OPEN_PARENS ssFilter CLOSE_PARENS",
   lambda *a: A.MetricsCompare(a[2], 10, 0, 0))  # fmt: skip
_r("firstStage", "COMPARE OPEN_PARENS ssFilter COMMA INTEGER CLOSE_PARENS",
   lambda *a: A.MetricsCompare(a[2], a[4], 0, 0))  # fmt: skip
_r("firstStage",
   "COMPARE OPEN_PARENS ssFilter COMMA INTEGER COMMA INTEGER COMMA INTEGER CLOSE_PARENS",
   lambda *a: A.MetricsCompare(a[2], a[4], a[6], a[8]))  # fmt: skip

_r("secondStage", "TOPK OPEN_PARENS INTEGER CLOSE_PARENS", lambda *a: A.TopKBottomK("topk", a[2]))
_r("secondStage", "BOTTOMK OPEN_PARENS INTEGER CLOSE_PARENS",
   lambda *a: A.TopKBottomK("bottomk", a[2]))  # fmt: skip

# --- hints ---------------------------------------------------------------------------------------
_r("hint", "IDENTIFIER EQ static", lambda n, _e, v: (n, v))
_r("hints", "WITH OPEN_PARENS hintList CLOSE_PARENS", lambda _w, _o, lst, _c: A.Hints(lst))
_r("hintList", "hint", lambda h: [h])
_r("hintList", "hintList COMMA hint", lambda lst, _c, h: [*lst, h])

# --- field expressions ---------------------------------------------------------------------------
_r("fieldExpr", "OPEN_PARENS fieldExpr CLOSE_PARENS", _second)
for _tok, _op in [("ADD", "+"), ("SUB", "-"), ("MUL", "*"), ("DIV", "/"), ("MOD", "%"),
                  ("EQ", "="), ("NEQ", "!="), ("LT", "<"), ("LTE", "<="), ("GT", ">"),
                  ("GTE", ">="), ("RE", "=~"), ("NRE", "!~"), ("POW", "^"), ("AND", "&&"),
                  ("OR", "||")]:  # fmt: skip
    _r("fieldExpr", f"fieldExpr {_tok} fieldExpr",
       (lambda o: lambda lhs, _t, rhs: A.new_binary(o, lhs, rhs))(_op))  # fmt: skip
_r("fieldExpr", "fieldExpr NEQ NIL", lambda e, *_: A.new_unary("exists", e))
_r("fieldExpr", "NIL NEQ fieldExpr", lambda _n, _o, e: A.new_unary("exists", e))
_r("fieldExpr", "NIL NEQ NIL", lambda *_: A.FALSE)
_r("fieldExpr", "NIL EQ NIL", lambda *_: A.FALSE)
_r("fieldExpr", "SUB fieldExpr", lambda _s, e: A.new_unary("-", e))
_r("fieldExpr", "NOT fieldExpr", lambda _s, e: A.new_unary("!", e))
_r("fieldExpr", "static", _first)
_r("fieldExpr", "intrinsicField", _first)
_r("fieldExpr", "attributeField", _first)
_r("fieldExpr", "scopedIntrinsicField", _first)

# --- statics -------------------------------------------------------------------------------------
_r("static", "STRING", lambda s: A.Static(A.STRING, s))
_r("static", "INTEGER", lambda i: A.Static(A.INT, i))
_r("static", "FLOAT", lambda f: A.Static(A.FLOAT, f))
_r("static", "TRUE", lambda _t: A.TRUE)
_r("static", "FALSE", lambda _t: A.FALSE)
_r("static", "DURATION", lambda d: A.Static(A.DURATION, int(d)))
_r("static", "STATUS_OK", lambda _t: A.Static(A.STATUS, 1))
_r("static", "STATUS_ERROR", lambda _t: A.Static(A.STATUS, 0))
_r("static", "STATUS_UNSET", lambda _t: A.Static(A.STATUS, 2))
for _i, _tok in enumerate(["KIND_UNSPECIFIED", "KIND_INTERNAL", "KIND_SERVER", "KIND_CLIENT",
                           "KIND_PRODUCER", "KIND_CONSUMER"]):  # fmt: skip
    _k = {"KIND_UNSPECIFIED": 0, "KIND_INTERNAL": 1, "KIND_CLIENT": 2, "KIND_SERVER": 3,
          "KIND_PRODUCER": 4, "KIND_CONSUMER": 5}[_tok]  # fmt: skip
    _r("static", _tok, (lambda k: lambda _t: A.Static(A.KIND, k))(_k))

# --- intrinsics and attributes -------------------------------------------------------------------
for _tok, _name in [("IDURATION", "duration"), ("CHILDCOUNT", "childCount"), ("NAME", "name"),
                    ("STATUS", "status"), ("STATUS_MESSAGE", "statusMessage"), ("KIND", "kind"),
                    ("PARENT", "parent"), ("ROOTNAME", "rootName"),
                    ("ROOTSERVICENAME", "rootServiceName"), ("TRACEDURATION", "traceDuration"),
                    ("NESTEDSETLEFT", "nestedSetLeft"), ("NESTEDSETRIGHT", "nestedSetRight"),
                    ("NESTEDSETPARENT", "nestedSetParent")]:  # fmt: skip
    _r("intrinsicField", _tok, (lambda n: lambda _t: A.intrinsic(n))(_name))
for _body, _name in [
    ("TRACE_COLON IDURATION", "traceDuration"), ("TRACE_COLON ROOTNAME", "rootName"),
    ("TRACE_COLON ROOTSERVICE", "rootServiceName"), ("TRACE_COLON ID", "trace:id"),
    ("SPAN_COLON IDURATION", "duration"), ("SPAN_COLON NAME", "name"),
    ("SPAN_COLON KIND", "kind"), ("SPAN_COLON STATUS", "status"),
    ("SPAN_COLON STATUS_MESSAGE", "statusMessage"), ("SPAN_COLON ID", "span:id"),
    ("SPAN_COLON PARENT_ID", "span:parentID"), ("EVENT_COLON NAME", "event:name"),
    ("EVENT_COLON TIMESINCESTART", "event:timeSinceStart"),
    ("LINK_COLON TRACE_ID", "link:traceID"), ("LINK_COLON SPAN_ID", "link:spanID"),
    ("INSTRUMENTATION_COLON NAME", "instrumentation:name"),
    ("INSTRUMENTATION_COLON VERSION", "instrumentation:version"),
]:  # fmt: skip
    _r("scopedIntrinsicField", _body, (lambda n: lambda *_: A.intrinsic(n))(_name))
_r("attributeField", "DOT IDENTIFIER END_ATTRIBUTE", lambda _d, n, _e: A.Attribute(n))
for _tok, _scope in [("RESOURCE_DOT", "resource"), ("SPAN_DOT", "span")]:
    _r("attributeField", f"{_tok} IDENTIFIER END_ATTRIBUTE",
       (lambda s: lambda _d, n, _e: A.scoped_attribute(s, False, n))(_scope))  # fmt: skip
_r("attributeField", "PARENT_DOT IDENTIFIER END_ATTRIBUTE",
   lambda _d, n, _e: A.scoped_attribute("none", True, n))  # fmt: skip
_r("attributeField", "PARENT_DOT RESOURCE_DOT IDENTIFIER END_ATTRIBUTE",
   lambda _p, _d, n, _e: A.scoped_attribute("resource", True, n))  # fmt: skip
_r("attributeField", "PARENT_DOT SPAN_DOT IDENTIFIER END_ATTRIBUTE",
   lambda _p, _d, n, _e: A.scoped_attribute("span", True, n))  # fmt: skip
for _tok, _scope in [("EVENT_DOT", "event"), ("LINK_DOT", "link"),
                     ("INSTRUMENTATION_DOT", "instrumentation")]:  # fmt: skip
    _r("attributeField", f"{_tok} IDENTIFIER END_ATTRIBUTE",
       (lambda s: lambda _d, n, _e: A.scoped_attribute(s, False, n))(_scope))  # fmt: skip


def _build() -> Grammar:
    nt_names: list[str] = []
    for lhs, _body, _act in _RULES:
        if lhs not in nt_names:
            nt_names.append(lhs)
    n_terminals = len(TOKEN_NAMES)
    nt_base = 1000
    nt_num = {name: nt_base + i for i, name in enumerate(nt_names)}
    token_prec: dict[int, tuple[int, str]] = {}
    for level, (assoc, names) in enumerate(_PRECEDENCE, start=1):
        for n in names.split():
            token_prec[TOKEN_NUMBER[n]] = (level, assoc)
    accept = nt_base + len(nt_names)
    prods = [Production(accept, (nt_num["root"], 1), 0, None)]
    for lhs, body, action in _RULES:
        rhs: list[int] = []
        prec = 0
        for sym in body.split():
            if sym in nt_num:
                rhs.append(nt_num[sym])
            else:
                tok = TOKEN_NUMBER[sym]
                rhs.append(tok)
                prec = token_prec.get(tok, (0, ""))[0]  # goyacc: the rule's last token
        prods.append(Production(nt_num[lhs], tuple(rhs), prec, action))
    return Grammar(n_terminals, token_prec, prods, [*nt_names, "$accept"], nt_base)


GRAMMAR = _build()
