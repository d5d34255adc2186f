"""Diagnosis: what the pipeline's components say about themselves, and what follows from it.

    facts      inspection: one read of each component (reachability, versions, configuration,
               self-metrics), never raising for a component that is down
    tracing    the apiserver's TracingConfiguration, where it can be read
    hops       the pipeline's hops, the components at their ends, Block (a hop known dead)
    rules      facts -> findings (doctor) and the facts that kill a hop (early verdicts)
    watch      the liveness watch of a smoke run: outages, early verdicts
    diagnosis  after a smoke run: the first broken hop, its evidence, what follows from it
    doctor     ``tracecheck doctor``: two readings, the findings, the report

The smoke engine (:mod:`tracecheck.smoke.engine`) runs the watch and the diagnosis; the
``doctor`` command calls :func:`tracecheck.diagnose.doctor.doctor`.
"""
