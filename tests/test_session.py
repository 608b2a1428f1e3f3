from __future__ import annotations

import pytest

from rtap_trio.metrics import Metrics
from rtap_trio.session_context import publishing_context
from rtap_trio.session_state import (
    ALLOWED_TRANSITIONS,
    PipelineState,
    SessionStateMachine,
    StateTransitionError,
)
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
    machine = publishing_context("s1", "test", outbox, metrics).state
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
    machine = publishing_context("s1", "test", outbox, Metrics()).state
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
    machine = publishing_context("s1", "test", Outbox(), Metrics()).state
    machine.capture_started("speech")
    machine.fault("frontend crashed")
    assert machine.state is S.LISTENING  # ERROR was shown, then the counters rule again
    machine.shutdown("stopped")
    machine.capture_ended("late")
    assert machine.state is S.SHUTDOWN


def test_illegal_transitions_are_refused_without_a_reset_hook() -> None:
    assert (S.IDLE, S.EMIT) not in ALLOWED_TRANSITIONS
    assert (S.SHUTDOWN, S.IDLE) not in ALLOWED_TRANSITIONS
    machine = SessionStateMachine()
    with pytest.raises(StateTransitionError):
        machine.emit_started()  # nothing was in flight: IDLE -> EMIT


async def test_a_forbidden_transition_resets_to_idle_counted_and_evented() -> None:
    outbox, metrics = Outbox(), Metrics()
    subscription = outbox.subscribe("t", (Stream.EVENTS,), 100)
    machine = publishing_context("s1", "test", outbox, metrics).state
    machine.emit_started()  # corrupt counters: emitting with nothing in flight
    assert machine.state is S.IDLE
    machine.capture_started("speech")  # and it goes on as before
    assert machine.state is S.LISTENING
    outbox.close()
    events = [item.message async for item in subscription.receive]
    assert [(e.type.value, e.data.get("attempted")) for e in events] == [
        ("state_reset", "EMIT"),
        ("state_changed", None),
    ]
    assert metrics.registry.get_sample_value("rtap_state_resets_total") == 1.0
