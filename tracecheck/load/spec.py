"""What a load is asked to do (:class:`LoadSpec`) and what that resolves to (:class:`LoadPlan`).

:func:`plan_load` checks the request before anything is sent; each problem is one line with a
documented exit code: :class:`~tracecheck.errors.UsageError` (exit 2) for a command line that
makes no sense (missing or non-positive rate or duration, a load larger than ``--max-spans``,
a batch over the OTLP/gRPC message limit), :class:`~tracecheck.errors.ConfigError` (exit 4)
for a setting that cannot be used (protocol, compression).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from dataclasses import dataclass, field

from tracecheck.load._deps import ConfigError, Settings, UsageError
from tracecheck.load.encode import MAX_SPANS_PER_TRACE, TraceTemplate

__all__ = [
    "DEFAULT_MAX_SPANS",
    "MAX_REQUEST_BYTES",
    "SYSTEM",
    "LoadPlan",
    "LoadSpec",
    "RetryPolicy",
    "plan_load",
]

SYSTEM = "load"
DEFAULT_MAX_SPANS = 10_000_000
# grpc-go's default receive limit, which the collector's OTLP/gRPC receiver keeps unless
# max_recv_msg_size_mib is set (its OTLP/HTTP limit, 20 MiB, is larger): a request must fit.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """What to do with a refused or failed request. The default retries nothing, so every
    refusal is visible as a refusal.

    ``attempts`` extra tries per request for retryable answers only (opentelemetry-proto
    "Failures": gRPC UNAVAILABLE, DEADLINE_EXCEEDED and the like; RESOURCE_EXHAUSTED only with
    a RetryInfo; HTTP 429, 502, 503, 504), waiting ``initial`` seconds, doubling up to
    ``maximum``, or what the server asks for (RetryInfo, Retry-After) when it asks for at most
    ``maximum``. A retry holds its concurrency slot, so retries slow the schedule visibly.
    """

    attempts: int = 0
    initial: float = 0.1
    maximum: float = 5.0


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """A rate-controlled load. ``rate`` and ``duration`` are required (None: not given).

    ``rate`` is spans per second summed over all ``shards``; this process sends shard
    ``shard`` of ``shards``, i.e. ``rate / shards`` spans per second. ``max_spans`` bounds the
    whole load (all shards): a rate and duration that would exceed it are refused up front.
    ``batch_spans`` spans per request, rounded down to whole traces (at least one trace).
    ``protocol`` and ``compression`` default to the collector settings'. ``run_id`` tags every
    span (``tracecheck.run_id``); empty: a new random one (a load of several shards must give
    it, so that they share it). ``seed`` 0 derives the ID seed from the run ID.
    """

    rate: float | None
    duration: float | None
    spans_per_trace: int = 5
    batch_spans: int = 512
    concurrency: int = 4
    protocol: str | None = None
    compression: str | None = None
    max_spans: int = DEFAULT_MAX_SPANS
    service: str = "tracecheck-load"
    run_id: str = ""
    shard: int = 0
    shards: int = 1
    seed: int = 0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None  # seconds per request; None: collector.timeout
    # Past the schedule's end, keep sending late requests for at most this long (None: 5 s or
    # a quarter of the duration, whichever is longer); what is left is counted unsent.
    overrun: float | None = None


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """A checked :class:`LoadSpec` with every default resolved."""

    spec: LoadSpec
    run_id: str
    seed: int
    protocol: str  # grpc | http
    compression: str  # gzip | none
    rate: float  # spans per second sent by this process
    duration: float
    spans_per_trace: int
    traces_per_request: int
    traces: int  # traces this process sends
    requests: int
    interval: float  # seconds between two requests' due times
    timeout: float
    overrun: float
    request_bytes: int  # a full request, uncompressed

    @property
    def spans(self) -> int:
        return self.traces * self.spans_per_trace

    @property
    def spans_per_request(self) -> int:
        return self.traces_per_request * self.spans_per_trace

    def traces_in(self, request: int) -> int:
        """Traces in request number ``request`` (the last one may be partial)."""
        return min(self.traces_per_request, self.traces - request * self.traces_per_request)

    def template(self) -> TraceTemplate:
        return TraceTemplate(
            service=self.spec.service,
            run_id=self.run_id,
            shard=self.spec.shard,
            seed=self.seed,
            spans_per_trace=self.spans_per_trace,
            traces_per_request=self.traces_per_request,
        )


def _usage(cause: str) -> UsageError:
    return UsageError(SYSTEM, "", cause)


def _finite(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def plan_load(settings: Settings, spec: LoadSpec) -> LoadPlan:
    """Check ``spec`` against ``settings`` and resolve it; UsageError/ConfigError if unusable."""
    if spec.rate is None:
        raise _usage("--rate is required (spans per second)")
    if spec.duration is None:
        raise _usage("--duration is required (seconds)")
    if not _finite(spec.rate) or spec.rate <= 0:
        raise _usage(f"--rate must be a positive number of spans per second, not {spec.rate:g}")
    if not _finite(spec.duration) or spec.duration <= 0:
        raise _usage(f"--duration must be a positive number of seconds, not {spec.duration:g}")
    if not 1 <= spec.spans_per_trace <= MAX_SPANS_PER_TRACE:
        raise _usage(f"--spans-per-trace must be 1 to {MAX_SPANS_PER_TRACE}")
    if spec.batch_spans < 1:
        raise _usage("--batch-spans must be at least 1")
    if spec.concurrency < 1:
        raise _usage("--concurrency must be at least 1")
    if spec.max_spans < 1:
        raise _usage("--max-spans must be at least 1")
    if spec.shards < 1 or not 0 <= spec.shard < spec.shards:
        raise _usage(f"--shard must be 0 to {spec.shards - 1} (of --shards {spec.shards})")
    if spec.retry.attempts < 0 or spec.retry.initial < 0 or spec.retry.maximum < 0:
        raise _usage("--retry must be a non-negative number of retries")
    if spec.timeout is not None and not (_finite(spec.timeout) and spec.timeout > 0):
        raise _usage("--timeout must be a positive number of seconds")
    if not spec.service.strip():
        raise _usage("--service must not be empty")
    if spec.run_id and not _RUN_ID.fullmatch(spec.run_id):
        raise _usage(f"--run-id {spec.run_id!r}: use 1 to 63 letters, digits, '.', '_' or '-'")
    if spec.shards > 1 and not spec.run_id:
        raise _usage("--shards > 1 needs --run-id, so that every shard tags the same run")
    total = spec.rate * spec.duration
    if total > spec.max_spans:
        raise _usage(
            f"--rate {spec.rate:,.10g} x --duration {spec.duration:g} s = {total:,.0f} spans, "
            f"over --max-spans {spec.max_spans:,}"
        )
    protocol = spec.protocol or settings.collector.protocol
    if protocol not in ("grpc", "http"):
        raise ConfigError(SYSTEM, "collector.protocol", f"must be grpc or http, not {protocol!r}")
    compression = spec.compression or settings.collector.compression
    if compression not in ("gzip", "none"):
        raise ConfigError(
            SYSTEM, "collector.compression", f"must be gzip or none, not {compression!r}"
        )

    per_trace = spec.spans_per_trace
    rate = spec.rate / spec.shards
    traces = int(total / spec.shards) // per_trace
    if traces < 1:
        raise _usage(
            f"--rate x --duration gives {total / spec.shards:.0f} spans per shard, fewer than "
            f"one trace of {per_trace} spans"
        )
    per_request = max(1, spec.batch_spans // per_trace)
    run_id = spec.run_id or secrets.token_hex(6)
    seed = spec.seed or _seed_from(run_id)
    template = TraceTemplate(
        service=spec.service,
        run_id=run_id,
        shard=spec.shard,
        seed=seed,
        spans_per_trace=per_trace,
        traces_per_request=per_request,
    )
    size = template.request_size(per_request)
    if size > MAX_REQUEST_BYTES:
        raise _usage(
            f"a request of {per_request * per_trace} spans is {size / 2**20:.1f} MiB, over the "
            f"4 MiB OTLP/gRPC message limit: lower --batch-spans"
        )
    requests = -(-traces // per_request)
    overrun = spec.overrun if spec.overrun is not None else max(5.0, spec.duration / 4)
    return LoadPlan(
        spec=spec,
        run_id=run_id,
        seed=seed,
        protocol=protocol,
        compression=compression,
        rate=rate,
        duration=spec.duration,
        spans_per_trace=per_trace,
        traces_per_request=per_request,
        traces=traces,
        requests=requests,
        interval=per_request * per_trace / rate,
        timeout=spec.timeout if spec.timeout is not None else settings.collector.timeout,
        overrun=overrun,
        request_bytes=size,
    )


def _seed_from(run_id: str) -> int:
    digest = hashlib.blake2b(run_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1
