"""Every import of another tracecheck module that the load package makes, in one place.

The sending half sits on the backends floor's collector client and HTTP base; the accounting
half reads every backend (collector and Tempo self-metrics, TraceQL, Prometheus counters) and
returns the same :class:`Report` smoke does, so it renders in every smoke ``--output`` format.
Keeping the imports here shows in one screen what the package depends on. (The clients are
imported by the modules that use them only when an accounting runs.)
"""

from __future__ import annotations

from tracecheck._version import __version__
from tracecheck.backends import Backends
from tracecheck.backends._http import COLLECTOR_MAX_BYTES, Endpoint, HTTPBackend, is_transient
from tracecheck.backends.collector import (
    CollectorClient,
    PipelineCounters,
    decode_rpc_status,
    grpc_target,
)
from tracecheck.backends.exposition import Exposition
from tracecheck.backends.prometheus import CounterSnapshot, counter_increase, counter_snapshot
from tracecheck.backends.tempo import Span, Trace
from tracecheck.config import CollectorSettings, Settings
from tracecheck.errors import (
    BackendError,
    ConfigError,
    ExitCode,
    HTTPStatusError,
    TracecheckError,
    Unreachable,
    UsageError,
    one_line,
    redact_url,
)
from tracecheck.polling import Clock, FakeClock, SystemClock
from tracecheck.results import CheckResult, Report, Status
from tracecheck.spanmetrics import NAMES_REGEX, Naming, candidates, quote

__all__ = [
    "COLLECTOR_MAX_BYTES",
    "NAMES_REGEX",
    "BackendError",
    "Backends",
    "CheckResult",
    "Clock",
    "CollectorClient",
    "CollectorSettings",
    "ConfigError",
    "CounterSnapshot",
    "Endpoint",
    "ExitCode",
    "Exposition",
    "FakeClock",
    "HTTPBackend",
    "HTTPStatusError",
    "Naming",
    "PipelineCounters",
    "Report",
    "Settings",
    "Span",
    "Status",
    "SystemClock",
    "Trace",
    "TracecheckError",
    "Unreachable",
    "UsageError",
    "__version__",
    "candidates",
    "counter_increase",
    "counter_snapshot",
    "decode_rpc_status",
    "grpc_target",
    "is_transient",
    "one_line",
    "quote",
    "redact_url",
]
