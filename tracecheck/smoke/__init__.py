"""``tracecheck smoke`` and ``tracecheck apiserver probe``: the plan of checks that proves spans
and span-metrics flow through the pipeline, and says which hop is broken when they do not.

    engine            Check, SmokeContext, the runner (stages, dependencies, deadlines)
    pipeline_checks   preflights, the synthetic trace's send, collector/Tempo/Prometheus checks
    apiserver_checks  the apiserver leg (traced requests, their spans and span-metrics)
    plan              default_checks(), smoke(), probe()
    synth             the deterministic synthetic trace
"""
