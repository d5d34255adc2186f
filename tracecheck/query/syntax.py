"""Where a query is wrong: Prometheus's verdict on PromQL shown at Prometheus's position, the
local parser's opinion as an offline lint or a suggestion, and the position Tempo names in a
TraceQL error shown with the text found there.

Prometheus decides whether PromQL is valid: the query is sent as it is, and a ``bad_data``
answer (``invalid parameter "query": 1:26: parse error: unclosed left parenthesis``) becomes a
:class:`PromQLSyntaxError` that keeps Prometheus's message and puts a caret under Prometheus's
position (:func:`prometheus_refusal`). Its column counts bytes (``posrange.StartPosInput``,
Prometheus v3.8.0); the caret counts characters. A local grammar can only disagree with the
server that runs the query: Prometheus's feature flags (``promql-duration-expr``,
``promql-extended-range-selectors``, ``promql-experimental-functions``) change what it accepts,
and promql-parser lags behind its lexer (backtick strings with backslashes, ``anchored`` as a
name, ``step()``). So the local parser (promql-parser) never blocks a query:

* :func:`suggest_promql` adds a suggestion to Prometheus's refusal (the feature flag a message
  asks for, a function name close to an unknown one);
* :func:`check_promql` / :func:`lint_promql` are the offline lint of saved queries
  (``tracecheck query list`` shows their findings as warnings), positioned here because
  promql-parser's messages carry none: lexical and bracket errors exactly, syntax errors with
  a small recogniser of the PromQL grammar (:class:`_Recognizer`), semantic errors at the
  token the message names;
* :func:`with_traceql_position` adds to Tempo's ``parse error at line L, col C`` what is there.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from tracecheck.errors import QueryError

__all__ = [
    "PROMQL_FUNCTIONS",
    "PromQLSyntaxError",
    "check_promql",
    "lint_promql",
    "locate_promql_error",
    "prometheus_refusal",
    "suggest_promql",
    "with_traceql_position",
]

#: Prometheus 3.8's function names (promql/parser/functions.go at v3.8.0), for "did you mean".
_FUNCTION_NAMES = (
    "abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes "
    "clamp clamp_max clamp_min cos cosh count_over_time days_in_month day_of_month day_of_week "
    "day_of_year deg delta deriv double_exponential_smoothing exp first_over_time floor "
    "histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev "
    "histogram_stdvar histogram_sum hour idelta increase info irate label_join label_replace "
    "last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi "
    "predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin "
    "sinh sort sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time "
    "stdvar_over_time sum_over_time tan tanh time timestamp ts_of_first_over_time "
    "ts_of_last_over_time ts_of_max_over_time ts_of_min_over_time vector year"
)
PROMQL_FUNCTIONS = tuple(_FUNCTION_NAMES.split())


class PromQLSyntaxError(QueryError):
    """PromQL refused as unparsable, with where: by Prometheus (its ``bad_data`` answer, its
    message and position) or, offline, by the local parser (:func:`check_promql`).

    ``line``/``col`` are 1-based and count characters, ``offset`` is 0-based into ``query``
    (``len(query)``: at the end of the input); all three are None when the refusal names no
    position inside the query. ``message`` is the parser's own text, ``suggestion`` what the
    local parser adds (may be empty).
    """

    def __init__(
        self,
        system: str,
        address: str,
        cause: str,
        *,
        query: str,
        offset: int | None,
        message: str,
        suggestion: str = "",
    ) -> None:
        self.query = query
        self.offset = offset
        self.line: int | None = None
        self.col: int | None = None
        if offset is not None:
            self.line = query.count("\n", 0, offset) + 1
            self.col = offset - (query.rfind("\n", 0, offset) + 1) + 1
        self.message = message
        self.suggestion = suggestion
        super().__init__(system, address, f"{cause} ({suggestion})" if suggestion else cause)

    def pointer(self) -> str:
        """Two lines: the query line holding the error and a caret under its position ("" when
        there is no position)."""
        if self.line is None or self.col is None:
            return ""
        line = self.query.split("\n")[self.line - 1]
        return f"{line}\n{' ' * (self.col - 1)}^"


def _near(text: str, offset: int) -> str:
    if offset >= len(text.rstrip()):
        tail = " ".join(text.split())[-24:]
        return f"the end of input (after {tail!r})"
    snippet = " ".join(text[offset : offset + 24].split())
    return repr(snippet)


# -- Prometheus's verdict -------------------------------------------------------------------------

# web/api/v1/api.go invalidParamError + promql/parser ParseErr.Error (Prometheus v3.8.0).
_PROM_REFUSAL = re.compile(
    r'invalid parameter "query": (?:(?P<line>\d+):(?P<col>\d+)|unknown position|invalid position)'
    r": (?P<message>.*)$"
)


def prometheus_refusal(exc: QueryError, query: str, *, name: str = "") -> QueryError:
    """Prometheus's ``bad_data`` refusal of ``query`` as a :class:`PromQLSyntaxError`: its
    message kept whole, its position (bytes on a line) turned into characters for the caret,
    and :func:`suggest_promql`'s suggestion. Any other error is returned unchanged. ``name``
    (a saved query's file) is added to the message."""
    cause = exc.cause
    body = cause.removeprefix("bad_data: ")
    m = _PROM_REFUSAL.match(body) if body != cause else None
    if m is None:
        return exc
    message = m.group("message")
    offset = None
    if m.group("line") is not None:
        offset = _char_offset(query, int(m.group("line")), int(m.group("col")))
    if name:
        cause = f"{cause} [{name}]"
    return PromQLSyntaxError(
        exc.system,
        exc.address,
        cause,
        query=query,
        offset=offset,
        message=message,
        suggestion=suggest_promql(query, message),
    )


def _char_offset(query: str, line: int, col: int) -> int | None:
    """The character offset of Prometheus's ``line:col`` (col counts bytes from the line's start,
    1-based); None when it falls outside the query (some evaluation errors number lines of
    their own)."""
    lines = query.split("\n")
    if not 1 <= line <= len(lines):
        return None
    raw = lines[line - 1].encode()
    if not 1 <= col <= len(raw) + 1:
        return None
    chars = len(raw[: col - 1].decode("utf-8", errors="ignore"))
    return sum(len(x) + 1 for x in lines[: line - 1]) + chars


# Feature flags that Prometheus v3.8.0 names in its refusals (cmd/prometheus/main.go,
# promql/parser/parse.go, generated_parser.y).
_FEATURES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r'function "[^"]+" is not enabled'), "promql-experimental-functions"),
    (
        re.compile(r"(anchored|smoothed) modifier is experimental"),
        "promql-extended-range-selectors",
    ),
    (re.compile(r"experimental duration expression is not enabled"), "promql-duration-expr"),
)
_UNKNOWN_FUNCTION = re.compile(r'unknown function with name "([^"]+)"')


def suggest_promql(query: str, message: str) -> str:
    """What to try, from Prometheus's refusal ``message`` (empty when nothing useful).

    * a feature Prometheus has off: the ``--enable-feature`` flag that turns it on;
    * an unknown function: the closest of Prometheus 3.8's names;
    * ``step()`` in an instant query, where it is 0: a range query instead.
    """
    for pattern, feature in _FEATURES:
        if pattern.search(message):
            return f"this Prometheus runs without --enable-feature={feature}"
    m = _UNKNOWN_FUNCTION.search(message)
    if m:
        close = difflib.get_close_matches(m.group(1).lower(), PROMQL_FUNCTIONS, n=2, cutoff=0.6)
        if close:
            return f"did you mean {' or '.join(close)}?"
    if "duration must be greater than 0" in message and re.search(r"\bstep\s*\(", query):
        return "step() is 0 in an instant query: run it as a range query (--range)"
    return ""


# -- the local parser, offline --------------------------------------------------------------------


def check_promql(query: str, *, address: str = "") -> None:
    """Parse ``query`` with promql-parser, offline; raise :class:`PromQLSyntaxError` pointing at
    the error if it is refused.

    This is a lint (saved queries, ``tracecheck query list``), never a gate: Prometheus decides
    what it runs, and accepts queries this parser refuses (see the module docstring).
    """
    import promql_parser

    if not query.strip():
        raise _local_error(address, query, 0, "empty query")
    try:
        promql_parser.parse(query)
    except (ValueError, RuntimeError) as exc:
        message = str(exc).strip() or "invalid promql query"
        raise _local_error(address, query, locate_promql_error(query, message), message) from None


def _local_error(address: str, query: str, offset: int, message: str) -> PromQLSyntaxError:
    line = query.count("\n", 0, offset) + 1
    col = offset - (query.rfind("\n", 0, offset) + 1) + 1
    cause = f"parse error at line {line}, col {col}, near {_near(query, offset)}: {message}"
    return PromQLSyntaxError(
        "promql-parser", address, cause, query=query, offset=offset, message=message
    )


def lint_promql(query: str) -> str | None:
    """The local parser's complaint about ``query`` as one line (``line 1, col 5: ...``), or
    None when it parses."""
    try:
        check_promql(query)
    except PromQLSyntaxError as exc:
        return f"line {exc.line}, col {exc.col}: {exc.message}"
    return None


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


def with_traceql_position(exc: QueryError, query: str) -> QueryError:
    """Tempo's 400 says ``parse error at line L, col C`` (docs/reference/tempo.md §8.1): add what
    is there."""
    m = _TEMPO_POS.search(exc.cause)
    if not m:
        return exc
    line, col = int(m.group(1)), int(m.group(2))
    lines = query.split("\n")
    if not 1 <= line <= len(lines):
        return exc
    offset = sum(len(x) + 1 for x in lines[: line - 1]) + max(0, col - 1)
    return QueryError(exc.system, exc.address, f"{exc.cause} (near {_near(query, offset)})")
