"""tracecheck: prove a kube-apiserver tracing pipeline works, end to end.

    >>> from tracecheck import load_settings, smoke
    >>> report = smoke(load_settings())          # doctest: +SKIP
    >>> report.exit_code, report.result("tempo.search").status

The names below are imported on first use, so ``import tracecheck`` (and the CLI) stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracecheck._version import __version__ as __version__

__all__ = [
    "CheckResult",
    "ExitCode",
    "Report",
    "Settings",
    "Status",
    "TracecheckError",
    "load_settings",
    "probe",
    "smoke",
]

_WHERE = {
    "CheckResult": "tracecheck.results",
    "Report": "tracecheck.results",
    "Status": "tracecheck.results",
    "ExitCode": "tracecheck.errors",
    "TracecheckError": "tracecheck.errors",
    "Settings": "tracecheck.config",
    "load_settings": "tracecheck.config",
    "smoke": "tracecheck.smoke.plan",
    "probe": "tracecheck.smoke.plan",
}

if TYPE_CHECKING:  # pragma: no cover
    from tracecheck.config import Settings, load_settings
    from tracecheck.errors import ExitCode, TracecheckError
    from tracecheck.results import CheckResult, Report, Status
    from tracecheck.smoke.plan import probe, smoke


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'tracecheck' has no attribute {name!r}")
