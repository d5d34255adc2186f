"""``tracecheck query traceql|promql|list|run``: ad-hoc TraceQL and PromQL as tables, and the
saved queries in ``queries/``."""
