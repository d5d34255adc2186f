"""The one place ``tracecheck.watch`` imports the rest of tracecheck's core: the smoke plan
(:mod:`tracecheck.smoke`), the report values (:mod:`tracecheck.results`) and their JSON
rendering (:mod:`tracecheck.output`). A move of any of them changes this file only.
"""

from __future__ import annotations

from tracecheck._version import __version__
from tracecheck.output import render_json
from tracecheck.results import CheckResult, Report, Status
from tracecheck.smoke.engine import select_checks
from tracecheck.smoke.plan import default_checks, smoke

__all__ = [
    "CheckResult",
    "Report",
    "Status",
    "__version__",
    "default_checks",
    "render_json",
    "select_checks",
    "smoke",
]
