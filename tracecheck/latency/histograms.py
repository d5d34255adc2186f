"""Histogram arithmetic and the apiserver's metric labels, for the latency report.

* :func:`histogram_quantile` -- Prometheus's ``histogram_quantile`` over cumulative buckets;
* :func:`bucket_width` -- the width of the bucket holding a value (how far a span-metric
  quantile may be from the exact one);
* :func:`apiserver_endpoint` -- the span name a series of ``apiserver_request_*`` counts.

Pure functions over numbers and label sets; no backend, no pandas.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["apiserver_endpoint", "bucket_width", "histogram_quantile"]

# verb label -> HTTP method of the span name (names use the method: docs/reference/apiserver.md
# §5.1).
_METHOD_OF_VERB = {
    "GET": "GET",
    "LIST": "GET",
    "WATCH": "GET",
    "WATCHLIST": "GET",
    "POST": "POST",
    "CREATE": "POST",
    "PUT": "PUT",
    "UPDATE": "PUT",
    "PATCH": "PATCH",
    "APPLY": "PATCH",
    "DELETE": "DELETE",
    "DELETECOLLECTION": "DELETE",
}


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus's ``histogram_quantile`` over cumulative ``(upper bound, count)`` buckets.

    Linear interpolation inside the bucket holding rank ``q * total`` (the first bucket starts
    at 0); a rank in the +Inf bucket gives the largest finite bound; counts that decrease
    (scrapes at different times) are made monotonic first. NaN without observations.
    """
    items = sorted((float(le), float(c)) for le, c in buckets)
    if len(items) < 2 or not math.isinf(items[-1][0]):
        return math.nan
    counts: list[float] = []
    for _, c in items:
        counts.append(max(c, counts[-1]) if counts else c)
    total = counts[-1]
    if total <= 0 or math.isnan(total):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    rank = q * total
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if i == len(items) - 1:
        return items[-2][0]
    upper = items[i][0]
    if i == 0 and upper <= 0:
        return upper
    lower = 0.0 if i == 0 else items[i - 1][0]
    below = 0.0 if i == 0 else counts[i - 1]
    in_bucket = counts[i] - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def bucket_width(value: float, bounds: Sequence[float]) -> float | None:
    """Width of the bucket (between consecutive finite ``bounds``, first from 0) that holds
    ``value``; None above the last bound or for NaN."""
    if value is None or math.isnan(value):
        return None
    lower = 0.0
    for upper in sorted(bounds):
        if value <= upper:
            return upper - lower
        lower = upper
    return None


def apiserver_endpoint(labels: Mapping[str, str], known: Iterable[str] = ()) -> str | None:
    """The span name (docs/reference/apiserver.md §5.1) a series of ``apiserver_request_*`` counts.

    ``<METHOD> /<api|apis/group>/<version>[/namespaces/{:namespace}]/<resource>[/{:name}]
    [/<subresource>]``; a non-resource request is the method alone. The metric's ``scope`` is
    ``namespace``, ``cluster`` or ``resource`` (a named object, or a create), which does not say
    whether a named resource is namespaced: the form found among ``known`` span names wins,
    else the namespaced one. None for a verb without a method (e.g. CONNECT).
    """
    method = _METHOD_OF_VERB.get(labels.get("verb", "").upper())
    if method is None:
        return None
    resource = labels.get("resource", "")
    if not resource:
        return method
    group, version = labels.get("group", ""), labels.get("version", "")
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    scope = labels.get("scope", "")
    named = scope == "resource" and method != "POST"
    tail = f"/{resource}" + ("/{:name}" if named else "")
    if labels.get("subresource"):
        tail += f"/{labels['subresource']}"
    namespaced = f"{method} {prefix}/namespaces/{{:namespace}}{tail}"
    cluster = f"{method} {prefix}{tail}"
    if scope == "namespace":
        return namespaced
    if scope == "cluster":
        return cluster
    known_set = set(known)
    if cluster in known_set and namespaced not in known_set:
        return cluster
    if namespaced in known_set:
        return namespaced
    return cluster if resource == "namespaces" else namespaced
