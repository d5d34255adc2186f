"""TraceQL syntax tree: typed values, field expressions, pipelines, their checks and texts.

Facts followed (grafana/tempo v2.9.0): ``pkg/traceql/ast.go`` (node kinds, the constant
folding that ``newBinaryOperation``/``newUnaryOperation`` do while parsing, value equality and
ordering), ``ast_validate.go`` (the checks and their messages), ``ast_stringer.go`` (how nodes
print inside those messages), ``ast_execute.go`` (how a field expression evaluates on a span),
``enum_operators.go``, ``enum_statics.go``, ``enum_attributes.go`` and ``enum_aggregates.go``
(types, operators and the names they print). The code is the stand-in's own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from tempo_standin.traceql.lexer import float_bits, go_duration_string

# --- types (StaticType, in Tempo's order: min()/max() order mixed types by this number) -------
NIL, SPANSET, ATTRIBUTE, INT, FLOAT, STRING, BOOL = 0, 1, 2, 3, 4, 5, 6
INT_ARR, FLOAT_ARR, STR_ARR, BOOL_ARR, DURATION, STATUS, KIND = 7, 8, 9, 10, 11, 12, 13
_NUMERIC = (INT, FLOAT, DURATION)
_ARRAY_ELEM = {INT_ARR: INT, FLOAT_ARR: FLOAT, STR_ARR: STRING, BOOL_ARR: BOOL}

# Status and Kind as Tempo numbers them (enum_statics.go).
STATUS_NAMES = ("error", "ok", "unset")
KIND_NAMES = ("unspecified", "internal", "client", "server", "producer", "consumer")

_I64 = 2**64


def wrap64(n: int) -> int:
    """Go int (64-bit) overflow."""
    n %= _I64
    return n - _I64 if n >= 2**63 else n


class ValidationError(Exception):
    """A query that parses but that Tempo's validator refuses (400)."""


class Unsupported(ValidationError):
    """Tempo's ``unsupportedError``: "<feature> not yet supported"."""

    def __init__(self, feature: str) -> None:
        super().__init__(f"{feature} not yet supported")


class EvalError(Exception):
    """An error while evaluating a query on data (Tempo fails the query)."""


class GoPanic(Exception):
    """A Go runtime panic inside the parser (Parse() turns it into ``parse error : ...``)."""


# --- float formatting (strconv.FormatFloat 'g' -1 and fmt %v) ----------------------------------


def _go_g(f: float, eprec_shortest: int) -> str:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    neg = f < 0 or (f == 0 and math.copysign(1, f) < 0)
    if f == 0:
        return "-0" if neg else "0"
    _sign, digits_t, exp = Decimal(repr(abs(f))).as_tuple()
    digits = "".join(map(str, digits_t)).rstrip("0") or "0"
    assert isinstance(exp, int)
    nd = len(digits)
    dp = len("".join(map(str, digits_t))) + exp  # decimal point position
    x = dp - 1
    out: str
    if x < -4 or x >= eprec_shortest:
        mant = digits[0] + ("." + digits[1:] if nd > 1 else "")
        e = x
        out = f"{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    elif dp <= 0:
        out = "0." + "0" * (-dp) + digits
    elif dp >= nd:
        out = digits + "0" * (dp - nd)
    else:
        out = digits[:dp] + "." + digits[dp:]
    return ("-" if neg else "") + out


def format_float_g(f: float) -> str:
    """``strconv.FormatFloat(f, 'g', -1, 64)``."""
    return _go_g(f, 6)


def format_float_v(f: float) -> str:
    """``fmt.Sprintf("%v", f)`` for a float64."""
    return _go_g(f, 21)


# --- values -------------------------------------------------------------------------------------


class Static:
    """A typed TraceQL value (``Static``)."""

    __slots__ = ("t", "v")

    def __init__(self, t: int, v: Any) -> None:
        self.t = t
        self.v = v

    def __repr__(self) -> str:
        return f"Static({self.t}, {self.v!r})"

    # ast.go Static.Float: ints, floats and durations as float64, else NaN
    def as_float(self) -> float:
        if self.t in (INT, DURATION):
            return float(self.v)
        if self.t == FLOAT:
            return float(self.v)
        return math.nan

    def as_bool(self) -> tuple[bool, bool]:
        """(value, is a boolean) like ``Static.Bool``."""
        if self.t == BOOL:
            return bool(self.v), True
        return False, False

    def equals(self, o: Static) -> bool:
        s_t, o_t = self.t, o.t
        if s_t == NIL or o_t == NIL:
            return False
        if s_t in (INT, DURATION):
            if o_t in (INT, DURATION):
                return bool(self.v == o.v)
            if o_t == STATUS:
                return s_t == INT and bool(self.v == o.v)
            if o_t == FLOAT:
                return float(self.v) == float(o.v)
            return False
        if s_t == STATUS:
            return o_t in (INT, STATUS) and self.v == o.v
        if s_t == FLOAT:
            return bool(self.v == o.as_float())
        if s_t in (KIND, BOOL, STRING, INT_ARR, FLOAT_ARR, BOOL_ARR, STR_ARR):
            return s_t == o_t and self.v == o.v
        return False

    def not_equals(self, o: Static) -> bool:
        if self.t == NIL or o.t == NIL:
            return False
        return not self.equals(o)

    def compare(self, o: Static) -> int:
        """``Static.compare`` (min()/max() aggregates)."""
        if self.t != o.t:
            if self.t in _NUMERIC and o.t in _NUMERIC:
                a, b = self.as_float(), o.as_float()
                return (a > b) - (a < b)
            return (self.t > o.t) - (self.t < o.t)
        if self.t == STRING:
            a2, b2 = str(self.v).encode(), str(o.v).encode()
            return (a2 > b2) - (a2 < b2)
        if self.t in (INT_ARR, FLOAT_ARR, STR_ARR, BOOL_ARR):
            return int(self.v > o.v) - int(self.v < o.v)
        if self.t == NIL:
            return 0
        if self.t == FLOAT:  # Tempo compares the IEEE bits as int64 here
            a3, b3 = float_bits(self.v), float_bits(o.v)
            return (a3 > b3) - (a3 < b3)
        a4, b4 = int(self.v), int(o.v)
        return (a4 > b4) - (a4 < b4)

    def map_key(self) -> tuple[int, Any]:
        return (self.t, self.v)

    def string(self, quotes: bool = True) -> str:
        """``Static.EncodeToString``."""
        t, v = self.t, self.v
        if t == NIL:
            return "nil"
        if t == INT:
            return str(v)
        if t == FLOAT:
            f = format_float_g(v)
            if "e" not in f and "." not in f:
                f += ".0"
            return f
        if t == STRING:
            return "`" + str(v) + "`" if quotes else str(v)
        if t == BOOL:
            return "true" if v else "false"
        if t == DURATION:
            return go_duration_string(v)
        if t == STATUS:
            return STATUS_NAMES[v] if 0 <= v < 3 else f"status({v})"
        if t == KIND:
            return KIND_NAMES[v] if 0 <= v < 6 else f"kind({v})"
        if t == STR_ARR:
            return "[" + ", ".join(f'"{x}"' for x in v) + "]"
        if t == FLOAT_ARR:
            return "[" + ", ".join(format_float_v(x) for x in v) + "]"
        if t == BOOL_ARR:
            return "[" + ", ".join("true" if x else "false" for x in v) + "]"
        if t == INT_ARR:
            return "[" + ", ".join(str(x) for x in v) + "]"
        return f"static({t})"

    # FieldExpression protocol
    def implied_type(self) -> int:
        return self.t

    def references_span(self) -> bool:
        return False

    def validate(self) -> None:
        return None

    def text(self) -> str:
        return self.string(True)

    def execute(self, span: Any) -> Static:
        return self


NIL_STATIC = Static(NIL, None)
TRUE = Static(BOOL, True)
FALSE = Static(BOOL, False)


class MultiStatic(Static):
    """Several values of one attribute on a span (its events or links). Comparisons with it
    are true when any value compares true: Tempo's storage layer only hands the engine the
    event/link values that satisfy the condition pushed down to it."""

    __slots__ = ("values",)

    def __init__(self, values: Sequence[Static]) -> None:
        super().__init__(values[0].t, values[0].v)
        self.values = tuple(values)


def static_from_value(v: Any) -> Static:
    """An attribute value as TraceQL sees it (vparquet4 keeps strings, ints, doubles, bools and
    homogeneous arrays of those; anything else is absent)."""
    if isinstance(v, bool):
        return Static(BOOL, v)
    if isinstance(v, int):
        return Static(INT, wrap64(v))
    if isinstance(v, float):
        return Static(FLOAT, v)
    if isinstance(v, str):
        return Static(STRING, v)
    if isinstance(v, list | tuple):
        if not v:
            return NIL_STATIC
        if all(isinstance(x, str) for x in v):
            return Static(STR_ARR, tuple(v))
        if all(isinstance(x, bool) for x in v):
            return Static(BOOL_ARR, tuple(v))
        if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return Static(INT_ARR, tuple(wrap64(x) for x in v))
        if all(isinstance(x, float) for x in v):
            return Static(FLOAT_ARR, tuple(v))
    return NIL_STATIC


# --- operators (enum_operators.go) ----------------------------------------------------------------

BOOLEAN_OPS = frozenset({"||", "&&", "=", "!=", "=~", "!~", ">", ">=", "<", "<=", "!", "exists"})
_NUM_OPS = frozenset({"+", "-", "*", "/", "%", "^", "=", "!=", ">", ">=", "<", "<="})
_STR_OPS = frozenset({"=", "!=", "=~", "!~", ">", ">=", "<", "<="})


def binary_type_valid(op: str, t: int) -> bool:
    if t == ATTRIBUTE:
        return True
    if t in (BOOL, BOOL_ARR):
        return op in ("&&", "||", "=", "!=")
    if t in (FLOAT, FLOAT_ARR, INT, INT_ARR, DURATION):
        return op in _NUM_OPS
    if t in (STRING, STR_ARR):
        return op in _STR_OPS
    if t in (NIL, STATUS, KIND):
        return op in ("=", "!=")
    return False


def matching_operand(a: int, b: int) -> bool:
    if ATTRIBUTE in (a, b) or a == b:
        return True
    if a in _NUMERIC and b in _NUMERIC:
        return True
    if a == NIL or b == NIL:
        return True
    return matching_array_element(a, b)


def matching_array_element(a: int, b: int) -> bool:
    if a in _ARRAY_ELEM:
        return matching_operand(_ARRAY_ELEM[a], b)
    if b in _ARRAY_ELEM:
        return matching_operand(_ARRAY_ELEM[b], a)
    return False


def unary_type_valid(op: str, t: int) -> bool:
    if t == ATTRIBUTE:
        return True
    if op == "-":
        return t in _NUMERIC
    if op == "!":
        return t == BOOL
    return op == "exists"


# --- regular expressions ------------------------------------------------------------------------


def compile_regex(text: str) -> re.Pattern[str]:
    """A Go RE2 regex as Python's ``re``, fully anchored with ``.`` matching newlines, as
    Prometheus's FastRegexMatcher (Tempo's pkg/regexp) wraps it: ``^(?s:...)$``. Raises
    ``re.error`` for what RE2 rejects and Python would accept (lookaround, backreferences)."""
    if re.search(r"\(\?(?:=|!|<=|<!)", text) or re.search(r"(?<!\\)\\[1-9]", text):
        raise re.error("unsupported Perl syntax")
    py = text.replace(r"\z", r"\Z")
    return re.compile(r"(?s:" + py + r")\Z")


# --- field expressions ----------------------------------------------------------------------------

# Intrinsic names as Tempo prints them (Intrinsic.String()), and their types.
INTRINSIC_TYPES: dict[str, int] = {
    "duration": DURATION,
    "childCount": INT,
    "name": STRING,
    "status": STATUS,
    "statusMessage": STRING,
    "kind": KIND,
    "event:name": STRING,
    "event:timeSinceStart": DURATION,
    "link:traceID": STRING,
    "link:spanID": STRING,
    "parent": NIL,
    "traceDuration": DURATION,
    "rootServiceName": STRING,
    "rootName": STRING,
    "nestedSetLeft": INT,
    "nestedSetRight": INT,
    "nestedSetParent": INT,
    "trace:id": STRING,
    "span:id": STRING,
    "span:parentID": STRING,
    "instrumentation:name": STRING,
    "instrumentation:version": STRING,
}


class Attribute:
    """``Attribute``: scope is none/resource/span/event/link/instrumentation; ``intrinsic`` is
    Tempo's intrinsic name or None."""

    __slots__ = ("intrinsic", "name", "parent", "scope")

    def __init__(
        self, name: str, scope: str = "none", parent: bool = False, intrinsic: str | None = None
    ) -> None:
        self.name = name
        self.scope = scope
        self.parent = parent
        self.intrinsic = intrinsic

    def key(self) -> tuple[str, str, bool, str | None]:
        return (self.name, self.scope, self.parent, self.intrinsic)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attribute) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        return f"Attribute({self.text()})"

    def implied_type(self) -> int:
        if self.intrinsic is None:
            return ATTRIBUTE
        return INTRINSIC_TYPES.get(self.intrinsic, ATTRIBUTE)

    def references_span(self) -> bool:
        return True

    def validate(self) -> None:
        if self.parent:
            raise Unsupported("parent")
        if self.intrinsic in ("parent", "childCount"):
            raise Unsupported(f"intrinsic ({self.intrinsic})")

    def text(self) -> str:
        scopes = []
        if self.parent:
            scopes.append("parent")
        if self.scope != "none":
            scopes.append(self.scope)
        att = self.intrinsic if self.intrinsic is not None else self.name
        scope = ".".join(scopes) + "." if scopes else ""
        if not scope and self.intrinsic is None and att:
            scope = "."
        return scope + att

    def execute(self, span: Any) -> Static:
        result: Static = span.attribute_for(self)
        return result


def intrinsic(name: str) -> Attribute:
    """``NewIntrinsic``."""
    return Attribute(name, "none", False, name)


def scoped_attribute(scope: str, parent: bool, name: str) -> Attribute:
    """``NewScopedAttribute``: an unscoped, non-parent name may be an intrinsic."""
    intr = None
    if scope == "none" and not parent and name in _INTRINSIC_FROM_STRING:
        intr = _INTRINSIC_FROM_STRING[name]
    return Attribute(name, scope, parent, intr)


_INTRINSIC_FROM_STRING = {
    "duration": "duration", "name": "name", "status": "status",
    "statusMessage": "statusMessage", "kind": "kind", "childCount": "childCount",
    "event:name": "event:name", "event:timeSinceStart": "event:timeSinceStart",
    "link:spanID": "link:spanID", "link:traceID": "link:traceID", "parent": "parent",
    "rootServiceName": "rootServiceName", "rootName": "rootName",
    "traceDuration": "traceDuration", "trace:id": "trace:id", "span:id": "span:id",
    "span:parentID": "span:parentID", "span:status": "status",
    "span:statusMessage": "statusMessage", "span:duration": "duration", "span:name": "name",
    "span:kind": "kind", "trace:rootName": "rootName", "trace:rootService": "rootServiceName",
    "trace:duration": "traceDuration", "instrumentation:name": "instrumentation:name",
    "instrumentation:version": "instrumentation:version", "nestedSetLeft": "nestedSetLeft",
    "nestedSetRight": "nestedSetRight", "nestedSetParent": "nestedSetParent",
}  # fmt: skip


def intrinsic_from_string(name: str) -> str | None:
    """``intrinsicFromString`` (the tag endpoints' identifiers)."""
    return _INTRINSIC_FROM_STRING.get(name)


def _wrap(e: Any) -> str:
    if isinstance(e, (Static, Attribute)):
        return str(e.text())
    return "(" + str(e.text()) + ")"


def binary_text(op: str, lhs: Any, rhs: Any) -> str:
    return _wrap(lhs) + " " + op + " " + _wrap(rhs)


class BinaryOperation:
    __slots__ = ("lhs", "op", "regex", "rhs")

    def __init__(self, op: str, lhs: Any, rhs: Any) -> None:
        self.op = op
        self.lhs = lhs
        self.rhs = rhs
        self.regex: re.Pattern[str] | None = None

    def implied_type(self) -> int:
        if self.op in BOOLEAN_OPS:
            return BOOL
        t = int(self.lhs.implied_type())
        if t != ATTRIBUTE:
            return t
        return int(self.rhs.implied_type())

    def references_span(self) -> bool:
        return bool(self.lhs.references_span() or self.rhs.references_span())

    def text(self) -> str:
        return binary_text(self.op, self.lhs, self.rhs)

    def validate(self) -> None:
        self.lhs.validate()
        self.rhs.validate()
        lt, rt = self.lhs.implied_type(), self.rhs.implied_type()
        if not matching_operand(lt, rt):
            raise ValidationError(f"binary operations must operate on the same type: {self.text()}")
        if rt == NIL and self.op == "=":
            raise Unsupported("{.a = nil}")
        if not (binary_type_valid(self.op, lt) and binary_type_valid(self.op, rt)):
            raise ValidationError(f"illegal operation for the given types: {self.text()}")
        if self.op in ("=~", "!~"):
            rhs_text = self.rhs.string(False) if isinstance(self.rhs, Static) else self.rhs.text()
            try:
                compile_regex(rhs_text)
            except re.error:
                raise ValidationError(f"invalid regex: {self.rhs.text()}") from None

    def execute(self, span: Any) -> Static:
        lhs = self.lhs.execute(span)
        op = self.op
        if lhs.t == BOOL:
            if op == "&&" and not lhs.v:
                return FALSE
            if op == "||" and lhs.v:
                return TRUE
        rhs = self.rhs.execute(span)
        if isinstance(lhs, MultiStatic) or isinstance(rhs, MultiStatic):
            if op in BOOLEAN_OPS:
                lvals = lhs.values if isinstance(lhs, MultiStatic) else (lhs,)
                rvals = rhs.values if isinstance(rhs, MultiStatic) else (rhs,)
                last = FALSE
                for a in lvals:
                    for b in rvals:
                        last = self._apply(a, b)
                        if last.t == BOOL and last.v:
                            return last
                return last
            lhs = Static(lhs.t, lhs.v)
            rhs = Static(rhs.t, rhs.v)
        return self._apply(lhs, rhs)

    def _apply(self, lhs: Static, rhs: Static) -> Static:
        op = self.op
        lt, rt = lhs.t, rhs.t
        if lt == NIL or rt == NIL:
            return FALSE  # nil only passes the type checks for = and !=, and never equals
        if not matching_operand(lt, rt):
            return FALSE
        if not (binary_type_valid(op, lt) and binary_type_valid(op, rt)):
            return FALSE
        if lt == STRING and rt == STRING:
            a, b = lhs.v, rhs.v
            if op == ">":
                return TRUE if a.encode() > b.encode() else FALSE
            if op == ">=":
                return TRUE if a.encode() >= b.encode() else FALSE
            if op == "<":
                return TRUE if a.encode() < b.encode() else FALSE
            if op == "<=":
                return TRUE if a.encode() <= b.encode() else FALSE
            if op in ("=~", "!~"):
                if self.regex is None:
                    try:
                        self.regex = compile_regex(b)
                    except re.error as exc:
                        raise EvalError(f"error parsing regexp: {exc}") from None
                hit = self.regex.match(a) is not None
                return TRUE if hit == (op == "=~") else FALSE
        if lt == INT and rt == INT:
            a2, b2 = lhs.v, rhs.v
            if op == "+":
                return Static(INT, wrap64(a2 + b2))
            if op == "-":
                return Static(INT, wrap64(a2 - b2))
            if op == "/":
                if b2 == 0:
                    raise GoPanic("runtime error: integer divide by zero")
                q = abs(a2) // abs(b2)
                return Static(INT, wrap64(q if (a2 < 0) == (b2 < 0) else -q))
            if op == "%":
                if b2 == 0:
                    raise GoPanic("runtime error: integer divide by zero")
                r = abs(a2) % abs(b2)
                return Static(INT, r if a2 >= 0 else -r)
            if op == "*":
                return Static(INT, wrap64(a2 * b2))
            if op == ">":
                return TRUE if a2 > b2 else FALSE
            if op == ">=":
                return TRUE if a2 >= b2 else FALSE
            if op == "<":
                return TRUE if a2 < b2 else FALSE
            if op == "<=":
                return TRUE if a2 <= b2 else FALSE
            if op == "^":
                # ast_execute.go calls intPow(rhs, lhs): the exponent is the left operand
                return Static(INT, wrap64(pow(b2, a2, _I64)) if a2 > 0 else 1)
        if lt == BOOL and rt == BOOL:
            if op == "&&":
                return TRUE if lhs.v and rhs.v else FALSE
            if op == "||":
                return TRUE if lhs.v or rhs.v else FALSE
        if matching_array_element(lt, rt):
            if op not in BOOLEAN_OPS:
                raise EvalError("unsupported operation")
            if rt in _ARRAY_ELEM:
                elem_op = _FLIP.get(op, op)
                arr, other, elem_t = rhs, lhs, _ARRAY_ELEM[rt]
            else:
                elem_op = op
                arr, other, elem_t = lhs, rhs, _ARRAY_ELEM[lt]
            inner = BinaryOperation(elem_op, NIL_STATIC, other)
            res = NIL_STATIC
            for x in arr.v:
                res = inner._apply(Static(elem_t, x), other)
                if res.t == BOOL and res.v:
                    break
            return res
        if op == "+":
            return Static(FLOAT, lhs.as_float() + rhs.as_float())
        if op == "-":
            return Static(FLOAT, lhs.as_float() - rhs.as_float())
        if op == "/":
            a3, b3 = lhs.as_float(), rhs.as_float()
            return Static(FLOAT, _fdiv(a3, b3))
        if op == "%":
            a3, b3 = lhs.as_float(), rhs.as_float()
            return Static(FLOAT, math.fmod(a3, b3) if b3 != 0 and math.isfinite(a3) else math.nan)
        if op == "*":
            return Static(FLOAT, lhs.as_float() * rhs.as_float())
        if op == ">":
            return TRUE if lhs.as_float() > rhs.as_float() else FALSE
        if op == ">=":
            return TRUE if lhs.as_float() >= rhs.as_float() else FALSE
        if op == "<":
            return TRUE if lhs.as_float() < rhs.as_float() else FALSE
        if op == "<=":
            return TRUE if lhs.as_float() <= rhs.as_float() else FALSE
        if op == "^":
            try:
                return Static(FLOAT, math.pow(lhs.as_float(), rhs.as_float()))
            except (OverflowError, ValueError):
                return Static(FLOAT, math.nan)
        if type(rhs) is not Static and type(lhs) is Static:
            lhs, rhs = rhs, lhs  # let a special value (an ID) decide equality either way round
        if op == "=":
            return TRUE if lhs.equals(rhs) else FALSE
        if op == "!=":
            return TRUE if lhs.not_equals(rhs) else FALSE
        raise EvalError("unexpected operator " + op)


_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">="}


def _fdiv(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1, b)
    return a / b


class UnaryOperation:
    __slots__ = ("expr", "op")

    def __init__(self, op: str, expr: Any) -> None:
        self.op = op  # "-", "!" or "exists"
        self.expr = expr

    def implied_type(self) -> int:
        if self.op == "exists":
            return BOOL
        return int(self.expr.implied_type())

    def references_span(self) -> bool:
        return bool(self.expr.references_span())

    def text(self) -> str:
        if self.op == "exists":
            return _wrap(self.expr) + " != nil"
        return self.op + _wrap(self.expr)

    def validate(self) -> None:
        self.expr.validate()
        t = self.expr.implied_type()
        if t == ATTRIBUTE:
            return
        if not unary_type_valid(self.op, t):
            raise ValidationError(f"illegal operation for the given type: {self.text()}")

    def execute(self, span: Any) -> Static:
        s = self.expr.execute(span)
        if self.op == "!":
            if s.t != BOOL:
                raise EvalError(
                    f"expression ({self.text()}) expected a boolean, but got {_type_name(s.t)}"
                )
            return FALSE if s.v else TRUE
        if self.op == "-":
            if s.t not in _NUMERIC:
                raise EvalError(
                    f"expression ({self.text()}) expected a numeric, but got {_type_name(s.t)}"
                )
            if s.t == FLOAT:
                return Static(FLOAT, -s.v)
            return Static(s.t, wrap64(-s.v))
        return TRUE if s.t != NIL else FALSE


def _type_name(t: int) -> str:
    return [
        "TypeNil",
        "TypeSpanset",
        "TypeAttribute",
        "TypeInt",
        "TypeFloat",
        "TypeString",
        "TypeBoolean",
        "TypeIntArray",
        "TypeFloatArray",
        "TypeStringArray",
        "TypeBooleanArray",
        "TypeDuration",
        "TypeStatus",
        "TypeKind",
    ][t]


def new_binary(op: str, lhs: Any, rhs: Any) -> Any:
    """``newBinaryOperation``: an expression over constants only is folded while parsing."""
    b = BinaryOperation(op, lhs, rhs)
    if not b.references_span():
        try:
            b.validate()
        except ValidationError:
            return b
        try:
            return b.execute(None)
        except EvalError:
            return b
    return b


def new_unary(op: str, e: Any) -> Any:
    """``newUnaryOperation``: folded like ``new_binary``."""
    u = UnaryOperation(op, e)
    if not u.references_span():
        try:
            u.validate()
        except ValidationError:
            return u
        try:
            return u.execute(None)
        except EvalError:
            return u
    return u


# --- pipeline elements ----------------------------------------------------------------------------


class SpansetFilter:
    __slots__ = ("expr",)

    def __init__(self, expr: Any) -> None:
        self.expr = expr

    def text(self) -> str:
        return "{ " + str(self.expr.text()) + " }"

    def validate(self) -> None:
        self.expr.validate()
        t = self.expr.implied_type()
        if t not in (ATTRIBUTE, BOOL):
            raise ValidationError(
                f"span filter field expressions must resolve to a boolean: {self.text()}"
            )


class SpansetOperation:
    __slots__ = ("lhs", "op", "rhs")

    def __init__(self, op: str, lhs: Any, rhs: Any) -> None:
        self.op = op  # "&&", "||", ">", "<", ">>", "<<", "~", "!>", ..., "&~"
        self.lhs = lhs
        self.rhs = rhs

    def text(self) -> str:
        return binary_text(self.op, self.lhs, self.rhs)

    def validate(self) -> None:
        self.lhs.validate()
        self.rhs.validate()


class Pipeline:
    __slots__ = ("elements",)

    def __init__(self, elements: Sequence[Any]) -> None:
        self.elements = list(elements)

    def add(self, e: Any) -> Pipeline:
        return Pipeline([*self.elements, e])

    def text(self) -> str:
        return "|".join(str(e.text()) for e in self.elements)

    def validate(self) -> None:
        for e in self.elements:
            e.validate()

    def implied_type(self) -> int:
        if self.elements and isinstance(self.elements[-1], Aggregate):
            return self.elements[-1].implied_type()
        return SPANSET


class GroupOperation:
    __slots__ = ("expr",)

    def __init__(self, expr: Any) -> None:
        self.expr = expr

    def text(self) -> str:
        return "by(" + str(self.expr.text()) + ")"

    def validate(self) -> None:
        if not self.expr.references_span():
            raise ValidationError(
                f"grouping field expressions must reference the span: {self.text()}"
            )
        self.expr.validate()


class CoalesceOperation:
    __slots__ = ()

    def text(self) -> str:
        return "coalesce()"

    def validate(self) -> None:
        return None


class SelectOperation:
    __slots__ = ("attrs",)

    def __init__(self, attrs: Sequence[Attribute]) -> None:
        self.attrs = list(attrs)

    def text(self) -> str:
        return "select(" + ", ".join(a.text() for a in self.attrs) + ")"

    def validate(self) -> None:
        for a in self.attrs:
            a.validate()


class Aggregate:
    __slots__ = ("expr", "op")

    def __init__(self, op: str, expr: Any | None) -> None:
        self.op = op  # count avg max min sum
        self.expr = expr

    def text(self) -> str:
        if self.expr is None:
            return self.op + "()"
        return self.op + "(" + str(self.expr.text()) + ")"

    def implied_type(self) -> int:
        if self.op == "count" or self.expr is None:
            return INT
        return int(self.expr.implied_type())

    def validate(self) -> None:
        if self.expr is None:
            return
        self.expr.validate()
        t = self.expr.implied_type()
        if t != ATTRIBUTE and t not in _NUMERIC:
            raise ValidationError(
                f"aggregate field expressions must resolve to a number type: {self.text()}"
            )
        if not self.expr.references_span():
            raise ValidationError(
                f"aggregate field expressions must reference the span: {self.text()}"
            )


class ScalarOperation:
    __slots__ = ("lhs", "op", "rhs")

    def __init__(self, op: str, lhs: Any, rhs: Any) -> None:
        self.op = op
        self.lhs = lhs
        self.rhs = rhs

    def text(self) -> str:
        return binary_text(self.op, self.lhs, self.rhs)

    def implied_type(self) -> int:
        if self.op in BOOLEAN_OPS:
            return BOOL
        t = int(self.lhs.implied_type())
        if t != ATTRIBUTE:
            return t
        return int(self.rhs.implied_type())

    def validate(self) -> None:
        self.lhs.validate()
        self.rhs.validate()
        lt, rt = self.lhs.implied_type(), self.rhs.implied_type()
        if not matching_operand(lt, rt):
            raise ValidationError(f"binary operations must operate on the same type: {self.text()}")
        if not (binary_type_valid(self.op, lt) and binary_type_valid(self.op, rt)):
            raise ValidationError(f"illegal operation for the given types: {self.text()}")


class ScalarFilter:
    __slots__ = ("lhs", "op", "rhs")

    def __init__(self, op: str, lhs: Any, rhs: Any) -> None:
        self.op = op
        self.lhs = lhs
        self.rhs = rhs

    def text(self) -> str:
        return binary_text(self.op, self.lhs, self.rhs)

    def validate(self) -> None:
        self.lhs.validate()
        self.rhs.validate()
        lt, rt = self.lhs.implied_type(), self.rhs.implied_type()
        if not matching_operand(lt, rt):
            raise ValidationError(f"binary operations must operate on the same type: {self.text()}")
        if not (binary_type_valid(self.op, lt) and binary_type_valid(self.op, rt)):
            raise ValidationError(f"illegal operation for the given types: {self.text()}")
        if not isinstance(self.lhs, Aggregate):
            raise Unsupported("scalar filter lhs of type (%v)")
        if not isinstance(self.rhs, Static):
            raise Unsupported("scalar filter rhs of type (%v)")


# --- metrics --------------------------------------------------------------------------------------

MAX_GROUP_BYS = 5  # engine_metrics.go maxGroupBys


class MetricsAggregate:
    __slots__ = ("attr", "by", "floats", "op")

    def __init__(
        self,
        op: str,
        attr: Attribute | None = None,
        floats: Sequence[float] = (),
        by: Sequence[Attribute] | None = None,
    ) -> None:
        self.op = op  # rate count_over_time min/max/avg/sum_over_time quantile_/histogram_over_time
        self.attr = attr
        self.floats = tuple(floats)
        self.by = list(by or ())

    def text(self) -> str:
        s = self.op + "("
        if self.attr is not None:
            s += self.attr.text()
        if self.op == "quantile_over_time":
            s += "," + ",".join(f"{f:.5f}" for f in self.floats)
        s += ")"
        if self.by:
            s += "by(" + ",".join(b.text() for b in self.by) + ")"
        return s

    def validate(self) -> None:
        n = len(self.by)
        if self.op == "avg_over_time":
            if n >= MAX_GROUP_BYS:
                raise Unsupported(f"metrics group by {n} values")
            return
        if self.op in ("histogram_over_time", "quantile_over_time") and n >= MAX_GROUP_BYS:
            raise Unsupported(f"metrics group by {n} values")
        if self.op == "quantile_over_time":
            for q in self.floats:
                if q < 0 or q > 1:
                    raise ValidationError(f"quantile must be between 0 and 1: {format_float_v(q)}")
        if n > MAX_GROUP_BYS:
            raise Unsupported(f"metrics group by {n} values")


class MetricsCompare:
    __slots__ = ("end", "filter", "start", "top_n")

    def __init__(self, f: SpansetFilter, top_n: int, start: int, end: int) -> None:
        self.filter = f
        self.top_n = top_n
        self.start = start
        self.end = end

    def text(self) -> str:
        return "compare(" + self.filter.text() + "}"

    def validate(self) -> None:
        self.filter.validate()
        if self.top_n <= 0:
            raise ValidationError("compare() top number of values must be integer greater than 0")
        if self.start == 0 and self.end == 0:
            return
        if self.start <= 0 or self.end <= 0:
            raise ValidationError("compare() timestamps must be positive integer unix nanoseconds")
        if self.end <= self.start:
            raise ValidationError("compare() end timestamp must be greater than start timestamp")


class TopKBottomK:
    __slots__ = ("limit", "op")

    def __init__(self, op: str, limit: int) -> None:
        self.op = op  # topk | bottomk
        self.limit = limit

    def text(self) -> str:
        return f"{self.op}({self.limit})"

    def validate(self) -> None:
        if self.limit <= 0:
            raise ValidationError("limit must be greater than 0")


class Hints:
    __slots__ = ("hints",)

    def __init__(self, hints: Sequence[tuple[str, Static]]) -> None:
        self.hints = list(hints)

    def get(self, name: str, t: int, allow_unsafe: bool = False) -> Static | None:
        """``Hints.Get``: only hints of the expected type count; unsafe hints need the
        tenant's ``unsafe_query_hints`` (off by default)."""
        safe = name in ("sample", "trace_sample", "span_sample", "exemplars", "most_recent")
        if not safe and not allow_unsafe:
            return None
        for n, v in self.hints:
            if n == name and v.t == t:
                return v
        return None

    def text(self) -> str:
        return "with(" + ",".join(n + "=" + v.text() for n, v in self.hints) + ")"


class RootExpr:
    __slots__ = ("hints", "metrics", "pipeline", "second_stage")

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: MetricsAggregate | MetricsCompare | None = None,
        second_stage: TopKBottomK | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.second_stage = second_stage
        self.hints: Hints | None = None

    def text(self) -> str:
        s = self.pipeline.text()
        if self.metrics is not None:
            s += " | " + self.metrics.text()
        if self.second_stage is not None:
            s += " | " + self.second_stage.text()
        if self.hints is not None:
            s += " " + self.hints.text()
        return s

    def validate(self) -> None:
        self.pipeline.validate()
        if self.metrics is not None:
            self.metrics.validate()
        if self.second_stage is not None:
            self.second_stage.validate()
        if isinstance(self.metrics, MetricsCompare) and self.second_stage is not None:
            raise ValidationError("`compare()` cannot be used with second stage functions")

    def hint(self, name: str, t: int) -> Static | None:
        return self.hints.get(name, t) if self.hints is not None else None

    @property
    def most_recent(self) -> bool:
        v = self.hint("most_recent", BOOL)
        return bool(v is not None and v.v)


def root_of(e: Any) -> RootExpr:
    """``newRootExpr``: the element as a pipeline."""
    return RootExpr(e if isinstance(e, Pipeline) else Pipeline([e]))


def walk_fields(e: Any, fn: Callable[[Any], None]) -> None:
    """Call ``fn`` on every field-expression node under a pipeline element."""
    if isinstance(e, (Static, Attribute)):
        fn(e)
    elif isinstance(e, BinaryOperation):
        fn(e)
        walk_fields(e.lhs, fn)
        walk_fields(e.rhs, fn)
    elif isinstance(e, UnaryOperation):
        fn(e)
        walk_fields(e.expr, fn)
    elif isinstance(e, SpansetFilter):
        walk_fields(e.expr, fn)
    elif isinstance(e, (SpansetOperation, ScalarFilter, ScalarOperation)):
        walk_fields(e.lhs, fn)
        walk_fields(e.rhs, fn)
    elif isinstance(e, Pipeline):
        for x in e.elements:
            walk_fields(x, fn)
    elif isinstance(e, (GroupOperation, Aggregate)):
        if e.expr is not None:
            walk_fields(e.expr, fn)
    elif isinstance(e, SelectOperation):
        for a in e.attrs:
            fn(a)
