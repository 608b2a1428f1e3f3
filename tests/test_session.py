from __future__ import annotations

import pytest

from rtap_trio.session import (
    ALLOWED_TRANSITIONS,
    PipelineState,
    SessionContext,
    StateTransitionError,
)
from rtap_trio.telemetry import Metrics
from rtap_trio.transport.outbox import Outbox
from rtap_trio.transport.schemas import Stream

S = PipelineState


async def states_of(outbox: Outbox, subscription) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    outbox.close()
    return [
        (item.message.data["from"], item.message.data["to"]) async for item in subscription.receive
    ]


async def test_one_utterance_walks_the_cycle() -> None:
    outbox, metrics = Outbox(), Metrics()
    subscription = outbox.subscribe("t", (Stream.EVENTS,), 100)
    machine = SessionContext.create("s1", "test", outbox, metrics).state
    machine.capture_started("wake_word")
    machine.utterance_queued()
    machine.emit_started()
    machine.emit_finished()
    assert machine.state is S.IDLE
    assert await states_of(outbox, subscription) == [
        ("IDLE", "LISTENING"),
        ("LISTENING", "PROCESSING"),
        ("PROCESSING", "EMIT"),
        ("EMIT", "IDLE"),
    ]
    sample = metrics.registry.get_sample_value(
        "rtap_state_transitions_total", {"from_state": "EMIT", "to_state": "IDLE"}
    )
    assert sample == 1.0


async def test_next_utterance_captured_while_processing() -> None:
    outbox = Outbox()
    subscription = outbox.subscribe("t", (Stream.EVENTS,), 100)
    machine = SessionContext.create("s1", "test", outbox, Metrics()).state
    machine.capture_started("speech")
    machine.utterance_queued()
    machine.capture_started("speech")  # the front-end hears the next one
    assert machine.state is S.PROCESSING
    machine.emit_started()
    machine.emit_finished()
    assert machine.state is S.LISTENING
    machine.utterance_queued()
    machine.utterance_done("stt_timeout")
    assert machine.state is S.IDLE
    assert await states_of(outbox, subscription) == [
        ("IDLE", "LISTENING"),
        ("LISTENING", "PROCESSING"),
        ("PROCESSING", "EMIT"),
        ("EMIT", "LISTENING"),
        ("LISTENING", "PROCESSING"),
        ("PROCESSING", "IDLE"),
    ]


def test_fault_shows_error_then_recovers_and_shutdown_is_final() -> None:
    machine = SessionContext.create("s1", "test", Outbox(), Metrics()).state
    machine.capture_started("speech")
    machine.fault("frontend crashed")
    assert machine.state is S.LISTENING  # ERROR was shown, then the counters rule again
    machine.shutdown("stopped")
    machine.capture_ended("late")
    assert machine.state is S.SHUTDOWN


def test_illegal_transitions_are_refused() -> None:
    assert (S.IDLE, S.EMIT) not in ALLOWED_TRANSITIONS
    assert (S.SHUTDOWN, S.IDLE) not in ALLOWED_TRANSITIONS
    machine = SessionContext.create("s1", "test", Outbox(), Metrics()).state
    with pytest.raises(StateTransitionError):
        machine._transition(S.EMIT, "test")
