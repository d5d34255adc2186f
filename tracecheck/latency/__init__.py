"""Latency tables from spans and span-metrics: the apiserver latency table of a smoke run and
``tracecheck report apiserver``."""
