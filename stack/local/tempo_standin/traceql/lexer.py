"""TraceQL tokens, as Tempo 2.9's lexer produces them.

Facts followed (grafana/tempo v2.9.0 ``pkg/traceql/lexer.go``, ``pkg/traceql/parse.go``):

* The lexer sits on Go's ``text/scanner`` in its default mode (Go identifiers, Go numbers,
  "..." and `...` strings, 'c' char literals, and // and /* */ comments, which are skipped).
  :class:`Scanner` below follows that package's documented behaviour, including where it puts
  the token position: ``Line``/``Column`` of the last ``Scan()``; ``Next()`` (used to extend
  tokens such as ``&&`` or ``span.``) sets ``Line`` to 0 and leaves ``Column`` alone. Tempo's
  errors print that position, so ``parse error at line 0, col 8`` is a real Tempo message.
* After a token the lexer extends it while the longer text is a known token (``!`` -> ``!=``,
  ``span`` -> ``span.``). Unknown text is an ``IDENTIFIER``.
* ``.``, ``span.``, ``resource.``, ``parent.``, ``event.``, ``link.`` and ``instrumentation.``
  start an attribute name, read rune by rune (so its position is not updated) up to whitespace
  or one of ``{}()=~!<>&|^,``; ``"..."`` parts may quote anything (escapes ``\\"`` and ``\\\\``
  only). The name is followed by a synthetic ``END_ATTRIBUTE``. After ``parent.`` a
  ``span.``/``resource.`` prefix is a scope token of its own.
* A number directly followed by digits, ``.`` or the runes ``nsumhµdwy`` (up to whitespace) is a
  ``DURATION`` when that text parses as a Prometheus duration or else a Go duration.
* Integers are read with Go's ``strconv.Atoi`` and floats with ``ParseFloat``; their errors,
  ``strconv.Unquote`` errors and the scanner's own (``literal not terminated``...) end the query
  with that message.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DISPLAY",
    "END",
    "TOKEN_NAMES",
    "TOKEN_NUMBER",
    "Duration",
    "LexError",
    "Token",
    "go_duration_string",
    "parse_go_duration_ns",
    "parse_prom_duration_ns",
    "tokenize",
]

EOF = -1

# Token numbers as goyacc assigns them: $end=1, error=2, $unk=3, then the declared tokens in
# declaration order (grafana/tempo v2.9.0 pkg/traceql/expr.y: the %token lines, then the %left/
# %right/%nonassoc lines). The "expecting A or B" part of a syntax error lists tokens in this
# order, so the order is part of Tempo's wording.
TOKEN_NAMES: tuple[str, ...] = (
    "$end", "error", "$unk",
    "IDENTIFIER", "STRING", "INTEGER", "FLOAT", "DURATION",
    "DOT", "OPEN_BRACE", "CLOSE_BRACE", "OPEN_PARENS", "CLOSE_PARENS", "COMMA",
    "NIL", "TRUE", "FALSE", "STATUS_ERROR", "STATUS_OK", "STATUS_UNSET",
    "KIND_UNSPECIFIED", "KIND_INTERNAL", "KIND_SERVER", "KIND_CLIENT", "KIND_PRODUCER",
    "KIND_CONSUMER",
    "IDURATION", "CHILDCOUNT", "NAME", "STATUS", "STATUS_MESSAGE", "PARENT", "KIND", "ROOTNAME",
    "ROOTSERVICENAME", "ROOTSERVICE", "TRACEDURATION", "NESTEDSETLEFT", "NESTEDSETRIGHT",
    "NESTEDSETPARENT", "ID", "TRACE_ID", "SPAN_ID", "PARENT_ID", "TIMESINCESTART", "VERSION",
    "PARENT_DOT", "RESOURCE_DOT", "SPAN_DOT", "TRACE_COLON", "SPAN_COLON", "EVENT_COLON",
    "EVENT_DOT", "LINK_COLON", "LINK_DOT", "INSTRUMENTATION_COLON", "INSTRUMENTATION_DOT",
    "COUNT", "AVG", "MAX", "MIN", "SUM", "BY", "COALESCE", "SELECT", "END_ATTRIBUTE",
    "RATE", "COUNT_OVER_TIME", "MIN_OVER_TIME", "MAX_OVER_TIME", "AVG_OVER_TIME",
    "SUM_OVER_TIME", "QUANTILE_OVER_TIME", "HISTOGRAM_OVER_TIME", "COMPARE", "TOPK", "BOTTOMK",
    "WITH",
    "PIPE", "AND", "OR", "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "NRE", "RE", "DESC", "ANCE",
    "SIBL", "NOT_CHILD", "NOT_PARENT", "NOT_DESC", "NOT_ANCE", "UNION_CHILD", "UNION_PARENT",
    "UNION_DESC", "UNION_ANCE", "UNION_SIBL", "ADD", "SUB", "NOT", "MUL", "DIV", "MOD", "POW",
)  # fmt: skip
TOKEN_NUMBER: dict[str, int] = {name: i + 1 for i, name in enumerate(TOKEN_NAMES)}
END = 1

# The lexer's table of known texts (lexer.go ``tokens``). parse.go's init() renames each of these
# tokens to its text in error messages ("unexpected }" rather than "unexpected CLOSE_BRACE").
_TEXTS: dict[str, str] = {
    ",": "COMMA", ".": "DOT", "{": "OPEN_BRACE", "}": "CLOSE_BRACE", "(": "OPEN_PARENS",
    ")": "CLOSE_PARENS", "=": "EQ", "!=": "NEQ", "=~": "RE", "!~": "NRE", ">": "GT",
    ">=": "GTE", "<": "LT", "<=": "LTE", "+": "ADD", "-": "SUB", "/": "DIV", "%": "MOD",
    "*": "MUL", "^": "POW", "true": "TRUE", "false": "FALSE", "nil": "NIL", "ok": "STATUS_OK",
    "error": "STATUS_ERROR", "unset": "STATUS_UNSET", "unspecified": "KIND_UNSPECIFIED",
    "internal": "KIND_INTERNAL", "server": "KIND_SERVER", "client": "KIND_CLIENT",
    "producer": "KIND_PRODUCER", "consumer": "KIND_CONSUMER", "&&": "AND", "||": "OR",
    "!": "NOT", "|": "PIPE", ">>": "DESC", "<<": "ANCE", "~": "SIBL", "!>": "NOT_CHILD",
    "!<": "NOT_PARENT", "!>>": "NOT_DESC", "!<<": "NOT_ANCE", "&~": "UNION_SIBL",
    "&>": "UNION_CHILD", "&<": "UNION_PARENT", "&>>": "UNION_DESC", "&<<": "UNION_ANCE",
    "duration": "IDURATION", "childCount": "CHILDCOUNT", "name": "NAME", "status": "STATUS",
    "statusMessage": "STATUS_MESSAGE", "kind": "KIND", "rootName": "ROOTNAME",
    "rootServiceName": "ROOTSERVICENAME", "rootService": "ROOTSERVICE",
    "traceDuration": "TRACEDURATION", "nestedSetLeft": "NESTEDSETLEFT",
    "nestedSetRight": "NESTEDSETRIGHT", "nestedSetParent": "NESTEDSETPARENT", "id": "ID",
    "traceID": "TRACE_ID", "spanID": "SPAN_ID", "parentID": "PARENT_ID",
    "timeSinceStart": "TIMESINCESTART", "version": "VERSION", "parent": "PARENT",
    "parent.": "PARENT_DOT", "resource.": "RESOURCE_DOT", "span.": "SPAN_DOT",
    "trace:": "TRACE_COLON", "span:": "SPAN_COLON", "event:": "EVENT_COLON",
    "link:": "LINK_COLON", "instrumentation:": "INSTRUMENTATION_COLON", "event.": "EVENT_DOT",
    "link.": "LINK_DOT", "instrumentation.": "INSTRUMENTATION_DOT", "count": "COUNT",
    "avg": "AVG", "max": "MAX", "min": "MIN", "sum": "SUM", "by": "BY", "coalesce": "COALESCE",
    "select": "SELECT", "rate": "RATE", "count_over_time": "COUNT_OVER_TIME",
    "min_over_time": "MIN_OVER_TIME", "max_over_time": "MAX_OVER_TIME",
    "avg_over_time": "AVG_OVER_TIME", "sum_over_time": "SUM_OVER_TIME",
    "quantile_over_time": "QUANTILE_OVER_TIME", "histogram_over_time": "HISTOGRAM_OVER_TIME",
    "compare": "COMPARE", "topk": "TOPK", "bottomk": "BOTTOMK", "with": "WITH",
}  # fmt: skip
_TEXT_TOKEN: dict[str, int] = {text: TOKEN_NUMBER[name] for text, name in _TEXTS.items()}

# Names used in "unexpected X, expecting Y": the token's text where the lexer has one.
DISPLAY: dict[int, str] = {i + 1: name for i, name in enumerate(TOKEN_NAMES)}
for _text, _name in _TEXTS.items():
    DISPLAY[TOKEN_NUMBER[_name]] = _text

_SCOPE_TOKENS = {
    TOKEN_NUMBER[n]
    for n in (
        "PARENT_DOT", "SPAN_DOT", "RESOURCE_DOT", "SPAN_COLON", "TRACE_COLON", "EVENT_COLON",
        "LINK_COLON", "INSTRUMENTATION_COLON", "EVENT_DOT", "LINK_DOT", "INSTRUMENTATION_DOT",
    )
}  # fmt: skip
_STARTS_ATTRIBUTE = {
    TOKEN_NUMBER[n]
    for n in (
        "DOT", "RESOURCE_DOT", "SPAN_DOT", "PARENT_DOT", "EVENT_DOT", "LINK_DOT",
        "INSTRUMENTATION_DOT",
    )
}  # fmt: skip
T_IDENTIFIER = TOKEN_NUMBER["IDENTIFIER"]
T_STRING = TOKEN_NUMBER["STRING"]
T_INTEGER = TOKEN_NUMBER["INTEGER"]
T_FLOAT = TOKEN_NUMBER["FLOAT"]
T_DURATION = TOKEN_NUMBER["DURATION"]
T_END_ATTRIBUTE = TOKEN_NUMBER["END_ATTRIBUTE"]
T_PARENT_DOT = TOKEN_NUMBER["PARENT_DOT"]


class Duration(int):
    """A TraceQL duration literal or value, in nanoseconds (Go's ``time.Duration``)."""

    __slots__ = ()


@dataclass(slots=True)
class Token:
    kind: int
    value: Any
    line: int  # the scanner position after this token was read (what an error reports)
    col: int
    errors: list[tuple[str, int, int]] = field(default_factory=list)  # raised while reading it


class LexError(Exception):
    pass


# --- Go's unicode classes ----------------------------------------------------------------------

_GO_SPACE_HIGH = {0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000}


def go_is_space(ch: str) -> bool:
    """``unicode.IsSpace``."""
    o = ord(ch)
    if o < 0x100:
        return ch in "\t\n\v\f\r " or o in (0x85, 0xA0)
    return o in _GO_SPACE_HIGH or 0x2000 <= o <= 0x200A


def _is_letter(ch: str) -> bool:
    return ch == "_" or unicodedata.category(ch)[0] == "L"


def _is_digit(ch: str) -> bool:
    return unicodedata.category(ch) == "Nd"


def _is_number(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "N"


# --- Go durations -------------------------------------------------------------------------------

_MAX_I64 = 2**63 - 1
_GO_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_go_duration_ns(s: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds; ``ValueError`` with Go's message."""
    orig = s
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise ValueError(f'time: invalid duration "{orig}"')
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        pre = i > 0
        v = int(s[:i]) if pre else 0
        s = s[i:]
        frac, scale = 0, 1
        post = False
        if s.startswith("."):
            s = s[1:]
            i = 0
            while i < len(s) and "0" <= s[i] <= "9":
                i += 1
            post = i > 0
            digits = s[:i]
            s = s[i:]
            for d in digits:  # Go stops adding precision once it would overflow
                if frac > (_MAX_I64 - 9) // 10:
                    break
                frac = frac * 10 + int(d)
                scale *= 10
        if not pre and not post:
            raise ValueError(f'time: invalid duration "{orig}"')
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise ValueError(f'time: missing unit in duration "{orig}"')
        unit_text = s[:i]
        s = s[i:]
        unit = _GO_UNITS.get(unit_text)
        if unit is None:
            raise ValueError(f'time: unknown unit "{unit_text}" in duration "{orig}"')
        if v > _MAX_I64 // unit:
            raise ValueError(f'time: invalid duration "{orig}"')
        v *= unit
        if frac:
            v += int(frac * unit // scale)  # float64 in Go; exact here for realistic inputs
        total += v
        if total > _MAX_I64:
            raise ValueError(f'time: invalid duration "{orig}"')
    return -total if neg else total


_PROM_UNITS = (
    ("y", 365 * 24 * 3600 * 10**9),
    ("w", 7 * 24 * 3600 * 10**9),
    ("d", 24 * 3600 * 10**9),
    ("h", 3600 * 10**9),
    ("m", 60 * 10**9),
    ("s", 10**9),
    ("ms", 10**6),
)
_PROM_RE = re.compile(
    r"(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?"
    r"(?:([0-9]+)ms)?"
)


def parse_prom_duration_ns(s: str) -> int:
    """Prometheus ``model.ParseDuration`` (units y w d h m s ms, each once, in that order)."""
    if s == "0":
        return 0
    if not s:
        raise ValueError("empty duration string")
    m = _PROM_RE.fullmatch(s)
    if m is None or not any(m.groups()):
        raise ValueError(f"not a valid duration string: {s!r}")
    total = 0
    for (_, size), g in zip(_PROM_UNITS, m.groups(), strict=True):
        if g is not None:
            total += int(g) * size
    if total > _MAX_I64:
        raise ValueError("duration out of range")
    return total


def go_duration_string(ns: int) -> str:
    """Go's ``time.Duration.String()``: ``1h0m0s``, ``1.5s``, ``100ms``, ``0s``."""
    if ns == 0:
        return "0s"
    neg = ns < 0
    u = -ns if neg else ns
    if u < 10**9:
        for size, unit in ((10**6, "ms"), (10**3, "\u00b5s"), (1, "ns")):
            if u >= size:
                whole, rest = divmod(u, size)
                text = str(whole)
                if rest:
                    text += "." + str(rest).rjust(len(str(size)) - 1, "0").rstrip("0")
                return ("-" if neg else "") + text + unit
    whole_s, rest = divmod(u, 10**9)
    h, rem = divmod(whole_s, 3600)
    m, s = divmod(rem, 60)
    secs = str(s)
    if rest:
        secs += "." + str(rest).rjust(9, "0").rstrip("0")
    out = (f"{h}h{m}m" if h else (f"{m}m" if m else "")) + secs + "s"
    return ("-" if neg else "") + out


def _parse_duration(text: str) -> int | None:
    """lexer.go parseDuration: Prometheus syntax first, then Go's."""
    try:
        return parse_prom_duration_ns(text)
    except ValueError:
        pass
    try:
        return parse_go_duration_ns(text)
    except ValueError:
        return None


# --- Go's strconv ---------------------------------------------------------------------------------


def go_quote(text: str) -> str:
    """``strconv.Quote`` for the texts that appear in error messages."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _atoi(text: str) -> int:
    """``strconv.Atoi`` (base 10, optional sign, no underscores)."""
    if re.fullmatch(r"[+-]?[0-9]+", text) is None:
        raise ValueError(f"strconv.Atoi: parsing {go_quote(text)}: invalid syntax")
    n = int(text)
    if not -(2**63) <= n <= _MAX_I64:
        raise ValueError(f"strconv.Atoi: parsing {go_quote(text)}: value out of range")
    return n


def _parse_float(text: str) -> float:
    """``strconv.ParseFloat(text, 64)`` for the literals Go's scanner produces."""
    t = text.replace("_", "")
    try:
        v = float.fromhex(t) if t.lower().startswith("0x") else float(t)
    except (ValueError, OverflowError):
        raise ValueError(f"strconv.ParseFloat: parsing {go_quote(text)}: invalid syntax") from None
    if v in (float("inf"), float("-inf")):
        raise ValueError(f"strconv.ParseFloat: parsing {go_quote(text)}: value out of range")
    return v


_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\",
}  # fmt: skip


def _unquote(text: str) -> str:
    """``strconv.Unquote`` for "..." and `...` literals; ``ValueError('invalid syntax')``."""
    if len(text) < 2:
        raise ValueError("invalid syntax")
    q = text[0]
    if q != text[-1]:
        raise ValueError("invalid syntax")
    body = text[1:-1]
    if q == "`":
        if "`" in body:
            raise ValueError("invalid syntax")
        return body.replace("\r", "")
    if q != '"' or "\n" in body:
        raise ValueError("invalid syntax")
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == '"':
            raise ValueError("invalid syntax")
        if c != "\\":
            out += c.encode("utf-8", "surrogatepass")
            i += 1
            continue
        if i + 1 >= len(body):
            raise ValueError("invalid syntax")
        e = body[i + 1]
        i += 2
        if e in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[e].encode()
        elif e == '"':
            out += b'"'
        elif e in "01234567":
            digits = body[i - 1 : i + 2]
            if len(digits) < 3 or any(d not in "01234567" for d in digits):
                raise ValueError("invalid syntax")
            v = int(digits, 8)
            if v > 255:
                raise ValueError("invalid syntax")
            out.append(v)
            i += 2
        elif e in "xuU":
            n = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i : i + n]
            if len(digits) < n or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError("invalid syntax")
            v = int(digits, 16)
            i += n
            if e == "x":
                out.append(v)
            else:
                if v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                    raise ValueError("invalid syntax")
                out += chr(v).encode()
        else:
            raise ValueError("invalid syntax")
    return out.decode("utf-8", "surrogateescape")


# --- the scanner ----------------------------------------------------------------------------------

_WS = "\t\n\r "


class Scanner:
    """Go's ``text/scanner.Scanner`` in ``GoTokens`` mode, enough for TraceQL."""

    def __init__(self, src: str, on_error: Any) -> None:
        self.src = src
        self.pos = 0  # index of the next rune to read
        self.ch: str | int = -2  # current lookahead rune, EOF (-1) or "not read yet" (-2)
        self.line = 1
        self.column = 0
        self.last_line_len = 0
        self.last_char_len = 0
        self.Line = 0
        self.Column = 0
        self.tok_pos = -1
        self.tok_end = 0
        self.on_error = on_error

    def error(self, msg: str) -> None:
        self.on_error(msg)

    def _next(self) -> str | int:
        if self.pos >= len(self.src):
            if self.last_char_len > 0:
                self.column += 1  # the column of EOF is one past the last rune, once
            self.last_char_len = 0
            return EOF
        ch = self.src[self.pos]
        self.pos += 1
        self.last_char_len = 1
        self.column += 1
        if ch == "\x00":
            self.error("invalid character NUL")
        elif ch == "\n":
            self.line += 1
            self.last_line_len = self.column
            self.column = 0
        return ch

    def peek(self) -> str | int:
        if self.ch == -2:
            self.ch = self._next()
            if self.ch == "\ufeff":
                self.ch = self._next()
        return self.ch

    def next(self) -> str | int:
        """``Next()``: one rune; invalidates ``Line`` (it becomes 0)."""
        self.tok_pos = -1
        self.Line = 0
        ch = self.peek()
        if ch != EOF:
            self.ch = self._next()
        return ch

    def token_text(self) -> str:
        if self.tok_pos < 0:
            return ""
        return self.src[self.tok_pos : self.tok_end]

    def _start(self) -> int:
        return self.pos - self.last_char_len

    def scan(self) -> str:
        """``Scan()``. Returns "EOF", "Ident", "Int", "Float", "String", "RawString", "Char"
        or "Other" (a single rune; see ``token_text``)."""
        ch = self.peek()
        self.tok_pos = -1
        self.Line = 0
        while True:
            while isinstance(ch, str) and ch in _WS:
                ch = self._next()
            self.tok_pos = self._start()
            if self.column > 0:
                self.Line = self.line
                self.Column = self.column
            else:
                self.Line = self.line - 1
                self.Column = self.last_line_len
            tok = "Other"
            if ch == EOF:
                tok = "EOF"
            elif isinstance(ch, str) and _is_letter(ch):
                tok = "Ident"
                ch = self._next()
                while isinstance(ch, str) and (_is_letter(ch) or _is_digit(ch)):
                    ch = self._next()
            elif isinstance(ch, str) and "0" <= ch <= "9":
                tok, ch = self._scan_number(ch, False)
            elif ch == '"':
                self._scan_string('"')
                tok = "String"
                ch = self._next()
            elif ch == "'":
                if self._scan_string("'") != 1:
                    self.error("invalid char literal")
                tok = "Char"
                ch = self._next()
            elif ch == ".":
                ch = self._next()
                if isinstance(ch, str) and "0" <= ch <= "9":
                    tok, ch = self._scan_number(ch, True)
            elif ch == "/":
                ch = self._next()
                if ch in ("/", "*"):
                    self.tok_pos = -1
                    ch = self._scan_comment(ch)
                    continue  # comments are skipped: scan again
            elif ch == "`":
                while True:
                    c = self._next()
                    if c == "`":
                        break
                    if c == EOF:
                        self.error("literal not terminated")
                        break
                tok = "RawString"
                ch = self._next()
            else:
                ch = self._next()
            self.tok_end = self._start()
            self.ch = ch
            return tok

    def _scan_comment(self, ch: str | int) -> str | int:
        if ch == "/":
            ch = self._next()
            while ch != "\n" and ch != EOF:
                ch = self._next()
            return ch
        ch = self._next()
        while True:
            if ch == EOF:
                self.error("comment not terminated")
                return ch
            ch0 = ch
            ch = self._next()
            if ch0 == "*" and ch == "/":
                return self._next()

    def _scan_string(self, quote: str) -> int:
        n = 0
        ch = self._next()
        while ch != quote:
            if ch == "\n" or ch == EOF:
                self.error("literal not terminated")
                return n
            ch = self._scan_escape(quote) if ch == "\\" else self._next()
            n += 1
        return n

    def _scan_escape(self, quote: str) -> str | int:
        ch = self._next()
        if isinstance(ch, str) and ch in "abfnrtv\\" + quote:
            return self._next()
        if isinstance(ch, str) and ch in "01234567":
            return self._scan_digits(ch, 8, 3)
        if ch == "x":
            return self._scan_digits(self._next(), 16, 2)
        if ch == "u":
            return self._scan_digits(self._next(), 16, 4)
        if ch == "U":
            return self._scan_digits(self._next(), 16, 8)
        self.error("invalid char escape")
        return ch

    def _scan_digits(self, ch: str | int, base: int, n: int) -> str | int:
        while n > 0 and isinstance(ch, str) and _digit_val(ch) < base:
            ch = self._next()
            n -= 1
        if n > 0:
            self.error("invalid char escape")
        return ch

    def _digits(self, ch: str | int, base: int, invalid: list[str]) -> tuple[str | int, int]:
        digsep = 0
        if base <= 10:
            top = chr(ord("0") + base)
            while isinstance(ch, str) and ("0" <= ch <= "9" or ch == "_"):
                ds = 1
                if ch == "_":
                    ds = 2
                elif ch >= top and not invalid:
                    invalid.append(ch)
                digsep |= ds
                ch = self._next()
        else:
            while isinstance(ch, str) and (ch in "0123456789abcdefABCDEF_"):
                digsep |= 2 if ch == "_" else 1
                ch = self._next()
        return ch, digsep

    def _scan_number(self, ch: str | int, seen_dot: bool) -> tuple[str, str | int]:
        base, prefix, digsep = 10, "", 0
        invalid: list[str] = []
        tok = "Int"
        if not seen_dot:
            if ch == "0":
                ch = self._next()
                low = ch.lower() if isinstance(ch, str) else ch
                if low in ("x", "o", "b"):
                    ch = self._next()
                    base, prefix = {"x": 16, "o": 8, "b": 2}[str(low)], str(low)
                else:
                    base, prefix, digsep = 8, "0", 1
            ch, ds = self._digits(ch, base, invalid)
            digsep |= ds
            if ch == ".":
                ch = self._next()
                seen_dot = True
        if seen_dot:
            tok = "Float"
            if prefix in ("o", "b"):
                self.error("invalid radix point in " + _litname(prefix))
            ch, ds = self._digits(ch, base, invalid)
            digsep |= ds
        if digsep & 1 == 0:
            self.error(_litname(prefix) + " has no digits")
        e = ch.lower() if isinstance(ch, str) else ""
        if e in ("e", "p"):
            if e == "e" and prefix not in ("", "0"):
                self.error(f"{_go_quote_rune(str(ch))} exponent requires decimal mantissa")
            elif e == "p" and prefix != "x":
                self.error(f"{_go_quote_rune(str(ch))} exponent requires hexadecimal mantissa")
            ch = self._next()
            tok = "Float"
            if ch in ("+", "-"):
                ch = self._next()
            ch, ds = self._digits(ch, 10, [])
            digsep |= ds
            if ds & 1 == 0:
                self.error("exponent has no digits")
        elif prefix == "x" and tok == "Float":
            self.error("hexadecimal mantissa requires a 'p' exponent")
        if tok == "Int" and invalid:
            self.error(f"invalid digit {_go_quote_rune(invalid[0])} in {_litname(prefix)}")
        if digsep & 2:
            self.tok_end = self._start()
            if _invalid_sep(self.token_text()) >= 0:
                self.error("'_' must separate successive digits")
        return tok, ch


def _digit_val(ch: str) -> int:
    if "0" <= ch <= "9":
        return ord(ch) - ord("0")
    if "a" <= ch.lower() <= "f":
        return ord(ch.lower()) - ord("a") + 10
    return 16


def _litname(prefix: str) -> str:
    return {
        "x": "hexadecimal literal",
        "o": "octal literal",
        "0": "octal literal",
        "b": "binary literal",
    }.get(prefix, "decimal literal")


def _go_quote_rune(ch: str) -> str:
    return "'" + ch.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _invalid_sep(x: str) -> int:
    """Index of the first '_' that does not separate digits (Go's scanner invalidSep), or -1."""
    x1 = " "
    d = "."
    i = 0
    if len(x) >= 2 and x[0] == "0":
        x1 = x[1].lower()
        if x1 in ("x", "o", "b"):
            d = "0"
            i = 2
    while i < len(x):
        p = d
        d = x[i]
        if d == "_":
            if p != "0":
                return i
        elif "0" <= d <= "9" or (x1 == "x" and d.lower() in "abcdef"):
            d = "0"
        else:
            if p == "_":
                return i - 1
            d = "."
        i += 1
    if d == "_":
        return len(x) - 1
    return -1


def _is_attribute_rune(ch: str | int) -> bool:
    if ch == EOF or not isinstance(ch, str):
        return False
    if go_is_space(ch):
        return False
    return ch not in "{}()=~!<>&|^,"


def _is_duration_rune(ch: str) -> bool:
    return ch in "nsumh\u00b5dwy"


# --- the TraceQL lexer ---------------------------------------------------------------------------


class Lexer:
    def __init__(self, query: str) -> None:
        self.errors: list[tuple[str, int, int]] = []
        self.sc = Scanner(query, self._scanner_error)
        self.parsing_attribute = False
        self.current_scope = 0

    def _scanner_error(self, msg: str) -> None:
        self.errors.append((msg, self.sc.Line, self.sc.Column))

    def _error(self, msg: str) -> None:
        self.errors.append((msg, self.sc.Line, self.sc.Column))

    def lex(self) -> tuple[int, Any]:
        """The next token (number, value); 1 ($end) at the end or after a lexer error."""
        sc = self.sc
        if self.parsing_attribute and not _is_attribute_rune(sc.peek()):
            self.parsing_attribute = False
            return T_END_ATTRIBUTE, None
        if self.parsing_attribute:
            scope = self._try_scope_attribute()
            if scope:
                self.current_scope = scope
                return scope, None
            try:
                return T_IDENTIFIER, self._parse_attribute()
            except LexError as exc:
                self._error(str(exc))
                return END, None
        kind = sc.scan()
        if kind == "EOF":
            return END, None
        if kind in ("String", "RawString"):
            try:
                return T_STRING, _unquote(sc.token_text())
            except ValueError as exc:
                self._error(str(exc))
                return END, None
        if kind in ("Int", "Float"):
            text = sc.token_text()
            d = self._try_scan_duration(text)
            if d is not None:
                return T_DURATION, Duration(d)
            try:
                if kind == "Int":
                    return T_INTEGER, _atoi(text)
                return T_FLOAT, _parse_float(text)
            except ValueError as exc:
                self._error(str(exc))
                return END, None
        text = sc.token_text()
        multi = -1
        nxt = text
        while True:
            p = sc.peek()
            if p == EOF or not isinstance(p, str):
                break
            nxt = nxt + p
            tok = _TEXT_TOKEN.get(nxt)
            if tok is None:
                break
            multi = tok
            sc.next()
        if multi in _SCOPE_TOKENS:
            self.current_scope = multi
        if multi != -1:
            self.parsing_attribute = multi in _STARTS_ATTRIBUTE
            return multi, None
        tok = _TEXT_TOKEN.get(text)
        if tok is not None:
            self.parsing_attribute = tok in _STARTS_ATTRIBUTE
            return tok, None
        return T_IDENTIFIER, text

    def _try_scope_attribute(self) -> int:
        """After ``parent.``: a ``span.``/``resource.`` prefix is a scope token."""
        if self.current_scope != T_PARENT_DOT:
            return 0
        src, i = self.sc.src, self.sc.pos - (1 if self.sc.ch not in (-1, -2) else 0)
        text = ""
        while i < len(src):
            r = src[i]
            if r == ".":
                text += r
                break
            if not _is_attribute_rune(r) or len(text) > 9:
                break
            text += r
            i += 1
        tok = _TEXT_TOKEN.get(text, 0)
        if tok in (TOKEN_NUMBER["SPAN_DOT"], TOKEN_NUMBER["RESOURCE_DOT"]):
            for _ in text:
                self.sc.next()
            return tok
        return 0

    def _parse_attribute(self) -> str:
        sc = self.sc
        out: list[str] = []
        r = sc.peek()
        while True:
            if r == '"':
                out.append(self._parse_quoted_attribute())
            elif _is_attribute_rune(r):
                out.append(str(sc.next()))
            else:
                break
            r = sc.peek()
        return "".join(out)

    def _parse_quoted_attribute(self) -> str:
        sc = self.sc
        sc.next()  # the opening quote
        out: list[str] = []
        r = sc.peek()
        while r != EOF:
            if r == '"':
                sc.next()
                break
            if r == "\\":
                sc.next()
                p = sc.peek()
                if isinstance(p, str) and p in '\\"':
                    out.append(p)
                    sc.next()
                else:
                    raise LexError("invalid escape sequence")
            else:
                out.append(str(r))
                sc.next()
            r = sc.peek()
        if r == EOF:
            raise LexError('unexpected EOF, expecting "')
        return "".join(out)

    def _try_scan_duration(self, number: str) -> int | None:
        src = self.sc.src
        i = self.sc.pos - (1 if self.sc.ch not in (-1, -2) else 0)
        j = i
        while j < len(src) and not go_is_space(src[j]):
            r = src[j]
            if not (_is_number(r) or _is_duration_rune(r) or r == "."):
                break
            j += 1
        if j == i:
            return None
        d = _parse_duration(number + src[i:j])
        if d is None:
            return None
        for _ in range(j - i):
            self.sc.next()
        return d


def tokenize(query: str) -> list[Token]:
    """All tokens up to and including the first $end (a lexer error also ends the stream).

    Each token carries the scanner position after it was read and the errors raised while it
    was read; the parser reports them when (and only if) it reads that token, as Tempo's
    goyacc parser pulls tokens one by one.
    """
    lx = Lexer(query)
    out: list[Token] = []
    while True:
        before = len(lx.errors)
        kind, value = lx.lex()
        tok = Token(kind, value, lx.sc.Line, lx.sc.Column, lx.errors[before:])
        out.append(tok)
        if kind == END:
            return out


# struct is imported for float bit patterns used by the evaluator (kept here to share one place).
def float_bits(f: float) -> int:
    return int(struct.unpack("<q", struct.pack("<d", f))[0])
