"""`tracecheck load` against the local pipeline's real collector: a short clean load is accepted
span for span. The collector's own counters (otelcol_receiver_accepted_spans per transport) are
read before and after; they must rise by exactly the spans the load says it sent, with nothing
refused, and its exporter must pass them all on to the Tempo stand-in.

The load goes to the second collector of the local pipeline (collector-spanmetrics, same build,
ports 4327/4328, metrics on 8889): kube-apiserver exports its own traces to the first one, and
the collector's counters cannot tell clients apart, so only a collector nothing else sends to
can be checked for *exactly* the spans sent.

Bounded: 10,000 spans over gRPC in 5 s and 2,000 over HTTP in 1 s, to 127.0.0.1 only.
"""

from __future__ import annotations

from typing import Any

import pytest

from tracecheck.backends.collector import CollectorClient
from tracecheck.backends.exposition import Exposition
from tracecheck.config import Settings, load_settings
from tracecheck.load import LoadSpec, run_load
from tracecheck.polling import Probe, SystemClock, poll_until


def counter(exp: Exposition, name: str, **labels: str) -> float:
    return exp.sum(name, labels)


@pytest.mark.parametrize(
    ("protocol", "rate", "duration"),
    [("grpc", 2_000, 5.0), ("http", 2_000, 1.0)],
)
def test_a_clean_load_is_accepted_span_for_span(
    endpoints: Any, protocol: str, rate: int, duration: float
) -> None:
    settings: Settings = load_settings(
        flags={
            "collector.protocol": protocol,
            "collector.endpoint": endpoints.spanmetrics_collector_grpc,
            "collector.http_url": endpoints.spanmetrics_collector_http,
            "collector.metrics_url": endpoints.spanmetrics_collector_metrics,
        }
    )
    client = CollectorClient(settings.collector)
    before = client.self_metrics()
    spec = LoadSpec(rate=rate, duration=duration, service=f"tracecheck-load-test-{protocol}")
    result = run_load(settings, spec)

    planned = int(rate * duration) // 5 * 5
    assert result.planned_spans == planned
    assert (result.sent_spans, result.sent_traces) == (planned, planned // 5)
    assert result.refusals == {} and result.errors == {} and result.unsent_spans == 0
    assert result.exit_code == 0
    # Open loop never sends faster than asked (how far behind it fell on a busy machine is
    # reported, not asserted: timing targets belong to benchmarks).
    assert 0 < result.achieved_rate <= rate, result.summary()

    after = client.self_metrics()
    name = "otelcol_receiver_accepted_spans"
    accepted = counter(after, name, receiver="otlp", transport=protocol) - counter(
        before, name, receiver="otlp", transport=protocol
    )
    refused = counter(after, "otelcol_receiver_refused_spans", receiver="otlp") - counter(
        before, "otelcol_receiver_refused_spans", receiver="otlp"
    )
    # An OK answer is given after the receiver pushed the spans into the pipeline, and the
    # counter is updated before that answer: no wait is needed for this hop.
    assert accepted == result.sent_spans
    assert refused == 0

    to_tempo = {"exporter": "otlp"}
    sent_before = before.sum("otelcol_exporter_sent_spans", to_tempo)

    def exported() -> Probe[float]:
        sent = client.self_metrics().sum("otelcol_exporter_sent_spans", to_tempo) - sent_before
        return Probe(sent >= result.sent_spans, sent, f"exporter sent +{sent:.0f}")

    outcome = poll_until(exported, 20.0, SystemClock())
    assert outcome.ok, outcome.seen
    assert outcome.value == result.sent_spans
    client.close()
