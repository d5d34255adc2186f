"""Evaluating a TraceQL pipeline on one trace, as Tempo's engine and storage layer do.

Facts followed (grafana/tempo v2.9.0):

* ``pkg/traceql/ast_execute.go``: how spanset filters, ``&&``/``||`` between spansets, the
  structural operators, ``count()``/``avg()``/``min()``/``max()``/``sum()`` comparisons, ``by()``
  and ``coalesce()`` transform spansets; spanset attributes (``by(...)``, ``count()``) and the
  input spanset's attributes carried forward.
* ``pkg/traceql/ast_conditions.go`` and ``tempodb/encoding/vparquet4/block_traceql.go``: before
  the engine runs, storage keeps only the spans that satisfy the conditions the query pushes
  down (all of them when the query is a plain conjunction, any of them otherwise), and hands
  the engine, for each span, only the attribute values those conditions select. So
  ``{ !(.a = 1) }`` matches nothing and ``{ .a = 1 || true }`` matches only spans with ``a=1``,
  exactly as in Tempo.
* ``tempodb/encoding/vparquet4/nested_set_model.go``: structural relations use nested-set
  numbers assigned by a depth-first walk from each root span; spans that cannot be reached from
  a root have none and relate to nothing; root spans have parent number -1 (so two roots are
  siblings).
* ``vparquet4 span.AttributeFor``: an unscoped ``.x`` is looked up on the span, then the
  resource, then events, links and the instrumentation scope.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tempo_standin.model import SpanRecord
from tempo_standin.traceql import ast as A

__all__ = [
    "SpanCtx",
    "Spanset",
    "TraceView",
    "conditions_of",
    "evaluate_pipeline",
    "is_noop",
]

ScopeLookup = Callable[[bytes], tuple[str, str, dict[str, Any]]]

# OTLP -> Tempo numbering (enum_statics.go): status error=0 ok=1 unset=2; kind as listed.
_STATUS_FROM_OTLP = {0: 2, 1: 1, 2: 0}
_KIND_FROM_OTLP = {0: 0, 1: 1, 2: 3, 3: 2, 4: 4, 5: 5}


def trace_id_text(raw: bytes) -> str:
    """util.TraceIDToHexString: lowercase hex without leading zeros."""
    return raw.hex().lstrip("0")


def span_id_text(raw: bytes) -> str:
    """util.SpanIDToHexString: lowercase hex padded to 16 characters."""
    return raw.hex().lstrip("0").rjust(16, "0")


class IdStatic(A.Static):
    """A trace or span ID. Tempo's storage matches ID conditions on the bytes (any case, any
    leading zeros), and its engine then compares the hex text exactly; the stand-in compares
    bytes for = and != (README: "Not matched")."""

    __slots__ = ("raw",)

    def __init__(self, text: str, raw: bytes) -> None:
        super().__init__(A.STRING, text)
        self.raw = raw

    def same_id(self, literal: str) -> bool:
        s = literal.strip().lower()
        if not s or len(s) > 2 * len(self.raw) or any(c not in "0123456789abcdef" for c in s):
            return False
        return bytes.fromhex(s.rjust(2 * len(self.raw), "0")) == self.raw

    def equals(self, o: A.Static) -> bool:
        if o.t == A.STRING and not isinstance(o, IdStatic):
            return self.same_id(o.v)
        return super().equals(o)


@dataclass(slots=True)
class _Nested:
    left: int = 0
    right: int = 0
    parent: int = 0


class TraceView:
    """One trace as the engine sees it: its spans (in start order) and trace-level facts."""

    __slots__ = (
        "_ctx",
        "_nested",
        "end_ns",
        "root",
        "scope_lookup",
        "spans",
        "start_ns",
        "trace_id",
    )

    def __init__(
        self,
        trace_id: bytes,
        spans: Sequence[SpanRecord],
        scope_lookup: ScopeLookup | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.spans = sorted(spans, key=lambda s: s.start_ns)
        self.root = next((s for s in spans if s.is_root), None)
        self.start_ns = min(s.start_ns for s in spans)
        self.end_ns = max(s.end_ns for s in spans)
        self.scope_lookup = scope_lookup
        self._ctx: list[SpanCtx] | None = None
        self._nested: dict[bytes, _Nested] | None = None

    @classmethod
    def of(
        cls,
        trace_id: bytes,
        spans: Sequence[SpanRecord],
        scope_lookup: ScopeLookup | None = None,
    ) -> TraceView:
        return cls(trace_id, spans, scope_lookup)

    def contexts(self) -> list[SpanCtx]:
        if self._ctx is None:
            self._ctx = [SpanCtx(s, self) for s in self.spans]
        return self._ctx

    def nested(self, span: SpanRecord) -> _Nested:
        if self._nested is None:
            self._nested = _nested_sets(self)
        return self._nested.get(span.span_id) or _Nested()

    @property
    def root_service(self) -> str:
        return self.root.service if self.root is not None else ""


def _nested_sets(view: TraceView) -> dict[bytes, _Nested]:
    """nested_set_model.go: depth-first from each root, in arrival order."""
    out = {s.span_id: _Nested() for s in view.spans}
    order = sorted(view.spans, key=lambda s: s.received)
    children: dict[bytes, list[SpanRecord]] = {}
    for s in order:
        if not s.is_root:
            children.setdefault(s.parent_span_id, []).append(s)
    bound = 1
    for root in (s for s in order if s.is_root):
        n = out[root.span_id]
        n.left, n.parent = bound, -1
        bound += 1
        stack: list[tuple[SpanRecord, int]] = [(root, 0)]
        while stack:
            node, i = stack[-1]
            kids = children.get(node.span_id, [])
            if i < len(kids):
                stack[-1] = (node, i + 1)
                child = kids[i]
                c = out[child.span_id]
                if c.left:  # a cycle in broken data
                    continue
                c.left, c.parent = bound, out[node.span_id].left
                bound += 1
                stack.append((child, 0))
            else:
                out[node.span_id].right = bound
                bound += 1
                stack.pop()
    return out


class SpanCtx:
    """A span with the lookups ``Attribute.execute`` needs (vparquet4 ``span.AttributeFor``)."""

    __slots__ = ("_events", "_scope", "rec", "view")

    def __init__(self, rec: SpanRecord, view: TraceView) -> None:
        self.rec = rec
        self.view = view
        self._events: list[tuple[str, int, dict[str, Any]]] | None = None
        self._scope: tuple[str, str, dict[str, Any]] | None = None

    # lazily decoded parts of the span ---------------------------------------------------------
    def events(self) -> list[tuple[str, int, dict[str, Any]]]:
        if self._events is None:
            rec = self.rec
            evs = getattr(rec.proto, "events", None)
            self._events = _decoded_events(rec) if evs else []
        return self._events

    def scope(self) -> tuple[str, str, dict[str, Any]]:
        if self._scope is None:
            lookup = self.view.scope_lookup
            self._scope = lookup(self.rec.group_key) if lookup is not None else ("", "", {})
        return self._scope

    # lookups ------------------------------------------------------------------------------------
    def attribute_for(self, a: A.Attribute) -> A.Static:
        scope = a.scope
        if a.parent:
            return A.NIL_STATIC
        if scope == "span":
            return _value(self.rec.attributes, a.name)
        if scope == "resource":
            return _value(self.rec.resource_attributes, a.name)
        if scope == "event":
            return _multi(_value(e[2], a.name) for e in self.events())
        if scope == "link":
            return _multi(_value(lk.attributes, a.name) for lk in self.rec.links)
        if scope == "instrumentation":
            return _value(self.scope()[2], a.name)
        if a.intrinsic is not None:
            return self.intrinsic(a.intrinsic)
        # unscoped: the span, the resource, then events, links and the scope, in that order
        name = a.name
        rec = self.rec
        if name in rec.attributes:
            return A.static_from_value(rec.attributes[name])
        if name in rec.resource_attributes:
            return A.static_from_value(rec.resource_attributes[name])
        got = _multi(_value(e[2], name) for e in self.events())
        if got.t == A.NIL and rec.links:
            got = _multi(_value(lk.attributes, name) for lk in rec.links)
        if got.t == A.NIL and self.view.scope_lookup is not None:
            got = _value(self.scope()[2], name)
        return got

    def intrinsic(self, name: str) -> A.Static:
        rec = self.rec
        if name == "duration":
            return A.Static(A.DURATION, rec.duration_ns)
        if name == "name":
            return A.Static(A.STRING, rec.name)
        if name == "status":
            return A.Static(A.STATUS, _STATUS_FROM_OTLP.get(rec.status_code, 2))
        if name == "statusMessage":
            return A.Static(A.STRING, rec.status_message)
        if name == "kind":
            return A.Static(A.KIND, _KIND_FROM_OTLP.get(rec.kind, 0))
        v = self.view
        if name == "traceDuration":
            return A.Static(A.DURATION, v.end_ns - v.start_ns)
        if name == "rootName":
            return A.Static(A.STRING, v.root.name if v.root is not None else "")
        if name == "rootServiceName":
            return A.Static(A.STRING, v.root_service)
        if name == "trace:id":
            return IdStatic(trace_id_text(v.trace_id), v.trace_id)
        if name == "span:id":
            return IdStatic(span_id_text(rec.span_id), rec.span_id)
        if name == "span:parentID":
            return IdStatic(span_id_text(rec.parent_span_id), rec.parent_span_id or b"\0" * 8)
        if name in ("nestedSetLeft", "nestedSetRight", "nestedSetParent"):
            n = v.nested(rec)
            return A.Static(
                A.INT,
                {"nestedSetLeft": n.left, "nestedSetRight": n.right, "nestedSetParent": n.parent}[
                    name
                ],
            )
        if name == "event:name":
            return _multi(A.Static(A.STRING, e[0]) for e in self.events())
        if name == "event:timeSinceStart":
            return _multi(A.Static(A.DURATION, e[1]) for e in self.events())
        if name == "link:traceID":
            return _multi(IdStatic(trace_id_text(lk.trace_id), lk.trace_id) for lk in rec.links)
        if name == "link:spanID":
            return _multi(IdStatic(span_id_text(lk.span_id), lk.span_id) for lk in rec.links)
        if name == "instrumentation:name":
            return A.Static(A.STRING, self.scope()[0])
        if name == "instrumentation:version":
            return A.Static(A.STRING, self.scope()[1])
        return A.NIL_STATIC  # childCount, parent: refused by the validator


_EVENT_CACHE: OrderedDict[tuple[bytes, bytes, int], list[tuple[str, int, dict[str, Any]]]] = (
    OrderedDict()
)
_EVENT_CACHE_SIZE = 50_000
_event_lock = threading.Lock()


def _decoded_events(rec: SpanRecord) -> list[tuple[str, int, dict[str, Any]]]:
    """A span's events (name, time since the span's start, attributes), decoded once."""
    key = (rec.trace_id, rec.span_id, rec.start_ns)
    with _event_lock:
        got = _EVENT_CACHE.get(key)
        if got is not None:
            _EVENT_CACHE.move_to_end(key)
            return got
    from tempo_standin.model import decode_attributes

    got = [
        (e.name, int(e.time_unix_nano) - rec.start_ns, decode_attributes(e.attributes))
        for e in rec.proto.events
    ]
    with _event_lock:
        _EVENT_CACHE[key] = got
        if len(_EVENT_CACHE) > _EVENT_CACHE_SIZE:
            _EVENT_CACHE.popitem(last=False)
    return got


def _value(attrs: dict[str, Any], name: str) -> A.Static:
    if name not in attrs:
        return A.NIL_STATIC
    return A.static_from_value(attrs[name])


def _multi(values: Iterable[A.Static]) -> A.Static:
    found = [v for v in values if v.t != A.NIL]
    if not found:
        return A.NIL_STATIC
    if len(found) == 1:
        return found[0]
    return A.MultiStatic(found)


# --- conditions pushed down to storage (ast_conditions.go) ---------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    attr: A.Attribute
    op: str | None  # None: OpNone (the column is fetched, nothing is required of it)
    operand: A.Static | None = None


@dataclass
class Request:
    conditions: list[Condition] = field(default_factory=list)
    second_pass: list[Condition] = field(default_factory=list)
    all_conditions: bool = True


_STRUCTURAL = {
    ">>": "structuralDescendant", "<<": "structuralDescendant", "!>>": "structuralDescendant",
    "!<<": "structuralDescendant", "&>>": "structuralDescendant", "&<<": "structuralDescendant",
    ">": "structuralChild", "<": "structuralChild", "!>": "structuralChild",
    "!<": "structuralChild", "&>": "structuralChild", "&<": "structuralChild",
    "~": "structuralSibling", "!~": "structuralSibling", "&~": "structuralSibling",
}  # fmt: skip


def conditions_of(root: A.RootExpr) -> Request:
    req = Request()
    _extract_pipeline(root.pipeline, req)
    return req


def _extract_pipeline(p: A.Pipeline, req: Request) -> None:
    second = False
    for e in p.elements:
        if second:
            sub = Request()
            _extract(e, sub)
            req.second_pass.extend(sub.conditions + sub.second_pass)
        else:
            _extract(e, req)
        if isinstance(e, A.SelectOperation):
            second = True


def _extract(e: Any, req: Request) -> None:
    if isinstance(e, A.Pipeline):
        _extract_pipeline(e, req)
    elif isinstance(e, A.SpansetFilter):
        _extract(e.expr, req)
        if isinstance(e.expr, A.Static):
            ok, is_bool = e.expr.as_bool()
            if not (is_bool and ok):
                return
            if any(c.attr.intrinsic is not None and c.op is None for c in req.conditions):
                return
            req.conditions.append(Condition(A.intrinsic("spanStartTime"), None))
    elif isinstance(e, A.SpansetOperation):
        if e.op in _STRUCTURAL:
            req.conditions.append(Condition(A.intrinsic(_STRUCTURAL[e.op]), None))
        _extract(e.lhs, req)
        _extract(e.rhs, req)
        req.all_conditions = False
    elif isinstance(e, A.SelectOperation):
        req.second_pass.extend(Condition(a, None) for a in e.attrs)
    elif isinstance(e, (A.ScalarFilter, A.ScalarOperation)):
        _extract(e.lhs, req)
        _extract(e.rhs, req)
    elif isinstance(e, A.Aggregate):
        req.all_conditions = False
        if e.expr is not None:
            _extract(e.expr, req)
    elif isinstance(e, A.GroupOperation):
        _extract(e.expr, req)
        req.all_conditions = False
    elif isinstance(e, A.BinaryOperation):
        _extract_binary(e, req)
    elif isinstance(e, A.UnaryOperation):
        _extract(e.expr, req)
    elif isinstance(e, A.Attribute):
        req.conditions.append(Condition(e, None))


def _extract_binary(o: A.BinaryOperation, req: Request) -> None:
    lhs, rhs = o.lhs, o.rhs
    if isinstance(lhs, A.Attribute):
        if isinstance(rhs, A.Static):
            if (
                (rhs.t == A.NIL and o.op == "!=")
                or o.op not in A.BOOLEAN_OPS
                or (rhs.t == A.BOOL and o.op in ("&&", "||"))
            ):
                req.conditions.append(Condition(lhs, None))
            else:
                req.conditions.append(Condition(lhs, o.op, rhs))
        elif isinstance(rhs, A.Attribute):
            req.conditions.append(Condition(lhs, None))
            req.conditions.append(Condition(rhs, None))
        else:
            req.conditions.append(Condition(lhs, None))
            _extract(rhs, req)
    elif isinstance(lhs, A.Static):
        if isinstance(rhs, A.Static):
            return
        if isinstance(rhs, A.Attribute):
            if (
                (lhs.t == A.NIL and o.op == "!=")
                or o.op not in A.BOOLEAN_OPS
                or (lhs.t == A.BOOL and o.op in ("&&", "||"))
            ):
                req.conditions.append(Condition(rhs, None))
            else:
                # the operator is pushed down as written, with the operands' roles swapped
                req.conditions.append(Condition(rhs, o.op, lhs))
        else:
            _extract(rhs, req)
    else:
        _extract(lhs, req)
        _extract(rhs, req)
        req.all_conditions = req.all_conditions and o.op != "||"


_EXISTS_INTRINSICS = {"event:name", "event:timeSinceStart", "link:traceID", "link:spanID"}


def _check(c: Condition) -> Callable[[SpanCtx], bool] | None:
    """A condition as a test on a span; None for a pure column selector (matches all)."""
    a = c.attr
    if c.op is None:
        if a.intrinsic is not None and a.intrinsic not in _EXISTS_INTRINSICS:
            return None  # always-present columns, the structural and start-time selectors
        return lambda s: s.attribute_for(a).t != A.NIL
    operand = c.operand
    assert operand is not None
    binop = A.BinaryOperation(c.op, A.NIL_STATIC, operand)

    def test(s: SpanCtx) -> bool:
        v = s.attribute_for(a)
        if v.t == A.NIL:
            return False
        try:
            if isinstance(v, A.MultiStatic):
                return any(_true(binop._apply(x, operand)) for x in v.values)
            return _true(binop._apply(v, operand))
        except A.EvalError:
            return False

    return test


def _true(r: A.Static) -> bool:
    return r.t == A.BOOL and bool(r.v)


def condition_holds(c: Condition, span: SpanCtx) -> bool:
    check = _check(c)
    return True if check is None else check(span)


class Prefilter:
    """The spans storage hands the engine: all conditions (a plain conjunction) or any of
    them; a match-all selector among alternatives keeps every span."""

    def __init__(self, req: Request, root: A.RootExpr | None = None) -> None:
        checks = [_check(c) for c in req.conditions]
        self.keep_all = not req.conditions or (
            not req.all_conditions and any(c is None for c in checks)
        )
        self.checks = [c for c in checks if c is not None]
        self.all = req.all_conditions
        if root is not None and self.all and _implied_by_filter(root):
            self.keep_all = True  # the only filter re-tests exactly these conditions

    def __call__(self, spans: list[SpanCtx]) -> list[SpanCtx]:
        if self.keep_all:
            return spans
        checks = self.checks
        if self.all:
            return [s for s in spans if all(c(s) for c in checks)]
        return [s for s in spans if any(c(s) for c in checks)]


def _implied_by_filter(root: A.RootExpr) -> bool:
    """The pipeline is one spanset filter whose expression is a conjunction of
    ``attribute op constant`` comparisons: any span it accepts satisfies every pushed-down
    condition, so pre-filtering cannot change the result."""
    els = root.pipeline.elements
    if len(els) != 1 or not isinstance(els[0], A.SpansetFilter):
        return False

    def simple(e: Any) -> bool:
        if isinstance(e, A.BinaryOperation):
            if e.op == "&&":
                return simple(e.lhs) and simple(e.rhs)
            return (
                e.op in A.BOOLEAN_OPS
                and isinstance(e.lhs, A.Attribute)
                and isinstance(e.rhs, A.Static)
                and e.rhs.t != A.BOOL
            )
        return isinstance(e, A.Static) and e.t == A.BOOL and bool(e.v)

    return simple(els[0].expr)


def prefilter(req: Request, spans: list[SpanCtx]) -> list[SpanCtx]:
    return Prefilter(req)(spans)


# --- spansets and the pipeline (ast_execute.go) --------------------------------------------------


class Spanset:
    __slots__ = ("attributes", "scalar", "spans")

    def __init__(
        self,
        spans: list[SpanCtx],
        attributes: list[tuple[str, A.Static]] | None = None,
        scalar: A.Static | None = None,
    ) -> None:
        self.spans = spans
        self.attributes = attributes or []
        self.scalar = scalar

    def clone(self, spans: list[SpanCtx] | None = None) -> Spanset:
        return Spanset(self.spans if spans is None else spans, list(self.attributes), self.scalar)


MULTIPLE_SPANSETS = (
    "spanset operators are not supported for multiple spansets per trace. consider using coalesce()"
)


def evaluate_pipeline(p: Any, input_: list[Spanset]) -> list[Spanset]:
    if isinstance(p, A.Pipeline):
        result = input_
        for e in p.elements:
            result = _evaluate(e, result)
            if not result:
                return []
        return result
    return _evaluate(p, input_)


def _evaluate(e: Any, input_: list[Spanset]) -> list[Spanset]:
    if isinstance(e, A.Pipeline):
        return evaluate_pipeline(e, input_)
    if isinstance(e, A.SpansetFilter):
        return _filter(e, input_)
    if isinstance(e, A.SpansetOperation):
        return _spanset_op(e, input_)
    if isinstance(e, A.ScalarFilter):
        return _scalar_filter(e, input_)
    if isinstance(e, A.Aggregate):
        return _aggregate(e, input_)
    if isinstance(e, A.GroupOperation):
        return _group(e, input_)
    if isinstance(e, A.CoalesceOperation):
        return [Spanset([s for ss in input_ for s in ss.spans])]
    if isinstance(e, A.SelectOperation):
        return input_
    raise A.EvalError(f"unsupported pipeline element {e.text()}")


def _filter(f: A.SpansetFilter, input_: list[Spanset]) -> list[Spanset]:
    out = []
    expr = f.expr
    for ss in input_:
        if not ss.spans:
            continue
        matched = []
        for s in ss.spans:
            r = expr.execute(s)
            if r.t == A.BOOL and r.v:
                matched.append(s)
        if not matched:
            continue
        out.append(ss if len(matched) == len(ss.spans) else ss.clone(matched))
    return out


def _unique(lhs: list[Spanset], rhs: list[Spanset]) -> list[SpanCtx]:
    n1 = sum(len(s.spans) for s in lhs)
    n2 = sum(len(s.spans) for s in rhs)
    smaller, larger = (lhs, rhs) if n1 < n2 else (rhs, lhs)
    out: list[SpanCtx] = []
    seen: set[int] = set()
    for ss in smaller:
        for s in ss.spans:
            seen.add(id(s))
            out.append(s)
    for ss in larger:
        for s in ss.spans:
            if id(s) not in seen:
                out.append(s)
    return out


def _spanset_op(o: A.SpansetOperation, input_: list[Spanset]) -> list[Spanset]:
    out: list[Spanset] = []
    for ss in input_:
        lhs = evaluate_pipeline(o.lhs, [ss])
        rhs = evaluate_pipeline(o.rhs, [ss])
        if o.op == "&&":
            if lhs and rhs:
                _add(out, ss, _unique(lhs, rhs))
            continue
        if o.op == "||":
            if lhs or rhs:
                _add(out, ss, _unique(lhs, rhs))
            continue
        if not rhs:
            continue
        if len(lhs) > 1 or len(rhs) > 1:
            raise A.EvalError(MULTIPLE_SPANSETS)
        if not rhs[0].spans:
            continue
        lspans = lhs[0].spans if lhs else []
        _add(out, ss, _structural(o.op, lspans, rhs[0].spans))
    return out


def _add(out: list[Spanset], src: Spanset, spans: list[SpanCtx]) -> None:
    if spans:
        out.append(src.clone(spans))


class _Index:
    """Nested-set numbers of a group of spans, indexed for the structural relations."""

    def __init__(self, spans: list[SpanCtx]) -> None:
        self.n = [s.view.nested(s.rec) for s in spans]
        valid = sorted((n.left, n.right) for n in self.n if n.left and n.right)
        self.lefts = [x[0] for x in valid]
        self.max_right: list[int] = []
        m = 0
        for _, r in valid:
            m = max(m, r)
            self.max_right.append(m)
        self.left_set = {n.left for n in self.n if n.left}
        self.parent_count: dict[int, int] = {}
        for n in self.n:
            if n.parent:
                self.parent_count[n.parent] = self.parent_count.get(n.parent, 0) + 1

    def has_ancestor_of(self, n: _Nested) -> bool:
        """Some span here strictly contains ``n``."""
        if not (n.left and n.right):
            return False
        i = bisect_left(self.lefts, n.left)
        return i > 0 and self.max_right[i - 1] > n.right

    def has_descendant_of(self, n: _Nested) -> bool:
        """Some span here lies strictly inside ``n``."""
        if not (n.left and n.right):
            return False
        i = bisect_right(self.lefts, n.left)
        return i < len(self.lefts) and self.lefts[i] < n.right

    def has_parent_of(self, n: _Nested) -> bool:
        return n.parent != 0 and n.parent in self.left_set

    def has_child_of(self, n: _Nested) -> bool:
        return n.left != 0 and self.parent_count.get(n.left, 0) > 0

    def has_sibling_of(self, n: _Nested, itself: bool) -> bool:
        if n.parent == 0:
            return False
        return self.parent_count.get(n.parent, 0) - (1 if itself else 0) > 0


def _structural(op: str, lhs: list[SpanCtx], rhs: list[SpanCtx]) -> list[SpanCtx]:
    """The rhs spans in the relation (``!``: not in it; ``&``: both sides' related spans)."""
    if not lhs and not rhs:
        return []
    base = op.lstrip("!&")
    li, ri = _Index(lhs), _Index(rhs)
    lhs_ids = {id(s) for s in lhs}
    rhs_ids = {id(s) for s in rhs}

    def r_matches(i: int, s: SpanCtx) -> bool:
        n = ri.n[i]
        if base == ">>":
            return li.has_ancestor_of(n)
        if base == "<<":
            return li.has_descendant_of(n)
        if base == ">":
            return li.has_parent_of(n)
        if base == "<":
            return li.has_child_of(n)
        return li.has_sibling_of(n, id(s) in lhs_ids)

    if not op.startswith("&"):
        negate = op.startswith("!")
        return [s for i, s in enumerate(rhs) if r_matches(i, s) != negate]

    def l_matches(i: int, s: SpanCtx) -> bool:
        n = li.n[i]
        if base == ">>":
            return ri.has_descendant_of(n)
        if base == "<<":
            return ri.has_ancestor_of(n)
        if base == ">":
            return ri.has_child_of(n)
        if base == "<":
            return ri.has_parent_of(n)
        return ri.has_sibling_of(n, id(s) in rhs_ids)

    picked = [(li.n[i].left, s) for i, s in enumerate(lhs) if l_matches(i, s)]
    picked += [(ri.n[i].left, s) for i, s in enumerate(rhs) if r_matches(i, s)]
    out: list[SpanCtx] = []
    seen: set[int] = set()
    for _, s in sorted(picked, key=lambda x: x[0]):
        if id(s) not in seen:
            seen.add(id(s))
            out.append(s)
    return out


def _scalar_filter(f: A.ScalarFilter, input_: list[Spanset]) -> list[Spanset]:
    if not isinstance(f.lhs, A.Aggregate) or not isinstance(f.rhs, A.Static):
        raise A.EvalError(f"scalar filter lhs ({f.lhs.text()}) not supported")
    out = []
    for ss in _aggregate(f.lhs, input_):
        assert ss.scalar is not None
        if _bin_op(f.op, ss.scalar, f.rhs):
            out.append(ss)
    return out


def _bin_op(op: str, lhs: A.Static, rhs: A.Static) -> bool:
    """ast_execute.go binOp (scalar filters): numbers compare as floats."""
    if not A.matching_operand(lhs.t, rhs.t):
        return False
    if not (A.binary_type_valid(op, lhs.t) and A.binary_type_valid(op, rhs.t)):
        return False
    a, b = lhs.as_float(), rhs.as_float()
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == "=":
        return lhs.equals(rhs)
    if op == "!=":
        return lhs.not_equals(rhs)
    return False


def _sum_into(acc: A.Static, v: A.Static) -> A.Static:
    """Static.sumInto: only values of the accumulator's type are added."""
    if acc.t != v.t:
        return acc
    if acc.t in (A.INT, A.DURATION):
        return A.Static(acc.t, A.wrap64(acc.v + v.v))
    if acc.t == A.FLOAT:
        return A.Static(A.FLOAT, acc.v + v.v)
    return acc


def _divide(s: A.Static, n: float) -> A.Static:
    """Static.divideBy."""
    if s.t == A.INT:
        return A.Static(A.FLOAT, float(s.v % 2**64) / n)
    if s.t == A.DURATION:
        d = int(n)
        q = abs(s.v) // d if d else 0
        return A.Static(A.DURATION, q if s.v >= 0 else -q)
    if s.t == A.FLOAT:
        return A.Static(A.FLOAT, s.v / n)
    return s


def _aggregate(a: A.Aggregate, input_: list[Spanset]) -> list[Spanset]:
    out = []
    for ss in input_:
        if a.op == "count":
            scalar = A.Static(A.INT, len(ss.spans))
        else:
            assert a.expr is not None
            acc: A.Static | None = None
            count = 0
            for s in ss.spans:
                v = a.expr.execute(s)
                if v.t == A.NIL:
                    continue
                v = A.Static(v.t, v.v)
                if a.op in ("sum", "avg"):
                    acc = v if acc is None else _sum_into(acc, v)
                    count += 1
                elif a.op == "max":
                    if acc is None or v.compare(acc) > 0:
                        acc = v
                elif a.op == "min" and (acc is None or v.compare(acc) == -1):
                    acc = v
            if acc is None:
                continue
            scalar = _divide(acc, float(count)) if a.op == "avg" else acc
        cp = ss.clone()
        cp.scalar = scalar
        cp.attributes.append((a.text(), scalar))
        out.append(cp)
    return out


def _group(g: A.GroupOperation, input_: list[Spanset]) -> list[Spanset]:
    out: list[Spanset] = []
    label = g.text()
    for ss in input_:
        groups: dict[tuple[int, Any], Spanset] = {}
        for s in ss.spans:
            v = g.expr.execute(s)
            v = A.Static(v.t, v.v)
            key = v.map_key()
            grp = groups.get(key)
            if grp is None:
                grp = groups[key] = Spanset([], [*ss.attributes, (label, v)])
            grp.spans.append(s)
        out.extend(groups.values())
    return out


def is_noop(root: A.RootExpr) -> bool:
    """RootExpr.IsNoop: every element is a filter (or a spanset operation of two filters) that
    references nothing of the span and is statically false."""

    def noop_filter(x: Any) -> bool:
        if not isinstance(x, A.SpansetFilter) or x.expr.references_span():
            return False
        try:
            v = x.expr.execute(None)
        except A.EvalError:
            return False
        return v.t == A.BOOL and not v.v

    for e in root.pipeline.elements:
        if isinstance(e, A.SpansetOperation):
            if not (noop_filter(e.lhs) and noop_filter(e.rhs)):
                return False
        elif not noop_filter(e):
            return False
    return True


def run(
    root: A.RootExpr,
    view: TraceView,
    req: Request | None = None,
    pre: Prefilter | None = None,
) -> list[Spanset]:
    """The trace's result spansets (empty: no match). Raises ``A.EvalError``."""
    if pre is None:
        pre = Prefilter(req if req is not None else conditions_of(root), root)
    spans = pre(view.contexts())
    if not spans:
        return []
    return evaluate_pipeline(root.pipeline, [Spanset(spans)])
