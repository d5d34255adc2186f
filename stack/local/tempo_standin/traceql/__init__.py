"""TraceQL for the Tempo stand-in: Tempo 2.9's language, checks and evaluation.

Modules (each cites the grafana/tempo v2.9.0 files it follows):

* ``lexer``: tokens, as ``pkg/traceql/lexer.go`` reads them over Go's ``text/scanner``;
* ``grammar`` + ``lalr``: the goyacc grammar of ``pkg/traceql/expr.y`` and an LALR(1) parser
  that accepts the same language and fails with goyacc's messages;
* ``ast``: values, nodes, the validator (``ast_validate.go``) and field-expression evaluation;
* ``eval``: spansets, structural operators, aggregates, grouping, and the storage-layer
  pre-filter;
* ``search``: ``/api/search`` result shaping (``engine.go`` asTraceSearchMetadata);
* ``parser``: ``parse()``.

``compile_query`` is what the HTTP handlers use: parse and validate. ``StandinUnsupported``
is kept for valid TraceQL the stand-in would not evaluate; today there is none.
"""

from __future__ import annotations

from tempo_standin.traceql import ast
from tempo_standin.traceql.ast import RootExpr, Unsupported, ValidationError
from tempo_standin.traceql.eval import SpanCtx, TraceView
from tempo_standin.traceql.parser import ParseError, parse

__all__ = [
    "MAX_QUERY_BYTES",
    "ParseError",
    "RootExpr",
    "SpanCtx",
    "StandinUnsupported",
    "TraceView",
    "Unsupported",
    "ValidationError",
    "ast",
    "compile_query",
    "parse",
    "parse_identifier",
]

# modules/frontend/config.go: max_query_expression_size_bytes defaults to 128 KiB.
MAX_QUERY_BYTES = 128 * 1024


class StandinUnsupported(Exception):
    """Valid TraceQL that the stand-in does not evaluate."""

    def __init__(self, what: str) -> None:
        super().__init__(f"unsupported by the Tempo stand-in: {what}")


def compile_query(query: str) -> RootExpr:
    """Parse and validate as Tempo's query frontend does (raises ParseError,
    ValidationError/Unsupported)."""
    root = parse(query)
    root.validate()
    return root


def parse_identifier(text: str) -> ast.Attribute:
    """``traceql.ParseIdentifier`` (tag-value endpoints): an intrinsic name, or a name with a
    ``.``/``resource.``/``span.``/``instrumentation.``/``event.``/``link.`` prefix. Raises
    ValueError with Tempo's message otherwise."""
    intr = ast.intrinsic_from_string(text)
    if intr is not None:
        return ast.intrinsic(intr)
    for prefix, scope in (
        (".", "none"),
        ("resource.", "resource"),
        ("span.", "span"),
        ("instrumentation.", "instrumentation"),
        ("event.", "event"),
        ("link.", "link"),
    ):
        if text.startswith(prefix):
            name = text[len(prefix) :]
            return (
                ast.Attribute(name) if scope == "none" else ast.scoped_attribute(scope, False, name)
            )
    raise ValueError(f"tag name is not valid intrinsic or scoped attribute: {text}")
