"""Prometheus HTTP API client: readiness, build info, flags, queries, exemplars, series, labels.

The response envelope is kept whole (facts from docs/reference/prometheus.md, by section):

* every envelope field is optional: missing ``warnings``/``infos`` mean none (§1); ``infos``
  exists only from 2.54 (§3.2);
* ``errorType`` ``bad_data`` (400) and ``execution`` (422) are the query's fault -> QueryError;
  ``timeout`` (503), ``internal``/``unavailable`` (500), ``canceled`` (499)... are the server's
  -> HTTPStatusError carrying errorType and error (§1);
* bodies before the API (a proxy's 401/502, the plain-text 503 of a Prometheus not yet ready)
  are not JSON; they become a one-line error with an excerpt, never a decode crash (§1);
* sample values are strings (``"NaN"``, ``"+Inf"``), timestamps float seconds (§2);
* ``query_range`` refuses more than 11,000 points per series; this client refuses first, before
  sending (§2);
* with exemplar storage off, ``query_exemplars`` still answers success with ``data: []``, so an
  empty answer says nothing about the storage: :meth:`exemplar_storage_enabled` reads the
  flags instead (§2, §3.6);
* label names outside the legacy charset must be ``U__``-escaped in the label-values path (§3.1).

Queries are POSTed as forms, so long PromQL never hits URL length limits. How much a counter
rose since a baseline is read from raw samples (:func:`counter_snapshot`,
:func:`counter_increase`), so a restarted writer or clock skew can neither hide nor fake a rise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from tracecheck.backends._http import BuildInfo, Endpoint, HTTPBackend, Reply, buildinfo_from
from tracecheck.config import PrometheusSettings
from tracecheck.errors import (
    BackendError,
    HTTPStatusError,
    NotReady,
    QueryError,
    TracecheckError,
)

__all__ = [
    "MAX_POINTS",
    "BuildInfo",
    "CounterSnapshot",
    "Exemplar",
    "ExemplarSeries",
    "PrometheusClient",
    "QueryResult",
    "RangeSeries",
    "Sample",
    "SeriesKey",
    "counter_increase",
    "counter_snapshot",
    "escape_label_name",
]

SYSTEM = "prometheus"

# Prometheus refuses (end-start)/step > 11000 with bad_data (web/api/v1/api.go; reference §2).
MAX_POINTS = 11_000

# errorTypes that mean "your query is wrong", not "the server is unwell".
_QUERY_ERRORS = frozenset({"bad_data", "execution"})


@dataclass(frozen=True, slots=True)
class Sample:
    """One instant sample. ``histogram`` holds a native histogram when the series is one."""

    labels: Mapping[str, str]
    value: float
    timestamp: float  # unix seconds
    histogram: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RangeSeries:
    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]  # (unix seconds, value)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """A query answer: ``samples`` for vector/scalar, ``series`` for matrix results."""

    result_type: str  # "vector" | "matrix" | "scalar" | "string"
    samples: tuple[Sample, ...]
    series: tuple[RangeSeries, ...]
    warnings: tuple[str, ...] = ()
    infos: tuple[str, ...] = ()
    string: str | None = None  # the value of a "string" result

    @property
    def empty(self) -> bool:
        return not self.samples and not self.series and self.string is None


@dataclass(frozen=True, slots=True)
class Exemplar:
    labels: Mapping[str, str]  # e.g. {"traceID": "<hex, leading zeros trimmed>"}
    value: float
    timestamp: float  # unix seconds


@dataclass(frozen=True, slots=True)
class ExemplarSeries:
    series_labels: Mapping[str, str]
    exemplars: tuple[Exemplar, ...] = field(default_factory=tuple)


class PrometheusClient(HTTPBackend):
    """A small client for the Prometheus HTTP API (also Mimir/Cortex with a tenant)."""

    def __init__(
        self, settings: PrometheusSettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        super().__init__(Endpoint.from_settings(SYSTEM, settings), transport=transport)

    # -- health and identity ------------------------------------------------------------------

    def ready(self, *, timeout: float | None = None) -> None:
        """Return if ``/-/ready`` answers 200; NotReady on 503 (starting or stopping)."""
        reply = self.request("GET", "/-/ready", timeout=timeout, expect=(200, 503))
        if reply.status == 503:
            # Set during shutdown (web/web.go): a restart is in progress, retry later.
            stopping = reply.headers.get("X-Prometheus-Stopping", "").lower() == "true"
            cause = "stopping" if stopping else f"HTTP 503: {self.excerpt(reply.body)}"
            raise NotReady(SYSTEM, reply.address, cause)

    def buildinfo(self, *, timeout: float | None = None) -> BuildInfo:
        """``/api/v1/status/buildinfo`` (Prometheus >= 2.14)."""
        data = self._api("GET", "/api/v1/status/buildinfo", timeout=timeout)[0]
        if not isinstance(data, dict):
            raise self._shape("/api/v1/status/buildinfo", "data is not an object")
        return buildinfo_from(data)

    def flags(self, *, timeout: float | None = None) -> Mapping[str, str]:
        """The command-line flags, ``{"enable-feature": "exemplar-storage,...", ...}``."""
        data = self._api("GET", "/api/v1/status/flags", timeout=timeout)[0]
        if not isinstance(data, dict):
            raise self._shape("/api/v1/status/flags", "data is not an object")
        return {str(k): str(v) for k, v in data.items()}

    def exemplar_storage_enabled(self, *, timeout: float | None = None) -> bool | None:
        """Whether ``--enable-feature=exemplar-storage`` is on; None when it cannot be told.

        An empty exemplars answer proves nothing (storage off still answers ``data: []``), so
        this reads the flags. None when the backend has no flags endpoint (Mimir, Thanos...:
        404) or does not report ``enable-feature``.
        """
        try:
            flags = self.flags(timeout=timeout)
        except HTTPStatusError as exc:
            if exc.status in (404, 405, 501):
                return None
            raise
        if "enable-feature" not in flags:
            return None
        # Prometheus joins repeated flags with "," (e.g. "exemplar-storage,native-histograms").
        features = {f for f in re.split(r"[,\s\[\]]+", flags["enable-feature"]) if f}
        return "exemplar-storage" in features

    # -- queries ------------------------------------------------------------------------------

    def query(
        self, query: str, *, at: float | None = None, timeout: float | None = None
    ) -> QueryResult:
        """An instant query at ``at`` (unix seconds; default: the server's now)."""
        form: dict[str, Any] = {"query": query}
        if at is not None:
            form["time"] = _ts(at)
        data, warnings, infos = self._api("POST", "/api/v1/query", data=form, timeout=timeout)
        return self._result("/api/v1/query", data, warnings, infos)

    def query_range(
        self,
        query: str,
        *,
        start: float,
        end: float,
        step: float,
        timeout: float | None = None,
    ) -> QueryResult:
        """A range query; refused locally (QueryError) if it would exceed :data:`MAX_POINTS`."""
        if not step > 0 or not math.isfinite(step):
            raise QueryError(SYSTEM, self.address, f"step must be a positive number, not {step}")
        if end < start:
            raise QueryError(SYSTEM, self.address, f"end ({end}) is before start ({start})")
        points = math.floor((end - start) / step)
        if points > MAX_POINTS:
            raise QueryError(
                SYSTEM,
                self.address,
                f"{points} points per series exceeds Prometheus's limit of {MAX_POINTS:,}; "
                f"use a step of at least {math.ceil((end - start) / MAX_POINTS)} s",
            )
        form = {"query": query, "start": _ts(start), "end": _ts(end), "step": _ts(step)}
        data, warnings, infos = self._api("POST", "/api/v1/query_range", data=form, timeout=timeout)
        return self._result("/api/v1/query_range", data, warnings, infos)

    def query_exemplars(
        self, query: str, *, start: float, end: float, timeout: float | None = None
    ) -> tuple[ExemplarSeries, ...]:
        """Exemplars of the series selected by ``query`` in [start, end].

        Empty for no selector (``data: null``) and also when exemplar storage is off (``[]``):
        see :meth:`exemplar_storage_enabled`.
        """
        form = {"query": query, "start": _ts(start), "end": _ts(end)}
        path = "/api/v1/query_exemplars"
        data = self._api("POST", path, data=form, timeout=timeout)[0]
        try:
            return tuple(
                ExemplarSeries(
                    _labels(item.get("seriesLabels")),
                    tuple(
                        Exemplar(
                            _labels(e.get("labels")), _value(e["value"]), float(e["timestamp"])
                        )
                        for e in _list(item.get("exemplars"))
                    ),
                )
                for item in _list(data)
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._shape(path, f"malformed exemplars: {exc}") from None

    def series(
        self,
        match: Sequence[str],
        *,
        start: float | None = None,
        end: float | None = None,
        timeout: float | None = None,
    ) -> tuple[Mapping[str, str], ...]:
        """Label sets of the series matching any selector in ``match`` (at least one)."""
        if isinstance(match, str):
            match = [match]
        if not match:
            raise QueryError(SYSTEM, self.address, "series needs at least one match[] selector")
        form: dict[str, Any] = {"match[]": list(match), **_range(start, end)}
        data = self._api("POST", "/api/v1/series", data=form, timeout=timeout)[0]
        try:
            return tuple(_labels(item) for item in _list(data))
        except (TypeError, ValueError, AttributeError) as exc:
            raise self._shape("/api/v1/series", f"malformed series: {exc}") from None

    def label_values(
        self,
        label: str,
        *,
        match: Sequence[str] = (),
        start: float | None = None,
        end: float | None = None,
        timeout: float | None = None,
    ) -> tuple[str, ...]:
        """Values of ``label`` (``__name__``: metric names), optionally within ``match``."""
        if isinstance(match, str):
            match = [match]
        params: dict[str, Any] = {**_range(start, end)}
        if match:
            params["match[]"] = list(match)
        path = f"/api/v1/label/{escape_label_name(label)}/values"
        data = self._api("GET", path, params=params, timeout=timeout)[0]
        try:
            return tuple(str(v) for v in _list(data))
        except TypeError as exc:
            raise self._shape(path, f"malformed label values: {exc}") from None

    # -- envelope -----------------------------------------------------------------------------

    def _api(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> tuple[Any, tuple[str, ...], tuple[str, ...]]:
        """Send a request and unwrap the envelope: (data, warnings, infos) or an error."""
        # Every status comes back here: the envelope, when there is one, explains the error better
        # than the status; 401/403 stay AuthError whatever the body says.
        reply = self.request(
            method, path, params=params, data=data, timeout=timeout,
            headers={"Accept": "application/json"}, expect=range(100, 600),
        )  # fmt: skip
        if reply.status in (401, 403):
            raise self.status_error(reply)
        envelope = self._envelope(reply)
        if envelope is None:  # not JSON: a proxy page, the plain-text "Service Unavailable"...
            if 200 <= reply.status < 300:
                self.decode_json(reply)  # raises ProtocolError with the excerpt
            raise self.status_error(reply)
        status = envelope.get("status")
        if status == "error" or not 200 <= reply.status < 300:
            raise self._api_error(reply, envelope)
        if status != "success":
            raise self._shape(path, f"unexpected status {status!r}")
        return (
            envelope.get("data"),
            _strings(envelope.get("warnings")),
            _strings(envelope.get("infos")),
        )

    def _envelope(self, reply: Reply) -> dict[str, Any] | None:
        try:
            data = self.decode_json(reply)
        except BackendError:
            return None
        return data if isinstance(data, dict) else None

    def _api_error(self, reply: Reply, envelope: Mapping[str, Any]) -> TracecheckError:
        error_type = str(envelope.get("errorType", "") or "")
        error = str(envelope.get("error", "") or "") or self.excerpt(reply.body)
        detail = f"{error_type}: {error}" if error_type else error
        if error_type in _QUERY_ERRORS:
            return QueryError(SYSTEM, reply.address, self.scrub(detail))
        return self.status_error(reply, detail)

    def _result(
        self, path: str, data: Any, warnings: tuple[str, ...], infos: tuple[str, ...]
    ) -> QueryResult:
        try:
            return _decode_result(data, warnings, infos)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise self._shape(path, f"malformed query result: {exc}") from None

    def _shape(self, path: str, cause: str) -> BackendError:
        return self.protocol_error(self.address.rstrip("/") + path, cause)


def _decode_result(data: Any, warnings: tuple[str, ...], infos: tuple[str, ...]) -> QueryResult:
    if data is None:
        return QueryResult("", (), (), warnings, infos)
    result_type = str(data["resultType"])
    result = data.get("result")
    if result_type == "vector":
        samples = tuple(_sample(item) for item in _list(result))
        return QueryResult(result_type, samples, (), warnings, infos)
    if result_type == "matrix":
        series = tuple(_range_series(item) for item in _list(result))
        return QueryResult(result_type, (), series, warnings, infos)
    if result_type == "scalar":
        ts, value = result
        return QueryResult(
            result_type, (Sample({}, _value(value), float(ts)),), (), warnings, infos
        )
    if result_type == "string":
        ts, text = result
        return QueryResult(result_type, (), (), warnings, infos, string=str(text))
    raise ValueError(f"unknown resultType {result_type!r}")


def _sample(item: Mapping[str, Any]) -> Sample:
    labels = _labels(item.get("metric"))
    if "value" in item:
        ts, value = item["value"]
        return Sample(labels, _value(value), float(ts))
    # A native histogram instead of a float value (§2): value is its observation count.
    ts, hist = item["histogram"]
    return Sample(labels, _value(hist.get("count", "NaN")), float(ts), histogram=hist)


def _range_series(item: Mapping[str, Any]) -> RangeSeries:
    labels = _labels(item.get("metric"))
    points = [(float(ts), _value(v)) for ts, v in _list(item.get("values"))]
    points += [
        (float(ts), _value(h.get("count", "NaN"))) for ts, h in _list(item.get("histograms"))
    ]
    points.sort()
    return RangeSeries(labels, tuple(points))


def _value(raw: Any) -> float:
    """A sample value: a string ("1.5", "NaN", "+Inf", "-Inf") or, leniently, a number."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ValueError(f"bad sample value {raw!r}")
    return float(raw)


def _labels(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TypeError(f"expected a label object, got {type(raw).__name__}")
    return {str(k): str(v) for k, v in raw.items()}


def _list(raw: Any) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TypeError(f"expected a list, got {type(raw).__name__}")
    return raw


def _strings(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, list):
        return tuple(str(x) for x in raw)
    return ()


def _ts(value: float) -> str:
    """A float as Prometheus wants it: plain decimal, no exponent."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _range(start: float | None, end: float | None) -> dict[str, str]:
    out = {}
    if start is not None:
        out["start"] = _ts(start)
    if end is not None:
        out["end"] = _ts(end)
    return out


_LEGACY_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def escape_label_name(name: str) -> str:
    """A label name for the ``/api/v1/label/<name>/values`` path.

    Legacy names pass unchanged (so 2.x works). Others get Prometheus 3's value-encoding
    escaping: ``U__`` prefix, ``_`` doubled, any other character outside the legacy set
    ``[a-zA-Z0-9:]`` (and a leading digit) written as ``_<hex code point>_``
    (prometheus/docs escaping_schemes.md).

    >>> escape_label_name("service.name")
    'U__service_2e_name'
    """
    if _LEGACY_NAME.match(name):
        return name
    out = ["U__"]
    for i, char in enumerate(name):
        if char == "_":
            out.append("__")
        elif char.isascii() and (char.isalpha() or char == ":" or (char.isdigit() and i > 0)):
            out.append(char)
        else:
            out.append(f"_{ord(char):x}_")
    return "".join(out)


# -- counter increases ----------------------------------------------------------------------------


class PromQuerier(Protocol):
    """What the counter functions need: an instant query (a fake in tests)."""

    def query(
        self, query: str, *, at: float | None = ..., timeout: float | None = ...
    ) -> QueryResult: ...


SeriesKey = frozenset[tuple[str, str]]

#: How far back the baseline looks for a series' last sample (Prometheus's default lookback).
LOOKBACK_S = 300


@dataclass(frozen=True, slots=True)
class CounterSnapshot:
    selector: str
    taken_at: float  # unix seconds (tracecheck's clock) when the baseline was read
    last: Mapping[SeriesKey, tuple[float, float]]  # per series: (sample timestamp, value)


def _key(labels: Mapping[str, str]) -> SeriesKey:
    return frozenset(labels.items())


def counter_snapshot(
    prom: PromQuerier, selector: str, *, now: float, timeout: float | None = None
) -> CounterSnapshot:
    """The last sample of every series matching ``selector`` (a plain series selector)."""
    result = prom.query(f"{selector}[{LOOKBACK_S}s]", timeout=timeout)
    last = {_key(s.labels): s.points[-1] for s in result.series if s.points}
    return CounterSnapshot(selector, now, last)


def counter_increase(
    prom: PromQuerier, base: CounterSnapshot, *, now: float, timeout: float | None = None
) -> dict[SeriesKey, float]:
    """Per series, how much it rose after ``base`` (series new since then start from 0).

    Robust to resets and to clock skew. An instant query gives a counter's latest value, which
    is not enough: when the writer (Tempo's metrics-generator, a collector connector) restarts,
    or drops and recreates a series, the series starts again from 0 under the same labels, and
    "after - before" can read 0 or less although the spans were counted. So both the baseline
    (:func:`counter_snapshot`) and this reading fetch the raw samples (``selector[window]``),
    and the increase is summed sample by sample after the baseline's last sample, a drop
    counting as a reset (the new value is all increase), as PromQL's ``increase()`` does but
    without its extrapolation. Samples are compared by their own timestamps, written by the
    generator's clock, so skew between that clock and tracecheck's does not matter.
    """
    window = max(60, math.ceil(now - base.taken_at) + 60)
    result = prom.query(f"{base.selector}[{window}s]", timeout=timeout)
    out: dict[SeriesKey, float] = {}
    for s in result.series:
        key = _key(s.labels)
        t0, prev = base.last.get(key, (-math.inf, 0.0))
        rose = 0.0
        for t, v in s.points:
            if t <= t0:
                continue
            rose += v - prev if v >= prev else v
            prev = v
        out[key] = rose
    return out
