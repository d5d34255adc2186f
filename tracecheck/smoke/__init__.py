"""``tracecheck smoke`` and ``tracecheck apiserver probe``: the plan of checks that proves spans
and span-metrics flow through the pipeline, and says which hop is broken when they do not."""
