"""poll_until and a 401/403: the poll ends at the first AuthError instead of at its deadline
(issue 10); other backend errors are still waited out."""

from __future__ import annotations

from tracecheck.errors import AuthError, Unreachable
from tracecheck.polling import FakeClock, Probe, poll_until


def test_an_auth_error_ends_the_poll_at_once() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def probe() -> Probe[None]:
        calls.append(clock.monotonic())
        raise AuthError("tempo", "http://t/api/search", "HTTP 401: no org id")

    outcome = poll_until(probe, 30.0, clock)
    assert not outcome.ok and isinstance(outcome.error, AuthError)
    assert outcome.attempts == 1 and calls == [0.0] and clock.sleeps == []
    assert outcome.seen == "tempo at http://t/api/search: HTTP 401: no org id"


def test_an_auth_error_after_unreachable_still_ends_it() -> None:
    clock = FakeClock()
    errors = [Unreachable("tempo", "http://t", "connection refused")] * 3
    errors.append(AuthError("tempo", "http://t", "HTTP 403: forbidden"))

    def probe() -> Probe[None]:
        raise errors.pop(0)

    outcome = poll_until(probe, 30.0, clock)
    assert outcome.attempts == 4 and isinstance(outcome.error, AuthError)
    assert outcome.elapsed < 1.0  # three short pauses, not the 30 s deadline
