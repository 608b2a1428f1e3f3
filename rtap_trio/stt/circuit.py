"""A circuit breaker: stop asking an engine that keeps failing, and ask again
with backoff.

Closed, every request goes to the engine. After ``failures_to_open`` failed
requests in a row it opens: requests are refused at once (the caller sends
them to its fallback, so a dead remote costs an utterance nothing but the
local engine's time). Once ``retry_in`` has passed, the next request is let
through as a probe (half-open; one at a time, the others still refused): if
it answers the circuit closes, if it fails the wait doubles, up to
``retry_max_s``. A probe is a real utterance rather than a health check, so
what reopens the circuit is the very call that matters, and a remote that
answers ``/health`` but not transcriptions stays shut out.

Time is trio's clock, so the tests drive it with ``trio.testing.MockClock``.
Used from the trio thread only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import trio

__all__ = ["CircuitBreaker", "CircuitState", "Permit"]


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to call the engine; hand it back with exactly one of
    :meth:`CircuitBreaker.succeeded`, :meth:`~CircuitBreaker.failed` or
    :meth:`~CircuitBreaker.abandoned`."""

    #: the call is the half-open probe
    probe: bool


class CircuitBreaker:
    def __init__(self, failures_to_open: int, retry_initial_s: float, retry_max_s: float) -> None:
        if failures_to_open < 1:
            raise ValueError("failures_to_open must be at least 1")
        self._threshold = failures_to_open
        self._retry_initial = retry_initial_s
        self._retry_max = max(retry_max_s, retry_initial_s)
        self.state = CircuitState.CLOSED
        #: failed requests in a row
        self.failures = 0
        #: the wait before the next probe, once open
        self.retry_in_s = retry_initial_s
        self._retry_at = 0.0
        self._opened_at = 0.0
        #: requests answered elsewhere since the circuit opened: the one that
        #: opened it, every one refused, every failed probe
        self.diverted = 0

    def permit(self) -> Permit | None:
        """Leave to call the engine now, or None: the circuit is open, use the fallback."""
        if self.state is CircuitState.CLOSED:
            return Permit(probe=False)
        if self.state is CircuitState.OPEN and trio.current_time() >= self._retry_at:
            self.state = CircuitState.HALF_OPEN
            return Permit(probe=True)
        self.diverted += 1
        return None

    def succeeded(self, permit: Permit) -> float | None:
        """The call answered. If that closed the circuit: how long it was open."""
        self.failures = 0
        if self.state is CircuitState.CLOSED:
            return None
        # A request let through before the circuit opened may answer late and
        # close it as well as the probe can: either proves the engine is back.
        down_s = trio.current_time() - self._opened_at
        self.state = CircuitState.CLOSED
        self.retry_in_s = self._retry_initial
        return down_s

    def failed(self, permit: Permit) -> bool:
        """The call failed; whether that opened the circuit (it was closed)."""
        self.failures += 1
        now = trio.current_time()
        if permit.probe:
            self.diverted += 1
            self.retry_in_s = min(self.retry_in_s * 2, self._retry_max)
            self.state = CircuitState.OPEN
            self._retry_at = now + self.retry_in_s
            return False
        if self.state is CircuitState.CLOSED and self.failures >= self._threshold:
            self.state = CircuitState.OPEN
            self._opened_at = now
            self.diverted = 1
            self.retry_in_s = self._retry_initial
            self._retry_at = now + self.retry_in_s
            return True
        return False

    def abandoned(self, permit: Permit) -> None:
        """The call was cancelled (a budget, a preemption): it proved nothing.
        An abandoned probe lets the next request probe at once."""
        if permit.probe and self.state is CircuitState.HALF_OPEN:
            self.state = CircuitState.OPEN
            self._retry_at = trio.current_time()
