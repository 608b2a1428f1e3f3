"""Engines lent in the order speech ended, finals first: the PriorityLimiter and
the pool on trio's mock clock.

About scheduling, not speech: the pool runs over TimedEngine, which takes a set
time per utterance and honours aborts as a real engine must.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
import trio.testing

from rtap_trio.clock import now
from rtap_trio.errors import SttSkippedError, SttTimeoutError
from rtap_trio.items import EarlyTranscript, EndReason, Float32, SttResult, Transcription, Utterance
from rtap_trio.settings import PreprocessSettings, SttSettings
from rtap_trio.stages.speculative import SpeculativeTranscriber
from rtap_trio.stages.stt import SttStage
from rtap_trio.stt import EngineCapabilities, FinalsForeseen, PriorityLimiter, SttPool
from rtap_trio.testing import detached_context
from rtap_trio.transport.outbox import Outbox
from rtap_trio.transport.schemas import EventMessage, EventType, Stream

from .timed_engine import Call, TimedEngine, utterance


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


async def test_a_borrow_cancelled_as_it_starts_takes_no_token() -> None:
    # A free token and a cancellation already pending (a session cancelled
    # while its utterance was being preprocessed): the borrow raises Cancelled
    # and the token stays free. It used to be taken before the checkpoint that
    # raised, and lost for good: every later final waited for ever.
    limiter = PriorityLimiter(1)
    entered = False
    with trio.CancelScope() as scope:
        scope.cancel()
        async with limiter.borrow(0.0):
            entered = True
    assert scope.cancelled_caught and not entered
    assert limiter.statistics().borrowed_tokens == 0
    with trio.fail_after(1):
        async with limiter.borrow(0.0):
            pass


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


# --------------------------------------------------------------------------- the pool
#
# The pool over TimedEngine: what the scheduling does, whichever engine runs
# the words. Times are trio's mock clock, so they are exact, not measured.


async def _outcome(
    pool: SttPool, audio: Float32, outcome: dict[str, str], key: str, **how: Any
) -> None:
    """Speculative work; how it ended goes in ``outcome[key]``."""
    try:
        await pool.transcribe(audio, speculative=True, **how)
        outcome[key] = "finished"
    except SttSkippedError as exc:
        outcome[key] = exc.reason


async def test_finals_are_served_in_the_order_their_speech_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = TimedEngine(seconds=1.0)
    pool = SttPool([engine])
    results: dict[int, SttResult] = {}

    async def final(number: int, ended: float) -> None:
        results[number] = await pool.transcribe(utterance(number), priority=ended)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(final, 0, 0.0)
        await trio.sleep(0.1)  # it has the engine; the rest queue behind it
        for number, ended in ((1, 3.0), (2, 1.0), (3, 2.0), (4, 1.0)):
            nursery.start_soon(final, number, ended)
            await trio.sleep(0.01)
        stats = pool.statistics()
        assert (stats.engines, stats.busy, stats.waiting) == (1, 1, 4)
    assert [call.text for call in engine.calls] == [f"utterance {n}" for n in (0, 2, 4, 3, 1)]
    assert {n: r.text for n, r in results.items()} == {n: f"utterance {n}" for n in range(5)}
    assert all(r.stt_ms == pytest.approx(1000) for r in results.values())
    # Utterance 1 asked at 0.1 s and got the engine when the four before it were done.
    assert results[1].queue_ms == pytest.approx(4000 - 100)
    stats = pool.statistics()
    assert (stats.busy, stats.waiting, stats.transcriptions, stats.timeouts) == (0, 0, 5, 0)


async def test_a_final_over_its_budget_is_aborted_and_the_engine_is_free_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = TimedEngine(seconds=10.0, abort_s=0.2)
    pool = SttPool([engine])
    with pytest.raises(SttTimeoutError) as info:
        await pool.transcribe(utterance(1), budget_s=2.0)
    assert info.value.elapsed_ms == pytest.approx(2200)  # the budget, then the abort
    assert engine.calls[0].aborted
    engine.seconds = 1.0
    result = await pool.transcribe(utterance(2), budget_s=2.0, language="de")
    assert (result.text, result.language, engine.calls[-1].language) == ("utterance 2", "de", "de")
    stats = pool.statistics()
    assert (stats.busy, stats.transcriptions, stats.timeouts) == (0, 1, 1)


async def test_a_caller_that_leaves_aborts_its_transcription(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = TimedEngine(seconds=10.0, abort_s=0.2)
    pool = SttPool([engine])
    with trio.move_on_after(0.5):  # the client left mid-transcription
        await pool.transcribe(utterance(1))
    assert engine.calls[0].aborted and engine.calls[0].ended == pytest.approx(0.7)
    assert pool.statistics().busy == 0
    engine.seconds = 1.0
    assert (await pool.transcribe(utterance(2))).text == "utterance 2"


async def test_speculative_work_gives_its_engine_up_to_a_final(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = TimedEngine(seconds=5.0, abort_s=0.25)
    pool = SttPool([engine])
    outcome: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_outcome, pool, utterance(1), outcome, "speculative")
        await trio.sleep(0.2)  # the speculative work holds the only engine
        with pytest.raises(SttSkippedError, match="every engine is busy"):
            await pool.transcribe(utterance(2), speculative=True)  # more is not even started
        final = await pool.transcribe(utterance(3), priority=0.0)
    assert outcome["speculative"] == "preempted by a final"
    # The final waited for the abort only, not for the speculative work.
    assert final.text == "utterance 3" and final.queue_ms == pytest.approx(250)
    assert [call.text for call in engine.calls] == ["utterance 1", "utterance 3"]
    assert pool.statistics().speculative_skipped == 2


async def test_partials_make_way_for_early_work_which_keeps_its_engine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = TimedEngine(seconds=5.0, abort_s=0.1)
    pool = SttPool([engine])
    outcome: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(_outcome, pool, utterance(1), outcome, "partial", partial=True)
        )
        await trio.sleep(0.2)  # the partial holds the only engine
        # Early work (likely the final's answer) takes the engine from it.
        early = await pool.transcribe(utterance(2), speculative=True)
    assert outcome["partial"] == "preempted by early work"
    assert early.text == "utterance 2" and early.queue_ms == pytest.approx(100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_outcome, pool, utterance(3), outcome, "early")
        await trio.sleep(0.2)
        # Neither more early work nor a partial takes an engine from early work.
        with pytest.raises(SttSkippedError, match="every engine is busy"):
            await pool.transcribe(utterance(4), speculative=True)
        with pytest.raises(SttSkippedError, match="every engine is busy"):
            await pool.transcribe(utterance(5), speculative=True, partial=True)
    assert outcome["early"] == "finished"
    assert [c.text for c in engine.calls] == [f"utterance {n}" for n in (1, 2, 3)]


async def test_a_final_preempts_a_partial_before_early_work(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[Call] = []
    engines = [TimedEngine(label=name, seconds=5.0, calls=calls) for name in ("a", "b")]
    pool = SttPool(engines)
    outcome: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_outcome, pool, utterance(1), outcome, "early")
        await trio.sleep(0.1)
        nursery.start_soon(
            functools.partial(_outcome, pool, utterance(2), outcome, "partial", partial=True)
        )
        await trio.sleep(0.1)
        final = await pool.transcribe(utterance(3), priority=0.0)
    assert (outcome["early"], outcome["partial"]) == ("finished", "preempted by a final")
    assert final.text == "utterance 3" and final.queue_ms == pytest.approx(0)


async def test_early_work_does_not_go_before_a_final_that_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = TimedEngine(seconds=1.0, abort_s=0.3)
    pool = SttPool([engine])
    outcome: dict[str, str] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(_outcome, pool, utterance(1), outcome, "partial", partial=True)
        )
        await trio.sleep(0.1)
        nursery.start_soon(functools.partial(pool.transcribe, utterance(2), priority=0.0))
        await trio.sleep(0.1)  # the final waits for the partial's abort
        with pytest.raises(SttSkippedError, match="every engine is busy"):
            await pool.transcribe(utterance(3), speculative=True)
    assert outcome["partial"] == "preempted by a final"
    assert [c.text for c in engine.calls] == ["utterance 1", "utterance 2"]


async def test_no_partial_starts_while_a_final_is_foreseen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = TimedEngine(seconds=1.0)
    pool = SttPool([engine])
    token = pool.foreseen.announce()  # a session in a pause
    with pytest.raises(SttSkippedError, match="a final is due"):
        await pool.transcribe(utterance(1), speculative=True, partial=True)
    assert engine.calls == []
    # Early work is not a partial: it may still use the free engine.
    assert (await pool.transcribe(utterance(2), speculative=True)).text == "utterance 2"
    pool.foreseen.withdraw(token)
    assert pool.foreseen.due == 0
    result = await pool.transcribe(utterance(3), speculative=True, partial=True)
    assert result.text == "utterance 3"


async def test_a_foreseen_final_lingers_then_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    foreseen = FinalsForeseen()
    pausing = foreseen.announce(for_s=10.0)
    ended = foreseen.announce()
    foreseen.withdraw(ended, after_s=0.1)  # its final is about to ask for an engine
    assert foreseen.due == 2
    await trio.sleep(0.2)
    assert foreseen.due == 1
    await trio.sleep(10.0)  # a withdrawal that never came does not mute partials forever
    assert foreseen.due == 0
    foreseen.withdraw(pausing)  # late: harmless


async def test_an_engine_without_speculative_work_is_asked_for_finals_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    capabilities = EngineCapabilities(
        name="remote", languages=("en",), multilingual=False, speculative=False
    )
    engine = TimedEngine(seconds=1.0, capabilities=capabilities)
    pool = SttPool([engine])
    for partial in (False, True):
        with pytest.raises(SttSkippedError, match="no speculative work"):
            await pool.transcribe(utterance(1), speculative=True, partial=partial)
    assert engine.calls == []
    assert (await pool.transcribe(utterance(2))).text == "utterance 2"
    assert pool.english_only and pool.name == "remote"
    assert pool.statistics().speculative_skipped == 2


async def test_engines_work_side_by_side_each_on_one_utterance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[Call] = []
    capabilities = EngineCapabilities(
        name="timed",
        languages=("en", "de"),
        multilingual=True,
        origin="memory",
        device="cuda",
        device_fallback=True,
    )
    engines = [
        TimedEngine(label=name, seconds=1.0, calls=calls, capabilities=capabilities)
        for name in ("a", "b")
    ]
    pool = SttPool(engines)
    async with trio.open_nursery() as nursery:
        for number in range(3):
            nursery.start_soon(
                functools.partial(pool.transcribe, utterance(number), priority=number)
            )
            await trio.sleep(0.01)
        await trio.sleep(0.5)
        assert (pool.statistics().busy, pool.statistics().waiting) == (2, 1)
    started = {call.text: (call.engine, call.started) for call in calls}
    assert {started["utterance 0"][0], started["utterance 1"][0]} == {"a", "b"}
    assert started["utterance 2"][1] == pytest.approx(1.0)  # when the first was done
    # What the stages and /health read is the engines' own account.
    assert (pool.name, pool.languages, pool.english_only) == ("timed", ("en", "de"), False)
    assert (pool.origin, pool.device, pool.device_fallback) == ("memory", "cuda", True)
    assert pool.language_name("de") == "german"
    await pool.aclose()
    assert all(engine.closed for engine in engines)


async def test_a_sessions_partials_keep_to_their_share_of_a_core(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Each partial costs its engine 300 ms of CPU; at a share of 0.3 the
    # session may ask for the next one once 1 s of speech per 300 ms is heard.
    outbox = Outbox()
    events = outbox.subscribe("test", (Stream.EVENTS,), 100)
    ctx = detached_context(outbox=outbox)
    pool = SttPool([TimedEngine(seconds=0.15, cpu_ms=300.0)])
    transcriber = SpeculativeTranscriber(
        ctx,
        backend=pool,
        stt=SttSettings(partial_core_share=0.3),
        preprocess=PreprocessSettings(normalize=False, highpass_hz=0.0),
        sample_rate=16000,
    )

    def speech(seconds: float) -> Any:
        return (utterance(1, int(seconds * 16000)) * 100).astype("int16")

    taken: list[bool] = []
    partials: list[EventMessage] = []

    async def ask(utterance_id: str, seconds: float) -> None:
        taken.append(transcriber.partial(utterance_id, speech(seconds), seconds, None))
        if taken[-1]:  # wait for it to be published
            while (
                not partials
                or partials[-1].utterance_id != utterance_id
                or len(partials) < sum(taken)
            ):
                item = await events.receive.receive()
                message = item.message
                if (
                    isinstance(message, EventMessage)
                    and message.type is EventType.TRANSCRIPT_PARTIAL
                ):
                    partials.append(message)
            await trio.testing.wait_all_tasks_blocked()  # the transcriber is idle again

    async with trio.open_nursery() as nursery:
        nursery.start_soon(transcriber.run)
        for seconds in (0.5, 0.75, 1.0, 1.5, 2.0):
            await ask("u1", seconds)
        await ask("u2", 0.5)  # a new utterance starts with a clean slate
        nursery.cancel_scope.cancel()
    assert taken == [True, False, True, False, True, True]
    assert [p.utterance_id for p in partials] == ["u1", "u1", "u1", "u2"]


async def test_a_final_held_by_an_early_transcript_that_came_to_nothing_counts_it_as_queue() -> (
    None
):
    # The early transcript of session A's utterance runs in its trailing
    # silence; A's utterance ends and its final waits for it; session B's final
    # then takes the engine, and A's early work comes back with nothing. That
    # wait was for an engine: it once showed as A's preprocessing (issue 18).
    # On the real clock (preprocessing runs in a worker thread, which an
    # autojump clock would skip past); the lost wait, from A's end to its
    # early work's abort, is ~0.35 s.
    engine = TimedEngine(seconds=0.4, abort_s=0.05)
    pool = SttPool([engine])
    samples = (utterance(1, 16000) * 100).astype("int16")
    early = EarlyTranscript(last_voiced_frame=50, samples=samples, language=None)
    utterances_in, utterances = trio.open_memory_channel[Utterance](1)
    transcriptions, transcriptions_out = trio.open_memory_channel[Transcription](1)
    stage = SttStage(
        detached_context(),
        backend=pool,
        stt=SttSettings(),
        preprocess=PreprocessSettings(normalize=False, highpass_hz=0.0),
        sample_rate=16000,
        utterances=utterances,
        transcriptions=transcriptions,
    )

    async def early_work() -> None:
        try:
            early.result = await pool.transcribe(samples / 32768, speculative=True)
        except SttSkippedError:
            pass
        finally:
            early.done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stage.run)
        nursery.start_soon(early_work)
        await trio.sleep(0.05)
        ended = now()  # the pipeline's clock, as the endpointer stamps it
        await utterances_in.send(
            Utterance(
                id="a-1",
                session_id="a",
                samples=samples,
                start_s=0.0,
                end_s=1.0,
                wake_word=None,
                end_reason=EndReason.SILENCE,
                endpointed_at=ended,
                hangover_ms=600.0,
                early=early,
            )
        )
        await trio.sleep(0.3)  # A's final waits for its early transcript
        await pool.transcribe(utterance(2), priority=0.0)  # B's final preempts it
        transcription = await transcriptions_out.receive()
        nursery.cancel_scope.cancel()
    assert early.done.is_set() and early.result is None
    assert transcription.early_wait_ms is None  # transcribed after the endpoint
    # From the end to A's abort; then A's final queued behind B's.
    assert transcription.early_lost_ms >= 300 and transcription.stt.queue_ms > 0
    assert transcription.preprocess_ms < 300  # 1 s of audio: a few ms, not the wait
