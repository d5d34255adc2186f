"""``/api/search`` results for a TraceQL query, shaped as Tempo 2.9 shapes them.

grafana/tempo v2.9.0 ``pkg/traceql/engine.go`` (ExecuteSearch, asTraceSearchMetadata) and
``pkg/traceql/combine.go`` (the metadata combiner):

* each result spanset keeps its first ``spss`` spans and reports ``matched`` (all of them);
* a span carries the attributes storage fetched for it: those the query's conditions name
  (and ``select()``), except ``name``, ``duration``, ``traceDuration``, ``rootName``,
  ``rootServiceName``, ``trace:id`` and ``span:id``, keyed by the attribute's name; a value is
  only fetched when it satisfies the condition on it (or the condition only selects it);
* spanset attributes come from the pipeline (``by(...)`` groups, ``count()`` and other
  aggregates); a trace with several spansets (``by()``) lists them all in ``spanSets``, and
  ``spanSet`` is the first;
* traces are the first ``limit`` found, listed newest first by start time (the combiner sorts);
  with ``with (most_recent=true)`` they are the ``limit`` most recent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from tempo_standin.traceql import ast as A
from tempo_standin.traceql.eval import (
    Condition,
    Prefilter,
    Request,
    SpanCtx,
    Spanset,
    TraceView,
    conditions_of,
    is_noop,
    run,
    span_id_text,
    trace_id_text,
)

__all__ = ["any_value", "search_traces", "spanset_json"]

_HIDDEN = {
    "name",
    "duration",
    "traceDuration",
    "rootServiceName",
    "rootName",
    "trace:id",
    "span:id",
}


def any_value(s: A.Static) -> dict[str, Any]:
    """``Static.AsAnyValue`` in proto3 JSON."""
    t, v = s.t, s.v
    if t == A.INT:
        return {"intValue": str(v)}
    if t == A.FLOAT:
        return {"doubleValue": _json_float(v)}
    if t == A.BOOL:
        return {"boolValue": bool(v)}
    if t == A.DURATION:
        return {"stringValue": s.string(False)}
    if t in (A.STRING, A.STATUS, A.NIL, A.KIND):
        return {"stringValue": s.string(False)}
    if t in (A.INT_ARR, A.FLOAT_ARR, A.STR_ARR, A.BOOL_ARR):
        elem = {A.INT_ARR: A.INT, A.FLOAT_ARR: A.FLOAT, A.STR_ARR: A.STRING, A.BOOL_ARR: A.BOOL}[t]
        return {"arrayValue": {"values": [any_value(A.Static(elem, x)) for x in v]}}
    return {"stringValue": f"error formatting val: static has unexpected type {t}"}


def _json_float(f: float) -> float | str:
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    return f


class _Fields:
    """The attributes fetched for result spans, with the conditions that fetched them."""

    def __init__(self, req: Request) -> None:
        self.order: list[A.Attribute] = []
        self.conds: dict[A.Attribute, list[Condition]] = {}
        for c in [*req.conditions, *req.second_pass]:
            a = c.attr
            if a.intrinsic is not None and (
                a.intrinsic in _HIDDEN or a.intrinsic.startswith(("structural", "spanStartTime"))
            ):
                continue
            if a not in self.conds:
                self.order.append(a)
                self.conds[a] = []
            self.conds[a].append(c)

    def for_span(self, s: SpanCtx) -> list[dict[str, Any]]:
        out = []
        for a in self.order:
            v = a.execute(s)
            if v.t == A.NIL:
                continue
            conds = self.conds[a]
            candidates = v.values if isinstance(v, A.MultiStatic) else (v,)
            chosen: A.Static | None = None
            if any(c.op is None for c in conds):
                chosen = candidates[0]
            else:
                for cand in candidates:
                    if any(_holds(c, cand) for c in conds):
                        chosen = cand
                        break
            if chosen is None:
                continue
            key = a.intrinsic if a.intrinsic is not None else a.name
            out.append({"key": key, "value": any_value(A.Static(chosen.t, chosen.v))})
        return out


def _holds(c: Condition, v: A.Static) -> bool:
    assert c.op is not None and c.operand is not None
    try:
        r = A.BinaryOperation(c.op, v, c.operand).execute(None)
    except A.EvalError:
        return False
    return r.t == A.BOOL and bool(r.v)


def spanset_json(ss: Spanset, spss: int, fields: _Fields) -> dict[str, Any]:
    spans = []
    for s in ss.spans[:spss]:
        rec = s.rec
        doc: dict[str, Any] = {"spanID": span_id_text(rec.span_id)}
        if rec.name:
            doc["name"] = rec.name
        doc["startTimeUnixNano"] = str(rec.start_ns)
        if rec.duration_ns:
            doc["durationNanos"] = str(rec.duration_ns)
        attrs = fields.for_span(s)
        if attrs:
            doc["attributes"] = attrs
        spans.append(doc)
    out: dict[str, Any] = {"spans": spans, "matched": len(ss.spans)}
    if ss.attributes:
        out["attributes"] = [{"key": k, "value": any_value(v)} for k, v in ss.attributes]
    return out


def _trace_json(
    view: TraceView, spansets: list[Spanset], spss: int, fields: _Fields
) -> dict[str, Any]:
    doc: dict[str, Any] = {"traceID": trace_id_text(view.trace_id)}
    if view.root is not None and view.root.service:
        doc["rootServiceName"] = view.root.service
    else:
        doc["rootServiceName"] = "<root span not yet received>"  # combiner/search.go
    if view.root is not None and view.root.name:
        doc["rootTraceName"] = view.root.name
    doc["startTimeUnixNano"] = str(view.start_ns)
    duration_ms = (view.end_ns - view.start_ns) // 1_000_000
    if duration_ms:
        doc["durationMs"] = duration_ms
    sets: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    for ss in spansets:
        js = spanset_json(ss, spss, fields)
        sid = "".join(
            k + repr(v.map_key()) for k, v in ss.attributes if k.startswith("by")
        )  # combine.go spansetID
        prev = by_id.get(sid)
        if prev is None:
            by_id[sid] = js
            sets.append(js)
        elif js["matched"] > prev["matched"]:
            prev.clear()
            prev.update(js)
    doc["spanSet"] = sets[0]  # deprecated; the first of spanSets
    doc["spanSets"] = sets
    stats: dict[str, dict[str, int]] = {}
    for s in view.spans:
        st = stats.setdefault(s.service, {"spanCount": 0})
        st["spanCount"] += 1
        if s.status_code == 2:
            st["errorCount"] = st.get("errorCount", 0) + 1
    doc["serviceStats"] = stats
    return doc


def search_traces(
    root: A.RootExpr,
    views: Iterable[TraceView],
    *,
    limit: int,
    spss: int,
    on_inspect: Callable[[TraceView], None] | None = None,
) -> list[dict[str, Any]]:
    """Result traces for ``root`` over ``views`` (in storage order). Raises ``A.EvalError``."""
    if is_noop(root):
        return []
    req = conditions_of(root)
    pre = Prefilter(req, root)
    fields = _Fields(req)
    most_recent = root.most_recent
    found: list[tuple[TraceView, list[Spanset]]] = []
    for view in views:
        if on_inspect is not None:
            on_inspect(view)
        spansets = run(root, view, req, pre)
        if not spansets:
            continue
        found.append((view, spansets))
        if not most_recent and len(found) >= limit:
            break
    found.sort(key=lambda item: item[0].start_ns, reverse=True)
    if most_recent:
        found = found[:limit]
    return [_trace_json(v, ss, spss, fields) for v, ss in found]
