from __future__ import annotations

import pytest

from tracecheck.errors import Unreachable
from tracecheck.polling import FakeClock, Probe, poll_until


def test_quick_first_polls_then_capped_backoff() -> None:
    clock = FakeClock()
    calls = []

    def probe() -> Probe[int]:
        calls.append(clock.monotonic())
        return Probe(len(calls) == 8, len(calls), f"call {len(calls)}")

    out = poll_until(probe, 30.0, clock, initial=0.05, factor=2.0, cap=1.0)
    assert out.ok and out.value == 8 and out.attempts == 8
    assert clock.sleeps == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert out.found_at == pytest.approx(sum(clock.sleeps))
    assert out.elapsed == pytest.approx(3.55)


def test_deadline_is_never_overslept() -> None:
    clock = FakeClock()
    out = poll_until(
        lambda: Probe(False, None, "nothing"), 2.0, clock, initial=0.5, factor=2, cap=1.0
    )
    assert not out.ok and out.seen == "nothing"
    assert clock.monotonic() == pytest.approx(2.0)
    assert clock.sleeps == [0.5, 1.0, 0.5]
    assert out.attempts == 4


def test_backend_errors_are_kept_but_do_not_end_the_wait() -> None:
    clock = FakeClock()
    answers = iter([Unreachable("tempo", "http://x", "connection refused"), Probe(True, 1, "ok")])

    def probe() -> Probe[int]:
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    out = poll_until(probe, 5.0, clock)
    assert out.ok and out.error is None and out.attempts == 2


def test_last_error_is_returned_at_the_deadline() -> None:
    clock = FakeClock()

    def probe() -> Probe[int]:
        raise Unreachable("tempo", "http://x", "connection refused")

    out = poll_until(probe, 1.0, clock)
    assert not out.ok
    assert isinstance(out.error, Unreachable)
    assert out.seen == "tempo at http://x: connection refused"


def test_other_exceptions_propagate() -> None:
    def probe() -> Probe[int]:
        raise ValueError("bug")

    with pytest.raises(ValueError):
        poll_until(probe, 1.0, FakeClock())
