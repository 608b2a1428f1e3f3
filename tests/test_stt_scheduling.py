"""Engines lent in the order speech ended: the PriorityLimiter on trio's mock clock.

About scheduling, not speech: nothing here transcribes.
"""

from __future__ import annotations

import trio
import trio.testing

from rtap_trio.stt import PriorityLimiter


async def test_waiters_are_served_by_priority_then_arrival(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = PriorityLimiter(1)
    served: list[str] = []

    async def use(name: str, priority: float, hold_s: float = 1.0) -> None:
        async with limiter.borrow(priority):
            served.append(name)
            await trio.sleep(hold_s)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(use, "holder", 0.0)
        await trio.sleep(0.1)  # the holder has the token; the rest queue behind it
        for name, priority in (("late", 3.0), ("early", 1.0), ("middle", 2.0), ("tie", 1.0)):
            nursery.start_soon(use, name, priority)
            await trio.sleep(0.01)
        await trio.sleep(0.1)
        assert limiter.statistics().waiting == 4
    assert served == ["holder", "early", "tie", "middle", "late"]
    assert limiter.statistics().borrowed_tokens == 0


async def test_a_waiter_that_gives_up_loses_its_place_and_no_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = PriorityLimiter(1)
    served: list[str] = []

    async def use(name: str, priority: float) -> None:
        async with limiter.borrow(priority):
            served.append(name)
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(use, "holder", 0.0)
        await trio.sleep(0.1)
        with trio.move_on_after(0.5):  # a client that left while its utterance waited
            await use("gone", 1.0)
        nursery.start_soon(use, "next", 2.0)
    assert served == ["holder", "next"]
    stats = limiter.statistics()
    assert (stats.borrowed_tokens, stats.waiting) == (0, 0)


async def test_a_token_granted_as_its_waiter_is_cancelled_passes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = PriorityLimiter(1)
    served: list[str] = []
    waiter_scope = trio.CancelScope()

    async def holder() -> None:
        async with limiter.borrow(0.0):
            await trio.sleep(1)
            # Release and cancel in the same step: the grant and the
            # cancellation race, as they do when a client leaves.
            waiter_scope.cancel()

    async def cancelled_waiter() -> None:
        with waiter_scope:
            async with limiter.borrow(1.0):
                served.append("cancelled")
                await trio.sleep(1)

    async def patient() -> None:
        async with limiter.borrow(2.0):
            served.append("patient")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.sleep(0.1)
        nursery.start_soon(cancelled_waiter)
        await trio.sleep(0.1)
        nursery.start_soon(patient)
    assert served == ["patient"]
    assert limiter.statistics().borrowed_tokens == 0


async def test_a_chatty_session_cannot_push_back_speech_that_ended_earlier(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Sessions share one engine; each, like a session's STT stage with
    # max_in_flight 1, asks for it once per utterance, in turn. The chatty one
    # ends an utterance every 0.1 s, more than the engine can take (0.3 s each);
    # the others end one each. Whatever their arrival order, the engine goes to
    # the waiting utterance whose speech ended first, so a quiet session waits
    # at most for the one transcription running when it asked and for the
    # chatty session's older speech (at most one request of it, by the cap).
    limiter = PriorityLimiter(1)
    served: list[tuple[str, float, float, float]] = []  # (session, ended, asked, started)

    async def session(name: str, speech_ends: list[float], asks_late_s: float = 0.0) -> None:
        for ended in speech_ends:
            await trio.sleep(max(0.0, ended + asks_late_s - trio.current_time()))
            asked = trio.current_time()
            async with limiter.borrow(ended):
                served.append((name, ended, asked, trio.current_time()))
                await trio.sleep(0.3)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(session, "chatty", [round(0.1 * i, 1) for i in range(10)])
        nursery.start_soon(session, "quiet", [0.35])
        # Its speech ended before the quiet one's, but its request comes later
        # (a slower client, a longer preprocessing): it still goes first.
        nursery.start_soon(session, "slow", [0.3], 0.2)
    starts = {name: started for name, _, _, started in served if name != "chatty"}
    assert starts["slow"] < starts["quiet"]
    for name, _, asked, started in served:
        if name == "chatty":
            continue
        chatty_between = [s for who, _, _, s in served if who == "chatty" and asked < s < started]
        assert len(chatty_between) <= 1, (name, served)
    # Every grant went to the earliest-ended request waiting at that moment.
    for _, ended, _, started in served:
        waiting = [e for _, e, a, s in served if a < started < s]
        assert all(ended <= e for e in waiting), (ended, started, served)
