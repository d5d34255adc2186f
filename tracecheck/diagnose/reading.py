"""One question asked of a component, and its answer as a fact (:class:`Reading`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tracecheck.errors import AuthError, NotReady, TracecheckError, Unreachable

__all__ = ["Reading", "ask", "classify"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reading:
    """One question asked of a component: ``state`` is ``up`` (it answered as expected),
    ``not ready`` (it answered, and said it is not ready), ``unreachable`` (no answer: refused,
    timed out, DNS, TLS), ``forbidden`` (401/403) or ``error`` (any other unexpected answer).
    ``detail`` is what it answered, or the one-line error; ``at`` is unix seconds."""

    state: str
    at: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "up"

    @property
    def answered(self) -> bool:
        """The component answered at all (up, not ready, forbidden or an error status)."""
        return self.state != "unreachable"


def classify(exc: TracecheckError) -> str:
    """The :attr:`Reading.state` for an error (a configuration or query error is ``error``)."""
    if isinstance(exc, Unreachable):
        return "unreachable"
    if isinstance(exc, NotReady):
        return "not ready"
    if isinstance(exc, AuthError):
        return "forbidden"
    return "error"


def ask(call: Callable[[], T], now: Callable[[], float] = time.time) -> tuple[T | None, Reading]:
    """Run one read: its value and a :class:`Reading`; a tracecheck error (the backend's, or a
    configuration error such as a missing kubeconfig) becomes the reading (never raised)."""
    at = now()
    try:
        value = call()
    except TracecheckError as exc:
        return None, Reading(classify(exc), at, str(exc))
    return value, Reading("up", at, "")
