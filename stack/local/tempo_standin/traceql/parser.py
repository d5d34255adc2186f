"""``parse()``: TraceQL text to a syntax tree, failing as Tempo's ``traceql.Parse`` fails.

grafana/tempo v2.9.0 ``pkg/traceql/parse.go``: the first error raised (by the scanner, the
lexer or the goyacc parser, in that time order) is the answer, printed as
``parse error at line L, col C: MESSAGE``, or ``parse error : MESSAGE`` when the position is
0/0 (an empty query, or a Go panic inside the parser such as an integer division by zero
while folding constants).
"""

from __future__ import annotations

import threading

from tempo_standin.traceql.ast import GoPanic, RootExpr
from tempo_standin.traceql.grammar import GRAMMAR
from tempo_standin.traceql.lalr import ParseFailure, Tables, build_tables, run_parser
from tempo_standin.traceql.lexer import DISPLAY, Token, tokenize

__all__ = ["ParseError", "parse", "tables"]


class ParseError(Exception):
    """Tempo's ``ParseError``; ``str()`` is its text."""

    def __init__(self, message: str, line: int, col: int) -> None:
        self.message = message
        self.line = line
        self.col = col
        if line == 0 and col == 0:
            text = f"parse error : {message}"
        else:
            text = f"parse error at line {line}, col {col}: {message}"
        super().__init__(text)


_tables: Tables | None = None
_lock = threading.Lock()


def tables() -> Tables:
    """The parse tables, built once (about a second) on first use."""
    global _tables
    if _tables is None:
        with _lock:
            if _tables is None:
                _tables = build_tables(GRAMMAR)
    return _tables


def parse(query: str) -> RootExpr:
    toks = tokenize(query)
    errors: list[tuple[str, int, int]] = []
    pos = [0]
    current: list[Token] = []

    def next_token() -> tuple[int, object]:
        t = toks[min(pos[0], len(toks) - 1)]
        pos[0] += 1
        errors.extend(t.errors)
        current[:] = [t]
        return t.kind, t.value

    try:
        root = run_parser(tables(), next_token, DISPLAY)
    except ParseFailure as exc:
        t = current[0]
        errors.append((exc.message, t.line, t.col))
        msg, line, col = errors[0]
        raise ParseError(msg, line, col) from None
    except GoPanic as exc:
        errors.append((str(exc), 0, 0))
        msg, line, col = errors[0]
        raise ParseError(msg, line, col) from None
    if errors:
        msg, line, col = errors[0]
        raise ParseError(msg, line, col)
    assert isinstance(root, RootExpr)
    return root
