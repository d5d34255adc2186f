"""One module per external system the tool talks to: the OpenTelemetry Collector, Tempo,
Prometheus and kube-apiserver, each a small client over the shared HTTP base in ``_http``."""
