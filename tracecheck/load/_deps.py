"""Every import of another tracecheck module that the load package makes, in one place.

The load package sits on the backends floor's collector client and HTTP base; keeping the
imports here shows in one screen what it depends on.
"""

from __future__ import annotations

from tracecheck.backends._http import COLLECTOR_MAX_BYTES, Endpoint, HTTPBackend, is_transient
from tracecheck.backends.collector import (
    CollectorClient,
    PipelineCounters,
    decode_rpc_status,
    grpc_target,
)
from tracecheck.config import CollectorSettings, Settings
from tracecheck.errors import (
    BackendError,
    ConfigError,
    ExitCode,
    HTTPStatusError,
    Unreachable,
    UsageError,
    one_line,
)
from tracecheck.polling import Clock, FakeClock, SystemClock

__all__ = [
    "COLLECTOR_MAX_BYTES",
    "BackendError",
    "Clock",
    "CollectorClient",
    "CollectorSettings",
    "ConfigError",
    "Endpoint",
    "ExitCode",
    "FakeClock",
    "HTTPBackend",
    "HTTPStatusError",
    "PipelineCounters",
    "Settings",
    "SystemClock",
    "Unreachable",
    "UsageError",
    "decode_rpc_status",
    "grpc_target",
    "is_transient",
    "one_line",
]
