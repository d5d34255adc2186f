"""The one place ``tracecheck.watch`` imports the rest of tracecheck.

The watch loop runs the smoke plan and renders its report; those modules are being moved (the
smoke plan to ``tracecheck.smoke``, the report values to ``tracecheck.results``, the renderers to
``tracecheck.output``), so every such import lives here and a move changes this file only.
"""

from __future__ import annotations

from tracecheck import __version__
from tracecheck.plan import default_checks, select_checks, smoke
from tracecheck.render import render_json
from tracecheck.report import CheckResult, Report, Status

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
