"""Lending a few engines to many callers, most urgent first.

A :class:`trio.CapacityLimiter` serves waiters in arrival order. Sessions want
the order their speech ended in instead: an utterance that ended earlier has
waited longer for its answer, whichever session it came from, and one chatty
session cannot push the others back by asking often. :class:`PriorityLimiter`
lends its tokens to the waiter with the lowest priority value first, arrival
order breaking ties.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import trio

__all__ = ["PriorityLimiter", "PriorityLimiterStatistics"]


@dataclass(order=True, slots=True)
class _Waiter:
    priority: float
    arrival: int
    granted: trio.Event = field(compare=False, default_factory=trio.Event)
    #: the waiter gave up (cancelled) before it was granted a token
    gone: bool = field(compare=False, default=False)


@dataclass(frozen=True, slots=True)
class PriorityLimiterStatistics:
    total_tokens: int
    borrowed_tokens: int
    waiting: int


class PriorityLimiter:
    def __init__(self, total_tokens: int) -> None:
        if total_tokens < 1:
            raise ValueError("a limiter needs at least one token")
        self._total = total_tokens
        self._borrowed = 0
        self._waiters: list[_Waiter] = []
        self._arrivals = itertools.count()

    @asynccontextmanager
    async def borrow(self, priority: float) -> AsyncIterator[None]:
        """Hold one token for the ``async with`` body; wait for it by priority."""
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def borrow_nowait(self) -> Iterator[None]:
        """Hold a free token for the ``with`` body; ``trio.WouldBlock`` if none is free
        now or anyone waits (who would then wait longer)."""
        if self._borrowed >= self._total or self._live_waiters():
            raise trio.WouldBlock
        self._borrowed += 1
        try:
            yield
        finally:
            self._release()

    @property
    def waiting(self) -> bool:
        """Someone waits for a token."""
        return self._live_waiters()

    async def _acquire(self, priority: float) -> None:
        if self._borrowed < self._total and not self._live_waiters():
            # As trio.Lock does: a cancellation is taken before the token, never
            # after it (it would leak the token: an engine lost for good).
            await trio.lowlevel.checkpoint_if_cancelled()
            self._borrowed += 1
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter(priority, next(self._arrivals))
        heapq.heappush(self._waiters, waiter)
        try:
            await waiter.granted.wait()
        except BaseException:
            if waiter.granted.is_set():
                self._release()  # granted as we were cancelled: pass it on
            else:
                waiter.gone = True
            raise

    def _live_waiters(self) -> bool:
        while self._waiters and self._waiters[0].gone:
            heapq.heappop(self._waiters)
        return bool(self._waiters)

    def _release(self) -> None:
        # The token goes straight to the most urgent live waiter, if any.
        if self._live_waiters():
            heapq.heappop(self._waiters).granted.set()
        else:
            self._borrowed -= 1

    def statistics(self) -> PriorityLimiterStatistics:
        return PriorityLimiterStatistics(
            total_tokens=self._total,
            borrowed_tokens=self._borrowed,
            waiting=sum(1 for waiter in self._waiters if not waiter.gone),
        )
