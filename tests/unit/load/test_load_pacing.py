"""Open-loop pacing on an injected clock: requests go out on schedule, a slow collector makes the
generator fall behind visibly (lag, late requests, spans never sent), never silently."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracecheck.config import Settings
from tracecheck.load import LoadProgress, LoadSpec, RetryPolicy, run_load
from tracecheck.load.send import OK, Outcome
from tracecheck.polling import FakeClock


class FakeSender:
    """Answers from a script; each send takes ``takes`` seconds of the fake clock."""

    protocol = "grpc"
    address = "fake:4317"

    def __init__(
        self, clock: FakeClock, takes: float = 0.0, answer: Callable[[int], Outcome] | None = None
    ) -> None:
        self.clock = clock
        self.takes = takes
        self.answer = answer or (lambda i: OK)
        self.sent_at: list[float] = []
        self.spans: list[int] = []
        self.preflights = 0

    def preflight(self, timeout: float) -> None:
        self.preflights += 1

    def send(self, body: bytes, timeout: float) -> Outcome:
        self.sent_at.append(self.clock.monotonic())
        request = ExportTraceServiceRequest.FromString(body)
        self.spans.append(sum(len(ss.spans) for ss in request.resource_spans[0].scope_spans))
        outcome = self.answer(len(self.sent_at) - 1)
        self.clock.advance(self.takes)
        return outcome

    def close(self) -> None:
        pass


def test_on_schedule_requests_go_out_at_their_due_times() -> None:
    clock = FakeClock()
    sender = FakeSender(clock, takes=0.01)
    seen: list[LoadProgress] = []
    # 800 spans/s in requests of 100 spans: one request every 0.125 s for 2.5 s.
    spec = LoadSpec(rate=800, duration=2.5, batch_spans=100, concurrency=1)
    result = run_load(Settings(), spec, clock=clock, sender=sender, progress=seen.append)
    assert sender.preflights == 1
    assert sender.sent_at == [k * 0.125 for k in range(20)]
    assert sender.spans == [100] * 20
    assert (result.sent_spans, result.sent_traces, result.sent_requests) == (2000, 400, 20)
    assert result.planned_spans == 2000 and result.unsent_spans == 0
    assert result.late_requests == 0 and result.max_lag_s == 0 and result.end_lag_s == 0
    assert result.achieved_rate == pytest.approx(800)
    assert result.clean and not result.behind and result.exit_code == 0
    assert [round(p.elapsed_s, 3) for p in seen] == [1.01, 2.01]
    assert [p.due_spans for p in seen] == [900, 1700]
    assert all(p.behind_s == 0 for p in seen)


def test_a_slow_collector_makes_the_generator_fall_behind_visibly() -> None:
    clock = FakeClock()
    sender = FakeSender(clock, takes=0.25)  # twice the interval, one request at a time
    seen: list[LoadProgress] = []
    spec = LoadSpec(rate=800, duration=2.5, batch_spans=100, concurrency=1, overrun=0.5)
    result = run_load(Settings(), spec, clock=clock, sender=sender, progress=seen.append)
    # Dispatched back to back, each later than the one before; past the schedule's end (2.375 s)
    # plus the 0.5 s overrun nothing more is sent.
    assert sender.sent_at == [k * 0.25 for k in range(12)]
    assert result.sent_spans == 1200
    assert result.unsent_spans == 800
    assert result.sent_spans + result.unsent_spans == result.planned_spans
    assert result.late_requests == 11  # all but the first, each 0.125 s later than the last
    assert result.max_lag_s == result.end_lag_s == 11 * 0.125
    assert result.mean_lag_s == pytest.approx(sum(k * 0.125 for k in range(12)) / 12)
    assert result.behind and not result.clean and result.exit_code == 1
    assert result.achieved_rate == pytest.approx(1200 / 3.0)
    assert seen and seen[-1].behind_s > 0.5
    assert "800 spans never sent" in result.summary()


def test_concurrency_sends_while_earlier_requests_wait_for_their_answer() -> None:
    # Real threads on the real clock: 4 workers; every answer takes 3 intervals, so the schedule
    # can only be kept by overlapping requests. (How well it is kept is the benchmark's
    # business, not a unit test's: only the overlap is asserted.)
    import threading

    from tracecheck.polling import SystemClock

    class Slow(FakeSender):
        def __init__(self) -> None:
            super().__init__(FakeClock())
            self.lock = threading.Lock()
            self.in_flight = self.most = 0

        def send(self, body: bytes, timeout: float) -> Outcome:
            with self.lock:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
            SystemClock().sleep(0.06)
            with self.lock:
                self.in_flight -= 1
            return OK

    sender = Slow()
    spec = LoadSpec(rate=5000, duration=0.4, batch_spans=100, concurrency=4)
    result = run_load(Settings(), spec, clock=SystemClock(), sender=sender)
    assert result.sent_requests == 20 and result.sent_spans == 2000
    assert 2 <= sender.most <= 4


def test_refusals_and_errors_are_counted_and_spans_add_up() -> None:
    clock = FakeClock()
    script = [
        OK,
        Outcome("refused", "RESOURCE_EXHAUSTED"),
        Outcome("refused", "UNAVAILABLE", retryable=True),
        Outcome("error", "gRPC INVALID_ARGUMENT"),
        Outcome("ok", rejected=7, message="7 spans too old"),
    ]
    sender = FakeSender(clock, answer=lambda i: script[i % 5])
    spec = LoadSpec(rate=1000, duration=1, batch_spans=100, concurrency=1)
    result = run_load(Settings(), spec, clock=clock, sender=sender)
    assert {k: (v.requests, v.spans) for k, v in result.refusals.items()} == {
        "RESOURCE_EXHAUSTED": (2, 200),
        "UNAVAILABLE": (2, 200),
    }
    assert result.refused_spans == 400 == result.refused_final_spans
    assert result.errors == {"gRPC INVALID_ARGUMENT": 2}
    assert result.failed_spans == 200
    assert result.rejected_spans == 14
    assert result.sent_spans == 400 - 14
    assert (
        result.sent_spans
        + result.rejected_spans
        + result.refused_final_spans
        + result.failed_spans
        + result.unsent_spans
        == result.planned_spans
        == 1000
    )
    assert result.retries == 0  # the default policy retries nothing
    assert result.messages == ("7 spans too old",)
    assert result.exit_code == 1


def test_a_retry_policy_resends_retryable_refusals_and_counts_each_attempt() -> None:
    clock = FakeClock()
    answers = iter(
        [
            Outcome("refused", "UNAVAILABLE", retryable=True),
            Outcome("refused", "UNAVAILABLE", retryable=True),
            OK,
            Outcome("refused", "RESOURCE_EXHAUSTED", retryable=True, wait=0.5),
            OK,
            Outcome("refused", "RESOURCE_EXHAUSTED"),  # no RetryInfo: not retryable
        ]
    )
    sender = FakeSender(clock, answer=lambda i: next(answers))
    spec = LoadSpec(
        rate=1000,
        duration=0.3,
        batch_spans=100,
        concurrency=1,
        retry=RetryPolicy(attempts=3, initial=0.1, maximum=2.0),
    )
    result = run_load(Settings(), spec, clock=clock, sender=sender)
    assert result.retries == 3
    assert {k: v.requests for k, v in result.refusals.items()} == {
        "UNAVAILABLE": 2,
        "RESOURCE_EXHAUSTED": 2,
    }
    assert result.sent_spans == 200 and result.refused_final_spans == 100
    # Backoff 0.1 then 0.2 s; the server's RetryInfo asked for 0.5 s.
    retry_waits = [s for s in clock.sleeps if s in (0.1, 0.2, 0.5)]
    assert retry_waits[:3] == [0.1, 0.2, 0.5]


def test_cancel_stops_the_load_and_counts_the_rest_unsent() -> None:
    import threading

    clock = FakeClock()
    cancel = threading.Event()

    def answer(i: int) -> Outcome:
        if i == 2:
            cancel.set()
        return OK

    sender = FakeSender(clock, answer=answer)
    spec = LoadSpec(rate=1000, duration=1, batch_spans=100, concurrency=1)
    result = run_load(Settings(), spec, clock=clock, sender=sender, cancel=cancel)
    assert result.cancelled and result.exit_code == 130
    assert result.sent_requests == 3 and result.unsent_spans == 700


def test_the_result_renders_as_json_data_and_a_summary() -> None:
    import json

    clock = FakeClock()
    script = [OK, Outcome("refused", "UNAVAILABLE", message="data refused due to high memory")]
    sender = FakeSender(clock, answer=lambda i: script[i % 2])
    spec = LoadSpec(rate=1000, duration=0.4, batch_spans=100, concurrency=1, run_id="r-7")
    result = run_load(Settings(), spec, clock=clock, sender=sender)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["run_id"] == "r-7" and data["address"] == "fake:4317"
    assert data["refusals"] == {"UNAVAILABLE": {"requests": 2, "spans": 200}}
    assert (data["sent_spans"], data["refused_spans"], data["exit_code"]) == (200, 200, 1)
    assert data["late_after_s"] == 0.1 and data["behind"] is False
    text = result.summary()
    assert "sent      200 of 400 spans (40 traces, 2 requests)" in text
    assert "refused   UNAVAILABLE 2 requests / 200 spans; given up 200 spans" in text
    assert "server said: data refused due to high memory" in text


def test_importing_the_load_package_keeps_grpc_and_protobuf_unloaded() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tracecheck.load; "
        "print(sorted(m for m in ('grpc', 'google.protobuf', 'opentelemetry') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_exception_in_a_sender_stops_the_load_and_propagates() -> None:
    from tracecheck.errors import ConfigError

    clock = FakeClock()

    def answer(i: int) -> Outcome:
        if i == 1:
            raise ConfigError("collector", "fake:4317", "bad header")
        return OK

    sender = FakeSender(clock, answer=answer)
    spec = LoadSpec(rate=1000, duration=1, batch_spans=100, concurrency=2)
    with pytest.raises(ConfigError, match="bad header"):
        run_load(Settings(), spec, clock=clock, sender=sender)
