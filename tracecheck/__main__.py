"""``python -m tracecheck``: the same as the ``tracecheck`` console script."""

from tracecheck.cli import main

main()
